//! Runs remediation commands. A command runs only if it is new (by id), not
//! expired, names a catalog action, fills only declared parameters and, for
//! a restart, targets the service the action is bound to.

use crate::catalog::{Action, ActionKind, Catalog};
use crate::supervisor::Supervisor;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tracing::{info, warn};
use vigil_core::clock::now_ms;
use vigil_core::message::{Command, CommandResult, Outcome};
use vigil_core::EntityId;

/// Remembers this many command ids to refuse replays.
const SEEN_IDS: usize = 4096;

/// Validates and runs commands against the catalog.
pub struct Executor {
    host: String,
    catalog: Catalog,
    supervisor: Arc<Mutex<Supervisor>>,
    max_action: Duration,
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Executor {
    /// An executor for `host` with its catalog and supervised services.
    pub fn new(
        host: String,
        catalog: Catalog,
        supervisor: Arc<Mutex<Supervisor>>,
        max_action: Duration,
    ) -> Self {
        Self {
            host,
            catalog,
            supervisor,
            max_action,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Swaps in a new catalog (hot reload).
    pub fn set_catalog(&mut self, catalog: Catalog) {
        self.catalog = catalog;
    }

    /// Handles one command and says how it ended.
    pub async fn handle(&mut self, cmd: &Command) -> CommandResult {
        let started_ms = now_ms();
        let (outcome, detail) = self.decide_and_run(cmd, started_ms).await;
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
        }
    }

    async fn decide_and_run(&mut self, cmd: &Command, now: i64) -> (Outcome, String) {
        if self.seen.contains(&cmd.id) {
            return (Outcome::Duplicate, "this command id already ran".into());
        }
        if now > cmd.expires_ms {
            return (
                Outcome::Expired,
                format!("expired {} ms ago", now - cmd.expires_ms),
            );
        }
        let Some(action) = self.catalog.actions.get(&cmd.action).cloned() else {
            return (
                Outcome::Rejected,
                format!(
                    "unknown action {:?}: not in this agent's catalog",
                    cmd.action
                ),
            );
        };
        if let Some(bad) = cmd.params.keys().find(|k| !action.params.contains(k)) {
            return (
                Outcome::Rejected,
                format!(
                    "parameter {bad:?} is not declared by action {:?}",
                    cmd.action
                ),
            );
        }
        if let Some((k, _)) = cmd
            .params
            .iter()
            .find(|(_, v)| v.len() > 256 || v.chars().any(char::is_control))
        {
            return (
                Outcome::Rejected,
                format!("parameter {k:?} is too long or has control characters"),
            );
        }
        if let ActionKind::RestartProcess { service } = &action.kind {
            let expected = EntityId::service(&self.host, service);
            if cmd.target != expected {
                return (
                    Outcome::Rejected,
                    format!(
                        "action {:?} restarts {expected}, not {}",
                        cmd.action, cmd.target
                    ),
                );
            }
        }
        self.remember(&cmd.id);
        let limit = Duration::from_secs(action.timeout_secs).min(self.max_action);
        match tokio::time::timeout(limit, self.run(&action, cmd)).await {
            Ok(Ok(detail)) => (Outcome::Succeeded, detail),
            Ok(Err(e)) => (Outcome::Failed, e),
            Err(_) => (
                Outcome::Failed,
                format!("timed out after {} s", limit.as_secs()),
            ),
        }
    }

    fn remember(&mut self, id: &str) {
        if self.order.len() >= SEEN_IDS {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
    }

    async fn run(&self, action: &Action, cmd: &Command) -> Result<String, String> {
        match &action.kind {
            ActionKind::RestartProcess { service } => {
                let pid = self.supervisor.lock().await.restart(service).await?;
                Ok(format!("restarted {service}, new pid {pid}"))
            }
            ActionKind::SystemdRestart { unit, systemctl } => {
                run_argv(&[systemctl.clone(), "restart".into(), unit.clone()]).await
            }
            ActionKind::Exec { argv } => {
                let argv: Vec<String> = argv
                    .iter()
                    .map(|a| {
                        cmd.params
                            .iter()
                            .fold(a.clone(), |s, (k, v)| s.replace(&format!("{{{k}}}"), v))
                    })
                    .collect();
                run_argv(&argv).await
            }
            ActionKind::Log { message } => {
                let text = message.replace("{target}", cmd.target.as_str());
                warn!(target_entity = %cmd.target, policy = %cmd.policy, "NOTIFY: {text}");
                Ok(text)
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
        }
    }

    const CATALOG: &str = r#"
actions:
  ok: { kind: exec, argv: ["true"] }
  fails: { kind: exec, argv: ["false"] }
  slow: { kind: exec, argv: ["sleep", "5"], timeout_secs: 1 }
  echo: { kind: exec, argv: ["test", "{zone}", "=", "eu-1"], params: [zone] }
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
            "actions:\n  restart-nginx: {{ kind: systemd_restart, unit: nginx.service, systemctl: {} }}\n  restart-bad: {{ kind: systemd_restart, unit: nope.service, systemctl: {} }}\n",
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
    async fn restart_must_target_its_own_service() {
        let mut ex = executor("actions:\n  restart-db: { kind: restart_process, service: db }\n");
        let r = ex.handle(&command("9", "restart-db")).await;
        assert_eq!(r.outcome, Outcome::Rejected, "{}", r.detail);
    }
}
