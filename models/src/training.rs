//! Training away from the stream (the cloud): whole series, normalised by
//! their own level and spread, cut into windows and fed to the same LSTM the
//! edge runs. The edge normalises online with the same statistic (mean
//! absolute deviation around the level), so the model sees the same scale.

use crate::{Detector, DetectorConfig, ModelError};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

/// Normalises `values` by `level` and `spread` (floored as the detector
/// floors it) and clips as the detector clips.
pub fn normalise(values: &[f64], level: f64, spread: f64, cfg: &DetectorConfig) -> Vec<f32> {
    let scale = spread
        .max(cfg.spread_floor_rel as f64 * level.abs())
        .max(cfg.spread_floor_abs as f64);
    values
        .iter()
        .map(|&x| (((x - level) / scale) as f32).clamp(-10.0, 10.0))
        .collect()
}

/// How long to train.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Passes over every window.
    pub epochs: f32,
    /// Windows per step.
    pub batch: usize,
    /// Values per window.
    pub window: usize,
    /// Shuffling seed.
    pub seed: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            epochs: 1.0,
            batch: 256,
            window: 32,
            seed: 7,
        }
    }
}

/// Where training is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Steps done.
    pub step: usize,
    /// Steps planned.
    pub steps: usize,
    /// Loss of the latest step.
    pub loss: f32,
}

/// The picks of each training step: `plan.batch` at a time from `all`,
/// shuffled (seeded) and shuffled again whenever the rest is short of a
/// batch, for `plan.epochs` passes.
pub struct Batches<T> {
    all: Vec<T>,
    rng: StdRng,
    at: usize,
    batch: usize,
    steps: usize,
}

impl<T> Batches<T> {
    /// Batches of `all` as `plan` says.
    pub fn new(mut all: Vec<T>, plan: &Plan) -> Self {
        let steps = if all.is_empty() || plan.batch == 0 {
            0
        } else {
            ((all.len() as f32 * plan.epochs) / plan.batch as f32).ceil() as usize
        };
        let mut rng = StdRng::seed_from_u64(plan.seed);
        all.shuffle(&mut rng);
        Self {
            all,
            rng,
            at: 0,
            batch: plan.batch,
            steps,
        }
    }

    /// Steps planned.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Steps in one pass over every pick.
    pub fn per_pass(&self) -> usize {
        self.all.len().div_ceil(self.batch.max(1))
    }

    /// The next step's picks.
    pub fn next_batch(&mut self) -> &[T] {
        if self.at + self.batch > self.all.len() {
            self.all.shuffle(&mut self.rng);
            self.at = 0;
        }
        let end = (self.at + self.batch).min(self.all.len());
        let start = std::mem::replace(&mut self.at, end);
        &self.all[start..end]
    }
}

/// Start offsets of non-overlapping windows of `window` values plus the one
/// that follows (so each value is a target once per epoch).
fn windows(series: &[Vec<f32>], window: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let mut start = 0;
        while start + window < s.len() {
            out.push((i, start));
            start += window;
        }
    }
    out
}

fn gather(series: &[Vec<f32>], picks: &[(usize, usize)], window: usize) -> (Vec<f32>, Vec<f32>) {
    let mut xs = Vec::with_capacity(picks.len() * window);
    let mut ys = Vec::with_capacity(picks.len() * window);
    for &(i, s) in picks {
        xs.extend_from_slice(&series[i][s..s + window]);
        ys.extend_from_slice(&series[i][s + 1..s + window + 1]);
    }
    (xs, ys)
}

/// Trains `detector` on `series` (normalised) for `plan.epochs`, calling
/// `progress` after each step and stopping early when it returns false.
/// Returns the steps taken and the last loss.
pub fn fit(
    detector: &mut Detector,
    series: &[Vec<f32>],
    plan: &Plan,
    mut progress: impl FnMut(Progress) -> bool,
) -> Result<(usize, Option<f32>), ModelError> {
    let mut batches = Batches::new(windows(series, plan.window), plan);
    let (steps, mut last) = (batches.steps(), None);
    if steps == 0 {
        return Ok((0, None));
    }
    for step in 0..steps {
        let picks = batches.next_batch();
        let (xs, ys) = gather(series, picks, plan.window);
        let loss = detector.fit_windows(xs, ys, picks.len(), plan.window)?;
        last = Some(loss);
        if !progress(Progress {
            step: step + 1,
            steps,
            loss,
        }) {
            return Ok((step + 1, last));
        }
    }
    Ok((steps, last))
}

/// Mean forecast loss of `detector` over every window of `series`, or `None`
/// when no series is long enough.
pub fn loss(
    detector: &Detector,
    series: &[Vec<f32>],
    window: usize,
) -> Result<Option<f32>, ModelError> {
    let all = windows(series, window);
    let (mut sum, mut n) = (0.0f64, 0usize);
    for picks in all.chunks(512) {
        let (xs, ys) = gather(series, picks, window);
        let l = detector.windows_loss(xs, ys, picks.len(), window)?;
        sum += l as f64 * picks.len() as f64;
        n += picks.len();
    }
    Ok((n > 0).then(|| (sum / n as f64) as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize, phase: f64) -> Vec<f64> {
        (0..n)
            .map(|t| 50.0 + 10.0 * ((t as f64 + phase) * 0.4).sin())
            .collect()
    }

    #[test]
    fn training_lowers_the_held_back_loss() {
        let cfg = DetectorConfig {
            learning_rate: 1e-2,
            ..DetectorConfig::default()
        };
        let norm = |v: Vec<f64>| normalise(&v, 50.0, 6.4, &cfg);
        let train: Vec<Vec<f32>> = (0..8).map(|i| norm(wave(400, i as f64))).collect();
        let held: Vec<Vec<f32>> = (0..2).map(|i| norm(wave(200, 100.0 + i as f64))).collect();
        let mut d = Detector::new(cfg).unwrap();
        let before = loss(&d, &held, 32).unwrap().unwrap();
        let mut calls = 0;
        let plan = Plan {
            epochs: 20.0,
            batch: 16,
            ..Plan::default()
        };
        let (steps, last) = fit(&mut d, &train, &plan, |p| {
            calls += 1;
            assert_eq!(p.step, calls);
            true
        })
        .unwrap();
        // 8 series of 400 values: 12 windows each, 96 in all; 20 epochs of 16.
        assert_eq!(steps, 120);
        assert_eq!(calls, 120);
        assert!(last.is_some());
        let after = loss(&d, &held, 32).unwrap().unwrap();
        assert!(
            after < before * 0.5,
            "held-back loss {before} -> {after} should fall"
        );
    }

    #[test]
    fn stops_when_told_and_normalises_like_the_detector() {
        let cfg = DetectorConfig::default();
        let v = normalise(&[10.0, 12.0, 1e9], 10.0, 1.0, &cfg);
        assert_eq!(v, vec![0.0, 2.0, 10.0]);
        // A flat series: the spread floor (1% of the level) applies.
        assert_eq!(normalise(&[101.0], 100.0, 0.0, &cfg), vec![1.0]);
        let mut d = Detector::new(cfg).unwrap();
        let s = vec![vec![0.5f32; 100]];
        let (steps, _) = fit(&mut d, &s, &Plan::default(), |_| false).unwrap();
        assert_eq!(steps, 1);
        assert_eq!(loss(&d, &[vec![0.0; 10]], 32).unwrap(), None);
    }
}
