//! The messages that travel between tiers. Each is a [`Payload`] with its own
//! envelope kind; control messages stay readable JSON for `mosquitto_sub`.

use crate::envelope::Payload;
use crate::series::EntityId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One observation of one metric of one entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Entity the value describes.
    pub entity: EntityId,
    /// Metric name.
    pub metric: String,
    /// When it was observed, Unix milliseconds.
    pub ts_ms: i64,
    /// The value.
    pub value: f64,
}

/// What an agent publishes each interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricBatch {
    /// Publishing host.
    pub host: String,
    /// Batch number, increasing per agent process.
    pub seq: u64,
    /// The samples.
    pub samples: Vec<Sample>,
}
impl Payload for MetricBatch {
    const KIND: &'static str = "metrics";
}

/// A remediation command from the edge to an agent. It names a catalog
/// action; it never carries a command line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique id; an agent runs each id at most once.
    pub id: String,
    /// Catalog action name.
    pub action: String,
    /// Entity the action is for.
    pub target: EntityId,
    /// Parameters; only those the catalog declares are accepted.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// When the edge issued it, Unix ms.
    pub issued_ms: i64,
    /// After this instant the agent refuses it (a late replay does nothing).
    pub expires_ms: i64,
    /// Policy that decided it.
    pub policy: String,
    /// Anomaly that triggered it, if any.
    #[serde(default)]
    pub anomaly_id: Option<String>,
    /// Who sends it (`<site>/<edge node>`): the lease on the target is taken
    /// in this name, and only this holder may act on the target until it ends.
    #[serde(default)]
    pub holder: String,
    /// Fencing token of the lease the sender holds on the target, if it holds
    /// one; the agent refuses a token older than the target's newest lease.
    #[serde(default)]
    pub lease_token: Option<u64>,
    /// How long the lease on the target lasts from when the agent takes the
    /// command, ms (long enough to cover the action and its verification).
    #[serde(default)]
    pub lease_ms: i64,
    /// The agent (host) it is for: a signed command runs only there, so a
    /// command for one host replayed to another does nothing.
    #[serde(default)]
    pub to: String,
    /// The edge's ed25519 signature over every other field; agents refuse
    /// a command without one that a trusted edge key verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::signing::Signature>,
}
impl Payload for Command {
    const KIND: &'static str = "command";
}

impl Command {
    /// The bytes the signature covers: the command as JSON without its
    /// signature (field order is the struct's; params are sorted).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut c = self.clone();
        c.signature = None;
        serde_json::to_vec(&c).unwrap_or_default()
    }

    /// Signs the command with the edge's key.
    pub fn sign(&mut self, key: &crate::signing::SecretKey) {
        self.signature = Some(key.sign(&self.signing_bytes()));
    }

    /// Checks the signature against the trusted edge keys; returns the id
    /// of the key that made it.
    pub fn verify(
        &self,
        keys: &crate::signing::Keyring,
    ) -> Result<String, crate::signing::SignError> {
        let sig = self
            .signature
            .as_ref()
            .ok_or(crate::signing::SignError::Unsigned)?;
        keys.verify(&self.signing_bytes(), sig)
    }
}

/// How a command ended on the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action ran and succeeded.
    Succeeded,
    /// The action ran and failed (or timed out).
    Failed,
    /// Refused: unknown action, undeclared parameter, wrong target.
    Rejected,
    /// Refused: arrived after its expiry.
    Expired,
    /// Ignored: this id already ran.
    Duplicate,
    /// Refused: another holder leases the target, or the lease token is stale.
    Fenced,
}

impl Outcome {
    /// Every outcome (the label values of outcome metrics).
    pub const ALL: [Outcome; 6] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::Rejected,
        Outcome::Expired,
        Outcome::Duplicate,
        Outcome::Fenced,
    ];

    /// Bounded label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Rejected => "rejected",
            Outcome::Expired => "expired",
            Outcome::Duplicate => "duplicate",
            Outcome::Fenced => "fenced",
        }
    }
}

/// An agent's report on a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id.
    pub command_id: String,
    /// Reporting host.
    pub host: String,
    /// Action name as received.
    pub action: String,
    /// Target as received.
    pub target: EntityId,
    /// How it ended.
    pub outcome: Outcome,
    /// Human-readable detail (error text, new PID, …).
    pub detail: String,
    /// When the agent started it, Unix ms.
    pub started_ms: i64,
    /// When it finished, Unix ms.
    pub finished_ms: i64,
    /// The lease token the command ran under (new or renewed), when it ran.
    #[serde(default)]
    pub lease_token: Option<u64>,
}
impl Payload for CommandResult {
    const KIND: &'static str = "result";
}

/// Online or offline, for retained presence topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    /// Connected.
    Online,
    /// Gone (clean shutdown or last will).
    Offline,
}

/// Retained presence of a node, with a last will of `offline`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// Node name (host name for agents, site for edges).
    pub node: String,
    /// `agent`, `edge` or `cloud`.
    pub role: String,
    /// Online or offline.
    pub state: PresenceState,
    /// When it was written, Unix ms.
    pub ts_ms: i64,
    /// An agent's catalog action names: what it can be commanded to run
    /// (the edge checks its policies against them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}
impl Payload for Presence {
    const KIND: &'static str = "presence";
}

/// A metric that contributed to an anomaly, with its own score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contributor {
    /// Metric name.
    pub metric: String,
    /// Its anomaly score in [0, 1].
    pub score: f64,
    /// Its latest value.
    pub value: f64,
}

/// An entity turned anomalous (edge → cloud, and to the policy engine).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyEvent {
    /// Unique id.
    pub id: String,
    /// Site of the edge that saw it.
    pub site: String,
    /// Anomalous entity.
    pub entity: EntityId,
    /// Entity score: the highest of its series.
    pub score: f64,
    /// The metric that contributed most (the reported root cause).
    pub top_metric: String,
    /// The most anomalous metrics, highest first.
    pub contributors: Vec<Contributor>,
    /// When, Unix ms.
    pub ts_ms: i64,
    /// Model that scored it.
    pub model_version: String,
}
impl Payload for AnomalyEvent {
    const KIND: &'static str = "anomaly";
}

/// What an audit record says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A policy matched and a command was sent.
    ActionSent,
    /// A policy matched but a rail (cooldown, budget, in flight, mode) held back.
    HeldBack,
    /// An `approve` policy asked a human; the decision waits on the HTTP API.
    AwaitingApproval,
    /// The agent reported a result.
    ActionResult,
    /// The target recovered within the verify window.
    Verified,
    /// The target did not recover in time.
    VerifyFailed,
    /// A result for no command in flight: one this edge never sent (a
    /// forged command, another edge's) or one already closed (a replay).
    UnexpectedResult,
}

impl AuditKind {
    /// The kind as written in JSON, for metric labels and columns.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::ActionSent => "action_sent",
            AuditKind::HeldBack => "held_back",
            AuditKind::AwaitingApproval => "awaiting_approval",
            AuditKind::ActionResult => "action_result",
            AuditKind::Verified => "verified",
            AuditKind::VerifyFailed => "verify_failed",
            AuditKind::UnexpectedResult => "unexpected_result",
        }
    }
}

/// One line of the append-only audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, Unix ms.
    pub ts_ms: i64,
    /// Site.
    pub site: String,
    /// What happened.
    pub kind: AuditKind,
    /// Policy name.
    pub policy: String,
    /// Version (content hash) of the policy file in force.
    pub policy_version: String,
    /// Target entity.
    pub target: EntityId,
    /// Action name.
    pub action: String,
    /// Command id, once one exists.
    #[serde(default)]
    pub command_id: Option<String>,
    /// Anomaly behind it.
    #[serde(default)]
    pub anomaly_id: Option<String>,
    /// Model that flagged the anomaly.
    pub model_version: String,
    /// Entity score when decided.
    #[serde(default)]
    pub score: Option<f64>,
    /// The metric that contributed most to that score.
    #[serde(default)]
    pub top_metric: String,
    /// The policy's mode: `auto`, `shadow` or `approve`.
    #[serde(default)]
    pub mode: String,
    /// Lease fencing token the command carried or was granted.
    #[serde(default)]
    pub lease_token: Option<u64>,
    /// Result, when one is known.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// The rail that held the action back, when one did (`budget`,
    /// `cooldown`, `rate limit`, `lease`, `approval`, ...).
    #[serde(default)]
    pub rail: Option<String>,
    /// Human-readable detail.
    pub detail: String,
}
impl Payload for AuditRecord {
    const KIND: &'static str = "audit";
}

/// A downsampled sample with its score, as uplinked to the cloud.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredSample {
    /// Entity.
    pub entity: EntityId,
    /// Metric.
    pub metric: String,
    /// Unix ms.
    pub ts_ms: i64,
    /// Value.
    pub value: f64,
    /// Anomaly score in [0, 1]; absent for a raw sample that arrived
    /// between two ticks and was not scored itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// A batch of scored samples (edge → cloud).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleBatch {
    /// Site.
    pub site: String,
    /// The samples.
    pub samples: Vec<ScoredSample>,
}
impl Payload for SampleBatch {
    const KIND: &'static str = "samples";
}

/// Periodic liveness and health of an edge node (edge → cloud).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Site.
    pub site: String,
    /// Node name.
    pub node: String,
    /// Unix ms.
    pub ts_ms: i64,
    /// Vigil version.
    pub version: String,
    /// Model version scoring now.
    pub model_version: String,
    /// Series in the cache.
    pub series: u64,
    /// Entities anomalous now.
    pub anomalous_entities: u64,
    /// Agents seen online.
    pub agents_online: u64,
    /// Model family followed.
    #[serde(default)]
    pub model_family: String,
    /// Release scoring now (`None`: the edge's own online-trained model).
    #[serde(default)]
    pub model_release: Option<u64>,
    /// How the model behaved since the previous heartbeat.
    #[serde(default)]
    pub health: ModelHealth,
}
impl Payload for Heartbeat {
    const KIND: &'static str = "heartbeat";
}

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

/// The cloud's receipt for spooled uplink messages it has written to its
/// store (cloud → edge): the edge may forget them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkAck {
    /// The edge buffer's stream id the sequence numbers belong to.
    pub stream: String,
    /// Sequence numbers now durable in the cloud.
    pub seqs: Vec<u64>,
}
impl Payload for UplinkAck {
    const KIND: &'static str = "uplink_ack";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_kind_names_match_their_json() {
        use AuditKind::*;
        for k in [
            ActionSent,
            HeldBack,
            AwaitingApproval,
            ActionResult,
            Verified,
            VerifyFailed,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
