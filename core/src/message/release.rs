//! Model releases and their transfer: the signed release a cloud publishes,
//! the chunk requests edges send, and the model health heartbeats carry.

use super::*;

/// A model's behaviour over one heartbeat interval, for canary decisions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelHealth {
    /// Series values scored.
    pub scored: u64,
    /// Of those, at or above the threshold.
    pub flagged: u64,
    /// Anomaly events opened.
    pub anomalies: u64,
    /// Remediation commands sent.
    pub actions: u64,
    /// Values of a service's `up` series at 0 that the model did not flag:
    /// the service's own health check saw an incident the model missed.
    pub missed: u64,
    /// Samples the edge refused (out of order, from the future, ...): a
    /// series blinded by bad timestamps shows here, not as silence.
    pub refused: u64,
    /// Median score.
    pub score_p50: f32,
    /// 99th percentile score.
    pub score_p99: f32,
}

/// Where a release is in its rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Only the cohort takes it.
    Canary,
    /// Every node takes it.
    Promoted,
    /// Nodes running a newer version go back to this one.
    Rollback,
}

impl Stage {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Canary => "canary",
            Stage::Promoted => "promoted",
            Stage::Rollback => "rollback",
        }
    }
}

/// A model release of one family: what to run and how to fetch it. Carried
/// signed (as [`SignedRelease`]), so neither the version, the stage nor the
/// cohort can be changed on the way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Model family.
    pub family: String,
    /// Release number.
    pub version: u64,
    /// Rollout stage.
    pub stage: Stage,
    /// Nodes (`site/node`) it is for; empty means every node.
    pub cohort: Vec<String>,
    /// sha256 (hex) of the whole bundle file.
    pub sha256: String,
    /// Bundle size in bytes.
    pub size: u64,
    /// Bytes per chunk (the last may be shorter).
    pub chunk_bytes: u64,
    /// sha256 (hex) of each chunk, in order.
    pub chunks: Vec<String>,
    /// When the cloud issued it, Unix ms.
    pub issued_ms: i64,
}

impl Release {
    /// Whether node `site/node` is meant to act on it.
    pub fn is_for(&self, node: &str) -> bool {
        self.cohort.is_empty() || self.cohort.iter().any(|c| c == node)
    }
}

/// A release as signed: the exact JSON text of a [`Release`] and an ed25519
/// signature over it (retained per family on `vigil/v1/models/{family}/release`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRelease {
    /// JSON of the [`Release`].
    pub release: String,
    /// Id of the signing key.
    pub key_id: String,
    /// Signature, hex.
    pub signature: String,
}
impl Payload for SignedRelease {
    const KIND: &'static str = "release";
}

impl SignedRelease {
    /// `release` as its JSON text and `key`'s signature over that text.
    pub fn sign(release: &Release, key: &crate::signing::SecretKey) -> serde_json::Result<Self> {
        let text = serde_json::to_string(release)?;
        let sig = key.sign(text.as_bytes());
        Ok(Self {
            release: text,
            key_id: sig.key_id,
            signature: sig.signature,
        })
    }
}

/// An edge asks for chunks of a release it is missing (edge → cloud).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRequest {
    /// Asking node, `site/node`.
    pub node: String,
    /// Model family.
    pub family: String,
    /// Release number.
    pub version: u64,
    /// Chunk indices wanted.
    pub chunks: Vec<u32>,
}
impl Payload for ChunkRequest {
    const KIND: &'static str = "chunk_request";
}
