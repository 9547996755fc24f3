//! `vigil bench remote-write`: how many remote-written samples a second the
//! edge takes on one core, against a bare HTTP sink taking the same
//! requests in the same run.
//!
//! A real edge (`vigil edge`, its own process, remote write on) and a bare
//! sink (`vigil bench sink`: an HTTP server that reads each body and
//! answers 204, nothing else) each run pinned to CPU 0 (`taskset`), one
//! after the other; this process, on the other CPU, sends them
//! snappy-compressed `WriteRequest`s as Prometheus does (SERIES series in
//! requests of PER samples, one sample a series each, from CLIENTS
//! connections at once, as Prometheus's shards) as fast as they answer, for
//! SECS each after 5 s of warm-up. The report gives the samples a second
//! each took (answered 2xx), the edge's own count of samples it handed to
//! its cache, and each one's CPU.

use crate::procstat::cpu_secs;
use anyhow::Context;
use prost::Message as _;
use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_edge::remote_write::proto;

const TOKEN: &str = "bench-token-0123456789";

/// What to send.
#[derive(Clone, Copy, Debug)]
pub struct WriteOptions {
    /// Series in all.
    pub series: usize,
    /// Samples per request.
    pub per: usize,
    /// Requests in flight at once.
    pub clients: usize,
    /// Seconds measured per target.
    pub secs: u64,
}

/// Request `k`: PER series of the SERIES, one sample each, stamped `ts`.
fn request(o: &WriteOptions, k: usize, ts: i64) -> Vec<u8> {
    let groups = (o.series / o.per).max(1);
    let first = (k % groups) * o.per;
    let label = |name: &str, value: String| proto::Label {
        name: name.into(),
        value,
    };
    let req = proto::WriteRequest {
        timeseries: (first..first + o.per)
            .map(|i| proto::TimeSeries {
                labels: vec![
                    label("__name__", "bench_value".into()),
                    label("id", (i % 100).to_string()),
                    label("instance", format!("host-{}:9100", i / 100)),
                    label("job", "bench".into()),
                ],
                samples: vec![proto::Sample {
                    value: ((ts / 1000) as f64 + i as f64).sin(),
                    timestamp: ts,
                }],
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap_or_default()
}

/// Runs `vigil` from `exe` with `args` on CPU 0 (when taskset is there).
fn pinned(exe: &std::path::Path, args: &[&str], log: std::fs::File) -> anyhow::Result<Child> {
    let mut cmd = match crate::procstat::installed("taskset", "--version") {
        true => {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(exe);
            c
        }
        false => Command::new(exe),
    };
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))
}

/// Waits until `url` answers at all.
async fn up(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(url).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// What one target took.
struct Took {
    samples_per_sec: f64,
    cpu_pct: f64,
    refused: u64,
}

/// Sends to `url` from CLIENTS connections for 5 s, then SECS measured.
async fn drive(url: &str, o: WriteOptions, pid: u32) -> anyhow::Result<Took> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(o.clients)
        .build()?;
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let next = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..o.clients {
        let (client, url, ok, refused, next, stop) = (
            client.clone(),
            url.to_string(),
            ok.clone(),
            refused.clone(),
            next.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                let body = request(&o, k, vigil_core::clock::now_ms());
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "snappy")
                    .header("x-prometheus-remote-write-version", "0.1.0")
                    .bearer_auth(TOKEN)
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        ok.fetch_add(o.per as u64, Ordering::Relaxed)
                    }
                    _ => refused.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (n0, c0, t0) = (
        ok.load(Ordering::Relaxed),
        cpu_secs(pid).unwrap_or(f64::NAN),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    let (n1, c1, secs) = (
        ok.load(Ordering::Relaxed),
        cpu_secs(pid).unwrap_or(f64::NAN),
        t0.elapsed().as_secs_f64(),
    );
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    Ok(Took {
        samples_per_sec: (n1 - n0) as f64 / secs,
        cpu_pct: 100.0 * (c1 - c0) / secs,
        refused: refused.load(Ordering::Relaxed),
    })
}

/// Runs the benchmark and reports it.
pub async fn run(o: WriteOptions) -> anyhow::Result<String> {
    anyhow::ensure!(
        o.per > 0 && o.series >= o.per && o.clients > 0,
        "need series >= per > 0 and clients > 0"
    );
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    let broker = crate::broker::start(0, 1 << 20)?;
    let listen = format!("127.0.0.1:{}", crate::broker::free_port()?);
    let mut cfg =
        crate::memory_bench::edge_config("bench", dir.path(), (broker.port(), &listen), o.series);
    cfg.api_token = Some(TOKEN.into());
    cfg.remote_write.enabled = true;
    cfg.remote_write.max_series = o.series;
    let path = dir.path().join("edge.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&cfg)?)?;
    let log = std::fs::File::create(dir.path().join("edge.log"))?;
    let mut edge = pinned(
        &exe,
        &["edge", "--config", path.to_str().unwrap_or_default()],
        log,
    )?;
    let base = format!("http://{listen}");
    up(&format!("{base}/healthz")).await?;
    let at_edge = drive(&format!("{base}/api/v1/write"), o, edge.id()).await;
    let handed =
        crate::intake_bench::edge_metric(&base, "vigil_edge_remote_write_samples_total").await;
    let _ = edge.kill();
    let _ = edge.wait();
    let at_edge = at_edge?;

    let sink_listen = format!("127.0.0.1:{}", crate::broker::free_port()?);
    let log = std::fs::File::create(dir.path().join("sink.log"))?;
    let mut sink = pinned(&exe, &["bench", "sink", "--listen", &sink_listen], log)?;
    up(&format!("http://{sink_listen}/")).await?;
    let at_sink = drive(&format!("http://{sink_listen}/api/v1/write"), o, sink.id()).await;
    let _ = sink.kill();
    let _ = sink.wait();
    let at_sink = at_sink?;

    let mut r = String::new();
    writeln!(
        r,
        "{} series, {} samples a request, {} in flight, {} s each, both on CPU 0",
        o.series, o.per, o.clients, o.secs
    )?;
    writeln!(
        r,
        "\n| target | samples/s taken (2xx) | CPU, % of one core | requests refused |"
    )?;
    writeln!(r, "|---|---|---|---|")?;
    writeln!(
        r,
        "| vigil edge (decode, convert, cache, score) | {:.0} | {:.0} | {} |",
        at_edge.samples_per_sec, at_edge.cpu_pct, at_edge.refused
    )?;
    writeln!(
        r,
        "| bare HTTP sink (read body, 204) | {:.0} | {:.0} | {} |",
        at_sink.samples_per_sec, at_sink.cpu_pct, at_sink.refused
    )?;
    writeln!(
        r,
        "\nedge / sink: {:.2}; the edge handed {:.0} samples to its cache in all",
        at_edge.samples_per_sec / at_sink.samples_per_sec,
        handed
    )?;
    Ok(r)
}

/// `vigil bench sink`: reads each request's body and answers 204.
pub async fn sink(listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "sink\n" }))
        .route(
            "/api/v1/write",
            axum::routing::post(|body: axum::body::Bytes| async move {
                std::hint::black_box(body.len());
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20));
    axum::serve(listener, app).await?;
    Ok(())
}
