//! Remediation commands (edge → agent) and their results (agent → edge).

use super::*;

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
