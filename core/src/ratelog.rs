//! Rate-limited logging: a flood of bad input is counted in full by the
//! metrics but logged at most once per key and interval, with how many
//! were not logged since, so the log says what happened without drowning.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most keys remembered; beyond it the oldest are forgotten (a forgotten
/// key just logs again).
const MAX_KEYS: usize = 1024;

/// Decides which events of a kind get a log line.
#[derive(Debug)]
pub struct RateLog {
    every: Duration,
    last: HashMap<String, (Instant, u64)>,
}

impl Default for RateLog {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl RateLog {
    /// At most one line per key every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: HashMap::new(),
        }
    }

    /// `Some(n)` when this event of `key` should be logged, `n` being the
    /// events of that key left unlogged since the last line; `None` when it
    /// should not (it is counted toward the next line).
    pub fn allow(&mut self, key: &str) -> Option<u64> {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&mut self, key: &str, now: Instant) -> Option<u64> {
        if let Some((at, skipped)) = self.last.get_mut(key) {
            if now.duration_since(*at) < self.every {
                *skipped += 1;
                return None;
            }
            let n = *skipped;
            *at = now;
            *skipped = 0;
            return Some(n);
        }
        if self.last.len() >= MAX_KEYS {
            if let Some(oldest) = self
                .last
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(key.to_string(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_and_interval_with_the_skipped_count() {
        let mut r = RateLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.allow_at("a", t0), Some(0));
        assert_eq!(r.allow_at("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow_at("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(r.allow_at("b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(r.allow_at("a", t0 + Duration::from_secs(10)), Some(2));
        for i in 0..MAX_KEYS + 5 {
            r.allow_at(&format!("k{i}"), t0);
        }
        assert!(r.last.len() <= MAX_KEYS);
    }
}
