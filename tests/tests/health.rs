//! `/healthz` tells the truth: an agent that cannot reach its broker
//! answers 503 with the reason, and 200 once the broker is there.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vigil_tests::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_not_ready_while_the_broker_is_away() -> anyhow::Result<()> {
    let port = vigil::broker::free_port()?;
    let dir = tempfile::tempdir()?;
    let mut cfg = vigil_agent::AgentConfig {
        host: "h1".into(),
        data_dir: dir.path().join("agent"),
        disks: vec![],
        ..Default::default()
    };
    cfg.mqtt.port = port;
    cfg.mqtt.reconnect_max_ms = 500;
    let listener = vigil_core::telemetry::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/healthz", listener.local_addr()?);
    let stop = CancellationToken::new();
    let agent = tokio::spawn(vigil_agent::run(
        cfg,
        vigil_agent::Catalog::default(),
        listener,
        vigil_agent::AgentMetrics::new()?,
        stop.clone(),
    ));
    let down = wait_for("a failed connection", Duration::from_secs(10), || async {
        let r = reqwest::get(&url).await.ok()?;
        let (status, text) = (r.status(), r.text().await.ok()?);
        text.contains("MQTT link down").then_some((status, text))
    })
    .await?;
    assert_eq!(down.0, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(down.1.starts_with("not ready: mqtt: "), "{}", down.1);

    vigil::broker::start(port, 1 << 20)?;
    wait_for(
        "ready once the broker is up",
        Duration::from_secs(15),
        || async {
            let r = reqwest::get(&url).await.ok()?;
            (r.status() == reqwest::StatusCode::OK).then_some(())
        },
    )
    .await?;
    stop.cancel();
    agent.await??;
    Ok(())
}
