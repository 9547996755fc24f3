//! Model updates' metrics: the release scoring, updates, refusals, chunks
//! and transfer time.

use prometheus::{Histogram, IntCounterVec, IntGauge, Registry};
use vigil_core::telemetry::Group;

/// What model updates count.
#[derive(Clone)]
pub struct ModelMetrics {
    /// Release number scoring now (0: the edge's own online model).
    pub release: IntGauge,
    /// Model updates, by result (`installed`, `refused`).
    pub updates: IntCounterVec,
    /// Refused releases and bundles, by reason.
    pub refusals: IntCounterVec,
    /// Bundle chunks received, by result (`stored`, `duplicate`, `bad`, `unexpected`).
    pub chunks: IntCounterVec,
    /// From the first chunk request to the model scoring.
    pub transfer_seconds: Histogram,
}

impl ModelMetrics {
    /// Creates and registers them.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let g = Group::new(r, "edge");
        Ok(Self {
            release: g.gauge(
                "vigil_edge_model_release",
                "Release number of the model scoring now (0: the edge's own online-trained model).",
            )?,
            updates: g.counters(
                "vigil_edge_model_updates_total",
                "Model updates, by result (installed, refused).",
                &["result"],
                &["installed", "refused"],
            )?,
            refusals: g.counters(
                "vigil_edge_model_refusals_total",
                "Releases and bundles refused, by reason; the running model stays.",
                &["reason"],
                &[
                    "malformed",
                    "missing_file",
                    "tampered",
                    "unsigned",
                    "unknown_key",
                    "bad_signature",
                    "model",
                    "older",
                    "mismatch",
                ],
            )?,
            chunks: g.counters(
                "vigil_edge_model_chunks_total",
                "Model bundle chunks received, by result.",
                &["result"],
                &["stored", "duplicate", "bad", "unexpected"],
            )?,
            transfer_seconds: g.histogram(
                "vigil_edge_model_transfer_seconds",
                "Time from the first chunk request to the new model scoring.",
                &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
            )?,
        })
    }
}
