//! Installs like a daemon. The systemd units of the three roles pass
//! `systemd-analyze verify` (systemd's own checker, from the Debian
//! package). The three roles' Debian packages are built with `cargo deb`
//! from the binaries this test run built (`--no-build --profile dev`: CI
//! builds one profile only; a release is `cargo deb -p vigil-agent`), each
//! with its binary, unit and config files; the agent's is installed with
//! dpkg, its files under /etc/vigil are conffiles, its installed unit
//! verifies, and `/usr/bin/vigil-agent --print-config` reads
//! `/etc/vigil/agent.yaml`; it is purged afterwards. The package test needs
//! root (or passwordless sudo) and cargo-deb (skipped with a notice otherwise; required with
//! VIGIL_REQUIRE_EXTERNAL=1, as `.ci/run` sets).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vigil_tests::external_required;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Verifies `unit`; returns systemd-analyze's complaints (none: empty).
fn verify(unit: &Path) -> anyhow::Result<String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(out.status.success(), "{}: {said}", unit.display());
    Ok(said)
}

fn tool(bin: &str, arg: &str) -> bool {
    Command::new(bin)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The last value of `key` in the `[Service]` section of a unit's text
/// (systemd lets a later line override an earlier one).
fn service_setting(text: &str, key: &str) -> Option<String> {
    let mut section = "";
    let mut value = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if let Some(v) = line
            .strip_prefix(key)
            .and_then(|r| r.trim_start().strip_prefix('='))
        {
            if section == "[Service]" {
                value = Some(v.trim().to_string());
            }
        }
    }
    value
}

/// systemd.kill(5): with `mixed` or `control-group`, every process left in
/// the unit's control group is SIGKILLed when the main process dies, so an
/// agent crash took its supervised services with it. With `process` they
/// stay, and the agent systemd restarts adopts them (tests/supervision.rs
/// shows the adoption after a SIGKILL; systemd as PID 1 cannot run here).
#[test]
fn the_agent_unit_leaves_its_services_to_the_next_agent() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(repo().join("dist/systemd/vigil-agent.service"))?;
    assert_eq!(
        service_setting(&text, "KillMode").as_deref(),
        Some("process")
    );
    assert_eq!(
        service_setting(&text, "Restart").as_deref(),
        Some("on-failure")
    );
    // The pid files the next agent adopts from survive a restart.
    assert_eq!(
        service_setting(&text, "StateDirectory").as_deref(),
        Some("vigil-agent")
    );
    Ok(())
}

#[test]
fn every_unit_verifies() -> anyhow::Result<()> {
    if !tool("systemd-analyze", "--version") {
        assert!(
            !external_required(),
            "VIGIL_REQUIRE_EXTERNAL=1 but systemd-analyze is missing"
        );
        eprintln!("SKIPPED: systemd-analyze is not installed.");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    // The binaries are not installed here: each unit's ExecStart points at
    // an executable of this build instead, every other line as shipped.
    let exe = env!("CARGO_BIN_EXE_vigil-demo-service");
    for role in ["agent", "edge", "cloud"] {
        let name = format!("vigil-{role}.service");
        let text = std::fs::read_to_string(repo().join("dist/systemd").join(&name))?;
        let from = format!("ExecStart=/usr/bin/vigil-{role} ");
        anyhow::ensure!(text.contains(&from), "{name}: {from}");
        anyhow::ensure!(
            text.contains(&format!("--config /etc/vigil/{role}.yaml")),
            "{name} reads /etc/vigil/{role}.yaml"
        );
        let unit = dir.path().join(&name);
        std::fs::write(&unit, text.replace(&from, &format!("ExecStart={exe} ")))?;
        let said = verify(&unit)?;
        anyhow::ensure!(said.is_empty(), "{name}: {said}");
    }
    // And the checker is not blind: a misspelt setting is reported.
    let bad = dir.path().join("bad.service");
    std::fs::write(&bad, format!("[Service]\nExecStart={exe}\nRestartSecs=2\n"))?;
    anyhow::ensure!(verify(&bad)?.contains("RestartSecs"), "a bad key passed");
    Ok(())
}

#[test]
fn the_agent_package_installs_and_reads_its_config_from_etc() -> anyhow::Result<()> {
    let root = uid() == 0
        || tool("sudo", "-n") && admin("true").output().is_ok_and(|o| o.status.success());
    let have = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && have && tool("dpkg", "--version")) {
        assert!(
            !external_required(),
            "VIGIL_REQUIRE_EXTERNAL=1 but not root, or cargo-deb or dpkg is missing"
        );
        eprintln!("SKIPPED: needs root, dpkg and cargo-deb (cargo install cargo-deb).");
        return Ok(());
    }
    let out = tempfile::tempdir()?;
    // Each role's binary of this build's profile, as cargo test built it
    // (each crate has integration tests that run it).
    let mut debs = Vec::new();
    for (name, conffiles) in [
        ("vigil-agent", &["agent.yaml", "catalog.yaml"][..]),
        ("vigil-edge", &["edge.yaml", "policy.yaml"]),
        ("vigil-cloud", &["cloud.yaml"]),
    ] {
        let deb = package(name, out.path())?;
        let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb))?;
        let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
        for f in [
            format!("./usr/bin/{name}"),
            format!("./lib/systemd/system/{name}.service"),
        ]
        .into_iter()
        .chain(conffiles.iter().map(|c| format!("./etc/vigil/{c}")))
        {
            anyhow::ensure!(listing.contains(&f), "{name}: no {f} in\n{listing}");
        }
        debs.push(deb);
    }
    // The agent goes on hosts: nothing of the model or the store in it.
    let tree = run(Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "vigil-agent",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(repo()))?;
    let tree = String::from_utf8_lossy(&tree.stdout).into_owned();
    anyhow::ensure!(
        !tree
            .lines()
            .any(|l| l.starts_with("polars") || l.starts_with("candle")),
        "the agent pulls polars or candle"
    );
    let deb = debs.swap_remove(0);
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb))?;
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    anyhow::ensure!(info.contains("Package: vigil-agent"), "{info}");
    run(admin("dpkg").arg("-i").arg(&deb))?;
    let checked = installed_checks();
    let purged = run(admin("dpkg").args(["--purge", "vigil-agent"]));
    checked?;
    purged?;
    anyhow::ensure!(!Path::new("/usr/bin/vigil-agent").exists(), "purged");
    Ok(())
}

fn installed_checks() -> anyhow::Result<()> {
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "vigil-agent"]))?;
    let conffiles = String::from_utf8_lossy(&conffiles.stdout).into_owned();
    for f in ["/etc/vigil/agent.yaml", "/etc/vigil/catalog.yaml"] {
        anyhow::ensure!(conffiles.contains(f), "{f} is not a conffile: {conffiles}");
    }
    let printed = run(Command::new("/usr/bin/vigil-agent").args([
        "--config",
        "/etc/vigil/agent.yaml",
        "--print-config",
    ]))?;
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    anyhow::ensure!(
        printed.contains("data_dir: /var/lib/vigil-agent"),
        "{printed}"
    );
    anyhow::ensure!(
        printed.contains("catalog: /etc/vigil/catalog.yaml"),
        "{printed}"
    );
    let said = verify(Path::new("/lib/systemd/system/vigil-agent.service"))?;
    anyhow::ensure!(said.is_empty(), "the installed unit: {said}");
    Ok(())
}

/// Builds `name`'s package into `out` from the binary already built.
fn package(name: &str, out: &Path) -> anyhow::Result<PathBuf> {
    run(Command::new(env!("CARGO"))
        .args([
            "deb",
            "-p",
            name,
            "--no-build",
            "--profile",
            "dev",
            "--no-strip",
            "--fast",
            "-o",
        ])
        .arg(out)
        .current_dir(repo()))?;
    std::fs::read_dir(out)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "deb")
                && p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}_")))
        })
        .ok_or_else(|| anyhow::anyhow!("no {name} .deb made"))
}

/// `program` with the rights to install packages: as it is when this
/// process is root, else through passwordless sudo.
fn admin(program: &str) -> Command {
    if uid() == 0 {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").arg(program);
        c
    }
}

/// This process's user id (from /proc, without unsafe code).
fn uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}
