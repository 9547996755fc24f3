//! The edge's HTTP API (JSON): status, series and their cached points,
//! entities, recent anomalies, the audit trail, and the approvals of
//! `approve`-mode policies (the only writes). Served beside `/metrics` and
//! `/healthz`.

use crate::shared::Shared;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use vigil_core::SeriesId;

/// The API routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/series", get(series))
        .route("/api/v1/series/points", get(points))
        .route("/api/v1/entities", get(entities))
        .route("/api/v1/anomalies", get(anomalies))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/approvals", get(approvals))
        .route("/api/v1/approvals/{id}/{verb}", post(answer))
        .with_state(shared)
}

async fn status(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let series = s.lock_cache().len();
    let anomalous = s.lock_entities().anomalous_count();
    let agents = s.agents.lock().map(|a| a.clone()).unwrap_or_default();
    let info = s.info.lock().map(|i| i.clone()).unwrap_or_default();
    Json(serde_json::json!({
        "site": s.site, "node": s.node, "series": series, "anomalous_entities": anomalous,
        "model_version": info.model_version, "policy_version": info.policy_version,
        "policy_errors": info.policy_errors, "policy_problems": info.policy_problems, "agents": agents,
    }))
}

#[derive(Deserialize)]
struct SeriesQuery {
    /// Only series whose id starts with this.
    prefix: Option<String>,
}

#[derive(Serialize)]
struct SeriesRow {
    series: String,
    value: Option<f64>,
    score: f32,
    ts_ms: Option<i64>,
    points: usize,
    /// Whether a tick has scored its newest point.
    scored: bool,
}

async fn series(
    State(s): State<Arc<Shared>>,
    Query(q): Query<SeriesQuery>,
) -> Json<Vec<SeriesRow>> {
    let cache = s.lock_cache();
    let rows = cache
        .live_entries()
        .map(|e| (e.id.to_string(), e))
        .filter(|(id, _)| q.prefix.as_deref().is_none_or(|p| id.starts_with(p)))
        .map(|(id, e)| SeriesRow {
            series: id,
            value: e.points.back().map(|p| p.value),
            score: e.score,
            ts_ms: e.points.back().map(|p| p.ts_ms),
            points: e.points.len(),
            scored: e.points.back().is_some_and(|p| p.scored),
        })
        .collect();
    Json(rows)
}

#[derive(Deserialize)]
struct PointsQuery {
    /// Series id, `<entity>:<metric>`.
    id: String,
}

async fn points(State(s): State<Arc<Shared>>, Query(q): Query<PointsQuery>) -> Response {
    let Some(id) = SeriesId::parse(&q.id) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("bad series id {:?}: expected <entity>:<metric>\n", q.id),
        )
            .into_response();
    };
    let cache = s.lock_cache();
    match cache.get(&id) {
        Some(e) => Json(e.points.iter().copied().collect::<Vec<_>>()).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no series {id}\n")).into_response(),
    }
}

async fn entities(State(s): State<Arc<Shared>>) -> Json<Vec<crate::entity::EntityState>> {
    Json(s.lock_entities().all().cloned().collect())
}

async fn anomalies(State(s): State<Arc<Shared>>) -> Json<Vec<vigil_core::message::AnomalyEvent>> {
    Json(
        s.anomalies
            .lock()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default(),
    )
}

async fn audit(State(s): State<Arc<Shared>>) -> Json<Vec<vigil_core::message::AuditRecord>> {
    Json(s.audit.lock().map(|a| a.recent()).unwrap_or_default())
}

#[derive(Deserialize)]
struct ApprovalQuery {
    /// Only requests in this state (`pending`, `approved`, ...).
    state: Option<String>,
}

async fn approvals(
    State(s): State<Arc<Shared>>,
    Query(q): Query<ApprovalQuery>,
) -> Json<Vec<crate::approval::Approval>> {
    let now = vigil_core::clock::now_ms();
    let list = s
        .approvals
        .lock()
        .map(|mut a| {
            a.expire(now);
            a.all()
        })
        .unwrap_or_default();
    let wanted =
        |a: &crate::approval::Approval| q.state.as_deref().is_none_or(|st| st == a.state.as_str());
    Json(list.into_iter().filter(wanted).collect())
}

#[derive(Deserialize, Default)]
struct Answer {
    /// Who answers (recorded in the request and the audit trail).
    #[serde(default)]
    by: Option<String>,
}

/// `POST /api/v1/approvals/{id}/approve` or `.../reject`, with an optional
/// JSON body `{"by": "alice"}`.
async fn answer(
    State(s): State<Arc<Shared>>,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Option<Json<Answer>>,
) -> Response {
    if let Some(r) = vigil_core::telemetry::unauthorized(s.api_token.as_deref(), &headers) {
        return r;
    }
    let approve = match verb.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return (StatusCode::NOT_FOUND, "use .../approve or .../reject\n").into_response(),
    };
    let by = body
        .and_then(|Json(a)| a.by)
        .filter(|b| !b.trim().is_empty() && b.len() <= 64)
        .unwrap_or_else(|| "api".into());
    let result = match s.approvals.lock() {
        Ok(mut q) => q.answer(&id, approve, &by, vigil_core::clock::now_ms()),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match result {
        Ok(a) => {
            tracing::info!(id = %a.id, policy = %a.policy, target_entity = %a.target, approve, %by, "Approval answered.");
            Json(a).into_response()
        }
        Err(e @ crate::approval::AnswerError::Unknown(_)) => {
            (StatusCode::NOT_FOUND, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
}
