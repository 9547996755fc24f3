//! The entity forecaster: one LSTM per entity kind over the entity's whole
//! metric vector (normalised values and a presence mask, `2m` inputs) and a
//! linear head predicting each metric's change to the next row. The head
//! starts at zero, so an untrained forecaster is persistence (next = last).
//! Trained in the cloud on windows of every entity of the kind; run at the
//! edge for all entities of the kind in one fused step per tick.

use crate::fused::FusedLstm;
use crate::training::{Batches, Plan};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::rnn::{LSTMConfig, LSTM, RNN};
use candle_nn::{AdamW, Init, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};

/// Normalised inputs are clipped to this many spreads.
pub const CLIP: f32 = 10.0;

/// A kind's forecaster: the trainable layers and their fused inference copy.
pub struct EntityLstm {
    varmap: VarMap,
    lstm: LSTM,
    head: Linear,
    metrics: usize,
    hidden: usize,
    fused: FusedLstm,
    /// Head weights `[H, m]` row-major and bias `[m]`, for inference.
    head_w: Vec<f32>,
    head_b: Vec<f32>,
}

/// The recurrent state of a batch of entities, `[N, H]` each.
#[derive(Clone, Debug, Default)]
pub struct LstmState {
    h: Vec<f32>,
    c: Vec<f32>,
    x: Vec<f32>,
}

impl LstmState {
    /// A zero state for `n` entities.
    pub fn new(n: usize, hidden: usize) -> Self {
        Self {
            h: vec![0.0; n * hidden],
            c: vec![0.0; n * hidden],
            x: Vec::new(),
        }
    }
}

/// A normalised value as the model sees it: clipped, 0 where missing.
fn value(v: f32) -> f32 {
    if v.is_finite() {
        v.clamp(-CLIP, CLIP)
    } else {
        0.0
    }
}

/// 1 where a value is present, 0 where it is missing.
fn present(v: f32) -> f32 {
    if v.is_finite() {
        1.0
    } else {
        0.0
    }
}

/// The inputs of one row: its values, then its mask.
fn inputs(row: &[f32], out: &mut Vec<f32>) {
    out.extend(row.iter().map(|&v| value(v)));
    out.extend(row.iter().map(|&v| present(v)));
}

impl EntityLstm {
    /// A fresh forecaster (persistence until trained) for `metrics` metrics,
    /// its LSTM weights drawn from `seed` (the same seed, the same model).
    pub fn new(metrics: usize, hidden: usize, seed: u64) -> candle_core::Result<Self> {
        let varmap = VarMap::new();
        let dev = Device::Cpu;
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let lstm = candle_nn::lstm(2 * metrics, hidden, LSTMConfig::default(), vb.pp("lstm"))?;
        let hv = vb.pp("head");
        let w = hv.get_with_hints((metrics, hidden), "weight", Init::Const(0.0))?;
        let b = hv.get_with_hints(metrics, "bias", Init::Const(0.0))?;
        let head = Linear::new(w, Some(b));
        let mut rng = rand::SeedableRng::seed_from_u64(seed);
        crate::detector::weights::seed_weights(&varmap, hidden, &mut rng)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let (fused, head_w, head_b) = inference(&varmap, metrics, hidden)?;
        Ok(Self {
            varmap,
            lstm,
            head,
            metrics,
            hidden,
            fused,
            head_w,
            head_b,
        })
    }

    /// Metrics per entity.
    pub fn metrics(&self) -> usize {
        self.metrics
    }

    /// Hidden units (state per entity: `2 × hidden` floats).
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Trains on `entities` (each a run of normalised rows of `m` metrics,
    /// NaN where missing): windows of `plan.window` rows, AdamW at `lr`.
    /// Returns the mean loss of the last epoch's steps.
    pub fn fit(
        &mut self,
        entities: &[Vec<Vec<f32>>],
        plan: &Plan,
        lr: f64,
        mut progress: impl FnMut(usize, usize, f32),
    ) -> candle_core::Result<Option<f32>> {
        let w = plan.window;
        let mut all: Vec<(usize, usize)> = Vec::new();
        for (e, rows) in entities.iter().enumerate() {
            all.extend((0..rows.len().saturating_sub(w)).step_by(w).map(|s| (e, s)));
        }
        let mut batches = Batches::new(all, plan);
        let steps = batches.steps();
        if steps == 0 {
            return Ok(None);
        }
        let params = ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(self.varmap.all_vars(), params)?;
        let mut recent = std::collections::VecDeque::new();
        for step in 0..steps {
            let loss = self.loss(entities, batches.next_batch(), w)?;
            opt.backward_step(&loss)?;
            let l = loss.to_scalar::<f32>()?;
            recent.push_back(l);
            if recent.len() > batches.per_pass() {
                recent.pop_front();
            }
            progress(step + 1, steps, l);
        }
        (self.fused, self.head_w, self.head_b) =
            inference(&self.varmap, self.metrics, self.hidden)?;
        Ok(Some(
            recent.iter().sum::<f32>() / recent.len().max(1) as f32,
        ))
    }

    /// Masked mean squared error of the next-row forecast over `picks`.
    fn loss(
        &self,
        entities: &[Vec<Vec<f32>>],
        picks: &[(usize, usize)],
        w: usize,
    ) -> candle_core::Result<Tensor> {
        let (b, m) = (picks.len(), self.metrics);
        let (mut xs, mut ys, mut ms) = (Vec::new(), Vec::new(), Vec::new());
        for &(e, s) in picks {
            for t in s..s + w {
                inputs(&entities[e][t], &mut xs);
                let next = &entities[e][t + 1];
                ys.extend(next.iter().map(|&v| value(v)));
                ms.extend(next.iter().map(|&v| present(v)));
            }
        }
        let dev = Device::Cpu;
        let x = Tensor::from_vec(xs, (b, w, 2 * m), &dev)?;
        let y = Tensor::from_vec(ys, (b, w, m), &dev)?;
        let mask = Tensor::from_vec(ms, (b, w, m), &dev)?;
        let states = self.lstm.seq(&x)?;
        let h = self.lstm.states_to_tensor(&states)?;
        let last = x.narrow(2, 0, m)?;
        let forecast = (last + self.head.forward(&h)?)?;
        let err = ((forecast - y)?.sqr()? * &mask)?;
        let n = mask.sum_all()?.to_scalar::<f32>()?.max(1.0);
        err.sum_all()? / n as f64
    }

    /// One step for a batch: `rows` is `[N, m]` normalised (NaN where
    /// missing); writes each entity's forecast of its next row into `out`
    /// (normalised).
    pub fn step(
        &mut self,
        state: &mut LstmState,
        rows: &[f32],
        out: &mut Vec<f32>,
    ) -> candle_core::Result<()> {
        let m = self.metrics;
        state.x.clear();
        for row in rows.chunks_exact(m) {
            inputs(row, &mut state.x);
        }
        self.fused.step(&state.x, &mut state.h, &mut state.c)?;
        out.clear();
        for (i, hr) in state.h.chunks_exact(self.hidden).enumerate() {
            // forecast = last value + head(h), metric by metric.
            let base = out.len();
            out.extend_from_slice(&state.x[i * 2 * m..i * 2 * m + m]);
            for (o, b) in out[base..].iter_mut().zip(&self.head_b) {
                *o += b;
            }
            for (k, &hk) in hr.iter().enumerate() {
                let wk = &self.head_w[k * m..(k + 1) * m];
                for (o, w) in out[base..].iter_mut().zip(wk) {
                    *o += hk * w;
                }
            }
        }
        Ok(())
    }
}

/// The fused cell and the head (transposed to `[H, m]`) from the variables.
fn inference(
    varmap: &VarMap,
    metrics: usize,
    hidden: usize,
) -> candle_core::Result<(FusedLstm, Vec<f32>, Vec<f32>)> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map poisoned".into()))?;
    let get = |name: &str| {
        data.get(name)
            .map(|v| v.as_tensor().detach())
            .ok_or_else(|| candle_core::Error::Msg(format!("no variable {name}")))
    };
    let fused = FusedLstm::new(
        &get("lstm.weight_ih_l0")?,
        &get("lstm.weight_hh_l0")?,
        &get("lstm.bias_ih_l0")?,
        &get("lstm.bias_hh_l0")?,
    )?;
    let w = get("head.weight")?
        .t()?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let b = get("head.bias")?.to_vec1::<f32>()?;
    debug_assert_eq!(w.len(), metrics * hidden);
    Ok((fused, w, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two metrics, a wave and its lagged copy, for `n` rows.
    fn entity(n: usize, phase: f32) -> Vec<Vec<f32>> {
        (0..n)
            .map(|t| {
                let a = ((t as f32 + phase) * 0.3).sin();
                vec![a, ((t as f32 + phase - 2.0) * 0.3).sin()]
            })
            .collect()
    }

    fn mse(lstm: &mut EntityLstm, rows: &[Vec<f32>]) -> f32 {
        let mut st = LstmState::new(1, lstm.hidden());
        let (mut out, mut sum) = (Vec::new(), 0.0);
        for w in rows.windows(2) {
            lstm.step(&mut st, &w[0], &mut out).unwrap();
            sum += out
                .iter()
                .zip(&w[1])
                .map(|(f, y)| (f - y).powi(2))
                .sum::<f32>();
        }
        sum / (2 * (rows.len() - 1)) as f32
    }

    #[test]
    fn untrained_is_persistence_and_training_beats_it() {
        let mut lstm = EntityLstm::new(2, 16, 1).unwrap();
        let mut st = LstmState::new(3, 16);
        let rows = [0.5, -1.0, 2.0, 3.0, f32::NAN, 100.0];
        let mut out = Vec::new();
        lstm.step(&mut st, &rows, &mut out).unwrap();
        // Last value back (clipped; 0 where missing).
        assert_eq!(out, vec![0.5, -1.0, 2.0, 3.0, 0.0, CLIP]);

        let train: Vec<Vec<Vec<f32>>> = (0..4).map(|i| entity(600, i as f32 * 7.0)).collect();
        let held = entity(300, 100.0);
        let before = mse(&mut lstm, &held);
        let plan = Plan {
            epochs: 30.0,
            batch: 16,
            window: 32,
            seed: 1,
        };
        let mut steps = 0;
        lstm.fit(&train, &plan, 1e-2, |s, _, _| steps = s).unwrap();
        // 4 entities × 18 windows of 32, 30 epochs of 16.
        assert_eq!(steps, 135);
        let after = mse(&mut lstm, &held);
        assert!(after < before * 0.5, "held-back MSE {before} -> {after}");
    }

    #[test]
    fn a_missing_metric_is_not_learnt_as_zero() {
        // Metric 1 sits near 3 and is missing in 3 rows of 10. The loss
        // skips missing targets: were it to count the 0 that stands in for
        // them, the forecast would sink towards 0 (the misses are not
        // periodic, so the LSTM cannot learn when they come).
        let missing = |t: usize| ((t as u64 * 2_654_435_761) >> 16) % 10 < 3;
        let mut train = entity(1600, 0.0);
        for (t, r) in train.iter_mut().enumerate() {
            r[1] = if missing(t) {
                f32::NAN
            } else {
                3.0 + 0.1 * r[1]
            };
        }
        let mut lstm = EntityLstm::new(2, 16, 1).unwrap();
        let plan = Plan {
            epochs: 60.0,
            batch: 16,
            window: 32,
            seed: 2,
        };
        lstm.fit(&[train.clone()], &plan, 1e-2, |_, _, _| {})
            .unwrap();
        let mut st = LstmState::new(1, 16);
        let (mut out, mut sum, mut n) = (Vec::new(), 0.0f32, 0);
        for w in train.windows(2).take(300) {
            lstm.step(&mut st, &w[0], &mut out).unwrap();
            if w[1][1].is_finite() {
                (sum, n) = (sum + out[1] - w[1][1], n + 1);
            }
        }
        let bias = sum / n as f32;
        // Measured over seeds 1, 2, 5, 6: within ±0.013 with the mask,
        // -0.11 to -0.17 without it.
        assert!(bias.abs() < 0.05, "mean error on a present value: {bias}");
    }
}
