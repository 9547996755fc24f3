//! The shipped Prometheus config and alert rules pass `promtool check`, and
//! the rules' own unit tests (`dashboards/alerts.test.yml`) pass
//! `promtool test rules`. Skipped with a notice when promtool is absent;
//! required with VIGIL_REQUIRE_EXTERNAL=1 (CI installs Prometheus).

#![cfg(test)]

use std::path::Path;
use std::process::Command;

fn promtool() -> Option<Command> {
    let ok = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| Command::new("promtool"))
}

#[test]
fn config_and_alert_rules_pass_promtool_and_their_unit_tests() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    if promtool().is_none() {
        assert!(
            !vigil_tests::external_required(),
            "VIGIL_REQUIRE_EXTERNAL=1 but promtool is not installed"
        );
        eprintln!("SKIPPED: promtool is not on PATH; install Prometheus (apt-get install prometheus) to run this test.");
        return Ok(());
    }
    for args in [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = promtool()
            .ok_or_else(|| anyhow::anyhow!("promtool went away"))?
            .args(args)
            .current_dir(&dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
