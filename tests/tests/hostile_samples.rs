//! Hostile samples at the edge, counted exactly: NaN and infinite readings,
//! a sample out of order, one repeated, one far in the future and one far in
//! the past, one of 1.7e308, and a flood of 20,000 new series names against
//! a cache of 100. The flood churns through the slots of series that are
//! not live, a live series keeps its slot, a real sensor that comes after
//! the flood is accepted and scored, and memory stays at the cache's bound.

#![cfg(test)]

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vigil_core::clock::now_ms;
use vigil_core::message::{MetricBatch, Sample};
use vigil_core::{encode, topic, EntityId};
use vigil_tests::{metric, wait_for};

fn sample(metric: &str, ts_ms: i64) -> Sample {
    Sample {
        entity: EntityId::host("h1"),
        metric: metric.into(),
        ts_ms,
        value: 1.0,
    }
}

/// An edge with a cache of 100 series on a fresh broker; its URL.
async fn start_edge(
    port: u16,
    dir: &std::path::Path,
    stop: &CancellationToken,
) -> anyhow::Result<String> {
    let mut cfg = vigil_edge::EdgeConfig {
        site: "s".into(),
        tick_ms: 100,
        data_dir: dir.join("edge"),
        max_message_bytes: 4 << 20,
        ..Default::default()
    };
    cfg.mqtt.port = port;
    cfg.mqtt.max_packet_bytes = 4 << 20;
    cfg.cache.max_series = 100;
    // The churn of the cache is under test here, not the sender's intake
    // limits (tests/flood.rs): let the 20,000 new names in.
    cfg.intake.max_new_series_per_sec = 1_000_000;
    cfg.intake.burst_new_series = 1_000_000;
    vigil_tests::start_edge(cfg, stop).await
}

/// Publishes the bad samples, the bad sensor readings, the flood of 20,000
/// new names and then a real sensor; the client is kept for the test's
/// length (its event loop stops when the last client goes).
async fn publish_hostile(port: u16, now: i64) -> anyhow::Result<rumqttc::AsyncClient> {
    let mut opts = rumqttc::MqttOptions::new("hostile", "127.0.0.1", port);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut ev) = rumqttc::AsyncClient::new(opts, 64);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let publish = |topic: String, bytes: Vec<u8>| {
        let client = client.clone();
        async move {
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, bytes)
                .await
        }
    };
    let bad = MetricBatch {
        host: "h1".into(),
        seq: 1,
        samples: vec![
            sample("m0", now),
            sample("m0", now - 1000),           // out of order
            sample("m0", now),                  // the same timestamp again
            sample("m1", now + 3_600_000),      // an hour ahead
            sample("m2", now - 2 * 86_400_000), // two days old
            Sample {
                value: 1.7e308, // no real reading
                ..sample("m3", now)
            },
            // A live series: samples a second apart.
            sample("steady", now - 2000),
            sample("steady", now - 1000),
            sample("steady", now),
        ],
    };
    publish(topic::metrics("s", "h1"), encode(&bad)).await?;
    for reading in ["NaN", "inf", "-inf", r#"{"value": 1e999}"#] {
        publish(topic::sensor("s", "t1"), reading.as_bytes().to_vec()).await?;
    }
    // 20,000 new names, 99 of which fit beside m0.
    for b in 0..20 {
        let flood = MetricBatch {
            host: "h1".into(),
            seq: 2 + b,
            samples: (0..1000)
                .map(|i| sample(&format!("flood-{b}-{i}"), now))
                .collect(),
        };
        publish(topic::metrics("s", "h1"), encode(&flood)).await?;
    }
    // A real sensor after the flood.
    publish(topic::sensor("s", "t-new"), b"21.5".to_vec()).await?;
    Ok(client)
}

/// Each counter and what it must read: new series are m0, steady, 20,000
/// flood names and t-new, in 100 slots.
fn expected() -> Vec<(String, f64)> {
    let refused = |r: &str| format!("vigil_edge_samples_refused_total{{reason=\"{r}\"}}");
    // New series: m0, steady, 20,000 flood names and t-new, in 100 slots.
    let displaced = 1.0 + 1.0 + 20_000.0 + 1.0 - 100.0;
    vec![
        (refused("out_of_order"), 1.0),
        (refused("duplicate"), 1.0),
        (refused("future"), 1.0),
        (refused("past"), 1.0),
        (refused("too_large"), 1.0),
        // NaN, inf and -inf from the sensor (a batch's JSON cannot carry them).
        (refused("not_finite"), 3.0),
        (refused("cache_full"), 0.0),
        (
            "vigil_edge_series_evicted_total{reason=\"room\"}".to_string(),
            displaced,
        ),
        (
            "vigil_edge_samples_total".to_string(),
            1.0 + 3.0 + 20_000.0 + 1.0,
        ),
        ("vigil_edge_series".to_string(), 100.0),
        (
            "vigil_messages_received_total{kind=\"sensor\"}".to_string(),
            5.0,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_samples_and_a_series_flood_are_refused_and_counted() -> anyhow::Result<()> {
    let port = vigil::broker::start(0, 4 << 20)?.port();
    let dir = tempfile::tempdir()?;
    let stop = CancellationToken::new();
    let edge = start_edge(port, dir.path(), &stop).await?;
    let _client = publish_hostile(port, now_ms()).await?;
    let want = expected();
    let got = wait_for("every refusal counted", Duration::from_secs(30), || async {
        let mut got = Vec::new();
        for (name, _) in &want {
            got.push(metric(&edge, name).await.ok()?);
        }
        (got.iter().zip(&want).all(|(g, (_, w))| g == w)).then_some(got)
    })
    .await;
    if got.is_err() {
        for (name, w) in &want {
            println!("{name}: {} (want {w})", metric(&edge, name).await?);
        }
    }
    got?;
    // Only the reading JSON cannot hold (1e999) is a malformed message.
    assert_eq!(
        metric(
            &edge,
            "vigil_messages_malformed_total{reason=\"malformed\"}"
        )
        .await?,
        1.0
    );
    // Still scoring, still serving.
    let ticks = metric(&edge, "vigil_edge_tick_duration_seconds_count").await?;
    wait_for("more ticks", Duration::from_secs(10), || async {
        (metric(&edge, "vigil_edge_tick_duration_seconds_count")
            .await
            .ok()?
            > ticks + 5.0)
            .then_some(())
    })
    .await?;
    let series = vigil_tests::get_json(&format!("{edge}/api/v1/series")).await?;
    assert_eq!(series.as_array().map(Vec::len), Some(100));
    let row = |name: &str| {
        series
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["series"] == name)
            .cloned()
    };
    assert!(
        row("host/h1:steady").is_some(),
        "the live series kept its slot"
    );
    let sensor = row("sensor/t-new:value").expect("the new sensor is cached");
    assert_eq!(sensor["scored"], true, "{sensor}");
    stop.cancel();
    Ok(())
}

/// One message stamped four minutes ahead (its samples only, and a whole
/// envelope from a clock four minutes fast) must not blind the service's
/// series: a crash ten seconds later is detected and healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_future_timestamp_does_not_stop_detection() -> anyhow::Result<()> {
    use vigil::stack::{BrokerChoice, Stack};
    let dir = tempfile::tempdir()?;
    let stack = Stack::start(vigil_tests::test_options(
        BrokerChoice::Embedded(0),
        dir.path(),
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    ))
    .await?;
    let result = async {
        vigil_tests::wait_until_warm(&stack).await?;
        let mut opts =
            rumqttc::MqttOptions::new("skewed", stack.broker.ip().to_string(), stack.broker.port());
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = rumqttc::AsyncClient::new(opts, 16);
        tokio::spawn(async move { while ev.poll().await.is_ok() {} });
        let ahead = now_ms() + 240_000;
        let forged = MetricBatch {
            host: "demo-host".into(),
            seq: 1,
            samples: vec![Sample {
                entity: stack.target.clone(),
                metric: "up".into(),
                ts_ms: ahead,
                value: 1.0,
            }],
        };
        let metrics_topic = topic::metrics("demo", "demo-host");
        let fast_clock = format!(
            r#"{{"v":1,"kind":"metrics","sent_ms":{ahead},"body":{}}}"#,
            serde_json::to_string(&forged)?
        );
        for bytes in [encode(&forged), fast_clock.into_bytes()] {
            client
                .publish(&metrics_topic, rumqttc::QoS::AtLeastOnce, false, bytes)
                .await?;
        }
        let edge = stack.edge_url.as_str();
        wait_for(
            "both to be placed at arrival",
            Duration::from_secs(10),
            || async {
                let ahead = metric(edge, "vigil_edge_samples_restamped_total{reason=\"ahead\"}")
                    .await
                    .ok()?;
                let clock = metric(
                    edge,
                    "vigil_edge_samples_restamped_total{reason=\"sender_clock\"}",
                )
                .await
                .ok()?;
                (ahead >= 1.0 && clock >= 1.0).then_some(())
            },
        )
        .await?;
        let refused = "vigil_edge_samples_refused_total{reason=\"out_of_order\"}";
        let before = metric(edge, refused).await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        // The real samples kept coming in: at most the one the forged
        // sample's arrival pushed out of order was refused.
        assert!(metric(edge, refused).await? <= before + 2.0);
        let index = stack.tracker.lock().map(|t| t.report().len()).unwrap_or(0);
        stack.inject(vigil::demo::FaultKind::Crash).await?;
        vigil_tests::wait_healed(&stack, index, "crash").await?;
        anyhow::Ok(())
    }
    .await;
    assert!(stack.stop(Duration::from_secs(5)).await);
    result
}
