//! The live terminal summary of `vigil up`.

use crate::stack::{Stack, SERVICE};
use prometheus::core::Collector;
use std::fmt::Write;
use std::time::Duration;

fn yes(v: i64) -> &'static str {
    if v > 0 {
        "yes"
    } else {
        "NO"
    }
}

fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The summary block: components, demo traffic, last fault, endpoints.
pub fn render(stack: &Stack, elapsed: Duration, log: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Vigil up {}  broker mqtt://{}  (Ctrl-C stops everything)",
        hms(elapsed),
        stack.broker
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:<8} {:<10} {:>7} {:>10} {:>9}  notes",
        "role", "connected", "series", "anomalies", "actions"
    );
    roles(&mut out, stack);
    faults(&mut out, stack);
    links(&mut out, stack, log);
    out
}

/// One row per role: connected, series, anomalies, actions, a note.
fn roles(out: &mut String, stack: &Stack) {
    let (a, e, c) = (
        &stack.agent_metrics,
        &stack.edge_metrics,
        &stack.cloud_metrics,
    );
    let rows = c.rows_written.with_label_values(&["samples"]).get();
    let _ = writeln!(
        out,
        "  {:<8} {:<10} {:>7} {:>10} {:>9}  {} sample rows in Parquet",
        "cloud",
        yes(c.link.connected.get()),
        "-",
        c.anomalies.get(),
        "-",
        rows
    );
    let verified = e
        .remediation
        .verifications
        .with_label_values(&["verified"])
        .get();
    let _ = writeln!(
        out,
        "  {:<8} {:<10} {:>7} {:>10} {:>9}  {} verified healed, {} held back",
        "edge",
        yes(e.link.connected.get()),
        e.cache.series.get(),
        e.detection.anomalies.get(),
        e.remediation.commands_sent.get(),
        verified,
        Collector::collect(&e.remediation.held_back)
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum::<u64>()
    );
    let ok = a.actions.with_label_values(&["succeeded"]).get();
    let up = a.service_up.with_label_values(&[SERVICE]).get();
    let _ = writeln!(
        out,
        "  {:<8} {:<10} {:>7} {:>10} {:>9}  {SERVICE} {}",
        "agent",
        yes(a.link.connected.get()),
        "-",
        "-",
        ok,
        if up > 0 { "running" } else { "DOWN" }
    );
}

/// The demo traffic and what became of the faults.
fn faults(out: &mut String, stack: &Stack) {
    let w = stack.workload.snapshot();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  demo traffic: {} requests, {} failed",
        w.requests, w.errors
    );
    let tracker = stack.tracker.lock().map(|t| t.report()).unwrap_or_default();
    match tracker.last() {
        None => {
            let _ = writeln!(out, "  last fault:   none yet");
        }
        Some(f) => {
            let status = match (f.detect_secs, &f.action, f.heal_secs, &f.why_not) {
                (_, _, Some(h), _) => format!(
                    "detected in {:.1} s, {}, healed in {h:.1} s",
                    f.detect_secs.unwrap_or(0.0),
                    f.action.clone().unwrap_or_default()
                ),
                (_, _, None, Some(w)) => w.clone(),
                _ => "in progress".into(),
            };
            let _ = writeln!(out, "  last fault:   {} — {status}", f.kind.as_str());
        }
    }
    let healed = tracker.iter().filter(|f| f.heal_secs.is_some()).count();
    let _ = writeln!(
        out,
        "  faults:       {} injected, {healed} healed",
        tracker.len()
    );
}

/// Where to look: the roles' endpoints, the log, the data, the API token.
fn links(out: &mut String, stack: &Stack, log: &str) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  edge   {0}/metrics  {0}/api/v1/status  /series  /entities  /anomalies  /audit",
        stack.edge_url
    );
    let _ = writeln!(
        out,
        "  cloud  {0}/metrics  {0}/api/v1/nodes  /anomalies  /audit",
        stack.cloud_url
    );
    let _ = writeln!(out, "  agent  {0}/metrics  {0}/healthz", stack.agent_url);
    let _ = writeln!(out, "  logs   {log}    data  {}", stack.data_dir.display());
    let _ = writeln!(
        out,
        "  API writes (approve, promote, roll back, train) need: Authorization: Bearer $(cat {})",
        stack.data_dir.join("api-token").display()
    );
}
