//! The action catalog: what each action name means on this host. Commands
//! from the network can only name these actions and fill declared parameters.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The catalog file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Actions by name.
    #[serde(default)]
    pub actions: BTreeMap<String, Action>,
}

/// One action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawAction", into = "RawAction")]
pub struct Action {
    /// What it does.
    pub kind: ActionKind,
    /// Parameters a command may fill (`{name}` in argv).
    #[serde(default)]
    pub params: Vec<String>,
    /// Entity patterns the action may be commanded for (`*` matches any
    /// run of characters); empty: any well-formed entity. A command for
    /// another target is refused before any lease is taken.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Timeout of one attempt, seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Attempts after a failed first one (0..=3).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First retry delay, ms; each next one doubles (1 s, 2 s, 4 s), each
    /// drawn from its upper half so that agents do not retry in lockstep.
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

/// Scale a Kubernetes Deployment through its scale subresource.
#[derive(Clone, Debug, PartialEq)]
pub struct K8sScale {
    /// API server URL; default: the in-cluster one
    /// (`https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`).
    pub api_server: Option<String>,
    /// Namespace of the Deployment.
    pub namespace: String,
    /// Deployment name.
    pub deployment: String,
    /// Bearer token file; default: the in-cluster service account's.
    pub token_file: Option<std::path::PathBuf>,
    /// CA bundle (PEM) that signs the API server's certificate; default: the
    /// in-cluster service account's, when present.
    pub ca_file: Option<std::path::PathBuf>,
    /// Never scale below this many replicas.
    pub min_replicas: u32,
    /// Never scale above this many replicas.
    pub max_replicas: u32,
    /// Replicas added per action (negative scales down).
    pub step: i32,
}

/// The kinds of action an agent knows.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionKind {
    /// Restart a service the agent supervises (kill, then start its argv).
    RestartProcess {
        /// Service name from the agent config.
        service: String,
    },
    /// `systemctl restart <unit>`.
    SystemdRestart {
        /// Unit name.
        unit: String,
        /// Path to systemctl.
        systemctl: String,
    },
    /// Run an argv (no shell); exit status 0 is success.
    Exec {
        /// Program and arguments; `{param}` is replaced by a declared parameter.
        argv: Vec<String>,
    },
    /// Write a notification to the agent log (and the result detail).
    Log {
        /// Message; `{target}` is replaced by the command's target.
        message: String,
    },
    /// An HTTP call: a generic JSON webhook, a load balancer's or DNS API's
    /// failover endpoint, a scale webhook. A 2xx status is success.
    Http {
        /// Method (default POST).
        method: String,
        /// URL; `{param}` and `{target}` are filled, percent-encoded.
        url: String,
        /// Extra headers (e.g. `Authorization`).
        headers: BTreeMap<String, String>,
        /// Body template; `{param}` and `{target}` are filled, JSON-escaped.
        /// Default: a JSON object describing the command.
        body: Option<String>,
    },
    /// Scale a Kubernetes Deployment.
    K8sScale(K8sScale),
    /// Post an alert to Alertmanager's v2 API (`POST /api/v2/alerts`).
    Alertmanager {
        /// Alertmanager's base URL, e.g. `http://alertmanager:9093`.
        url: String,
        /// Alert labels; `alertname` defaults to `VigilRemediation`, and
        /// `target`, `policy` and `host` are added.
        labels: BTreeMap<String, String>,
        /// Annotations (`summary`, `description`, ...); `{target}` is filled.
        annotations: BTreeMap<String, String>,
    },
}

/// The file form of an action: one flat map, so unknown fields are refused.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    systemctl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    argv: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_file: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    targets: Vec<String>,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default = "default_retry_backoff_ms")]
    retry_backoff_ms: u64,
}

impl TryFrom<RawAction> for Action {
    type Error = String;
    fn try_from(r: RawAction) -> Result<Self, String> {
        let need =
            |v: Option<String>, field: &str| v.ok_or(format!("kind {} needs `{field}`", r.kind));
        let (allowed, kind): (&[&str], ActionKind) = match r.kind.as_str() {
            "restart_process" => (&["service"], ActionKind::RestartProcess { service: need(r.service.clone(), "service")? }),
            "systemd_restart" => (
                &["unit", "systemctl"],
                ActionKind::SystemdRestart {
                    unit: need(r.unit.clone(), "unit")?,
                    systemctl: r.systemctl.clone().unwrap_or_else(|| "systemctl".into()),
                },
            ),
            "exec" => (&["argv"], ActionKind::Exec { argv: r.argv.clone().ok_or("kind exec needs `argv`")? }),
            "log" => (&["message"], ActionKind::Log { message: need(r.message.clone(), "message")? }),
            "http" => (
                &["method", "url", "headers", "body"],
                ActionKind::Http {
                    method: r.method.clone().unwrap_or_else(|| "POST".into()),
                    url: need(r.url.clone(), "url")?,
                    headers: r.headers.clone().unwrap_or_default(),
                    body: r.body.clone(),
                },
            ),
            "k8s_scale" => (
                &["api_server", "namespace", "deployment", "token_file", "ca_file", "min_replicas", "max_replicas", "step"],
                ActionKind::K8sScale(K8sScale {
                    api_server: r.api_server.clone(),
                    namespace: need(r.namespace.clone(), "namespace")?,
                    deployment: need(r.deployment.clone(), "deployment")?,
                    token_file: r.token_file.clone(),
                    ca_file: r.ca_file.clone(),
                    min_replicas: r.min_replicas.unwrap_or(1),
                    max_replicas: r.max_replicas.ok_or("kind k8s_scale needs `max_replicas`")?,
                    step: r.step.unwrap_or(1),
                }),
            ),
            "alertmanager" => (
                &["url", "labels", "annotations"],
                ActionKind::Alertmanager {
                    url: need(r.url.clone(), "url")?,
                    labels: r.labels.clone().unwrap_or_default(),
                    annotations: r.annotations.clone().unwrap_or_default(),
                },
            ),
            other => {
                return Err(format!(
                    "unknown action kind {other:?}; expected restart_process, systemd_restart, exec, log, http, k8s_scale or alertmanager"
                ))
            }
        };
        let given = [
            ("service", r.service.is_some()),
            ("unit", r.unit.is_some()),
            ("systemctl", r.systemctl.is_some()),
            ("argv", r.argv.is_some()),
            ("message", r.message.is_some()),
            ("method", r.method.is_some()),
            ("url", r.url.is_some()),
            ("headers", r.headers.is_some()),
            ("body", r.body.is_some()),
            ("api_server", r.api_server.is_some()),
            ("namespace", r.namespace.is_some()),
            ("deployment", r.deployment.is_some()),
            ("token_file", r.token_file.is_some()),
            ("ca_file", r.ca_file.is_some()),
            ("min_replicas", r.min_replicas.is_some()),
            ("max_replicas", r.max_replicas.is_some()),
            ("step", r.step.is_some()),
            ("labels", r.labels.is_some()),
            ("annotations", r.annotations.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(f, set)| *set && !allowed.contains(f)) {
            return Err(format!(
                "field `{field}` does not belong to kind {}",
                r.kind
            ));
        }
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
        match a.kind {
            ActionKind::RestartProcess { service } => {
                (r.kind, r.service) = ("restart_process".into(), Some(service))
            }
            ActionKind::SystemdRestart { unit, systemctl } => {
                (r.kind, r.unit, r.systemctl) =
                    ("systemd_restart".into(), Some(unit), Some(systemctl))
            }
            ActionKind::Exec { argv } => (r.kind, r.argv) = ("exec".into(), Some(argv)),
            ActionKind::Log { message } => (r.kind, r.message) = ("log".into(), Some(message)),
            ActionKind::Http {
                method,
                url,
                headers,
                body,
            } => {
                (r.kind, r.method, r.url, r.body) = ("http".into(), Some(method), Some(url), body);
                r.headers = Some(headers);
            }
            ActionKind::K8sScale(k) => {
                r.kind = "k8s_scale".into();
                (r.api_server, r.namespace, r.deployment) =
                    (k.api_server, Some(k.namespace), Some(k.deployment));
                (r.token_file, r.ca_file) = (k.token_file, k.ca_file);
                (r.min_replicas, r.max_replicas, r.step) =
                    (Some(k.min_replicas), Some(k.max_replicas), Some(k.step));
            }
            ActionKind::Alertmanager {
                url,
                labels,
                annotations,
            } => {
                (r.kind, r.url) = ("alertmanager".into(), Some(url));
                (r.labels, r.annotations) = (Some(labels), Some(annotations));
            }
        }
        r
    }
}

impl Catalog {
    /// Loads a catalog; YAML errors carry file, line and column.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        Self::parse(&text, path, &[])
    }

    /// Parses catalog text and checks it against the supervised `services`;
    /// `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, services: &[String]) -> Result<Self, Vec<String>> {
        let cat: Catalog = match vigil_core::config::parse_all(text, path) {
            (Some(c), problems) if problems.is_empty() => c,
            (_, problems) => return Err(problems),
        };
        let lines: Vec<&str> = text.lines().collect();
        let problems: Vec<String> = cat
            .validate(services)
            .into_iter()
            .map(|p| locate(path, &lines, &p))
            .collect();
        if problems.is_empty() {
            Ok(cat)
        } else {
            Err(problems)
        }
    }

    /// Every semantic problem. `services` are the supervised service names;
    /// when non-empty, restart actions must name one of them.
    pub fn validate(&self, services: &[String]) -> Vec<String> {
        let mut e = Vec::new();
        for (name, a) in &self.actions {
            if !vigil_core::topic::valid_level(name) {
                e.push(format!(
                    "action {name:?}: name must be 1-64 of [A-Za-z0-9._-]"
                ));
            }
            if a.retries > 3 {
                e.push(format!(
                    "action {name:?}: retries {} is more than 3",
                    a.retries
                ));
            }
            if a.retry_backoff_ms == 0 || a.retry_backoff_ms > 60_000 {
                e.push(format!(
                    "action {name:?}: retry_backoff_ms {} is outside 1..=60000",
                    a.retry_backoff_ms
                ));
            }
            if a.timeout_secs == 0 || a.timeout_secs > 3600 {
                e.push(format!(
                    "action {name:?}: timeout_secs {} is outside 1..=3600",
                    a.timeout_secs
                ));
            }
            match &a.kind {
                ActionKind::RestartProcess { service }
                    if !services.is_empty() && !services.contains(service) =>
                {
                    e.push(format!("action {name:?}: service {service:?} is not a supervised service ({services:?})"));
                }
                ActionKind::Exec { argv } if argv.is_empty() => {
                    e.push(format!("action {name:?}: argv must not be empty"));
                }
                ActionKind::Exec { argv } => check_placeholders(name, argv, &a.params, &mut e),
                ActionKind::SystemdRestart { unit, .. } if unit.is_empty() => {
                    e.push(format!("action {name:?}: unit must not be empty"));
                }
                ActionKind::Http {
                    url, body, method, ..
                } => {
                    let mut texts = vec![url.clone()];
                    texts.extend(body.clone());
                    check_placeholders(name, &texts, &a.params, &mut e);
                    check_url(name, url, &mut e);
                    if reqwest::Method::from_bytes(method.as_bytes()).is_err() {
                        e.push(format!(
                            "action {name:?}: method {method:?} is not an HTTP method"
                        ));
                    }
                }
                ActionKind::Alertmanager { url, .. } => check_url(name, url, &mut e),
                ActionKind::K8sScale(k) => {
                    if k.min_replicas > k.max_replicas {
                        e.push(format!(
                            "action {name:?}: min_replicas {} is above max_replicas {}",
                            k.min_replicas, k.max_replicas
                        ));
                    }
                    if k.step == 0 {
                        e.push(format!("action {name:?}: step must not be 0"));
                    }
                    if let Some(url) = &k.api_server {
                        check_url(name, url, &mut e);
                    }
                }
                _ => {}
            }
        }
        e
    }
}

/// Prefixes a problem (`action "name": ...`) with the line where that action
/// is defined.
fn locate(path: &Path, lines: &[&str], problem: &str) -> String {
    let name = problem
        .strip_prefix("action \"")
        .and_then(|rest| rest.split('"').next());
    let line = name.and_then(|n| {
        let keys = [format!("{n}:"), format!("\"{n}\":")];
        lines
            .iter()
            .position(|l| keys.iter().any(|k| l.trim_start().starts_with(k.as_str())))
    });
    match line {
        Some(i) => format!("{}:{}: {problem}", path.display(), i + 1),
        None => format!("{}: {problem}", path.display()),
    }
}

/// Every `{name}` a template uses must be a declared parameter (or `target`).
fn check_placeholders(name: &str, texts: &[String], params: &[String], e: &mut Vec<String>) {
    for p in placeholders(texts) {
        if p != "target" && !params.contains(&p) {
            e.push(format!(
                "action {name:?}: uses {{{p}}} but params does not declare it"
            ));
        }
    }
}

fn check_url(name: &str, url: &str, e: &mut Vec<String>) {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        e.push(format!(
            "action {name:?}: url {url:?} must start with http:// or https://"
        ));
    }
}

/// The `{name}` placeholders in templates: a name of letters, digits, `_`
/// or `-` between braces (other braces, as in a JSON body, are text).
fn placeholders(texts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for text in texts {
        let mut rest = text.as_str();
        while let Some(start) = rest.find('{') {
            rest = &rest[start + 1..];
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            if len > 0 && rest[len..].starts_with('}') {
                out.push(rest[..len].to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let text = r#"
actions:
  restart-web: { kind: restart_process, service: web, timeout_secs: 10 }
  restart-nginx: { kind: systemd_restart, unit: nginx.service }
  failover: { kind: exec, argv: ["/bin/echo", "zone={zone}"], params: [zone] }
  page: { kind: log, message: "look at {target}" }
"#;
        let c: Catalog = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(c.actions.len(), 4);
        assert!(
            c.validate(&["web".into()]).is_empty(),
            "{:?}",
            c.validate(&[])
        );
        assert_eq!(
            c.actions["restart-nginx"].kind,
            ActionKind::SystemdRestart {
                unit: "nginx.service".into(),
                systemctl: "systemctl".into()
            }
        );
    }

    #[test]
    fn finds_every_problem() {
        let text = r#"
actions:
  a: { kind: restart_process, service: nope }
  b: { kind: exec, argv: ["/bin/x", "{undeclared}"] }
  c: { kind: exec, argv: [], timeout_secs: 0 }
"#;
        let c: Catalog = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(
            c.validate(&["web".into()]).len(),
            4,
            "{:?}",
            c.validate(&["web".into()])
        );
    }

    #[test]
    fn round_trips_and_refuses_stray_fields() {
        let c: Catalog =
            serde_yaml_ng::from_str("actions:\n  a: { kind: log, message: hi }\n").unwrap();
        let text = serde_yaml_ng::to_string(&c).unwrap();
        assert_eq!(serde_yaml_ng::from_str::<Catalog>(&text).unwrap(), c);
        let err = serde_yaml_ng::from_str::<Catalog>(
            "actions:\n  a: { kind: log, message: hi, unit: x }\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        let err = serde_yaml_ng::from_str::<Catalog>("actions:\n  a: { kind: log, mesage: hi }\n")
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn unknown_kind_is_a_located_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.yaml");
        std::fs::write(
            &p,
            "actions:\n  x:\n    kind: shell\n    argv: [rm, -rf, /]\n",
        )
        .unwrap();
        let err = Catalog::load(&p).unwrap_err();
        // serde reports a converted value at the line of its map entry.
        assert!(err[0].contains("catalog.yaml:2:"), "{err:?}");
        assert!(err[0].contains("unknown action kind \"shell\""), "{err:?}");
    }
}
