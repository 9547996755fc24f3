//! Scoring's metrics: scores, the threshold, anomaly events and how long
//! a tick and a detection take.

use prometheus::{Gauge, GaugeVec, Histogram, IntCounter, IntGauge, Registry};
use vigil_core::telemetry::Group;

/// What scoring and the entity roll-up count.
#[derive(Clone)]
pub struct DetectionMetrics {
    /// Anomaly score per series (limited to the highest `score_gauges_max`).
    pub anomaly_score: GaugeVec,
    /// Anomaly events opened.
    pub anomalies: IntCounter,
    /// Entities anomalous now.
    pub anomalous_entities: IntGauge,
    /// The detector's anomaly threshold (scores at or above it are anomalous).
    pub threshold: Gauge,
    /// Time to score one tick.
    pub tick_seconds: Histogram,
    /// From the first sample scoring above the recovery level to the anomaly.
    pub fault_to_detection_seconds: Histogram,
    /// Entities with a fitted entity model.
    pub entity_models_fitted: IntGauge,
    /// Entities scored by a model the cloud trained.
    pub entity_models_from_cloud: IntGauge,
    /// Entity model fits and refits.
    pub entity_model_fits: IntCounter,
    /// Entity rows refused a model (too many metrics, or over the byte bound).
    pub entity_model_refused: IntCounter,
    /// Bytes of rows the entity models keep for fitting.
    pub entity_model_bytes: IntGauge,
}

impl DetectionMetrics {
    /// Creates and registers them.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let g = Group::new(r, "edge");
        Ok(Self {
            anomaly_score: g.float_gauges(
                "vigil_anomaly_score",
                "Latest anomaly score of a series, 0..1 (highest series only).",
                &["series"],
            )?,
            anomalies: g.counter(
                "vigil_anomalies_total",
                "Anomaly events opened (entity turned anomalous).",
            )?,
            anomalous_entities: g.gauge(
                "vigil_edge_anomalous_entities",
                "Entities anomalous now.",
            )?,
            threshold: g.float_gauge(
                "vigil_edge_detector_threshold",
                "Anomaly score at or above which a series counts as anomalous.",
            )?,
            tick_seconds: g.histogram(
                "vigil_edge_tick_duration_seconds",
                "Time to score every series in one tick.",
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, ],
            )?,
            fault_to_detection_seconds: g.histogram(
                "vigil_edge_fault_to_detection_seconds",
                "From the first sample of the top metric scoring above the recovery level (in the run that led to it) to the anomaly event.",
                &vigil_core::telemetry::DELAY_BUCKETS,
            )?,
            entity_models_fitted: g.gauge(
                "vigil_edge_entity_models",
                "Entities with a fitted entity model (all their metrics scored together).",
            )?,
            entity_models_from_cloud: g.gauge(
                "vigil_edge_entity_models_from_cloud",
                "Entities scored by an entity model the cloud trained and passed at its gate (from the model bundle).",
            )?,
            entity_model_fits: g.counter(
                "vigil_edge_entity_model_fits_total",
                "Entity model fits and refits, each on the entity's latest normal rows.",
            )?,
            entity_model_refused: g.counter(
                "vigil_edge_entity_model_refused_total",
                "Entity rows not modelled: too many metrics, or the rows' byte bound reached.",
            )?,
            entity_model_bytes: g.gauge(
                "vigil_edge_entity_model_bytes",
                "Bytes of rows the entity models keep for fitting (bounded by entity_model.max_bytes).",
            )?,
        })
    }
}
