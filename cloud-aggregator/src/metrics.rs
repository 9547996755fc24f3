//! The aggregator's Prometheus metrics, in its own explicit registry: the
//! store's and intake's here, the model lifecycle's in its own group.

use crate::lifecycle::LifecycleMetrics;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
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
    /// Parquet rolls that failed (rows kept for the next try).
    pub flush_errors: IntCounter,
    /// Rolls of the buffered rows into Parquet.
    pub rolls: IntCounter,
    /// Group commits of the write-ahead log.
    pub wal_commits: IntCounter,
    /// Bytes committed to the write-ahead log.
    pub wal_bytes: IntCounter,
    /// Commits that failed (retried with the next).
    pub wal_errors: IntCounter,
    /// Messages read back from the log on start.
    pub wal_replayed: IntCounter,
    /// Bytes of rows buffered for the next roll.
    pub buffered_bytes: IntGauge,
    /// 1 while intake waits for a roll to make room.
    pub ingest_paused: IntGauge,
    /// Times intake waited for a roll.
    pub ingest_pauses: IntCounter,
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
    /// 1 while etcd answers (a cluster member only).
    pub cluster_etcd_up: IntGauge,
    /// Sites this member owns (a cluster member only).
    pub cluster_sites: IntGauge,
    /// 1 while this aggregator leads (trains and publishes).
    pub cluster_leader: IntGauge,
    /// Dead members' states read into this one.
    pub cluster_adoptions: IntCounter,
    /// Uplinks of sites this member does not own, left for their owner.
    pub cluster_foreign: IntCounter,
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
                "Parquet rolls that failed; their rows are kept (and in the log) and written with the next roll.",
            )?,
            rolls: g.counter(
                "vigil_cloud_rolls_total",
                "Rolls of the buffered rows into Parquet parts (every store.roll_secs or store.roll_bytes).",
            )?,
            wal_commits: g.counter(
                "vigil_cloud_wal_commits_total",
                "Group commits (write and fdatasync) of the write-ahead log; receipts follow each.",
            )?,
            wal_bytes: g.counter(
                "vigil_cloud_wal_bytes_total",
                "Bytes committed to the write-ahead log.",
            )?,
            wal_errors: g.counter(
                "vigil_cloud_wal_errors_total",
                "Write-ahead log commits that failed; their messages wait, unreceipted, for the next commit.",
            )?,
            wal_replayed: g.counter(
                "vigil_cloud_wal_replayed_total",
                "Messages read back from the write-ahead log on start (taken but not yet in Parquet when the aggregator stopped).",
            )?,
            buffered_bytes: g.gauge(
                "vigil_cloud_buffered_bytes",
                "Bytes of rows buffered in memory for the next Parquet roll.",
            )?,
            ingest_paused: g.gauge(
                "vigil_cloud_ingest_paused",
                "1 while the aggregator stops reading the broker because its buffer is full and a roll is still being written (past its capacity: the broker and the edges' spools hold the rest).",
            )?,
            ingest_pauses: g.counter(
                "vigil_cloud_ingest_pauses_total",
                "Times intake stopped to wait for a roll to make room.",
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
                "Uplink messages acknowledged to edge nodes once durable in the write-ahead log.",
            )?,
            receipts_deferred: g.counter(
                "vigil_cloud_receipts_deferred_total",
                "Uplink messages whose receipt found the broker queue full: owed again with the next receipts (intake never waits for one).",
            )?,
            cluster_etcd_up: g.gauge(
                "vigil_cloud_cluster_etcd_up",
                "1 while etcd answers this cluster member; 0: it serves the sites it owns and takes no new ones.",
            )?,
            cluster_sites: g.gauge(
                "vigil_cloud_cluster_sites_owned",
                "Sites whose uplinks this aggregator owns (etcd lease); every site in a lone aggregator, shown as 0.",
            )?,
            cluster_leader: g.gauge(
                "vigil_cloud_cluster_leader",
                "1 while this aggregator leads: it alone trains and publishes models (always 1 alone).",
            )?,
            cluster_adoptions: g.counter(
                "vigil_cloud_cluster_adoptions_total",
                "Dead members whose receipts and write-ahead log this aggregator read into its own before taking their sites.",
            )?,
            cluster_foreign: g.counter(
                "vigil_cloud_cluster_foreign_total",
                "Samples of sites this member does not own (after a site moved): not stored, not receipted; their owner takes them. (Other sites' anomalies and audit records are listed in the API, not counted here.)",
            )?,
            registry: registry.clone(),
        };
        m.cluster_leader.set(1);
        // Every bounded label value exists from the start (0 rather than no series).
        for role in ["edge", "agent"] {
            for state in ["online", "offline"] {
                m.nodes.with_label_values(&[role, state]);
            }
        }
        Ok(m)
    }
}
