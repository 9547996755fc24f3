//! The Grafana dashboards' structure: importable JSON with unique uids, a
//! `datasource` variable and no hard-coded datasource uid, every panel with
//! a query, and no query (nor alert rule) on a metric that docs/metrics.md
//! does not list. The provisioning files parse.

#![cfg(test)]

use serde_json::Value;
use std::collections::HashSet;
use vigil_tests::dashboards::{alert_rules, dir, load, metric_names, panel_queries};

/// Every `datasource` object in the JSON, wherever it is.
fn datasources<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "datasource" && x.is_object() {
                    out.push(x);
                }
                datasources(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| datasources(x, out)),
        _ => {}
    }
}

/// Each panel of one dashboard: a unique id, and (rows aside) a query and
/// a size.
fn check_panels(file: &str, d: &Value, problems: &mut Vec<String>) {
    let mut ids = HashSet::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        let title = p["title"].as_str().unwrap_or_default();
        if !ids.insert(p["id"].as_i64().unwrap_or(-1)) {
            problems.push(format!("{file}: panel id of {title:?} repeated"));
        }
        if p["type"] == "row" {
            continue;
        }
        let exprs: Vec<&str> = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str())
            .filter(|e| !e.trim().is_empty())
            .collect();
        if exprs.is_empty() {
            problems.push(format!("{file}: panel {title:?} has no query"));
        }
        if p["gridPos"]["w"].as_i64().unwrap_or(0) == 0 {
            problems.push(format!("{file}: panel {title:?} has no size"));
        }
    }
}

#[test]
fn dashboards_are_well_formed_and_use_only_documented_metrics() -> anyhow::Result<()> {
    let boards = load()?;
    let titles: Vec<&str> = boards
        .iter()
        .filter_map(|(_, d)| d["title"].as_str())
        .collect();
    assert_eq!(
        boards.len(),
        4,
        "fleet, site, remediation, models: {titles:?}"
    );
    let doc = std::fs::read_to_string(dir().join("../docs/metrics.md"))?;
    let documented: HashSet<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let mut problems = Vec::new();
    let mut uids = HashSet::new();
    for (file, d) in &boards {
        let uid = d["uid"].as_str().unwrap_or_default();
        if uid.is_empty() || !uids.insert(uid.to_string()) {
            problems.push(format!("{file}: uid {uid:?} missing or not unique"));
        }
        let vars = d["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !vars.iter().any(|v| {
            v["type"] == "datasource" && v["name"] == "datasource" && v["query"] == "prometheus"
        }) {
            problems.push(format!(
                "{file}: no `datasource` variable of type prometheus"
            ));
        }
        let mut found = Vec::new();
        datasources(d, &mut found);
        for ds in found {
            if ds["uid"] != "${datasource}" {
                problems.push(format!("{file}: a hard-coded datasource {ds}"));
            }
        }
        check_panels(file, d, &mut problems);
    }
    let mut queries: Vec<(String, String)> = panel_queries(&boards)
        .into_iter()
        .map(|(uid, title, e)| (format!("{uid} / {title}"), e))
        .collect();
    queries.extend(
        alert_rules()?
            .into_iter()
            .map(|(a, e)| (format!("alert {a}"), e)),
    );
    for (what, e) in &queries {
        for m in metric_names(e) {
            if !documented.contains(m.as_str()) {
                problems.push(format!("{what}: {m} is not in docs/metrics.md"));
            }
        }
    }
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    // The provisioning files are YAML Grafana reads.
    for f in ["dashboards/vigil.yml", "datasources/prometheus.yml"] {
        let text = std::fs::read_to_string(dir().join("grafana/provisioning").join(f))?;
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
        assert_eq!(v["apiVersion"].as_u64(), Some(1), "{f}");
    }
    Ok(())
}
