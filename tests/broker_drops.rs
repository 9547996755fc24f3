//! A message the broker drops for the edge is visible in the edge's own
//! metrics and log. A real Mosquitto (its queue per client cut to 50
//! messages) and a real edge (`vigil edge`, its own process, stopped with
//! SIGSTOP so it reads nothing): 500 numbered agent batches overflow the
//! edge's queue at the broker; after SIGCONT and a few more batches, the
//! edge's count of batches that never arrived equals the broker's own count
//! of dropped messages (`$SYS`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vigil::intake_bench::{broker_dropped, edge_metric, spawn_edge};
use vigil::mosquitto::Mosquitto;
use vigil::procstat::signal;
use vigil_core::message::{MetricBatch, Sample};
use vigil_core::{encode, topic, EntityId};

const RECEIVED: &str = "vigil_messages_received_total{kind=\"metrics\"}";
const MISSING: &str = "vigil_edge_agent_batches_missing_total";

async fn until(what: &str, secs: u64, mut ok: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok().await {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn batch(seq: u64) -> Vec<u8> {
    let samples = (0..16)
        .map(|m| Sample {
            entity: EntityId::host("h1"),
            metric: format!("m{m}"),
            ts_ms: vigil_core::clock::now_ms(),
            value: m as f64,
        })
        .collect();
    encode(&MetricBatch {
        host: "h1".into(),
        seq,
        samples,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_the_broker_drops_for_the_edge_are_counted_by_the_edge() -> anyhow::Result<()> {
    let conf = "allow_anonymous true\nsys_interval 1\nmax_queued_messages 50\n";
    let Some(broker) = Mosquitto::start_with(conf)? else {
        let required = std::env::var("VIGIL_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1");
        assert!(!required, "mosquitto is required");
        eprintln!("skipped: mosquitto is not installed");
        return Ok(());
    };
    let port = broker.addr.port();
    let dir = tempfile::tempdir()?;
    let listen = format!("127.0.0.1:{}", vigil::broker::free_port()?);
    let url = format!("http://{listen}");
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_vigil"));
    let mut edge = spawn_edge(exe, dir.path(), (port, &listen), 100)?;
    let stop = CancellationToken::new();
    let dropped = Arc::new(AtomicU64::new(0));
    tokio::spawn(broker_dropped(port, dropped.clone(), stop.clone()));

    let opts = rumqttc::MqttOptions::new("fake-agent", "127.0.0.1", port);
    let (agent, mut ev) = rumqttc::AsyncClient::new(opts, 1024);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let t = topic::metrics("bench", "h1");
    let qos = rumqttc::QoS::AtLeastOnce;
    // Batch 1 arrives while the edge reads: it is subscribed.
    until("the edge to take batch 1", 30, async || {
        let _ = agent.publish(&t, qos, false, batch(1)).await;
        edge_metric(&url, RECEIVED).await >= 1.0
    })
    .await?;
    // Batch 1 may have gone more than once before the edge listened.
    let first = edge_metric(&url, RECEIVED).await as u64;

    signal(edge.id(), "-STOP")?;
    for seq in 2..=501 {
        agent.publish(&t, qos, false, batch(seq)).await?;
    }
    until("the broker to count drops", 20, async || {
        dropped.load(Ordering::Relaxed) > 0
    })
    .await?;
    signal(edge.id(), "-CONT")?;
    // A batch sent while the broker still drains the edge's full queue may
    // be dropped too: send more until the edge has taken or counted every
    // batch so far (a gap shows only when a later batch arrives).
    let mut last = 501;
    let mut every = 0;
    until("the edge to account for every batch", 30, async || {
        last += 1;
        let _ = agent.publish(&t, qos, false, batch(last)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (got, missing) = (
            edge_metric(&url, RECEIVED).await,
            edge_metric(&url, MISSING).await,
        );
        every = last - 1 + first;
        got + missing >= every as f64
    })
    .await?;
    // $SYS is published every second: let the broker's count settle.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let broker_count = dropped.load(Ordering::Relaxed);
    let missing = edge_metric(&url, MISSING).await as u64;
    let received = edge_metric(&url, RECEIVED).await as u64;
    stop.cancel();
    let _ = edge.kill();
    let _ = edge.wait();
    let log = std::fs::read_to_string(dir.path().join("edge.log"))?;
    eprintln!("received {received}, missing {missing}, broker dropped {broker_count}");
    assert!(broker_count > 0);
    assert_eq!(
        missing, broker_count,
        "received {received}, broker dropped {broker_count}"
    );
    assert_eq!(
        received + missing,
        every,
        "every batch is received or counted missing"
    );
    assert!(log.contains("never arrived"), "{log}");
    Ok(())
}
