//! The scrape targets' metrics (a group of the agent's registry); the
//! `target` label is bounded by the config.

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Registry};
use vigil_core::telemetry::Group;

/// Handles to the scrape metrics; cheap to clone.
#[derive(Clone)]
pub struct ScrapeMetrics {
    /// Scrapes by target and outcome (`ok`, `failed`).
    pub scrapes: IntCounterVec,
    /// Series sent from the last scrape, by target.
    pub series: IntGaugeVec,
    /// Series not sent (over `max_series`, or names too long), by target.
    pub series_dropped: IntCounterVec,
    /// How long the last scrape took, by target.
    pub duration: GaugeVec,
    /// Scraped samples dropped because the buffer for the next batch was full.
    pub pending_dropped: IntCounter,
}

impl ScrapeMetrics {
    /// Registers the group in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let g = Group::new(registry, "agent");
        Ok(Self {
            scrapes: g.counters(
                "vigil_agent_scrapes_total",
                "Scrapes of Prometheus endpoints, by target and outcome (ok, failed).",
                &["target", "outcome"],
                &[],
            )?,
            series: g.gauges(
                "vigil_agent_scrape_series",
                "Series sent from the target's last scrape.",
                &["target"],
            )?,
            series_dropped: g.counters(
                "vigil_agent_scrape_series_dropped_total",
                "Series of a scrape not sent: over the target's max_series, or a name with its labels over 256 bytes.",
                &["target"],
                &[],
            )?,
            duration: g.float_gauges(
                "vigil_agent_scrape_duration_seconds",
                "How long the target's last scrape took (fetch, parse, convert).",
                &["target"],
            )?,
            pending_dropped: g.counter(
                "vigil_agent_scrape_pending_dropped_total",
                "Scraped samples dropped, oldest first, because the buffer for the next batch (8 MiB) was full.",
            )?,
        })
    }
}
