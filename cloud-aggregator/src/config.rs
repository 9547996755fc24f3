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
    /// Seconds between flushes of buffered rows to Parquet.
    pub flush_secs: u64,
    /// Flush a partition early once it buffers this many rows.
    pub flush_rows: usize,
    /// Flush early once this many spooled uplink messages wait for their
    /// receipt (keep it below the edges' `uplink.window`, so a backlog
    /// drains without waiting for `flush_secs`).
    pub flush_acks: usize,
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
            flush_secs: 10,
            flush_rows: 50_000,
            flush_acks: 128,
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
        if self.flush_secs == 0 || self.flush_rows == 0 || self.flush_acks == 0 {
            e.push("flush_secs, flush_rows and flush_acks must be positive".into());
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
            flush_secs: 0,
            node_ttl_secs: 0,
            max_message_bytes: 1 << 30,
            ..Default::default()
        };
        assert_eq!(c.validate().len(), 4, "{:?}", c.validate());
    }
}
