//! Online per-series baseline: a running level and spread (mean absolute
//! deviation) that adapt quickly while a series looks normal and barely move
//! while it looks anomalous, so a fault does not teach the model that the
//! fault is normal. A genuine level shift is still absorbed, slowly.

/// Spread adapts at this share of the level's rate once warmed up.
const SPREAD_SLOWDOWN: f32 = 0.25;

/// Samples during which a baseline still adapts at its warm-up rate.
pub const WARMING: u32 = 50;

/// Running statistics of one series.
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    /// Samples seen.
    pub count: u32,
    /// Running level.
    pub mean: f32,
    /// Running mean absolute deviation around the level.
    pub spread: f32,
}

/// How fast baselines adapt and where their spread bottoms out.
#[derive(Clone, Copy, Debug)]
pub struct BaselineRates {
    /// Adaptation rate while normal.
    pub alpha: f32,
    /// Factor on `alpha` while anomalous.
    pub anomalous_factor: f32,
    /// Spread floor as a share of the level's magnitude.
    pub floor_rel: f32,
    /// Absolute spread floor.
    pub floor_abs: f32,
}

impl Baseline {
    /// The spread used for scaling, never below the floor.
    pub fn scale(&self, r: &BaselineRates) -> f32 {
        self.spread
            .max(r.floor_rel * self.mean.abs())
            .max(r.floor_abs)
    }

    /// Deviation of `x` from the level in spreads (the level z-score).
    pub fn level_z(&self, x: f32, r: &BaselineRates) -> f32 {
        (x - self.mean).abs() / self.scale(r)
    }

    /// `x` expressed in normalised units, clipped so one wild value cannot
    /// saturate the LSTM.
    pub fn normalise(&self, x: f32, r: &BaselineRates) -> f32 {
        ((x - self.mean) / self.scale(r)).clamp(-10.0, 10.0)
    }

    /// Learns from a new value.
    pub fn update(&mut self, x: f32, anomalous: bool, r: &BaselineRates) {
        if self.count == 0 {
            self.mean = x;
            self.count = 1;
            return;
        }
        // Warm up with a running average so early values weigh as much as later ones.
        let warm = 1.0 / (self.count as f32 + 1.0);
        let base = r.alpha.max(warm);
        let a = if anomalous {
            base * r.anomalous_factor
        } else {
            base
        };
        let dev = (x - self.mean).abs();
        self.mean += a * (x - self.mean);
        // The spread learns slower than the level: otherwise a steady drift
        // inflates the spread as fast as it moves the level, the deviation
        // never stands out, and a drifting sensor is never flagged.
        let warming = self.count < WARMING;
        let sa = if warming { a } else { a * SPREAD_SLOWDOWN };
        self.spread += sa * (dev - self.spread);
        self.count = self.count.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: BaselineRates = BaselineRates {
        alpha: 0.05,
        anomalous_factor: 0.05,
        floor_rel: 0.01,
        floor_abs: 1e-6,
    };

    #[test]
    fn learns_level_and_spread() {
        let mut b = Baseline::default();
        for i in 0..500 {
            let x = 10.0 + if i % 2 == 0 { 1.0 } else { -1.0 };
            b.update(x, false, &R);
        }
        assert!((b.mean - 10.0).abs() < 0.2, "mean {}", b.mean);
        assert!((b.spread - 1.0).abs() < 0.2, "spread {}", b.spread);
        assert!(b.level_z(20.0, &R) > 8.0);
        assert!(b.level_z(10.5, &R) < 1.0);
    }

    #[test]
    fn flat_series_uses_the_floor() {
        let mut b = Baseline::default();
        for _ in 0..100 {
            b.update(1.0, false, &R);
        }
        assert_eq!(b.scale(&R), 0.01);
        assert!(b.level_z(0.0, &R) > 99.0);
    }

    #[test]
    fn a_steady_drift_stands_out() {
        let r = BaselineRates { alpha: 0.02, ..R };
        let mut b = Baseline::default();
        for i in 0..300 {
            b.update(21.0 + if i % 2 == 0 { 0.05 } else { -0.05 }, false, &r);
        }
        // +0.3 per sample: within 15 samples it must be far outside the spread.
        let mut x = 21.0;
        let mut best: f32 = 0.0;
        for _ in 0..15 {
            x += 0.3;
            best = best.max(b.level_z(x, &r));
            b.update(x, false, &r);
        }
        assert!(best > 14.0, "drift reached only z = {best}");
    }

    #[test]
    fn anomalous_values_barely_move_the_level() {
        let mut b = Baseline::default();
        for _ in 0..100 {
            b.update(1.0, false, &R);
        }
        for _ in 0..20 {
            b.update(100.0, true, &R);
        }
        assert!(b.mean < 10.0, "level ran away to {}", b.mean);
    }
}
