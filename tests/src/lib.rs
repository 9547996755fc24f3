//! Helpers for Vigil's end-to-end tests: starting the in-process stack on
//! free ports, reading Prometheus counters, waiting on real conditions, and
//! running a real Mosquitto broker when one is installed.

pub mod dashboards;

use anyhow::Context;
use std::path::Path;
use std::time::Duration;
use vigil::stack::{BrokerChoice, StackOptions};

/// Stack options for tests: free ports, fast ticks, short cooldowns.
pub fn test_options(broker: BrokerChoice, data_dir: &Path, service_bin: &str) -> StackOptions {
    let mut o = StackOptions::demo(data_dir.to_path_buf(), vec![service_bin.to_string()]);
    o.broker = broker;
    (o.agent_port, o.edge_port, o.cloud_port) = (0, 0, 0);
    o.tick_ms = 500;
    o.interval_secs = 0.5;
    o.workload_rate = 10;
    o
}

pub use vigil::wait::wait_for;

/// Starts the demo stack for a test on `broker`, runs `scenario` on it,
/// stops it (which must take under 5 s) and returns the scenario's result.
pub async fn with_demo_stack<F, Fut>(
    broker: BrokerChoice,
    dir: &Path,
    service_bin: &str,
    scenario: F,
) -> anyhow::Result<()>
where
    F: FnOnce(std::sync::Arc<vigil::stack::Stack>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let stack = std::sync::Arc::new(
        vigil::stack::Stack::start(test_options(broker, dir, service_bin)).await?,
    );
    let result = scenario(stack.clone()).await;
    let report = stack.tracker.lock().map(|t| t.report()).unwrap_or_default();
    let stack = std::sync::Arc::try_unwrap(stack)
        .map_err(|_| anyhow::anyhow!("the scenario kept the stack"))?;
    anyhow::ensure!(
        stack.stop(Duration::from_secs(5)).await,
        "stack did not stop in time"
    );
    result.map_err(|e| e.context(format!("faults: {report:#?}")))
}

/// The value of one sample on a `/metrics` page, e.g.
/// `vigil_agent_actions_total{outcome="succeeded"}`; 0 when absent.
pub async fn metric(base_url: &str, sample: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{base_url}/metrics"))
        .await?
        .text()
        .await?;
    Ok(parse_metric(&text, sample))
}

/// Finds `sample` in Prometheus text; 0 when absent.
pub fn parse_metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(sample))
        .filter(|rest| rest.starts_with(' '))
        .filter_map(|rest| rest.trim().parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
}

/// GETs JSON.
pub async fn get_json(url: &str) -> anyhow::Result<serde_json::Value> {
    let r = reqwest::get(url)
        .await
        .with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(r.status().is_success(), "GET {url}: {}", r.status());
    Ok(r.json().await?)
}

/// True when external tools are required (CI sets VIGIL_REQUIRE_EXTERNAL=1).
pub fn external_required() -> bool {
    std::env::var("VIGIL_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1")
}

pub use vigil::mosquitto::Mosquitto;

/// The live PID of the demo service, from the agent's API.
pub async fn service_pid(agent_url: &str) -> Option<u64> {
    let v = get_json(&format!("{agent_url}/api/v1/services"))
        .await
        .ok()?;
    v.as_array()?
        .iter()
        .find(|s| s["name"] == vigil::stack::SERVICE)?["pid"]
        .as_u64()
}

/// Points cached by the edge for one series.
pub async fn cached_points(edge_url: &str, series: &str) -> usize {
    let url = format!(
        "{edge_url}/api/v1/series/points?id={}",
        series.replace('/', "%2F").replace(':', "%3A")
    );
    get_json(&url)
        .await
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Waits until fault number `index` (in injection order) is healed.
pub async fn wait_healed(
    stack: &vigil::stack::Stack,
    index: usize,
    name: &str,
) -> anyhow::Result<vigil::demo::injector::FaultRecord> {
    wait_for(
        &format!("the {name} fault to be healed"),
        Duration::from_secs(90),
        || async {
            let report = stack.tracker.lock().ok()?.report();
            report
                .get(index)
                .filter(|r| r.healed_at_ms.is_some())
                .cloned()
        },
    )
    .await
}

/// Waits until the demo service runs and the detector has warmed up on it.
pub async fn wait_until_warm(stack: &vigil::stack::Stack) -> anyhow::Result<u64> {
    let pid = wait_for("the demo service to start", Duration::from_secs(30), || {
        service_pid(&stack.agent_url)
    })
    .await?;
    let up = format!("{}:up", stack.target);
    wait_for(
        "the detector to warm up on the service",
        Duration::from_secs(60),
        || async { (cached_points(&stack.edge_url, &up).await >= 25).then_some(()) },
    )
    .await?;
    Ok(pid)
}

/// Injects each fault in turn and checks the whole loop healed it: the
/// anomaly was detected, the agent restarted the service (new PID, health
/// OK again), an audit record names the policy (at the edge and in the
/// cloud), and the counters on /metrics moved. Then stops the stack and
/// checks that nothing is left running.
pub async fn heal_scenario(
    opts: StackOptions,
    faults: &[vigil::demo::FaultKind],
) -> anyhow::Result<()> {
    let stack = vigil::stack::Stack::start(opts).await?;
    let result = heal_each(&stack, faults).await;
    let last_pid = service_pid(&stack.agent_url).await;
    let report = stack.tracker.lock().map(|t| t.report()).unwrap_or_default();
    let data_dir = stack.data_dir.clone();
    let started = std::time::Instant::now();
    let clean = stack.stop(Duration::from_secs(5)).await;
    result.with_context(|| format!("fault report: {report:#?}"))?;
    anyhow::ensure!(
        clean && started.elapsed() < Duration::from_secs(5),
        "stack did not stop within 5 s"
    );
    if let Some(pid) = last_pid {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        anyhow::ensure!(
            stat.is_empty() || stat.contains(") Z "),
            "demo service {pid} still running after stop"
        );
    }
    let parquet = walk(&data_dir.join("cloud/audit"));
    anyhow::ensure!(
        !parquet.is_empty(),
        "no audit Parquet written under {}",
        data_dir.display()
    );
    let rows: usize = parquet
        .iter()
        .map(|p| {
            vigil_cloud::store::read(p)
                .map(|df| df.height())
                .unwrap_or(0)
        })
        .sum();
    anyhow::ensure!(
        rows >= 3 * faults.len(),
        "only {rows} audit rows in Parquet for {} faults",
        faults.len()
    );
    Ok(())
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out
}

/// The demo policies that may heal `kind`: a dead or hung service is the
/// liveness rule's, a slow one the latency objective's or the detector's,
/// the rest the detector's.
pub fn demo_policies_for(kind: vigil::demo::FaultKind) -> &'static [&'static str] {
    use vigil::demo::FaultKind;
    match kind {
        FaultKind::Crash | FaultKind::Hang => &["restart-dead-demo-web"],
        FaultKind::Latency => &["restart-slow-demo-web", "restart-demo-web"],
        _ => &["restart-demo-web"],
    }
}

/// The counters each healed fault must move.
struct Counters {
    anomalies: f64,
    sent: f64,
    ok: f64,
    cloud_in: f64,
}

impl Counters {
    async fn read(stack: &vigil::stack::Stack) -> anyhow::Result<Self> {
        Ok(Self {
            anomalies: metric(&stack.edge_url, "vigil_anomalies_total").await?,
            sent: metric(&stack.edge_url, "vigil_edge_commands_sent_total").await?,
            ok: metric(
                &stack.agent_url,
                "vigil_agent_actions_total{outcome=\"succeeded\"}",
            )
            .await?,
            cloud_in: metric(
                &stack.cloud_url,
                "vigil_messages_received_total{kind=\"audit\"}",
            )
            .await?,
        })
    }

    /// Every counter moved since `self` was read.
    fn ensure_moved(&self, now: &Counters, name: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            now.anomalies > self.anomalies,
            "{name}: anomaly counter did not move"
        );
        anyhow::ensure!(now.sent > self.sent, "{name}: command counter did not move");
        anyhow::ensure!(
            now.ok > self.ok,
            "{name}: agent action counter did not move"
        );
        anyhow::ensure!(
            now.cloud_in > self.cloud_in,
            "{name}: cloud audit counter did not move"
        );
        Ok(())
    }
}

async fn heal_each(
    stack: &vigil::stack::Stack,
    faults: &[vigil::demo::FaultKind],
) -> anyhow::Result<()> {
    let mut pid = wait_until_warm(stack).await?;
    for (i, &kind) in faults.iter().enumerate() {
        let name = kind.as_str();
        let before = Counters::read(stack).await?;
        stack.inject(kind).await?;
        let rec = wait_healed(stack, i, name).await?;
        anyhow::ensure!(
            rec.detected_at_ms.is_some(),
            "{name}: healed without a detection"
        );
        anyhow::ensure!(
            rec.action.as_deref() == Some("restart-demo-web"),
            "{name}: action {:?}",
            rec.action
        );
        // Failing requests show only in the service's own (scraped) metrics.
        if kind == vigil::demo::FaultKind::Errors {
            let m = rec.detected_metric.as_deref().unwrap_or("");
            anyhow::ensure!(
                m.starts_with("demo_requests_total:rate"),
                "{name}: found through {m:?}, not the service's own metrics"
            );
        }
        let new_pid = wait_for("the restarted service", Duration::from_secs(10), || {
            service_pid(&stack.agent_url)
        })
        .await?;
        anyhow::ensure!(
            new_pid != pid,
            "{name}: PID {pid} unchanged after the restart"
        );
        let health = reqwest::get(format!("{}/healthz", stack.service_url)).await?;
        anyhow::ensure!(
            health.status().is_success(),
            "{name}: health {} after the restart",
            health.status()
        );
        ensure_verified(stack, kind, rec.injected_at_ms).await?;
        before.ensure_moved(&Counters::read(stack).await?, name)?;
        pid = new_pid;
    }
    // The delays that matter were measured along the way.
    for h in [
        "vigil_edge_fault_to_detection_seconds_count",
        "vigil_edge_detection_to_action_seconds_count",
        "vigil_agent_action_duration_seconds_count",
    ] {
        let url = if h.starts_with("vigil_agent") {
            &stack.agent_url
        } else {
            &stack.edge_url
        };
        anyhow::ensure!(
            metric(url, h).await? >= faults.len() as f64,
            "{h} below {}",
            faults.len()
        );
    }
    Ok(())
}

/// The edge audited a verified recovery by one of the policies for `kind`
/// since the fault, and the record reached the cloud's API.
async fn ensure_verified(
    stack: &vigil::stack::Stack,
    kind: vigil::demo::FaultKind,
    injected_at_ms: i64,
) -> anyhow::Result<()> {
    let name = kind.as_str();
    let audit = get_json(&format!("{}/api/v1/audit", stack.edge_url)).await?;
    let policies = demo_policies_for(kind);
    let by_policy = |a: &serde_json::Value| policies.iter().any(|p| a["policy"] == *p);
    let verified = audit.as_array().into_iter().flatten().any(|a| {
        a["kind"] == "verified" && by_policy(a) && a["ts_ms"].as_i64() >= Some(injected_at_ms)
    });
    anyhow::ensure!(
        verified,
        "{name}: no verified audit record naming the policy: {audit}"
    );
    wait_for(
        "the audit records to reach the cloud API",
        Duration::from_secs(10),
        || async {
            // Queried by the fields the cloud API filters on.
            let v = get_json(&format!(
                "{}/api/v1/audit?site=demo&kind=verified&target={}",
                stack.cloud_url, stack.target
            ))
            .await
            .ok()?;
            v.as_array()?
                .iter()
                .any(|a| {
                    a["kind"] == "verified"
                        && by_policy(a)
                        && a["ts_ms"].as_i64() >= Some(injected_at_ms)
                })
                .then_some(())
        },
    )
    .await?;
    Ok(())
}

/// Runs an edge with `cfg` (no policies) on a free port until `stop`, and
/// waits until it is connected to its broker; its URL.
pub async fn start_edge(
    cfg: vigil_edge::EdgeConfig,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<String> {
    let listener = vigil_core::telemetry::bind("127.0.0.1:0").await?;
    let edge = format!("http://{}", listener.local_addr()?);
    tokio::spawn(vigil_edge::run(
        cfg,
        vigil_edge::PolicySet::default(),
        listener,
        vigil_edge::EdgeMetrics::new()?,
        stop.clone(),
    ));
    wait_for("the edge", Duration::from_secs(20), || async {
        (metric(&edge, "vigil_mqtt_connected").await.ok()? == 1.0).then_some(())
    })
    .await?;
    Ok(edge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labelled_samples() {
        let text = "# HELP x\nvigil_a_total 3\nvigil_b_total{outcome=\"ok\"} 5\nvigil_b_total{outcome=\"okay\"} 7\n";
        assert_eq!(parse_metric(text, "vigil_a_total"), 3.0);
        assert_eq!(parse_metric(text, "vigil_b_total{outcome=\"ok\"}"), 5.0);
        assert_eq!(parse_metric(text, "vigil_missing"), 0.0);
    }
}

/// Whether every one of `bins` answers `--version`. When one does not, the
/// test says so and is skipped, or fails under VIGIL_REQUIRE_EXTERNAL=1
/// (`.ci/run` installs them).
pub fn installed(bins: &[&str]) -> bool {
    let missing: Vec<&str> = bins
        .iter()
        .copied()
        .filter(|b| {
            !std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !external_required(),
        "VIGIL_REQUIRE_EXTERNAL=1 but {missing:?} missing"
    );
    eprintln!("SKIPPED: {missing:?} not installed (apt-get install them, or run .ci/run).");
    false
}

/// A child process, killed and reaped when dropped.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One series in the edge's cache, as `/api/v1/series` lists it.
#[derive(Debug, serde::Deserialize)]
pub struct CachedSeries {
    /// `<entity>:<metric>`.
    pub series: String,
    /// Its newest value.
    pub value: Option<f64>,
    /// Whether a tick has scored its newest point.
    pub scored: bool,
}

/// The edge's cached series whose id starts with `prefix`.
pub async fn cached_series(edge_url: &str, prefix: &str) -> anyhow::Result<Vec<CachedSeries>> {
    Ok(reqwest::Client::new()
        .get(format!("{edge_url}/api/v1/series"))
        .query(&[("prefix", prefix)])
        .send()
        .await?
        .json()
        .await?)
}
