//! The edge posts its anomalies to Alertmanager: a stand-in speaking
//! Alertmanager's v2 API (`POST /api/v2/alerts`, a JSON array of alerts;
//! no Alertmanager package is installed here) records what it gets while a
//! crash of the demo service is detected, healed and closed. The alert
//! fires with the site, entity and top metric as labels and the score and
//! the policy's decision as annotations, and is resolved (`endsAt`) once
//! the service is back.

use axum::routing::post;
use axum::{Json, Router};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vigil::demo::FaultKind;
use vigil::stack::{BrokerChoice, Stack};
use vigil_tests::{test_options, wait_for, wait_until_warm};

type Received = Arc<Mutex<Vec<serde_json::Value>>>;

async fn stand_in() -> anyhow::Result<(String, Received)> {
    let got: Received = Arc::default();
    let keep = got.clone();
    let app = Router::new().route(
        "/api/v2/alerts",
        post(
            move |Json(alerts): Json<Vec<serde_json::Value>>| async move {
                if let Ok(mut g) = keep.lock() {
                    g.extend(alerts);
                }
                axum::http::StatusCode::OK
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, got))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_fires_an_alert_with_its_decision_and_resolves_it() -> anyhow::Result<()> {
    let (url, got) = stand_in().await?;
    let dir = tempfile::tempdir()?;
    let mut opts = test_options(
        BrokerChoice::Embedded(0),
        dir.path(),
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    );
    opts.alertmanager = Some(url);
    let stack = Stack::start(opts).await?;
    let outcome = run(&stack, &got).await;
    stack.stop(Duration::from_secs(5)).await;
    outcome
}

async fn run(stack: &Stack, got: &Received) -> anyhow::Result<()> {
    wait_until_warm(stack).await?;
    got.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clear();
    stack.inject(FaultKind::Crash).await?;
    let entity = stack.target.to_string();
    let of = |a: &serde_json::Value| a["labels"]["entity"] == entity.as_str();
    let decided = wait_for(
        "a firing alert with the restart decided",
        Duration::from_secs(30),
        || async {
            let g = got.lock().ok()?;
            g.iter()
                .find(|a| {
                    of(a)
                        && a["endsAt"].is_null()
                        && a["annotations"]["decision"]
                            .as_str()
                            .is_some_and(|d| d.contains("restart-demo-web"))
                })
                .cloned()
        },
    )
    .await?;
    let labels = &decided["labels"];
    anyhow::ensure!(labels["alertname"] == "VigilAnomaly", "{decided}");
    anyhow::ensure!(labels["site"] == "demo", "{decided}");
    anyhow::ensure!(
        labels["top_metric"].as_str().is_some_and(|m| !m.is_empty()),
        "{decided}"
    );
    let score: f64 = decided["annotations"]["score"]
        .as_str()
        .unwrap_or("")
        .parse()?;
    anyhow::ensure!(score > 0.0, "{decided}");
    anyhow::ensure!(
        decided["startsAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')),
        "{decided}"
    );
    let id = decided["annotations"]["anomaly_id"].clone();
    let resolved = wait_for("the alert resolved", Duration::from_secs(60), || async {
        let g = got.lock().ok()?;
        g.iter()
            .find(|a| of(a) && a["annotations"]["anomaly_id"] == id && a["endsAt"].is_string())
            .cloned()
    })
    .await?;
    anyhow::ensure!(
        resolved["labels"] == decided["labels"],
        "same alert: {resolved}"
    );
    let posts = vigil_tests::metric(
        &stack.edge_url,
        "vigil_edge_alert_posts_total{outcome=\"ok\"}",
    )
    .await?;
    anyhow::ensure!(posts >= 2.0, "{posts} posts");
    Ok(())
}
