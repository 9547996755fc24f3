//! The action catalog: what each action name means on this host. Commands
//! from the network can only name these actions and fill declared parameters.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use vigil_core::config::yaml_error;

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
    /// Timeout in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    30
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
    #[serde(default)]
    params: Vec<String>,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
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
            other => {
                return Err(format!(
                    "unknown action kind {other:?}; expected restart_process, systemd_restart, exec or log"
                ))
            }
        };
        let given = [
            ("service", r.service.is_some()),
            ("unit", r.unit.is_some()),
            ("systemctl", r.systemctl.is_some()),
            ("argv", r.argv.is_some()),
            ("message", r.message.is_some()),
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
            timeout_secs: r.timeout_secs,
        })
    }
}

impl From<Action> for RawAction {
    fn from(a: Action) -> Self {
        let mut r = RawAction {
            params: a.params,
            timeout_secs: a.timeout_secs,
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
        }
        r
    }
}

impl Catalog {
    /// Parses a catalog; YAML errors carry file, line and column.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        let cat: Catalog =
            serde_yaml_ng::from_str(&text).map_err(|e| vec![yaml_error(path, &e)])?;
        let problems: Vec<String> = cat
            .validate(&[])
            .into_iter()
            .map(|p| format!("{}: {p}", path.display()))
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
                ActionKind::Exec { argv } => {
                    for p in placeholders(argv) {
                        if !a.params.contains(&p) {
                            e.push(format!(
                                "action {name:?}: argv uses {{{p}}} but params does not declare it"
                            ));
                        }
                    }
                }
                ActionKind::SystemdRestart { unit, .. } if unit.is_empty() => {
                    e.push(format!("action {name:?}: unit must not be empty"));
                }
                _ => {}
            }
        }
        e
    }
}

fn placeholders(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for arg in argv {
        let mut rest = arg.as_str();
        while let Some(start) = rest.find('{') {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            out.push(rest[start + 1..start + len].to_string());
            rest = &rest[start + len + 1..];
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
