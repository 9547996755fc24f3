//! The model lifecycle's settings (`models:` in the cloud config).

use super::rollout::CanaryConfig;
use super::train::TrainConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use vigil_models::signing::SecretKey;
use vigil_models::DetectorConfig;

/// Model lifecycle settings (`models:` in the cloud config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// The model family this cloud trains and releases.
    pub family: String,
    /// The ed25519 key releases are signed with (`vigil keygen` makes one).
    /// Without it nothing is published.
    pub signing_key: Option<PathBuf>,
    /// Bundle bytes per MQTT message (under every common broker's limit).
    pub chunk_bytes: usize,
    /// Retrain every this many seconds (0: only on demand).
    pub train_every_secs: u64,
    /// Settings of the first model, before any release exists.
    pub detector: DetectorConfig,
    /// Retraining.
    pub train: TrainConfig,
    /// The canary.
    pub canary: CanaryConfig,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            family: "default".into(),
            signing_key: None,
            chunk_bytes: 256 * 1024,
            train_every_secs: 86_400,
            detector: DetectorConfig::default(),
            train: TrainConfig::default(),
            canary: CanaryConfig::default(),
        }
    }
}

impl ModelsConfig {
    /// Every problem with the settings.
    pub fn validate(&self, max_packet: usize, e: &mut Vec<String>) {
        if !vigil_core::topic::valid_level(&self.family) {
            e.push(format!(
                "models.family: {:?} must be 1-64 of [A-Za-z0-9._-]",
                self.family
            ));
        }
        if self.chunk_bytes < 1024 || self.chunk_bytes + 1024 > max_packet {
            e.push(format!(
                "models.chunk_bytes: {} must be at least 1024 and leave 1 KiB under mqtt.max_packet_bytes {max_packet}",
                self.chunk_bytes
            ));
        }
        if let Some(k) = &self.signing_key {
            if let Err(err) = SecretKey::read(k) {
                e.push(format!("models.signing_key: {err}"));
            }
        }
        e.extend(
            self.detector
                .validate()
                .into_iter()
                .map(|p| format!("models.detector.{p}")),
        );
        self.train.validate(e);
        self.canary.validate(e);
    }
}
