//! Learning: one AdamW step on windows, online or in the cloud's batch
//! training.

use super::weights::inference_cell;
use super::Detector;
use crate::ModelError;
use candle_core::Tensor;
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rand::Rng;

impl Detector {
    /// One AdamW step on `batch` windows of `window` normalised values
    /// (`xs`) and the values that follow each (`ys`), both `[batch, window]`
    /// row-major. Online training and the cloud's batch training both step here.
    pub fn fit_windows(
        &mut self,
        xs: Vec<f32>,
        ys: Vec<f32>,
        batch: usize,
        window: usize,
    ) -> Result<f32, ModelError> {
        let loss = self.loss_of(xs, ys, batch, window)?;
        let opt = match self.optimizer.as_mut() {
            Some(o) => o,
            None => self
                .optimizer
                .insert(adamw(&self.varmap, self.cfg.learning_rate)?),
        };
        opt.backward_step(&loss)?;
        (self.cell, self.head_w, self.head_b) = inference_cell(&self.varmap)?;
        let loss = loss.to_scalar::<f32>()?;
        self.train_steps += 1;
        self.last_loss = Some(loss);
        Ok(loss)
    }

    /// Mean squared forecast error on windows laid out as in [`Self::fit_windows`],
    /// without learning.
    pub fn windows_loss(
        &self,
        xs: Vec<f32>,
        ys: Vec<f32>,
        batch: usize,
        window: usize,
    ) -> Result<f32, ModelError> {
        Ok(self
            .loss_of(xs, ys, batch, window)?
            .detach()
            .to_scalar::<f32>()?)
    }

    /// The forecast's mean squared error over the windows, as a tensor
    /// that training can differentiate.
    fn loss_of(
        &self,
        xs: Vec<f32>,
        ys: Vec<f32>,
        batch: usize,
        window: usize,
    ) -> Result<Tensor, ModelError> {
        let x = Tensor::from_vec(xs, (batch, window, 1), &self.device)?;
        let y = Tensor::from_vec(ys, (batch, window), &self.device)?;
        Ok(candle_nn::loss::mse(&self.model.forward_seq(&x)?, &y)?)
    }

    /// One AdamW step on windows sampled from the series' recent history.
    /// Returns the loss, or `None` when no series has a full window yet.
    pub fn train_step(&mut self) -> Result<Option<f32>, ModelError> {
        if self.optimizer.is_none() {
            return Ok(None);
        }
        let w = self.cfg.train_window;
        let ready: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].history.len() > w)
            .collect();
        if ready.is_empty() {
            return Ok(None);
        }
        let b = self.cfg.train_batch.min(ready.len());
        let mut xs: Vec<f32> = Vec::with_capacity(b * w);
        let mut ys: Vec<f32> = Vec::with_capacity(b * w);
        for _ in 0..b {
            let i = ready[self.rng.random_range(0..ready.len())];
            let h = &self.slots[i].history;
            xs.extend(h.iter().take(w));
            ys.extend(h.iter().skip(1).take(w));
        }
        self.fit_windows(xs, ys, b, w).map(Some)
    }
}

/// The optimiser every training step uses.
pub(super) fn adamw(varmap: &VarMap, lr: f64) -> Result<AdamW, ModelError> {
    let params = ParamsAdamW {
        lr,
        weight_decay: 0.0,
        ..Default::default()
    };
    Ok(AdamW::new(varmap.all_vars(), params)?)
}
