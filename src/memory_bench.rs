//! `vigil bench edge-memory`: the edge's resident memory under a mid-size
//! site's load, with the cloud up and with it away.
//!
//! The edge runs as its own process (the real `vigil-edge` binary beside
//! this one), so its RSS is its own. This process runs the embedded broker,
//! the simulated agents (HOSTS hosts publishing SERIES series in all, one
//! batch a second each, a noisy wave per series) and, in the `up` phase, a
//! cloud aggregator. The edge's VmRSS is read from /proc every 10 s; the
//! report gives the peak, the mean and the slope over the last 20 minutes
//! (flat: under 0.1 MB a minute), and the uplink buffer's file size.

use crate::procstat::rss_mb;
use anyhow::Context;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vigil_core::clock::now_ms;
use vigil_core::message::{MetricBatch, Sample};
use vigil_core::{encode, topic, EntityId};

/// One RSS reading.
#[derive(Clone, Debug, Serialize)]
pub struct Reading {
    /// Seconds since the edge started.
    pub secs: f64,
    /// Resident set, MB.
    pub rss_mb: f64,
    /// The uplink buffer file, MB.
    pub spool_mb: f64,
}

/// One phase's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    /// `up` or `away`.
    pub cloud: String,
    /// Peak RSS, MB.
    pub peak_mb: f64,
    /// Mean RSS over the last 20 minutes (or the last two thirds), MB.
    pub tail_mean_mb: f64,
    /// Least-squares slope of RSS over that tail, MB per minute.
    pub tail_slope_mb_per_min: f64,
    /// Largest uplink buffer file seen, MB.
    pub spool_peak_mb: f64,
    /// Every reading.
    pub readings: Vec<Reading>,
}

fn slope_per_min(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den * 60.0
    }
}

fn edge_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("vigil-edge");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it beside vigil (cargo build --release --workspace)",
        bin.display()
    );
    Ok(bin)
}

/// An edge for the benchmarks: site `site`, its folder under `dir`, the
/// broker at `port`, its API at `listen`, a cache with room for `series`
/// and a tenth more.
pub(crate) fn edge_config(
    site: &str,
    dir: &Path,
    (port, listen): (u16, &str),
    series: usize,
) -> vigil_edge::EdgeConfig {
    vigil_edge::EdgeConfig {
        site: site.into(),
        listen: listen.into(),
        data_dir: dir.join("edge"),
        mqtt: vigil_core::mqtt::MqttSettings {
            port,
            ..Default::default()
        },
        cache: vigil_edge::config::CacheConfig {
            max_series: series + series / 10,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn spawn_edge(dir: &Path, port: u16, series: usize) -> anyhow::Result<Child> {
    let cfg = edge_config("bench", dir, (port, "127.0.0.1:0"), series);
    let path = dir.join("edge.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&cfg)?)?;
    Command::new(edge_binary()?)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("edge.log"))?))
        .spawn()
        .context("starting vigil-edge")
}

/// Publishes `series` series over `hosts` hosts, one batch per host a second.
async fn agents(port: u16, hosts: usize, series: usize, stop: CancellationToken) {
    let id = format!("bench-agents-{}", now_ms());
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut ev) = rumqttc::AsyncClient::new(opts, 4096);
    let done = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = done.cancelled() => break,
                e = ev.poll() => if e.is_err() { break },
            }
        }
    });
    let per = series.div_ceil(hosts);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        seq += 1;
        let ts = now_ms();
        let t = ts as f64 / 1000.0;
        for h in 0..hosts {
            let host = format!("host-{h:03}");
            let samples = (0..per)
                .map(|m| {
                    let phase = (h * per + m) as f64;
                    Sample {
                        entity: EntityId::host(&host),
                        metric: format!("m{m:03}"),
                        ts_ms: ts,
                        value: 50.0
                            + 10.0 * (t / 300.0 + phase).sin()
                            + ((seq as f64 * 7.3 + phase).sin() * 0.5),
                    }
                })
                .collect();
            let batch = MetricBatch {
                host: host.clone(),
                seq,
                samples,
            };
            let _ = client
                .publish(
                    topic::metrics("bench", &host),
                    rumqttc::QoS::AtMostOnce,
                    false,
                    encode(&batch),
                )
                .await;
        }
    }
}

async fn run_phase(port: u16, cloud_up: bool, series: usize, secs: u64) -> anyhow::Result<Phase> {
    let dir = tempfile::tempdir()?;
    let stop = CancellationToken::new();
    if cloud_up {
        let mut cfg = vigil_cloud::CloudConfig::default();
        cfg.mqtt.port = port;
        cfg.data_dir = dir.path().join("cloud");
        cfg.models.train_every_secs = 0;
        let listener = vigil_core::telemetry::bind("127.0.0.1:0").await?;
        tokio::spawn(vigil_cloud::run(
            cfg,
            listener,
            vigil_cloud::CloudMetrics::new()?,
            stop.clone(),
        ));
    }
    let mut edge = spawn_edge(dir.path(), port, series)?;
    let pid = edge.id();
    tokio::spawn(agents(port, 100.min(series), series, stop.clone()));
    let started = Instant::now();
    let spool = dir.path().join("edge/uplink.redb");
    let mut readings = Vec::new();
    let mut every = tokio::time::interval(Duration::from_secs(10));
    while started.elapsed() < Duration::from_secs(secs) {
        every.tick().await;
        if let Ok(Some(status)) = edge.try_wait() {
            anyhow::bail!("vigil-edge exited ({status}); see its log");
        }
        let Some(rss) = rss_mb(pid) else { continue };
        let spool_mb = std::fs::metadata(&spool).map_or(0.0, |m| m.len() as f64 / 1e6);
        let r = Reading {
            secs: started.elapsed().as_secs_f64(),
            rss_mb: rss,
            spool_mb,
        };
        eprintln!(
            "cloud {}: {:5.0} s  RSS {:6.1} MB  buffer file {:6.1} MB",
            if cloud_up { "up  " } else { "away" },
            r.secs,
            r.rss_mb,
            r.spool_mb
        );
        readings.push(r);
    }
    stop.cancel();
    let _ = edge.kill();
    let _ = edge.wait();
    let tail_from = (secs as f64 - 1200.0).max(secs as f64 / 3.0);
    let tail: Vec<(f64, f64)> = readings
        .iter()
        .filter(|r| r.secs >= tail_from)
        .map(|r| (r.secs, r.rss_mb))
        .collect();
    Ok(Phase {
        cloud: if cloud_up { "up" } else { "away" }.into(),
        peak_mb: readings.iter().map(|r| r.rss_mb).fold(0.0, f64::max),
        tail_mean_mb: tail.iter().map(|p| p.1).sum::<f64>() / tail.len().max(1) as f64,
        tail_slope_mb_per_min: slope_per_min(&tail),
        spool_peak_mb: readings.iter().map(|r| r.spool_mb).fold(0.0, f64::max),
        readings,
    })
}

/// Runs the phases (`up`, `away`) and reports each.
pub async fn edge_memory(
    series: usize,
    minutes: f64,
    phases: &[String],
    json: Option<&Path>,
) -> anyhow::Result<String> {
    let secs = (minutes * 60.0) as u64;
    // One broker for every phase (rumqttd runs once per process).
    let port = crate::broker::start(0, 1 << 20)?.port();
    let mut results = Vec::new();
    for p in phases {
        let up = match p.as_str() {
            "up" => true,
            "away" => false,
            other => anyhow::bail!("phase {other:?}: use up or away"),
        };
        results.push(run_phase(port, up, series, secs).await?);
    }
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    let mut out = format!(
        "edge RSS, {series} series at 1 Hz for {minutes} min per phase (tail: the last 20 min)\n"
    );
    for r in &results {
        let _ = writeln!(
            out,
            "  cloud {:<4}  peak {:6.1} MB  tail mean {:6.1} MB  tail slope {:+.3} MB/min  buffer file peak {:6.1} MB",
            r.cloud, r.peak_mb, r.tail_mean_mb, r.tail_slope_mb_per_min, r.spool_peak_mb
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_per_minute() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64 * 60.0, 2.0 * i as f64)).collect();
        assert!((slope_per_min(&pts) - 2.0).abs() < 1e-9);
        assert_eq!(slope_per_min(&[(0.0, 1.0)]), 0.0);
    }
}
