//! The agent scraping a real `prometheus-node-exporter` (the Debian
//! package, started here on a free port): its series reach the edge's
//! cache, counters as per-second rates, gauges as they are. Skipped with a
//! notice when node_exporter is absent; required with VIGIL_REQUIRE_EXTERNAL=1.

use std::process::{Command, Stdio};
use std::time::Duration;
use vigil::stack::{BrokerChoice, Stack};
use vigil_agent::scrape::ScrapeConfig;
use vigil_tests::{cached_series, installed, metric, test_options, wait_for, Killed};

const EXPORTER: &str = "prometheus-node-exporter";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_exporter_s_series_reach_the_edge_with_counters_as_rates() -> anyhow::Result<()> {
    if !installed(&[EXPORTER]) {
        return Ok(());
    }
    let port = vigil::broker::free_port()?;
    let _exporter = Killed(
        Command::new(EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let dir = tempfile::tempdir()?;
    let mut opts = test_options(
        BrokerChoice::Embedded(0),
        dir.path(),
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    );
    opts.extra_scrape.push(ScrapeConfig {
        name: "node".into(),
        url: format!("http://127.0.0.1:{port}/metrics"),
        service: None,
        interval_secs: 1.0,
        timeout_ms: 2000,
        include: vec!["node_.*".into()],
        exclude: vec![],
        max_series: 2000,
        quantile: 0.99,
    });
    let host = opts.host.clone();
    let stack = Stack::start(opts).await?;
    let outcome = check(&stack, &host).await;
    stack.stop(Duration::from_secs(5)).await;
    outcome
}

async fn check(stack: &Stack, host: &str) -> anyhow::Result<()> {
    let prefix = format!("host/{host}:node_");
    let idle = format!("{prefix}cpu_seconds_total:rate{{cpu=\"0\",mode=\"idle\"}}");
    let rows = wait_for(
        "node_exporter's CPU rate at the edge",
        Duration::from_secs(30),
        || async {
            let rows = cached_series(&stack.edge_url, &prefix).await.ok()?;
            rows.iter()
                .any(|r| r.series == idle && r.value.is_some())
                .then_some(rows)
        },
    )
    .await?;
    anyhow::ensure!(rows.len() > 50, "only {} node_ series cached", rows.len());
    // A CPU spends at most one second per second in any mode.
    let rate = rows.iter().find(|r| r.series == idle).and_then(|r| r.value);
    anyhow::ensure!(
        rate.is_some_and(|r| (0.0..=1.5).contains(&r)),
        "idle rate {rate:?}"
    );
    // Counters come only as rates; gauges as they are.
    anyhow::ensure!(
        !rows.iter().any(|r| r
            .series
            .starts_with(&format!("{prefix}cpu_seconds_total{{"))),
        "a raw counter reached the edge"
    );
    let mem = rows
        .iter()
        .find(|r| r.series == format!("{prefix}memory_MemTotal_bytes"))
        .and_then(|r| r.value);
    anyhow::ensure!(mem.is_some_and(|m| m > 1e8), "MemTotal {mem:?}");
    let up = cached_series(&stack.edge_url, &format!("host/{host}:scrape_up")).await?;
    anyhow::ensure!(
        up.iter()
            .any(|r| r.series.ends_with("{target=\"node\"}") && r.value == Some(1.0)),
        "no scrape_up for node"
    );
    let ok = metric(
        &stack.agent_url,
        "vigil_agent_scrapes_total{outcome=\"ok\",target=\"node\"}",
    )
    .await?;
    anyhow::ensure!(ok >= 2.0, "{ok} scrapes");
    Ok(())
}
