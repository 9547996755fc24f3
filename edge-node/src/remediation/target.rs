//! One target's remediation state: where its current action is (idle,
//! awaiting a result, verifying), its cooldowns, lease and escalation.

use std::collections::HashMap;
use vigil_core::message::Command;

#[derive(Debug, Clone)]
pub(super) enum Phase {
    Idle,
    Awaiting {
        command: Command,
        sent_ms: i64,
        /// Sent by this edge before it restarted: without a result in time
        /// the outcome is unknown and recovery is checked all the same.
        resumed: bool,
    },
    Verifying {
        command: Command,
        result_ms: i64,
        until_ms: i64,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) phase: Phase,
    /// The policy that acted last (after any escalation).
    pub(super) policy: String,
    /// Until when each action is cooling down on this target, Unix ms.
    pub(super) cooldowns: HashMap<String, i64>,
    /// Anomaly and rail already audited as held back, so a rail logs once
    /// per episode.
    pub(super) held_for: Option<(Option<String>, &'static str)>,
    /// Fencing token of the lease the agent granted us on this target.
    pub(super) lease: Option<u64>,
    /// Score, top metric and root cause when the last action was decided.
    pub(super) trigger: (f64, String, Vec<vigil_core::message::MetricShare>),
    /// After a failed verification with `escalate_on_failure`: the anomaly
    /// and the policy that takes over for it.
    pub(super) escalated: Option<(Option<String>, String)>,
    /// The policy that matched (before any escalation): whether recovery is
    /// judged by its liveness conditions or by the anomaly score.
    pub(super) matched: String,
    /// When the last command was sent, Unix ms.
    pub(super) acted_ms: Option<i64>,
    /// Cooldown backoff counts only actions after this instant (the last
    /// time the target stayed healthy for `cooldown_reset_secs`).
    pub(super) reset_ms: Option<i64>,
}

impl Target {
    pub(super) fn new(policy: &str) -> Self {
        Self {
            phase: Phase::Idle,
            policy: policy.to_string(),
            cooldowns: HashMap::new(),
            held_for: None,
            lease: None,
            trigger: (0.0, String::new(), Vec::new()),
            escalated: None,
            matched: policy.to_string(),
            acted_ms: None,
            reset_ms: None,
        }
    }
}
