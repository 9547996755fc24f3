//! A real Prometheus (the Debian package) scraping a real node_exporter and
//! remote-writing to the stack's edge: its series are cached and scored at
//! the edge, counters as rates. Then what Prometheus must be told to drop
//! is refused with the status it acts on, and counted: a garbage body, a
//! wrong content type, a cardinality flood. Skipped with a notice when
//! prometheus or node_exporter is absent; required with
//! VIGIL_REQUIRE_EXTERNAL=1.

use prost::Message as _;
use std::process::{Command, Stdio};
use std::time::Duration;
use vigil::stack::{BrokerChoice, Stack};
use vigil_edge::remote_write::proto;
use vigil_tests::{cached_series, installed, metric, test_options, wait_for, Killed};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_remote_writes_to_the_edge_and_bad_writes_are_refused() -> anyhow::Result<()> {
    let exporter = "prometheus-node-exporter";
    if !installed(&["prometheus", exporter]) {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let node_port = vigil::broker::free_port()?;
    let _node = Killed(
        Command::new(exporter)
            .arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let opts = test_options(
        BrokerChoice::Embedded(0),
        &tmp.path().join("stack"),
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    );
    let stack = Stack::start(opts).await?;
    let outcome = run(&stack, tmp.path(), node_port).await;
    stack.stop(Duration::from_secs(5)).await;
    outcome
}

async fn run(stack: &Stack, tmp: &std::path::Path, node_port: u16) -> anyhow::Result<()> {
    let prom_port = vigil::broker::free_port()?;
    let config = format!(
        "global: {{ scrape_interval: 1s }}\n\
         scrape_configs:\n  - job_name: node\n    static_configs: [{{ targets: ['127.0.0.1:{node_port}'] }}]\n\
         remote_write:\n  - url: {edge}/api/v1/write\n    authorization: {{ credentials: {token} }}\n    queue_config: {{ batch_send_deadline: 1s, min_backoff: 100ms }}\n    metadata_config: {{ send_interval: 1s }}\n",
        edge = stack.edge_url,
        token = stack.api_token,
    );
    let path = tmp.join("prometheus.yml");
    std::fs::write(&path, config)?;
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                tmp.join("prometheus.log"),
            )?))
            .spawn()?,
    );
    let entity = format!("service/127.0.0.1-{node_port}/node");
    let idle = format!("{entity}:node_cpu_seconds_total:rate{{cpu=\"0\",mode=\"idle\"}}");
    let http = reqwest::Client::new();
    let rows = wait_for(
        "node_exporter's series at the edge, scored",
        Duration::from_secs(60),
        || async {
            let rows = cached_series(&stack.edge_url, &entity).await.ok()?;
            rows.iter()
                .any(|r| r.series == idle && r.scored)
                .then_some(rows)
        },
    )
    .await?;
    anyhow::ensure!(rows.len() > 50, "only {} series", rows.len());
    let rate = rows.iter().find(|r| r.series == idle).and_then(|r| r.value);
    anyhow::ensure!(
        rate.is_some_and(|r| (0.0..=1.5).contains(&r)),
        "idle rate {rate:?}"
    );
    let ok = metric(
        &stack.edge_url,
        "vigil_edge_remote_write_requests_total{outcome=\"ok\"}",
    )
    .await?;
    anyhow::ensure!(ok >= 1.0, "{ok} requests from Prometheus");

    // What Prometheus must drop, each with its status, each counted.
    let write = |body: Vec<u8>, content_type: &'static str| {
        http.post(format!("{}/api/v1/write", stack.edge_url))
            .header("content-type", content_type)
            .header("content-encoding", "snappy")
            .bearer_auth(&stack.api_token)
            .body(body)
            .send()
    };
    let garbage = write(b"not snappy at all".to_vec(), "application/x-protobuf").await?;
    anyhow::ensure!(garbage.status() == 400, "garbage: {}", garbage.status());
    let json = write(flood(1), "application/json").await?;
    anyhow::ensure!(json.status() == 415, "content type: {}", json.status());
    let flooded = write(flood(12_000), "application/x-protobuf").await?;
    anyhow::ensure!(flooded.status() == 400, "flood: {}", flooded.status());
    let refused = metric(
        &stack.edge_url,
        "vigil_edge_remote_write_refused_samples_total{reason=\"cardinality\"}",
    )
    .await?;
    anyhow::ensure!(
        refused >= 2000.0,
        "{refused} refused of a 12,000-series flood over 10,000"
    );
    for outcome in ["bad_snappy", "content_type", "partial"] {
        let n = metric(
            &stack.edge_url,
            &format!("vigil_edge_remote_write_requests_total{{outcome=\"{outcome}\"}}"),
        )
        .await?;
        anyhow::ensure!(n >= 1.0, "{outcome} not counted");
    }
    let series = metric(&stack.edge_url, "vigil_edge_remote_write_series").await?;
    anyhow::ensure!(series <= 10_000.0, "{series} series taken");
    Ok(())
}

/// A request of `n` new gauge series, one sample each.
fn flood(n: usize) -> Vec<u8> {
    let now = vigil_core::clock::now_ms();
    let req = proto::WriteRequest {
        timeseries: (0..n)
            .map(|i| proto::TimeSeries {
                labels: vec![
                    proto::Label {
                        name: "__name__".into(),
                        value: "flood".into(),
                    },
                    proto::Label {
                        name: "id".into(),
                        value: i.to_string(),
                    },
                    proto::Label {
                        name: "instance".into(),
                        value: "flooder".into(),
                    },
                ],
                samples: vec![proto::Sample {
                    value: 1.0,
                    timestamp: now,
                }],
            })
            .collect(),
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap_or_default()
}
