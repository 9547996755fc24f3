//! Edge node configuration (YAML). Every field has a default; `validate()`
//! reports every problem at once.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use vigil_core::mqtt::MqttSettings;
use vigil_core::topic;
use vigil_models::DetectorConfig;

/// The edge node's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Site this edge serves (topic level).
    pub site: String,
    /// This node's name.
    pub node: String,
    /// The broker.
    pub mqtt: MqttSettings,
    /// Milliseconds between scoring ticks.
    pub tick_ms: u64,
    /// Address for `/metrics`, `/healthz` and the HTTP API.
    pub listen: String,
    /// Where the audit log is written.
    pub data_dir: PathBuf,
    /// Policy file; empty means no remediation.
    pub policy: PathBuf,
    /// Cache bounds.
    pub cache: CacheConfig,
    /// Detector settings.
    pub detector: DetectorConfig,
    /// Seconds a command stays valid; an agent refuses it afterwards.
    pub command_ttl_secs: u64,
    /// Hand the points gathered to the uplink buffer every this many ticks.
    pub uplink_every_ticks: u64,
    /// The on-disk uplink buffer and its delivery to the cloud.
    pub uplink: crate::uplink::UplinkConfig,
    /// Seconds between heartbeats to the cloud.
    pub heartbeat_secs: u64,
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Samples stamped further than this in the future are refused, seconds.
    pub max_future_secs: u64,
    /// Samples stamped further than this in the past are refused, seconds.
    pub max_past_secs: u64,
    /// A sender's clock within this many seconds of the edge's is trusted;
    /// beyond it, samples are judged by their arrival time (an agent's
    /// batch is shifted by its clock's error, a sensor's reading takes the
    /// arrival time, a sample stamped ahead is placed at arrival).
    pub clock_tolerance_secs: f64,
    /// Values larger in magnitude than this are refused (`too_large`).
    pub max_abs_value: f64,
    /// Seconds between detector snapshots (`<data_dir>/detector.snap`,
    /// also written at a clean stop), from which a restarted edge scores
    /// at once; 0: none.
    pub snapshot_secs: u64,
    /// Publish the anomaly score of at most this many series as gauges (highest first).
    pub score_gauges_max: usize,
    /// Publish the score gauge only for series at or above the threshold
    /// (still at most `score_gauges_max`).
    pub score_gauges_anomalous_only: bool,
    /// Site-wide remediation rails: rate limit and short-circuit.
    pub rails: crate::rails::RailsConfig,
    /// Per-sender limits on bytes and new series a second (fair intake).
    pub intake: crate::intake::IntakeConfig,
    /// Seconds between checks of the policy file for changes (hot reload).
    pub reload_secs: f64,
    /// Bearer token the API's approval endpoints require; unset means the
    /// endpoints refuse every request (401).
    pub api_token: Option<String>,
    /// Prometheus remote write into the edge (`POST /api/v1/write`).
    pub remote_write: crate::remote_write::RemoteWriteConfig,
    /// Anomalies to Alertmanager.
    pub alerts: crate::alerts::AlertsConfig,
    /// Model updates from the cloud: family, trusted keys, transfer.
    pub model: crate::model::ModelConfig,
    /// The entity model: all of an entity's metrics scored together.
    pub entity_model: crate::entity::model::EntityModelConfig,
    /// The key this edge signs its commands with (agents trust its public
    /// half, `<key>.pub`, in `trusted_edge_keys`). Empty:
    /// `<data_dir>/command.key`, made on the first start.
    pub command_key: PathBuf,
}

/// Bounds of the per-series ring cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Most series kept; new series beyond it are refused and counted.
    pub max_series: usize,
    /// Points kept per series.
    pub points_per_series: usize,
    /// A series without a sample for this many seconds is evicted.
    pub evict_idle_secs: u64,
    /// When the cache is full, a new series takes the slot of the stalest
    /// series that is not live; a series is live (never pushed out) once it
    /// has sent two samples, the latest within this many seconds.
    pub protect_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_series: 10_000,
            // A minute at 1 Hz: the uplink takes points every few ticks, so
            // the ring is for the API and onset times (24 B a point: 14 MB
            // for 10,000 series).
            points_per_series: 60,
            evict_idle_secs: 3600,
            protect_secs: 60,
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            site: "site-1".into(),
            node: "edge-1".into(),
            mqtt: MqttSettings::default(),
            tick_ms: 1000,
            listen: "127.0.0.1:9102".into(),
            data_dir: PathBuf::from("vigil-data/edge"),
            policy: PathBuf::new(),
            cache: CacheConfig::default(),
            detector: DetectorConfig::default(),
            command_ttl_secs: 30,
            uplink_every_ticks: 5,
            uplink: Default::default(),
            heartbeat_secs: 5,
            max_message_bytes: 1024 * 1024,
            max_future_secs: 300,
            max_past_secs: 6 * 3600,
            clock_tolerance_secs: 5.0,
            max_abs_value: 1e15,
            snapshot_secs: 60,
            score_gauges_max: 500,
            score_gauges_anomalous_only: false,
            rails: crate::rails::RailsConfig::default(),
            intake: crate::intake::IntakeConfig::default(),
            reload_secs: 2.0,
            api_token: None,
            remote_write: Default::default(),
            alerts: Default::default(),
            model: crate::model::ModelConfig::default(),
            entity_model: Default::default(),
            command_key: PathBuf::new(),
        }
    }
}

impl EdgeConfig {
    /// Where the command signing key is.
    pub fn command_key_path(&self) -> PathBuf {
        if self.command_key.as_os_str().is_empty() {
            self.data_dir.join("command.key")
        } else {
            self.command_key.clone()
        }
    }

    /// How sample timestamps are placed on the edge's clock.
    pub fn timing(&self) -> crate::timing::Timing {
        crate::timing::Timing {
            tolerance_ms: (self.clock_tolerance_secs * 1000.0) as i64,
            max_future_ms: self.max_future_secs as i64 * 1000,
        }
    }

    /// Every problem with the settings.
    pub fn validate(&self) -> Vec<String> {
        let mut e = self.rails.validate();
        e.extend(self.intake.validate());
        self.remote_write.validate(self.api_token.is_some(), &mut e);
        self.alerts.validate(&mut e);
        self.entity_model.validate(&mut e);
        if !topic::valid_site(&self.site) {
            e.push(format!(
                "site: {:?} must be 1-64 of [A-Za-z0-9._-] and not `models`",
                self.site
            ));
        }
        if !topic::valid_level(&self.node) {
            e.push(format!(
                "node: {:?} must be 1-64 of [A-Za-z0-9._-]",
                self.node
            ));
        }
        self.mqtt.validate("mqtt", &mut e);
        if !(50..=60_000).contains(&self.tick_ms) {
            e.push(format!("tick_ms: {} is outside 50..=60000", self.tick_ms));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            e.push(format!(
                "listen: {:?} is not an address like 127.0.0.1:9102",
                self.listen
            ));
        }
        if self.cache.max_series == 0 || self.cache.points_per_series == 0 {
            e.push("cache: max_series and points_per_series must be positive".into());
        }
        e.extend(
            self.detector
                .validate()
                .into_iter()
                .map(|p| format!("detector.{p}")),
        );
        if !(self.reload_secs >= 0.1 && self.reload_secs <= 3600.0) {
            e.push(format!(
                "reload_secs: {} is outside 0.1..=3600",
                self.reload_secs
            ));
        }
        if self.api_token.as_deref().is_some_and(|t| t.len() < 16) {
            e.push("api_token: use at least 16 characters".into());
        }
        self.model.validate(&mut e);
        self.uplink.validate(&mut e);
        if !(self.clock_tolerance_secs >= 0.0
            && self.clock_tolerance_secs <= self.max_future_secs as f64)
        {
            e.push(format!(
                "clock_tolerance_secs: {} is outside 0..=max_future_secs ({})",
                self.clock_tolerance_secs, self.max_future_secs
            ));
        }
        if !(self.max_abs_value > 0.0 && self.max_abs_value.is_finite()) {
            e.push(format!(
                "max_abs_value: {} must be positive and finite",
                self.max_abs_value
            ));
        }
        if self.max_past_secs == 0 {
            e.push("max_past_secs: must be positive".into());
        }
        if self.command_ttl_secs == 0 {
            e.push("command_ttl_secs: must be positive".into());
        }
        if self.uplink_every_ticks == 0 || self.heartbeat_secs == 0 {
            e.push("uplink_every_ticks and heartbeat_secs must be positive".into());
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_and_validates() {
        let c = EdgeConfig::default();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let text = serde_yaml_ng::to_string(&c).unwrap();
        assert_eq!(serde_yaml_ng::from_str::<EdgeConfig>(&text).unwrap(), c);
    }

    #[test]
    fn reports_every_problem() {
        let mut c = EdgeConfig {
            site: String::new(),
            tick_ms: 1,
            listen: "nope".into(),
            ..Default::default()
        };
        c.detector.hidden = 0;
        c.cache.max_series = 0;
        assert_eq!(c.validate().len(), 5, "{:?}", c.validate());
    }
}
