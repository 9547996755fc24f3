//! The action catalog: what each action name means on this host. Commands
//! from the network can only name these actions and fill declared
//! parameters. The kinds themselves live in [`crate::actions`], one file each.

pub use crate::actions::{Action, ActionKind};
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
            a.validate(name, services, &mut e);
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
            ActionKind::SystemdRestart(crate::actions::SystemdRestart {
                unit: "nginx.service".into(),
                systemctl: "systemctl".into()
            })
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
