//! Runs remediation commands. A command runs only if it is new (by id), not
//! expired, names a catalog action, fills only declared parameters and, for
//! a restart, targets the service the action is bound to.

use crate::actions::{Action, Context, Fail};
use crate::breaker::{BreakerConfig, Breakers};
use crate::catalog::Catalog;
use crate::ledger::{Ledger, Refusal};
use crate::supervisor::Supervisor;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tracing::{info, warn};
use vigil_core::backoff::Backoff;
use vigil_core::clock::now_ms;
use vigil_core::message::{Command, CommandResult, Outcome};

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
        if let Err(why) = action.kind.admits(&self.host, cmd) {
            return reject(why);
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
            let ctx = Context {
                host: &self.host,
                http: &self.http,
                supervisor: &self.supervisor,
                timeout: Duration::from_secs(action.timeout_secs),
            };
            let attempt = match tokio::time::timeout(limit, action.kind.run(&ctx, cmd)).await {
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
}

#[cfg(test)]
mod tests;
