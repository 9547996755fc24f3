//! Fair intake: ten metric batches of 10,000 new series names each (about
//! 830 KB apiece) from one host, sent while the demo service is killed with
//! SIGKILL. The edge takes the flooding sender's first series up to its
//! limits and refuses the rest cheaply, counted per reason; the healthy
//! agent's samples are neither refused nor blamed on its clock, and the
//! kill is healed within 2 s.

#![cfg(test)]

use std::time::{Duration, Instant};
use vigil::stack::{BrokerChoice, Stack};
use vigil_core::clock::now_ms;
use vigil_core::message::{MetricBatch, Sample};
use vigil_core::{encode, topic, EntityId};
use vigil_tests::{metric, service_pid, test_options, wait_for, wait_until_warm};

/// Batch `k` of the flood: 10,000 series no other batch has.
fn flood_batch(k: u64) -> MetricBatch {
    let ts = now_ms();
    MetricBatch {
        host: "flood-host".into(),
        seq: k,
        samples: (0..10_000)
            .map(|i| Sample {
                entity: EntityId::host("flood-host"),
                metric: format!("flood_metric_{k}_{i:05}"),
                ts_ms: ts,
                value: i as f64,
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_from_one_host_delays_no_one_else() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = test_options(
        BrokerChoice::Embedded(0),
        dir.path(),
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    );
    let site = opts.site.clone();
    let stack = Stack::start(opts).await?;
    let pid = wait_until_warm(&stack).await?;
    let batches: Vec<Vec<u8>> = (1..=10).map(|k| encode(&flood_batch(k))).collect();
    assert!(
        batches.iter().all(|b| b.len() > 800_000),
        "{}",
        batches[0].len()
    );

    let mut opts =
        rumqttc::MqttOptions::new("flood", stack.broker.ip().to_string(), stack.broker.port());
    opts.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut ev) = rumqttc::AsyncClient::new(opts, 64);
    let poll = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let flood_topic = topic::metrics(&site, "flood-host");
    for b in batches {
        client
            .publish(&flood_topic, rumqttc::QoS::AtLeastOnce, false, b)
            .await?;
    }
    vigil::procstat::signal(pid as u32, "-KILL")?;
    let killed = Instant::now();
    wait_for(
        "the demo service to be restarted",
        Duration::from_secs(30),
        || async { service_pid(&stack.agent_url).await.filter(|p| *p != pid) },
    )
    .await?;
    let healed = killed.elapsed();

    let edge = &stack.edge_url;
    let out_of_order = metric(
        edge,
        "vigil_edge_samples_refused_total{reason=\"out_of_order\"}",
    )
    .await?;
    let blamed = metric(
        edge,
        "vigil_edge_samples_restamped_total{reason=\"sender_clock\"}",
    )
    .await?;
    let new_series = metric(
        edge,
        "vigil_edge_samples_refused_total{reason=\"new_series_rate\"}",
    )
    .await?;
    let unread = metric(edge, "vigil_edge_intake_messages_limited_total").await?;
    println!("healed in {healed:?}; out_of_order {out_of_order}, sender_clock {blamed}, new series refused {new_series}, messages unread {unread}");
    assert!(healed < Duration::from_secs(2), "healed in {healed:?}");
    assert_eq!(out_of_order, 0.0);
    assert_eq!(blamed, 0.0);
    // Nothing else was refused: no sample of the healthy agent.
    for reason in vigil_edge::cache::Refusal::ALL.map(|r| r.as_str()) {
        if reason != "new_series_rate" {
            let sample = format!("vigil_edge_samples_refused_total{{reason=\"{reason}\"}}");
            assert_eq!(metric(edge, &sample).await?, 0.0, "{reason}");
        }
    }
    // The flood was cut by both limits, and counted.
    assert!(new_series > 0.0 && unread > 0.0);
    poll.abort();
    assert!(stack.stop(Duration::from_secs(10)).await);
    Ok(())
}
