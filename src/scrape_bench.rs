//! `vigil bench scrape`: what scraping a Prometheus endpoint costs the agent.
//!
//! An exporter in this process serves SERIES series (counters with three
//! labels, as a busy service exports them, growing on every scrape). Two
//! real agents (`vigil agent`, their own processes) run on an embedded
//! broker with an edge's presence retained, so they publish what they
//! collect: one scrapes the exporter every INTERVAL seconds, the other does
//! everything else alike and scrapes nothing. Over SECS, after 10 s of
//! warm-up, the report gives both agents' CPU and the difference (what the
//! scrape costs), with the series the agent sent and its scrape duration;
//! and, in this process, the median time to parse and convert one
//! scrape (the agent's work off its async threads) against a bare
//! line split of the same text.

use crate::intake_bench::edge_metric;
use crate::procstat::cpu_secs;
use anyhow::Context;
use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_agent::scrape::convert::{Converter, Filter};
use vigil_agent::scrape::ScrapeConfig;
use vigil_core::message::{Presence, PresenceState};
use vigil_core::topic;

const SITE: &str = "bench";
const WARMUP: Duration = Duration::from_secs(10);

/// What to scrape.
#[derive(Clone, Copy, Debug)]
pub struct ScrapeOptions {
    /// Series the exporter serves.
    pub series: usize,
    /// Seconds between scrapes.
    pub interval_secs: f64,
    /// Seconds measured, after the warm-up.
    pub secs: u64,
}

/// The exposition after `n` scrapes: `series` counters.
fn exposition(series: usize, n: u64) -> String {
    let mut out = String::with_capacity(series * 80 + 100);
    out.push_str(
        "# HELP bench_requests_total Requests answered.\n# TYPE bench_requests_total counter\n",
    );
    for i in 0..series {
        let code = if i % 10 == 9 { 500 } else { 200 };
        let _ = writeln!(
            out,
            "bench_requests_total{{route=\"/api/v{}\",code=\"{code}\",method=\"GET\"}} {}",
            i / 10,
            n * (i as u64 % 7 + 1)
        );
    }
    out
}

/// Serves [`exposition`] on a free port; returns its URL.
async fn exporter(series: usize) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let scrapes = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let n = scrapes.fetch_add(1, Ordering::Relaxed);
            async move { exposition(series, n) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/metrics"))
}

/// Starts `vigil agent` from `exe` as host `host`, scraping `scrape`.
fn spawn_agent(
    exe: &std::path::Path,
    dir: &std::path::Path,
    (host, port): (&str, u16),
    scrape: Vec<ScrapeConfig>,
) -> anyhow::Result<(Child, String)> {
    let listen = format!("127.0.0.1:{}", crate::broker::free_port()?);
    let mut cfg = vigil_agent::AgentConfig {
        site: SITE.into(),
        host: host.into(),
        listen: listen.clone(),
        data_dir: dir.join(host),
        scrape,
        ..Default::default()
    };
    cfg.mqtt.port = port;
    let path = dir.join(format!("{host}.yaml"));
    std::fs::write(&path, serde_yaml_ng::to_string(&cfg)?)?;
    let child = Command::new(exe)
        .arg("agent")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(
            dir.join(format!("{host}.log")),
        )?))
        .spawn()
        .with_context(|| format!("starting {} agent", exe.display()))?;
    Ok((child, format!("http://{listen}")))
}

/// Retains an online edge presence for the site, so the agents publish.
async fn edge_presence(port: u16) -> anyhow::Result<()> {
    let opts = rumqttc::MqttOptions::new("bench-edge", "127.0.0.1", port);
    let (client, mut ev) = rumqttc::AsyncClient::new(opts, 16);
    let p = Presence {
        node: "bench-edge".into(),
        role: "edge".into(),
        state: PresenceState::Online,
        ts_ms: vigil_core::clock::now_ms(),
        actions: vec![],
    };
    client
        .publish(
            topic::edge_presence(SITE),
            rumqttc::QoS::AtLeastOnce,
            true,
            vigil_core::encode(&p),
        )
        .await?;
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    Ok(())
}

/// Median milliseconds of `f` over `runs`.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Runs the benchmark and reports it.
pub async fn run(o: ScrapeOptions) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    let broker = crate::broker::start(0, 1 << 20)?;
    edge_presence(broker.port()).await?;
    let url = exporter(o.series).await?;
    let target = ScrapeConfig {
        name: "bench".into(),
        url,
        service: None,
        interval_secs: o.interval_secs,
        timeout_ms: 5000,
        include: vec![],
        exclude: vec![],
        max_series: o.series.max(1),
        quantile: 0.99,
    };
    let (mut with, with_url) =
        spawn_agent(&exe, dir.path(), ("scraping", broker.port()), vec![target])?;
    let (mut without, _) = spawn_agent(&exe, dir.path(), ("plain", broker.port()), vec![])?;
    tokio::time::sleep(WARMUP).await;
    let cpu = |c: &Child| cpu_secs(c.id()).unwrap_or(f64::NAN);
    let (a0, b0, t0) = (cpu(&with), cpu(&without), Instant::now());
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    let (a1, b1, secs) = (cpu(&with), cpu(&without), t0.elapsed().as_secs_f64());
    let metric = |name| edge_metric(&with_url, name);
    let sent = metric("vigil_agent_scrape_series{target=\"bench\"}").await;
    let took = metric("vigil_agent_scrape_duration_seconds{target=\"bench\"}").await;
    let ok = metric("vigil_agent_scrapes_total{outcome=\"ok\",target=\"bench\"}").await;
    for c in [&mut with, &mut without] {
        let _ = c.kill();
        let _ = c.wait();
    }
    // The same work in this process: parse and convert one scrape, against
    // splitting its lines.
    let mut conv = Converter::new(Filter::new(&[], &[])?, o.series.max(1), 0.99);
    let (parse_ms, split_ms) = tokio::task::spawn_blocking(move || {
        let mut n = 0u64;
        let parse_ms = median_ms(21, || {
            n += 1;
            let text = exposition(o.series, n);
            if let Ok(s) = vigil_agent::scrape::parse(&text) {
                std::hint::black_box(conv.convert(&s, n as i64 * 1000));
            }
        });
        let text = exposition(o.series, 1);
        let make_ms = median_ms(21, || {
            std::hint::black_box(exposition(o.series, n));
        });
        let split_ms = median_ms(21, || {
            std::hint::black_box(text.lines().map(|l| l.split(' ').count()).sum::<usize>());
        });
        (parse_ms - make_ms, split_ms)
    })
    .await?;
    let pct = |x0: f64, x1: f64| 100.0 * (x1 - x0) / secs;
    let (pa, pb) = (pct(a0, a1), pct(b0, b1));
    let mut r = String::new();
    writeln!(
        r,
        "| agent | CPU, % of one core | series sent per scrape | last scrape took | scrapes ok |"
    )?;
    writeln!(r, "|---|---|---|---|---|")?;
    writeln!(
        r,
        "| scraping {} series every {} s | {pa:.2} | {sent:.0} | {:.1} ms | {ok:.0} |",
        o.series,
        o.interval_secs,
        took * 1e3,
    )?;
    writeln!(r, "| the same, scraping nothing | {pb:.2} | - | - | - |")?;
    writeln!(
        r,
        "\nthe scrape costs {:.2} % of a core over {secs:.0} s; in this process one scrape's parse and convert takes {parse_ms:.2} ms (median of 21), splitting its lines alone {split_ms:.2} ms",
        pa - pb
    )?;
    Ok(r)
}
