//! The agent's Prometheus metrics, in its own explicit registry.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use vigil_core::mqtt::LinkMetrics;
use vigil_core::telemetry::Group;

/// Handles to every agent metric; cheap to clone.
#[derive(Clone)]
pub struct AgentMetrics {
    /// The registry served on `/metrics`.
    pub registry: Registry,
    /// MQTT message counters.
    pub link: LinkMetrics,
    /// Metric batches collected.
    pub collections: IntCounter,
    /// Commands handled, by outcome.
    pub actions: IntCounterVec,
    /// How long actions ran.
    pub action_seconds: Histogram,
    /// 1 if the service's process is alive, by service (bounded by config).
    pub service_up: IntGaugeVec,
    /// The latest value of each metric collected for a watched service.
    pub service_metric: prometheus::GaugeVec,
    /// Catalog reloads, by result (`ok`, `failed`).
    pub catalog_reloads: IntCounterVec,
    /// Metric batches held while the broker or the edge is unreachable.
    pub backlog: IntGauge,
    /// Held batches dropped because the backlog was full.
    pub backlog_dropped: IntCounter,
    /// Commands refused before any check of what they ask, by reason.
    pub commands_refused: IntCounterVec,
    /// The scrape targets' group.
    pub scrape: crate::scrape::ScrapeMetrics,
}

impl AgentMetrics {
    /// Fresh metrics in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let g = Group::new(&registry, "agent");
        let outcomes = vigil_core::message::Outcome::ALL.map(|o| o.as_str());
        Ok(Self {
            link: LinkMetrics::new(&registry)?,
            scrape: crate::scrape::ScrapeMetrics::new(&registry)?,
            collections: g.counter(
                "vigil_agent_collections_total",
                "Metric batches collected and published.",
            )?,
            actions: g.counters(
                "vigil_agent_actions_total",
                "Remediation commands handled by the agent, by outcome.",
                &["outcome"],
                &outcomes,
            )?,
            action_seconds: g.histogram(
                "vigil_agent_action_duration_seconds",
                "Time an action took to run.",
                &[0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0],
            )?,
            service_up: g.gauges(
                "vigil_agent_service_up",
                "1 if the watched service's process is alive.",
                &["service"],
            )?,
            catalog_reloads: g.counters(
                "vigil_agent_catalog_reloads_total",
                "Catalog file reloads, by result; a failed one leaves the catalog in force.",
                &["result"],
                &["ok", "failed"],
            )?,
            service_metric: g.float_gauges(
                "vigil_agent_service_metric",
                "Latest value the agent collected for a watched service, by service and metric (up, cpu_percent, rss_bytes, http_ok, http_status, http_latency_seconds).",
                &["service", "metric"],
            )?,
            backlog: g.gauge(
                "vigil_agent_backlog_batches",
                "Metric batches held while the broker or the edge is unreachable.",
            )?,
            backlog_dropped: g.counter(
                "vigil_agent_backlog_dropped_total",
                "Held metric batches dropped, oldest first, because the backlog was full.",
            )?,
            commands_refused: g.counters(
                "vigil_agent_commands_refused_total",
                "Commands refused unrun because no trusted edge signed them for this agent, by reason (unsigned, unknown_key, bad_signature, wrong_agent, bad_target).",
                &["reason"],
                &crate::executor::REFUSALS,
            )?,
            registry: registry.clone(),
        })
    }
}
