//! The Alertmanager poster's metrics (a group of the edge's registry).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use vigil_core::telemetry::Group;

/// Handles to the alerts' metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct AlertMetrics {
    /// Posts to Alertmanager by outcome.
    pub posts: IntCounterVec,
    /// Alerts firing now.
    pub firing: IntGauge,
    /// Notes lost because the poster's queue was full.
    pub dropped: IntCounter,
}

impl AlertMetrics {
    /// Registers the group in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let g = Group::new(registry, "edge");
        Ok(Self {
            posts: g.counters(
                "vigil_edge_alert_posts_total",
                "Posts of alerts to Alertmanager's v2 API, by outcome (ok, failed: everything goes again with the next post).",
                &["outcome"],
                &["ok", "failed"],
            )?,
            firing: g.gauge(
                "vigil_edge_alerts_firing",
                "Anomalies posted to Alertmanager as firing and not yet resolved.",
            )?,
            dropped: g.counter(
                "vigil_edge_alert_notes_dropped_total",
                "Openings, decisions or resolutions not posted because the poster's queue (1024) was full.",
            )?,
        })
    }
}
