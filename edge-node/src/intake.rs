//! Fair intake: per-sender limits on the bytes and the new series a sender
//! may bring each second, so one host's flood (tens of thousands of new
//! series names, megabytes a second) costs the edge little and delays no
//! other sender's samples or a repair. A token bucket per sender for each;
//! the senders' table is bounded (the idlest goes first).

use prometheus::{IntCounter, Registry};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use vigil_core::telemetry::Group;

/// `vigil_edge_intake_messages_limited_total`.
pub fn counter(r: &Registry) -> prometheus::Result<IntCounter> {
    Group::new(r, "edge").counter(
        "vigil_edge_intake_messages_limited_total",
        "Messages dropped unread because their sender was over its intake.max_bytes_per_sec (one sender's flood; samples of new series past intake.max_new_series_per_sec are counted in vigil_edge_samples_refused_total{reason=\"new_series_rate\"}).",
    )
}

/// The edge config's `intake:`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    /// Message bytes a sender may send each second, on average; past its
    /// burst a message is dropped unread and counted.
    pub max_bytes_per_sec: u64,
    /// ...and at once (the bucket's size).
    pub burst_bytes: u64,
    /// New series a sender may bring each second, on average; past its
    /// burst a sample of a new series is refused (`new_series_rate`).
    pub max_new_series_per_sec: u64,
    /// ...and at once (an agent's first batches, a restarted edge).
    pub burst_new_series: u64,
    /// Senders tracked at most (the least recently heard is forgotten).
    pub max_senders: usize,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            max_bytes_per_sec: 1 << 20,
            burst_bytes: 4 << 20,
            max_new_series_per_sec: 1_000,
            burst_new_series: 5_000,
            max_senders: 4_096,
        }
    }
}

impl IntakeConfig {
    /// Every problem, prefixed `intake.`.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        let pairs = [
            ("max_bytes_per_sec", self.max_bytes_per_sec),
            ("burst_bytes", self.burst_bytes),
            ("max_new_series_per_sec", self.max_new_series_per_sec),
            ("burst_new_series", self.burst_new_series),
            ("max_senders", self.max_senders as u64),
        ];
        for (name, v) in pairs.iter().filter(|(_, v)| *v == 0) {
            e.push(format!("intake.{name}: {v} must be at least 1"));
        }
        if self.burst_bytes < self.max_bytes_per_sec {
            e.push("intake.burst_bytes: must be at least max_bytes_per_sec".into());
        }
        if self.burst_new_series < self.max_new_series_per_sec {
            e.push("intake.burst_new_series: must be at least max_new_series_per_sec".into());
        }
        e
    }
}

/// A token bucket: `rate` a second up to `burst`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    fn full(burst: u64, now_ms: i64) -> Self {
        Self {
            tokens: burst as f64,
            at_ms: now_ms,
        }
    }

    /// Takes `n` tokens if there are that many.
    fn take(&mut self, n: u64, rate: u64, burst: u64, now_ms: i64) -> bool {
        let dt = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + dt * rate as f64).min(burst as f64);
        self.at_ms = now_ms.max(self.at_ms);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Sender {
    bytes: Bucket,
    new_series: Bucket,
    heard_ms: i64,
}

/// Every sender's buckets.
#[derive(Debug)]
pub struct Intake {
    cfg: IntakeConfig,
    senders: HashMap<String, Sender>,
}

impl Intake {
    /// Limits as configured, no sender heard yet.
    pub fn new(cfg: IntakeConfig) -> Self {
        Self {
            cfg,
            senders: HashMap::new(),
        }
    }

    fn sender(&mut self, name: &str, now_ms: i64) -> &mut Sender {
        if !self.senders.contains_key(name) && self.senders.len() >= self.cfg.max_senders {
            let idlest = self
                .senders
                .iter()
                .min_by_key(|(_, s)| s.heard_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = idlest {
                self.senders.remove(&k);
            }
        }
        let (bytes, series) = (self.cfg.burst_bytes, self.cfg.burst_new_series);
        let s = self
            .senders
            .entry(name.to_string())
            .or_insert_with(|| Sender {
                bytes: Bucket::full(bytes, now_ms),
                new_series: Bucket::full(series, now_ms),
                heard_ms: now_ms,
            });
        s.heard_ms = now_ms;
        s
    }

    /// Whether `sender` may bring a message of `bytes` now.
    pub fn on_message(&mut self, sender: &str, bytes: usize, now_ms: i64) -> bool {
        let (rate, burst) = (self.cfg.max_bytes_per_sec, self.cfg.burst_bytes);
        // A message larger than the burst could never pass: it takes the
        // whole bucket instead (max_message_bytes bounds it anyway).
        let n = (bytes as u64).min(burst);
        self.sender(sender, now_ms)
            .bytes
            .take(n, rate, burst, now_ms)
    }

    /// Whether `sender` may bring one more new series now.
    pub fn on_new_series(&mut self, sender: &str, now_ms: i64) -> bool {
        let (rate, burst) = (self.cfg.max_new_series_per_sec, self.cfg.burst_new_series);
        self.sender(sender, now_ms)
            .new_series
            .take(1, rate, burst, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intake() -> Intake {
        Intake::new(IntakeConfig {
            max_bytes_per_sec: 1000,
            burst_bytes: 2000,
            max_new_series_per_sec: 10,
            burst_new_series: 20,
            max_senders: 2,
        })
    }

    #[test]
    fn each_sender_has_its_own_buckets_refilled_at_the_rate() {
        let mut i = intake();
        assert!(i.on_message("flood", 1500, 0));
        assert!(!i.on_message("flood", 1000, 0), "past the burst");
        assert!(
            i.on_message("calm", 1500, 0),
            "another sender is not charged"
        );
        // Half a second later 500 more bytes have come in: 1000 now.
        assert!(i.on_message("flood", 1000, 500));
        assert!(!i.on_message("flood", 1, 500));
        let admitted = (0..100).filter(|_| i.on_new_series("flood", 1000)).count();
        assert_eq!(admitted, 20);
        assert!(i.on_new_series("calm", 1000));
        assert!(!i.on_new_series("flood", 1050));
        assert!(i.on_new_series("flood", 1100), "one more after 100 ms");
    }

    #[test]
    fn the_table_of_senders_is_bounded_and_forgets_the_idlest() {
        let mut i = intake();
        assert!(i.on_message("a", 2000, 0));
        assert!(i.on_message("b", 10, 1));
        assert!(i.on_message("c", 10, 2));
        assert_eq!(i.senders.len(), 2);
        assert!(!i.senders.contains_key("a"));
        // A message larger than the burst takes the whole bucket, once full.
        assert!(!i.on_message("b", 1 << 30, 3));
        assert!(i.on_message("b", 1 << 30, 10_000));
        assert!(!i.on_message("b", 1, 10_000));
    }

    #[test]
    fn default_validates_and_zeroes_are_refused() {
        assert!(IntakeConfig::default().validate().is_empty());
        let bad = IntakeConfig {
            max_bytes_per_sec: 0,
            burst_new_series: 1,
            ..Default::default()
        };
        assert_eq!(bad.validate().len(), 2, "{:?}", bad.validate());
    }
}
