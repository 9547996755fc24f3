//! Liveness policies through the engine, on a simulated clock: a dead
//! process is restarted every time, however long it was down before and
//! whatever the detector thinks (its score is 0 throughout here).

use super::*;
use crate::budget::Budgets;
use crate::cache::Cache;
use crate::entity::Levels;
use std::path::Path;
use vigil_core::message::{CommandResult, Outcome};
use vigil_core::SeriesId;

const POLICY: &str = r#"
policies:
  - name: restart-dead-web
    match: { entity: "service/*/web", when: ["up == 0", "http_ok == 0"], for_secs: 2 }
    action: restart-web
    cooldown_secs: 5
    budget: { max: 20, per_secs: 3600 }
    escalate: page
    verify: { within_secs: 20, healthy_for_secs: 3 }
  - name: page
    action: page-ops
    agent: ops
    cooldown_secs: 600
    budget: { max: 1, per_secs: 3600 }
"#;

struct Host {
    cache: Cache,
    entities: Entities,
    live: Liveness,
    engine: Engine,
    /// Commands sent, with the second they were sent at.
    sent: Vec<(i64, Command)>,
    /// Audit records, in order.
    audit: Vec<AuditRecord>,
}

impl Host {
    fn new(policy: &str) -> Self {
        let set = PolicySet::parse(policy, Path::new("p.yaml")).unwrap();
        Self {
            cache: Cache::new(10, 10),
            entities: Entities::default(),
            live: Liveness::default(),
            engine: Engine::new("s".into(), set, 10_000, Budgets::in_memory()),
            sent: Vec::new(),
            audit: Vec::new(),
        }
    }

    /// Second `t`: the agent reports `up` (and `http_ok` alike); the
    /// detector scores nothing; the engine decides; every command sent
    /// the second before gets a successful result now (the restart ran,
    /// whether or not the service then stays up).
    fn second(&mut self, t: i64, up: bool) {
        let now = t * 1000;
        let web = EntityId::service("h1", "web");
        for metric in ["up", "http_ok"] {
            let id = SeriesId::new(web.clone(), metric);
            self.cache.push(&id, now, up as u8 as f64, now, 0).unwrap();
        }
        let pending = self.cache.take_pending();
        self.cache.set_scores(&pending, &vec![0.0; pending.len()]);
        self.entities.update(
            &self.cache,
            &Default::default(),
            Levels::plain(0.95),
            now,
            5_000,
            "s",
            "m1",
        );
        let last: Vec<Command> = self
            .sent
            .iter()
            .filter(|(at, _)| *at == t - 1)
            .map(|(_, c)| c.clone())
            .collect();
        for cmd in last {
            let r = CommandResult {
                command_id: cmd.id.clone(),
                host: "h1".into(),
                action: cmd.action.clone(),
                target: cmd.target.clone(),
                outcome: Outcome::Succeeded,
                detail: String::new(),
                started_ms: now,
                finished_ms: now,
                lease_token: Some(1),
            };
            if let Some(d) = self.engine.on_result(&r, now, "m1") {
                self.audit.extend(d.audit);
            }
        }
        self.live
            .update(&self.cache, self.engine.policies(), now, 5_000);
        let d = self.engine.on_tick(now, &self.entities, &self.live, "m1");
        self.sent
            .extend(d.commands.into_iter().map(|(_, c)| (t, c)));
        self.audit.extend(d.audit);
    }

    fn restarts_at(&self) -> Vec<i64> {
        self.sent
            .iter()
            .filter(|(_, c)| c.action == "restart-web")
            .map(|(t, _)| *t)
            .collect()
    }
}

#[test]
fn a_crash_after_a_long_outage_is_restarted_at_once() {
    let mut h = Host::new(POLICY);
    // Ten minutes down: every restart runs but the service dies again;
    // the engine keeps trying, backing off.
    for t in 0..600 {
        h.second(t, false);
    }
    let during = h.restarts_at();
    assert!(during.len() >= 5, "restarts while down: {during:?}");
    assert_eq!(during[0], 2, "the first restart once `up == 0` held 2 s");
    let gaps: Vec<i64> = during.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] >= g[0]),
        "the cooldown backs off: {gaps:?}"
    );
    assert!(
        h.audit.iter().any(|r| r.kind == AuditKind::VerifyFailed),
        "a restart that did not hold is a failed verification"
    );
    // Fixed by hand: healthy for eleven minutes.
    for t in 600..1260 {
        h.second(t, true);
    }
    let before = h.restarts_at().len();
    // Crashes again: restarted within 5 s, not held by the old backoff.
    for t in 1260..1266 {
        h.second(t, false);
    }
    let after = h.restarts_at();
    assert_eq!(after.len(), before + 1, "{after:?}");
    let at = *after.last().unwrap();
    assert!(at - 1260 <= 5, "restarted {} s after the crash", at - 1260);
    let sent = h
        .audit
        .iter()
        .rev()
        .find(|r| r.kind == AuditKind::ActionSent)
        .unwrap();
    assert!(sent.detail.contains("up == 0 has held"), "{}", sent.detail);
    assert_eq!(sent.top_metric, "up");
    // It dies again: the backoff starts over from 5 s (eleven healthy
    // minutes reset it), so the next restart follows the failed
    // verification (20 s) within seconds, not after 5 x 2^7 s.
    for t in 1266..1300 {
        h.second(t, false);
    }
    let again = h.restarts_at();
    assert_eq!(again.len(), before + 2, "{again:?}");
    assert!(again[before + 1] - at <= 27, "{again:?}");
    // Back up after the restart: verified by the condition, not the score.
    for t in 1300..1310 {
        h.second(t, true);
    }
    assert_eq!(h.audit.last().unwrap().kind, AuditKind::Verified);
}

#[test]
fn a_service_dead_from_the_start_is_restarted_then_escalated() {
    let policy = POLICY.replace("max: 20, per_secs: 3600", "max: 3, per_secs: 3600");
    let mut h = Host::new(&policy);
    for t in 0..900 {
        h.second(t, false);
    }
    assert_eq!(h.restarts_at().len(), 3, "{:?}", h.restarts_at());
    let pages: Vec<&(i64, Command)> = h
        .sent
        .iter()
        .filter(|(_, c)| c.action == "page-ops")
        .collect();
    assert_eq!(pages.len(), 1, "the budget spent, a human is paged once");
    assert!(pages[0].0 > *h.restarts_at().last().unwrap());
    let sent = h
        .audit
        .iter()
        .find(|r| r.kind == AuditKind::ActionSent && r.action == "page-ops")
        .unwrap();
    assert!(sent.detail.contains("escalated to page"), "{}", sent.detail);
}

#[test]
fn a_liveness_policy_ignores_the_score_and_a_score_policy_ignores_conditions() {
    let set = PolicySet::parse(POLICY, Path::new("p.yaml")).unwrap();
    let live = &set.policies[0];
    assert!(live.is_liveness());
    assert!(!live.matches(&EntityId::service("h1", "web"), "up", 1.0));
    let errs = PolicySet::parse(
        "policies:\n  - name: a\n    match: { entity: \"service/*\", when: [\"up = 0\"], metrics: [up] }\n    action: r\n",
        Path::new("p.yaml"),
    )
    .unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.contains("not `<metric> <op> <number>`")),
        "{errs:?}"
    );
}

/// The three loose ends of the record: a command left open by a restart,
/// an approval whose anomaly ended, and two requests for one target.
mod loose_ends {
    use super::*;
    use crate::approval::State;

    #[test]
    fn a_command_left_open_by_a_restart_is_closed_and_verified() {
        let mut h = Host::new(POLICY);
        for t in 0..3 {
            h.second(t, false);
        }
        let sent = h
            .audit
            .iter()
            .find(|r| r.kind == AuditKind::ActionSent)
            .cloned()
            .unwrap();
        // Records carry the wall clock; this one was written at second 2.
        let sent = AuditRecord {
            ts_ms: 2000,
            ..sent
        };
        // A new engine, as after SIGKILL: it knows only the audit log.
        let mut after = Host::new(POLICY);
        let d = after.engine.resume(std::slice::from_ref(&sent), "m1");
        assert!(d.audit.is_empty() && d.commands.is_empty());
        // No result comes (the agent never got it, or it was lost): after
        // the command's time the outcome is unknown and recovery is checked.
        for t in 3..60 {
            after.second(t, t >= 20);
            // `second` answers only commands it saw sent; none here.
        }
        let kinds: Vec<AuditKind> = after
            .audit
            .iter()
            .filter(|r| r.command_id == sent.command_id)
            .map(|r| r.kind)
            .collect();
        assert_eq!(
            kinds,
            [AuditKind::ActionResult, AuditKind::Verified],
            "{:?}",
            after.audit
        );
        let result = after
            .audit
            .iter()
            .find(|r| r.kind == AuditKind::ActionResult)
            .unwrap();
        assert!(
            result.detail.starts_with("unknown: the edge restarted"),
            "{}",
            result.detail
        );
        // Its result, when it does come, closes it the ordinary way.
        let mut third = Host::new(POLICY);
        third.engine.resume(std::slice::from_ref(&sent), "m1");
        let r = CommandResult {
            command_id: sent.command_id.clone().unwrap(),
            host: "h1".into(),
            action: sent.action.clone(),
            target: sent.target.clone(),
            outcome: Outcome::Succeeded,
            detail: "restarted".into(),
            started_ms: 3000,
            finished_ms: 3000,
            lease_token: Some(1),
        };
        let d = third
            .engine
            .on_result(&r, 4000, "m1")
            .expect("in flight again");
        assert_eq!(d.audit[0].outcome, Some(Outcome::Succeeded));
    }

    const APPROVE: &str = r#"
policies:
  - name: restart-dead-web
    match: { entity: "service/*/web", when: ["up == 0"], for_secs: 0 }
    action: restart-web
    mode: approve
  - name: restart-sick-web
    match: { entity: "service/*/web", min_score: 0.5, for_secs: 0 }
    action: restart-web
    mode: approve
"#;

    #[test]
    fn an_approval_whose_anomaly_ended_is_closed_and_answers_409() {
        let approvals = crate::approval::SharedApprovals::default();
        let mut h = Host::new(APPROVE);
        h.engine = Engine::new(
            "s".into(),
            PolicySet::parse(APPROVE, Path::new("p.yaml")).unwrap(),
            10_000,
            Budgets::in_memory(),
        )
        .with_approvals(approvals.clone());
        h.second(0, false);
        let asked = approvals.lock().unwrap().all();
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].state, State::Pending);
        // The service comes back by itself before anyone answers.
        h.second(1, true);
        let a = approvals.lock().unwrap().all()[0].clone();
        assert_eq!(a.state, State::Closed);
        let closed = h.audit.last().unwrap();
        assert_eq!(closed.rail.as_deref(), Some("approval closed"));
        assert!(closed.detail.contains("nothing ran"), "{}", closed.detail);
        let err = approvals
            .lock()
            .unwrap()
            .answer(&a.id, true, "late", 2000)
            .unwrap_err();
        assert!(err.to_string().contains("its anomaly ended"), "{err}");
        assert!(h.sent.is_empty());
    }

    #[test]
    fn one_target_has_one_pending_request() {
        let approvals = crate::approval::SharedApprovals::default();
        let set = PolicySet::parse(APPROVE, Path::new("p.yaml")).unwrap();
        let mut engine = Engine::new("s".into(), set, 10_000, Budgets::in_memory())
            .with_approvals(approvals.clone());
        let web = EntityId::service("h1", "web");
        let mut cache = Cache::new(10, 10);
        let mut entities = Entities::default();
        let mut live = Liveness::default();
        // Dead (a condition) and, by its score, anomalous too.
        for t in [1000, 2000] {
            cache
                .push(&SeriesId::new(web.clone(), "up"), t, 0.0, t, 0)
                .unwrap();
            let p = cache.take_pending();
            cache.set_scores(&p, &[0.99]);
            entities.update(
                &cache,
                &Default::default(),
                Levels::plain(0.95),
                t,
                5000,
                "s",
                "m1",
            );
            live.update(&cache, engine.policies(), t, 5000);
            engine.on_tick(t, &entities, &live, "m1");
        }
        let pending: Vec<_> = approvals
            .lock()
            .unwrap()
            .all()
            .into_iter()
            .filter(|a| a.state == State::Pending)
            .collect();
        assert_eq!(pending.len(), 1, "{pending:?}");
    }
}

#[test]
fn a_policy_naming_an_action_the_agent_lacks_is_held_and_reported() {
    let mut h = Host::new(POLICY);
    h.engine
        .set_agent_actions("h1", vec!["page-ops".into(), "restart-db".into()]);
    h.engine.set_agent_actions("ops", vec!["page-ops".into()]);
    for t in 0..5 {
        h.second(t, false);
    }
    // Only h1 has an entity the policy matches; ops is not reached.
    let problems = h.engine.missing_actions(&h.entities);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("action \"restart-web\" is unknown: not in the catalog of agent h1"),
        "{problems:?}"
    );
    assert!(
        h.sent.is_empty(),
        "nothing sent to an agent that cannot run it"
    );
    let held = h
        .audit
        .iter()
        .find(|r| r.kind == AuditKind::HeldBack)
        .unwrap();
    assert_eq!(held.rail.as_deref(), Some("agent"));
    assert!(
        held.detail.contains("has no action \"restart-web\""),
        "{}",
        held.detail
    );
    // Held, not spent: every budget is whole.
    let full = h.engine.policies().policies.iter().map(|p| p.budget.max);
    let left = h.engine.budgets_left(5_000).into_iter().map(|(_, l)| l);
    assert!(left.eq(full));
}
