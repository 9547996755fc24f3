//! Episodes: when a scored series (or an entity) turns anomalous and when
//! it counts as recovered. The edge opens an anomaly event on every opening;
//! `vigil eval` writes its alarm score through the same follower, so what is
//! measured is what the edge alarms on.
//!
//! The gap between the two levels and the hold time are the hysteresis: a
//! score that flickers around the threshold keeps one episode open instead
//! of opening a new one (and resetting a policy's `for`) on every crossing.

/// The levels of an episode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Levels {
    /// Anomalous at or above this score (the detector threshold).
    pub enter: f64,
    /// Recovered only below this score...
    pub exit: f64,
    /// ...held this long, ms.
    pub exit_hold_ms: i64,
}

impl Levels {
    /// One level, no hold: anomalous exactly while at or above `threshold`.
    pub fn plain(threshold: f64) -> Self {
        Self {
            enter: threshold,
            exit: threshold,
            exit_hold_ms: 0,
        }
    }

    /// The exit level as a share of the enter level.
    pub fn exit_ratio(&self) -> f64 {
        self.exit / self.enter.max(f64::MIN_POSITIVE)
    }
}

/// What one step of an episode did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing changed.
    Stayed,
    /// An episode opened now.
    Opened,
    /// The episode closed.
    Closed {
        /// Healthy since this time (when the score first went below the
        /// exit level), Unix ms.
        since_ms: i64,
    },
}

/// One series' or entity's episode state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Episode {
    open: bool,
    /// While open: since when the score has stayed below the exit level.
    below_since_ms: Option<i64>,
}

impl Episode {
    /// Whether an episode is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Follows one tick at `now_ms`: `high` when the score is at or above
    /// the enter level, `low` when it is below the exit level.
    pub fn step(&mut self, high: bool, low: bool, hold_ms: i64, now_ms: i64) -> Step {
        if !self.open {
            if high {
                self.open = true;
                self.below_since_ms = None;
                return Step::Opened;
            }
            return Step::Stayed;
        }
        if !low {
            self.below_since_ms = None;
            return Step::Stayed;
        }
        let below = *self.below_since_ms.get_or_insert(now_ms);
        if now_ms - below >= hold_ms {
            self.open = false;
            self.below_since_ms = None;
            return Step::Closed { since_ms: below };
        }
        Step::Stayed
    }

    /// [`Episode::step`] on one score against `levels`.
    pub fn follow(&mut self, score: f64, levels: Levels, now_ms: i64) -> Step {
        self.step(
            score >= levels.enter,
            score < levels.exit,
            levels.exit_hold_ms,
            now_ms,
        )
    }
}

/// A series' alarm score as the edge alarms on it: an episode opens when
/// the onset score (`TickScores::scores`, quiet for a refractory period
/// after an alarm) reaches `levels.enter` and closes once the evidence
/// (`TickScores::evidence`) has stayed below `levels.exit` for the hold.
/// The alarm score is the onset score where an episode opens or none is
/// open, and at most [`HELD`] of the enter level while one stays open, so
/// an upward crossing of `levels.enter` is exactly an episode opening (what
/// NAB's scorer and an operator's pager count).
pub fn alarm_scores(onset: &[f64], evidence: &[f64], times_ms: &[i64], levels: Levels) -> Vec<f64> {
    let mut ep = Episode::default();
    onset
        .iter()
        .zip(evidence)
        .zip(times_ms)
        .map(|((&o, &e), &t)| {
            let step = ep.step(o >= levels.enter, e < levels.exit, levels.exit_hold_ms, t);
            match step {
                Step::Opened => o,
                _ if ep.is_open() => o.min(levels.enter * HELD),
                _ => o,
            }
        })
        .collect()
}

/// The most an alarm score is while its episode stays open (a share of the
/// enter level below it).
pub const HELD: f64 = 0.5;

#[cfg(test)]
mod tests {
    use super::*;

    const L: Levels = Levels {
        enter: 0.75,
        exit: 0.6,
        exit_hold_ms: 5_000,
    };

    #[test]
    fn a_flickering_score_is_one_episode_and_a_held_low_closes_it() {
        let mut ep = Episode::default();
        assert_eq!(ep.follow(0.8, L, 0), Step::Opened);
        // Dips below the exit level, but not for the hold: still open.
        assert_eq!(ep.follow(0.5, L, 1_000), Step::Stayed);
        assert_eq!(ep.follow(0.7, L, 2_000), Step::Stayed);
        assert_eq!(ep.follow(0.9, L, 3_000), Step::Stayed);
        assert_eq!(ep.follow(0.5, L, 4_000), Step::Stayed);
        assert!(ep.is_open());
        assert_eq!(ep.follow(0.5, L, 9_000), Step::Closed { since_ms: 4_000 });
        assert_eq!(ep.follow(0.8, L, 10_000), Step::Opened);
    }

    #[test]
    fn alarm_scores_cross_the_enter_level_once_per_episode() {
        let ev = [0.1, 0.8, 0.9, 0.5, 0.95, 0.2, 0.2, 0.2, 0.8];
        let t: Vec<i64> = (0..ev.len() as i64).map(|i| i * 3_000).collect();
        let a = alarm_scores(&ev, &ev, &t, L);
        let crossings = |xs: &[f64]| {
            let mut prev = 0.0;
            let mut n = 0;
            for &x in xs {
                n += usize::from(x >= L.enter && prev < L.enter);
                prev = x;
            }
            n
        };
        // The evidence crosses three times; the episodes open twice: the
        // dip to 0.5 at 9 s is not held 5 s, the lows from 15 s are.
        assert_eq!(crossings(&ev), 3);
        assert_eq!(crossings(&a), 2);
        assert_eq!((a[1], a[2], a[4], a[8]), (0.8, 0.375, 0.375, 0.8));
        // Opened by the onset score, kept open by the evidence: a quiet
        // onset (a refractory period) opens nothing, lasting evidence
        // keeps the episode open after the onset score has fallen.
        let onset = [0.1, 0.8, 0.4, 0.4, 0.4, 0.2, 0.2, 0.2, 0.4];
        let evidence = [0.1, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.2, 0.9];
        let b = alarm_scores(&onset, &evidence, &t, L);
        assert_eq!(crossings(&b), 1);
        assert_eq!(b[1], 0.8);
    }
}
