//! The aggregator's Prometheus metrics, in its own explicit registry: the
//! store's and intake's here, the model lifecycle's in its own group.

use crate::lifecycle::LifecycleMetrics;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Registry};
use vigil_core::mqtt::LinkMetrics;
use vigil_core::telemetry::Group;

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
    /// Spooled uplink messages, by intake (`new`, `duplicate`).
    pub uplink_intake: IntCounterVec,
    /// Uplink messages acknowledged to edges as stored.
    pub uplink_acked: IntCounter,
    /// Receipts that found the broker queue full and wait for the next flush.
    pub receipts_deferred: IntCounter,
    /// The model lifecycle.
    pub lifecycle: LifecycleMetrics,
}

impl CloudMetrics {
    /// Fresh metrics in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let g = Group::new(&registry, "cloud");
        let m = Self {
            link: LinkMetrics::new(&registry)?,
            lifecycle: LifecycleMetrics::new(&registry)?,
            rows_written: g.counters(
                "vigil_cloud_rows_written_total",
                "Rows written to Parquet, by table.",
                &["table"],
                &[],
            )?,
            files_written: g
                .counter("vigil_cloud_files_written_total", "Parquet files written.")?,
            flush_errors: g.counter(
                "vigil_cloud_flush_errors_total",
                "Parquet flushes that failed; their rows are retried.",
            )?,
            nodes: g.gauges(
                "vigil_cloud_nodes",
                "Fleet nodes, by role and state.",
                &["role", "state"],
            )?,
            anomalies: g.counter(
                "vigil_cloud_anomalies_total",
                "Anomaly events received from edge nodes.",
            )?,
            audit_records: g.counters(
                "vigil_cloud_audit_records_total",
                "Audit records received, by kind.",
                &["kind"],
                &[],
            )?,
            uplink_intake: g.counters(
                "vigil_cloud_uplink_messages_total",
                "Sequenced uplink messages received, by intake (new, duplicate: not stored again).",
                &["intake"],
                &["new", "duplicate"],
            )?,
            uplink_acked: g.counter(
                "vigil_cloud_uplink_acked_total",
                "Uplink messages acknowledged to edge nodes after their rows were written.",
            )?,
            receipts_deferred: g.counter(
                "vigil_cloud_receipts_deferred_total",
                "Uplink messages whose receipt found the broker queue full: owed again with the next receipts (ingest never waits for one).",
            )?,
            registry: registry.clone(),
        };
        // Every bounded label value exists from the start (0 rather than no series).
        for role in ["edge", "agent"] {
            for state in ["online", "offline"] {
                m.nodes.with_label_values(&[role, state]);
            }
        }
        Ok(m)
    }
}
