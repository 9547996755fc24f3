//! Hot reload on the running stack: a broken edit of the policy or catalog
//! file is refused (counted, the old one stays in force); a good edit is
//! picked up within seconds. Also the approvals API's answers to requests it
//! cannot take.

use std::time::Duration;
use vigil::stack::{BrokerChoice, Stack};
use vigil_edge::policy::content_hash;
use vigil_tests::{get_json, metric, test_options, wait_for};

/// Waits up to 10 s for the counter `name` at `url` to reach 1.
async fn counted(what: &str, url: &str, name: &str) -> anyhow::Result<()> {
    wait_for(what, Duration::from_secs(10), || async {
        (metric(url, name).await.ok()? >= 1.0).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edits_are_picked_up_and_broken_ones_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = test_options(
        BrokerChoice::Embedded(0),
        dir.path(),
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    );
    let original = opts.policy.clone();
    let stack = Stack::start(opts).await?;
    let status = format!("{}/api/v1/status", stack.edge_url);
    let version = |v: serde_json::Value| v["policy_version"].as_str().map(str::to_string);
    assert_eq!(
        version(get_json(&status).await?),
        Some(content_hash(&original))
    );

    // A broken edit: refused, counted, the policies in force stay.
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, original.replace("action:", "acton:"))?;
    counted(
        "the failed reload to be counted",
        &stack.edge_url,
        "vigil_edge_policy_reloads_total{result=\"failed\"}",
    )
    .await?;
    assert_eq!(
        version(get_json(&status).await?),
        Some(content_hash(&original))
    );

    // A good edit is in force within seconds.
    let edited = original.replace("cooldown_secs: 5", "cooldown_secs: 6");
    assert_ne!(edited, original);
    std::fs::write(&policy, &edited)?;
    wait_for(
        "the edited policy to be in force",
        Duration::from_secs(10),
        || async {
            let v = version(get_json(&status).await.ok()?)?;
            (v == content_hash(&edited)).then_some(())
        },
    )
    .await?;

    // The agent's catalog: a broken edit is refused and counted.
    let catalog = dir.path().join("catalog.yaml");
    let text = std::fs::read_to_string(&catalog)?;
    std::fs::write(&catalog, text.replace("kind:", "knd:"))?;
    counted(
        "the failed catalog reload",
        &stack.agent_url,
        "vigil_agent_catalog_reloads_total{result=\"failed\"}",
    )
    .await?;
    std::fs::write(&catalog, &text)?;
    counted(
        "the restored catalog",
        &stack.agent_url,
        "vigil_agent_catalog_reloads_total{result=\"ok\"}",
    )
    .await?;

    // Approvals: none asked; an unknown id is 404, a bad verb too.
    let list = get_json(&format!("{}/api/v1/approvals", stack.edge_url)).await?;
    assert_eq!(list, serde_json::json!([]));
    let http = reqwest::Client::new();
    for verb in ["approve", "reject", "maybe"] {
        let url = format!("{}/api/v1/approvals/nope/{verb}", stack.edge_url);
        let r = http.post(&url).bearer_auth(&stack.api_token).send().await?;
        assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND, "{verb}");
        let r = http.post(&url).send().await?;
        assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED, "{verb}");
    }
    assert!(stack.stop(Duration::from_secs(10)).await);
    Ok(())
}
