//! A 5 MB publish on a metrics topic disconnects no role. On the embedded
//! broker it is refused at the broker (its packet limit is 1 MiB); through a
//! Mosquitto without a size limit it reaches the roles, which read it,
//! refuse it by size and count it; with the documented
//! `message_size_limit` Mosquitto drops it itself.

use std::time::Duration;
use vigil::stack::{BrokerChoice, Stack};
use vigil_core::topic;
use vigil_tests::{
    external_required, metric, wait_for, wait_until_warm, with_demo_stack, Mosquitto,
};

const FIVE_MB: usize = 5 * 1024 * 1024;

/// Connection errors and connected state of the three roles.
async fn links(stack: &Stack) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    for url in [&stack.agent_url, &stack.edge_url, &stack.cloud_url] {
        out.push((
            metric(url, "vigil_mqtt_connection_errors_total").await?,
            metric(url, "vigil_mqtt_connected").await?,
        ));
    }
    Ok(out)
}

/// Publishes `bytes` on each topic from a client of its own, which may be
/// cut off by the broker for it.
async fn flood(stack: &Stack, topics: &[String], bytes: usize) -> anyhow::Result<()> {
    let mut opts = rumqttc::MqttOptions::new(
        "oversized",
        stack.broker.ip().to_string(),
        stack.broker.port(),
    );
    opts.set_max_packet_size(2 * bytes, 2 * bytes);
    let (client, mut ev) = rumqttc::AsyncClient::new(opts, 16);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    for t in topics {
        // A broker that refuses it cuts this client off: later publishes
        // then fail here, which is the broker doing its job.
        let _ = client
            .publish(t, rumqttc::QoS::AtLeastOnce, false, vec![b'x'; bytes])
            .await;
    }
    // Long enough for the broker to pass it on (or refuse it).
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(())
}

async fn no_role_disconnects(stack: &Stack, expect_counted: bool) -> anyhow::Result<()> {
    wait_until_warm(stack).await?;
    let before = links(stack).await?;
    assert!(before.iter().all(|(_, up)| *up == 1.0), "{before:?}");
    let oversized = "vigil_messages_malformed_total{reason=\"oversized\"}";
    let topics = [
        topic::metrics("demo", "demo-host"),
        topic::commands("demo", "demo-host"),
        topic::sensor("demo", "temp-1"),
    ];
    flood(stack, &topics, FIVE_MB).await?;
    if expect_counted {
        wait_for("the roles to count it", Duration::from_secs(15), || async {
            let edge = metric(&stack.edge_url, oversized).await.ok()?;
            let agent = metric(&stack.agent_url, oversized).await.ok()?;
            (edge >= 2.0 && agent >= 1.0).then_some(())
        })
        .await?;
    }
    let after = links(stack).await?;
    assert_eq!(
        before, after,
        "a role lost its connection (errors, connected)"
    );
    // Still flowing.
    let samples = metric(&stack.edge_url, "vigil_edge_samples_total").await?;
    wait_for(
        "samples to keep flowing",
        Duration::from_secs(10),
        || async {
            (metric(&stack.edge_url, "vigil_edge_samples_total")
                .await
                .ok()?
                > samples)
                .then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_broker_refuses_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = env!("CARGO_BIN_EXE_vigil-demo-service");
    with_demo_stack(BrokerChoice::Embedded(0), dir.path(), bin, |s| async move {
        no_role_disconnects(&s, false).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_mosquitto_the_roles_skip_and_count_it() -> anyhow::Result<()> {
    for settings in [
        "allow_anonymous true\n",
        "allow_anonymous true\nmessage_size_limit 1048576\n",
    ] {
        let Some(broker) = Mosquitto::start_with(settings)? else {
            assert!(
                !external_required(),
                "VIGIL_REQUIRE_EXTERNAL=1 but mosquitto is not installed"
            );
            eprintln!("SKIPPED: mosquitto is not on PATH (apt-get install mosquitto).");
            return Ok(());
        };
        let dir = tempfile::tempdir()?;
        let bin = env!("CARGO_BIN_EXE_vigil-demo-service");
        // Without a broker limit the roles see it; with one, nobody does.
        let limited = settings.contains("message_size_limit");
        with_demo_stack(
            BrokerChoice::External(broker.addr),
            dir.path(),
            bin,
            |s| async move { no_role_disconnects(&s, !limited).await },
        )
        .await
        .map_err(|e| e.context(format!("mosquitto with {settings:?}")))?;
    }
    Ok(())
}
