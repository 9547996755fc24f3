//! The model lifecycle's metrics: stable and canary releases, transitions,
//! gate verdicts, training runs and chunks sent.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use vigil_core::telemetry::Group;

/// Model lifecycle metrics.
#[derive(Clone)]
pub struct LifecycleMetrics {
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

impl LifecycleMetrics {
    /// Creates and registers them.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let g = Group::new(r, "cloud");
        Ok(Self {
            stable: g.gauge(
                "vigil_cloud_model_stable_release",
                "Release every edge node should run (0: none yet).",
            )?,
            canary: g.gauge(
                "vigil_cloud_model_canary_release",
                "Release in canary (0: none).",
            )?,
            transitions: g.counters(
                "vigil_cloud_model_transitions_total",
                "Model lifecycle transitions, by state entered (candidate, rejected, canary, promoted, rolled_back).",
                &["to"],
                &["candidate", "rejected", "canary", "promoted", "rolled_back"],
            )?,
            gate: g.counters(
                "vigil_cloud_model_gate_total",
                "Evaluation gate verdicts on trained candidates, by result.",
                &["result"],
                &["passed", "rejected"],
            )?,
            training_runs: g.counters(
                "vigil_cloud_model_training_runs_total",
                "Retraining runs, by result (ok, failed).",
                &["result"],
                &["ok", "failed"],
            )?,
            chunks_sent: g.counter(
                "vigil_cloud_model_chunks_sent_total",
                "Model bundle chunks published to edge nodes.",
            )?,
        })
    }
}
