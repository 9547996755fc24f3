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
    /// The aggregator's own state (write-ahead log, receipts, models) and,
    /// unless `store` says otherwise, the Parquet store.
    pub data_dir: PathBuf,
    /// Parquet on S3-compatible object storage instead of `data_dir`:
    /// `s3://bucket/prefix`. Reached with `s3` and the usual AWS variables.
    pub store: Option<String>,
    /// How to reach the `store` bucket.
    pub s3: S3Settings,
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
    /// Anomalies and audit records kept in memory for the API (each list
    /// also holds at most 32 MiB of messages).
    pub recent: usize,
    /// Bearer token the API's write endpoints (train, promote, roll back,
    /// upload) require; unset means they refuse every request (401).
    pub api_token: Option<String>,
    /// Model lifecycle: signing, retraining, the gate and the canary.
    pub models: crate::lifecycle::ModelsConfig,
    /// Several aggregators sharing the fleet through etcd; off by default.
    /// Every member's `data_dir` must be the same shared folder (its own
    /// state goes to `data_dir/members/NAME`).
    pub cluster: crate::cluster::ClusterConfig,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            // The same packet limit as every other role, so a config that sets
            // only `mqtt.port` stays consistent with max_message_bytes.
            mqtt: MqttSettings::default(),
            listen: "127.0.0.1:9103".into(),
            data_dir: PathBuf::from("vigil-data/cloud"),
            store: None,
            s3: S3Settings::default(),
            commit_ms: 200,
            roll_secs: 300,
            roll_bytes: 128 << 20,
            node_ttl_secs: 30,
            max_message_bytes: 1024 * 1024,
            recent: 1000,
            api_token: None,
            models: crate::lifecycle::ModelsConfig::default(),
            cluster: Default::default(),
        }
    }
}

/// How to reach an S3-compatible object store. Unset fields come from the
/// usual AWS variables (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// Endpoint URL for a server other than AWS (MinIO, Ceph, moto), e.g.
    /// `http://127.0.0.1:9000`; plain http is allowed only when it says so.
    pub endpoint: Option<String>,
    /// Region, e.g. `us-east-1`.
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Seconds one request may take before it fails (and its roll is tried
    /// again later).
    pub timeout_secs: u64,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            timeout_secs: 10,
        }
    }
}

impl S3Settings {
    fn validate(&self, e: &mut Vec<String>) {
        if let Some(ep) = &self.endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                e.push(format!(
                    "s3.endpoint: {ep:?} is not an http:// or https:// URL"
                ));
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            e.push("s3: access_key_id and secret_access_key go together".into());
        }
        if !(1..=300).contains(&self.timeout_secs) {
            e.push(format!(
                "s3.timeout_secs: {} is outside 1..=300",
                self.timeout_secs
            ));
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
        if let Some(url) = &self.store {
            let bucket = url
                .strip_prefix("s3://")
                .map(|r| r.split('/').next().unwrap_or(""));
            if bucket.is_none_or(str::is_empty) {
                e.push(format!("store: {url:?} is not s3://bucket/prefix"));
            }
        }
        self.s3.validate(&mut e);
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
        self.cluster.validate(&mut e);
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
            store: Some("s3:///x".into()),
            s3: S3Settings {
                endpoint: Some("127.0.0.1:9000".into()),
                access_key_id: Some("k".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(c.validate().len(), 9, "{:?}", c.validate());
    }
}
