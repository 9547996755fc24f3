//! `vigil bench edge-intake`: how many samples a second the edge takes from
//! its agents, and whether the broker drops any on the way.
//!
//! A real Mosquitto (a child process, `$SYS` every second) and a real edge
//! node (`vigil edge`, its own process) run with simulated agents in this
//! process: HOSTS hosts publish SERIES series at a total of RATE samples a
//! second, in batches of PER samples, numbered and at QoS 1 as `vigil-agent`
//! publishes them. The report sets what the edge took beside what was
//! published, the broker's own count of dropped messages
//! (`$SYS/broker/publish/messages/dropped`) and the edge's count of batches
//! that never arrived (`vigil_edge_agent_batches_missing_total`).

use crate::procstat::cpu_secs;
use anyhow::Context;
use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vigil_core::message::{MetricBatch, Sample};
use vigil_core::{encode, topic, EntityId};

/// What to offer the edge.
#[derive(Clone, Copy, Debug)]
pub struct IntakeOptions {
    /// Samples per second in all.
    pub rate: u64,
    /// Samples per message.
    pub per: usize,
    /// Hosts (agents) publishing.
    pub hosts: usize,
    /// Series in all.
    pub series: usize,
    /// Seconds measured (after 10 s of warm-up).
    pub secs: u64,
}

const SITE: &str = "bench";

/// Starts `vigil edge` from `exe` for site `bench` on the broker at `port`,
/// serving its API on `listen`.
pub fn spawn_edge(
    exe: &std::path::Path,
    dir: &std::path::Path,
    (port, listen): (u16, &str),
    series: usize,
) -> anyhow::Result<Child> {
    let cfg = crate::memory_bench::edge_config(SITE, dir, (port, listen), series);
    let path = dir.join("edge.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&cfg)?)?;
    Command::new(exe)
        .arg("edge")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("edge.log"))?))
        .spawn()
        .with_context(|| format!("starting {} edge", exe.display()))
}

/// One connection's share of the hosts, publishing until `stop`.
async fn agents(
    port: u16,
    hosts: Vec<usize>,
    o: IntakeOptions,
    sent: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut opts =
        rumqttc::MqttOptions::new(format!("bench-agents-{}", hosts[0]), "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_inflight(1000);
    let (client, mut ev) = rumqttc::AsyncClient::new(opts, 4096);
    let done = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = done.cancelled() => break,
                e = ev.poll() => if e.is_err() { tokio::time::sleep(Duration::from_millis(100)).await },
            }
        }
    });
    let per_host = o.series.div_ceil(o.hosts);
    // Messages a second of this connection, sent every 10 ms.
    let share = o.rate as f64 * hosts.len() as f64 / o.hosts as f64 / o.per as f64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut owed, mut next_series, mut seqs) =
        (0.0, vec![0usize; hosts.len()], vec![0u64; hosts.len()]);
    let mut turn = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        owed += share / 100.0;
        let ts = vigil_core::clock::now_ms();
        while owed >= 1.0 {
            owed -= 1.0;
            let k = turn % hosts.len();
            turn += 1;
            let host = format!("h{:04}", hosts[k]);
            let samples = (0..o.per)
                .map(|i| {
                    let m = (next_series[k] + i) % per_host;
                    Sample {
                        entity: EntityId::host(&host),
                        metric: format!("m{m:03}"),
                        ts_ms: ts,
                        value: (ts as f64 / 1000.0 + m as f64).sin(),
                    }
                })
                .collect();
            next_series[k] = (next_series[k] + o.per) % per_host;
            seqs[k] += 1;
            let batch = MetricBatch {
                host: host.clone(),
                seq: seqs[k],
                samples,
            };
            let topic = topic::metrics(SITE, &host);
            let r = client.publish(topic, rumqttc::QoS::AtLeastOnce, false, encode(&batch));
            if r.await.is_err() {
                return;
            }
            sent.fetch_add(o.per as u64, Ordering::Relaxed);
        }
    }
}

/// Keeps `dropped` at the broker's count of dropped messages, from `$SYS`
/// (Mosquitto publishes it every `sys_interval`), until `stop`.
pub async fn broker_dropped(port: u16, dropped: Arc<AtomicU64>, stop: CancellationToken) {
    let opts = rumqttc::MqttOptions::new("bench-sys", "127.0.0.1", port);
    let (client, mut ev) = rumqttc::AsyncClient::new(opts, 16);
    loop {
        let e = tokio::select! {
            _ = stop.cancelled() => break,
            e = ev.poll() => e,
        };
        match e {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                let t = "$SYS/broker/publish/messages/dropped";
                let _ = client.try_subscribe(t, rumqttc::QoS::AtMostOnce);
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                if let Some(n) = std::str::from_utf8(&p.payload)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                {
                    dropped.store(n, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The unlabelled (or fully labelled) sample `name` on `{url}/metrics` (an
/// edge's, an agent's): 0 when absent, NaN when the page cannot be read.
pub async fn edge_metric(url: &str, name: &str) -> f64 {
    let Ok(r) = reqwest::get(format!("{url}/metrics")).await else {
        return f64::NAN;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs the benchmark and returns its report.
pub async fn run(o: IntakeOptions) -> anyhow::Result<String> {
    anyhow::ensure!(
        o.rate > 0 && o.per > 0 && o.hosts > 0 && o.series >= o.hosts,
        "--rate, --per and --hosts must be positive, --series at least --hosts"
    );
    let dir = tempfile::tempdir()?;
    let broker = crate::mosquitto::Mosquitto::start_with("allow_anonymous true\nsys_interval 1\n")?
        .ok_or_else(|| anyhow::anyhow!("mosquitto is not installed (apt install mosquitto)"))?;
    let port = broker.addr.port();
    let listen = format!("127.0.0.1:{}", crate::broker::free_port()?);
    let url = format!("http://{listen}");
    let exe = std::env::current_exe()?;
    let mut edge = spawn_edge(&exe, dir.path(), (port, &listen), o.series)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the edge did not start (see {})",
            dir.path().join("edge.log").display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (stop, sent, dropped) = (
        CancellationToken::new(),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    tokio::spawn(broker_dropped(port, dropped.clone(), stop.clone()));
    let connections = o.hosts.min(16);
    for c in 0..connections {
        let hosts: Vec<usize> = (c..o.hosts).step_by(connections).collect();
        tokio::spawn(agents(port, hosts, o, sent.clone(), stop.clone()));
    }
    let took = "vigil_messages_received_total{kind=\"metrics\"}";
    let missing = "vigil_edge_agent_batches_missing_total";
    tokio::time::sleep(Duration::from_secs(10)).await;
    let read = |url: String| async move {
        (
            Instant::now(),
            edge_metric(&url, took).await,
            edge_metric(&url, missing).await,
        )
    };
    let (pid, bpid) = (edge.id(), broker.pid());
    let cpu0 = (cpu_secs(pid).unwrap_or(0.0), cpu_secs(bpid).unwrap_or(0.0));
    let (s0, d0, a) = (
        sent.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
        read(url.clone()).await,
    );
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    let (s1, b) = (sent.load(Ordering::Relaxed), read(url.clone()).await);
    let cpu1 = (cpu_secs(pid).unwrap_or(0.0), cpu_secs(bpid).unwrap_or(0.0));
    // $SYS is published every second: wait for the window's last figure.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let d1 = dropped.load(Ordering::Relaxed);
    stop.cancel();
    let _ = edge.kill();
    let _ = edge.wait();
    let secs = (b.0 - a.0).as_secs_f64();
    let mut out = String::new();
    writeln!(out, "| offered samples/s | edge took samples/s | broker dropped (messages; whole run) | edge counted missing (batches; whole run) | edge CPU | broker CPU |")?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    writeln!(
        out,
        "| {:.0} ({} per message, {} hosts, {} series) | {:.0} | {} ({}) | {} ({}) | {:.0} % | {:.0} % |",
        (s1 - s0) as f64 / secs,
        o.per,
        o.hosts,
        o.series,
        (b.1 - a.1) * o.per as f64 / secs,
        d1.saturating_sub(d0),
        d1,
        b.2 - a.2,
        b.2,
        100.0 * (cpu1.0 - cpu0.0) / secs,
        100.0 * (cpu1.1 - cpu0.1) / secs,
    )?;
    Ok(out)
}
