//! Thresholds from extreme value theory, without labels: peaks over
//! threshold (Siffer et al., KDD 2017, SPOT). The scores above a high
//! quantile of the calibration scores (the peaks) follow a generalised
//! Pareto distribution; fitted to them, it gives the level a score exceeds
//! with probability `risk`. The fit is the method of moments (valid for a
//! shape below one half, which covers every light and moderately heavy
//! tail), refitted as the stream adds peaks below the alarm level; alarms
//! themselves never move it.

/// Peaks kept for the fit: the most recent ones beyond this are dropped.
pub const MAX_PEAKS: usize = 10_000;

/// The settings.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PotConfig {
    /// Probability that a normal score exceeds the threshold.
    pub risk: f64,
    /// Quantile of the calibration scores where the peaks begin.
    pub level: f64,
}

impl Default for PotConfig {
    fn default() -> Self {
        Self {
            risk: 1e-3,
            level: 0.98,
        }
    }
}

/// A peaks-over-threshold threshold, updated as scores stream.
#[derive(Clone, Debug)]
pub struct Pot {
    cfg: PotConfig,
    /// Where the peaks begin.
    init: f64,
    /// Excesses over `init` (oldest first), at most [`MAX_PEAKS`].
    peaks: std::collections::VecDeque<f64>,
    /// Scores seen, calibration included.
    seen: u64,
    /// The alarm threshold now.
    threshold: f64,
    /// Fitted shape and scale.
    shape: f64,
    scale: f64,
}

impl Pot {
    /// Calibrates on `scores` (normal data, no labels). `None` when there
    /// are too few scores for a tail (fewer than 10 peaks, even when the
    /// peaks start lower than `level` on a short calibration).
    pub fn calibrate(scores: &[f64], cfg: PotConfig) -> Option<Self> {
        let mut sorted: Vec<f64> = scores.iter().copied().filter(|s| s.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        // Short calibrations start the peaks lower, so that ten are fitted.
        let level = cfg.level.min(1.0 - 10.0 / sorted.len() as f64).max(0.0);
        let at = ((sorted.len() - 1) as f64 * level).floor() as usize;
        let init = sorted[at];
        let peaks: std::collections::VecDeque<f64> = sorted
            .iter()
            .filter(|&&s| s > init)
            .map(|s| s - init)
            .collect();
        if peaks.len() < 10 {
            return None;
        }
        let mut p = Self {
            cfg,
            init,
            peaks,
            seen: sorted.len() as u64,
            threshold: f64::INFINITY,
            shape: 0.0,
            scale: 0.0,
        };
        p.fit();
        Some(p)
    }

    /// The alarm threshold now.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The fitted tail: (shape, scale).
    pub fn tail(&self) -> (f64, f64) {
        (self.shape, self.scale)
    }

    /// Takes one streamed score; whether it alarms. A score between the
    /// peaks' start and the threshold is a new peak and refits the tail.
    pub fn observe(&mut self, s: f64) -> bool {
        if !s.is_finite() {
            return false;
        }
        self.seen += 1;
        if s >= self.threshold {
            return true;
        }
        if s > self.init {
            if self.peaks.len() >= MAX_PEAKS {
                self.peaks.pop_front();
            }
            self.peaks.push_back(s - self.init);
            self.fit();
        }
        false
    }

    /// Method-of-moments fit of the generalised Pareto distribution to the
    /// peaks, and the level exceeded with probability `risk`.
    fn fit(&mut self) {
        let n = self.peaks.len() as f64;
        let mean = self.peaks.iter().sum::<f64>() / n;
        let var = self.peaks.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / n;
        let (shape, scale) = if var > 0.0 && mean > 0.0 {
            let r = mean * mean / var;
            (0.5 * (1.0 - r), 0.5 * mean * (r + 1.0))
        } else {
            (0.0, mean.max(f64::MIN_POSITIVE))
        };
        // How much rarer the alarm is than a peak.
        let ratio = self.cfg.risk * self.seen as f64 / n;
        let over = if shape.abs() < 1e-9 {
            -scale * ratio.ln()
        } else {
            scale / shape * (ratio.powf(-shape) - 1.0)
        };
        (self.shape, self.scale) = (shape, scale);
        self.threshold = self.init + over.max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores of a known tail: exp(1) at evenly spaced quantiles.
    fn exponential(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| -(1.0 - (i as f64 + 0.5) / n as f64).ln())
            .collect()
    }

    #[test]
    fn the_threshold_is_the_tail_quantile_at_the_risk() {
        let p = Pot::calibrate(&exponential(100_000), PotConfig::default()).unwrap();
        // P(X > z) = e^-z = 1e-3: z = ln(1000) = 6.91.
        let z = p.threshold();
        assert!((z - 1000f64.ln()).abs() < 0.2, "{z}");
        let (shape, _) = p.tail();
        assert!(
            shape.abs() < 0.1,
            "an exponential tail has shape 0, got {shape}"
        );
    }

    #[test]
    fn a_lower_risk_gives_a_higher_threshold_that_is_not_capped_at_the_data() {
        let s = exponential(20_000);
        let loose = Pot::calibrate(
            &s,
            PotConfig {
                risk: 1e-2,
                ..PotConfig::default()
            },
        )
        .unwrap();
        let tight = Pot::calibrate(
            &s,
            PotConfig {
                risk: 1e-5,
                ..PotConfig::default()
            },
        )
        .unwrap();
        assert!(loose.threshold() < tight.threshold());
        let max = s.iter().copied().fold(0.0, f64::max);
        assert!(
            tight.threshold() > max,
            "{} vs data max {max}",
            tight.threshold()
        );
    }

    #[test]
    fn alarms_do_not_move_the_threshold_and_peaks_are_bounded() {
        let mut p = Pot::calibrate(&exponential(10_000), PotConfig::default()).unwrap();
        let z = p.threshold();
        for _ in 0..100 {
            assert!(p.observe(z * 10.0));
        }
        assert_eq!(p.threshold(), z, "alarms are not learnt");
        for i in 0..(MAX_PEAKS * 2) {
            p.observe(p.init + 0.5 + (i % 10) as f64 * 0.01);
        }
        assert!(p.peaks.len() <= MAX_PEAKS);
        assert!(!p.observe(f64::NAN));
    }

    #[test]
    fn too_little_data_has_no_tail() {
        assert!(Pot::calibrate(&[1.0, 2.0, 3.0], PotConfig::default()).is_none());
        assert!(Pot::calibrate(&[], PotConfig::default()).is_none());
    }
}
