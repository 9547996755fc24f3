//! `vigil policy check FILE...`: validates policy files (top-level
//! `policies:`) and action catalogs (top-level `actions:`), printing every
//! problem with file and line.

use std::path::Path;

/// Checks each file; returns every problem found (empty when all are good).
pub fn check(files: &[impl AsRef<Path>]) -> Vec<String> {
    let mut problems = Vec::new();
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
            if let Err(p) = vigil_edge::PolicySet::parse(&text, path) {
                problems.extend(p);
            }
        } else if value.get("actions").is_some() {
            if let Err(p) = vigil_agent::Catalog::load(path) {
                problems.extend(p);
            }
        } else {
            problems.push(format!(
                "{}: neither a policy file (policies:) nor an action catalog (actions:)",
                path.display()
            ));
        }
    }
    problems
}

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
}
