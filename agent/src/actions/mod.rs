//! The kinds of action an agent knows, one file each: its catalog fields,
//! its checks and how it runs. The catalog maps names to [`Action`]s; the
//! executor admits a command, then runs [`ActionKind::run`] under its
//! timeout, retries and circuit breaker.

mod alertmanager;
mod exec;
mod fail;
mod http;
mod k8s_scale;
mod log;
mod raw;
mod restart_process;
mod systemd_restart;
pub mod template;

pub use alertmanager::Alertmanager;
pub use exec::Exec;
pub use fail::Fail;
pub use http::Http;
pub use k8s_scale::K8sScale;
pub use log::Log;
pub use restart_process::RestartProcess;
pub use systemd_restart::SystemdRestart;

use crate::supervisor::Supervisor;
use raw::RawAction;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use vigil_core::message::Command;

/// One catalog entry: a kind and what every kind shares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawAction", into = "RawAction")]
pub struct Action {
    /// What it does.
    pub kind: ActionKind,
    /// Parameters a command may fill (`{name}` in argv).
    pub params: Vec<String>,
    /// Entity patterns the action may be commanded for (`*` matches any
    /// run of characters); empty: any well-formed entity. A command for
    /// another target is refused before any lease is taken.
    pub targets: Vec<String>,
    /// Timeout of one attempt, seconds.
    pub timeout_secs: u64,
    /// Attempts after a failed first one (0..=3).
    pub retries: u32,
    /// First retry delay, ms; each next one doubles (1 s, 2 s, 4 s), each
    /// drawn from its upper half so that agents do not retry in lockstep.
    pub retry_backoff_ms: u64,
}

impl Action {
    /// Every problem of the entry `name`; `services` are the supervised
    /// service names.
    pub fn validate(&self, name: &str, services: &[String], e: &mut Vec<String>) {
        let c = Check {
            name,
            params: &self.params,
            services,
        };
        if self.retries > 3 {
            e.push(c.problem(format!("retries {} is more than 3", self.retries)));
        }
        if self.retry_backoff_ms == 0 || self.retry_backoff_ms > 60_000 {
            e.push(c.problem(format!(
                "retry_backoff_ms {} is outside 1..=60000",
                self.retry_backoff_ms
            )));
        }
        if self.timeout_secs == 0 || self.timeout_secs > 3600 {
            e.push(c.problem(format!(
                "timeout_secs {} is outside 1..=3600",
                self.timeout_secs
            )));
        }
        self.kind.validate(&c, e);
    }
}

/// What a kind's checks know about its catalog entry.
pub struct Check<'a> {
    /// The action's name.
    pub name: &'a str,
    /// Its declared parameters.
    pub params: &'a [String],
    /// The supervised services (empty: not known here).
    pub services: &'a [String],
}

impl Check<'_> {
    /// A problem of this action, prefixed with its name (the catalog finds
    /// the line from it).
    pub fn problem(&self, what: impl std::fmt::Display) -> String {
        format!("action {:?}: {what}", self.name)
    }

    /// Every `{name}` the templates use must be a declared parameter (or `target`).
    pub fn placeholders(&self, texts: &[String], e: &mut Vec<String>) {
        for p in template::placeholders(texts) {
            if p != "target" && !self.params.contains(&p) {
                e.push(self.problem(format!("uses {{{p}}} but params does not declare it")));
            }
        }
    }

    /// The URL must be http or https.
    pub fn url(&self, url: &str, e: &mut Vec<String>) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            e.push(self.problem(format!("url {url:?} must start with http:// or https://")));
        }
    }
}

/// What running an action may use.
pub struct Context<'a> {
    /// This agent's host name.
    pub host: &'a str,
    /// The shared HTTP client (connect timeout only; attempts are timed by the executor).
    pub http: &'a reqwest::Client,
    /// The supervised services.
    pub supervisor: &'a Arc<Mutex<Supervisor>>,
    /// The action's timeout of one attempt.
    pub timeout: Duration,
}

/// One kind of action. Each lives in a file of its name.
pub(crate) trait Kind: Sized {
    /// The `kind:` word in the catalog.
    const NAME: &'static str;
    /// The fields of the file form that belong to this kind.
    const FIELDS: &'static [&'static str];
    /// Reads the kind from the file form; `Err` names a missing field.
    fn from_raw(r: &RawAction) -> Result<Self, String>;
    /// Writes the kind's fields into the file form.
    fn into_raw(self, r: &mut RawAction);
    /// Pushes every problem of this entry.
    fn validate(&self, _c: &Check<'_>, _e: &mut Vec<String>) {}
    /// Refuses a command this action must not run for; checked before any lease.
    fn admits(&self, _host: &str, _cmd: &Command) -> Result<(), String> {
        Ok(())
    }
    /// One attempt.
    async fn run(&self, ctx: &Context<'_>, cmd: &Command) -> Result<String, Fail>;
}

/// Declares the kinds once: the enum and every dispatch over it.
macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident),* $(,)?) => {
        /// The kinds of action an agent knows.
        #[derive(Clone, Debug, PartialEq)]
        pub enum ActionKind {
            $($(#[$doc])* $variant($variant),)*
        }

        impl ActionKind {
            /// Every `kind:` word, in the order declared.
            pub const NAMES: &'static [&'static str] = &[$(<$variant as Kind>::NAME),*];

            fn from_raw(r: &RawAction) -> Result<Self, String> {
                $(if r.kind == <$variant as Kind>::NAME {
                    let k = <$variant as Kind>::from_raw(r)?;
                    r.only(<$variant as Kind>::FIELDS)?;
                    return Ok(Self::$variant(k));
                })*
                Err(unknown_kind(&r.kind))
            }

            fn into_raw(self, r: &mut RawAction) {
                match self {
                    $(Self::$variant(k) => {
                        r.kind = <$variant as Kind>::NAME.into();
                        k.into_raw(r)
                    })*
                }
            }

            fn validate(&self, c: &Check<'_>, e: &mut Vec<String>) {
                match self {
                    $(Self::$variant(k) => k.validate(c, e),)*
                }
            }

            /// Refuses a command this action must not run for (a restart
            /// for another service).
            pub fn admits(&self, host: &str, cmd: &Command) -> Result<(), String> {
                match self {
                    $(Self::$variant(k) => k.admits(host, cmd),)*
                }
            }

            /// Runs one attempt.
            pub async fn run(&self, ctx: &Context<'_>, cmd: &Command) -> Result<String, Fail> {
                match self {
                    $(Self::$variant(k) => k.run(ctx, cmd).await,)*
                }
            }
        }
    };
}

kinds! {
    /// Restart a service the agent supervises (kill, then start its argv).
    RestartProcess,
    /// `systemctl restart <unit>`.
    SystemdRestart,
    /// Run an argv (no shell); exit status 0 is success.
    Exec,
    /// Write a notification to the agent log (and the result detail).
    Log,
    /// An HTTP call: a webhook, a load balancer's or DNS API's failover, a scale webhook.
    Http,
    /// Scale a Kubernetes Deployment.
    K8sScale,
    /// Post an alert to Alertmanager's v2 API.
    Alertmanager,
}

fn unknown_kind(kind: &str) -> String {
    let (last, rest) = ActionKind::NAMES.split_last().unwrap_or((&"", &[]));
    format!(
        "unknown action kind {kind:?}; expected {} or {last}",
        rest.join(", ")
    )
}
