//! The aggregator's Prometheus metrics, in its own explicit registry.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use vigil_core::mqtt::LinkMetrics;

/// Handles to every aggregator metric; cheap to clone.
#[derive(Clone)]
pub struct CloudMetrics {
    /// The registry served on `/metrics`.
    pub registry: Registry,
    /// MQTT message counters.
    pub link: LinkMetrics,
    /// Rows written to Parquet, by table.
    pub rows_written: IntCounterVec,
    /// Parquet files written.
    pub files_written: IntCounter,
    /// Flushes that failed (rows kept for the next try).
    pub flush_errors: IntCounter,
    /// Fleet nodes by role and state.
    pub nodes: IntGaugeVec,
    /// Anomaly events received.
    pub anomalies: IntCounter,
    /// Audit records received, by kind.
    pub audit_records: IntCounterVec,
}

impl CloudMetrics {
    /// Fresh metrics in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let link = LinkMetrics::new(&registry)?;
        let m = Self {
            link,
            rows_written: IntCounterVec::new(
                Opts::new(
                    "vigil_cloud_rows_written_total",
                    "Rows written to Parquet, by table.",
                ),
                &["table"],
            )?,
            files_written: IntCounter::new(
                "vigil_cloud_files_written_total",
                "Parquet files written.",
            )?,
            flush_errors: IntCounter::new(
                "vigil_cloud_flush_errors_total",
                "Parquet flushes that failed; their rows are retried.",
            )?,
            nodes: IntGaugeVec::new(
                Opts::new("vigil_cloud_nodes", "Fleet nodes, by role and state."),
                &["role", "state"],
            )?,
            anomalies: IntCounter::new(
                "vigil_cloud_anomalies_total",
                "Anomaly events received from edge nodes.",
            )?,
            audit_records: IntCounterVec::new(
                Opts::new(
                    "vigil_cloud_audit_records_total",
                    "Audit records received, by kind.",
                ),
                &["kind"],
            )?,
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.rows_written.clone()))?;
        r.register(Box::new(m.files_written.clone()))?;
        r.register(Box::new(m.flush_errors.clone()))?;
        r.register(Box::new(m.nodes.clone()))?;
        r.register(Box::new(m.anomalies.clone()))?;
        r.register(Box::new(m.audit_records.clone()))?;
        Ok(m)
    }
}
