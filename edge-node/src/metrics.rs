//! The edge node's Prometheus metrics, in its own explicit registry: each
//! component declares and registers its own group (the cache's, timing's, scoring's,
//! remediation's, model updates', the uplink's, the MQTT link's), and
//! [`EdgeMetrics`] composes them.

use crate::cache::CacheMetrics;
use crate::entity::DetectionMetrics;
use crate::model::ModelMetrics;
use crate::remediation::RemediationMetrics;
use crate::timing::TimingMetrics;
use crate::uplink::UplinkMetrics;
use prometheus::Registry;
use vigil_core::mqtt::LinkMetrics;

pub use crate::remediation::metrics::{rail_label, RAILS};

/// Handles to every edge metric; cheap to clone.
#[derive(Clone)]
pub struct EdgeMetrics {
    /// The registry served on `/metrics`.
    pub registry: Registry,
    /// MQTT message counters.
    pub link: LinkMetrics,
    /// The cache: series, samples taken and refused, evictions.
    pub cache: CacheMetrics,
    /// Sample times: samples placed at their arrival time.
    pub timing: TimingMetrics,
    /// Scoring: scores, threshold, anomaly events, tick time.
    pub detection: DetectionMetrics,
    /// Remediation: commands, results, holds, verifications, policies.
    pub remediation: RemediationMetrics,
    /// Model updates.
    pub model: ModelMetrics,
    /// The uplink buffer and its delivery.
    pub uplink: UplinkMetrics,
    /// Agent batches that never arrived ([`crate::gaps`]).
    pub batches_missing: prometheus::IntCounter,
    /// Messages dropped for their sender's byte rate ([`crate::intake`]).
    pub intake_limited: prometheus::IntCounter,
    /// Prometheus remote write into the edge.
    pub remote_write: crate::remote_write::RemoteWriteMetrics,
    /// Anomalies posted to Alertmanager.
    pub alerts: crate::alerts::AlertMetrics,
}

impl EdgeMetrics {
    /// Fresh metrics in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        Ok(Self {
            link: LinkMetrics::new(&registry)?,
            cache: CacheMetrics::new(&registry)?,
            timing: TimingMetrics::new(&registry)?,
            detection: DetectionMetrics::new(&registry)?,
            remediation: RemediationMetrics::new(&registry)?,
            model: ModelMetrics::new(&registry)?,
            uplink: UplinkMetrics::new(&registry)?,
            batches_missing: crate::gaps::counter(&registry)?,
            intake_limited: crate::intake::counter(&registry)?,
            remote_write: crate::remote_write::RemoteWriteMetrics::new(&registry)?,
            alerts: crate::alerts::AlertMetrics::new(&registry)?,
            registry,
        })
    }
}
