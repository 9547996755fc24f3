//! The remediation engine: matches anomalous entities against policies,
//! waits for the anomaly to persist, respects cooldowns and modes, sends one
//! command at a time per target, and verifies recovery afterwards. Every
//! decision becomes an audit record.

use crate::approval::{Approval, SharedApprovals, State};
use crate::budget::Budgets;
use crate::entity::{Entities, EntityState};
use crate::liveness::Liveness;
use crate::policy::{Mode, Policy, PolicySet};
use crate::rails::{fleet_sick, RailsConfig, RateLimit};
use std::collections::HashMap;
use vigil_core::message::{AuditKind, AuditRecord, Command, CommandResult, Outcome};
use vigil_core::EntityId;

/// The policy name audit records of the site-wide short-circuit carry.
/// Policy (and rail) name of the site-wide short-circuit and its page.
pub const SHORT_CIRCUIT: &str = "site-wide short-circuit";

/// Extra time beyond a command's TTL to wait for its result.
const RESULT_GRACE_MS: i64 = 5_000;

#[derive(Debug, Clone)]
enum Phase {
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
struct Target {
    phase: Phase,
    /// The policy that acted last (after any escalation).
    policy: String,
    /// Until when each action is cooling down on this target, Unix ms.
    cooldowns: HashMap<String, i64>,
    /// Anomaly and rail already audited as held back, so a rail logs once
    /// per episode.
    held_for: Option<(Option<String>, &'static str)>,
    /// Fencing token of the lease the agent granted us on this target.
    lease: Option<u64>,
    /// Score and top metric when the last action was decided.
    trigger: (f64, String),
    /// After a failed verification with `escalate_on_failure`: the anomaly
    /// and the policy that takes over for it.
    escalated: Option<(Option<String>, String)>,
    /// The policy that matched (before any escalation): whether recovery is
    /// judged by its liveness conditions or by the anomaly score.
    matched: String,
    /// When the last command was sent, Unix ms.
    acted_ms: Option<i64>,
    /// Cooldown backoff counts only actions after this instant (the last
    /// time the target stayed healthy for `cooldown_reset_secs`).
    reset_ms: Option<i64>,
}

impl Target {
    fn new(policy: &str) -> Self {
        Self {
            phase: Phase::Idle,
            policy: policy.to_string(),
            cooldowns: HashMap::new(),
            held_for: None,
            lease: None,
            trigger: (0.0, String::new()),
            escalated: None,
            matched: policy.to_string(),
            acted_ms: None,
            reset_ms: None,
        }
    }
}

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

/// What the approval gate says.
enum Gate {
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

    /// An audit record with what every decision has; callers add the
    /// action, command, anomaly and outcome they know.
    fn base(
        &self,
        kind: AuditKind,
        policy: &str,
        target: &EntityId,
        model: &str,
        detail: String,
    ) -> AuditRecord {
        AuditRecord {
            ts_ms: vigil_core::clock::now_ms(),
            site: self.site.clone(),
            kind,
            policy: policy.to_string(),
            policy_version: self.policies.version.clone(),
            target: target.clone(),
            action: String::new(),
            command_id: None,
            anomaly_id: None,
            model_version: model.to_string(),
            score: None,
            top_metric: String::new(),
            mode: self
                .policy(policy)
                .map(|p| p.mode.as_str().to_string())
                .unwrap_or_default(),
            lease_token: None,
            outcome: None,
            rail: None,
            detail,
        }
    }

    fn record(
        &self,
        kind: AuditKind,
        policy: &str,
        cmd: &Command,
        model: &str,
        outcome: Option<Outcome>,
        detail: String,
    ) -> AuditRecord {
        let (score, top_metric) = self
            .targets
            .get(&cmd.target)
            .map(|t| (Some(t.trigger.0), t.trigger.1.clone()))
            .unwrap_or_default();
        AuditRecord {
            action: cmd.action.clone(),
            command_id: Some(cmd.id.clone()),
            anomaly_id: cmd.anomaly_id.clone(),
            lease_token: cmd.lease_token,
            score,
            top_metric,
            outcome,
            ..self.base(kind, policy, &cmd.target, model, detail)
        }
    }

    /// A decision about `e` that sent nothing: held back, or awaiting approval.
    fn noted(
        &self,
        kind: AuditKind,
        p: &Policy,
        e: &EntityState,
        model: &str,
        rail: Option<&str>,
        detail: String,
    ) -> AuditRecord {
        AuditRecord {
            action: p.action.clone(),
            anomaly_id: e.anomaly_id.clone(),
            score: Some(e.score),
            top_metric: e.top_metric.clone(),
            mode: p.mode.as_str().to_string(),
            lease_token: self.targets.get(&e.entity).and_then(|t| t.lease),
            rail: rail.map(str::to_string),
            ..self.base(kind, &p.name, &e.entity, model, detail)
        }
    }

    /// Audits a held-back decision once per anomaly and rail.
    fn hold(&mut self, held: Held, e: &EntityState, model: &str, d: &mut Decisions) {
        let key = (e.anomaly_id.clone(), held.rail);
        let Some(t) = self.targets.get_mut(&e.entity) else {
            return;
        };
        if t.held_for.as_ref() == Some(&key) {
            return;
        }
        t.held_for = Some(key);
        let detail = format!("{}: {}", held.rail, held.reason);
        let rec = self.noted(
            AuditKind::HeldBack,
            &held.policy,
            e,
            model,
            Some(held.rail),
            detail,
        );
        d.audit.push(rec);
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
                Gate::Go(id, by) => Some((id, by)),
                Gate::Asked(a) => {
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
                Gate::Wait(held) => return self.hold(held, e, model, d),
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

    /// The approval gate of an `approve` policy: go on an approval (once),
    /// ask when nobody was asked for this anomaly, wait otherwise.
    fn approval(&self, c: &Chosen, e: &EntityState, now_ms: i64) -> Gate {
        let Ok(mut q) = self.approvals.lock() else {
            return Gate::Wait(Held {
                policy: Box::new(c.policy.clone()),
                rail: "approval",
                reason: "the approval queue is unavailable".into(),
            });
        };
        q.expire(now_ms);
        let held = |rail, reason| {
            Gate::Wait(Held {
                policy: Box::new(c.policy.clone()),
                rail,
                reason,
            })
        };
        // One target, one pending request, whatever asked first.
        if let Some(other) = q
            .pending_for(&e.entity)
            .filter(|a| a.policy != c.policy.name || a.anomaly_id != e.anomaly_id)
        {
            return held(
                "approval",
                format!(
                    "approval {} ({} for {}) is pending for this target",
                    other.id, other.action, other.policy
                ),
            );
        }
        match q.find(&c.policy.name, &e.entity, &e.anomaly_id) {
            Some(a) if a.state == State::Approved => {
                Gate::Go(a.id.clone(), a.decided_by.clone().unwrap_or_default())
            }
            Some(a) if a.state == State::Pending => held(
                "approval",
                format!(
                    "waiting for approval {} ({} s left)",
                    a.id,
                    (a.expires_ms - now_ms + 999) / 1000
                ),
            ),
            Some(a) if a.state == State::Rejected => held(
                "approval rejected",
                format!(
                    "approval {} rejected by {}",
                    a.id,
                    a.decided_by.as_deref().unwrap_or("?")
                ),
            ),
            Some(a) if a.state == State::Expired => held(
                "approval expired",
                format!(
                    "approval {} expired unanswered after {} s; nothing ran",
                    a.id, c.policy.approval_ttl_secs
                ),
            ),
            // Nobody asked yet for this anomaly, or the approved action ran
            // and is needed again: ask (again).
            _ => Gate::Asked(Box::new(q.request(Approval {
                id: String::new(),
                policy: c.policy.name.clone(),
                target: e.entity.clone(),
                action: c.policy.action.clone(),
                agent: c.agent.clone(),
                anomaly_id: e.anomaly_id.clone(),
                reason: format!(
                    "score {:.3} (top metric {}) for {:.0} s; {}",
                    e.score,
                    e.top_metric,
                    (now_ms - e.since_ms) as f64 / 1000.0,
                    c.note
                ),
                requested_ms: now_ms,
                expires_ms: now_ms + c.policy.approval_ttl_secs as i64 * 1000,
                state: State::Pending,
                decided_by: None,
                decided_ms: None,
                note: None,
            }))),
        }
    }

    /// Trips (once, with one page) or clears the site-wide short-circuit.
    fn short_circuit(&mut self, now_ms: i64, entities: &Entities, model: &str, d: &mut Decisions) {
        let (sick, total) = (entities.anomalous_count(), entities.all().count());
        let why = format!(
            "{sick} of {total} targets are anomalous, more than {:.0}%: a sick site is not a sick host; holding every action",
            self.rails.short_circuit_share * 100.0
        );
        let sick_site = fleet_sick(&self.rails, sick, total);
        let site_target = EntityId::host(&self.site);
        match (&self.tripped, sick_site) {
            (None, true) => {
                tracing::error!(sick, total, "Site-wide short-circuit: remediation paused.");
                d.audit.push(self.base(
                    AuditKind::HeldBack,
                    SHORT_CIRCUIT,
                    &site_target,
                    model,
                    format!("{SHORT_CIRCUIT}: {why}"),
                ));
                if let (Some(action), Some(agent)) =
                    (&self.rails.page_action, &self.rails.page_agent)
                {
                    let command = Command {
                        id: uuid::Uuid::new_v4().to_string(),
                        action: action.clone(),
                        target: EntityId::host(agent),
                        params: Default::default(),
                        issued_ms: now_ms,
                        expires_ms: now_ms + self.command_ttl_ms,
                        policy: SHORT_CIRCUIT.into(),
                        anomaly_id: None,
                        holder: self.holder.clone(),
                        lease_token: None,
                        lease_ms: 0,
                        to: agent.clone(),
                        signature: None,
                    };
                    d.audit.push(AuditRecord {
                        action: command.action.clone(),
                        command_id: Some(command.id.clone()),
                        ..self.base(
                            AuditKind::ActionSent,
                            SHORT_CIRCUIT,
                            &site_target,
                            model,
                            format!("paging: {why}"),
                        )
                    });
                    self.pages.insert(command.id.clone(), command.clone());
                    d.commands.push((agent.clone(), command));
                }
                self.tripped = Some(why);
            }
            (Some(_), false) => {
                tracing::warn!(
                    sick,
                    total,
                    "Site-wide short-circuit cleared: remediation resumes."
                );
                d.audit.push(self.base(
                    AuditKind::Verified,
                    SHORT_CIRCUIT,
                    &site_target,
                    model,
                    format!("{SHORT_CIRCUIT} cleared: {sick} of {total} targets anomalous"),
                ));
                self.tripped = None;
            }
            _ => {}
        }
    }

    /// Walks the escalation chain from `p` past every policy whose budget on
    /// this target is spent, then applies the cooldown, mode and agent rails.
    fn choose(&self, p: &Policy, e: &EntityState, now_ms: i64) -> Result<Chosen, Held> {
        if let Some(why) = self.tripped.as_ref().filter(|_| !p.site_wide) {
            return Err(Held {
                policy: Box::new(p.clone()),
                rail: SHORT_CIRCUIT,
                reason: why.clone(),
            });
        }
        let target = e.entity.as_str();
        let mut acting = p.clone();
        let mut note = String::new();
        for _ in 0..=self.policies.policies.len() {
            let b = &acting.budget;
            let used = self
                .budgets
                .used(target, &acting.action, now_ms, b.per_secs as i64 * 1000);
            if used < b.max as usize {
                break;
            }
            let spent = format!(
                "{} has run {used} times in {} s (budget {})",
                acting.action, b.per_secs, b.max
            );
            match acting.escalate.as_deref().and_then(|n| self.policy(n)) {
                Some(next) => {
                    note.push_str(&format!("{spent}, escalated to {}; ", next.name));
                    acting = next.clone();
                }
                None => {
                    return Err(Held {
                        policy: Box::new(acting),
                        rail: "budget",
                        reason: format!("{spent}, and there is nothing to escalate to"),
                    })
                }
            }
        }
        let cooling = self
            .targets
            .get(&e.entity)
            .and_then(|t| t.cooldowns.get(&acting.action))
            .map(|&until| until - now_ms)
            .filter(|&left| left > 0);
        let agent = acting.agent_for(&e.entity);
        let reason = |rail, reason| Held {
            policy: Box::new(acting.clone()),
            rail,
            reason,
        };
        if let Some(left) = cooling {
            return Err(reason(
                "cooldown",
                format!(
                    "{}{} s left for {}",
                    note,
                    (left + 999) / 1000,
                    acting.action
                ),
            ));
        }
        if acting.mode == Mode::Shadow {
            return Err(reason(
                "shadow mode",
                format!(
                    "{note}would run {} on {}",
                    acting.action,
                    agent.as_deref().unwrap_or("?")
                ),
            ));
        }
        match agent {
            Some(agent) if self.lacks(&agent, &acting.action) => Err(reason(
                "agent",
                format!(
                    "{note}agent {agent} has no action {:?} in its catalog",
                    acting.action
                ),
            )),
            Some(agent) => Ok(Chosen {
                policy: acting,
                agent,
                note,
            }),
            None => Err(reason("agent", format!("{note}no agent owns this target"))),
        }
    }

    /// Since when `entity` has been healthy, as the policy that matched it
    /// judges: its liveness conditions clear, or its anomaly closed.
    fn healthy_since(
        &self,
        matched: &str,
        entity: &EntityId,
        entities: &Entities,
        live: &Liveness,
    ) -> Option<i64> {
        if self.policy(matched).is_some_and(Policy::is_liveness) {
            live.ok_since(matched, entity)
        } else {
            entities
                .get(entity)
                .filter(|e| !e.anomalous)
                .map(|e| e.since_ms)
        }
    }

    /// Closes every open approval request whose anomaly (or liveness
    /// episode) has ended, with an audit record: answering it later gets a
    /// 409 that says why, and nothing runs.
    fn close_ended_approvals(
        &mut self,
        entities: &Entities,
        live: &Liveness,
        model: &str,
        d: &mut Decisions,
    ) {
        let closed = match self.approvals.lock() {
            Ok(mut q) => q.close_ended(
                |a| {
                    let anomaly = entities.get(&a.target).and_then(|e| e.anomaly_id.as_ref());
                    a.anomaly_id.is_some()
                        && (anomaly == a.anomaly_id.as_ref()
                            || live
                                .firing()
                                .iter()
                                .any(|f| Some(&f.episode) == a.anomaly_id.as_ref()))
                },
                "its anomaly ended before it was acted on; nothing ran",
            ),
            Err(_) => return,
        };
        for a in closed {
            let detail = format!(
                "approval: request {} to run {} closed: its anomaly ended before it was acted on; nothing ran",
                a.id, a.action
            );
            let mut rec = self.base(AuditKind::HeldBack, &a.policy, &a.target, model, detail);
            rec.action = a.action.clone();
            rec.anomaly_id = a.anomaly_id.clone();
            rec.rail = Some("approval closed".into());
            d.audit.push(rec);
        }
    }

    /// Ends the cooldowns (and restarts the backoff) of every idle target
    /// that has stayed healthy for its policy's `cooldown_reset_secs` since
    /// it was last acted on.
    fn reset_calm(&mut self, now_ms: i64, entities: &Entities, live: &Liveness) {
        let mut calm = Vec::new();
        for (entity, t) in &self.targets {
            let Some(acted_ms) = t.acted_ms.filter(|&a| t.reset_ms < Some(a)) else {
                continue;
            };
            if !matches!(t.phase, Phase::Idle) {
                continue;
            }
            let Some(reset_ms) = self
                .policy(&t.matched)
                .map(|p| p.cooldown_reset_secs as i64 * 1000)
            else {
                continue;
            };
            let since = self.healthy_since(&t.matched, entity, entities, live);
            if since.is_some_and(|s| s >= acted_ms && now_ms - s >= reset_ms) {
                calm.push(entity.clone());
            }
        }
        for entity in calm {
            if let Some(t) = self.targets.get_mut(&entity) {
                t.cooldowns.clear();
                t.escalated = None;
                t.reset_ms = Some(now_ms);
            }
        }
    }

    fn advance_in_flight(
        &mut self,
        now_ms: i64,
        entities: &Entities,
        live: &Liveness,
        model: &str,
        d: &mut Decisions,
    ) {
        let mut done = Vec::new();
        let mut escalations = Vec::new();
        let mut unknown = Vec::new();
        for (entity, t) in &self.targets {
            let cooldown = self.cooldown_ms(&t.policy, entity, now_ms);
            match &t.phase {
                Phase::Awaiting {
                    command,
                    sent_ms,
                    resumed,
                } if now_ms > sent_ms + self.command_ttl_ms + RESULT_GRACE_MS => {
                    let detail = if *resumed {
                        "unknown: the edge restarted before the agent's result arrived; checking recovery"
                    } else {
                        "no result from the agent in time"
                    };
                    let rec = self.record(
                        AuditKind::ActionResult,
                        &t.policy,
                        command,
                        model,
                        None,
                        detail.into(),
                    );
                    // A command taken back after a restart may well have
                    // run: its target's recovery is checked all the same.
                    if *resumed {
                        unknown.push((entity.clone(), command.clone(), rec));
                    } else {
                        done.push((entity.clone(), now_ms + cooldown, rec));
                    }
                }
                Phase::Verifying {
                    command,
                    result_ms,
                    until_ms,
                } => {
                    let healthy_ms = self
                        .healthy_since(&t.matched, entity, entities, live)
                        .map(|s| now_ms - s.max(*result_ms))
                        .unwrap_or(0);
                    let need = self.healthy_for_ms(&t.policy);
                    let verdict = if healthy_ms >= need {
                        Some((
                            AuditKind::Verified,
                            format!(
                                "{entity} healthy for {:.1} s after {}",
                                healthy_ms as f64 / 1000.0,
                                command.action
                            ),
                        ))
                    } else if now_ms > *until_ms {
                        Some((
                            AuditKind::VerifyFailed,
                            format!(
                                "{entity} still unhealthy {:.0} s after {}",
                                (now_ms - result_ms) as f64 / 1000.0,
                                command.action
                            ),
                        ))
                    } else {
                        None
                    };
                    if let Some((kind, detail)) = verdict {
                        let rec = self.record(kind, &t.policy, command, model, None, detail);
                        let next = self
                            .policy(&t.policy)
                            .filter(|p| {
                                kind == AuditKind::VerifyFailed && p.verify.escalate_on_failure
                            })
                            .and_then(|p| p.escalate.clone())
                            .map(|next| (command.anomaly_id.clone(), next));
                        escalations.extend(next.map(|n| (entity.clone(), n)));
                        done.push((entity.clone(), now_ms + cooldown, rec));
                    }
                }
                _ => {}
            }
        }
        for (entity, next) in escalations {
            if let Some(t) = self.targets.get_mut(&entity) {
                t.escalated = Some(next);
            }
        }
        for (entity, cooldown_until, rec) in done {
            if let Some(t) = self.targets.get_mut(&entity) {
                t.phase = Phase::Idle;
                t.cooldowns.insert(rec.action.clone(), cooldown_until);
            }
            d.audit.push(rec);
        }
        for (entity, command, rec) in unknown {
            let within_ms = self
                .targets
                .get(&entity)
                .and_then(|t| self.policy(&t.policy))
                .map_or(60_000, |p| (p.verify.within_secs * 1000.0) as i64);
            if let Some(t) = self.targets.get_mut(&entity) {
                t.phase = Phase::Verifying {
                    command,
                    result_ms: now_ms,
                    until_ms: now_ms + within_ms,
                };
            }
            d.audit.push(rec);
        }
    }

    /// Takes back the commands this edge sent before it restarted and never
    /// saw a result for (their `action_sent` records): each waits for its
    /// result (an agent sends its recent results again when the edge comes
    /// back) and is then verified; pages are closed as unknown at once.
    pub fn resume(&mut self, open: &[AuditRecord], model: &str) -> Decisions {
        let mut d = Decisions::default();
        for rec in open {
            let Some(id) = rec.command_id.clone() else {
                continue;
            };
            let command = Command {
                id,
                action: rec.action.clone(),
                target: rec.target.clone(),
                params: Default::default(),
                issued_ms: rec.ts_ms,
                expires_ms: rec.ts_ms + self.command_ttl_ms,
                policy: rec.policy.clone(),
                anomaly_id: rec.anomaly_id.clone(),
                holder: self.holder.clone(),
                lease_token: rec.lease_token,
                lease_ms: 0,
                to: String::new(),
                signature: None,
            };
            if rec.policy == SHORT_CIRCUIT {
                let mut closed = self.record(
                    AuditKind::ActionResult,
                    SHORT_CIRCUIT,
                    &command,
                    model,
                    None,
                    "unknown: the edge restarted before the page's result arrived".into(),
                );
                closed.target = rec.target.clone();
                d.audit.push(closed);
                continue;
            }
            let t = self
                .targets
                .entry(rec.target.clone())
                .or_insert_with(|| Target::new(&rec.policy));
            t.policy = rec.policy.clone();
            t.acted_ms = Some(rec.ts_ms);
            t.trigger = (rec.score.unwrap_or(0.0), rec.top_metric.clone());
            t.lease = rec.lease_token;
            t.phase = Phase::Awaiting {
                command,
                sent_ms: rec.ts_ms,
                resumed: true,
            };
        }
        d
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

    /// Takes an agent's result. Unknown command ids return `None`.
    pub fn on_result(&mut self, r: &CommandResult, now_ms: i64, model: &str) -> Option<Decisions> {
        if let Some(page) = self.pages.remove(&r.command_id) {
            let detail = format!("{} on {}: {}", r.outcome.as_str(), r.host, r.detail);
            let rec = self.record(
                AuditKind::ActionResult,
                SHORT_CIRCUIT,
                &page,
                model,
                Some(r.outcome),
                detail,
            );
            return Some(Decisions {
                commands: Vec::new(),
                audit: vec![rec],
            });
        }
        let (entity, command, policy) = self.targets.iter().find_map(|(e, t)| match &t.phase {
            Phase::Awaiting { command, .. } if command.id == r.command_id => {
                Some((e.clone(), command.clone(), t.policy.clone()))
            }
            _ => None,
        })?;
        let within_ms = self
            .policy(&policy)
            .map(|p| (p.verify.within_secs * 1000.0) as i64)
            .unwrap_or(60_000);
        let cooldown = self.cooldown_ms(&policy, &entity, now_ms);
        let mut d = Decisions::default();
        let detail = format!("{} on {}: {}", r.outcome.as_str(), r.host, r.detail);
        let mut rec = self.record(
            AuditKind::ActionResult,
            &policy,
            &command,
            model,
            Some(r.outcome),
            detail,
        );
        if r.outcome == Outcome::Fenced {
            // Another edge holds the target, or ours is stale: stand back.
            rec.rail = Some("lease".into());
        }
        rec.lease_token = r.lease_token.or(rec.lease_token);
        d.audit.push(rec);
        let t = self.targets.get_mut(&entity)?;
        t.lease = match r.outcome {
            Outcome::Fenced => None,
            _ => r.lease_token.or(t.lease),
        };
        if r.outcome == Outcome::Succeeded {
            t.phase = Phase::Verifying {
                command,
                result_ms: now_ms,
                until_ms: now_ms + within_ms,
            };
        } else {
            t.phase = Phase::Idle;
            t.cooldowns
                .insert(command.action.clone(), now_ms + cooldown);
        }
        Some(d)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod liveness_tests;
