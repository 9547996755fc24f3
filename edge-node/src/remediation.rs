//! The remediation engine: matches anomalous entities against policies,
//! waits for the anomaly to persist, respects cooldowns and modes, sends one
//! command at a time per target, and verifies recovery afterwards. Every
//! decision becomes an audit record.

use crate::approval::SharedApprovals;
use crate::budget::Budgets;
use crate::entity::{Entities, EntityState};
use crate::liveness::Liveness;
use crate::policy::{Mode, Policy, PolicySet};
use crate::rails::RailsConfig;
use std::collections::HashMap;
use vigil_core::message::{AuditKind, AuditRecord, Command};
use vigil_core::EntityId;

/// The policy name audit records of the site-wide short-circuit carry.
/// Policy (and rail) name of the site-wide short-circuit and its page.
pub const SHORT_CIRCUIT: &str = "site-wide short-circuit";

/// Extra time beyond a command's TTL to wait for its result.
const RESULT_GRACE_MS: i64 = 5_000;

/// A target handed on by the approval rail: the policy it goes to, why
/// (the cause and the rail's words).
type Handoff = Box<(Policy, Cause, String)>;

/// What the engine wants done.
#[derive(Debug, Default)]
pub struct Decisions {
    /// Commands to publish, with the agent (host) each goes to.
    pub commands: Vec<(String, Command)>,
    /// Audit records to append.
    pub audit: Vec<AuditRecord>,
    /// Targets Vigil stopped repairing by itself, by cause (once per
    /// anomaly and cause).
    pub gave_up: Vec<Cause>,
    /// Commands sent by a policy a target was handed to, by cause.
    pub escalations: Vec<Cause>,
}

/// Why a target was handed on or given up: the label words of
/// `vigil_edge_gave_up_total` and `vigil_edge_escalations_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The action's budget on the target is spent.
    BudgetSpent,
    /// The target did not recover after the action.
    VerifyFailed,
    /// Nobody answered the approval request in time.
    ApprovalExpired,
    /// A human rejected the approval request.
    ApprovalRejected,
}

impl Cause {
    /// Every cause, for the metrics' label values.
    pub const ALL: [Cause; 4] = [
        Cause::BudgetSpent,
        Cause::VerifyFailed,
        Cause::ApprovalExpired,
        Cause::ApprovalRejected,
    ];

    /// The label word.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::BudgetSpent => "budget_spent",
            Cause::VerifyFailed => "verify_failed",
            Cause::ApprovalExpired => "approval_expired",
            Cause::ApprovalRejected => "approval_rejected",
        }
    }

    /// The cause a rail's hold gives up for, if it is one.
    pub fn of_rail(rail: &str) -> Option<Self> {
        match rail {
            "budget" => Some(Cause::BudgetSpent),
            "approval expired" => Some(Cause::ApprovalExpired),
            "approval rejected" => Some(Cause::ApprovalRejected),
            _ => None,
        }
    }
}

/// Remediation state per target entity (one actor per target).
pub struct Engine {
    site: String,
    /// Name the leases are taken in: `<site>/<node>`.
    holder: String,
    approvals: SharedApprovals,
    policies: PolicySet,
    command_ttl_ms: i64,
    targets: HashMap<EntityId, Target>,
    budgets: Budgets,
    rails: RailsConfig,
    rate: RateLimit,
    short_circuit: ShortCircuit,
    agents: Agents,
    recovery: Recovery,
}

impl Engine {
    /// An engine for `site` with a policy set.
    /// `budgets` may be kept on disk so that they survive a restart.
    pub fn new(site: String, policies: PolicySet, command_ttl_ms: i64, budgets: Budgets) -> Self {
        Self {
            holder: format!("{site}/edge"),
            approvals: SharedApprovals::default(),
            site,
            policies,
            command_ttl_ms,
            targets: HashMap::new(),
            budgets,
            rails: RailsConfig::default(),
            rate: RateLimit::default(),
            short_circuit: ShortCircuit::default(),
            agents: Agents::default(),
            recovery: Recovery::default(),
        }
    }

    /// Names this edge node: leases on targets are taken as `<site>/<node>`.
    pub fn with_node(mut self, node: &str) -> Self {
        self.holder = format!("{}/{node}", self.site);
        self
    }

    /// Shares the approval queue with the HTTP API.
    pub fn with_approvals(mut self, approvals: SharedApprovals) -> Self {
        self.approvals = approvals;
        self
    }

    /// Sets the site-wide rails (rate limit, short-circuit).
    pub fn with_rails(mut self, rails: RailsConfig) -> Self {
        self.rails = rails;
        self
    }

    /// Per policy, the fewest runs its budget still allows on any target
    /// this engine has acted on or considered (the full budget when none).
    pub fn budgets_left(&self, now_ms: i64) -> Vec<(&str, u32)> {
        self.policies
            .policies
            .iter()
            .map(|p| {
                let window = p.budget.per_secs as i64 * 1000;
                let left = self
                    .targets
                    .keys()
                    .map(|t| {
                        let used = self.budgets.used(t.as_str(), &p.action, now_ms, window);
                        p.budget.max.saturating_sub(used as u32)
                    })
                    .min()
                    .unwrap_or(p.budget.max);
                (p.name.as_str(), left)
            })
            .collect()
    }

    /// Takes the action names an agent announced; whether they changed.
    pub fn set_agent_actions(&mut self, agent: &str, actions: Vec<String>) -> bool {
        self.agents.set(agent, actions)
    }

    /// Whether the site-wide short-circuit is holding every action.
    pub fn short_circuited(&self) -> bool {
        self.short_circuit.tripped.is_some()
    }

    /// Replaces the policies (reload); in-flight actions finish as they were.
    pub fn set_policies(&mut self, policies: PolicySet) {
        self.policies = policies;
    }

    /// The policies in force.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// Version of the policies in force.
    pub fn policy_version(&self) -> &str {
        &self.policies.version
    }

    /// Targets with an action in flight or being verified.
    pub fn in_flight(&self) -> usize {
        self.targets
            .values()
            .filter(|t| !matches!(t.phase, Phase::Idle))
            .count()
    }

    /// Advances every target after a scoring tick (or after samples that
    /// changed a liveness condition): liveness conditions first, then
    /// anomalies.
    pub fn on_tick(
        &mut self,
        now_ms: i64,
        entities: &Entities,
        live: &Liveness,
        model: &str,
    ) -> Decisions {
        let mut d = Decisions::default();
        self.advance_in_flight(now_ms, entities, live, model, &mut d);
        self.close_ended_approvals(entities, live, model, &mut d);
        self.reset_calm(now_ms, entities, live);
        self.short_circuit(now_ms, entities, model, &mut d);
        let grace_ms = (self.rails.recovery_grace_secs * 1000.0) as i64;
        self.recovery
            .observe(live, &self.policies, now_ms, grace_ms);
        // A dead process needs no detector's opinion; a target a condition
        // speaks for is not also weighed by its score this tick (two
        // triggers would audit each hold twice).
        let mut spoken = std::collections::HashSet::new();
        for f in live.firing() {
            let Some(p) = self.policy(&f.policy).filter(|p| p.is_liveness()).cloned() else {
                continue;
            };
            if (f.held_ms as f64) < p.for_secs() * 1000.0 {
                continue;
            }
            spoken.insert(f.entity.clone());
            let e = EntityState::from_condition(f);
            let why = format!(
                "{}: {} has held for {:.1} s ({} = {})",
                f.entity,
                f.condition,
                f.held_ms as f64 / 1000.0,
                f.metric,
                f.value
            );
            self.consider(&p, &e, now_ms, model, &why, &mut d);
        }
        for e in entities.all().filter(|e| e.anomalous) {
            if spoken.contains(&e.entity) {
                continue;
            }
            let Some(p) = self
                .policies
                .policies
                .iter()
                .find(|p| {
                    let root = e.root_cause.first().map_or("", |r| r.metric.as_str());
                    p.matches(&e.entity, &e.top_metric, e.score)
                        || p.matches_entity_score(&e.entity, root, e.entity_score)
                })
                .cloned()
            else {
                continue;
            };
            if ((now_ms - e.since_ms) as f64 / 1000.0) < p.for_secs() {
                continue;
            }
            if let Err(held) = self.recovery.check(&p, e, now_ms) {
                self.targets
                    .entry(e.entity.clone())
                    .or_insert_with(|| Target::new(&p.name));
                self.hold(held, e, model, &mut d);
                continue;
            }
            let entity_score = e
                .entity_score
                .map(|s| format!(", entity score {s:.2}"))
                .unwrap_or_default();
            let why = format!(
                "{} anomalous for {:.1} s (score {:.3}{entity_score}, top metric {}; root cause {})",
                e.entity,
                (now_ms - e.since_ms) as f64 / 1000.0,
                e.score,
                e.top_metric,
                vigil_core::message::shares_text(&e.root_cause),
            );
            self.consider(&p, e, now_ms, model, &why, &mut d);
        }
        d
    }

    /// Runs the rails for `p` on `e` and, when they all pass, sends its
    /// action (or that of the policy it escalated to).
    fn consider(
        &mut self,
        p: &Policy,
        e: &EntityState,
        now_ms: i64,
        model: &str,
        why: &str,
        d: &mut Decisions,
    ) {
        let state = self.targets.get(&e.entity);
        if state.is_some_and(|t| !matches!(t.phase, Phase::Idle)) {
            return;
        }
        // A failed verification may have handed this anomaly down the chain.
        let escalated = state
            .and_then(|t| t.escalated.as_ref())
            .filter(|(anomaly, _)| anomaly == &e.anomaly_id)
            .and_then(|(_, next)| self.policy(next))
            .cloned();
        let verdict = match &escalated {
            Some(next) => self.choose(next, e, now_ms).map(|mut c| {
                c.note = format!(
                    "{} did not recover after {}, escalated to {}; {}",
                    e.entity, p.action, next.name, c.note
                );
                c.handed = Some(Cause::VerifyFailed);
                c
            }),
            None => self.choose(p, e, now_ms),
        };
        self.targets
            .entry(e.entity.clone())
            .or_insert_with(|| Target::new(&p.name))
            .matched = p.name.clone();
        let mut chosen = match verdict {
            Ok(c) => c,
            Err(held) => return self.hold(held, e, model, d),
        };
        let approval = match self.approval_rail(&chosen, e, now_ms, model, d) {
            Ok(approval) => approval,
            Err(None) => return,
            // Expired or rejected while the target is still unhealthy:
            // handed on like a spent budget.
            Err(Some(handoff)) => match self.choose(&handoff.0, e, now_ms) {
                Ok(mut c) => {
                    let (next, cause, why) = *handoff;
                    c.note = format!("{why}, escalated to {}; {}", next.name, c.note);
                    c.handed = Some(cause);
                    chosen = c;
                    None
                }
                Err(held) => return self.hold(held, e, model, d),
            },
        };
        let max = self.rails.max_actions_per_minute;
        if let Err(held) = self.rate.check(max, &chosen.policy, now_ms) {
            return self.hold(held, e, model, d);
        }
        if let Some((id, by)) = approval {
            if let Ok(mut q) = self.approvals.lock() {
                q.mark_used(&id);
            }
            chosen.note = format!("{}approved by {by} ({id}); ", chosen.note);
        }
        self.send(chosen, e, now_ms, model, why, d);
    }

    /// The approval rail of an `approve` policy: `Ok(Some((id, by)))` when
    /// approved, `Ok(None)` for other modes, `Err(None)` when it asked or
    /// waits (audited here), `Err(Some(..))` when the request expired or
    /// was rejected and the policy escalates: the policy to hand to, the
    /// cause and why.
    fn approval_rail(
        &mut self,
        chosen: &Chosen,
        e: &EntityState,
        now_ms: i64,
        model: &str,
        d: &mut Decisions,
    ) -> Result<Option<(String, String)>, Option<Handoff>> {
        if chosen.policy.mode != Mode::Approve {
            return Ok(None);
        }
        match self.approval(chosen, e, now_ms) {
            Verdict::Go(id, by) => Ok(Some((id, by))),
            Verdict::Asked(a) => {
                let detail = format!(
                    "approval: asked for approval {} to run {} on {} (expires in {} s); approve with POST /api/v1/approvals/{}/approve",
                    a.id, a.action, a.agent, chosen.policy.approval_ttl_secs, a.id
                );
                let rec = self.noted(
                    AuditKind::AwaitingApproval,
                    &chosen.policy,
                    e,
                    model,
                    Some("approval"),
                    detail,
                );
                d.audit.push(rec);
                Err(None)
            }
            Verdict::Wait(held) => {
                let next = chosen
                    .policy
                    .escalate
                    .as_deref()
                    .and_then(|n| self.policy(n));
                let lapsed = Cause::of_rail(held.rail).filter(|c| *c != Cause::BudgetSpent);
                if let (Some(next), Some(cause)) = (next, lapsed) {
                    return Err(Some(Box::new((next.clone(), cause, held.reason))));
                }
                self.hold(held, e, model, d);
                Err(None)
            }
        }
    }

    /// Sends the chosen policy's action to its agent under this target's
    /// lease, spends its budget and audits it.
    fn send(
        &mut self,
        chosen: Chosen,
        e: &EntityState,
        now_ms: i64,
        model: &str,
        why: &str,
        d: &mut Decisions,
    ) {
        let Chosen {
            policy: acting,
            agent,
            note,
            handed,
        } = chosen;
        if let Some(cause) = handed {
            d.escalations.push(cause);
            if cause != Cause::VerifyFailed {
                d.gave_up.push(cause);
            }
        }
        let within_ms = (acting.verify.within_secs * 1000.0) as i64;
        let Some(t) = self.targets.get_mut(&e.entity) else {
            return;
        };
        let command = Command {
            id: uuid::Uuid::new_v4().to_string(),
            action: acting.action.clone(),
            target: e.entity.clone(),
            params: Default::default(),
            issued_ms: now_ms,
            expires_ms: now_ms + self.command_ttl_ms,
            policy: acting.name.clone(),
            anomaly_id: e.anomaly_id.clone(),
            holder: self.holder.clone(),
            lease_token: t.lease,
            // Covers the action, its result and the verify window after it.
            lease_ms: self.command_ttl_ms + RESULT_GRACE_MS + within_ms,
            to: agent.clone(),
            signature: None,
        };
        t.phase = Phase::Awaiting {
            command: command.clone(),
            sent_ms: now_ms,
            resumed: false,
        };
        t.policy = acting.name.clone();
        t.acted_ms = Some(now_ms);
        t.held_for = None;
        t.trigger = (e.score, e.top_metric.clone(), e.root_cause.clone());
        if let Err(err) = self
            .budgets
            .spend(e.entity.as_str(), &acting.action, now_ms)
        {
            // The spend still counts in memory; only a restart could forget it.
            tracing::warn!(error = %err, "Budget not saved.");
        }
        let detail = format!("{why}; {note}sending {} to {agent}", acting.action);
        d.audit.push(self.record(
            AuditKind::ActionSent,
            &acting.name,
            &command,
            model,
            None,
            detail,
        ));
        d.commands.push((agent, command));
    }

    fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.policies.iter().find(|p| p.name == name)
    }

    fn healthy_for_ms(&self, policy: &str) -> i64 {
        self.policy(policy)
            .map(|p| (p.verify.healthy_for_secs * 1000.0) as i64)
            .unwrap_or(5_000)
    }
}

pub mod metrics;
mod rails;
mod record;
mod target;
mod verify;

pub use metrics::RemediationMetrics;
use rails::{Agents, Chosen, RateLimit, Recovery, ShortCircuit, Verdict};
use target::{Phase, Target};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod liveness_tests;

#[cfg(test)]
mod outage_tests;
