//! Runs remediation commands. A command runs only if it is new (by id), not
//! expired, names a catalog action, fills only declared parameters and, for
//! a restart, targets the service the action is bound to.

use crate::breaker::{BreakerConfig, Breakers};
use crate::catalog::{Action, ActionKind, Catalog};
use crate::ledger::{Ledger, Refusal};
use crate::remote::{self, Fail};
use crate::supervisor::Supervisor;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tracing::{info, warn};
use vigil_core::backoff::Backoff;
use vigil_core::clock::now_ms;
use vigil_core::message::{Command, CommandResult, Outcome};
use vigil_core::EntityId;

/// Reasons a command is refused before anything it asks is looked at
/// (label values of `vigil_agent_commands_refused_total`).
pub const REFUSALS: [&str; 5] = [
    "unsigned",
    "unknown_key",
    "bad_signature",
    "wrong_agent",
    "bad_target",
];

/// Who may command this agent: the edges whose keys it trusts.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// Trusted edge keys.
    pub keys: vigil_core::signing::Keyring,
    /// Run unsigned commands as well (migrations only).
    pub allow_unsigned: bool,
}

/// Validates and runs commands against the catalog.
pub struct Executor {
    host: String,
    trust: Trust,
    catalog: Catalog,
    supervisor: Arc<Mutex<Supervisor>>,
    max_action: Duration,
    ledger: Ledger,
    breakers: Breakers,
    http: reqwest::Client,
}

impl Executor {
    /// An executor for `host` with its catalog, supervised services and the
    /// ledger of commands that ran and leases taken.
    pub fn new(
        host: String,
        catalog: Catalog,
        supervisor: Arc<Mutex<Supervisor>>,
        max_action: Duration,
        ledger: Ledger,
        breaker: BreakerConfig,
    ) -> Self {
        Self {
            host,
            trust: Trust::default(),
            catalog,
            supervisor,
            max_action,
            ledger,
            breakers: Breakers::new(breaker),
            // Per-attempt timeouts wrap every call; this one bounds a hung connect.
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Sets which edges may command this agent.
    pub fn with_trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// Checks that a trusted edge signed `cmd` for this agent and that its
    /// target is well formed; `Err` is (reason label, detail). Nothing of
    /// the command is acted on, leased or remembered before this passes.
    pub fn authenticate(&self, cmd: &Command) -> Result<(), (&'static str, String)> {
        use vigil_core::signing::SignError;
        if let Err(why) = cmd.target.validate() {
            return Err(("bad_target", format!("target {why}")));
        }
        match cmd.verify(&self.trust.keys) {
            Ok(_) if cmd.to != self.host => Err((
                "wrong_agent",
                format!("signed for agent {:?}, not {:?}", cmd.to, self.host),
            )),
            Ok(_) => Ok(()),
            Err(SignError::Unsigned) if self.trust.allow_unsigned => Ok(()),
            Err(SignError::Unsigned) => Err((
                "unsigned",
                "unsigned command refused: no trusted edge signed it".into(),
            )),
            Err(SignError::UnknownKey(k)) => Err((
                "unknown_key",
                format!("signed by key {k}, which this agent does not trust"),
            )),
            Err(e) => Err(("bad_signature", e.to_string())),
        }
    }

    /// The result reported for a command refused by [`Self::authenticate`].
    pub fn refused(&self, cmd: &Command, detail: String) -> CommandResult {
        let now = now_ms();
        CommandResult {
            command_id: cmd.id.clone(),
            host: self.host.clone(),
            action: cmd.action.clone(),
            target: cmd.target.clone(),
            outcome: Outcome::Rejected,
            detail,
            started_ms: now,
            finished_ms: now,
            lease_token: None,
        }
    }

    /// Swaps in a new catalog (hot reload).
    pub fn set_catalog(&mut self, catalog: Catalog) {
        self.catalog = catalog;
    }

    /// Handles one command and says how it ended.
    pub async fn handle(&mut self, cmd: &Command) -> CommandResult {
        let started_ms = now_ms();
        let (outcome, detail, lease_token) = match self.admit(cmd, started_ms) {
            Ok((action, token)) => {
                let (outcome, detail) = self.run_guarded(&action, cmd).await;
                (outcome, detail, Some(token))
            }
            Err((outcome, detail)) => (outcome, detail, None),
        };
        match outcome {
            Outcome::Succeeded => {
                info!(id = %cmd.id, action = %cmd.action, target = %cmd.target, %detail, "Action succeeded.")
            }
            _ => {
                warn!(id = %cmd.id, action = %cmd.action, target = %cmd.target, outcome = outcome.as_str(), %detail, "Action did not succeed.")
            }
        }
        CommandResult {
            command_id: cmd.id.clone(),
            host: self.host.clone(),
            action: cmd.action.clone(),
            target: cmd.target.clone(),
            outcome,
            detail,
            started_ms,
            finished_ms: now_ms(),
            lease_token,
        }
    }

    /// Every check a command must pass; on success the command is recorded
    /// as run and its lease taken, and the action and token come back.
    fn admit(&mut self, cmd: &Command, now: i64) -> Result<(Action, u64), (Outcome, String)> {
        let action = self.check(cmd, now)?;
        let token = self.ledger.admit(cmd, now).map_err(|r| match r {
            Refusal::Duplicate => (Outcome::Duplicate, "this command id already ran".into()),
            Refusal::Fenced(why) => (Outcome::Fenced, why),
        })?;
        if let Err(e) = self.ledger.save() {
            // Run anyway: refusing would stop every repair on a full disk;
            // the command's expiry still bounds a replay after a restart.
            warn!(error = %e, "Could not save the command ledger.");
        }
        Ok((action, token))
    }

    fn check(&self, cmd: &Command, now: i64) -> Result<Action, (Outcome, String)> {
        if self.ledger.ran(&cmd.id) {
            return Err((Outcome::Duplicate, "this command id already ran".into()));
        }
        if now > cmd.expires_ms {
            return Err((
                Outcome::Expired,
                format!("expired {} ms ago", now - cmd.expires_ms),
            ));
        }
        let reject = |why: String| Err((Outcome::Rejected, why));
        let Some(action) = self.catalog.actions.get(&cmd.action).cloned() else {
            return reject(format!(
                "unknown action {:?}: not in this agent's catalog",
                cmd.action
            ));
        };
        if let Some(bad) = cmd.params.keys().find(|k| !action.params.contains(k)) {
            return reject(format!(
                "parameter {bad:?} is not declared by action {:?}",
                cmd.action
            ));
        }
        if let Some((k, _)) = cmd
            .params
            .iter()
            .find(|(_, v)| v.len() > 256 || v.chars().any(char::is_control))
        {
            return reject(format!(
                "parameter {k:?} is too long or has control characters"
            ));
        }
        if !action.targets.is_empty()
            && !action
                .targets
                .iter()
                .any(|p| vigil_core::series::glob(p, cmd.target.as_str()))
        {
            return reject(format!(
                "action {:?} is not for target {} (its catalog entry allows {:?})",
                cmd.action, cmd.target, action.targets
            ));
        }
        if let ActionKind::RestartProcess { service } = &action.kind {
            let expected = EntityId::service(&self.host, service);
            if cmd.target != expected {
                return reject(format!(
                    "action {:?} restarts {expected}, not {}",
                    cmd.action, cmd.target
                ));
            }
        }
        Ok(action)
    }

    /// Runs an admitted action behind its target's circuit breaker, each
    /// attempt under the timeout, retrying with backoff and jitter.
    async fn run_guarded(&mut self, action: &Action, cmd: &Command) -> (Outcome, String) {
        let target = cmd.target.as_str();
        if let Err(why) = self.breakers.allow(target, now_ms()) {
            return (Outcome::Failed, why);
        }
        let limit = Duration::from_secs(action.timeout_secs).min(self.max_action);
        let base = Duration::from_millis(action.retry_backoff_ms);
        let mut backoff = Backoff::new(base, base * 4);
        let mut tries = Vec::new();
        let result = loop {
            let attempt = match tokio::time::timeout(limit, self.run(action, cmd)).await {
                Ok(r) => r,
                Err(_) => Err(Fail::Retry(format!(
                    "timed out after {} s",
                    limit.as_secs()
                ))),
            };
            match attempt {
                Ok(detail) => break Ok(detail),
                Err(Fail::Retry(m)) if tries.len() < action.retries as usize => {
                    let wait = backoff.next_delay();
                    warn!(id = %cmd.id, action = %cmd.action, attempt = tries.len() + 1, error = %m, wait_ms = wait.as_millis() as u64, "Action attempt failed; retrying.");
                    tries.push(m);
                    tokio::time::sleep(wait).await;
                }
                Err(f) => {
                    tries.push(f.message().to_string());
                    break Err(());
                }
            }
        };
        self.breakers.record(target, result.is_ok(), now_ms());
        match result {
            Ok(detail) if tries.is_empty() => (Outcome::Succeeded, detail),
            Ok(detail) => (
                Outcome::Succeeded,
                format!("{detail} (after {} failed attempts)", tries.len()),
            ),
            Err(()) => (
                Outcome::Failed,
                format!("{} attempts failed: {}", tries.len(), tries.join("; ")),
            ),
        }
    }

    async fn run(&self, action: &Action, cmd: &Command) -> Result<String, Fail> {
        let retry = Fail::Retry;
        match &action.kind {
            ActionKind::RestartProcess { service } => {
                let pid = self
                    .supervisor
                    .lock()
                    .await
                    .restart(service)
                    .await
                    .map_err(retry)?;
                Ok(format!("restarted {service}, new pid {pid}"))
            }
            ActionKind::SystemdRestart { unit, systemctl } => {
                run_argv(&[systemctl.clone(), "restart".into(), unit.clone()])
                    .await
                    .map_err(retry)
            }
            ActionKind::Exec { argv } => {
                let argv: Vec<String> = argv
                    .iter()
                    .map(|a| remote::fill(a, cmd, str::to_string))
                    .collect();
                run_argv(&argv).await.map_err(retry)
            }
            ActionKind::Log { message } => {
                let text = remote::fill(message, cmd, str::to_string);
                warn!(target_entity = %cmd.target, policy = %cmd.policy, "NOTIFY: {text}");
                Ok(text)
            }
            ActionKind::Http {
                method,
                url,
                headers,
                body,
            } => {
                remote::http(
                    &self.http,
                    method,
                    url,
                    headers,
                    body.as_deref(),
                    cmd,
                    &self.host,
                )
                .await
            }
            ActionKind::K8sScale(k) => {
                remote::k8s_scale(k, Duration::from_secs(action.timeout_secs)).await
            }
            ActionKind::Alertmanager {
                url,
                labels,
                annotations,
            } => {
                remote::alertmanager(
                    &self.http,
                    url,
                    labels,
                    annotations,
                    cmd,
                    &self.host,
                    now_ms(),
                )
                .await
            }
        }
    }
}

async fn run_argv(argv: &[String]) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("empty argv")?;
    let out = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running {program}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(format!("{program} exited 0"))
    } else {
        Err(format!(
            "{program} failed ({}): {}",
            out.status,
            stderr.trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
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
}
