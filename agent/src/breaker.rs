//! A circuit breaker per target: after repeated failed commands on a target
//! the agent stops hammering it (open), then lets one probe through once the
//! open time has passed (half-open); the probe's outcome closes the circuit
//! or opens it again.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Breaker settings (the agent config's `breaker:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed commands on one target that open its circuit.
    pub failures: u32,
    /// Seconds the circuit stays open before one probe may run.
    pub open_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 3,
            open_secs: 60,
        }
    }
}

impl BreakerConfig {
    /// Every problem, prefixed `breaker.`.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        if self.failures == 0 {
            e.push("breaker.failures: must be at least 1".into());
        }
        if self.open_secs == 0 || self.open_secs > 86_400 {
            e.push(format!(
                "breaker.open_secs: {} is outside 1..=86400",
                self.open_secs
            ));
        }
        e
    }
}

/// The state of one target's circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Commands run; counts consecutive failures.
    Closed(u32),
    /// Commands are refused until the instant (Unix ms).
    Open(i64),
    /// One probe is running; the next outcome decides.
    HalfOpen,
}

/// Circuits by target.
#[derive(Debug, Default)]
pub struct Breakers {
    config: BreakerConfig,
    circuits: HashMap<String, State>,
}

impl Breakers {
    /// Breakers with these settings.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            circuits: HashMap::new(),
        }
    }

    /// The state of `target`'s circuit.
    pub fn state(&self, target: &str) -> State {
        self.circuits
            .get(target)
            .copied()
            .unwrap_or(State::Closed(0))
    }

    /// Whether a command on `target` may run now; an open circuit whose time
    /// is up lets this one through as the probe. `Err` says why not.
    pub fn allow(&mut self, target: &str, now_ms: i64) -> Result<(), String> {
        match self.state(target) {
            State::Closed(_) => Ok(()),
            State::Open(until) if now_ms >= until => {
                self.circuits.insert(target.into(), State::HalfOpen);
                Ok(())
            }
            State::Open(until) => Err(format!(
                "circuit breaker open for {target} after {} failed commands; next probe in {} s",
                self.config.failures,
                (until - now_ms + 999) / 1000
            )),
            State::HalfOpen => Err(format!(
                "circuit breaker half-open for {target}: a probe is running"
            )),
        }
    }

    /// Records how a command that was allowed ended.
    pub fn record(&mut self, target: &str, succeeded: bool, now_ms: i64) {
        let open = State::Open(now_ms + self.config.open_secs as i64 * 1000);
        let next = match (self.state(target), succeeded) {
            (_, true) => State::Closed(0),
            (State::HalfOpen, false) => open,
            (State::Closed(n), false) if n + 1 >= self.config.failures => open,
            (State::Closed(n), false) => State::Closed(n + 1),
            (s @ State::Open(_), false) => s,
        };
        if next == State::Closed(0) {
            self.circuits.remove(target);
        } else {
            self.circuits.insert(target.into(), next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_then_probes_once() {
        let mut b = Breakers::new(BreakerConfig {
            failures: 3,
            open_secs: 10,
        });
        let t = "service/h/web";
        for i in 0..3 {
            assert!(b.allow(t, i).is_ok());
            b.record(t, false, i);
        }
        assert_eq!(b.state(t), State::Open(10_002));
        let why = b.allow(t, 5_000).unwrap_err();
        assert!(why.contains("next probe in 6 s"), "{why}");
        // Other targets are not affected.
        assert!(b.allow("service/h/db", 5_000).is_ok());
        // Time is up: one probe goes through, a second waits on it.
        assert!(b.allow(t, 10_002).is_ok());
        assert_eq!(b.state(t), State::HalfOpen);
        assert!(b.allow(t, 10_003).unwrap_err().contains("half-open"));
        // The probe fails: open again, for another full period.
        b.record(t, false, 10_100);
        assert_eq!(b.state(t), State::Open(20_100));
        // The next probe succeeds: closed, the count starts over.
        assert!(b.allow(t, 20_100).is_ok());
        b.record(t, true, 20_200);
        assert_eq!(b.state(t), State::Closed(0));
        b.record(t, false, 20_300);
        assert_eq!(b.state(t), State::Closed(1));
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut b = Breakers::new(BreakerConfig::default());
        b.record("x", false, 0);
        b.record("x", false, 0);
        b.record("x", true, 0);
        b.record("x", false, 0);
        assert_eq!(b.state("x"), State::Closed(1));
        assert_eq!(
            BreakerConfig {
                failures: 0,
                open_secs: 0
            }
            .validate()
            .len(),
            2
        );
    }
}
