//! The aggregator's Prometheus metrics, in its own explicit registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
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
    /// Spooled uplink messages, by intake (`new`, `duplicate`).
    pub uplink_intake: IntCounterVec,
    /// Uplink messages acknowledged to edges as stored.
    pub uplink_acked: IntCounter,
    /// The model lifecycle.
    pub models: ModelMetrics,
}

/// Model lifecycle metrics.
#[derive(Clone)]
pub struct ModelMetrics {
    /// Release every node should run (0: none).
    pub stable: IntGauge,
    /// Release in canary (0: none).
    pub canary: IntGauge,
    /// Lifecycle transitions, by state entered.
    pub transitions: IntCounterVec,
    /// Gate verdicts, by result.
    pub gate: IntCounterVec,
    /// Training runs, by result (`ok`, `failed`).
    pub training_runs: IntCounterVec,
    /// Bundle chunks published.
    pub chunks_sent: IntCounter,
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
            uplink_intake: IntCounterVec::new(
                Opts::new(
                    "vigil_cloud_uplink_messages_total",
                    "Sequenced uplink messages received, by intake (new, duplicate: not stored again).",
                ),
                &["intake"],
            )?,
            uplink_acked: IntCounter::new(
                "vigil_cloud_uplink_acked_total",
                "Uplink messages acknowledged to edge nodes after their rows were written.",
            )?,
            models: ModelMetrics {
                stable: IntGauge::new(
                    "vigil_cloud_model_stable_release",
                    "Release every edge node should run (0: none yet).",
                )?,
                canary: IntGauge::new(
                    "vigil_cloud_model_canary_release",
                    "Release in canary (0: none).",
                )?,
                transitions: IntCounterVec::new(
                    Opts::new(
                        "vigil_cloud_model_transitions_total",
                        "Model lifecycle transitions, by state entered (candidate, rejected, canary, promoted, rolled_back).",
                    ),
                    &["to"],
                )?,
                gate: IntCounterVec::new(
                    Opts::new(
                        "vigil_cloud_model_gate_total",
                        "Evaluation gate verdicts on trained candidates, by result.",
                    ),
                    &["result"],
                )?,
                training_runs: IntCounterVec::new(
                    Opts::new(
                        "vigil_cloud_model_training_runs_total",
                        "Retraining runs, by result (ok, failed).",
                    ),
                    &["result"],
                )?,
                chunks_sent: IntCounter::new(
                    "vigil_cloud_model_chunks_sent_total",
                    "Model bundle chunks published to edge nodes.",
                )?,
            },
            registry,
        };
        let r = &m.registry;
        vigil_core::telemetry::register(r, "cloud", &m.models.stable)?;
        vigil_core::telemetry::register(r, "cloud", &m.models.canary)?;
        vigil_core::telemetry::register(r, "cloud", &m.models.transitions)?;
        vigil_core::telemetry::register(r, "cloud", &m.models.gate)?;
        vigil_core::telemetry::register(r, "cloud", &m.models.training_runs)?;
        vigil_core::telemetry::register(r, "cloud", &m.models.chunks_sent)?;
        vigil_core::telemetry::register(r, "cloud", &m.rows_written)?;
        vigil_core::telemetry::register(r, "cloud", &m.files_written)?;
        vigil_core::telemetry::register(r, "cloud", &m.flush_errors)?;
        vigil_core::telemetry::register(r, "cloud", &m.nodes)?;
        vigil_core::telemetry::register(r, "cloud", &m.anomalies)?;
        vigil_core::telemetry::register(r, "cloud", &m.audit_records)?;
        vigil_core::telemetry::register(r, "cloud", &m.uplink_intake)?;
        vigil_core::telemetry::register(r, "cloud", &m.uplink_acked)?;
        // Every bounded label value exists from the start (0 rather than no series).
        for to in ["candidate", "rejected", "canary", "promoted", "rolled_back"] {
            m.models.transitions.with_label_values(&[to]);
        }
        for r in ["passed", "rejected"] {
            m.models.gate.with_label_values(&[r]);
        }
        for r in ["ok", "failed"] {
            m.models.training_runs.with_label_values(&[r]);
        }
        for intake in ["new", "duplicate"] {
            m.uplink_intake.with_label_values(&[intake]);
        }
        for role in ["edge", "agent"] {
            for state in ["online", "offline"] {
                m.nodes.with_label_values(&[role, state]);
            }
        }
        Ok(m)
    }
}
