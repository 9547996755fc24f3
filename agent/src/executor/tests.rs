use super::*;
use std::collections::BTreeMap;
use vigil_core::EntityId;

fn executor(yaml: &str) -> Executor {
    let catalog: Catalog = serde_yaml_ng::from_str(yaml).unwrap();
    Executor::new(
        "h1".into(),
        catalog,
        Arc::new(Mutex::new(Supervisor::default())),
        Duration::from_secs(5),
        Ledger::in_memory(),
        BreakerConfig::default(),
    )
}

fn command(id: &str, action: &str) -> Command {
    Command {
        id: id.into(),
        action: action.into(),
        target: EntityId::service("h1", "web"),
        params: BTreeMap::new(),
        issued_ms: now_ms(),
        expires_ms: now_ms() + 10_000,
        policy: "p".into(),
        anomaly_id: None,
        holder: "s/edge-1".into(),
        lease_token: None,
        lease_ms: 1000,
        to: "h1".into(),
        signature: None,
    }
}

const CATALOG: &str = r#"
actions:
  ok: { kind: exec, argv: ["true"] }
  fails: { kind: exec, argv: ["false"], retries: 0 }
  slow: { kind: exec, argv: ["sleep", "5"], timeout_secs: 1, retries: 0 }
  echo: { kind: exec, argv: ["test", "{zone}", "=", "eu-1"], params: [zone], retries: 0 }
"#;

#[tokio::test]
async fn runs_catalog_actions_once() {
    let mut ex = executor(CATALOG);
    assert_eq!(
        ex.handle(&command("1", "ok")).await.outcome,
        Outcome::Succeeded
    );
    assert_eq!(
        ex.handle(&command("1", "ok")).await.outcome,
        Outcome::Duplicate
    );
    assert_eq!(
        ex.handle(&command("2", "fails")).await.outcome,
        Outcome::Failed
    );
}

#[tokio::test]
async fn refuses_what_the_catalog_does_not_allow() {
    let mut ex = executor(CATALOG);
    let r = ex.handle(&command("3", "rm-rf")).await;
    assert_eq!(r.outcome, Outcome::Rejected);
    assert!(r.detail.contains("unknown action"), "{}", r.detail);
    let mut c = command("4", "ok");
    c.params.insert("argv".into(), "/bin/sh".into());
    assert_eq!(ex.handle(&c).await.outcome, Outcome::Rejected);
    let mut c = command("5", "ok");
    c.expires_ms = now_ms() - 1;
    assert_eq!(ex.handle(&c).await.outcome, Outcome::Expired);
    // A refused id was not remembered: a corrected, fresh command with it can still run.
    assert_eq!(
        ex.handle(&command("3", "ok")).await.outcome,
        Outcome::Succeeded
    );
}

#[tokio::test]
async fn fills_declared_params_and_times_out() {
    let mut ex = executor(CATALOG);
    let mut c = command("6", "echo");
    c.params.insert("zone".into(), "eu-1".into());
    assert_eq!(ex.handle(&c).await.outcome, Outcome::Succeeded);
    let mut c = command("7", "echo");
    c.params.insert("zone".into(), "us-2".into());
    assert_eq!(ex.handle(&c).await.outcome, Outcome::Failed);
    let r = ex.handle(&command("8", "slow")).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(r.detail.contains("timed out"), "{}", r.detail);
}

#[tokio::test]
async fn systemd_restart_runs_systemctl_restart_unit() {
    // systemd cannot run here: a stand-in systemctl records the argv it
    // gets (the agent execs it directly; the script's shell is its own).
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let fake = dir.path().join("systemctl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\n[ \"$2\" = nginx.service ]\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let catalog = format!(
            "actions:\n  restart-nginx: {{ kind: systemd_restart, unit: nginx.service, systemctl: {} }}\n  restart-bad: {{ kind: systemd_restart, unit: nope.service, systemctl: {}, retries: 0 }}\n",
            fake.display(),
            fake.display()
        );
    // A test that forks concurrently can briefly hold the new file open for
    // writing (ETXTBSY); wait until it executes, then start for real.
    for _ in 0..100 {
        if std::process::Command::new(&fake)
            .args(["probe", "x"])
            .output()
            .is_ok()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The probe's own call is not part of what the agent did.
    let _ = std::fs::remove_file(&log);
    let mut ex = executor(&catalog);
    let r = ex.handle(&command("s1", "restart-nginx")).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{}", r.detail);
    assert_eq!(
        ex.handle(&command("s2", "restart-bad")).await.outcome,
        Outcome::Failed
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "restart nginx.service\nrestart nope.service\n"
    );
}

#[tokio::test]
async fn an_action_runs_only_for_the_targets_its_catalog_entry_allows() {
    let mut ex =
        executor("actions:\n  notify: { kind: log, message: hi, targets: [\"sensor/*\"] }\n");
    let mut c = command("t1", "notify");
    c.target = EntityId::sensor("temp-1");
    assert_eq!(ex.handle(&c).await.outcome, Outcome::Succeeded);
    let r = ex.handle(&command("t2", "notify")).await;
    assert_eq!(r.outcome, Outcome::Rejected, "{}", r.detail);
    assert!(r.detail.contains("is not for target"), "{}", r.detail);
    // Refused before the ledger: no lease was taken for it.
    assert!(!ex.ledger.ran("t2"));
}

#[tokio::test]
async fn restart_must_target_its_own_service() {
    let mut ex = executor("actions:\n  restart-db: { kind: restart_process, service: db }\n");
    let r = ex.handle(&command("9", "restart-db")).await;
    assert_eq!(r.outcome, Outcome::Rejected, "{}", r.detail);
}

#[tokio::test]
async fn retries_with_backoff_then_succeeds() {
    // Fails twice, then succeeds: a counter file the argv bumps.
    let dir = tempfile::tempdir().unwrap();
    let n = dir.path().join("n");
    let script = format!(
        "n=$(cat {0} 2>/dev/null || echo 0); echo $((n+1)) > {0}; [ $n -ge 2 ]",
        n.display()
    );
    let catalog = format!(
            "actions:\n  flaky: {{ kind: exec, argv: [sh, -c, {script:?}], retry_backoff_ms: 20 }}\n  dead: {{ kind: exec, argv: [\"false\"], retry_backoff_ms: 20 }}\n"
        );
    let mut ex = executor(&catalog);
    let started = std::time::Instant::now();
    let r = ex.handle(&command("r1", "flaky")).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{}", r.detail);
    assert!(r.detail.contains("after 2 failed attempts"), "{}", r.detail);
    // Backoff 20 ms then 40 ms, each from its upper half: at least 30 ms.
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(std::fs::read_to_string(&n).unwrap().trim(), "3");
    // Always failing: 1 try + 3 retries, then a failure naming each.
    let r = ex.handle(&command("r2", "dead")).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(r.detail.starts_with("4 attempts failed"), "{}", r.detail);
}

#[tokio::test]
async fn the_circuit_opens_per_target_after_repeated_failures() {
    let mut ex = executor(CATALOG);
    for i in 0..3 {
        let r = ex.handle(&command(&format!("f{i}"), "fails")).await;
        assert!(
            r.detail.contains("exited") || r.detail.contains("failed"),
            "{}",
            r.detail
        );
    }
    // Open: the next command on this target does not run at all.
    let r = ex.handle(&command("f3", "ok")).await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(r.detail.contains("circuit breaker open"), "{}", r.detail);
    // Another target is unaffected.
    let mut other = command("f4", "ok");
    other.target = EntityId::service("h1", "db");
    assert_eq!(ex.handle(&other).await.outcome, Outcome::Succeeded);
}

#[tokio::test]
async fn a_second_holder_is_fenced_and_a_stale_token_refused() {
    let mut ex = executor(CATALOG);
    let a = ex.handle(&command("a", "ok")).await;
    assert_eq!((a.outcome, a.lease_token), (Outcome::Succeeded, Some(1)));
    let mut b = command("b", "ok");
    b.holder = "s/edge-2".into();
    let r = ex.handle(&b).await;
    assert_eq!(r.outcome, Outcome::Fenced, "{}", r.detail);
    assert!(r.detail.contains("leased to s/edge-1"), "{}", r.detail);
    // The fenced id did not run, so it is not a duplicate later.
    assert!(!ex.ledger.ran("b"));
    let mut stale = command("c", "ok");
    stale.lease_token = Some(0);
    assert_eq!(ex.handle(&stale).await.outcome, Outcome::Fenced);
}
