//! `approve` mode on the running stack: a crash of the demo service files an
//! approval request and nothing runs; answering it through the edge's HTTP
//! API lets the restart run once.

use std::time::Duration;
use vigil::demo::FaultKind;
use vigil::stack::{BrokerChoice, Stack};
use vigil_tests::{get_json, metric, test_options, wait_for, wait_until_warm};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_waits_for_approval_then_is_restarted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut opts = test_options(
        BrokerChoice::Embedded(0),
        dir.path(),
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    );
    // The crash is the liveness rule's: it asks instead of acting.
    let live = "      for_secs: 0\n    action: restart-demo-web\n";
    anyhow::ensure!(opts.policy.contains(live));
    opts.policy = opts
        .policy
        .replacen(live, &format!("{live}    mode: approve\n"), 1);
    let stack = Stack::start(opts).await?;
    wait_until_warm(&stack).await?;
    let ran = "vigil_agent_actions_total{outcome=\"succeeded\"}";
    let before = metric(&stack.agent_url, ran).await?;
    stack.inject(FaultKind::Crash).await?;

    let pending = format!("{}/api/v1/approvals?state=pending", stack.edge_url);
    let request = wait_for("an approval request", Duration::from_secs(60), || async {
        let list = get_json(&pending).await.ok()?;
        list.as_array()?.first().cloned()
    })
    .await?;
    assert_eq!(request["policy"], "restart-dead-demo-web");
    assert_eq!(request["target"], stack.target.as_str());
    // Nothing runs while the request waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(metric(&stack.agent_url, ran).await?, before);

    let id = request["id"].as_str().unwrap_or_default().to_string();
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/approvals/{id}/approve", stack.edge_url);
    // Without the token: refused, and nothing changes.
    let r = http.post(&url).send().await?;
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let r = http
        .post(&url)
        .bearer_auth(&stack.api_token)
        .json(&serde_json::json!({"by": "tester"}))
        .send()
        .await?;
    assert!(r.status().is_success(), "{}", r.status());
    // A second answer is refused: it is no longer pending.
    let again = http.post(&url).bearer_auth(&stack.api_token).send().await?;
    assert_eq!(again.status(), reqwest::StatusCode::CONFLICT);

    wait_for("the approved restart", Duration::from_secs(30), || async {
        (metric(&stack.agent_url, ran).await.ok()? > before).then_some(())
    })
    .await?;
    let audit = get_json(&format!("{}/api/v1/audit", stack.edge_url)).await?;
    let sent = audit.as_array().into_iter().flatten().any(|a| {
        a["kind"] == "action_sent"
            && a["mode"] == "approve"
            && a["detail"]
                .as_str()
                .is_some_and(|d| d.contains("approved by tester"))
    });
    assert!(sent, "no approved action in the audit: {audit}");
    let asked = audit
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| a["kind"] == "awaiting_approval");
    assert!(asked, "no awaiting_approval record: {audit}");
    assert!(stack.stop(Duration::from_secs(10)).await);
    Ok(())
}
