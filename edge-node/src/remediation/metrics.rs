//! Remediation's metrics: commands, results, holds by rail, verifications
//! and the policies' record.

use prometheus::{GaugeVec, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use vigil_core::telemetry::Group;

/// Label values of `vigil_edge_actions_held_back_total{rail}`: the rails
/// the engine names, so every series exists from the start.
pub const RAILS: [&str; 9] = [
    "budget",
    "cooldown",
    "short_circuit",
    "rate_limit",
    "approval",
    "shadow_mode",
    "agent",
    "lease",
    "other",
];

/// The rail label of a held-back audit record (the short-circuit audits its
/// trip under its policy name).
pub fn rail_label(rec: &vigil_core::message::AuditRecord) -> &'static str {
    let name = rec.rail.as_deref().unwrap_or(&rec.policy);
    if name == crate::remediation::SHORT_CIRCUIT {
        return "short_circuit";
    }
    let norm = name.replace([' ', '-'], "_");
    RAILS
        .iter()
        .find(|r| **r == norm)
        .copied()
        .unwrap_or("other")
}

/// What remediation counts: commands, results, holds by rail, verifications, policies.
#[derive(Clone)]
pub struct RemediationMetrics {
    /// Remediation commands sent.
    pub commands_sent: IntCounter,
    /// Agent results, by outcome (plus `no_result`).
    pub action_results: IntCounterVec,
    /// Decisions a rail or mode held back, by rail.
    pub held_back: IntCounterVec,
    /// 1 while the site-wide short-circuit holds every action.
    pub short_circuit: IntGauge,
    /// Pages sent when the site-wide short-circuit trips.
    pub pages: IntCounter,
    /// Per policy, the runs its budget still allows on its most-repaired target.
    pub budget_left: IntGaugeVec,
    /// Recovery checks, by result (`verified`, `failed`).
    pub verifications: IntCounterVec,
    /// Verified and failed recoveries per policy.
    pub policy_verifications: IntCounterVec,
    /// Share of each policy's verified actions that fixed the target.
    pub policy_fix_ratio: GaugeVec,
    /// From the anomaly to the first command sent for it.
    pub detection_to_action_seconds: Histogram,
    /// Results for no command in flight (forged, another edge's, replays).
    pub unexpected_results: IntCounter,
    /// Policies naming an action an agent they would send to lacks.
    pub policy_problems: IntGauge,
    /// Policy file reloads, by result (`ok`, `failed`).
    pub policy_reloads: IntCounterVec,
    /// Audit records that could not be written to disk.
    pub audit_write_errors: IntCounter,
    /// Targets Vigil stopped repairing by itself, by cause.
    pub gave_up: IntCounterVec,
    /// Commands sent by a policy a target was handed to, by cause.
    pub escalations: IntCounterVec,
}

impl RemediationMetrics {
    /// Creates and registers them.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let mut outcomes = vigil_core::message::Outcome::ALL
            .map(|o| o.as_str())
            .to_vec();
        outcomes.push("no_result");
        let causes = crate::remediation::Cause::ALL.map(|c| c.as_str());
        let g = Group::new(r, "edge");
        Ok(Self {
            commands_sent: g.counter(
                "vigil_edge_commands_sent_total",
                "Remediation commands sent to agents.",
            )?,
            action_results: g.counters(
                "vigil_edge_action_results_total",
                "Remediation results reported by agents, by outcome.",
                &["outcome"],
                &outcomes,
            )?,
            held_back: g.counters(
                "vigil_edge_actions_held_back_total",
                "Remediation decisions held back, by rail (budget, cooldown, short_circuit, rate_limit, approval, shadow, ...).",
                &["rail"],
                &RAILS,
            )?,
            short_circuit: g.gauge(
                "vigil_edge_short_circuit",
                "1 while the site-wide short-circuit holds every remediation action.",
            )?,
            pages: g.counter(
                "vigil_edge_pages_total",
                "Pages (rails.page_action) sent when the site-wide short-circuit tripped.",
            )?,
            budget_left: g.gauges(
                "vigil_edge_budget_left",
                "Per policy, the runs its budget still allows on its most-repaired target (0: spent; policy names come from the policy file).",
                &["policy"],
            )?,
            verifications: g.counters(
                "vigil_edge_verifications_total",
                "Recovery checks after an action, by result.",
                &["result"],
                &["verified", "failed"],
            )?,
            policy_verifications: g.counters(
                "vigil_edge_policy_verifications_total",
                "Recovery checks after an action, by policy and result.",
                &["policy", "result"],
                &[],
            )?,
            policy_fix_ratio: g.float_gauges(
                "vigil_edge_policy_fix_ratio",
                "Share of a policy's actions after which the target recovered (verified / checked).",
                &["policy"],
            )?,
            detection_to_action_seconds: g.histogram(
                "vigil_edge_detection_to_action_seconds",
                "From an anomaly event to a remediation command sent for it (persistence, escalation and rails included).",
                &vigil_core::telemetry::DELAY_BUCKETS,
            )?,
            unexpected_results: g.counter(
                "vigil_edge_unexpected_results_total",
                "Command results for no command in flight: never sent by this edge (forged, another edge's) or already closed (replays); each is audited.",
            )?,
            policy_problems: g.gauge(
                "vigil_edge_policy_problems",
                "Policies naming an action that an agent they would send to does not have in its catalog (as the agents announce them).",
            )?,
            policy_reloads: g.counters(
                "vigil_edge_policy_reloads_total",
                "Policy file reloads, by result; a failed one leaves the policies in force.",
                &["result"],
                &["ok", "failed"],
            )?,
            audit_write_errors: g.counter(
                "vigil_edge_audit_write_errors_total",
                "Audit records that could not be written to disk.",
            )?,
            gave_up: g.counters(
                "vigil_edge_gave_up_total",
                "Times Vigil stopped repairing a target by itself while it was unhealthy, by cause (budget_spent, approval_expired, approval_rejected), whether or not a policy escalated it: someone must look.",
                &["cause"],
                &causes,
            )?,
            escalations: g.counters(
                "vigil_edge_escalations_total",
                "Commands sent by the policy a target was handed to (its escalate), by cause (budget_spent, verify_failed, approval_expired, approval_rejected).",
                &["cause"],
                &causes,
            )?,
        })
    }

    /// Counts one recovery check of `policy` and updates its fix ratio.
    /// (Label values are policy names: bounded by the policy file.)
    pub fn policy_outcome(&self, policy: &str, fixed: bool) {
        let count = |r| self.policy_verifications.with_label_values(&[policy, r]);
        count(if fixed { "verified" } else { "failed" }).inc();
        let (ok, bad) = (count("verified").get(), count("failed").get());
        self.policy_fix_ratio
            .with_label_values(&[policy])
            .set(ok as f64 / (ok + bad).max(1) as f64);
    }
}
