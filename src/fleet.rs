//! `vigil bench fleet`: how many sites one aggregator takes, measured.
//!
//! A real Mosquitto (a child process) carries the uplinks of EDGES
//! simulated edge nodes ([`edge`]: the same envelopes, stream ids,
//! sequences, window and resends as `vigil-edge`) to a real `vigil-cloud`
//! (a child process, [`cloud`]), while a bare subscriber ([`bare`]) takes the
//! same stream in the same run. After a warm-up the run measures the samples
//! stored per second (receipted: the aggregator receipts a message once it
//! is durable in its log), receipt latency, the aggregator's CPU and memory
//! and the edges' backlog; then the load stops, the run waits for every
//! receipt, stops the aggregator as an operator would (it rolls what it
//! holds into Parquet) and checks that the Parquet parts hold each sample
//! made exactly once.

pub mod bare;
pub mod cloud;
pub mod edge;
pub mod link;
mod report;

use crate::procstat::{cpu_secs, peak_rss_mb};
use edge::{Shape, SimEdge};
use link::{Delivery, Totals};
pub use report::Report;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vigil_core::clock::now_ms;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Simulated edge nodes (one site each).
    pub edges: usize,
    /// Series per edge.
    pub series: usize,
    /// Samples per series per second.
    pub rate: f64,
    /// Seconds measured, after the warm-up.
    pub secs: u64,
    /// Seconds of load before measuring.
    pub warmup_secs: u64,
    /// Most seconds to wait, after the load, for the last receipts.
    pub drain_secs: u64,
    /// MQTT connections the edges share.
    pub connections: usize,
    /// Seconds between an edge's uplink batches.
    pub batch_secs: u64,
    /// Messages out per edge without a receipt.
    pub window: usize,
    /// Seconds before a message without a receipt goes again.
    pub resend_secs: u64,
    /// The `vigil` executable that runs the aggregators (`vigil cloud`).
    pub exe: Option<PathBuf>,
    /// Seconds between the aggregator's Parquet rolls (its default when unset).
    pub roll_secs: Option<u64>,
    /// Kill the aggregator (SIGKILL) this many seconds into the load and
    /// start it again: what it receipted must still be stored, once.
    pub crash_at_secs: Option<u64>,
    /// Keep the run's folder (store, configs, logs) here instead of a
    /// temporary one.
    pub keep: Option<PathBuf>,
    /// The aggregator's Parquet on S3 (`s3://bucket/prefix`) instead of its
    /// folder, reached with `s3`.
    pub store: Option<String>,
    /// How the aggregator reaches `store`.
    pub s3: vigil_cloud::config::S3Settings,
    /// Aggregators sharing the fleet; more than one form a cluster through
    /// etcd (`etcd`, or one started for the run).
    pub aggregators: usize,
    /// etcd's endpoint for a cluster (default: start a local etcd).
    pub etcd: Option<String>,
    /// The cluster's lease, seconds.
    pub lease_ttl_secs: u64,
    /// Stop the run's etcd this many seconds into the load, and start it
    /// again `etcd_outage_secs` later: members must keep serving their sites.
    pub etcd_outage_at_secs: Option<u64>,
    /// How long the etcd outage lasts.
    pub etcd_outage_secs: u64,
    /// Every this many batches each edge also sends an anomaly event and
    /// an audit record (0: none); every aggregator's API must list them all.
    pub events_every: u64,
}

/// What one aggregator's API lists after the run.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Listed {
    /// The aggregator.
    pub name: String,
    /// Distinct anomaly events.
    pub anomalies: u64,
    /// Distinct audit records.
    pub audit: u64,
    /// Items listed more than once.
    pub twice: u64,
}

impl Default for FleetOptions {
    fn default() -> Self {
        // As `vigil-edge` ships: a batch every 5 ticks, 256 messages out,
        // resent after 30 s.
        Self {
            edges: 1000,
            series: 100,
            rate: 1.0,
            secs: 60,
            warmup_secs: 20,
            drain_secs: 120,
            connections: 32,
            batch_secs: 5,
            window: 256,
            resend_secs: 30,
            exe: None,
            roll_secs: None,
            crash_at_secs: None,
            keep: None,
            store: None,
            s3: Default::default(),
            aggregators: 1,
            etcd: None,
            lease_ttl_secs: 10,
            etcd_outage_at_secs: None,
            etcd_outage_secs: 20,
            events_every: 0,
        }
    }
}

/// One reading of every counter the report is made of.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    at: Option<Instant>,
    made: u64,
    receipted: u64,
    bare_messages: u64,
    bare_bytes: u64,
    cpu: [f64; 3],
}

struct Run {
    aggregators: Vec<cloud::Aggregator>,
    /// Each aggregator's CPU seconds when last read (a killed one's stays).
    last_cpu: std::sync::Mutex<Vec<f64>>,
    broker_pid: u32,
    totals: Arc<Totals>,
    bare: Arc<bare::Received>,
}

impl Run {
    fn aggregators_cpu(&self) -> f64 {
        let Ok(mut last) = self.last_cpu.lock() else {
            return f64::NAN;
        };
        last.resize(self.aggregators.len(), 0.0);
        for (a, l) in self.aggregators.iter().zip(last.iter_mut()) {
            if let Some(c) = cpu_secs(a.pid()).filter(|c| c.is_finite()) {
                *l = c;
            }
        }
        last.iter().sum()
    }

    fn snapshot(&self) -> Snapshot {
        let cpu = |pid| cpu_secs(pid).unwrap_or(f64::NAN);
        Snapshot {
            at: Some(Instant::now()),
            made: self.totals.made.load(Ordering::Relaxed),
            receipted: self.totals.receipted.load(Ordering::Relaxed),
            bare_messages: self.bare.messages.load(Ordering::Relaxed),
            bare_bytes: self.bare.bytes.load(Ordering::Relaxed),
            cpu: [
                self.aggregators_cpu(),
                cpu(self.broker_pid),
                cpu(std::process::id()),
            ],
        }
    }
}

/// Runs the simulation and reports it.
pub async fn run(opts: &FleetOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(
        opts.edges > 0 && opts.series > 0 && opts.rate > 0.0 && opts.secs > 0,
        "--edges, --series, --rate and --secs must be positive"
    );
    let exe = match &opts.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe()?,
    };
    let temp = tempfile::tempdir()?;
    let dir = opts
        .keep
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let broker = crate::mosquitto::Mosquitto::start_with("allow_anonymous true\nsys_interval 1\n")?
        .ok_or_else(|| anyhow::anyhow!("mosquitto is not installed (apt install mosquitto)"))?;
    let port = broker.addr.port();
    let (mut etcd_server, cluster) = cluster(opts).await?;
    let mut aggregators = Vec::new();
    for i in 1..=opts.aggregators.max(1) {
        let name = format!("cloud-{i}");
        let cluster = cluster.as_ref().map(|e| (e.as_str(), opts.lease_ttl_secs));
        aggregators.push(cloud::Aggregator::start(&exe, &dir, &name, port, opts, cluster).await?);
    }
    let run = Run {
        aggregators,
        last_cpu: Default::default(),
        broker_pid: broker.pid(),
        totals: Arc::new(Totals::default()),
        bare: Arc::new(bare::Received::default()),
    };
    let (load, stop) = (CancellationToken::new(), CancellationToken::new());
    tokio::spawn(bare::subscribe(port, run.bare.clone(), stop.clone()));
    start_edges(opts, port, &run.totals, (&load, &stop));

    let bar = report::bar(opts.warmup_secs + opts.secs);
    let mut run = run;
    let started = run.snapshot();
    let mut last = started.clone();
    let mut measured = None;
    let mut backlog_start = 0;
    let mut replayed = None;
    let takeover = Arc::new(std::sync::Mutex::new(None));
    let mut owners_at_crash = Vec::new();
    let mut etcd_up_in_outage = Vec::new();
    let outage = opts
        .etcd_outage_at_secs
        .map(|at| (at, at + opts.etcd_outage_secs.max(2)));
    for second in 1..=opts.warmup_secs + opts.secs {
        tokio::time::sleep_until(
            (started.at.unwrap_or_else(Instant::now) + Duration::from_secs(second)).into(),
        )
        .await;
        if opts.crash_at_secs == Some(second) {
            match &cluster {
                // In a cluster the others take its sites: it stays dead.
                Some(etcd) => {
                    owners_at_crash = cloud::owners(etcd).await;
                    bar.println(format!("{second} s: killing cloud-1 (SIGKILL)"));
                    run.aggregators[0].kill();
                    let watch = cloud::takeover(etcd.clone(), "cloud-1", opts.edges);
                    let takeover = takeover.clone();
                    tokio::spawn(async move {
                        let t = watch.await;
                        if let Ok(mut slot) = takeover.lock() {
                            *slot = t;
                        }
                    });
                }
                None => {
                    bar.println(format!(
                        "{second} s: killing the aggregator (SIGKILL) and starting it again"
                    ));
                    let a = &mut run.aggregators[0];
                    a.crash_and_restart().await?;
                    let n = a.metric("vigil_cloud_wal_replayed_total").await?;
                    replayed = Some(n as u64);
                }
            }
        }
        if let (Some((from, to)), Some(e)) = (outage, &mut etcd_server) {
            if second == from {
                bar.println(format!("{second} s: stopping etcd for {} s", to - from));
                e.stop();
            }
            if second + 1 == to {
                // Past the lease: every live member has seen etcd gone.
                for a in &run.aggregators {
                    if let Ok(up) = a.metric("vigil_cloud_cluster_etcd_up").await {
                        etcd_up_in_outage.push((a.name.clone(), up == 1.0));
                    }
                }
            }
            if second == to {
                bar.println(format!("{second} s: starting etcd again"));
                e.start_again().await?;
            }
        }
        let now = run.snapshot();
        bar.set_position(second);
        bar.set_message(report::progress(&last, &now));
        last = now;
        if second == opts.warmup_secs {
            backlog_start = last.made - last.receipted;
            if let Ok(mut l) = run.totals.latencies.lock() {
                l.clear();
            }
            measured = Some(last.clone());
        }
    }
    let begin = measured.unwrap_or(started);
    let end = last;
    load.cancel();
    bar.finish_and_clear();
    let latencies = run
        .totals
        .latencies
        .lock()
        .map(|l| (l.quantile(0.5), l.quantile(0.99)))
        .unwrap_or((None, None));
    let drained = drain(&run, opts.drain_secs).await;
    let peak_rss = run
        .aggregators
        .iter()
        .filter_map(|a| peak_rss_mb(a.pid()))
        .fold(f64::NAN, f64::max);
    let mut failed_rolls = None;
    let mut leaders = Vec::new();
    let mut listed = Vec::new();
    for a in run.aggregators.iter().filter(|a| !a.killed) {
        if opts.events_every > 0 {
            listed.push(a.listed().await?);
        }
        if let Ok(n) = a.metric("vigil_cloud_flush_errors_total").await {
            *failed_rolls.get_or_insert(0) += n as u64;
        }
        if let Ok(l) = a.metric("vigil_cloud_cluster_leader").await {
            leaders.push((a.name.clone(), l == 1.0));
        }
    }
    stop.cancel();
    let mut stopped = true;
    for a in &mut run.aggregators {
        stopped &= a.stop(120) || a.killed;
    }
    let [parquet, anomalies, audit] = run.aggregators[0].parquet_rows(opts).await?;
    let takeover_s = takeover.lock().ok().and_then(|t| *t);
    Ok(Report {
        replayed,
        failed_rolls,
        takeover_s,
        leaders,
        owners_at_crash,
        etcd_up_in_outage,
        events_stored: (anomalies.0, audit.0),
        listed,
        ..Report::new(
            opts,
            (&begin, &end),
            backlog_start,
            latencies,
            peak_rss,
            (drained && stopped, parquet, &run.totals),
        )
    })
}

/// The etcd endpoint of a cluster run (and the etcd started for it).
async fn cluster(
    opts: &FleetOptions,
) -> anyhow::Result<(Option<crate::etcd::EtcdServer>, Option<String>)> {
    if opts.aggregators <= 1 {
        return Ok((None, None));
    }
    if let Some(e) = &opts.etcd {
        return Ok((None, Some(e.clone())));
    }
    let etcd = crate::etcd::EtcdServer::start().await?.ok_or_else(|| {
        anyhow::anyhow!("etcd is not installed (apt install etcd-server), or pass --etcd")
    })?;
    let endpoint = etcd.endpoint.clone();
    Ok((Some(etcd), Some(endpoint)))
}

/// Creates the edges, spread over the connections, their first batches
/// spread over one batch interval.
fn start_edges(
    opts: &FleetOptions,
    port: u16,
    totals: &Arc<Totals>,
    (load, stop): (&CancellationToken, &CancellationToken),
) {
    let shape = Shape {
        series: opts.series,
        rate: opts.rate,
        batch_secs: opts.batch_secs.max(1),
        events_every: opts.events_every,
    };
    let delivery = Delivery {
        window: opts.window.max(1),
        resend_ms: opts.resend_secs.max(1) as i64 * 1000,
    };
    let run = format!("{:x}", now_ms());
    let t0 = now_ms();
    let connections = opts.connections.clamp(1, opts.edges);
    let mut shares: Vec<Vec<SimEdge>> = (0..connections).map(|_| Vec::new()).collect();
    let names = edge::names(opts.series);
    for i in 0..opts.edges {
        let offset = (i as i64 * shape.batch_secs as i64 * 1000) / opts.edges as i64;
        shares[i % connections].push(SimEdge::new(i, &run, t0 + offset, names.clone()));
    }
    for (c, edges) in shares.into_iter().enumerate() {
        tokio::spawn(link::drive(
            format!("vigil-fleet-{run}-{c}"),
            port,
            edges,
            (shape, delivery),
            totals.clone(),
            (load.clone(), stop.clone()),
        ));
    }
}

/// Waits up to `secs` for every sample and event made to be receipted.
async fn drain(run: &Run, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let bar = report::spinner("waiting for the last receipts");
    let t = &run.totals;
    loop {
        let (made, got) = (
            t.made.load(Ordering::Relaxed),
            t.receipted.load(Ordering::Relaxed),
        );
        let events =
            t.events_made.load(Ordering::Relaxed) - t.events_receipted.load(Ordering::Relaxed);
        bar.set_message(format!(
            "{} samples and {events} events without a receipt",
            made - got
        ));
        if got >= made && events == 0 {
            bar.finish_and_clear();
            return true;
        }
        if Instant::now() >= deadline {
            bar.finish_and_clear();
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
