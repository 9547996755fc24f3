//! Reading the shipped Grafana dashboards and alert rules: their PromQL, and
//! the metric names it uses (for the structure test and the live
//! Prometheus test).

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The repository's `dashboards/` folder.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// Every dashboard JSON file, parsed, with its file name.
pub fn load() -> anyhow::Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir().join("grafana"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "json") {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            out.push((name, serde_json::from_slice(&std::fs::read(&p)?)?));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Each panel's `(dashboard uid, panel title, expr)`, rows excluded.
pub fn panel_queries(dashboards: &[(String, Value)]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (_, d) in dashboards {
        let uid = d["uid"].as_str().unwrap_or_default();
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    let title = p["title"].as_str().unwrap_or_default();
                    out.push((uid.to_string(), title.to_string(), e.to_string()));
                }
            }
        }
    }
    out
}

/// Each alert rule's `(name, expr)` in `alerts.yml`.
pub fn alert_rules() -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(dir().join("alerts.yml"))?;
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
    let mut out = Vec::new();
    for g in v["groups"].as_sequence().into_iter().flatten() {
        for r in g["rules"].as_sequence().into_iter().flatten() {
            if let (Some(a), Some(e)) = (r["alert"].as_str(), r["expr"].as_str()) {
                out.push((a.to_string(), e.to_string()));
            }
        }
    }
    Ok(out)
}

/// The `vigil_…` metric names an expression uses, histogram suffixes removed.
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("vigil_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            let mut name = &expr[start..end];
            for suffix in ["_bucket", "_count", "_sum"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    if base.ends_with("_seconds") || base.ends_with("_bytes") {
                        name = base;
                    }
                }
            }
            out.push(name.to_string());
        }
        i = end.max(start + 1);
    }
    out
}

/// Replaces dashboard variables with what "All" selects.
pub fn resolve_variables(expr: &str) -> String {
    expr.replace("$edge", ".*").replace("$agent", ".*")
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_metric_names_and_drops_histogram_suffixes() {
        let e = r#"histogram_quantile(0.5, sum by (le) (rate(vigil_edge_tick_duration_seconds_bucket[5m]))) + vigil_a_total + x_vigil_b"#;
        assert_eq!(
            super::metric_names(e),
            vec!["vigil_edge_tick_duration_seconds", "vigil_a_total"]
        );
    }
}
