//! The dashboards and alert rules against a real Prometheus scraping a real
//! stack: the in-process stack runs, a crash is injected and healed, and
//! then every PromQL expression of every dashboard panel and every alert
//! rule is evaluated through Prometheus's HTTP API and must return data. A
//! second agent target that is not running must fire VigilScrapeTargetDown.
//! Skipped with a notice when prometheus is absent; required with
//! VIGIL_REQUIRE_EXTERNAL=1.

#![cfg(test)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vigil::stack::{BrokerChoice, Stack};
use vigil_tests::dashboards::{alert_rules, dir, load, panel_queries, resolve_variables};
use vigil_tests::{external_required, test_options, wait_for, wait_healed, wait_until_warm};

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_port(url: &str) -> &str {
    url.trim_start_matches("http://")
}

async fn query(http: &reqwest::Client, base: &str, q: &str) -> anyhow::Result<serde_json::Value> {
    let v: serde_json::Value = http
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(v["status"] == "success", "{q}: {v}");
    Ok(v["data"]["result"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_panel_and_alert_query_returns_data_from_a_live_stack() -> anyhow::Result<()> {
    let present = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            !external_required(),
            "VIGIL_REQUIRE_EXTERNAL=1 but prometheus is not installed"
        );
        eprintln!("SKIPPED: prometheus is not on PATH; install it (apt-get install prometheus) to run this test.");
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let opts = test_options(
        BrokerChoice::Embedded(0),
        &tmp.path().join("stack"),
        env!("CARGO_BIN_EXE_vigil-demo-service"),
    );
    let stack = Stack::start(opts).await?;
    let outcome = run(&stack, tmp.path()).await;
    stack.stop(Duration::from_secs(10)).await;
    outcome
}

/// The alerts Prometheus holds now (pending and firing).
async fn alerts(http: &reqwest::Client, prom: &str) -> Option<Vec<serde_json::Value>> {
    let v: serde_json::Value = http
        .get(format!("{prom}/api/v1/alerts"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["data"]["alerts"].as_array().cloned()
}

/// A Prometheus scraping the stack's three roles and `dead`, with the
/// alert rules loaded.
fn start_prometheus(
    stack: &Stack,
    tmp: &std::path::Path,
    dead: &str,
) -> anyhow::Result<Prometheus> {
    let config = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
         rule_files: [{rules}]\n\
         scrape_configs:\n\
         \x20 - job_name: vigil-agent\n    static_configs: [{{ targets: [\"{agent}\", \"{dead}\"] }}]\n\
         \x20 - job_name: vigil-edge\n    static_configs: [{{ targets: [\"{edge}\"] }}]\n\
         \x20 - job_name: vigil-cloud\n    static_configs: [{{ targets: [\"{cloud}\"] }}]\n",
        rules = dir().join("alerts.yml").canonicalize()?.display(),
        agent = host_port(&stack.agent_url),
        edge = host_port(&stack.edge_url),
        cloud = host_port(&stack.cloud_url),
    );
    let cfg = tmp.join("prometheus.yml");
    std::fs::write(&cfg, config)?;
    let listen = format!("127.0.0.1:{}", vigil::broker::free_port()?);
    let prom = Prometheus {
        child: Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
        url: format!("http://{listen}"),
    };
    Ok(prom)
}

/// Every panel's query returns data, and every alert rule's expression
/// parses and evaluates.
async fn every_query_answers(http: &reqwest::Client, prom: &str) -> anyhow::Result<()> {
    let boards = load()?;
    let mut queries: Vec<(String, String)> = panel_queries(&boards)
        .into_iter()
        .map(|(uid, title, e)| (format!("{uid} / {title}"), resolve_variables(&e)))
        .collect();
    queries.extend(
        alert_rules()?
            .into_iter()
            .map(|(a, e)| (format!("alert {a}"), e)),
    );
    let mut empty = Vec::new();
    let panels = queries
        .iter()
        .filter(|(w, _)| !w.starts_with("alert"))
        .count();
    for (what, q) in &queries {
        let r = query(http, prom, q).await?;
        // Alert expressions return data only while they fire; they must parse.
        if !what.starts_with("alert") && r.as_array().is_none_or(|a| a.is_empty()) {
            empty.push(format!("{what}: {q}"));
        }
    }
    anyhow::ensure!(
        empty.is_empty(),
        "panel queries without data:\n{}",
        empty.join("\n")
    );
    println!(
        "{panels} panel queries returned data; {} alert rules evaluated",
        queries.len() - panels
    );

    Ok(())
}

async fn run(stack: &Stack, tmp: &std::path::Path) -> anyhow::Result<()> {
    // A second agent that is not running: its target is down.
    let dead = format!("127.0.0.1:{}", vigil::broker::free_port()?);
    let prom = start_prometheus(stack, tmp, &dead)?;
    let http = reqwest::Client::new();
    wait_for(
        "prometheus to be ready",
        Duration::from_secs(30),
        || async {
            let r = http
                .get(format!("{}/-/ready", prom.url))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await?;

    wait_until_warm(stack).await?;
    stack.inject(vigil::demo::FaultKind::Crash).await?;
    wait_healed(stack, 0, "crash").await?;
    // Prometheus has scraped the repair once the fix ratio is there.
    wait_for(
        "the repair in Prometheus",
        Duration::from_secs(60),
        || async {
            let r = query(&http, &prom.url, "vigil_edge_policy_fix_ratio")
                .await
                .ok()?;
            (!r.as_array()?.is_empty()).then_some(())
        },
    )
    .await?;

    every_query_answers(&http, &prom.url).await?;

    // The dead agent fires its alert once it has been down for the rule's minute.
    let firing = wait_for(
        "VigilScrapeTargetDown to fire",
        Duration::from_secs(120),
        || async {
            let alerts = alerts(&http, &prom.url).await?;
            alerts
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == "VigilScrapeTargetDown"
                        && a["labels"]["instance"] == dead.as_str()
                        && a["state"] == "firing"
                })
                .then_some(alerts)
        },
    )
    .await?;
    let names: Vec<String> = firing
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| format!("{} {}", a["labels"]["alertname"], a["labels"]["instance"]))
        .collect();
    println!("firing: {names:?}");
    // Nothing else is wrong with this stack.
    anyhow::ensure!(names.len() == 1, "unexpected alerts firing: {names:?}");
    budget_spent_fires(stack, tmp, &http, &prom.url).await
}

/// Giving up reaches Prometheus: the liveness policy's budget cut to the
/// one restart it has spent, a second crash is handed to the page, and
/// VigilRemediationBudgetExhausted fires.
async fn budget_spent_fires(
    stack: &Stack,
    tmp: &std::path::Path,
    http: &reqwest::Client,
    prom: &str,
) -> anyhow::Result<()> {
    let policy = tmp.join("stack/policy.yaml");
    let text = std::fs::read_to_string(&policy)?;
    let cut = text.replacen(
        "budget: { max: 30, per_secs: 3600 }",
        "budget: { max: 1, per_secs: 3600 }",
        1,
    );
    anyhow::ensure!(cut != text, "the demo policy has no budget to cut");
    std::fs::write(&policy, &cut)?;
    let version = vigil_edge::policy::content_hash(&cut);
    let status = format!("{}/api/v1/status", stack.edge_url);
    wait_for(
        "the cut budget in force",
        Duration::from_secs(10),
        || async {
            let v = vigil_tests::get_json(&status).await.ok()?;
            (v["policy_version"] == version.as_str()).then_some(())
        },
    )
    .await?;
    stack.inject(vigil::demo::FaultKind::Crash).await?;
    wait_for(
        "VigilRemediationBudgetExhausted to fire",
        Duration::from_secs(60),
        || async {
            alerts(http, prom)
                .await?
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == "VigilRemediationBudgetExhausted"
                        && a["labels"]["cause"] == "budget_spent"
                        && a["state"] == "firing"
                })
                .then_some(())
        },
    )
    .await?;
    Ok(())
}
