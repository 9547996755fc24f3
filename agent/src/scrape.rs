//! Prometheus endpoints the agent scrapes: node_exporter's detail, a
//! service's own `/metrics`, any exporter on the host. Each target is
//! fetched on its own interval, parsed with the `prometheus-parse` crate
//! (the Prometheus text format, which OpenMetrics endpoints also serve),
//! converted ([`convert`]: counters to rates, histograms to a quantile and
//! a rate, labels kept, series capped per target) off the async threads,
//! and its samples wait in a buffer bounded in bytes for the next metric
//! batch. Its series belong to the host, or to the watched service named
//! by `service`, so the edge scores them and its policies can act on them.

pub mod convert;
mod metrics;

use convert::{Converter, Filter};
pub use metrics::ScrapeMetrics;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use vigil_core::clock::now_ms;
use vigil_core::message::Sample;
use vigil_core::ratelog::RateLog;
use vigil_core::EntityId;

/// Largest exposition read from a target, in bytes.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Most bytes of scraped samples waiting for the next batch, all targets.
pub const MAX_PENDING_BYTES: usize = 8 << 20;

/// One endpoint to scrape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The target's name (in the agent's metrics and the `scrape_up` series).
    pub name: String,
    /// Its metrics URL, e.g. `http://127.0.0.1:9100/metrics`.
    pub url: String,
    /// The watched service (in `services:`) its series belong to; unset:
    /// the host.
    #[serde(default)]
    pub service: Option<String>,
    /// Seconds between scrapes.
    #[serde(default = "default_interval")]
    pub interval_secs: f64,
    /// Give up on a scrape after this long, milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Metric names kept (anchored regexes); empty: all.
    #[serde(default)]
    pub include: Vec<String>,
    /// Metric names dropped (anchored regexes), after `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Most series kept from this target; the others are counted
    /// (`vigil_agent_scrape_series_dropped_total`).
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// The quantile histograms and summaries are read at.
    #[serde(default = "default_quantile")]
    pub quantile: f64,
}

fn default_interval() -> f64 {
    10.0
}
fn default_timeout() -> u64 {
    5000
}
fn default_max_series() -> usize {
    2000
}
fn default_quantile() -> f64 {
    0.99
}

impl ScrapeConfig {
    /// Every problem of `scrape[i]`, given the names of the watched services.
    pub fn validate(&self, at: &str, services: &[String], e: &mut Vec<String>) {
        if !vigil_core::topic::valid_level(&self.name) {
            e.push(format!(
                "{at}.name: {:?} must be 1-64 of [A-Za-z0-9._-]",
                self.name
            ));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            e.push(format!(
                "{at}.url: {:?} must start with http:// or https://",
                self.url
            ));
        }
        if let Some(s) = &self.service {
            if !services.contains(s) {
                e.push(format!("{at}.service: {s:?} is not in services"));
            }
        }
        if !(self.interval_secs >= 0.5 && self.interval_secs <= 3600.0) {
            e.push(format!(
                "{at}.interval_secs: {} is outside 0.5..=3600",
                self.interval_secs
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            e.push(format!(
                "{at}.timeout_ms: {} is outside 1..=60000",
                self.timeout_ms
            ));
        }
        if self.max_series == 0 || self.max_series > 100_000 {
            e.push(format!(
                "{at}.max_series: {} is outside 1..=100000",
                self.max_series
            ));
        }
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            e.push(format!(
                "{at}.quantile: {} must be between 0 and 1",
                self.quantile
            ));
        }
        for (field, res) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (j, r) in res.iter().enumerate() {
                if let Err(err) = regex::Regex::new(r) {
                    e.push(format!("{at}.{field}[{j}]: {r:?} is not a regex: {err}"));
                }
            }
        }
    }

    /// The entity its series belong to.
    fn entity(&self, host: &str) -> EntityId {
        match &self.service {
            Some(s) => EntityId::service(host, s),
            None => EntityId::host(host),
        }
    }
}

/// Scraped samples waiting for the next batch, bounded in bytes: when
/// full, the oldest go (counted).
#[derive(Debug, Default)]
pub struct Pending {
    q: VecDeque<Sample>,
    bytes: usize,
}

impl Pending {
    /// Adds `samples`; returns how many old ones went to make room.
    pub fn add(&mut self, samples: Vec<Sample>) -> u64 {
        let mut dropped = 0;
        for s in samples {
            self.bytes += s.held_bytes();
            self.q.push_back(s);
        }
        while self.bytes > MAX_PENDING_BYTES {
            match self.q.pop_front() {
                Some(s) => {
                    self.bytes -= s.held_bytes();
                    dropped += 1;
                }
                None => break,
            }
        }
        dropped
    }

    /// Everything waiting, oldest first.
    pub fn take(&mut self) -> Vec<Sample> {
        self.bytes = 0;
        self.q.drain(..).collect()
    }
}

/// Scrapes every target into `pending` until `shutdown`.
pub fn start(
    targets: &[ScrapeConfig],
    host: &str,
    pending: Arc<Mutex<Pending>>,
    metrics: ScrapeMetrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("vigil-agent/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut tasks = Vec::new();
    for t in targets {
        let filter = Filter::new(&t.include, &t.exclude)?;
        let target = Target {
            entity: t.entity(host),
            converter: Some(Converter::new(filter, t.max_series, t.quantile)),
            config: t.clone(),
            client: client.clone(),
            pending: pending.clone(),
            metrics: metrics.clone(),
            ratelog: RateLog::default(),
        };
        tasks.push(tokio::spawn(target.run(shutdown.clone())));
    }
    Ok(tasks)
}

struct Target {
    config: ScrapeConfig,
    entity: EntityId,
    /// Lent to the blocking task that converts each scrape.
    converter: Option<Converter>,
    client: reqwest::Client,
    pending: Arc<Mutex<Pending>>,
    metrics: ScrapeMetrics,
    ratelog: RateLog,
}

impl Target {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(self.config.interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let ts = now_ms();
            let start = Instant::now();
            let scraped = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.scrape(ts) => r,
            };
            let name = self.config.name.as_str();
            self.metrics
                .duration
                .with_label_values(&[name])
                .set(start.elapsed().as_secs_f64());
            let mut samples = Vec::new();
            let up = match scraped {
                Ok(s) => {
                    samples = s;
                    true
                }
                Err(why) => {
                    if let Some(skipped) = self.ratelog.allow("scrape") {
                        warn!(target = name, url = %self.config.url, error = %why, skipped, "Scrape failed.");
                    }
                    false
                }
            };
            let outcome = if up { "ok" } else { "failed" };
            self.metrics
                .scrapes
                .with_label_values(&[name, outcome])
                .inc();
            // Like Prometheus's `up`: an exporter that stops answering is a
            // series of its own.
            samples.push(Sample {
                entity: self.entity.clone(),
                metric: format!("scrape_up{{target=\"{name}\"}}"),
                ts_ms: ts,
                value: f64::from(u8::from(up)),
            });
            let dropped = self.pending.lock().map(|mut p| p.add(samples)).unwrap_or(0);
            if dropped > 0 {
                self.metrics.pending_dropped.inc_by(dropped);
            }
        }
    }

    /// Fetches, parses and converts one scrape.
    async fn scrape(&mut self, ts: i64) -> Result<Vec<Sample>, String> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let body = tokio::time::timeout(timeout, fetch(&self.client, &self.config.url))
            .await
            .map_err(|_| format!("no answer within {} ms", self.config.timeout_ms))??;
        let Some(mut converter) = self.converter.take() else {
            return Err("the last scrape's conversion did not finish".into());
        };
        let entity = self.entity.clone();
        let done = tokio::task::spawn_blocking(move || {
            let converted =
                parse(&String::from_utf8_lossy(&body)).map(|p| converter.convert(&p, ts));
            (converter, converted)
        })
        .await
        .map_err(|e| format!("converting failed: {e}"))?;
        let (converter, converted) = done;
        self.converter = Some(converter);
        let c = converted.map_err(|e| format!("unreadable exposition: {e}"))?;
        let name = self.config.name.as_str();
        self.metrics
            .series
            .with_label_values(&[name])
            .set((c.points.len()) as i64);
        let dropped = c.over_cap + c.too_long;
        if dropped > 0 {
            self.metrics
                .series_dropped
                .with_label_values(&[name])
                .inc_by(dropped);
            if let Some(skipped) = self.ratelog.allow("cap") {
                warn!(
                    target = name,
                    over_cap = c.over_cap,
                    too_long = c.too_long,
                    max_series = self.config.max_series,
                    skipped,
                    "Scrape had more series than kept; raise max_series or narrow include."
                );
            }
        }
        Ok(c.points
            .into_iter()
            .map(|p| Sample {
                entity: entity.clone(),
                metric: p.metric,
                ts_ms: ts,
                value: p.value,
            })
            .collect())
    }
}

/// Parses an exposition in the Prometheus text format.
pub fn parse(text: &str) -> std::io::Result<prometheus_parse::Scrape> {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
}

/// GETs `url`, reading at most [`MAX_BODY_BYTES`].
async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut res = client
        .get(url)
        .header("accept", "text/plain;version=0.0.4")
        .send()
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("HTTP {}", res.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| format!("reading: {e}"))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!("larger than {MAX_BODY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests;
