//! Hot reload on the running stack: a broken edit of the policy or catalog
//! file is refused (counted, the old one stays in force); a good edit is
//! picked up within seconds. Also the approvals API's answers to requests it
//! cannot take.

use std::time::Duration;
use vigil::stack::{BrokerChoice, Stack};
use vigil_edge::policy::content_hash;
use vigil_tests::{get_json, metric, service_pid, test_options, wait_for, wait_until_warm};

/// The demo stack in `dir` and the policy text it started with.
async fn started(dir: &std::path::Path) -> anyhow::Result<(Stack, String)> {
    let opts = test_options(
        BrokerChoice::Embedded(0),
        dir,
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    );
    let original = opts.policy.clone();
    Ok((Stack::start(opts).await?, original))
}

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
    let (stack, original) = started(dir.path()).await?;
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

/// Kills the demo service with SIGKILL and waits for the agent to run a new
/// one; returns its pid.
async fn killed_and_restarted(stack: &Stack, within: Duration) -> anyhow::Result<u64> {
    let pid = wait_for("the demo service", Duration::from_secs(30), || {
        service_pid(&stack.agent_url)
    })
    .await?;
    vigil::procstat::signal(pid as u32, "-KILL")?;
    wait_for("the demo service to be restarted", within, || async {
        service_pid(&stack.agent_url).await.filter(|p| *p != pid)
    })
    .await
}

/// Point 1 of the trust trial: a typo in an action name is refused at its
/// line (the catalogs the agent announced say the action does not exist),
/// the policies in force stay, and a killed service is still healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_typo_in_an_action_name_is_refused_and_healing_goes_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (stack, original) = started(dir.path()).await?;
    wait_until_warm(&stack).await?;
    let status = format!("{}/api/v1/status", stack.edge_url);

    let policy = dir.path().join("policy.yaml");
    let typo = original.replace("action: restart-demo-web", "action: restart-demo-wbe");
    std::fs::write(&policy, &typo)?;
    counted(
        "the refused edit",
        &stack.edge_url,
        "vigil_edge_policy_reloads_total{result=\"failed\"}",
    )
    .await?;
    let s = get_json(&status).await?;
    assert_eq!(s["policy_version"], content_hash(&original).as_str());
    let errors: Vec<String> = serde_json::from_value(s["policy_errors"].clone())?;
    // Each policy that names it, at its own `action:` line and column.
    let first = typo
        .lines()
        .position(|l| l.contains("action: restart-demo-wbe"))
        .map(|i| i + 1)
        .unwrap_or(0);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "{}:{first}:5: policy \"restart-dead-demo-web\" (#1): action \"restart-demo-wbe\" is unknown: not in the catalog of agent demo-host",
            policy.display()
        )),
        "{errors:?}"
    );
    assert_eq!(
        metric(
            &stack.edge_url,
            "vigil_edge_policy_reloads_total{result=\"ok\"}"
        )
        .await?,
        0.0
    );

    killed_and_restarted(&stack, Duration::from_secs(10)).await?;
    assert_eq!(
        metric(
            &stack.edge_url,
            "vigil_edge_actions_held_back_total{rail=\"agent\"}"
        )
        .await?,
        0.0
    );
    assert!(stack.stop(Duration::from_secs(10)).await);
    Ok(())
}

/// Point 2: a renamed catalog action reaches the edge at once. A command
/// for the old name is held (not sent, its budget not spent), the edge
/// reports the policy problem, and a policy edit to the new name, refused
/// before the announcement would have, is taken and heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renamed_catalog_action_is_announced_and_held_not_sent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (stack, original) = started(dir.path()).await?;
    wait_until_warm(&stack).await?;
    let status = format!("{}/api/v1/status", stack.edge_url);

    // An edit naming an action the catalog does not have yet: refused.
    let policy = dir.path().join("policy.yaml");
    let renamed = original.replace("action: restart-demo-web", "action: restart-web-svc");
    std::fs::write(&policy, &renamed)?;
    counted(
        "the refused edit",
        &stack.edge_url,
        "vigil_edge_policy_reloads_total{result=\"failed\"}",
    )
    .await?;
    std::fs::write(&policy, &original)?;

    let catalog = dir.path().join("catalog.yaml");
    let text = std::fs::read_to_string(&catalog)?;
    std::fs::write(
        &catalog,
        text.replace("restart-demo-web:", "restart-web-svc:"),
    )?;
    wait_for(
        "the edge to learn the renamed catalog",
        Duration::from_secs(10),
        || async {
            let p = metric(&stack.edge_url, "vigil_edge_policy_problems")
                .await
                .ok()?;
            (p >= 1.0).then_some(())
        },
    )
    .await?;
    let problems = get_json(&status).await?["policy_problems"].clone();
    assert!(
        problems.to_string().contains("restart-demo-web"),
        "{problems}"
    );

    let pid = service_pid(&stack.agent_url).await.unwrap_or(0);
    vigil::procstat::signal(pid as u32, "-KILL")?;
    counted(
        "the command held at the agent rail",
        &stack.edge_url,
        "vigil_edge_actions_held_back_total{rail=\"agent\"}",
    )
    .await?;
    // Nothing went to the agent, nothing was spent.
    assert_eq!(
        metric(
            &stack.agent_url,
            "vigil_agent_actions_total{outcome=\"refused\"}"
        )
        .await
        .unwrap_or(0.0),
        0.0
    );
    // A budget is spent only by a command sent: none was.
    let audit = get_json(&format!("{}/api/v1/audit", stack.edge_url)).await?;
    let sent = audit.as_array().map(|a| {
        a.iter()
            .filter(|r| r["kind"] == "action_sent" && r["target"] == stack.target.as_str())
            .count()
    });
    assert_eq!(sent, Some(0), "{audit:#}");
    assert_eq!(service_pid(&stack.agent_url).await, None);

    // The same edit as before is taken now, and the dead service healed.
    std::fs::write(&policy, &renamed)?;
    wait_for("the new pid", Duration::from_secs(15), || async {
        service_pid(&stack.agent_url).await.filter(|p| *p != pid)
    })
    .await?;
    let s = get_json(&status).await?;
    assert_eq!(s["policy_version"], content_hash(&renamed).as_str());
    assert_eq!(
        metric(&stack.edge_url, "vigil_edge_policy_problems").await?,
        0.0
    );
    assert!(stack.stop(Duration::from_secs(10)).await);
    Ok(())
}
