//! The cloud's HTTP API (JSON): the fleet's nodes, recent anomalies and the
//! action audit trail, newest last. `?site=` filters, `?limit=` bounds; the
//! audit trail also filters by `?target=`, `?policy=`, `?kind=` and `?rail=`.

use crate::cloud::Shared;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;

/// The API routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/anomalies", get(anomalies))
        .route("/api/v1/audit", get(audit))
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
