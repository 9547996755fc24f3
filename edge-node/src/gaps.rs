//! Agent batches lost on the way. Every agent numbers its metric batches
//! (`MetricBatch.seq`, from 1 in each agent process); a number skipped
//! between two batches of one host is a batch that never reached this edge:
//! a broker dropping messages for it (a full queue for the client), or a
//! connection lost mid-flight. Whatever the broker is, the loss shows here.
//! A number at or below the last one is a resend (QoS 1) or a restarted
//! agent, and is not a loss.

use prometheus::{IntCounter, Registry};
use std::collections::HashMap;
use vigil_core::telemetry::Group;

/// Most hosts followed; past it the map starts over (a few gaps go uncounted).
const MAX_HOSTS: usize = 100_000;

/// The last batch number seen per host, and the count of numbers skipped.
#[derive(Debug)]
pub struct Gaps {
    last: HashMap<String, u64>,
    /// Batches missing, all hosts.
    pub missing: IntCounter,
}

/// The counter of missing batches, registered in `r`.
pub fn counter(r: &Registry) -> prometheus::Result<IntCounter> {
    Group::new(r, "edge").counter(
        "vigil_edge_agent_batches_missing_total",
        "Agent metric batches that never arrived (numbers skipped between two batches of a host): dropped by the broker for this edge, or lost with a connection.",
    )
}

impl Gaps {
    /// A tracker counting into `missing`.
    pub fn new(missing: IntCounter) -> Self {
        Self {
            last: HashMap::new(),
            missing,
        }
    }

    /// Notes batch `seq` of `host`; returns how many before it went missing.
    pub fn observe(&mut self, host: &str, seq: u64) -> u64 {
        if let Some(last) = self.last.get_mut(host) {
            let missing = seq.saturating_sub(*last + 1);
            if seq > *last || seq == 1 {
                *last = seq;
            }
            self.missing.inc_by(missing);
            return missing;
        }
        if self.last.len() >= MAX_HOSTS {
            self.last.clear();
        }
        self.last.insert(host.to_string(), seq);
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_numbers_are_missing_batches_resends_and_restarts_are_not() {
        let mut g = Gaps::new(counter(&Registry::new()).unwrap());
        assert_eq!(
            g.observe("a", 5),
            0,
            "first batch heard: nothing known before"
        );
        assert_eq!(g.observe("a", 6), 0);
        assert_eq!(g.observe("a", 9), 2);
        assert_eq!(g.observe("a", 9), 0, "a QoS 1 resend");
        assert_eq!(g.observe("a", 8), 0, "late, not lost");
        assert_eq!(g.observe("a", 1), 0, "the agent restarted");
        assert_eq!(g.observe("a", 3), 1);
        assert_eq!(g.observe("b", 40), 0, "hosts are apart");
        assert_eq!(g.missing.get(), 3);
    }
}
