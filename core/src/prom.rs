//! How Prometheus series become Vigil metrics, the same wherever they come
//! from (the agent's scrapes, the edge's remote_write): a metric's name
//! carries its labels, sorted (`req_total:rate{code="500",route="/"}`), and
//! a counter becomes its per-second rate, a drop counted as a restart
//! from zero, as Prometheus's `rate()` counts it.

/// Longest metric name kept (with its labels), in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// `metric` with `suffix` and `labels` sorted by name, values quoted (a
/// `"` or `\` in a value escaped as in the exposition format).
pub fn name<'a>(
    metric: &str,
    suffix: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut labels: Vec<(&str, &str)> = labels.into_iter().collect();
    labels.sort_unstable();
    let mut out = String::with_capacity(metric.len() + suffix.len() + 16 * labels.len());
    out.push_str(metric);
    out.push_str(suffix);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            for c in v.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        out.push('}');
    }
    out
}

/// A counter's increase from `prev` to `now`: a drop is a restart, counted
/// from zero.
pub fn increase(prev: f64, now: f64) -> f64 {
    if now >= prev {
        now - prev
    } else {
        now
    }
}

/// Whether a metric without a type (remote_write sends none) is a counter
/// by Prometheus's naming conventions.
pub fn counter_by_name(metric: &str) -> bool {
    ["_total", "_count", "_sum"]
        .iter()
        .any(|s| metric.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_labels_and_escape_quotes() {
        assert_eq!(name("up", "", []), "up");
        assert_eq!(
            name("req_total", ":rate", [("route", "/a"), ("code", "5\"0\\")]),
            r#"req_total:rate{code="5\"0\\",route="/a"}"#
        );
    }

    #[test]
    fn a_drop_is_a_restart() {
        assert_eq!(increase(10.0, 15.0), 5.0);
        assert_eq!(increase(10.0, 3.0), 3.0);
        assert!(counter_by_name("http_requests_total"));
        assert!(counter_by_name("lat_count"));
        assert!(!counter_by_name("temperature"));
    }
}
