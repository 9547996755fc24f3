//! `vigil policy check FILE...`: validates policy files (top-level
//! `policies:`) and action catalogs (top-level `actions:`), printing every
//! problem with file and line. When catalogs are given too, every action a
//! policy names must be in one of them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Checks each file; returns every problem found (empty when all are good).
pub fn check(files: &[impl AsRef<Path>]) -> Vec<String> {
    checked(files).0
}

/// Every problem found, and whether the policies' actions were checked
/// (only against catalogs given beside them).
pub fn checked(files: &[impl AsRef<Path>]) -> (Vec<String>, bool) {
    let mut problems = Vec::new();
    let mut policies: Vec<(PathBuf, String, vigil_edge::PolicySet)> = Vec::new();
    let mut actions = BTreeSet::new();
    let mut catalogs = Vec::new();
    for f in files {
        let path = f.as_ref();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let value: serde_yaml_ng::Value = match serde_yaml_ng::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(vigil_core::config::yaml_error(path, &e));
                continue;
            }
        };
        if value.get("policies").is_some() {
            match vigil_edge::PolicySet::parse(&text, path) {
                Ok(set) => policies.push((path.to_path_buf(), text, set)),
                Err(p) => problems.extend(p),
            }
        } else if value.get("actions").is_some() {
            catalogs.push(path.display().to_string());
            match vigil_agent::Catalog::parse(&text, path, &[]) {
                Ok(c) => actions.extend(c.actions.into_keys()),
                Err(p) => {
                    // An action with a bad field is still there: its name
                    // counts, or every policy naming it would be wrong too.
                    let names = value["actions"].as_mapping().into_iter().flatten();
                    actions.extend(names.filter_map(|(k, _)| k.as_str().map(str::to_string)));
                    problems.extend(p)
                }
            }
        } else {
            problems.push(format!(
                "{}: neither a policy file (policies:) nor an action catalog (actions:)",
                path.display()
            ));
        }
    }
    let actions_checked = !catalogs.is_empty();
    if actions_checked {
        let why = format!("not in {}", catalogs.join(", "));
        for (path, text, set) in &policies {
            problems.extend(set.action_problems(text, path, |p| {
                (!actions.contains(&p.action)).then(|| why.clone())
            }));
        }
    }
    (problems, actions_checked)
}

/// Said after a clean check given no catalog.
pub const ACTIONS_UNCHECKED: &str = "actions were not checked: give the agents' catalogs too (vigil policy check policy.yaml catalog.yaml)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_demo_files_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("policy.yaml");
        let c = dir.path().join("catalog.yaml");
        std::fs::write(&p, crate::stack::DEMO_POLICY).unwrap();
        std::fs::write(&c, crate::stack::DEMO_CATALOG).unwrap();
        assert!(check(&[&p, &c]).is_empty(), "{:?}", check(&[&p, &c]));
    }

    #[test]
    fn reports_problems_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.yaml");
        let c = dir.path().join("c.yaml");
        let n = dir.path().join("n.yaml");
        std::fs::write(
            &p,
            "policies:\n  - name: x\n    match: { entity: \"sensor/a\" }\n    action: notify\n",
        )
        .unwrap();
        std::fs::write(&c, "actions:\n  a: { kind: exec }\n").unwrap();
        std::fs::write(&n, "hello: 1\n").unwrap();
        let problems = check(&[&p, &c, &n, &dir.path().join("missing.yaml")]);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].contains("p.yaml:2:") && problems[0].contains("agent is required"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("c.yaml:2:") && problems[1].contains("argv"),
            "{problems:?}"
        );
    }

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples")
    }

    #[test]
    fn each_shipped_example_is_valid_against_the_example_catalog() {
        let catalog = examples().join("catalog.yaml");
        for name in [
            "hung-api.yaml",
            "crashing-worker.yaml",
            "pool-exhausted.yaml",
            "zone-lost.yaml",
            "graded-chain.yaml",
        ] {
            let policy = examples().join(name);
            let problems = check(&[&policy, &catalog]);
            assert!(problems.is_empty(), "{name}: {problems:?}");
            let set = vigil_edge::PolicySet::load(&policy).unwrap();
            assert!(set.policies.len() >= 2, "{name}");
        }
    }

    #[test]
    fn unknown_actions_and_catalog_problems_carry_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.yaml");
        let c = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "policies:\n  - name: restart\n    match: { entity: \"service/*/api\" }\n    action: restart-apii\n",
        )
        .unwrap();
        std::fs::write(
            &c,
            "actions:\n  restart-api: { kind: systemd_restart, unit: api.service }\n  scale:\n    kind: k8s_scale\n    namespace: shop\n    deployment: api\n    min_replicas: 5\n    max_replicas: 2\n  hook: { kind: http, url: \"ftp://x/{zone}\", retries: 9 }\n",
        )
        .unwrap();
        let problems = check(&[&p, &c]);
        let has =
            |at: &str, what: &str| problems.iter().any(|e| e.contains(at) && e.contains(what));
        assert!(
            has("p.yaml:4:5:", "action \"restart-apii\" is unknown: not in"),
            "{problems:?}"
        );
        assert!(
            has("c.yaml:3:", "min_replicas 5 is above max_replicas 2"),
            "{problems:?}"
        );
        assert!(has("c.yaml:9:", "retries 9 is more than 3"), "{problems:?}");
        assert!(
            has("c.yaml:9:", "uses {zone} but params does not declare it"),
            "{problems:?}"
        );
        assert!(has("c.yaml:9:", "must start with http://"), "{problems:?}");
        assert_eq!(problems.len(), 5, "{problems:?}");
    }

    #[test]
    fn the_edge_and_the_check_word_a_broken_file_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("policy.yaml");
        let text = crate::stack::DEMO_POLICY.replacen(
            "when: [\"up == 0\", \"http_ok == 0\"]",
            "when: [\"up == 0\", \"http_ok == 0\"",
            1,
        );
        assert_ne!(text, crate::stack::DEMO_POLICY);
        std::fs::write(&p, &text).unwrap();
        let edge = vigil_edge::PolicySet::parse(&text, &p).unwrap_err();
        assert_eq!(check(&[&p]), edge);
        assert_eq!(edge.len(), 1, "{edge:?}");
        assert!(edge[0].contains("did not find expected ','"), "{edge:?}");
    }

    #[test]
    fn a_broken_catalog_adds_no_false_unknown_actions_and_no_catalog_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.yaml");
        let c = dir.path().join("c.yaml");
        std::fs::write(&p, crate::stack::DEMO_POLICY).unwrap();
        let broken =
            crate::stack::DEMO_CATALOG.replace("kind: restart_process", "kind: restart_proces");
        std::fs::write(&c, broken).unwrap();
        let (problems, against) = checked(&[&p, &c]);
        assert!(against);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("restart_proces"), "{problems:?}");
        let (problems, against) = checked(&[&p]);
        assert!(problems.is_empty() && !against, "{problems:?}");
    }
}
