//! The cloud's HTTP API (JSON): the fleet's nodes, recent anomalies and the
//! action audit trail, newest last. `?site=` filters, `?limit=` bounds; the
//! audit trail also filters by `?target=`, `?policy=`, `?kind=` and `?rail=`.
//!
//! Models: `GET /api/v1/models` (releases, canary and its tallies, every
//! transition, training progress); `POST /api/v1/models/train`,
//! `/promote`, `/rollback`, and `/bundles` (a bundle file as the body).
//! Writes need `Authorization: Bearer <api_token>`; with no `api_token`
//! configured every write is refused (401) and changes nothing.

use crate::shared::Shared;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use vigil_core::clock::now_ms;

/// The API routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/anomalies", get(anomalies))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/models", get(models))
        .route("/api/v1/models/train", post(train))
        .route("/api/v1/models/promote", post(promote))
        .route("/api/v1/models/rollback", post(rollback))
        .route(
            "/api/v1/models/bundles",
            post(upload).layer(DefaultBodyLimit::max(512 * 1024 * 1024)),
        )
        .with_state(shared)
}

#[derive(Deserialize)]
struct Filter {
    site: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct AuditFilter {
    // Not a flattened Filter: serde_urlencoded cannot read numbers through
    // `flatten`.
    site: Option<String>,
    limit: Option<usize>,
    target: Option<String>,
    policy: Option<String>,
    kind: Option<String>,
    rail: Option<String>,
}

impl AuditFilter {
    fn keeps(&self, a: &vigil_core::message::AuditRecord) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&self.target, a.target.as_str())
            && is(&self.policy, &a.policy)
            && is(&self.kind, a.kind.as_str())
            && is(&self.rail, a.rail.as_deref().unwrap_or(""))
    }
}

impl Filter {
    fn apply<T: Clone>(
        &self,
        items: impl DoubleEndedIterator<Item = T>,
        site: impl Fn(&T) -> &str,
    ) -> Vec<T> {
        let limit = self.limit.unwrap_or(100).min(10_000);
        let mut v: Vec<T> = items
            .rev()
            .filter(|i| self.site.as_deref().is_none_or(|s| site(i) == s))
            .take(limit)
            .collect();
        v.reverse();
        v
    }
}

async fn nodes(
    State(s): State<Arc<Shared>>,
    Query(f): Query<Filter>,
) -> Json<Vec<crate::registry::Node>> {
    let nodes = s.registry.lock().map(|r| r.nodes()).unwrap_or_default();
    Json(f.apply(nodes.into_iter(), |n| n.site.as_str()))
}

async fn anomalies(
    State(s): State<Arc<Shared>>,
    Query(f): Query<Filter>,
) -> Json<Vec<vigil_core::message::AnomalyEvent>> {
    let list = s
        .anomalies
        .lock()
        .map(|a| f.apply(a.iter().cloned(), |x| x.site.as_str()))
        .unwrap_or_default();
    Json(list)
}

async fn audit(
    State(s): State<Arc<Shared>>,
    Query(f): Query<AuditFilter>,
) -> Json<Vec<vigil_core::message::AuditRecord>> {
    let list = s
        .audit
        .lock()
        .map(|a| {
            let common = Filter {
                site: f.site.clone(),
                limit: f.limit,
            };
            common.apply(a.iter().filter(|r| f.keeps(r)).cloned(), |x| {
                x.site.as_str()
            })
        })
        .unwrap_or_default();
    Json(list)
}

/// A write refused: without the token, or (in a cluster) on a member that
/// does not lead, which names the one that does.
fn refused(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    vigil_core::telemetry::unauthorized(s.api_token.as_deref(), headers).or_else(|| {
        let l = &s.models.leadership;
        (!l.leads()).then(|| {
            let msg = format!(
                "this aggregator does not lead the cluster; send model writes to the leader: {}\n",
                l.leader()
            );
            (StatusCode::MISDIRECTED_REQUEST, msg).into_response()
        })
    })
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    match s.models.hub.lock() {
        Ok(h) => Json(h.view()).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn train(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    if s.models.start_training("operator") {
        (
            StatusCode::ACCEPTED,
            "training started; follow GET /api/v1/models\n",
        )
            .into_response()
    } else {
        (StatusCode::CONFLICT, "a training run is already going\n").into_response()
    }
}

/// Applies an operator's promote or roll back and publishes the release.
fn operator(
    s: &Shared,
    headers: &HeaderMap,
    act: impl FnOnce(&mut crate::lifecycle::Hub) -> anyhow::Result<vigil_core::message::SignedRelease>,
) -> Response {
    if let Some(r) = refused(s, headers) {
        return r;
    }
    let done = match s.models.hub.lock() {
        Ok(mut h) => act(&mut h),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match done {
        Ok(release) => {
            let body =
                serde_json::from_str::<serde_json::Value>(&release.release).unwrap_or_default();
            let _ = s
                .models
                .jobs
                .try_send(crate::lifecycle::server::Job::Release(release));
            Json(body).into_response()
        }
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
}

async fn promote(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    operator(&s, &headers, |h| {
        h.promote("operator", "promoted through the API", now_ms())
    })
}

async fn rollback(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    operator(&s, &headers, |h| {
        h.rollback("operator", "rolled back through the API", now_ms())
    })
}

/// `POST /api/v1/models/bundles`: a bundle file made elsewhere (say with
/// `vigil model sign`); the cloud checks it, signs it with its own key and
/// starts its canary. It skips the training gate: the canary is its test.
async fn upload(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refused(&s, &headers) {
        return r;
    }
    let bundle = match vigil_models::bundle::Bundle::from_bytes(&body) {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let added = match s.models.hub.lock() {
        Ok(mut h) => h.add(bundle, "uploaded", now_ms()),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match added {
        Ok(v) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "version": v })),
        )
            .into_response(),
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
}
