//! The entity model end to end: an edge on a broker, a host publishing
//! three metrics (`cpu` and `load` move together, `mem` on its own). Once
//! the host has sent enough rows the edge fits the host's entity model;
//! then `load` breaks from `cpu` while staying inside its usual range. The
//! edge opens an anomaly naming the entity-model score and `load` as the
//! root cause with the largest share, and its metrics say one model is
//! fitted.

#![cfg(test)]

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vigil_core::clock::now_ms;
use vigil_core::message::{MetricBatch, Sample};
use vigil_core::{encode, topic, EntityId};
use vigil_tests::{get_json, metric};

const FIT_ROWS: usize = 300;

async fn start_edge(
    port: u16,
    dir: &std::path::Path,
    stop: &CancellationToken,
) -> anyhow::Result<String> {
    let mut cfg = vigil_edge::EdgeConfig {
        site: "s".into(),
        tick_ms: 100,
        data_dir: dir.join("edge"),
        ..Default::default()
    };
    cfg.mqtt.port = port;
    cfg.entity_model.fit_rows = FIT_ROWS;
    cfg.entity_model.refit_rows = 100_000;
    cfg.entity_model.risk = 1e-4;
    vigil_tests::start_edge(cfg, stop).await
}

/// The host's three metrics at row `t`; `broken`: `load` runs against `cpu`.
fn row(t: usize, ts_ms: i64, broken: bool) -> Vec<Sample> {
    let wave = (t as f64 / 25.0).sin();
    let noise = |k: usize| (((t * 7919 + k * 104_729) % 1000) as f64 / 1000.0 - 0.5) * 0.02;
    let load = if broken { -wave } else { wave };
    [
        ("cpu", 0.5 + 0.3 * wave + noise(0)),
        ("load", 2.0 + 1.2 * load + 4.0 * noise(1)),
        ("mem", 0.4 + 0.1 * (t as f64 / 61.0).cos() + noise(2)),
    ]
    .into_iter()
    .map(|(m, value)| Sample {
        entity: EntityId::host("h1"),
        metric: m.into(),
        ts_ms,
        value,
    })
    .collect()
}

/// The anomalies the edge has opened for host/h1 with an entity score.
async fn entity_anomalies(edge: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let all = get_json(&format!("{edge}/api/v1/anomalies")).await?;
    Ok(all
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["entity"] == "host/h1" && a["entity_score"].is_number())
        .cloned()
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_relation_is_found_and_its_metric_named() -> anyhow::Result<()> {
    let port = vigil::broker::start(0, 1 << 20)?.port();
    let dir = tempfile::tempdir()?;
    let stop = CancellationToken::new();
    let edge = start_edge(port, dir.path(), &stop).await?;
    let (client, mut ev) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("host", "127.0.0.1", port), 64);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    // One row per tick, each on its own tick: the edge's 100 ms.
    let mut every = tokio::time::interval(Duration::from_millis(100));
    let send = |t: usize, broken: bool| {
        let batch = MetricBatch {
            host: "h1".into(),
            seq: t as u64 + 1,
            samples: row(t, now_ms(), broken),
        };
        let client = client.clone();
        async move {
            client
                .publish(
                    topic::metrics("s", "h1"),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    encode(&batch),
                )
                .await
        }
    };
    let mut t = 0;
    while metric(&edge, "vigil_edge_entity_models").await? < 1.0 {
        every.tick().await;
        send(t, false).await?;
        t += 1;
        anyhow::ensure!(t < FIT_ROWS * 3, "no entity model after {t} rows");
    }
    // A while of normal rows after the fit: no entity-model anomaly.
    for _ in 0..50 {
        every.tick().await;
        send(t, false).await?;
        t += 1;
    }
    assert!(
        entity_anomalies(&edge).await?.is_empty(),
        "{:?}",
        entity_anomalies(&edge).await?
    );
    // `load` breaks from `cpu`.
    let mut found = None;
    for _ in 0..100 {
        every.tick().await;
        send(t, true).await?;
        t += 1;
        if let Some(a) = entity_anomalies(&edge).await?.into_iter().next() {
            found = Some(a);
            break;
        }
    }
    let a = found.ok_or_else(|| anyhow::anyhow!("no entity-model anomaly after the break"))?;
    assert!(a["entity_score"].as_f64().unwrap_or(0.0) >= 1.0, "{a}");
    assert_eq!(a["root_cause"][0]["metric"], "load", "{a}");
    let shares: Vec<f64> = a["root_cause"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["share"].as_f64())
        .collect();
    assert_eq!(shares.len(), 3, "{a}");
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{a}");
    assert!(shares[0] >= shares[1] && shares[1] >= shares[2], "{a}");
    assert_eq!(metric(&edge, "vigil_edge_entity_models").await?, 1.0);
    assert!(metric(&edge, "vigil_edge_entity_model_bytes").await? > 0.0);
    stop.cancel();
    Ok(())
}
