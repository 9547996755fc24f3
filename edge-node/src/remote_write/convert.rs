//! A remote-write request turned into the edge's samples: each series'
//! entity comes from its `instance` and `job` (`service/<instance>/<job>`,
//! or `host/<instance>` without a job; characters a name may not hold
//! become `-`), its metric is `__name__` with the other labels, sorted; a
//! counter (by the metadata Prometheus sends, else by its name: `_total`,
//! `_count`, `_sum`) becomes its per-second rate between samples. Histogram
//! buckets are not taken (their `_count` and `_sum` are). At most
//! `max_series` series are taken; the first ones stay while they keep
//! coming (a series silent for ten minutes frees its place), the others
//! are refused and counted.

use super::proto::{self, WriteRequest};
use std::collections::HashMap;
use vigil_core::message::Sample;
use vigil_core::prom;
use vigil_core::EntityId;

/// A series silent this long frees its place, milliseconds.
const IDLE_MS: i64 = 10 * 60 * 1000;
/// Most metric families whose type is remembered from metadata.
const MAX_TYPES: usize = 100_000;

/// Why samples were not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A new series past `max_series`.
    Cardinality,
    /// A histogram bucket.
    Bucket,
    /// No `__name__`, no `instance`, or a name too long.
    Labels,
    /// Not after the series' last sample, or not finite.
    Value,
}

impl Refusal {
    /// Every reason.
    pub const ALL: [Refusal; 4] = [
        Refusal::Cardinality,
        Refusal::Bucket,
        Refusal::Labels,
        Refusal::Value,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Cardinality => "cardinality",
            Refusal::Bucket => "bucket",
            Refusal::Labels => "labels",
            Refusal::Value => "value",
        }
    }
}

/// What one request gave.
#[derive(Debug, Default)]
pub struct Converted {
    /// The samples to cache.
    pub samples: Vec<Sample>,
    /// Samples refused, by reason.
    pub refused: HashMap<Refusal, u64>,
}

impl Converted {
    fn refuse(&mut self, why: Refusal, n: usize) {
        *self.refused.entry(why).or_default() += n as u64;
    }
}

/// One series taken: when it was last heard, and a counter's last sample.
#[derive(Debug)]
struct Seen {
    at_ms: i64,
    last: Option<(i64, f64)>,
}

/// The state kept between requests.
#[derive(Debug)]
pub struct Converter {
    max_series: usize,
    series: HashMap<String, Seen>,
    types: HashMap<String, i32>,
    swept_ms: i64,
}

impl Converter {
    /// Takes at most `max_series` series.
    pub fn new(max_series: usize) -> Self {
        Self {
            max_series,
            series: HashMap::new(),
            types: HashMap::new(),
            swept_ms: 0,
        }
    }

    /// Series taken now.
    pub fn series(&self) -> usize {
        self.series.len()
    }

    /// The samples of `req`, received at `now_ms`.
    pub fn convert(&mut self, req: &WriteRequest, now_ms: i64) -> Converted {
        for m in &req.metadata {
            if self.types.len() < MAX_TYPES || self.types.contains_key(&m.metric_family_name) {
                self.types.insert(m.metric_family_name.clone(), m.r#type);
            }
        }
        if now_ms - self.swept_ms > 60_000 {
            self.swept_ms = now_ms;
            self.series.retain(|_, s| now_ms - s.at_ms < IDLE_MS);
        }
        let mut out = Converted::default();
        for ts in &req.timeseries {
            self.series_of(ts, now_ms, &mut out);
        }
        out
    }

    fn series_of(&mut self, ts: &proto::TimeSeries, now_ms: i64, out: &mut Converted) {
        let label = |n: &str| {
            ts.labels
                .iter()
                .find(|l| l.name == n)
                .map(|l| l.value.as_str())
        };
        let (Some(metric), Some(instance)) = (label("__name__"), label("instance")) else {
            return out.refuse(Refusal::Labels, ts.samples.len());
        };
        if metric.ends_with("_bucket") {
            return out.refuse(Refusal::Bucket, ts.samples.len());
        }
        let entity = match label("job") {
            Some(job) => EntityId::service(&level(instance), &level(job)),
            None => EntityId::host(&level(instance)),
        };
        let counter = self.is_counter(metric);
        let others = ts
            .labels
            .iter()
            .filter(|l| !matches!(l.name.as_str(), "__name__" | "instance" | "job"))
            .map(|l| (l.name.as_str(), l.value.as_str()));
        let name = prom::name(metric, if counter { ":rate" } else { "" }, others);
        if name.len() > prom::MAX_NAME_BYTES || entity.validate().is_err() {
            return out.refuse(Refusal::Labels, ts.samples.len());
        }
        let key = format!("{entity}:{name}");
        if !self.series.contains_key(&key) && self.series.len() >= self.max_series {
            return out.refuse(Refusal::Cardinality, ts.samples.len());
        }
        let seen = self.series.entry(key).or_insert(Seen {
            at_ms: now_ms,
            last: None,
        });
        seen.at_ms = now_ms;
        for s in &ts.samples {
            if !s.value.is_finite() {
                out.refuse(Refusal::Value, 1);
                continue;
            }
            let value = match (counter, seen.last) {
                (false, _) => s.value,
                (true, None) => {
                    seen.last = Some((s.timestamp, s.value));
                    continue;
                }
                (true, Some((t, v))) => {
                    if s.timestamp <= t {
                        out.refuse(Refusal::Value, 1);
                        continue;
                    }
                    seen.last = Some((s.timestamp, s.value));
                    prom::increase(v, s.value) * 1000.0 / (s.timestamp - t) as f64
                }
            };
            out.samples.push(Sample {
                entity: entity.clone(),
                metric: name.clone(),
                ts_ms: s.timestamp,
                value,
            });
        }
    }

    fn is_counter(&self, metric: &str) -> bool {
        match self.types.get(metric) {
            Some(&t) => t == proto::COUNTER,
            None => {
                // A histogram's or summary's _count and _sum are counters.
                let family = metric
                    .strip_suffix("_count")
                    .or_else(|| metric.strip_suffix("_sum"));
                let grouped = family
                    .and_then(|f| self.types.get(f))
                    .is_some_and(|t| *t == proto::HISTOGRAM || *t == proto::SUMMARY);
                grouped || prom::counter_by_name(metric)
            }
        }
    }
}

/// `text` as an entity name: 1-64 of `[A-Za-z0-9._-]`, others as `-`.
fn level(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Label, MetricMetadata, TimeSeries};

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| proto::Sample { value, timestamp })
                .collect(),
        }
    }

    fn req(ts: Vec<TimeSeries>) -> WriteRequest {
        WriteRequest {
            timeseries: ts,
            metadata: vec![],
        }
    }

    #[test]
    fn entities_come_from_instance_and_job_and_counters_become_rates() {
        let mut c = Converter::new(100);
        let labels = [
            ("__name__", "http_requests_total"),
            ("code", "500"),
            ("instance", "10.0.0.7:9100"),
            ("job", "api"),
        ];
        let got = c.convert(
            &req(vec![series(
                &labels,
                &[(1000, 10.0), (3000, 30.0), (4000, 5.0)],
            )]),
            0,
        );
        let s: Vec<(&str, &str, i64, f64)> = got
            .samples
            .iter()
            .map(|s| (s.entity.as_str(), s.metric.as_str(), s.ts_ms, s.value))
            .collect();
        let m = "http_requests_total:rate{code=\"500\"}";
        // 20 in 2 s; then a restart: 5 in 1 s.
        assert_eq!(
            s,
            [
                ("service/10.0.0.7-9100/api", m, 3000, 10.0),
                ("service/10.0.0.7-9100/api", m, 4000, 5.0)
            ]
        );
        // The next request goes on from the last sample.
        let next = c.convert(&req(vec![series(&labels, &[(5000, 9.0)])]), 0);
        assert_eq!(next.samples[0].value, 4.0);
        let gauge = [("__name__", "temp"), ("instance", "h1")];
        let got = c.convert(&req(vec![series(&gauge, &[(1000, 21.5)])]), 0);
        assert_eq!(got.samples[0].entity.as_str(), "host/h1");
        assert_eq!(
            (got.samples[0].metric.as_str(), got.samples[0].value),
            ("temp", 21.5)
        );
    }

    #[test]
    fn metadata_decides_the_type_and_buckets_and_bad_labels_are_refused() {
        let mut c = Converter::new(100);
        let mut r = req(vec![
            series(
                &[("__name__", "jobs_done"), ("instance", "h")],
                &[(1, 1.0), (1001, 3.0)],
            ),
            series(
                &[("__name__", "lat_bucket"), ("instance", "h"), ("le", "1")],
                &[(1, 1.0)],
            ),
            series(&[("__name__", "x")], &[(1, 1.0)]),
            series(&[("__name__", "y"), ("instance", "h")], &[(1, f64::NAN)]),
        ]);
        r.metadata.push(MetricMetadata {
            r#type: proto::COUNTER,
            metric_family_name: "jobs_done".into(),
        });
        let got = c.convert(&r, 0);
        assert_eq!(got.samples.len(), 1);
        assert_eq!(
            (got.samples[0].metric.as_str(), got.samples[0].value),
            ("jobs_done:rate", 2.0)
        );
        for (why, n) in [
            (Refusal::Bucket, 1),
            (Refusal::Labels, 1),
            (Refusal::Value, 1),
        ] {
            assert_eq!(got.refused.get(&why), Some(&n), "{why:?}");
        }
    }

    #[test]
    fn past_max_series_new_ones_are_refused_and_silent_ones_free_their_place() {
        let mut c = Converter::new(2);
        let s = |n: &str| series(&[("__name__", n), ("instance", "h")], &[(1, 1.0)]);
        let got = c.convert(&req(vec![s("a"), s("b"), s("c")]), 0);
        assert_eq!(got.samples.len(), 2);
        assert_eq!(got.refused.get(&Refusal::Cardinality), Some(&1));
        assert_eq!(c.series(), 2);
        // a keeps coming; b falls silent for longer than IDLE_MS.
        c.convert(&req(vec![s("a")]), IDLE_MS - 1);
        let got = c.convert(&req(vec![s("a"), s("c")]), IDLE_MS + 60_001);
        assert_eq!(got.samples.len(), 2, "{:?}", got.refused);
    }
}
