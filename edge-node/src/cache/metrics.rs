//! The cache's metrics: series held, samples taken and refused, and
//! series evicted.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use vigil_core::telemetry::Group;

/// What the cache counts.
#[derive(Clone)]
pub struct CacheMetrics {
    /// Series in the cache.
    pub series: IntGauge,
    /// Samples accepted into the cache.
    pub samples: IntCounter,
    /// Samples refused, by reason.
    pub samples_refused: IntCounterVec,
    /// Series evicted from the cache, by reason.
    pub series_evicted: IntCounterVec,
}

impl CacheMetrics {
    /// Creates and registers them.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let refused = crate::cache::Refusal::ALL.map(|r| r.as_str());
        let g = Group::new(r, "edge");
        Ok(Self {
            series: g.gauge(
                "vigil_edge_series",
                "Series in the edge cache.",
            )?,
            samples: g.counter(
                "vigil_edge_samples_total",
                "Samples accepted into the edge cache.",
            )?,
            samples_refused: g.counters(
                "vigil_edge_samples_refused_total",
                "Samples refused by the edge, by reason.",
                &["reason"],
                &refused,
            )?,
            series_evicted: g.counters(
                "vigil_edge_series_evicted_total",
                "Series evicted from the cache (idle: no sample for evict_idle_secs; room: a new series took the slot of the stalest one that was not live).",
                &["reason"],
                &["idle", "room"],
            )?,
        })
    }
}
