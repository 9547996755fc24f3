//! Seasonal novelty: how far a series has strayed from what it usually does
//! at this time of day. Per series, the day is cut into `BINS` bins; each
//! day's mean in a bin updates that bin's profile (an EWMA across days), so
//! the profile means the same at one sample a second or one every five
//! minutes. Once a bin has been seen on `MIN_DAYS` days, the value's
//! residual from it (in spreads) is smoothed, and a smoothed residual that
//! beats its recent peak scores like a range excursion. This is what sees a
//! holiday in a daily traffic cycle, or a day whose busy hours stay flat:
//! changes of pattern that stay inside the series' range.
//!
//! It needs sample times: without them (`Detector::tick`) it stays silent.

/// Bins per day (30 minutes each).
pub const BINS: usize = 48;
const DAY_SECS: i64 = 86_400;
/// Days a bin must have been seen before it is trusted.
const MIN_DAYS: u8 = 3;
/// Weight of a new day's mean in its bin.
const DAY_RATE: f32 = 0.3;
/// Smoothing of the residual (about 33 samples).
const SMOOTH: f32 = 0.03;
/// Residuals judged before it scores, and before the peak learns.
const SCORE_FROM: u32 = 2000;
const PEAK_FROM: u32 = 100;
/// Per-sample decay of the residual's peak (half-life about 7,000 samples).
const PEAK_DECAY: f32 = 0.9999;
/// Excursion slope, as in `novelty`.
const SLOPE: f32 = 5.0;

/// Words in [`Season::to_words`].
pub const WORDS: usize = BINS + BINS / 4 + 5;

/// Per-series seasonal state: about 260 bytes.
#[derive(Clone, Debug)]
pub struct Season {
    profile: [f32; BINS],
    days: [u8; BINS],
    /// The bin being visited, its sum and count so far.
    bin: u8,
    sum: f32,
    n: u16,
    residual: f32,
    peak: f32,
    judged: u32,
}

impl Default for Season {
    fn default() -> Self {
        Self {
            profile: [0.0; BINS],
            days: [0; BINS],
            bin: u8::MAX,
            sum: 0.0,
            n: 0,
            residual: 0.0,
            peak: 0.0,
            judged: 0,
        }
    }
}

/// The bin of unix time `t` (seconds).
fn bin_of(t: i64) -> usize {
    (t.rem_euclid(DAY_SECS) as usize * BINS) / DAY_SECS as usize
}

impl Season {
    /// Takes the value at unix time `t` and the series' spread; returns
    /// the score in [0, 1] (0 until the profile is trusted).
    pub fn update(&mut self, x: f32, t: i64, spread: f32) -> f32 {
        let b = bin_of(t);
        let mut score = 0.0;
        if self.days[b] >= MIN_DAYS && spread > 0.0 {
            let r = (x - self.profile[b]) / spread;
            if r.is_finite() {
                self.residual += SMOOTH * (r - self.residual);
                self.judged = self.judged.saturating_add(1);
                let e = self.residual.abs();
                if self.judged >= SCORE_FROM && self.peak > 0.0 && e > self.peak {
                    score = (0.5 + SLOPE * (e / self.peak - 1.0)).min(1.0);
                }
                if self.judged >= PEAK_FROM {
                    self.peak = (self.peak * PEAK_DECAY).max(e);
                }
            }
        }
        if self.bin as usize != b {
            self.close_bin();
            self.bin = b as u8;
        }
        self.sum += x;
        self.n = self.n.saturating_add(1);
        score
    }

    /// Folds the visit that just ended into its bin's profile.
    fn close_bin(&mut self) {
        let b = self.bin as usize;
        if b < BINS && self.n > 0 {
            let mean = self.sum / self.n as f32;
            let p = &mut self.profile[b];
            *p = if self.days[b] == 0 {
                mean
            } else {
                *p + DAY_RATE * (mean - *p)
            };
            self.days[b] = self.days[b].saturating_add(1);
        }
        (self.sum, self.n) = (0.0, 0);
    }

    /// The state as 32-bit words (for a detector snapshot).
    pub fn to_words(&self) -> Vec<u32> {
        let f = f32::to_bits;
        let mut w: Vec<u32> = self.profile.iter().map(|&x| f(x)).collect();
        w.extend(
            self.days
                .chunks(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        w.extend([
            self.bin as u32 | (self.n as u32) << 16,
            f(self.sum),
            f(self.residual),
            f(self.peak),
            self.judged,
        ]);
        w
    }

    /// The state from [`Season::to_words`]; `None` for the wrong length.
    pub fn from_words(w: &[u32]) -> Option<Self> {
        if w.len() != WORDS {
            return None;
        }
        let f = f32::from_bits;
        let mut s = Season::default();
        for (p, &x) in s.profile.iter_mut().zip(w) {
            *p = f(x);
        }
        for (k, &x) in w[BINS..BINS + BINS / 4].iter().enumerate() {
            s.days[4 * k..4 * k + 4].copy_from_slice(&x.to_le_bytes());
        }
        let r = &w[BINS + BINS / 4..];
        s.bin = (r[0] & 0xff) as u8;
        s.n = (r[0] >> 16) as u16;
        s.sum = f(r[1]);
        s.residual = f(r[2]);
        s.peak = f(r[3]);
        s.judged = r[4];
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weekday-like daily cycle at 5-minute samples: busy from 8 to 18 h.
    fn daily(t: i64) -> f32 {
        let hour = t.rem_euclid(DAY_SECS) as f32 / 3600.0;
        let busy = if (8.0..18.0).contains(&hour) {
            100.0
        } else {
            20.0
        };
        busy + ((t as f32 * 0.37).sin() * 5.0)
    }

    #[test]
    fn a_day_that_breaks_the_daily_pattern_scores_and_the_pattern_does_not() {
        let mut s = Season::default();
        let step = 300;
        let mut worst_normal: f32 = 0.0;
        // 20 ordinary days.
        for k in 0..20 * 288 {
            let t = k * step;
            worst_normal = worst_normal.max(s.update(daily(t), t, 5.0));
        }
        // Below the detector's threshold (0.75).
        assert!(worst_normal < 0.75, "the usual cycle scored {worst_normal}");
        // A holiday: the busy hours stay quiet. Inside the usual range.
        let mut best: f32 = 0.0;
        for k in 20 * 288..21 * 288 {
            let t = k * step;
            best = best.max(s.update(20.0 + (t as f32 * 0.37).sin() * 5.0, t, 5.0));
        }
        assert!(best >= 0.9, "the holiday scored {best}");
        // Snapshot words round-trip.
        let back = Season::from_words(&s.to_words()).unwrap();
        assert_eq!(back.to_words(), s.to_words());
        assert!(Season::from_words(&[0; 3]).is_none());
    }

    #[test]
    fn silent_without_enough_days() {
        let mut s = Season::default();
        for k in 0..2 * 288 {
            let t = k * 300;
            assert_eq!(s.update(if k % 7 == 0 { 1e6 } else { 1.0 }, t, 1.0), 0.0);
        }
    }
}
