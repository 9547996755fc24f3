//! docs/metrics.md is the metric reference, generated from the code: every
//! metric each role registers (name, type, labels, help). This test fails
//! when the file and the code differ; `VIGIL_BLESS=1 cargo test -p
//! vigil-tests --test metrics_doc` rewrites it. It also holds every metric
//! to the naming scheme: `vigil_` prefix, `_total` on counters and only on
//! counters, base units, and no label that can take unbounded values.

#![cfg(test)]

use std::path::Path;
use vigil_core::telemetry::{documented, MetricDoc};

fn markdown(docs: &[MetricDoc]) -> String {
    let mut out = String::from(
        "# Metrics\n\n\
         Generated from the code by `tests/tests/metrics_doc.rs` (which fails when\n\
         this file is stale; `VIGIL_BLESS=1 cargo test -p vigil-tests --test\n\
         metrics_doc` rewrites it). Every role serves its own `/metrics`; the\n\
         `all` metrics are served by each of them.\n",
    );
    let mut role = "";
    for d in docs {
        if d.role != role {
            role = d.role;
            out.push_str(&format!(
                "\n## {role}\n\n| name | type | labels | meaning |\n|---|---|---|---|\n"
            ));
        }
        let labels = if d.labels.is_empty() {
            "—".to_string()
        } else {
            d.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            d.name,
            d.kind,
            labels,
            d.help.replace('|', "\\|")
        ));
    }
    out
}

fn all_metrics() -> anyhow::Result<Vec<MetricDoc>> {
    vigil_agent::metrics::AgentMetrics::new()?;
    vigil_edge::EdgeMetrics::new()?;
    vigil_cloud::CloudMetrics::new()?;
    Ok(documented())
}

#[test]
fn the_metric_reference_matches_the_code() -> anyhow::Result<()> {
    let docs = all_metrics()?;
    anyhow::ensure!(docs.len() > 50, "only {} metrics registered", docs.len());
    let text = markdown(&docs);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    if std::env::var("VIGIL_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text)?;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    anyhow::ensure!(
        on_disk == text,
        "docs/metrics.md does not match the code; run `VIGIL_BLESS=1 cargo test -p vigil-tests --test metrics_doc` and commit it"
    );
    Ok(())
}

#[test]
fn every_metric_follows_the_naming_scheme() -> anyhow::Result<()> {
    // Labels whose values come from a bounded set (config, code or policy file).
    const BOUNDED: &[&str] = &[
        "kind", "reason", "outcome", "result", "role", "state", "table", "service", "policy",
        "rail", "priority", "attempt", "intake", "to", "series", "metric", "model", "rule",
        "target", // an agent's scrape targets, from its config
        "cause",  // remediation::Cause
    ];
    let mut problems = Vec::new();
    for d in all_metrics()? {
        let n = &d.name;
        if !n.starts_with("vigil_") {
            problems.push(format!("{n}: no vigil_ prefix"));
        }
        if (d.kind == "counter") != n.ends_with("_total") {
            problems.push(format!(
                "{n}: a {} {} end in _total",
                d.kind,
                if d.kind == "counter" {
                    "must"
                } else {
                    "must not"
                }
            ));
        }
        if d.kind == "histogram" && !(n.ends_with("_seconds") || n.ends_with("_bytes")) {
            problems.push(format!("{n}: a histogram names its base unit"));
        }
        for bad in ["_ms", "_milliseconds", "_kb", "_mb", "_percent"] {
            if n.trim_end_matches("_total").ends_with(bad) {
                problems.push(format!("{n}: use base units (seconds, bytes, ratios)"));
            }
        }
        for l in &d.labels {
            if !BOUNDED.contains(&l.as_str()) {
                problems.push(format!("{n}: label {l} is not known to be bounded"));
            }
        }
        if d.labels.iter().any(|l| l == "series") && n != "vigil_anomaly_score" {
            problems.push(format!(
                "{n}: series ids belong to vigil_anomaly_score only"
            ));
        }
        if d.help.trim().is_empty() {
            problems.push(format!("{n}: no help text"));
        }
    }
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
