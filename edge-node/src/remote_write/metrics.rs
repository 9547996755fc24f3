//! Remote write's metrics (a group of the edge's registry).

use super::convert::Refusal;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use vigil_core::telemetry::Group;

/// Handles to remote write's metrics; cheap to clone.
#[derive(Clone)]
pub struct RemoteWriteMetrics {
    /// Requests by outcome.
    pub requests: IntCounterVec,
    /// Samples handed to the cache.
    pub samples: IntCounter,
    /// Samples refused, by reason.
    pub refused: IntCounterVec,
    /// Series taken now.
    pub series: IntGauge,
}

/// Request outcomes.
pub const OUTCOMES: [&str; 9] = [
    "ok",
    "partial",
    "unauthorized",
    "content_type",
    "too_large",
    "bad_snappy",
    "bad_protobuf",
    "busy",
    "failed",
];

impl RemoteWriteMetrics {
    /// Registers the group in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let g = Group::new(registry, "edge");
        Ok(Self {
            requests: g.counters(
                "vigil_edge_remote_write_requests_total",
                "Prometheus remote-write requests, by outcome: ok (204), partial (400: series past max_series refused, the rest taken), unauthorized (401), content_type (415), too_large (413), bad_snappy and bad_protobuf (400), busy (503, retried), failed (500).",
                &["outcome"],
                &OUTCOMES,
            )?,
            samples: g.counter(
                "vigil_edge_remote_write_samples_total",
                "Remote-written samples handed to the cache (counters as rates, from their second sample).",
            )?,
            refused: g.counters(
                "vigil_edge_remote_write_refused_samples_total",
                "Remote-written samples not taken, by reason: cardinality (a new series past max_series), bucket (histogram buckets), labels (no __name__ or instance, or a name over 256 bytes), value (not finite, or not after the series' last).",
                &["reason"],
                &Refusal::ALL.map(|r| r.as_str()),
            )?,
            series: g.gauge(
                "vigil_edge_remote_write_series",
                "Remote-written series taken now (at most remote_write.max_series).",
            )?,
        })
    }
}
