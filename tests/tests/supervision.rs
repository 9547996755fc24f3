//! Supervision survives the supervisor: the agent is killed with SIGKILL
//! while its service runs; the service, in its own process group, keeps
//! serving; the restarted agent adopts it through its pid file (one copy
//! runs, never two), and a later crash is healed through the edge. The
//! agent runs as a child process of this test binary so it can be killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vigil::stack::{DEMO_CATALOG, DEMO_POLICY};
use vigil_tests::{get_json, wait_for};

const SERVICE: &str = env!("CARGO_BIN_EXE_vigil-demo-service");

/// Pids of running demo services listening on `port` (zombies excluded).
fn copies(port: u16) -> Vec<u32> {
    let want = format!("{SERVICE}\0--port\0{port}\0");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd) == want && !stat.contains(") Z ") {
            out.push(pid);
        }
    }
    out
}

fn spawn_agent(cfg: &vigil_agent::AgentConfig) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("VIGIL_CHILD", "agent")
        .env("VIGIL_CHILD_CONFIG", serde_json::to_string(cfg)?)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn signal(child: &mut Child, sig: &str) -> anyhow::Result<()> {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill {sig} failed");
    child.wait()?;
    Ok(())
}

async fn start_edge(
    dir: &Path,
    port: u16,
    stop: CancellationToken,
) -> anyhow::Result<(String, PathBuf)> {
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, DEMO_POLICY)?;
    let mut cfg = vigil_edge::EdgeConfig {
        site: "demo".into(),
        tick_ms: 500,
        data_dir: dir.join("edge"),
        policy: policy.clone(),
        ..Default::default()
    };
    cfg.mqtt.port = port;
    let key = cfg.command_key_path();
    vigil_core::signing::SecretKey::read_or_create(&key).map_err(anyhow::Error::msg)?;
    let set = vigil_edge::PolicySet::load(&policy).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
    let listener = vigil_core::telemetry::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(vigil_edge::run(
        cfg,
        set,
        listener,
        vigil_edge::EdgeMetrics::new()?,
        stop,
    ));
    Ok((url, key.with_extension("pub")))
}

/// An agent supervising the demo service on `port`, trusting the edge's key.
fn agent_config(
    dir: &std::path::Path,
    broker: u16,
    port: u16,
    edge_pub: &std::path::Path,
) -> anyhow::Result<vigil_agent::AgentConfig> {
    let catalog = dir.join("catalog.yaml");
    std::fs::write(&catalog, DEMO_CATALOG)?;
    let health = format!("http://127.0.0.1:{port}/healthz");
    let listen = format!("127.0.0.1:{}", vigil::broker::free_port()?);
    let mut cfg = vigil_agent::AgentConfig {
        site: "demo".into(),
        host: "demo-host".into(),
        interval_secs: 0.5,
        catalog,
        listen: listen.clone(),
        disks: vec![],
        data_dir: dir.join("agent"),
        trusted_edge_keys: vec![edge_pub.display().to_string()],
        services: vec![vigil_agent::config::ServiceConfig {
            name: "demo-web".into(),
            argv: vec![SERVICE.into(), "--port".into(), port.to_string()],
            env: vec![],
            pid_file: None,
            health_url: Some(health.clone()),
            health_timeout_ms: 800,
            ..Default::default()
        }],
        ..Default::default()
    };
    cfg.mqtt.port = broker;
    Ok(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_agent_leaves_one_copy_and_its_successor_heals_the_next_crash(
) -> anyhow::Result<()> {
    let broker = vigil::broker::start(0, 1 << 20)?.port();
    let dir = tempfile::tempdir()?;
    let stop = CancellationToken::new();
    let (edge, edge_pub) = start_edge(dir.path(), broker, stop.clone()).await?;
    let port = vigil::broker::free_port()?;
    let health = format!("http://127.0.0.1:{port}/healthz");
    let cfg = agent_config(dir.path(), broker, port, &edge_pub)?;
    let listen = cfg.listen.clone();
    let services = format!("http://{listen}/api/v1/services");
    let service_pid = || async {
        let v = get_json(&services).await.ok()?;
        v.as_array()?.first()?["pid"].as_u64().map(|p| p as u32)
    };

    let mut agent = spawn_agent(&cfg)?;
    let first = wait_for("the service to start", Duration::from_secs(30), || async {
        reqwest::get(&health)
            .await
            .ok()?
            .status()
            .is_success()
            .then(|| copies(port))
    })
    .await?;
    anyhow::ensure!(first.len() == 1, "copies at start: {first:?}");
    signal(&mut agent, "-KILL")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(copies(port), first, "the service outlives a killed agent");

    let mut agent = spawn_agent(&cfg)?;
    wait_for(
        "the new agent to adopt the service",
        Duration::from_secs(30),
        || async { (service_pid().await? == first[0]).then_some(()) },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(copies(port), first, "never two copies");

    // A crash of the adopted service is healed: one new copy, serving.
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/fault/crash"))
        .send()
        .await?;
    let healed = wait_for(
        "the crash to be healed",
        Duration::from_secs(40),
        || async {
            let now = copies(port);
            let ok = reqwest::get(&health).await.ok()?.status().is_success();
            (ok && now.len() == 1 && now != first).then_some(now)
        },
    )
    .await?;
    wait_for(
        "the restart to be verified",
        Duration::from_secs(20),
        || async {
            let audit = get_json(&format!("{edge}/api/v1/audit")).await.ok()?;
            audit
                .as_array()?
                .iter()
                .any(|a| a["kind"] == "verified" && a["policy"] == "restart-dead-demo-web")
                .then_some(())
        },
    )
    .await?;
    assert_eq!(service_pid().await, Some(healed[0]));

    // A clean stop of the agent stops its service.
    signal(&mut agent, "-TERM")?;
    assert!(copies(port).is_empty(), "left running: {:?}", copies(port));
    stop.cancel();
    Ok(())
}

/// Runs in a child process: one agent from `VIGIL_CHILD_CONFIG`, until a
/// signal stops it (cleanly) or SIGKILL ends it.
fn child_agent(config: &str) -> anyhow::Result<()> {
    let cfg: vigil_agent::AgentConfig = serde_json::from_str(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let catalog =
            vigil_agent::Catalog::load(&cfg.catalog).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
        let listener = vigil_core::telemetry::bind(&cfg.listen).await?;
        let stop = vigil_core::shutdown::on_signal();
        vigil_agent::run(
            cfg,
            catalog,
            listener,
            vigil_agent::AgentMetrics::new()?,
            stop,
        )
        .await
    })
}

/// The entry point of child processes (does nothing in a normal run).
#[test]
fn child_entry() -> anyhow::Result<()> {
    match std::env::var("VIGIL_CHILD").as_deref() {
        Ok("agent") => child_agent(&std::env::var("VIGIL_CHILD_CONFIG")?),
        _ => Ok(()),
    }
}
