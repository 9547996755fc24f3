//! The example and demo files shipped in config/ parse and validate, so the
//! documentation cannot drift from the code.

use std::path::PathBuf;
use vigil_agent::AgentConfig;
use vigil_cloud::CloudConfig;
use vigil_core::config::load_validated;
use vigil_edge::EdgeConfig;

fn config(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name)
}

#[test]
fn example_configs_are_valid() {
    let a = load_validated(Some(&config("agent.example.yaml")), AgentConfig::validate).unwrap();
    assert_eq!(a.services.len(), 1);
    let e = load_validated(Some(&config("edge.example.yaml")), EdgeConfig::validate).unwrap();
    assert_eq!(
        e.detector,
        vigil_models::DetectorConfig::default(),
        "the example must show the real detector defaults"
    );
    assert_eq!(
        e.entity_model,
        vigil_edge::entity::model::EntityModelConfig::default(),
        "the example must show the real entity model defaults"
    );
    load_validated(Some(&config("cloud.example.yaml")), CloudConfig::validate).unwrap();
}

#[test]
fn demo_policy_and_catalog_pass_policy_check() {
    let problems =
        vigil::policy_check::check(&[config("demo/policy.yaml"), config("demo/catalog.yaml")]);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn a_broken_config_reports_every_problem_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("edge.yaml");
    std::fs::write(&p, "site: \"a b\"\ntick_ms: 1\nlisten: nowhere\n").unwrap();
    let problems = load_validated(Some(&p), EdgeConfig::validate).unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems.iter().all(|m| m.contains("edge.yaml")),
        "{problems:?}"
    );
}
