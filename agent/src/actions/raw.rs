//! The file form of an action: one flat map, so that unknown fields are
//! refused by serde and a field of another kind is named as such.

use super::{Action, ActionKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemctl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
}

fn default_timeout_secs() -> u64 {
    30
}
fn default_retries() -> u32 {
    3
}
fn default_retry_backoff_ms() -> u64 {
    1000
}

impl RawAction {
    /// The value of a field the kind requires.
    pub fn need<T: Clone>(&self, v: &Option<T>, field: &str) -> Result<T, String> {
        v.clone()
            .ok_or_else(|| format!("kind {} needs `{field}`", self.kind))
    }

    /// Refuses a kind-specific field set that is not one of `allowed`.
    pub fn only(&self, allowed: &[&str]) -> Result<(), String> {
        let given = [
            ("service", self.service.is_some()),
            ("unit", self.unit.is_some()),
            ("systemctl", self.systemctl.is_some()),
            ("argv", self.argv.is_some()),
            ("message", self.message.is_some()),
            ("method", self.method.is_some()),
            ("url", self.url.is_some()),
            ("headers", self.headers.is_some()),
            ("body", self.body.is_some()),
            ("api_server", self.api_server.is_some()),
            ("namespace", self.namespace.is_some()),
            ("deployment", self.deployment.is_some()),
            ("token_file", self.token_file.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("min_replicas", self.min_replicas.is_some()),
            ("max_replicas", self.max_replicas.is_some()),
            ("step", self.step.is_some()),
            ("labels", self.labels.is_some()),
            ("annotations", self.annotations.is_some()),
        ];
        match given.iter().find(|(f, set)| *set && !allowed.contains(f)) {
            Some((field, _)) => Err(format!(
                "field `{field}` does not belong to kind {}",
                self.kind
            )),
            None => Ok(()),
        }
    }
}

impl TryFrom<RawAction> for Action {
    type Error = String;
    fn try_from(r: RawAction) -> Result<Self, String> {
        let kind = ActionKind::from_raw(&r)?;
        Ok(Action {
            kind,
            params: r.params,
            targets: r.targets,
            timeout_secs: r.timeout_secs,
            retries: r.retries,
            retry_backoff_ms: r.retry_backoff_ms,
        })
    }
}

impl From<Action> for RawAction {
    fn from(a: Action) -> Self {
        let mut r = RawAction {
            params: a.params,
            targets: a.targets,
            timeout_secs: a.timeout_secs,
            retries: a.retries,
            retry_backoff_ms: a.retry_backoff_ms,
            ..Default::default()
        };
        a.kind.into_raw(&mut r);
        r
    }
}
