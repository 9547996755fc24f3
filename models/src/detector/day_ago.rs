//! The seasonal-naive forecast that the `seasonal-naive` ablation puts in
//! the LSTM's place: a series' value one day before, the forecast any
//! daily-cycled series is first compared with. Only that ablation keeps
//! these rings (a day of samples per series is far over a series' state
//! budget at the edge).

use std::collections::VecDeque;

/// One day, seconds.
const DAY: i64 = 86_400;

/// A series' samples of the last day and a bit, oldest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct DayAgo {
    ring: VecDeque<(i64, f32)>,
}

impl DayAgo {
    /// The forecast for a sample at `t` (unix seconds): the latest value at
    /// or before `t` minus a day, or the last value (persistence) while less
    /// than a day has been seen.
    pub(crate) fn forecast(&self, t: i64) -> Option<f32> {
        let back = t - DAY;
        let at = self.ring.partition_point(|&(s, _)| s <= back);
        match at {
            0 => self.ring.back().map(|&(_, x)| x),
            k => Some(self.ring[k - 1].1),
        }
    }

    /// Keeps the sample at `t`, forgetting what is no longer needed (the
    /// newest sample a day back stays).
    pub(crate) fn push(&mut self, t: i64, x: f32) {
        self.ring.push_back((t, x));
        while self.ring.len() > 1 && self.ring[1].0 <= t - DAY {
            self.ring.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forecasts_the_value_a_day_before_and_the_last_one_until_then() {
        let mut d = DayAgo::default();
        assert_eq!(d.forecast(0), None);
        for m in 0..2 * 1440 {
            let t = m * 60;
            let expected = if t >= DAY {
                // The value a day back is its minute of the day.
                Some(((t - DAY) / 60 % 1440) as f32)
            } else if m == 0 {
                None
            } else {
                Some((m - 1) as f32)
            };
            assert_eq!(d.forecast(t), expected, "at minute {m}");
            d.push(t, (m % 1440) as f32);
        }
        // A day and one sample kept, no more.
        assert!(d.ring.len() <= 1441, "{}", d.ring.len());
        // A gap: the newest value at or before a day back.
        assert_eq!(d.forecast(2 * DAY + 90), Some(1.0));
    }
}
