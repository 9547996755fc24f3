//! One target's scrape turned into samples, as Prometheus's own functions
//! would read it over the interval: a counter becomes its per-second rate
//! (`<name>:rate`, a reset counted from zero), a gauge stays, a histogram
//! becomes the chosen quantile of what it observed in the interval
//! (`<name>:p99`, interpolated in its buckets as `histogram_quantile` does)
//! and the rate of its observations (`<name>_count:rate`), a summary its
//! quantile nearest the chosen one and the same rate. Labels are kept,
//! sorted, in the metric's name. Series are admitted up to `max_series`
//! and then stay admitted while they are exported, so the same ones are
//! kept scrape after scrape; the others are counted.

use prometheus_parse::{HistogramCount, Labels, Scrape, SummaryCount, Value};
use regex::RegexSet;
use std::collections::{HashMap, HashSet};
use vigil_core::prom::{self, increase};

pub use vigil_core::prom::MAX_NAME_BYTES;

/// What is kept of a series between scrapes to compute its rate.
#[derive(Clone, Debug)]
enum Last {
    Counter(f64),
    /// Cumulative bucket counts (upper bound, count), sorted by bound.
    Histogram(Vec<(f64, f64)>),
}

/// One value of a series, named with its labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// E.g. `http_requests_total:rate{code="500"}`.
    pub metric: String,
    /// The value.
    pub value: f64,
}

/// What one scrape gave.
#[derive(Debug, Default, PartialEq)]
pub struct Converted {
    /// The admitted series' values (none yet for a counter seen once).
    pub points: Vec<Point>,
    /// Series over `max_series`, not sent.
    pub over_cap: u64,
    /// Series whose name is longer than [`MAX_NAME_BYTES`], not sent.
    pub too_long: u64,
}

/// Which metric names a target keeps.
#[derive(Clone, Debug)]
pub struct Filter {
    include: Option<RegexSet>,
    exclude: Option<RegexSet>,
}

impl Filter {
    /// Anchored regexes (as Prometheus's relabelling): a name is kept if it
    /// matches one of `include` (or `include` is empty) and none of `exclude`.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, regex::Error> {
        let set = |res: &[String]| -> Result<Option<RegexSet>, regex::Error> {
            if res.is_empty() {
                return Ok(None);
            }
            RegexSet::new(res.iter().map(|r| format!("^(?:{r})$"))).map(Some)
        };
        Ok(Self {
            include: set(include)?,
            exclude: set(exclude)?,
        })
    }

    /// Whether metric `name` is kept.
    pub fn keeps(&self, name: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(name))
            && !self.exclude.as_ref().is_some_and(|s| s.is_match(name))
    }
}

/// A target's state from scrape to scrape.
#[derive(Debug)]
pub struct Converter {
    filter: Filter,
    max_series: usize,
    quantile: f64,
    /// `:p99` for 0.99: the suffix of quantile series.
    quantile_suffix: String,
    /// Counters and histograms at the last scrape, with its time.
    last: HashMap<String, Last>,
    last_ms: Option<i64>,
    admitted: HashSet<String>,
}

impl Converter {
    /// Keeps what `filter` keeps, at most `max_series` series, histograms
    /// and summaries read at `quantile` (0 < q < 1).
    pub fn new(filter: Filter, max_series: usize, quantile: f64) -> Self {
        Self {
            filter,
            max_series,
            quantile,
            quantile_suffix: format!(":p{}", percent(quantile)),
            last: HashMap::new(),
            last_ms: None,
            admitted: HashSet::new(),
        }
    }

    /// The points of `scrape`, taken at `now_ms`.
    pub fn convert(&mut self, scrape: &Scrape, now_ms: i64) -> Converted {
        let secs = self
            .last_ms
            .map(|t| (now_ms - t) as f64 / 1000.0)
            .filter(|s| *s > 0.0);
        self.last_ms = Some(now_ms);
        // The _sum and _count lines of histograms and summaries arrive
        // untyped beside them; their counts are read from them, once.
        let grouped: HashSet<&str> = scrape
            .samples
            .iter()
            .filter(|s| matches!(s.value, Value::Histogram(_) | Value::Summary(_)))
            .map(|s| s.metric.as_str())
            .collect();
        // A summary's count, by the name its rate goes by.
        let counts: HashMap<String, f64> = scrape
            .samples
            .iter()
            .filter_map(|s| {
                let base = s.metric.strip_suffix("_count")?;
                let v = match s.value {
                    Value::Untyped(v) | Value::Counter(v) => v,
                    _ => return None,
                };
                grouped
                    .contains(base)
                    .then(|| (name(&s.metric, ":rate", &s.labels), v))
            })
            .collect();
        let mut out = Converted::default();
        let mut seen = HashSet::new();
        let mut last = HashMap::with_capacity(self.last.len());
        for s in &scrape.samples {
            if let Some(base) = s
                .metric
                .strip_suffix("_count")
                .or_else(|| s.metric.strip_suffix("_sum"))
            {
                if grouped.contains(base) {
                    continue;
                }
            }
            if !self.filter.keeps(&s.metric) {
                continue;
            }
            let mut emit = |metric: String, value: Option<f64>| {
                if metric.len() > MAX_NAME_BYTES {
                    out.too_long += 1;
                    return None;
                }
                if !self.admitted.contains(&metric) {
                    if self.admitted.len() >= self.max_series {
                        out.over_cap += 1;
                        return None;
                    }
                    self.admitted.insert(metric.clone());
                }
                seen.insert(metric.clone());
                if let Some(value) = value.filter(|v| v.is_finite()) {
                    out.points.push(Point {
                        metric: metric.clone(),
                        value,
                    });
                }
                Some(metric)
            };
            match &s.value {
                Value::Gauge(v) | Value::Untyped(v) => {
                    emit(name(&s.metric, "", &s.labels), Some(*v));
                }
                Value::Counter(v) => {
                    let key = name(&s.metric, ":rate", &s.labels);
                    let rate = rate(&self.last, &key, *v, secs);
                    if let Some(key) = emit(key, rate) {
                        last.insert(key, Last::Counter(*v));
                    }
                }
                Value::Histogram(buckets) => {
                    let now = sorted(buckets);
                    let key = name(&s.metric, &self.quantile_suffix, &s.labels);
                    let prev = match self.last.get(&key) {
                        Some(Last::Histogram(p)) => Some(p.as_slice()),
                        _ => None,
                    };
                    let (q, rate) = match (prev, secs) {
                        (Some(prev), Some(secs)) => {
                            let d = deltas(prev, &now);
                            let total = d.last().map_or(0.0, |b| b.1);
                            (quantile(self.quantile, &d), Some(total / secs))
                        }
                        _ => (None, None),
                    };
                    let count = name(&format!("{}_count", s.metric), ":rate", &s.labels);
                    if let Some(key) = emit(key, q) {
                        last.insert(key, Last::Histogram(now));
                    }
                    emit(count, rate);
                }
                Value::Summary(quantiles) => {
                    let key = name(&s.metric, &self.quantile_suffix, &s.labels);
                    emit(key, nearest(quantiles, self.quantile));
                    let count_name = format!("{}_count", s.metric);
                    let key = name(&count_name, ":rate", &s.labels);
                    if let Some(v) = counts.get(key.as_str()) {
                        let rate = rate(&self.last, &key, *v, secs);
                        if let Some(key) = emit(key, rate) {
                            last.insert(key, Last::Counter(*v));
                        }
                    }
                }
            }
        }
        // A series no longer exported frees its place.
        self.admitted.retain(|m| seen.contains(m));
        self.last = last;
        out
    }
}

/// `name` with `suffix` and the labels, sorted: `name:rate{a="1",b="2"}`.
fn name(metric: &str, suffix: &str, labels: &Labels) -> String {
    prom::name(
        metric,
        suffix,
        labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// A counter's per-second rate since its value at the last scrape, if it
/// had one and time has passed.
fn rate(last: &HashMap<String, Last>, key: &str, now: f64, secs: Option<f64>) -> Option<f64> {
    match (last.get(key), secs) {
        (Some(Last::Counter(prev)), Some(secs)) => Some(increase(*prev, now) / secs),
        _ => None,
    }
}

/// `0.99` → `99`, `0.5` → `50`, `0.999` → `99.9`.
fn percent(q: f64) -> String {
    let p = (q * 1000.0).round() / 10.0;
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p}")
    }
}

fn sorted(buckets: &[HistogramCount]) -> Vec<(f64, f64)> {
    let mut b: Vec<(f64, f64)> = buckets.iter().map(|h| (h.less_than, h.count)).collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    b
}

/// Each bucket's increase since `prev`; after a reset (any bucket lower,
/// or other buckets), the counts as they are.
fn deltas(prev: &[(f64, f64)], now: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let same =
        prev.len() == now.len() && prev.iter().zip(now).all(|(p, n)| p.0 == n.0 && n.1 >= p.1);
    if !same {
        return now.to_vec();
    }
    prev.iter()
        .zip(now)
        .map(|(p, n)| (n.0, n.1 - p.1))
        .collect()
}

/// The `q` quantile of cumulative `buckets` (sorted, the last `+Inf`), as
/// `histogram_quantile` computes it: linear within the bucket it falls in,
/// the highest finite bound if it falls in `+Inf`; none without
/// observations.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || buckets.last()?.0 != f64::INFINITY {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (i, &(bound, count)) in buckets.iter().enumerate() {
        if count >= rank {
            if bound == f64::INFINITY {
                return Some(lower.0);
            }
            // The first bucket starts at 0 (or at its bound when negative).
            let start = if i == 0 { bound.min(0.0) } else { lower.0 };
            if count == lower.1 {
                return Some(bound);
            }
            return Some(start + (bound - start) * (rank - lower.1) / (count - lower.1));
        }
        lower = (bound, count);
    }
    None
}

/// The summary's quantile nearest `q`.
fn nearest(quantiles: &[SummaryCount], q: f64) -> Option<f64> {
    quantiles
        .iter()
        .min_by(|a, b| (a.quantile - q).abs().total_cmp(&(b.quantile - q).abs()))
        .map(|s| s.count)
}

#[cfg(test)]
mod tests;
