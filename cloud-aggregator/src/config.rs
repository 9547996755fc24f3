//! Cloud aggregator configuration (YAML).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use vigil_core::mqtt::MqttSettings;

/// The aggregator's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// The broker.
    pub mqtt: MqttSettings,
    /// Address for the HTTP API, `/metrics` and `/healthz`.
    pub listen: String,
    /// Root of the Parquet store.
    pub data_dir: PathBuf,
    /// Milliseconds between group commits of the write-ahead log: every
    /// message taken since the last one is made durable with one fsync,
    /// then receipted.
    pub commit_ms: u64,
    /// Seconds of buffered rows per Parquet roll (one part per table and
    /// hour each roll).
    pub roll_secs: u64,
    /// ...or this many bytes of buffered rows, whichever comes first. Intake
    /// pauses while twice this waits for a roll being written.
    pub roll_bytes: usize,
    /// A node whose last heartbeat is older than this is offline, seconds.
    pub node_ttl_secs: u64,
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Anomalies and audit records kept in memory for the API.
    pub recent: usize,
    /// Bearer token the API's write endpoints (train, promote, roll back,
    /// upload) require; unset means they refuse every request (401).
    pub api_token: Option<String>,
    /// Model lifecycle: signing, retraining, the gate and the canary.
    pub models: crate::lifecycle::ModelsConfig,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            // The same packet limit as every other role, so a config that sets
            // only `mqtt.port` stays consistent with max_message_bytes.
            mqtt: MqttSettings::default(),
            listen: "127.0.0.1:9103".into(),
            data_dir: PathBuf::from("vigil-data/cloud"),
            commit_ms: 200,
            roll_secs: 300,
            roll_bytes: 128 << 20,
            node_ttl_secs: 30,
            max_message_bytes: 1024 * 1024,
            recent: 1000,
            api_token: None,
            models: crate::lifecycle::ModelsConfig::default(),
        }
    }
}

impl CloudConfig {
    /// Every problem with the settings.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        self.mqtt.validate("mqtt", &mut e);
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            e.push(format!(
                "listen: {:?} is not an address like 127.0.0.1:9103",
                self.listen
            ));
        }
        if !(1..=10_000).contains(&self.commit_ms) {
            e.push(format!(
                "commit_ms: {} is outside 1..=10000",
                self.commit_ms
            ));
        }
        if self.roll_secs == 0 {
            e.push("roll_secs: must be positive".into());
        }
        if self.roll_bytes < 1 << 20 {
            e.push(format!(
                "roll_bytes: {} is below the minimum of 1048576",
                self.roll_bytes
            ));
        }
        if self.node_ttl_secs == 0 {
            e.push("node_ttl_secs: must be positive".into());
        }
        if self.max_message_bytes > self.mqtt.max_packet_bytes {
            e.push(format!(
                "max_message_bytes: {} exceeds mqtt.max_packet_bytes {}; such messages could never arrive",
                self.max_message_bytes, self.mqtt.max_packet_bytes
            ));
        }
        if self.api_token.as_deref().is_some_and(|t| t.len() < 16) {
            e.push("api_token: use at least 16 characters".into());
        }
        self.models.validate(self.mqtt.max_packet_bytes, &mut e);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_and_validates() {
        let c = CloudConfig::default();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let text = serde_yaml_ng::to_string(&c).unwrap();
        assert_eq!(serde_yaml_ng::from_str::<CloudConfig>(&text).unwrap(), c);
    }

    #[test]
    fn setting_only_the_port_is_valid() {
        let c: CloudConfig = serde_yaml_ng::from_str("mqtt: { port: 18830 }\n").unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn reports_every_problem() {
        let c = CloudConfig {
            listen: "x".into(),
            commit_ms: 0,
            roll_secs: 0,
            roll_bytes: 5,
            node_ttl_secs: 0,
            max_message_bytes: 1 << 30,
            ..Default::default()
        };
        assert_eq!(c.validate().len(), 6, "{:?}", c.validate());
    }
}
