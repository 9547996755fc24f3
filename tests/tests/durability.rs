//! Durability end to end, with counts: the cloud goes away under a steady
//! load and comes back; the edge is killed with SIGKILL and restarted; the
//! broker (embedded rumqttd, and Mosquitto) restarts under the whole stack.
//! Every sample the edge accepted, every anomaly event and every audit
//! record lands in the cloud's Parquet store exactly once, and no command
//! runs twice.
//!
//! Processes that must really die (the edge under SIGKILL, the embedded
//! broker) run as child processes of this test binary: it runs itself again
//! with `VIGIL_CHILD` set, and the `child_entry` test becomes that process.

#![cfg(test)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigil_core::clock::now_ms;
use vigil_core::message::{MetricBatch, Sample};
use vigil_core::{encode, topic, EntityId};
use vigil_tests::{metric, wait_for};

const SITE: &str = "dur";

/// Every anomaly on the host sends a command and writes audit records.
/// No agent answers, so each command times out (another audit record) and
/// spends the budget.
const POLICY: &str = r#"
policies:
  - name: fix-host
    match: { entity: "host/*", for_secs: 0 }
    action: restart-x
    cooldown_secs: 1
"#;

struct Running {
    url: String,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

async fn start_cloud(port: u16, dir: &Path) -> anyhow::Result<Running> {
    let mut cfg = vigil_cloud::CloudConfig::default();
    cfg.mqtt.port = port;
    cfg.mqtt.reconnect_max_ms = 500;
    cfg.data_dir = dir.join("cloud");
    cfg.roll_secs = 1;
    cfg.models.train_every_secs = 0;
    let listener = vigil_core::telemetry::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let task = tokio::spawn(vigil_cloud::run(
        cfg,
        listener,
        vigil_cloud::CloudMetrics::new()?,
        stop.clone(),
    ));
    Ok(Running { url, stop, task })
}

fn edge_config(port: u16, dir: &Path) -> anyhow::Result<vigil_edge::EdgeConfig> {
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY)?;
    let mut cfg = vigil_edge::EdgeConfig {
        site: SITE.into(),
        node: "e".into(),
        tick_ms: 100,
        heartbeat_secs: 1,
        uplink_every_ticks: 2,
        data_dir: dir.join("edge"),
        policy,
        ..Default::default()
    };
    cfg.mqtt.port = port;
    cfg.mqtt.reconnect_max_ms = 500;
    cfg.uplink.resend_secs = 2;
    cfg.detector.warmup_samples = 20;
    Ok(cfg)
}

async fn start_edge(cfg: vigil_edge::EdgeConfig, listen: &str) -> anyhow::Result<Running> {
    let policies = vigil_edge::PolicySet::load(&cfg.policy)
        .map_err(|e| anyhow::anyhow!("policy: {}", e.join("; ")))?;
    let listener = vigil_core::telemetry::bind(listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let task = tokio::spawn(vigil_edge::run(
        cfg,
        policies,
        listener,
        vigil_edge::EdgeMetrics::new()?,
        stop.clone(),
    ));
    Ok(Running { url, stop, task })
}

/// An agent-like load: five metrics of host `h1` every 50 ms, QoS 1, with
/// a spike on `m0` every 4 s; returns how many batches it published.
fn load(port: u16, stop: CancellationToken) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let opts = rumqttc::MqttOptions::new("load", "127.0.0.1", port);
        let (client, mut ev) = rumqttc::AsyncClient::new(opts, 4096);
        let poll = tokio::spawn(async move {
            loop {
                if ev.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut n = 0u64;
        let t0 = now_ms();
        while !stop.is_cancelled() {
            tick.tick().await;
            n += 1;
            let samples = (0..5)
                .map(|m| {
                    let wave = 50.0 + 5.0 * (n as f64 * 0.1 + m as f64).sin();
                    let spike = m == 0 && n % 80 > 70;
                    Sample {
                        entity: EntityId::host("h1"),
                        metric: format!("m{m}"),
                        ts_ms: t0 + n as i64 * 50,
                        value: if spike { wave * 40.0 } else { wave },
                    }
                })
                .collect();
            let batch = MetricBatch {
                host: "h1".into(),
                seq: n,
                samples,
            };
            let _ = client
                .publish(
                    topic::metrics(SITE, "h1"),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    encode(&batch),
                )
                .await;
        }
        // Let the last publishes leave before the client goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        poll.abort();
        n
    })
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(parquet_files(&p));
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out
}

/// Rows of one table, and how many distinct keys (`key` columns joined).
fn rows(cloud_dir: &Path, table: &str, key: &[&str]) -> anyhow::Result<(usize, usize)> {
    let mut n = 0;
    let mut keys = HashSet::new();
    for f in parquet_files(&cloud_dir.join(table)) {
        let df = vigil_cloud::store::read(&f)?;
        n += df.height();
        for i in 0..df.height() {
            let mut k = String::new();
            for c in key {
                k.push_str(&format!("{}|", df.column(c)?.get(i)?));
            }
            keys.insert(k);
        }
    }
    Ok((n, keys.len()))
}

fn audit_lines(edge_dir: &Path) -> usize {
    std::fs::read_to_string(edge_dir.join("audit.jsonl"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

/// What an edge counted, read from its `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counts {
    samples: f64,
    anomalies: f64,
}

async fn counts(edge: &str) -> anyhow::Result<Counts> {
    Ok(Counts {
        samples: metric(edge, "vigil_edge_samples_total").await?,
        anomalies: metric(edge, "vigil_anomalies_total").await?,
    })
}

async fn buffered(edge: &str) -> anyhow::Result<f64> {
    let mut n = 0.0;
    for p in ["audit", "scores", "samples"] {
        n += metric(
            edge,
            &format!("vigil_edge_uplink_buffer_messages{{priority=\"{p}\"}}"),
        )
        .await?;
    }
    Ok(n)
}

/// Waits until the edge's buffer is empty (everything acknowledged).
async fn drained(edge: &str) -> anyhow::Result<()> {
    wait_for(
        "the uplink buffer to drain",
        Duration::from_secs(60),
        || async { (buffered(edge).await.ok()? == 0.0).then_some(()) },
    )
    .await
}

/// Checks the store against what the edge accepted: every sample, anomaly
/// and audit record once, no duplicates.
fn check_store(dir: &Path, want: Counts, audit: usize) -> anyhow::Result<()> {
    let cloud = dir.join("cloud");
    let (samples, distinct) = rows(&cloud, "samples", &["entity", "metric", "ts_ms"])?;
    let (anomalies, distinct_anomalies) = rows(&cloud, "anomalies", &["id"])?;
    let (audit_rows, _) = rows(&cloud, "audit", &["ts_ms"])?;
    println!(
        "store: {samples} sample rows ({distinct} distinct) for {} accepted; {anomalies} anomaly rows for {}; {audit_rows} audit rows for {audit} audit records",
        want.samples, want.anomalies
    );
    anyhow::ensure!(
        samples as f64 == want.samples && distinct == samples,
        "samples: {samples} rows, {distinct} distinct, {} accepted",
        want.samples
    );
    anyhow::ensure!(
        anomalies as f64 == want.anomalies && distinct_anomalies == anomalies,
        "anomalies: {anomalies} rows for {}",
        want.anomalies
    );
    anyhow::ensure!(
        audit_rows == audit,
        "audit: {audit_rows} rows for {audit} records"
    );
    Ok(())
}

/// For 6 s without the cloud, the edge keeps accepting samples and holds
/// what is bound for the cloud.
async fn edge_holds_while_away(edge: &str) -> anyhow::Result<()> {
    let before = counts(edge).await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = counts(edge).await?;
    let held = buffered(edge).await?;
    println!(
        "cloud away 6 s: edge accepted {} samples meanwhile, {held} messages buffered",
        during.samples - before.samples
    );
    anyhow::ensure!(
        during.samples > before.samples + 500.0,
        "the edge stopped accepting: {before:?} → {during:?}"
    );
    anyhow::ensure!(
        held > 10.0,
        "only {held} messages buffered while the cloud was away"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cloud_outage_under_load_loses_nothing_and_stores_each_message_once() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let broker = vigil::broker::start(0, 1 << 20)?;
    let port = broker.port();
    let mut cloud = start_cloud(port, dir.path()).await?;
    let edge = start_edge(edge_config(port, dir.path())?, "127.0.0.1:0").await?;
    wait_for("the edge to connect", Duration::from_secs(20), || async {
        (metric(&edge.url, "vigil_mqtt_connected").await.ok()? == 1.0).then_some(())
    })
    .await?;
    let stop_load = CancellationToken::new();
    let load = load(port, stop_load.clone());

    wait_for(
        "the cloud to store rows",
        Duration::from_secs(30),
        || async {
            (metric(&cloud.url, "vigil_cloud_uplink_acked_total")
                .await
                .ok()?
                > 0.0)
                .then_some(())
        },
    )
    .await?;
    // The cloud goes away for 6 s at a steady load; the edge keeps scoring
    // and buffering.
    cloud.stop().await?;
    edge_holds_while_away(&edge.url).await?;
    cloud = start_cloud(port, dir.path()).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_load.cancel();
    let batches = load.await?;
    // Every point reaches the buffer within two uplinks; then it drains.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drained(&edge.url).await?;
    let want = counts(&edge.url).await?;
    let duplicates = metric(
        &cloud.url,
        "vigil_cloud_uplink_messages_total{intake=\"duplicate\"}",
    )
    .await?;
    let resent = metric(
        &edge.url,
        "vigil_edge_uplink_sent_total{attempt=\"resend\"}",
    )
    .await?;
    println!(
        "load: {batches} batches; edge resent {resent} messages; cloud saw {duplicates} duplicates"
    );
    edge.stop().await?;
    cloud.stop().await?;
    // A sanity check that the load got through (its first batches can beat
    // the edge's subscription); the exact checks are against the store.
    anyhow::ensure!(
        want.samples >= batches as f64 * 5.0 * 0.9,
        "edge accepted {} of {} samples",
        want.samples,
        batches * 5
    );
    anyhow::ensure!(
        want.anomalies > 0.0,
        "no anomaly was raised, so none was counted"
    );
    let audit = audit_lines(&dir.path().join("edge"));
    anyhow::ensure!(audit > 0, "no audit records were written");
    check_store(dir.path(), want, audit)
}

/// Runs in a child process: one edge node from the config in
/// `VIGIL_CHILD_CONFIG`, until killed.
fn child_edge(config: &str, listen: &str) -> anyhow::Result<()> {
    let cfg: vigil_edge::EdgeConfig = serde_json::from_str(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let edge = start_edge(cfg, listen).await?;
        edge.task.await??;
        Ok(())
    })
}

/// The entry point of child processes (does nothing in a normal run).
#[test]
fn child_entry() -> anyhow::Result<()> {
    match std::env::var("VIGIL_CHILD").as_deref() {
        Ok("edge") => child_edge(
            &std::env::var("VIGIL_CHILD_CONFIG")?,
            &std::env::var("VIGIL_CHILD_LISTEN")?,
        ),
        Ok("broker") => {
            let port: u16 = std::env::var("VIGIL_CHILD_PORT")?.parse()?;
            vigil::broker::start(port, 1 << 20)?;
            loop {
                std::thread::park();
            }
        }
        _ => Ok(()),
    }
}

/// The embedded broker in a child process, so it can be stopped and started
/// again on the same port.
struct ChildBroker {
    child: Child,
    port: u16,
}

impl ChildBroker {
    fn start(port: u16) -> anyhow::Result<Self> {
        let child = Command::new(std::env::current_exe()?)
            .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
            .env("VIGIL_CHILD", "broker")
            .env("VIGIL_CHILD_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the embedded broker did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { child, port })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_edge(cfg: &vigil_edge::EdgeConfig, listen: &str) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("VIGIL_CHILD", "edge")
        .env("VIGIL_CHILD_CONFIG", serde_json::to_string(cfg)?)
        .env("VIGIL_CHILD_LISTEN", listen)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn sigkill(child: &mut Child) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -KILL failed");
    let exit = child.wait()?;
    use std::os::unix::process::ExitStatusExt;
    anyhow::ensure!(
        exit.signal() == Some(9),
        "edge ended with {exit:?}, not SIGKILL"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edge_killed_with_sigkill_keeps_its_buffer_and_budgets() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = vigil::broker::start(0, 1 << 20)?;
    let port = broker.port();
    let cfg = edge_config(port, dir.path())?;
    let listen = format!("127.0.0.1:{}", vigil::broker::free_port()?);
    let url = format!("http://{listen}");
    let mut child = spawn_edge(&cfg, &listen)?;
    let stop_load = CancellationToken::new();
    let load = load(port, stop_load.clone());
    // No cloud yet: everything the edge accepts waits in its buffer.
    wait_for("the edge to buffer", Duration::from_secs(30), || async {
        let c = counts(&url).await.ok()?;
        (c.anomalies > 0.0 && buffered(&url).await.ok()? > 20.0).then_some(())
    })
    .await?;
    stop_load.cancel();
    load.await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let first = counts(&url).await?;
    let held = buffered(&url).await?;
    let budget_file = cfg.data_dir.join("budgets.json");
    let spent = |f: &Path| {
        vigil_edge::budget::Budgets::open(f)
            .map(|b| b.used("host/h1", "restart-x", now_ms(), 3_600_000))
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let budget = spent(&budget_file)?;
    anyhow::ensure!(budget > 0, "no budget was spent before the kill");
    sigkill(&mut child)?;
    println!(
        "killed the edge holding {held} messages ({} samples, {} anomalies accepted)",
        first.samples, first.anomalies
    );

    // Restarted: the same buffer, the same budgets; then the cloud comes.
    let mut child = spawn_edge(&cfg, &listen)?;
    wait_for("the edge to restart", Duration::from_secs(30), || async {
        (buffered(&url).await.ok()? > 0.0).then_some(())
    })
    .await?;
    let after = buffered(&url).await?;
    anyhow::ensure!(
        after == held,
        "{held} messages buffered before the kill, {after} after"
    );
    anyhow::ensure!(
        spent(&budget_file)? >= budget,
        "the budget spent before the kill was lost"
    );
    let cloud = start_cloud(port, dir.path()).await?;
    drained(&url).await?;
    let second = counts(&url).await?;
    let _ = child.kill();
    let _ = child.wait();
    cloud.stop().await?;
    let want = Counts {
        samples: first.samples + second.samples,
        anomalies: first.anomalies + second.anomalies,
    };
    check_store(dir.path(), want, audit_lines(&cfg.data_dir))
}

/// Stops the broker until the agent holds three batches, starts it again,
/// and checks that every role reconnects and the held batches reach the
/// edge.
async fn restart_while_held(
    stack: &vigil::stack::Stack,
    broker: &mut impl Restartable,
) -> anyhow::Result<()> {
    let errors = |m: &prometheus::Registry| {
        vigil_tests::parse_metric(
            &prometheus::TextEncoder::new()
                .encode_to_string(&m.gather())
                .unwrap_or_default(),
            "vigil_mqtt_connection_errors_total",
        )
    };
    let registries = [
        stack.agent_metrics.registry.clone(),
        stack.edge_metrics.registry.clone(),
        stack.cloud_metrics.registry.clone(),
    ];
    let before: Vec<f64> = registries.iter().map(errors).collect();
    broker.stop();
    let down_ms = now_ms();
    wait_for(
        "the agent to hold its metrics",
        Duration::from_secs(20),
        || async { (stack.agent_metrics.backlog.get() >= 3).then_some(()) },
    )
    .await?;
    let up_ms = now_ms();
    broker.start_again()?;
    wait_for(
        "every role to reconnect",
        Duration::from_secs(60),
        || async {
            let all = registries.iter().zip(&before).all(|(r, b)| errors(r) > *b)
                && stack.agent_metrics.link.connected.get() == 1
                && stack.edge_metrics.link.connected.get() == 1
                && stack.cloud_metrics.link.connected.get() == 1;
            all.then_some(())
        },
    )
    .await?;
    // The agent's held batches reached the edge: it has the service's
    // samples from while the broker was down.
    let series = format!("{}:up", stack.target);
    let points = wait_for(
        "the held metrics to reach the edge",
        Duration::from_secs(30),
        || async {
            let url = format!(
                "{}/api/v1/series/points?id={}",
                stack.edge_url,
                series.replace('/', "%2F").replace(':', "%3A")
            );
            let v = vigil_tests::get_json(&url).await.ok()?;
            let during = v
                .as_array()?
                .iter()
                .filter(|p| {
                    p["ts_ms"]
                        .as_i64()
                        .is_some_and(|t| t > down_ms && t < up_ms)
                })
                .count();
            (during >= 3 && stack.agent_metrics.backlog.get() == 0).then_some(during)
        },
    )
    .await?;
    println!("edge has {points} points of {series} from while the broker was down");
    Ok(())
}

/// A crash after the restart is healed; the store catches up with what the
/// edge accepted, and no command ran twice. The samples accepted.
async fn heal_once_after_the_restart(stack: &vigil::stack::Stack) -> anyhow::Result<u64> {
    let sent = stack.edge_metrics.remediation.commands_sent.get();
    stack.inject(vigil::demo::FaultKind::Crash).await?;
    vigil_tests::wait_healed(stack, 0, "crash").await?;
    let accepted = stack.edge_metrics.cache.samples.get();
    drained(&stack.edge_url).await?;
    wait_for("the store to catch up", Duration::from_secs(60), || async {
        let rows = stack
            .cloud_metrics
            .rows_written
            .with_label_values(&["samples"])
            .get();
        (rows >= accepted).then_some(())
    })
    .await?;
    let ran = ["succeeded", "failed"]
        .iter()
        .map(|o| stack.agent_metrics.actions.with_label_values(&[o]).get())
        .sum::<u64>();
    let duplicates = stack
        .agent_metrics
        .actions
        .with_label_values(&["duplicate"])
        .get();
    let sent = stack.edge_metrics.remediation.commands_sent.get() - sent;
    println!("after the restart: {sent} commands sent, {ran} ran in all, {duplicates} refused as duplicates; {accepted} samples accepted before the check");
    anyhow::ensure!(sent >= 1, "no command was sent for the fault");
    anyhow::ensure!(
        ran <= stack.edge_metrics.remediation.commands_sent.get(),
        "{ran} actions ran for {} commands",
        stack.edge_metrics.remediation.commands_sent.get()
    );
    Ok(accepted)
}

/// The whole stack on `broker` at `addr`, which is stopped and started
/// again mid-stream. Checks that every role reconnects, the agent held its metrics
/// meanwhile and the edge got them, a fault after the restart is healed by
/// exactly one action, and the store has every sample once.
async fn broker_restart(
    addr: std::net::SocketAddr,
    broker: &mut impl Restartable,
) -> anyhow::Result<()> {
    use vigil::stack::{BrokerChoice, Stack};
    let dir = tempfile::tempdir()?;
    let opts = vigil_tests::test_options(
        BrokerChoice::External(addr),
        dir.path(),
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    );
    let stack = Stack::start(opts).await?;
    let outcome = async {
        vigil_tests::wait_until_warm(&stack).await?;
        restart_while_held(&stack, broker).await?;
        heal_once_after_the_restart(&stack).await
    }
    .await;
    let data = stack.data_dir.clone();
    stack.stop(Duration::from_secs(10)).await;
    let accepted = outcome?;
    let (samples, distinct) = rows(
        &data.join("cloud"),
        "samples",
        &["entity", "metric", "ts_ms"],
    )?;
    println!(
        "store: {samples} sample rows, {distinct} distinct, {accepted} accepted before the check"
    );
    anyhow::ensure!(
        samples == distinct,
        "{} duplicate sample rows",
        samples - distinct
    );
    anyhow::ensure!(
        samples as u64 >= accepted,
        "{samples} rows for {accepted} accepted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_broker_restart_mid_stream_loses_nothing() -> anyhow::Result<()> {
    let mut broker = ChildBroker::start(vigil::broker::free_port()?)?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], broker.port));
    broker_restart(addr, &mut broker).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mosquitto_restart_mid_stream_loses_nothing() -> anyhow::Result<()> {
    let Some(mut broker) = vigil_tests::Mosquitto::start()? else {
        assert!(
            !vigil_tests::external_required(),
            "VIGIL_REQUIRE_EXTERNAL=1 but mosquitto is not installed"
        );
        eprintln!("SKIPPED: mosquitto is not on PATH; install it (apt-get install mosquitto) to run this test.");
        return Ok(());
    };
    let addr = broker.addr;
    broker_restart(addr, &mut broker).await
}

/// A broker a test can stop and start again on the same port.
trait Restartable {
    fn stop(&mut self);
    fn start_again(&mut self) -> anyhow::Result<()>;
}

impl Restartable for ChildBroker {
    fn stop(&mut self) {
        ChildBroker::stop(self);
    }
    fn start_again(&mut self) -> anyhow::Result<()> {
        *self = ChildBroker::start(self.port)?;
        Ok(())
    }
}

impl Restartable for vigil_tests::Mosquitto {
    fn stop(&mut self) {
        vigil_tests::Mosquitto::stop(self);
    }
    fn start_again(&mut self) -> anyhow::Result<()> {
        vigil_tests::Mosquitto::start_again(self)
    }
}
