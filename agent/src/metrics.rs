//! The agent's Prometheus metrics, in its own explicit registry.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use vigil_core::mqtt::LinkMetrics;

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
}

impl AgentMetrics {
    /// Fresh metrics in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let link = LinkMetrics::new(&registry)?;
        let collections = IntCounter::new(
            "vigil_agent_collections_total",
            "Metric batches collected and published.",
        )?;
        let actions = IntCounterVec::new(
            Opts::new(
                "vigil_agent_actions_total",
                "Remediation commands handled by the agent, by outcome.",
            ),
            &["outcome"],
        )?;
        let action_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "vigil_agent_action_duration_seconds",
                "Time an action took to run.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
        )?;
        let service_up = IntGaugeVec::new(
            Opts::new(
                "vigil_agent_service_up",
                "1 if the watched service's process is alive.",
            ),
            &["service"],
        )?;
        let catalog_reloads = IntCounterVec::new(
            Opts::new(
                "vigil_agent_catalog_reloads_total",
                "Catalog file reloads, by result; a failed one leaves the catalog in force.",
            ),
            &["result"],
        )?;
        let service_metric = prometheus::GaugeVec::new(
            Opts::new(
                "vigil_agent_service_metric",
                "Latest value the agent collected for a watched service, by service and metric (up, cpu_percent, rss_bytes, http_ok, http_status, http_latency_seconds).",
            ),
            &["service", "metric"],
        )?;
        vigil_core::telemetry::register(&registry, "agent", &service_metric)?;
        for o in vigil_core::message::Outcome::ALL {
            actions.with_label_values(&[o.as_str()]);
        }
        let backlog = IntGauge::new(
            "vigil_agent_backlog_batches",
            "Metric batches held while the broker or the edge is unreachable.",
        )?;
        let backlog_dropped = IntCounter::new(
            "vigil_agent_backlog_dropped_total",
            "Held metric batches dropped, oldest first, because the backlog was full.",
        )?;
        let commands_refused = IntCounterVec::new(
            prometheus::Opts::new(
                "vigil_agent_commands_refused_total",
                "Commands refused unrun because no trusted edge signed them for this agent, by reason (unsigned, unknown_key, bad_signature, wrong_agent, bad_target).",
            ),
            &["reason"],
        )?;
        for r in crate::executor::REFUSALS {
            commands_refused.with_label_values(&[r]);
        }
        vigil_core::telemetry::register(&registry, "agent", &commands_refused)?;
        vigil_core::telemetry::register(&registry, "agent", &backlog)?;
        vigil_core::telemetry::register(&registry, "agent", &backlog_dropped)?;
        vigil_core::telemetry::register(&registry, "agent", &catalog_reloads)?;
        vigil_core::telemetry::register(&registry, "agent", &collections)?;
        vigil_core::telemetry::register(&registry, "agent", &actions)?;
        vigil_core::telemetry::register(&registry, "agent", &action_seconds)?;
        vigil_core::telemetry::register(&registry, "agent", &service_up)?;
        Ok(Self {
            registry,
            link,
            collections,
            actions,
            action_seconds,
            service_up,
            catalog_reloads,
            backlog,
            backlog_dropped,
            commands_refused,
            service_metric,
        })
    }
}
