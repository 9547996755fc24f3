//! The detector's settings, the same for every series.

use crate::baseline::BaselineRates;

/// Detector settings; the same for every series.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// LSTM hidden units.
    pub hidden: usize,
    /// Samples a series must have before it is scored (score 0 until then).
    pub warmup_samples: u32,
    /// Baseline adaptation rate while normal.
    pub baseline_alpha: f32,
    /// Factor on the rate while a series is anomalous.
    pub anomalous_factor: f32,
    /// Deviation (in spreads) at which the score is 1 - 1/e ≈ 0.63.
    pub z_scale: f32,
    /// Score at or above which a series counts as anomalous.
    pub threshold: f32,
    /// Relative spread floor (share of the level), so flat series still score.
    pub spread_floor_rel: f32,
    /// Absolute spread floor.
    pub spread_floor_abs: f32,
    /// Ticks between online training steps (0 disables training).
    pub train_every_ticks: u64,
    /// Windows per training step.
    pub train_batch: usize,
    /// Length of a training window.
    pub train_window: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// Seed for weights and window sampling (same seed, same scores).
    pub seed: u64,
    /// Samples a series' ranges are learnt from before novelty scores.
    pub novelty_learn: u32,
    /// Per-sample decay of the forecast-error peak novelty compares against.
    pub novelty_peak_decay: f32,
    /// Deviation from the baseline (in spreads) that scores on its own,
    /// however often the series has been there: a dead process or a hung
    /// service must alarm every time, not only the first (0 = off).
    pub level_z: f32,
    /// Consecutive samples the deviation must last before it scores.
    pub level_for: u32,
    /// Samples after an alarm during which the score is held at most half,
    /// unless clearly stronger than the alarm: high at an event's onset,
    /// quiet after it (0 = off). `TickScores::evidence` is not held back.
    pub refractory: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            hidden: 16,
            warmup_samples: 20,
            baseline_alpha: 0.02,
            anomalous_factor: 0.05,
            z_scale: 8.0,
            threshold: 0.75,
            spread_floor_rel: 0.01,
            spread_floor_abs: 1e-6,
            train_every_ticks: 60,
            train_batch: 64,
            train_window: 32,
            learning_rate: 1e-3,
            seed: 7,
            novelty_learn: 50,
            novelty_peak_decay: 0.9999,
            level_z: 30.0,
            level_for: 3,
            refractory: 50,
        }
    }
}

impl DetectorConfig {
    /// Every problem with the settings, each as `field: what is wrong`.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        if self.hidden == 0 || self.hidden > 1024 {
            e.push(format!("hidden: {} is outside 1..=1024", self.hidden));
        }
        if !(self.baseline_alpha > 0.0 && self.baseline_alpha <= 1.0) {
            e.push(format!(
                "baseline_alpha: {} is outside (0, 1]",
                self.baseline_alpha
            ));
        }
        if !(0.0..=1.0).contains(&self.anomalous_factor) {
            e.push(format!(
                "anomalous_factor: {} is outside [0, 1]",
                self.anomalous_factor
            ));
        }
        if self.z_scale.is_nan() || self.z_scale <= 0.0 {
            e.push(format!("z_scale: {} must be positive", self.z_scale));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            e.push(format!("threshold: {} is outside (0, 1)", self.threshold));
        }
        if self.train_window < 2 {
            e.push(format!(
                "train_window: {} must be at least 2",
                self.train_window
            ));
        }
        if self.train_batch == 0 {
            e.push("train_batch: must be at least 1".into());
        }
        e
    }

    /// The baseline rates these settings give (also what offline code
    /// normalises with, to see values as the detector does).
    pub fn rates(&self) -> BaselineRates {
        BaselineRates {
            alpha: self.baseline_alpha,
            anomalous_factor: self.anomalous_factor,
            floor_rel: self.spread_floor_rel,
            floor_abs: self.spread_floor_abs,
        }
    }
}
