use super::*;
use crate::budget::Budgets;
use crate::cache::Cache;
use crate::entity::Levels;
use crate::rails::RailsConfig;
use std::collections::HashMap;
use std::path::Path;
use vigil_core::message::{CommandResult, Outcome};
use vigil_core::SeriesId;

const POLICY: &str = r#"
policies:
  - name: restart-web
    match: { entity: "service/*/web", min_score: 0.9, for_secs: 3 }
    action: restart-web
    cooldown_secs: 30
    verify: { within_secs: 20, healthy_for_secs: 5 }
  - name: watch-db
    match: { entity: "service/*/db", for_secs: 0 }
    action: restart-db
    mode: shadow
"#;

struct World {
    cache: Cache,
    entities: Entities,
    engine: Engine,
    live: Liveness,
    /// What `sick` saw given up and escalated.
    causes: (Vec<Cause>, Vec<Cause>),
}

impl World {
    fn of(engine: Engine, cache: Cache) -> Self {
        Self {
            cache,
            entities: Entities::default(),
            engine,
            live: Liveness::default(),
            causes: Default::default(),
        }
    }

    fn new() -> Self {
        let set = PolicySet::parse(POLICY, Path::new("p.yaml")).unwrap();
        let engine = Engine::new("s".into(), set, 10_000, Budgets::in_memory());
        Self::of(engine, Cache::new(10, 10))
    }

    /// One tick at `t` seconds in which `svc`'s only series scores `score`.
    fn tick(&mut self, t: i64, svc: &str, score: f32) -> Decisions {
        let now = t * 1000;
        let id = SeriesId::new(EntityId::service("h1", svc), "up");
        self.cache.push(&id, now, 1.0, now, 0).unwrap();
        let pending = self.cache.take_pending();
        let scores: Vec<f32> = pending
            .iter()
            .map(|p| if p.is_some() { score } else { 0.0 })
            .collect();
        self.cache.set_scores(&pending, &scores);
        self.entities.update(
            &self.cache,
            &Default::default(),
            Levels::plain(0.95),
            now,
            5_000,
            "s",
            "m1",
        );
        self.engine.on_tick(now, &self.entities, &self.live, "m1")
    }

    fn result(&mut self, t: i64, cmd: &Command, outcome: Outcome) -> Decisions {
        let r = CommandResult {
            command_id: cmd.id.clone(),
            host: "h1".into(),
            action: cmd.action.clone(),
            target: cmd.target.clone(),
            outcome,
            detail: String::new(),
            started_ms: t * 1000,
            finished_ms: t * 1000,
            lease_token: (outcome != Outcome::Fenced).then_some(1),
        };
        self.engine.on_result(&r, t * 1000, "m1").unwrap()
    }
}

#[test]
fn acts_only_after_the_anomaly_persists() {
    let mut w = World::new();
    for t in 0..3 {
        assert!(
            w.tick(t, "web", 0.99).commands.is_empty(),
            "acted too early at {t}"
        );
    }
    let d = w.tick(3, "web", 0.99);
    assert_eq!(d.commands.len(), 1);
    let (agent, cmd) = &d.commands[0];
    assert_eq!(agent, "h1");
    assert_eq!(cmd.action, "restart-web");
    assert_eq!(cmd.expires_ms, 3000 + 10_000);
    assert_eq!(d.audit[0].kind, AuditKind::ActionSent);
    assert_eq!(d.audit[0].policy, "restart-web");
    assert_eq!(d.audit[0].policy_version, w.engine.policy_version());
    assert!(d.audit[0].anomaly_id.is_some());
    // One actor per target: no second command while the first is in flight.
    assert!(w.tick(4, "web", 0.99).commands.is_empty());
}

#[test]
fn a_blip_shorter_than_for_does_nothing() {
    let mut w = World::new();
    w.tick(0, "web", 0.99);
    w.tick(1, "web", 0.99);
    w.tick(2, "web", 0.1);
    w.tick(3, "web", 0.99);
    w.tick(4, "web", 0.99);
    assert!(w.tick(5, "web", 0.99).commands.is_empty());
    assert_eq!(w.tick(6, "web", 0.99).commands.len(), 1);
}

#[test]
fn success_then_health_verifies() {
    let mut w = World::new();
    for t in 0..3 {
        w.tick(t, "web", 0.99);
    }
    let cmd = w.tick(3, "web", 0.99).commands.remove(0).1;
    let d = w.result(4, &cmd, Outcome::Succeeded);
    assert_eq!(d.audit[0].outcome, Some(Outcome::Succeeded));
    for t in 5..10 {
        assert!(
            w.tick(t, "web", 0.1).audit.is_empty(),
            "verified too early at {t}"
        );
    }
    let d = w.tick(10, "web", 0.1);
    assert_eq!(d.audit.len(), 1);
    assert_eq!(d.audit[0].kind, AuditKind::Verified);
    assert_eq!(d.audit[0].command_id.as_deref(), Some(cmd.id.as_str()));
}

#[test]
fn still_sick_fails_verification_then_cooldown_holds_back_once() {
    let mut w = World::new();
    for t in 0..3 {
        w.tick(t, "web", 0.99);
    }
    let cmd = w.tick(3, "web", 0.99).commands.remove(0).1;
    w.result(4, &cmd, Outcome::Succeeded);
    let mut kinds = Vec::new();
    for t in 5..30 {
        let d = w.tick(t, "web", 0.99);
        assert!(d.commands.is_empty(), "acted during cooldown at {t}");
        kinds.extend(d.audit.iter().map(|a| a.kind));
    }
    assert_eq!(kinds, vec![AuditKind::VerifyFailed, AuditKind::HeldBack]);
}

#[test]
fn failed_action_enters_cooldown_and_missing_result_times_out() {
    let mut w = World::new();
    for t in 0..3 {
        w.tick(t, "web", 0.99);
    }
    let cmd = w.tick(3, "web", 0.99).commands.remove(0).1;
    w.result(4, &cmd, Outcome::Failed);
    assert!(w.tick(20, "web", 0.99).commands.is_empty());
    // After the 30 s cooldown it may act again; this time no result ever comes.
    let d = w.tick(35, "web", 0.99);
    assert_eq!(d.commands.len(), 1);
    let d = w.tick(51, "web", 0.99);
    assert_eq!(d.audit[0].kind, AuditKind::ActionResult);
    assert!(d.audit[0].detail.contains("no result"));
}

#[test]
fn shadow_mode_records_but_never_sends() {
    let mut w = World::new();
    let mut audits = Vec::new();
    for t in 0..10 {
        let d = w.tick(t, "db", 0.99);
        assert!(d.commands.is_empty());
        audits.extend(d.audit);
    }
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].kind, AuditKind::HeldBack);
    assert!(
        audits[0]
            .detail
            .contains("shadow mode: would run restart-db on h1"),
        "{}",
        audits[0].detail
    );
}

#[test]
fn unknown_results_are_ignored() {
    let mut w = World::new();
    let r = CommandResult {
        command_id: "nope".into(),
        host: "h1".into(),
        action: "x".into(),
        target: EntityId::service("h1", "web"),
        outcome: Outcome::Succeeded,
        detail: String::new(),
        started_ms: 0,
        finished_ms: 0,
        lease_token: None,
    };
    assert!(w.engine.on_result(&r, 0, "m1").is_none());
}

const CHAIN: &str = r#"
policies:
  - name: restart-worker
    match: { entity: "service/*/worker", for_secs: 0 }
    action: restart-worker
    cooldown_secs: 10
    cooldown_backoff: 2
    budget: { max: 3, per_secs: 3600 }
    escalate: page-oncall
    verify: { within_secs: 5, healthy_for_secs: 2 }
  - name: page-oncall
    action: notify-oncall
    cooldown_secs: 600
    budget: { max: 1, per_secs: 3600 }
    verify: { within_secs: 5, healthy_for_secs: 2 }
"#;

impl World {
    fn with(policy: &str, budgets: Budgets) -> Self {
        let set = PolicySet::parse(policy, Path::new("p.yaml")).unwrap();
        Self::of(
            Engine::new("s".into(), set, 10_000, budgets),
            Cache::new(10, 10),
        )
    }

    /// Runs `svc` sick from `from` to `to` seconds, the agent answering every
    /// command with success a second later. Returns (time, action) sent and
    /// every audit record.
    fn sick(&mut self, svc: &str, from: i64, to: i64) -> (Vec<(i64, String)>, Vec<AuditRecord>) {
        let (mut sent, mut audit, mut pending) = (Vec::new(), Vec::new(), Vec::<Command>::new());
        for t in from..to {
            for cmd in pending.drain(..) {
                audit.extend(self.result(t, &cmd, Outcome::Succeeded).audit);
            }
            let d = self.tick(t, svc, 0.99);
            audit.extend(d.audit);
            self.causes.0.extend(d.gave_up);
            self.causes.1.extend(d.escalations);
            for (_, cmd) in d.commands {
                sent.push((t, cmd.action.clone()));
                pending.push(cmd);
            }
        }
        (sent, audit)
    }
}

#[test]
fn budget_left_counts_down_per_policy_to_zero() {
    let mut w = World::with(CHAIN, Budgets::in_memory());
    assert_eq!(
        w.engine.budgets_left(0),
        vec![("restart-worker", 3), ("page-oncall", 1)]
    );
    w.sick("worker", 0, 600);
    assert_eq!(
        w.engine.budgets_left(600_000),
        vec![("restart-worker", 0), ("page-oncall", 0)]
    );
    // The window passes: the budget is whole again.
    assert_eq!(
        w.engine.budgets_left(600_000 + 3_600_000),
        vec![("restart-worker", 3), ("page-oncall", 1)]
    );
}

#[test]
fn a_crash_loop_ends_in_escalation_with_backed_off_cooldowns() {
    let mut w = World::with(CHAIN, Budgets::in_memory());
    let (sent, audit) = w.sick("worker", 0, 600);
    let actions: Vec<&str> = sent.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "restart-worker",
            "restart-worker",
            "restart-worker",
            "notify-oncall"
        ],
        "{sent:?}"
    );
    // Each restart fails verification 7 s after it was sent (result after
    // 1 s, then the 5 s window); the cooldown after the n-th restart is
    // 10 s × 2^(n-1). The page needs no wait: its cooldown is its own.
    let gaps: Vec<i64> = sent.windows(2).map(|p| p[1].0 - p[0].0).collect();
    assert_eq!(gaps, [7 + 10, 7 + 20, 7], "{sent:?}");
    let escalated = audit
        .iter()
        .find(|a| a.kind == AuditKind::ActionSent && a.action == "notify-oncall")
        .unwrap();
    assert_eq!(escalated.policy, "page-oncall");
    // Given up twice: handed to the page, then the page's own budget
    // spent with nothing left to escalate to. Escalated once.
    assert_eq!(w.causes.0, [Cause::BudgetSpent, Cause::BudgetSpent]);
    assert_eq!(w.causes.1, [Cause::BudgetSpent]);
    assert!(
        escalated.detail.contains("restart-worker has run 3 times")
            && escalated.detail.contains("escalated to page-oncall"),
        "{}",
        escalated.detail
    );
}

#[test]
fn a_spent_chain_holds_back_and_says_which_rail() {
    let policy = CHAIN.replace("    escalate: page-oncall\n", "");
    let policy = policy.replace(
        "  - name: page-oncall\n    action",
        "  - name: page-oncall\n    match: { entity: \"sensor/none\" }\n    agent: x\n    action",
    );
    let mut w = World::with(&policy, Budgets::in_memory());
    let (sent, audit) = w.sick("worker", 0, 600);
    assert_eq!(sent.len(), 3, "{sent:?}");
    let held: Vec<&AuditRecord> = audit
        .iter()
        .filter(|a| a.kind == AuditKind::HeldBack)
        .collect();
    let last = held.last().unwrap();
    assert!(
        last.detail
            .starts_with("budget: restart-worker has run 3 times in 3600 s (budget 3)"),
        "{}",
        last.detail
    );
    // Given up once (the hold is audited once), handed to nobody.
    assert_eq!(w.causes.0, [Cause::BudgetSpent]);
    assert!(w.causes.1.is_empty());
}

#[test]
fn budgets_survive_a_restart_of_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budgets.json");
    let mut w = World::with(CHAIN, Budgets::open(&path).unwrap());
    let (sent, _) = w.sick("worker", 0, 40);
    assert_eq!(sent.len(), 2, "{sent:?}");
    // A new engine (the edge restarted) over the same file: one restart is
    // left, then the page.
    let mut w = World::with(CHAIN, Budgets::open(&path).unwrap());
    let (sent, _) = w.sick("worker", 100, 400);
    let actions: Vec<&str> = sent.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(actions, ["restart-worker", "notify-oncall"], "{sent:?}");
}

const WORKERS: &str = r#"
policies:
  - name: restart-w
    match: { entity: "service/*/w*", for_secs: 0 }
    action: restart-w
"#;

/// Ticks once at `t` s with every service in `services` reporting `score`.
fn tick_many(w: &mut World, t: i64, services: &[(String, f32)]) -> Decisions {
    let now = t * 1000;
    for (svc, _) in services {
        let id = SeriesId::new(EntityId::service("h1", svc), "up");
        w.cache.push(&id, now, 1.0, now, 0).unwrap();
    }
    let pending = w.cache.take_pending();
    let by_name: HashMap<&str, f32> = services.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    // Entries are in slot order, as the pending values are.
    let scores: Vec<f32> = w
        .cache
        .entries()
        .iter()
        .map(|e| {
            let svc = e.id.entity.as_str().rsplit('/').next().unwrap_or("");
            by_name.get(svc).copied().unwrap_or(0.0)
        })
        .collect();
    w.cache.set_scores(&pending, &scores);
    w.entities.update(
        &w.cache,
        &Default::default(),
        Levels::plain(0.95),
        now,
        5_000,
        "s",
        "m1",
    );
    w.engine.on_tick(now, &w.entities, &w.live, "m1")
}

fn storm_world(rails: RailsConfig) -> World {
    let set = PolicySet::parse(WORKERS, Path::new("p.yaml")).unwrap();
    World::of(
        Engine::new("s".into(), set, 10_000, Budgets::in_memory()).with_rails(rails),
        Cache::new(1000, 10),
    )
}

/// 100 workers fall sick within 10 s (10 a second) beside `healthy` others.
fn storm(w: &mut World, healthy: usize, secs: i64) -> (usize, Vec<AuditRecord>) {
    let (mut sent, mut audit) = (0, Vec::new());
    for t in 0..secs {
        let mut services: Vec<(String, f32)> =
            (0..healthy).map(|i| (format!("ok{i}"), 0.1)).collect();
        let sick_now = ((t + 1) * 10).min(100) as usize;
        services.extend((0..100).map(|i| (format!("w{i}"), if i < sick_now { 0.99 } else { 0.1 })));
        let d = tick_many(w, t, &services);
        sent += d.commands.len();
        audit.extend(d.audit);
    }
    (sent, audit)
}

#[test]
fn a_storm_on_a_small_share_is_capped_by_the_rate_limit() {
    // 100 of 400 targets sick: not a sick site, so the rate limit decides.
    let mut w = storm_world(RailsConfig::default());
    let (sent, audit) = storm(&mut w, 300, 60);
    assert_eq!(sent, 20, "at most 20 actions a minute");
    let limited = audit
        .iter()
        .filter(|a| a.kind == AuditKind::HeldBack && a.detail.starts_with("rate limit:"))
        .count();
    assert_eq!(limited, 80, "every held target is audited once");
    assert!(!w.engine.short_circuited());
}

#[test]
fn a_storm_across_the_site_trips_the_short_circuit_and_pages_once() {
    let rails = RailsConfig {
        page_action: Some("page-ops".into()),
        page_agent: Some("ops".into()),
        ..RailsConfig::default()
    };
    let mut w = storm_world(rails);
    // 100 of 120 targets sick within 10 s.
    let (sent, audit) = storm(&mut w, 20, 60);
    let pages: Vec<&AuditRecord> = audit
        .iter()
        .filter(|a| a.kind == AuditKind::ActionSent && a.policy == SHORT_CIRCUIT)
        .collect();
    assert_eq!(pages.len(), 1, "{pages:?}");
    assert_eq!(pages[0].action, "page-ops");
    assert!(pages[0].detail.contains("a sick site is not a sick host"));
    assert!(
        pages[0].detail.starts_with("paging: 70 of 120 targets"),
        "{}",
        pages[0].detail
    );
    // It trips at 70 of 120 (t = 6); before that the rate limit let 20 of
    // the first 60 sick workers be restarted, and nothing runs after it.
    assert_eq!(sent, 1 + 20, "one page plus the restarts before it tripped");
    let held = audit
        .iter()
        .filter(|a| a.kind == AuditKind::HeldBack && a.detail.starts_with(SHORT_CIRCUIT))
        .count();
    // A held decision is audited once per anomaly and rail: the trip
    // itself; the 40 workers that fell sick after the rate limit filled
    // (audited as rate-limited, now again as short-circuited); the 40 that
    // fell sick after the trip; and the 20 restarted ones once their
    // commands time out unanswered and they are still sick.
    assert_eq!(held, 1 + 40 + 40 + 20);
    assert!(w.engine.short_circuited());
    // The site recovers: the short-circuit clears and says so.
    let services: Vec<(String, f32)> = (0..120).map(|i| (format!("w{i}"), 0.1)).collect();
    let d = tick_many(&mut w, 61, &services);
    assert!(!w.engine.short_circuited());
    assert!(d
        .audit
        .iter()
        .any(|a| a.detail.contains("short-circuit cleared")));
}

const APPROVE: &str = r#"
policies:
  - name: failover-zone
    match: { entity: "service/*/web", for_secs: 0 }
    action: failover
    mode: approve
    approval_ttl_secs: 60
"#;

/// Carol rejects the first request, half a second in.
fn reject_first(approvals: &crate::approval::SharedApprovals) {
    let id = approvals.lock().unwrap().all()[0].id.clone();
    approvals
        .lock()
        .unwrap()
        .answer(&id, false, "carol", 500)
        .unwrap();
}

fn approve_world() -> (World, crate::approval::SharedApprovals) {
    approve_world_with(APPROVE)
}

fn approve_world_with(policy: &str) -> (World, crate::approval::SharedApprovals) {
    let set = PolicySet::parse(policy, Path::new("p.yaml")).unwrap();
    let approvals = crate::approval::SharedApprovals::default();
    let engine = Engine::new("s".into(), set, 10_000, Budgets::in_memory())
        .with_approvals(approvals.clone());
    let w = World::of(engine, Cache::new(10, 10));
    (w, approvals)
}

#[test]
fn approve_mode_waits_for_an_answer_and_acts_once() {
    let (mut w, approvals) = approve_world();
    let d = w.tick(0, "web", 0.99);
    assert!(d.commands.is_empty());
    assert_eq!(d.audit.len(), 1);
    assert_eq!(d.audit[0].kind, AuditKind::AwaitingApproval);
    assert_eq!(d.audit[0].mode, "approve");
    let id = approvals.lock().unwrap().all()[0].id.clone();
    assert!(d.audit[0].detail.contains(&id), "{}", d.audit[0].detail);
    // Waiting: held (audited once), nothing sent.
    let d = w.tick(1, "web", 0.99);
    assert!(d.commands.is_empty());
    assert_eq!(d.audit[0].rail.as_deref(), Some("approval"));
    assert!(w.tick(2, "web", 0.99).audit.is_empty());
    approvals
        .lock()
        .unwrap()
        .answer(&id, true, "alice", 2_500)
        .unwrap();
    let d = w.tick(3, "web", 0.99);
    assert_eq!(d.commands.len(), 1);
    assert!(
        d.audit[0].detail.contains("approved by alice"),
        "{}",
        d.audit[0].detail
    );
    assert_eq!(
        approvals.lock().unwrap().all()[0].state,
        crate::approval::State::Used
    );
}

#[test]
fn an_unanswered_approval_expires_and_nothing_runs() {
    let (mut w, approvals) = approve_world();
    w.tick(0, "web", 0.99);
    let mut audit = Vec::new();
    for t in 1..=70 {
        let d = w.tick(t, "web", 0.99);
        assert!(d.commands.is_empty(), "acted without approval at {t}");
        audit.extend(d.audit);
    }
    assert!(audit
        .iter()
        .any(|a| a.rail.as_deref() == Some("approval expired")));
    let id = approvals.lock().unwrap().all()[0].id.clone();
    // A late answer is refused.
    assert!(approvals
        .lock()
        .unwrap()
        .answer(&id, true, "bob", 71_000)
        .is_err());
    // A rejection holds too.
    let (mut w, approvals) = approve_world();
    w.tick(0, "web", 0.99);
    reject_first(&approvals);
    let d = w.tick(1, "web", 0.99);
    assert!(d.commands.is_empty());
    assert!(
        d.audit[0].detail.contains("rejected by carol"),
        "{}",
        d.audit[0].detail
    );
}

#[test]
fn an_expired_or_rejected_approval_escalates_like_a_spent_budget() {
    let policy = format!(
        "{APPROVE}    escalate: page\n  - name: page\n    action: notify-oncall\n    agent: ops\n    cooldown_secs: 600\n"
    );
    for reject in [false, true] {
        let (mut w, approvals) = approve_world_with(&policy);
        w.tick(0, "web", 0.99);
        if reject {
            reject_first(&approvals);
        }
        let (sent, audit) = w.sick("web", 1, 120);
        let actions: Vec<&str> = sent.iter().map(|(_, a)| a.as_str()).collect();
        // The page, once (its cooldown holds the rest); never the failover.
        assert_eq!(actions, ["notify-oncall"], "{audit:#?}");
        let cause = if reject {
            Cause::ApprovalRejected
        } else {
            Cause::ApprovalExpired
        };
        // Expiry needs the whole ttl; a rejection escalates at once.
        assert_eq!(sent[0].0, if reject { 1 } else { 61 }, "{sent:?}");
        assert_eq!(w.causes.0, [cause]);
        assert_eq!(w.causes.1, [cause]);
        let page = audit
            .iter()
            .find(|a| a.kind == AuditKind::ActionSent)
            .unwrap();
        assert!(page.detail.contains("escalated to page"), "{}", page.detail);
    }
}

#[test]
fn commands_carry_the_lease_and_a_fenced_result_stands_back() {
    let mut w = World::new();
    for t in 0..3 {
        w.tick(t, "web", 0.99);
    }
    let cmd = w.tick(3, "web", 0.99).commands.remove(0).1;
    assert_eq!(cmd.holder, "s/edge");
    assert_eq!(cmd.lease_token, None, "no lease yet: ask for one");
    // The verify window (20 s), the TTL (10 s) and the result grace (5 s).
    assert_eq!(cmd.lease_ms, 35_000);
    // The agent granted token 1; the action failed; after the cooldown the
    // next command presents token 1.
    w.result(4, &cmd, Outcome::Failed);
    let next = (5..60)
        .find_map(|t| w.tick(t, "web", 0.99).commands.pop())
        .expect("acts again after the cooldown")
        .1;
    assert_eq!(next.lease_token, Some(1));
    // Another edge holds the target: audited with the lease rail, no retry
    // until the cooldown is over, and the stale token is dropped.
    let d = w.result(40, &next, Outcome::Fenced);
    assert_eq!(d.audit[0].rail.as_deref(), Some("lease"));
    assert!(w.tick(41, "web", 0.99).commands.is_empty());
    let again = (42..200)
        .find_map(|t| w.tick(t, "web", 0.99).commands.pop())
        .expect("acts again after the cooldown")
        .1;
    assert_eq!(again.lease_token, None);
}

#[test]
fn a_site_wide_policy_still_acts_while_the_short_circuit_holds() {
    let text = format!(
        "{WORKERS}  - name: failover\n    match: {{ entity: \"service/*/lb\", for_secs: 0 }}\n    action: failover-zone\n    site_wide: true\n"
    );
    let set = PolicySet::parse(&text, Path::new("p.yaml")).unwrap();
    let mut w = World::of(
        Engine::new("s".into(), set, 10_000, Budgets::in_memory()),
        Cache::new(100, 10),
    );
    let mut services: Vec<(String, f32)> = (0..9).map(|i| (format!("w{i}"), 0.99)).collect();
    services.push(("lb".into(), 0.99));
    let d = tick_many(&mut w, 0, &services);
    assert!(w.engine.short_circuited());
    let actions: Vec<&str> = d.commands.iter().map(|(_, c)| c.action.as_str()).collect();
    assert_eq!(actions, ["failover-zone"], "{:?}", d.audit);
}

#[test]
fn a_failed_verification_escalates_at_once_when_asked_to() {
    let chain = CHAIN.replace(
        "verify: { within_secs: 5, healthy_for_secs: 2 }\n  - name: page-oncall",
        "verify: { within_secs: 5, healthy_for_secs: 2, escalate_on_failure: true }\n  - name: page-oncall",
    );
    assert_ne!(chain, CHAIN);
    let mut w = World::with(&chain, Budgets::in_memory());
    let (sent, audit) = w.sick("worker", 0, 120);
    let actions: Vec<&str> = sent.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(actions, ["restart-worker", "notify-oncall"], "{sent:?}");
    let page = audit
        .iter()
        .find(|a| a.kind == AuditKind::ActionSent && a.action == "notify-oncall")
        .unwrap();
    assert_eq!(page.policy, "page-oncall");
    assert!(
        page.detail.contains("did not recover after restart-worker"),
        "{}",
        page.detail
    );
    // The page went out right after the failed check, not after a cooldown.
    assert_eq!(sent[1].0 - sent[0].0, 7, "{sent:?}");
    // Handed on for the failed check; given up when the page's own
    // budget (1) is spent.
    assert_eq!(w.causes.1, [Cause::VerifyFailed]);
    assert_eq!(w.causes.0, [Cause::BudgetSpent]);
}

#[test]
fn a_policy_matches_an_entity_score_and_the_audit_names_the_root_cause() {
    let set = PolicySet::parse(
        r#"
policies:
  - name: restart-web-by-entity
    match: { entity: "service/*/web", min_entity_score: 1.5, metrics: ["lat*"], for_secs: 0 }
    action: restart-web
"#,
        Path::new("p.yaml"),
    )
    .unwrap();
    let mut engine = Engine::new("s".into(), set, 10_000, Budgets::in_memory());
    let web = EntityId::service("h1", "web");
    let mut cache = Cache::new(10, 10);
    let mut entities = Entities::default();
    let live = Liveness::default();
    let mut tick = |t: i64, entity_score: f64, top: &str| {
        let now = t * 1000;
        cache
            .push(&SeriesId::new(web.clone(), "up"), now, 1.0, now, 0)
            .unwrap();
        let pending = cache.take_pending();
        // The series score stays low: only the entity model sees it.
        cache.set_scores(&pending, &vec![0.1; pending.len()]);
        let verdict = crate::entity::Verdict {
            score: entity_score,
            root_cause: vec![
                vigil_core::message::MetricShare {
                    metric: top.into(),
                    share: 0.7,
                },
                vigil_core::message::MetricShare {
                    metric: "up".into(),
                    share: 0.3,
                },
            ],
        };
        let verdicts = [(web.clone(), verdict)].into_iter().collect();
        let ev = entities.update(
            &cache,
            &verdicts,
            Levels::plain(0.95),
            now,
            5_000,
            "s",
            "m1",
        );
        (ev, engine.on_tick(now, &entities, &live, "m1"))
    };
    // Over the model's alarm level but under the policy's 1.5: an anomaly
    // event with the entity score and root cause, and no action.
    let (ev, d) = tick(1, 1.2, "latency");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].entity_score, Some(1.2));
    assert_eq!(ev[0].root_cause[0].metric, "latency");
    assert!(d.commands.is_empty());
    // The wrong root cause for the policy's metric pattern: no action.
    assert!(tick(2, 2.0, "rss").1.commands.is_empty());
    // Both hold: sent, and the audit record names the shares.
    let (_, d) = tick(3, 2.0, "latency");
    assert_eq!(d.commands.len(), 1, "{:?}", d.audit);
    let sent = d
        .audit
        .iter()
        .find(|a| a.kind == AuditKind::ActionSent)
        .unwrap();
    let names: Vec<(&str, f64)> = sent
        .root_cause
        .iter()
        .map(|s| (s.metric.as_str(), s.share))
        .collect();
    assert_eq!(names, vec![("latency", 0.7), ("up", 0.3)]);
    assert!(sent.detail.contains("entity score 2.00"), "{}", sent.detail);
}

#[test]
fn a_policy_naming_an_action_its_agent_lacks_is_found_at_its_line() {
    let mut w = World::new();
    w.tick(0, "web", 0.1);
    let text = POLICY.replace("action: restart-web", "action: restart-wbe");
    let set = PolicySet::parse(&text, Path::new("p.yaml")).unwrap();
    let problems = |w: &World| {
        set.action_problems(&text, Path::new("p.yaml"), |p| {
            w.engine.lacking(&set, p, &w.entities)
        })
    };
    // Nothing announced yet: nothing to check against.
    assert!(problems(&w).is_empty());
    assert!(w
        .engine
        .set_agent_actions("h1", vec!["restart-web".into(), "restart-db".into()]));
    assert!(!w
        .engine
        .set_agent_actions("h1", vec!["restart-db".into(), "restart-web".into()]));
    let found = problems(&w);
    assert_eq!(
        found,
        ["p.yaml:5:5: policy \"restart-web\" (#1): action \"restart-wbe\" is unknown: not in the catalog of agent h1 (as announced)"],
    );
    // The db policy matches no known entity: no agent to check it on.
    assert!(w.engine.missing_actions(&w.entities).is_empty());
    // The catalog loses an action the policies in force use.
    w.engine.set_agent_actions("h1", vec!["restart-db".into()]);
    let missing = w.engine.missing_actions(&w.entities);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].contains("\"restart-web\" is unknown"),
        "{missing:?}"
    );
}
