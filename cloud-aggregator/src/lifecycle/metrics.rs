//! The model lifecycle's metrics: stable and canary releases, transitions,
//! gate verdicts, training runs and chunks sent.

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, Registry};
use vigil_core::telemetry::Group;
use vigil_models::gate::Rule;

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
    /// Gate refusals, by model (`detector`, `entity`) and rule.
    pub gate_refusals: IntCounterVec,
    /// By how much the last refused candidate lost, by model and rule
    /// (candidate − current, in the rule's unit).
    pub gate_refusal_by: GaugeVec,
    /// Training runs, by result (`ok`, `failed`).
    pub training_runs: IntCounterVec,
    /// Bundle chunks published.
    pub chunks_sent: IntCounter,
}

impl LifecycleMetrics {
    /// Creates and registers them.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let g = Group::new(r, "cloud");
        let gate_refusals = g.counters(
            "vigil_cloud_model_gate_refusals_total",
            "Gate refusals of trained candidates, by model (detector, entity) and rule (forecast_loss, flag_rate, incidents, injected_found, injected_delay).",
            &["model", "rule"],
            &[],
        )?;
        for model in ["detector", "entity"] {
            for rule in Rule::ALL {
                gate_refusals.with_label_values(&[model, rule.as_str()]);
            }
        }
        Ok(Self {
            gate_refusals,
            gate_refusal_by: g.float_gauges(
                "vigil_cloud_model_gate_refusal_by",
                "How far the last refused candidate was from the model in force, by model and rule: candidate minus current in the rule's unit (share of points flagged, incidents, injected faults found, samples of delay, forecast loss).",
                &["model", "rule"],
            )?,
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
