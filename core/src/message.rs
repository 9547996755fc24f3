//! The messages that travel between tiers. Each is a [`Payload`] with its own
//! envelope kind; control messages stay readable JSON for `mosquitto_sub`.

use crate::envelope::Payload;
use crate::series::EntityId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod command;
mod release;

pub use command::*;
pub use release::*;

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

impl Sample {
    /// About what it takes held in memory: its names and 48 bytes (for the
    /// queues that bound what waits in bytes).
    pub fn held_bytes(&self) -> usize {
        self.entity.0.len() + self.metric.len() + 48
    }
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

/// A metric's share of its entity's anomaly evidence (the entity model's
/// root cause): the shares of the listed metrics add up to 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricShare {
    /// Metric name.
    pub metric: String,
    /// Its share, 0..1.
    pub share: f64,
}

/// `cpu 62%, mem 30%, disk 8%`, for logs and flat tables.
pub fn shares_text(shares: &[MetricShare]) -> String {
    shares
        .iter()
        .map(|s| format!("{} {:.0}%", s.metric, s.share * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
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
    /// The entity model's score over its threshold (1: its alarm level),
    /// once the entity has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_score: Option<f64>,
    /// The entity model's top metrics with their shares, once it has one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub root_cause: Vec<MetricShare>,
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
    /// The target's top three metrics when decided, with their shares of
    /// the evidence (the entity model's, or the series scores' before the
    /// entity has a model).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub root_cause: Vec<MetricShare>,
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

/// A receiver's view of a [`SampleBatch`] that borrows its strings from the
/// message: no allocation per sample (read with [`crate::envelope::decode_kind`]
/// and [`SampleBatch::KIND`]).
#[derive(Debug, PartialEq, Deserialize)]
pub struct SampleBatchRef<'a> {
    /// Site.
    #[serde(borrow)]
    pub site: std::borrow::Cow<'a, str>,
    /// The samples.
    #[serde(borrow)]
    pub samples: Vec<ScoredSampleRef<'a>>,
}

/// One sample of a [`SampleBatchRef`].
#[derive(Debug, PartialEq, Deserialize)]
pub struct ScoredSampleRef<'a> {
    /// Entity, as text.
    #[serde(borrow)]
    pub entity: std::borrow::Cow<'a, str>,
    /// Metric.
    #[serde(borrow)]
    pub metric: std::borrow::Cow<'a, str>,
    /// Unix ms.
    pub ts_ms: i64,
    /// Value.
    pub value: f64,
    /// Anomaly score, when scored.
    #[serde(default)]
    pub score: Option<f64>,
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
    fn the_borrowed_view_of_a_batch_reads_what_was_sent() {
        let sample = |score, metric: &str| ScoredSample {
            entity: crate::EntityId::host("h1"),
            metric: metric.into(),
            ts_ms: 7,
            value: 1.5,
            score,
        };
        let batch = SampleBatch {
            site: "s".into(),
            samples: vec![sample(Some(0.25), "cpu"), sample(None, "quote\"d")],
        };
        let bytes = crate::encode(&batch);
        let seen: SampleBatchRef = crate::envelope::decode_kind(&bytes, 1 << 20, SampleBatch::KIND)
            .unwrap()
            .body;
        assert_eq!(seen.site, "s");
        let got: Vec<(&str, &str, i64, f64, Option<f64>)> = seen
            .samples
            .iter()
            .map(|s| (&*s.entity, &*s.metric, s.ts_ms, s.value, s.score))
            .collect();
        assert_eq!(
            got,
            [
                ("host/h1", "cpu", 7, 1.5, Some(0.25)),
                ("host/h1", "quote\"d", 7, 1.5, None)
            ]
        );
        assert!(matches!(
            seen.samples[0].metric,
            std::borrow::Cow::Borrowed(_)
        ));
        let wrong = crate::envelope::decode_kind::<SampleBatchRef>(&bytes, 1 << 20, "audit");
        assert_eq!(wrong.unwrap_err().reason(), "wrong_kind");
    }

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
