//! Two edge nodes race for one target: both see the same anomaly, both
//! decide to restart, both commands reach the agent. The agent's lease lets
//! exactly one run; the other edge gets `fenced`, audits it under the lease
//! rail and stands back. Real engines, a real agent executor and a real child
//! process for the action; the two commands are handed over directly rather
//! than through a broker, in both orders, so that the order is controlled.
#![cfg(test)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use vigil_agent::breaker::BreakerConfig;
use vigil_agent::executor::Executor;
use vigil_agent::ledger::Ledger;
use vigil_agent::supervisor::Supervisor;
use vigil_agent::Catalog;
use vigil_core::clock::now_ms;
use vigil_core::message::{AuditKind, Command, Outcome};
use vigil_core::{EntityId, SeriesId};
use vigil_edge::budget::Budgets;
use vigil_edge::cache::Cache;
use vigil_edge::entity::{Entities, Levels};
use vigil_edge::policy::PolicySet;
use vigil_edge::remediation::Engine;

const POLICY: &str = r#"
policies:
  - name: restart-web
    match: { entity: "service/h1/web", for_secs: 0 }
    action: restart-web
"#;

fn edge(node: &str) -> Engine {
    let set = PolicySet::parse(POLICY, Path::new("policy.yaml")).expect("policy");
    Engine::new("site-1".into(), set, 30_000, Budgets::in_memory()).with_node(node)
}

/// Both edges see `service/h1/web` anomalous now; each decides.
fn decide(engine: &mut Engine, now: i64) -> Command {
    let id = SeriesId::new(EntityId::service("h1", "web"), "up");
    let mut cache = Cache::new(4, 4);
    cache.push(&id, now, 0.0, now, 0).expect("push");
    let pending = cache.take_pending();
    cache.set_scores(&pending, &[0.99]);
    let mut entities = Entities::default();
    entities.update(
        &cache,
        &Default::default(),
        Levels::plain(0.95),
        now,
        5_000,
        "site-1",
        "m1",
    );
    let mut d = engine.on_tick(
        now,
        &entities,
        &vigil_edge::liveness::Liveness::default(),
        "m1",
    );
    assert_eq!(d.commands.len(), 1, "{:?}", d.audit);
    d.commands.remove(0).1
}

async fn race(first_is_a: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ran = dir.path().join("ran");
    let catalog = format!(
        "actions:\n  restart-web: {{ kind: exec, argv: [sh, -c, \"echo run >> {}\"] }}\n",
        ran.display()
    );
    let catalog = Catalog::parse(&catalog, Path::new("catalog.yaml"), &[]).expect("catalog");
    let mut agent = Executor::new(
        "h1".into(),
        catalog,
        Arc::new(tokio::sync::Mutex::new(Supervisor::default())),
        Duration::from_secs(10),
        Ledger::open(&dir.path().join("ledger.json")).expect("ledger"),
        BreakerConfig::default(),
    );
    let (mut a, mut b) = (edge("edge-a"), edge("edge-b"));
    let now = now_ms();
    let (ca, cb) = (decide(&mut a, now), decide(&mut b, now));
    assert_eq!(
        (ca.holder.as_str(), cb.holder.as_str()),
        ("site-1/edge-a", "site-1/edge-b")
    );
    let (ra, rb) = if first_is_a {
        let ra = agent.handle(&ca).await;
        (ra, agent.handle(&cb).await)
    } else {
        let rb = agent.handle(&cb).await;
        (agent.handle(&ca).await, rb)
    };
    let (winner, loser) = if first_is_a { (&ra, &rb) } else { (&rb, &ra) };
    assert_eq!(winner.outcome, Outcome::Succeeded, "{}", winner.detail);
    assert_eq!(winner.lease_token, Some(1));
    assert_eq!(loser.outcome, Outcome::Fenced, "{}", loser.detail);
    // The action ran once.
    assert_eq!(
        std::fs::read_to_string(&ran).expect("ran").lines().count(),
        1
    );
    // The loser's edge records why it stood back.
    let (loser_engine, loser_result) = if first_is_a {
        (&mut b, &rb)
    } else {
        (&mut a, &ra)
    };
    let d = loser_engine
        .on_result(loser_result, now_ms(), "m1")
        .expect("result for a command in flight");
    assert_eq!(d.audit[0].kind, AuditKind::ActionResult);
    assert_eq!(d.audit[0].rail.as_deref(), Some("lease"));
    assert!(
        d.audit[0].detail.contains("leased to site-1/edge-"),
        "{}",
        d.audit[0].detail
    );
    // A replay of the winner's command (a reconnect redelivers it) does not run.
    let winner_cmd = if first_is_a { &ca } else { &cb };
    assert_eq!(agent.handle(winner_cmd).await.outcome, Outcome::Duplicate);
    assert_eq!(
        std::fs::read_to_string(&ran).expect("ran").lines().count(),
        1
    );
}

#[tokio::test]
async fn two_edges_race_for_one_target_and_only_one_acts() {
    race(true).await;
    race(false).await;
}
