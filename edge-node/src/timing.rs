//! Time you can trust: where a sample goes on the edge's clock. A sender
//! whose clock is off (an agent's clock stepped back, a sensor that never
//! learnt the time) must not blind a series: one sample stamped minutes
//! ahead used to move the series' clock so far that every real sample after
//! it was refused as out of order.
//!
//! - An agent's batch says when it was sent (the envelope's `sent_ms`, by
//!   the agent's clock). When that is off from the edge's arrival time by
//!   more than the tolerance, every sample of the batch is shifted by the
//!   difference: samples are judged by arrival, and a backlog sent after
//!   an outage keeps the ages it had.
//! - A sensor's own timestamp off by more than the tolerance either way is
//!   replaced by the arrival time (sensors keep no backlog).
//! - A sample still ahead of the edge's clock by more than the tolerance is
//!   placed at arrival when within `max_future_secs`, refused beyond; in
//!   neither case does it move its series' clock past now.

use crate::cache::Refusal;
use prometheus::{IntCounterVec, Registry};
use vigil_core::telemetry::Group;

/// Why a sample's timestamp was replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restamp {
    /// Its sender's clock is off (the batch was shifted).
    SenderClock,
    /// It was stamped ahead of the edge's clock.
    Ahead,
}

impl Restamp {
    /// Every reason (label values).
    pub const ALL: [Restamp; 2] = [Restamp::SenderClock, Restamp::Ahead];

    /// Bounded label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Restamp::SenderClock => "sender_clock",
            Restamp::Ahead => "ahead",
        }
    }
}

/// The edge's rules for sample times.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// A sender's clock within this of the edge's is trusted, ms.
    pub tolerance_ms: i64,
    /// Samples further ahead than this are refused, ms.
    pub max_future_ms: i64,
}

impl Timing {
    /// The shift to add to every sample of a batch sent at `sent_ms` (by
    /// its sender's clock) and received at `now_ms`: 0 while the clocks
    /// agree within the tolerance.
    pub fn batch_shift(&self, sent_ms: Option<i64>, now_ms: i64) -> i64 {
        match sent_ms {
            Some(sent) if (sent - now_ms).abs() > self.tolerance_ms => now_ms - sent,
            _ => 0,
        }
    }

    /// A sample stamped `ts_ms` (already shifted) on the edge's clock, and
    /// whether it had to be restamped.
    pub fn place(&self, ts_ms: i64, now_ms: i64) -> Result<(i64, Option<Restamp>), Refusal> {
        let ahead = ts_ms.saturating_sub(now_ms);
        if ahead > self.max_future_ms {
            Err(Refusal::Future)
        } else if ahead > self.tolerance_ms {
            Ok((now_ms, Some(Restamp::Ahead)))
        } else {
            Ok((ts_ms, None))
        }
    }

    /// A sensor's own timestamp on the edge's clock: the arrival time when
    /// it is off by more than the tolerance either way.
    pub fn place_sensor(&self, ts_ms: i64, now_ms: i64) -> Result<(i64, Option<Restamp>), Refusal> {
        if ts_ms.saturating_sub(now_ms) > self.max_future_ms {
            return Err(Refusal::Future);
        }
        if ts_ms.saturating_sub(now_ms).abs() > self.tolerance_ms {
            return Ok((now_ms, Some(Restamp::SenderClock)));
        }
        Ok((ts_ms, None))
    }
}

/// What timing counts.
#[derive(Clone)]
pub struct TimingMetrics {
    /// Samples placed at their arrival time, by why.
    pub restamped: IntCounterVec,
}

impl TimingMetrics {
    /// Creates and registers them.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let reasons = Restamp::ALL.map(|r| r.as_str());
        Ok(Self {
            restamped: Group::new(r, "edge").counters(
                "vigil_edge_samples_restamped_total",
                "Samples judged by their arrival time (sender_clock: the sender's clock is off; ahead: stamped ahead of the edge's clock).",
                &["reason"],
                &reasons,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        tolerance_ms: 5_000,
        max_future_ms: 300_000,
    };

    #[test]
    fn a_batch_from_a_clock_that_stepped_back_is_shifted_onto_the_edges() {
        let now = 1_000_000;
        assert_eq!(T.batch_shift(Some(now - 100), now), 0, "network delay");
        assert_eq!(T.batch_shift(None, now), 0);
        // Stepped back four minutes: samples move four minutes ahead.
        assert_eq!(T.batch_shift(Some(now - 240_000), now), 240_000);
        assert_eq!(T.batch_shift(Some(now + 240_000), now), -240_000);
    }

    #[test]
    fn a_sample_ahead_is_placed_at_arrival_or_refused() {
        let now = 1_000_000;
        assert_eq!(T.place(now + 1000, now), Ok((now + 1000, None)));
        assert_eq!(T.place(now + 240_000, now), Ok((now, Some(Restamp::Ahead))));
        assert_eq!(T.place(now + 301_000, now), Err(Refusal::Future));
        assert_eq!(T.place(i64::MAX, now), Err(Refusal::Future));
        // The past is the cache's business (backlogs are legitimate).
        assert_eq!(T.place(now - 600_000, now), Ok((now - 600_000, None)));
    }

    #[test]
    fn a_sensor_clock_off_either_way_is_replaced_by_arrival() {
        let now = 1_000_000;
        assert_eq!(T.place_sensor(now - 2000, now), Ok((now - 2000, None)));
        assert_eq!(
            T.place_sensor(now - 240_000, now),
            Ok((now, Some(Restamp::SenderClock)))
        );
        assert_eq!(
            T.place_sensor(now + 60_000, now),
            Ok((now, Some(Restamp::SenderClock)))
        );
        assert_eq!(T.place_sensor(now + 400_000, now), Err(Refusal::Future));
    }
}
