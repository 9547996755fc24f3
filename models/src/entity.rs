//! The entity model, first version: all of an entity's metrics scored at
//! once (a host's 38 metrics, a service's few). Each metric's error has two
//! parts, the larger counts: how far it moved from its last value (the
//! forecast; persistence in this version, the LSTM to come), and how far
//! the metric vector left the subspace its training rows span (principal
//! components up to `variance` of the training variance): a metric that
//! breaks its usual relation to the others. Errors are calibrated per metric
//! by their training quantile, smoothed, and the entity's score is the mean
//! of its `top_k` metrics: unbounded, so its threshold comes from the tail
//! of the training scores (peaks over threshold, [`crate::pot`]), without
//! labels. The metrics are ranked by their calibrated forecast error: the
//! root cause an operator reads first.

mod linalg;
pub mod lstm;
pub mod set;

pub use set::{EntityEntry, EntitySet};

use crate::pot::{Pot, PotConfig};
use serde::{Deserialize, Serialize};

/// The settings; one for every entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityConfig {
    /// Weight of the past in each metric's smoothed error (0: none).
    pub smooth: f64,
    /// Metrics averaged into the entity's score.
    pub top_k: usize,
    /// Share of the training variance the principal subspace keeps.
    pub variance: f64,
    /// Quantile of the training errors a calibrated error of 1 stands for.
    pub error_quantile: f64,
    /// Smallest error scale (a metric flat in training still has one).
    pub scale_floor: f64,
    /// The threshold's tail fit.
    pub pot: PotConfig,
    /// Count the forecast error (off only to measure what it is worth).
    pub forecast: bool,
    /// Count the subspace error (off only to measure what it is worth).
    pub subspace: bool,
}

impl Default for EntityConfig {
    fn default() -> Self {
        Self {
            smooth: 0.3,
            top_k: 3,
            variance: 0.95,
            error_quantile: 0.99,
            scale_floor: 1e-3,
            pot: PotConfig {
                risk: 3e-3,
                level: 0.98,
            },
            forecast: true,
            subspace: true,
        }
    }
}

/// A fitted entity model (for one entity's metric set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityModel {
    cfg: EntityConfig,
    mean: Vec<f64>,
    sd: Vec<f64>,
    /// Principal directions of the normalised training rows, `k × m`.
    basis: Vec<Vec<f64>>,
    /// Scale of each metric's combined error, and of its forecast error.
    scale: Vec<f64>,
    forecast_scale: Vec<f64>,
    /// The alarm threshold on the entity's score.
    threshold: f64,
}

/// One entity's state between rows.
#[derive(Clone, Debug, Default)]
pub struct EntityState {
    last: Option<Vec<f64>>,
    /// The forecast of the next row, when a forecaster made one
    /// (persistence otherwise).
    pub next: Option<Vec<f64>>,
    smoothed: Vec<f64>,
    ranked: Vec<f64>,
}

/// What one row of an entity scored.
#[derive(Clone, Debug, PartialEq)]
pub struct EntityScore {
    /// The entity's score (calibrated: 1 is a usual bad row).
    pub score: f64,
    /// Each metric's smoothed, calibrated forecast error: its ranking.
    pub metrics: Vec<f64>,
}

impl EntityModel {
    /// Fits normalisation, subspace, error scales and threshold on
    /// `train` (rows of equal length, mostly normal, no labels), with the
    /// persistence forecast.
    pub fn fit(train: &[Vec<f64>], cfg: EntityConfig) -> Result<Self, String> {
        let mut model = Self::prepare(train, cfg)?;
        let persistence: Vec<Option<Vec<f64>>> = std::iter::once(None)
            .chain(train.iter().map(|r| Some(r.clone())))
            .take(train.len())
            .collect();
        model.calibrate(train, &persistence);
        Ok(model)
    }

    /// Fits normalisation and subspace on `train`; the error scales and the
    /// threshold wait for [`Self::calibrate`].
    pub fn prepare(train: &[Vec<f64>], cfg: EntityConfig) -> Result<Self, String> {
        let m = train.first().map_or(0, Vec::len);
        if m == 0 || train.len() < 100 || train.iter().any(|r| r.len() != m) {
            return Err(format!(
                "need at least 100 training rows of equal, non-zero length (got {} rows)",
                train.len()
            ));
        }
        let (mean, sd) = linalg::mean_sd(train);
        let normalised: Vec<Vec<f64>> = train
            .iter()
            .map(|r| (0..m).map(|k| (r[k] - mean[k]) / sd[k]).collect())
            .collect();
        let basis = linalg::principal(&normalised, cfg.variance);
        Ok(Self {
            cfg,
            mean,
            sd,
            basis,
            scale: vec![1.0; m],
            forecast_scale: vec![1.0; m],
            threshold: f64::INFINITY,
        })
    }

    /// Error scales and threshold from `train` and each row's forecast
    /// (`forecasts[t]` for `train[t]`, raw units; `None`: no forecast yet).
    pub fn calibrate(&mut self, train: &[Vec<f64>], forecasts: &[Option<Vec<f64>>]) {
        let m = self.mean.len();
        // Scales from the second half (the first half is where a streaming
        // model would still be learning).
        let half = train.len() / 2;
        let (mut both, mut forecast) = (vec![Vec::new(); m], vec![Vec::new(); m]);
        for (t, row) in train.iter().enumerate().skip(half) {
            let f = forecasts.get(t).and_then(Option::as_deref);
            let (b, f) = self.errors(f, row);
            for k in 0..m {
                both[k].push(b[k]);
                forecast[k].push(f[k]);
            }
        }
        let (q, floor) = (self.cfg.error_quantile, self.cfg.scale_floor);
        let scales = |errors: &mut Vec<Vec<f64>>| -> Vec<f64> {
            errors
                .iter_mut()
                .map(|e| linalg::quantile(e, q).max(floor))
                .collect()
        };
        self.scale = scales(&mut both);
        self.forecast_scale = scales(&mut forecast);
        let mut state = EntityState::default();
        let scores: Vec<f64> = train
            .iter()
            .enumerate()
            .map(|(t, r)| {
                state.next = forecasts.get(t).cloned().flatten();
                self.step(&mut state, r).score
            })
            .collect();
        let tail = &scores[half..];
        self.threshold = match Pot::calibrate(tail, self.cfg.pot) {
            Some(p) => p.threshold(),
            // Too little data for a tail: above anything training saw.
            None => tail.iter().copied().fold(1.0, f64::max) * 1.5,
        };
    }

    /// `row` normalised by the training level and spread (NaN stays NaN).
    pub fn normalise(&self, row: &[f64], out: &mut Vec<f32>) {
        out.extend(
            row.iter()
                .zip(self.mean.iter().zip(&self.sd))
                .map(|(x, (m, s))| ((x - m) / s) as f32),
        );
    }

    /// A normalised forecast back in raw units.
    pub fn denormalise(&self, z: &[f32]) -> Vec<f64> {
        z.iter()
            .zip(self.mean.iter().zip(&self.sd))
            .map(|(&z, (m, s))| z as f64 * s + m)
            .collect()
    }

    /// The alarm threshold on [`EntityScore::score`].
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Metrics per row.
    pub fn metrics(&self) -> usize {
        self.mean.len()
    }

    /// Principal directions kept.
    pub fn components(&self) -> usize {
        self.basis.len()
    }

    /// Each metric's raw errors: (the larger of forecast and subspace
    /// error, the forecast error alone). The larger is taken in raw units,
    /// before calibration: calibrating the two parts apart first lowered
    /// smd-dev's event F1 from 0.65 to 0.52.
    fn errors(&self, next: Option<&[f64]>, row: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let m = row.len();
        let forecast: Vec<f64> = match next {
            Some(l) => (0..m).map(|k| (row[k] - l[k]).abs()).collect(),
            None => vec![0.0; m],
        };
        let z: Vec<f64> = (0..m)
            .map(|k| (row[k] - self.mean[k]) / self.sd[k])
            .collect();
        let residual = linalg::residual(&self.basis, &z);
        let (f_on, s_on) = (self.cfg.forecast, self.cfg.subspace);
        let both = (0..m)
            .map(|k| {
                let f = if f_on { forecast[k] } else { 0.0 };
                let s = if s_on {
                    residual[k].abs() * self.sd[k]
                } else {
                    0.0
                };
                f.max(s)
            })
            .collect();
        (both, forecast)
    }

    /// Scores one row of the entity and learns it into `state`.
    pub fn step(&self, state: &mut EntityState, row: &[f64]) -> EntityScore {
        let m = row.len();
        let next = state.next.take();
        let (both, forecast) = self.errors(next.as_deref().or(state.last.as_deref()), row);
        let a = self.cfg.smooth;
        if state.smoothed.len() != m {
            (state.smoothed, state.ranked) = (vec![0.0; m], vec![0.0; m]);
        }
        for k in 0..m {
            state.smoothed[k] = a * state.smoothed[k] + (1.0 - a) * both[k] / self.scale[k];
            state.ranked[k] =
                a * state.ranked[k] + (1.0 - a) * forecast[k] / self.forecast_scale[k];
        }
        state.last = Some(row.to_vec());
        let mut top = state.smoothed.clone();
        top.sort_by(|x, y| y.total_cmp(x));
        let k = self.cfg.top_k.clamp(1, m.max(1));
        let score = top.iter().take(k).sum::<f64>() / k as f64;
        EntityScore {
            score,
            metrics: state.ranked.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
