//! The remediation engine: matches anomalous entities against policies,
//! waits for the anomaly to persist, respects cooldowns and modes, sends one
//! command at a time per target, and verifies recovery afterwards. Every
//! decision becomes an audit record.

use crate::approval::{Approval, SharedApprovals};
use crate::budget::Budgets;
use crate::entity::{Entities, EntityState};
use crate::liveness::Liveness;
use crate::policy::{Mode, Policy, PolicySet};
use crate::rails::{RailsConfig, RateLimit};
use std::collections::HashMap;
use vigil_core::message::{AuditKind, AuditRecord, Command};
use vigil_core::EntityId;

/// The policy name audit records of the site-wide short-circuit carry.
/// Policy (and rail) name of the site-wide short-circuit and its page.
pub const SHORT_CIRCUIT: &str = "site-wide short-circuit";

/// Extra time beyond a command's TTL to wait for its result.
const RESULT_GRACE_MS: i64 = 5_000;

/// What the engine wants done.
#[derive(Debug, Default)]
pub struct Decisions {
    /// Commands to publish, with the agent (host) each goes to.
    pub commands: Vec<(String, Command)>,
    /// Audit records to append.
    pub audit: Vec<AuditRecord>,
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
    /// Why the site-wide short-circuit holds everything, while it does.
    tripped: Option<String>,
    /// Page commands sent by the short-circuit, awaiting their result.
    pages: HashMap<String, Command>,
    /// The catalog action names each agent announced with its presence.
    agent_actions: HashMap<String, Vec<String>>,
}

/// A rail that held an action back, and why.
struct Held {
    policy: Box<Policy>,
    rail: &'static str,
    reason: String,
}

/// What the approval rail says.
enum Verdict {
    /// Approved (this request id, by whom): act.
    Go(String, String),
    /// A new request was filed.
    Asked(Box<Approval>),
    /// Pending, rejected or expired.
    Wait(Held),
}

/// The policy that will act (after escalation), its agent, and how it was reached.
struct Chosen {
    policy: Policy,
    agent: String,
    note: String,
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
            tripped: None,
            pages: HashMap::new(),
            agent_actions: HashMap::new(),
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

    /// Takes the action names an agent announced.
    pub fn set_agent_actions(&mut self, agent: &str, actions: Vec<String>) {
        self.agent_actions.insert(agent.to_string(), actions);
    }

    /// Whether `agent` is known to lack `action` (unknown agents are not).
    fn lacks(&self, agent: &str, action: &str) -> bool {
        self.agent_actions
            .get(agent)
            .is_some_and(|a| !a.iter().any(|x| x == action))
    }

    /// Every policy naming an action that an announcing agent it would send
    /// to lacks: its own `agent`, or the host of a known entity it matches.
    pub fn missing_actions(&self, entities: &Entities) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.policies.policies {
            let hosts: std::collections::HashSet<&str> = match (&p.agent, &p.matcher) {
                (Some(a), _) => std::iter::once(a.as_str()).collect(),
                (None, Some(m)) => entities
                    .all()
                    .filter(|e| crate::policy::glob(&m.entity, e.entity.as_str()))
                    .filter_map(|e| e.entity.host_name())
                    .collect(),
                // Reached by escalation: on the escalating policy's agent.
                (None, None) => Default::default(),
            };
            for agent in self.agent_actions.keys() {
                let reaches = hosts.contains(agent.as_str());
                if reaches && self.lacks(agent, &p.action) {
                    out.push(format!(
                        "policy {:?} (version {}) runs {:?} on agent {agent}, whose catalog has no such action",
                        p.name, self.policies.version, p.action
                    ));
                }
            }
        }
        out
    }

    /// Whether the site-wide short-circuit is holding every action.
    pub fn short_circuited(&self) -> bool {
        self.tripped.is_some()
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
                .find(|p| p.matches(&e.entity, &e.top_metric, e.score))
                .cloned()
            else {
                continue;
            };
            if ((now_ms - e.since_ms) as f64 / 1000.0) < p.for_secs() {
                continue;
            }
            let why = format!(
                "{} anomalous for {:.1} s (score {:.3}, top metric {})",
                e.entity,
                (now_ms - e.since_ms) as f64 / 1000.0,
                e.score,
                e.top_metric,
            );
            self.consider(&p, e, now_ms, model, &why, &mut d);
        }
        d
    }

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
                c
            }),
            None => self.choose(p, e, now_ms),
        };
        self.targets
            .entry(e.entity.clone())
            .or_insert_with(|| Target::new(&p.name))
            .matched = p.name.clone();
        let chosen = match verdict {
            Ok(c) => c,
            Err(held) => return self.hold(held, e, model, d),
        };
        let approval = if chosen.policy.mode == Mode::Approve {
            match self.approval(&chosen, e, now_ms) {
                Verdict::Go(id, by) => Some((id, by)),
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
                    return;
                }
                Verdict::Wait(held) => return self.hold(held, e, model, d),
            }
        } else {
            None
        };
        let sent = self.rate.in_last_minute(now_ms);
        if sent >= self.rails.max_actions_per_minute as usize {
            let reason = format!(
                "{sent} actions in the last minute (at most {})",
                self.rails.max_actions_per_minute
            );
            let held = Held {
                policy: Box::new(chosen.policy),
                rail: "rate limit",
                reason,
            };
            return self.hold(held, e, model, d);
        }
        self.rate.record(now_ms);
        let mut note = chosen.note;
        if let Some((id, by)) = approval {
            if let Ok(mut q) = self.approvals.lock() {
                q.mark_used(&id);
            }
            note = format!("{note}approved by {by} ({id}); ");
        }
        let (acting, agent) = (chosen.policy, chosen.agent);
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
        t.trigger = (e.score, e.top_metric.clone());
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

    /// The cooldown after `policy` acted on `entity`: backed off by how often
    /// its action ran there inside the budget window (since the target last
    /// stayed healthy long enough to reset it).
    fn cooldown_ms(&self, policy: &str, entity: &EntityId, now_ms: i64) -> i64 {
        let reset_ms = self.targets.get(entity).and_then(|t| t.reset_ms);
        self.policy(policy)
            .map(|p| {
                let window = p.budget.per_secs as i64 * 1000;
                let window = reset_ms.map_or(window, |r| window.min(now_ms - r));
                p.cooldown_ms(
                    self.budgets
                        .used(entity.as_str(), &p.action, now_ms, window),
                )
            })
            .unwrap_or(60_000)
    }

    fn healthy_for_ms(&self, policy: &str) -> i64 {
        self.policy(policy)
            .map(|p| (p.verify.healthy_for_secs * 1000.0) as i64)
            .unwrap_or(5_000)
    }
}

mod approval_rail;
mod choose;
mod record;
mod short_circuit;
mod target;
mod verify;

use target::{Phase, Target};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod liveness_tests;
