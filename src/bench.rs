//! `vigil bench train|rollout`: the model lifecycle's costs, measured.
//!
//! `train` writes a synthetic fleet store as the aggregator writes it
//! (Parquet by site and hour), then times retraining on it phase by phase:
//! reading with polars, training with candle, judging at the gate.
//! `rollout` runs a cloud and N edge nodes in this process on the embedded
//! broker and times a release from the moment the cloud issues it until the
//! last edge scores with it. Medians over `runs`.

use crate::wait::wait_for;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vigil_cloud::lifecycle::rollout::CanaryConfig;
use vigil_cloud::lifecycle::train::{self, TrainConfig};
use vigil_cloud::store::Store;
use vigil_core::clock::now_ms;
use vigil_core::message::ScoredSample;
use vigil_core::EntityId;
use vigil_models::bundle::{Bundle, Training};
use vigil_models::signing::SecretKey;
use vigil_models::{Detector, DetectorConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Writes `samples` samples over `series` series (noisy waves), one per
/// second per series, ending now, as the aggregator writes them.
pub fn write_store(root: &Path, samples: usize, series: usize) -> anyhow::Result<()> {
    let per = samples / series.max(1);
    let end = now_ms();
    let mut store = Store::new(root);
    for s in 0..series {
        let entity = EntityId::host(&format!("h{:03}", s / 4));
        let metric = format!("m{}", s % 4);
        let batch: Vec<ScoredSample> = (0..per)
            .map(|t| {
                let x = t as f64 * (0.05 + s as f64 * 0.001);
                let noise = ((t as f64 * 12.9898 + s as f64).sin() * 43758.5453).fract();
                ScoredSample {
                    entity: entity.clone(),
                    metric: metric.clone(),
                    ts_ms: end - ((per - t) as i64) * 1000,
                    value: 100.0 + 20.0 * x.sin() + 2.0 * noise + s as f64,
                    score: Some(0.0),
                }
            })
            .collect();
        store.add_samples(&format!("site-{}", s % 5), &batch);
    }
    let f = store.flush(1);
    anyhow::ensure!(f.errors.is_empty(), "writing the store: {:?}", f.errors);
    Ok(())
}

/// Times retraining on a synthetic store.
pub fn train(samples: usize, series: usize, runs: usize) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    write_store(dir.path(), samples, series)?;
    let mut out = format!(
        "store: {samples} samples, {series} series, written in {:.2} s\n",
        t.elapsed().as_secs_f64()
    );
    let cfg = TrainConfig {
        min_samples: 0,
        ..TrainConfig::default()
    };
    let (mut load, mut fit, mut gate, mut total) = (vec![], vec![], vec![], vec![]);
    let mut steps = 0;
    for run in 0..runs.max(1) {
        let base = Detector::new(DetectorConfig::default())?;
        let start = Instant::now();
        let (mut trained_at, mut gating_at) = (None, None);
        let r = train::run(dir.path(), &cfg, (&base, None), now_ms(), |p| {
            if p.state == "training" && trained_at.is_none() {
                trained_at = Some(start.elapsed());
            }
            if p.state == "gating" {
                gating_at = Some(start.elapsed());
            }
            steps = p.steps;
        })?;
        let end = start.elapsed();
        let (a, b) = (
            trained_at.unwrap_or_default(),
            gating_at.unwrap_or_default(),
        );
        writeln!(
            out,
            "run {}: read + normalise {:.2} s, train {:.2} s ({} steps), gate {:.2} s, total {:.2} s; held-back loss {:?} -> {:?}, gate {}",
            run + 1,
            a.as_secs_f64(),
            (b - a).as_secs_f64(),
            steps,
            (end - b).as_secs_f64(),
            end.as_secs_f64(),
            r.verdict.current.loss,
            r.verdict.candidate.loss,
            if r.verdict.passed { "passed" } else { "refused" }
        )?;
        load.push(a.as_secs_f64());
        fit.push((b - a).as_secs_f64());
        gate.push((end - b).as_secs_f64());
        total.push(end.as_secs_f64());
    }
    writeln!(
        out,
        "median: read {:.2} s, train {:.2} s, gate {:.2} s, total {:.2} s ({:.0} samples/s end to end)",
        median(load),
        median(fit),
        median(gate),
        median(total.clone()),
        samples as f64 / median(total)
    )?;
    Ok(out)
}

/// Times a release reaching `edges` edge nodes.
pub async fn rollout(edges: usize, hidden: usize, runs: usize) -> anyhow::Result<String> {
    let port = crate::broker::start(0, 1 << 20)?.port();
    let dir = tempfile::tempdir()?;
    let stop = CancellationToken::new();
    let key = SecretKey::generate()?;
    let (cloud, token) = rollout_cloud(port, dir.path(), &key, &stop).await?;
    let public = key.public().to_text().trim().to_string();
    let urls = rollout_edges(edges, port, dir.path(), &public, &stop).await?;
    let http = reqwest::Client::new();
    wait_for("every edge online", Duration::from_secs(60), || async {
        let nodes = get(&http, &format!("{cloud}/api/v1/nodes")).await?;
        let online = nodes
            .as_array()?
            .iter()
            .filter(|n| n["online"] == true)
            .count();
        (online == edges).then_some(())
    })
    .await?;
    let mut out = String::new();
    let mut times = Vec::new();
    let model = DetectorConfig {
        hidden,
        ..DetectorConfig::default()
    };
    let mut size = 0;
    for run in 1..=runs.max(1) as u64 {
        let b = Bundle::of(
            &Detector::new(model.clone())?,
            "default",
            run,
            now_ms(),
            Training::default(),
        )?;
        let status = http
            .post(format!("{cloud}/api/v1/models/bundles"))
            .bearer_auth(&token)
            .body(b.to_bytes()?)
            .send()
            .await?
            .status();
        anyhow::ensure!(status.is_success(), "upload refused: {status}");
        size = b.to_bytes()?.len();
        // From the moment the cloud issued the release (its canary transition).
        let issued = wait_for("the release issued", Duration::from_secs(30), || async {
            let m = get(&http, &format!("{cloud}/api/v1/models")).await?;
            m["transitions"]
                .as_array()?
                .iter()
                .find(|t| t["version"] == run && t["to"] == "canary")?["ts_ms"]
                .as_i64()
        })
        .await?;
        let last = all_loaded(&http, &urls, run).await?;
        let secs = (last - issued) as f64 / 1000.0;
        writeln!(out, "release v{run}: all {edges} edges scoring with it {secs:.2} s after the cloud issued it")?;
        times.push(secs);
        // Wait for its promotion so the next release starts its own canary.
        wait_for("its promotion", Duration::from_secs(30), || async {
            let m = get(&http, &format!("{cloud}/api/v1/models")).await?;
            (m["stable"] == run).then_some(())
        })
        .await?;
    }
    writeln!(
        out,
        "median over {} releases of {size} bytes: {:.2} s",
        times.len(),
        median(times)
    )?;
    stop.cancel();
    Ok(out)
}

/// A cloud that signs with `key` and promotes every release to every node
/// after a second; its URL and API token.
async fn rollout_cloud(
    port: u16,
    dir: &Path,
    key: &SecretKey,
    stop: &CancellationToken,
) -> anyhow::Result<(String, String)> {
    let key_path = dir.join("cloud.key");
    std::fs::write(&key_path, key.to_text())?;
    let mut cfg = vigil_cloud::CloudConfig::default();
    cfg.mqtt.port = port;
    cfg.data_dir = dir.join("cloud");
    cfg.models.signing_key = Some(key_path);
    cfg.models.train_every_secs = 0;
    let token = uuid::Uuid::new_v4().simple().to_string();
    cfg.api_token = Some(token.clone());
    // Every node at once, promoted after a second: this measures transfer
    // and loading, not the canary's observation window.
    cfg.models.canary = CanaryConfig {
        share: 1.0,
        observe_secs: 1,
        min_scored: 0,
        ..CanaryConfig::default()
    };
    let listener = vigil_core::telemetry::bind("127.0.0.1:0").await?;
    let cloud = format!("http://{}", listener.local_addr()?);
    tokio::spawn(vigil_cloud::run(
        cfg,
        listener,
        vigil_cloud::CloudMetrics::new()?,
        stop.clone(),
    ));
    Ok((cloud, token))
}

/// `n` edge nodes trusting `public`; their metrics URLs.
async fn rollout_edges(
    n: usize,
    port: u16,
    dir: &Path,
    public: &str,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<String>> {
    let mut urls = Vec::new();
    for i in 0..n {
        let mut e = vigil_edge::EdgeConfig {
            site: format!("b{i:03}"),
            heartbeat_secs: 1,
            data_dir: dir.join(format!("e{i}")),
            ..Default::default()
        };
        e.mqtt.port = port;
        e.model.trusted_keys = vec![public.to_string()];
        let l = vigil_core::telemetry::bind("127.0.0.1:0").await?;
        urls.push(format!("http://{}/metrics", l.local_addr()?));
        let m = vigil_edge::EdgeMetrics::new()?;
        tokio::spawn(vigil_edge::run(e, Default::default(), l, m, stop.clone()));
    }
    Ok(urls)
}

/// Polls every edge's metrics until each scores with release `run`; when
/// the last one did (Unix ms).
async fn all_loaded(http: &reqwest::Client, urls: &[String], run: u64) -> anyhow::Result<i64> {
    let mut pending: Vec<&String> = urls.iter().collect();
    let mut last = 0i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} edges never loaded v{run}",
            pending.len()
        );
        let mut still = Vec::new();
        for u in pending {
            let text = match http.get(u.as_str()).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let loaded = text
                .lines()
                .any(|l| l == format!("vigil_edge_model_release {run}"));
            if loaded {
                last = now_ms();
            } else {
                still.push(u);
            }
        }
        pending = still;
    }
    Ok(last)
}

/// Sustained write and drain rates of the edge's uplink buffer, with one
/// durable commit per batch of `batch` messages of `bytes` bytes; the same
/// with one commit per message as the baseline.
pub fn spool(messages: usize, batch: usize, bytes: usize) -> anyhow::Result<String> {
    use vigil_edge::spool::{Priority, Spool};
    let dir = tempfile::tempdir()?;
    let mut out = String::new();
    let body = vec![b'x'; bytes];
    let topic = vigil_core::topic::uplink("s", vigil_core::topic::UplinkKind::Samples);
    for (label, per) in [
        ("one commit per message", 1),
        ("one commit per batch", batch.max(1)),
    ] {
        let mut s = Spool::open(&dir.path().join(format!("{per}.redb")), u64::MAX)?;
        let n = if per == 1 {
            messages.min(2000)
        } else {
            messages
        };
        let rows: Vec<(Priority, &str, &[u8])> = (0..per)
            .map(|_| (Priority::Scores, topic.as_str(), body.as_slice()))
            .collect();
        let start = Instant::now();
        for _ in 0..n / per {
            s.push(&rows)?;
        }
        let w = start.elapsed().as_secs_f64();
        let start = Instant::now();
        loop {
            let items = s.peek(per.max(100))?;
            if items.is_empty() {
                break;
            }
            let ids: Vec<u64> = items.iter().map(|i| i.seq).collect();
            s.ack(&ids)?;
        }
        let d = start.elapsed().as_secs_f64();
        let commits = (n / per) as f64;
        writeln!(
            out,
            "{label} ({per} x {bytes} B): write {:.0} msg/s, {:.1} MB/s, {:.2} ms per durable commit; drain {:.0} msg/s",
            n as f64 / w,
            (n * bytes) as f64 / w / 1e6,
            w / commits * 1000.0,
            n as f64 / d
        )?;
    }
    Ok(out)
}

async fn get(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}
