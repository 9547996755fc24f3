//! Pretraining the forecaster offline on the synthetic corpus
//! ([`crate::corpus`]), so the default model forecasts well from its first
//! sample and online learning only adapts it.

use crate::corpus::{self, CorpusConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vigil_models::baseline::Baseline;
use vigil_models::{Detector, DetectorConfig, ModelError};

/// Samples each corpus series spends warming its baseline before windows
/// are cut from it (the detector does not score them either).
const SKIP: usize = 50;

/// How to pretrain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PretrainPlan {
    /// The corpus.
    pub corpus: CorpusConfig,
    /// AdamW steps.
    pub steps: usize,
    /// Windows per step.
    pub batch: usize,
    /// Values per window (the training context).
    pub window: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
}

impl Default for PretrainPlan {
    fn default() -> Self {
        Self {
            corpus: CorpusConfig::default(),
            steps: 3000,
            batch: 64,
            window: 64,
            learning_rate: 3e-3,
        }
    }
}

/// A series as the detector's LSTM sees it: each value normalised by the
/// online baseline before the baseline learns from it.
pub fn normalised(series: &[f64], cfg: &DetectorConfig) -> Vec<f32> {
    let rates = cfg.rates();
    let mut base = Baseline::default();
    series
        .iter()
        .map(|&x| {
            let x = x as f32;
            let u = base.normalise(x, &rates);
            base.update(x, false, &rates);
            u
        })
        .collect()
}

/// Trains a detector with `cfg`'s shape from its seeded weights on the
/// corpus; `progress(step, steps, loss)` after each step.
pub fn pretrain(
    cfg: &DetectorConfig,
    plan: &PretrainPlan,
    mut progress: impl FnMut(usize, usize, f32),
) -> Result<Detector, ModelError> {
    let mut d = Detector::new(DetectorConfig {
        learning_rate: plan.learning_rate,
        train_every_ticks: 0,
        ..cfg.clone()
    })?;
    let w = plan.window;
    let series: Vec<Vec<f32>> = corpus::generate(&plan.corpus)
        .iter()
        .map(|s| normalised(s, cfg))
        .filter(|s| s.len() > SKIP + w + 1)
        .collect();
    if series.is_empty() {
        return Err(ModelError::Config(
            "pretraining corpus: every series is shorter than a window".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(plan.corpus.seed ^ 0x5eed);
    for step in 0..plan.steps {
        let mut xs = Vec::with_capacity(plan.batch * w);
        let mut ys = Vec::with_capacity(plan.batch * w);
        for _ in 0..plan.batch {
            let s = &series[rng.random_range(0..series.len())];
            let start = rng.random_range(SKIP..s.len() - w - 1);
            xs.extend_from_slice(&s[start..start + w]);
            ys.extend_from_slice(&s[start + 1..start + w + 1]);
        }
        let loss = d.fit_windows(xs, ys, plan.batch, w)?;
        progress(step + 1, plan.steps, loss);
    }
    Ok(d)
}
