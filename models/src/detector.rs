//! The detector: scores every series each tick in one batched LSTM step.
//!
//! Per series it keeps a [`Baseline`] (level and spread, which normalise the
//! LSTM's input) and a [`Novelty`]; the score in [0, 1] is the larger of
//! - novelty: the value or its smoothed value leaves the range the series
//!   has kept, or the LSTM's forecast error beats its recent peak (judged
//!   against the series' own past, so one threshold fits every series);
//! - a sustained far deviation: at least `level_z` spreads from the
//!   baseline for `level_for` samples, mapped by `1 - exp(-(z / z_scale)²)`
//!   (a dead process or hung service alarms every time, not only the first).
//!
//! See docs/detector.md for why, and the NAB and SMD figures.
//! The LSTM learns online from recent windows every `train_every_ticks`.

use crate::ablation::Ablation;
use crate::baseline::{Baseline, BaselineRates};
use crate::forecaster::{Forecaster, ForecasterConfig};
use crate::fused::FusedLstm;
use crate::novelty::{Novelty, NoveltyRates, WORDS as NOVELTY_WORDS};
use crate::season::{Season, WORDS as SEASON_WORDS};
use crate::ModelError;
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::VecDeque;

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

/// One tick's output, indexed like the input.
#[derive(Clone, Debug, Default)]
pub struct TickScores {
    /// Score in [0, 1] per series (0 while warming up or without a value):
    /// high at an event's onset, held back for the refractory period after
    /// it, so one incident is one detection (what NAB and a pager count).
    pub scores: Vec<f32>,
    /// The same before the refractory period holds it back: high for as
    /// long as the evidence lasts. The edge follows episodes on this, so a
    /// fault that persists is never taken for a recovery.
    pub evidence: Vec<f32>,
}

struct Slot {
    base: Baseline,
    novelty: Novelty,
    season: Season,
    /// Samples left in the refractory period, and the score that began it.
    quiet: u32,
    fired: f32,
    /// Consecutive samples at or beyond `level_z`.
    deviated: u32,
    /// Recent normalised values for training windows.
    history: VecDeque<f32>,
    last_input: f32,
    anomalous: bool,
}

impl Slot {
    fn fresh(window: usize) -> Self {
        Self {
            base: Baseline::default(),
            novelty: Novelty::default(),
            season: Season::default(),
            quiet: 0,
            fired: 0.0,
            deviated: 0,
            history: VecDeque::with_capacity(window + 1),
            last_input: 0.0,
            anomalous: false,
        }
    }
}

/// Batched, stateful scorer over a growing set of series slots.
pub struct Detector {
    cfg: DetectorConfig,
    rates: BaselineRates,
    device: Device,
    varmap: VarMap,
    model: Forecaster,
    optimizer: Option<AdamW>,
    /// Inference: the fused cell, refreshed from `varmap` after training.
    cell: FusedLstm,
    head_w: Vec<f32>,
    head_b: f32,
    /// Per-series LSTM state, `[N, H]` row-major.
    h: Vec<f32>,
    c: Vec<f32>,
    forecast: Vec<f32>,
    slots: Vec<Slot>,
    rng: StdRng,
    ticks: u64,
    train_steps: u64,
    last_loss: Option<f32>,
    /// The release these weights came from, and training steps at load.
    release: Option<(String, u64, u64)>,
    /// The part replaced or switched off (measurement only).
    ablation: Ablation,
}

impl Detector {
    /// A fresh detector on the CPU with seeded weights.
    pub fn new(cfg: DetectorConfig) -> Result<Self, ModelError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(ModelError::Config(problems.join("; ")));
        }
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let model = Forecaster::new(
            ForecasterConfig {
                inputs: 1,
                hidden: cfg.hidden,
            },
            vb,
        )?;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        seed_weights(&varmap, cfg.hidden, &mut rng)?;
        let optimizer = if cfg.train_every_ticks > 0 {
            Some(adamw(&varmap, cfg.learning_rate)?)
        } else {
            None
        };
        let (cell, head_w, head_b) = inference_cell(&varmap)?;
        Ok(Self {
            rates: cfg.rates(),
            rng,
            cfg,
            device,
            varmap,
            model,
            optimizer,
            cell,
            head_w,
            head_b,
            h: Vec::new(),
            c: Vec::new(),
            forecast: Vec::new(),
            slots: Vec::new(),
            ticks: 0,
            train_steps: 0,
            last_loss: None,
            release: None,
            ablation: Ablation::Full,
        })
    }

    /// A fresh detector with one part replaced or switched off, to measure
    /// that part's worth (`Untrained` also stops online training).
    pub fn ablated(mut cfg: DetectorConfig, ablation: Ablation) -> Result<Self, ModelError> {
        if ablation == Ablation::Untrained {
            cfg.train_every_ticks = 0;
        }
        let mut d = Self::new(cfg)?;
        d.ablation = ablation;
        Ok(d)
    }

    /// Number of series slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no series has been seen.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The settings.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// A version string: the release (`family-vN`) or the architecture,
    /// and how many online training steps it has taken since.
    pub fn model_version(&self) -> String {
        match &self.release {
            Some((family, v, at)) if self.train_steps > *at => {
                format!("{family}-v{v}+{}", self.train_steps - at)
            }
            Some((family, v, _)) => format!("{family}-v{v}"),
            None => format!("lstm-h{}-online+{}", self.cfg.hidden, self.train_steps),
        }
    }

    /// The release (family, version) the weights were loaded from, if any.
    pub fn release(&self) -> Option<(&str, u64)> {
        self.release.as_ref().map(|(f, v, _)| (f.as_str(), *v))
    }

    /// Names the release these weights are (set when a bundle is loaded).
    pub fn set_release(&mut self, family: &str, version: u64) {
        self.release = Some((family.to_string(), version, self.train_steps));
    }

    /// Takes over `old`'s per-series state (baselines, novelty, history and,
    /// when the hidden size matches, the LSTM state), so a swapped-in model
    /// scores from its first tick instead of warming up again.
    pub fn adopt_state(&mut self, old: &mut Detector) {
        self.slots = std::mem::take(&mut old.slots);
        self.forecast = std::mem::take(&mut old.forecast);
        let n = self.slots.len();
        if old.cfg.hidden == self.cfg.hidden {
            self.h = std::mem::take(&mut old.h);
            self.c = std::mem::take(&mut old.c);
        } else {
            self.h = vec![0.0; n * self.cfg.hidden];
            self.c = vec![0.0; n * self.cfg.hidden];
        }
    }

    /// A detector with these settings and weights and fresh per-series
    /// state; without online training when `online` is false (to judge a
    /// model as it stands).
    pub fn replica(&self, online: bool) -> Result<Detector, ModelError> {
        let mut cfg = self.cfg.clone();
        if !online {
            cfg.train_every_ticks = 0;
        }
        let mut d = Detector::new(cfg)?;
        d.load_weights_bytes(&self.weights_bytes()?, self.train_steps)?;
        d.release = self.release.clone();
        Ok(d)
    }

    /// The weights as safetensors bytes.
    pub fn weights_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Config("variable map poisoned".into()))?;
        let tensors: Vec<(String, Tensor)> = data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        safetensors::serialize(tensors, None)
            .map_err(|e| ModelError::Config(format!("serialising weights: {e}")))
    }

    /// Loads weights from safetensors bytes; every variable must be there
    /// with its shape.
    pub fn load_weights_bytes(&mut self, bytes: &[u8], train_steps: u64) -> Result<(), ModelError> {
        let loaded = candle_core::safetensors::load_buffer(bytes, &self.device)?;
        {
            let data = self
                .varmap
                .data()
                .lock()
                .map_err(|_| ModelError::Config("variable map poisoned".into()))?;
            for (name, var) in data.iter() {
                let t = loaded
                    .get(name)
                    .ok_or_else(|| ModelError::Config(format!("weights lack {name}")))?;
                if t.shape() != var.shape() {
                    return Err(ModelError::Config(format!(
                        "{name}: shape {:?}, the model needs {:?}",
                        t.shape(),
                        var.shape()
                    )));
                }
                var.set(&t.to_dtype(DType::F32)?)?;
            }
        }
        (self.cell, self.head_w, self.head_b) = inference_cell(&self.varmap)?;
        self.train_steps = train_steps;
        Ok(())
    }

    /// Each series' forecast of its next value, in its normalised units
    /// (what the forecast-record evidence compares against).
    pub fn forecasts(&self) -> &[f32] {
        &self.forecast
    }

    /// Online training steps taken.
    pub fn train_steps(&self) -> u64 {
        self.train_steps
    }

    /// Training loss of the latest online step, if any ran.
    pub fn last_loss(&self) -> Option<f32> {
        self.last_loss
    }

    fn grow(&mut self, n: usize) -> Result<(), ModelError> {
        if n <= self.slots.len() {
            return Ok(());
        }
        let extra = n - self.slots.len();
        self.h.resize(n * self.cfg.hidden, 0.0);
        self.c.resize(n * self.cfg.hidden, 0.0);
        self.forecast.resize(n, 0.0);
        for _ in 0..extra {
            self.slots.push(Slot::fresh(self.cfg.train_window));
        }
        Ok(())
    }

    /// Row `i`'s whole state (baseline, novelty, history, LSTM state,
    /// forecast) as 32-bit words, for a snapshot; `None` past the end.
    pub fn row_state(&self, i: usize) -> Option<Vec<u32>> {
        let s = self.slots.get(i)?;
        let hd = self.cfg.hidden;
        let f = f32::to_bits;
        let mut w = vec![
            hd as u32,
            s.base.count,
            f(s.base.mean),
            f(s.base.spread),
            s.deviated,
            f(s.last_input),
            s.anomalous as u32,
            f(self.forecast[i]),
        ];
        w.extend(s.novelty.to_words());
        w.extend(s.season.to_words());
        w.extend([s.quiet, f(s.fired)]);
        w.extend(self.h[i * hd..(i + 1) * hd].iter().map(|&x| f(x)));
        w.extend(self.c[i * hd..(i + 1) * hd].iter().map(|&x| f(x)));
        w.push(s.history.len() as u32);
        w.extend(s.history.iter().map(|&x| f(x)));
        Some(w)
    }

    /// Puts back a row saved by [`Detector::row_state`] into row `i`
    /// (growing the rows as needed); false, and nothing changed, when the
    /// words do not fit this detector (another hidden size or layout, a
    /// torn file).
    pub fn restore_row(&mut self, i: usize, w: &[u32]) -> bool {
        let hd = self.cfg.hidden;
        let (nov, sea) = (8, 8 + NOVELTY_WORDS);
        let lstm = sea + SEASON_WORDS + 2;
        let fixed = lstm + 2 * hd + 1;
        if w.len() < fixed || w[0] as usize != hd {
            return false;
        }
        let n_hist = w[fixed - 1] as usize;
        if w.len() != fixed + n_hist || n_hist > self.cfg.train_window + 1 {
            return false;
        }
        let (Ok(novelty), Some(season)) = (
            <[u32; NOVELTY_WORDS]>::try_from(&w[nov..sea]),
            Season::from_words(&w[sea..sea + SEASON_WORDS]),
        ) else {
            return false;
        };
        if self.grow(i + 1).is_err() {
            return false;
        }
        let f = f32::from_bits;
        self.slots[i] = Slot {
            base: Baseline {
                count: w[1],
                mean: f(w[2]),
                spread: f(w[3]),
            },
            novelty: Novelty::from_words(novelty),
            season,
            quiet: w[lstm - 2],
            fired: f(w[lstm - 1]),
            deviated: w[4],
            history: w[fixed..].iter().map(|&x| f(x)).collect(),
            last_input: f(w[5]),
            anomalous: w[6] != 0,
        };
        self.forecast[i] = f(w[7]);
        for k in 0..hd {
            self.h[i * hd + k] = f(w[lstm + k]);
            self.c[i * hd + k] = f(w[lstm + hd + k]);
        }
        true
    }

    /// Starts rows afresh: their series left and the slots went to new
    /// ones, which must not inherit their predecessors' state.
    pub fn reset_rows(&mut self, rows: &[usize]) {
        let (hd, n) = (self.cfg.hidden, self.slots.len());
        for &i in rows.iter().filter(|&&i| i < n) {
            self.slots[i] = Slot::fresh(self.cfg.train_window);
            self.h[i * hd..(i + 1) * hd].fill(0.0);
            self.c[i * hd..(i + 1) * hd].fill(0.0);
            self.forecast[i] = 0.0;
        }
    }

    /// Scores one tick. `values[i]` is series slot `i`'s new value, or `None`
    /// when it has none this tick (its state is then left untouched). Slots
    /// grow to `values.len()`. Non-finite values count as missing.
    pub fn tick(&mut self, values: &[Option<f64>]) -> Result<TickScores, ModelError> {
        self.tick_at(values, &[])
    }

    /// [`Detector::tick`] with each series' sample time (unix seconds,
    /// indexed like `values`; empty when unknown). Times give the seasonal
    /// evidence its time of day; without them it stays silent.
    pub fn tick_at(
        &mut self,
        values: &[Option<f64>],
        times: &[i64],
    ) -> Result<TickScores, ModelError> {
        self.grow(values.len())?;
        let n = self.slots.len();
        let mut scores = vec![0.0f32; n];
        let mut evidence = vec![0.0f32; n];
        let mut inputs = vec![0.0f32; n];
        let mut mask = vec![0.0f32; n];
        let a = self.ablation;
        let nrates = NoveltyRates {
            learn: self.cfg.novelty_learn,
            peak_decay: self.cfg.novelty_peak_decay,
            on: [
                a != Ablation::NoRange,
                a != Ablation::NoSmoothedRange,
                a != Ablation::NoForecastRecord,
            ],
            line_gate: a != Ablation::NoLineGate,
        };
        let sustained = a != Ablation::NoSustained;
        let refractory = if a == Ablation::NoRefractory {
            0
        } else {
            self.cfg.refractory
        };
        for i in 0..n {
            let slot = &self.slots[i];
            inputs[i] = slot.last_input;
            let Some(v) = values.get(i).copied().flatten().filter(|v| v.is_finite()) else {
                continue;
            };
            let x = v as f32;
            let u = slot.base.normalise(x, &self.rates);
            let warm = slot.base.count >= self.cfg.warmup_samples;
            let lz = slot.base.level_z(x, &self.rates);
            let scale = slot.base.scale(&self.rates);
            // The forecast was made in the normalisation this baseline still holds.
            let predicted = slot.base.mean + self.forecast[i] * scale;
            let slot = &mut self.slots[i];
            let novelty = slot.novelty.update(x, (x - predicted).abs(), &nrates);
            let season = match times.get(i) {
                Some(&t) if a != Ablation::NoSeason => slot.season.update(x, t, scale),
                _ => 0.0,
            };
            let far = sustained && self.cfg.level_z > 0.0 && lz >= self.cfg.level_z;
            slot.deviated = if far {
                slot.deviated.saturating_add(1)
            } else {
                0
            };
            let level = if far && slot.deviated >= self.cfg.level_for {
                to_score(lz, self.cfg.z_scale)
            } else {
                0.0
            };
            let (raw, score) = if warm {
                let raw = novelty.max(season).max(level);
                (raw, hold_back(slot, raw, refractory, self.cfg.threshold))
            } else {
                (0.0, 0.0)
            };
            // A far deviation waiting out `level_for` must not become the
            // normal meanwhile, or a fault the ranges already know (the
            // second outage) is absorbed before the rule can speak. The
            // baseline judges by the evidence, not by what was held back.
            let anomalous = raw >= self.cfg.threshold || far;
            slot.base.update(x, anomalous, &self.rates);
            slot.anomalous = anomalous;
            slot.last_input = u;
            if slot.history.len() > self.cfg.train_window {
                slot.history.pop_front();
            }
            slot.history.push_back(u);
            scores[i] = score;
            evidence[i] = raw;
            inputs[i] = u;
            mask[i] = 1.0;
        }
        if n > 0 {
            self.step_model(&inputs, &mask)?;
        }
        self.ticks += 1;
        if self.cfg.train_every_ticks > 0 && self.ticks % self.cfg.train_every_ticks == 0 {
            self.train_step()?;
        }
        Ok(TickScores { scores, evidence })
    }

    fn step_model(&mut self, inputs: &[f32], mask: &[f32]) -> Result<(), ModelError> {
        let hd = self.cfg.hidden;
        // Series without a value this tick keep their old state: save only
        // those rows (usually none) rather than the whole state.
        let idle: Vec<usize> = (0..mask.len()).filter(|&i| mask[i] <= 0.0).collect();
        let saved: Vec<(Vec<f32>, Vec<f32>)> = idle
            .iter()
            .map(|&i| {
                (
                    self.h[i * hd..(i + 1) * hd].to_vec(),
                    self.c[i * hd..(i + 1) * hd].to_vec(),
                )
            })
            .collect();
        self.cell.step(inputs, &mut self.h, &mut self.c)?;
        for (&i, (h, c)) in idle.iter().zip(&saved) {
            self.h[i * hd..(i + 1) * hd].copy_from_slice(h);
            self.c[i * hd..(i + 1) * hd].copy_from_slice(c);
        }
        for (i, &m) in mask.iter().enumerate() {
            if m > 0.0 {
                let delta: f32 = self.h[i * hd..(i + 1) * hd]
                    .iter()
                    .zip(&self.head_w)
                    .map(|(a, b)| a * b)
                    .sum();
                self.forecast[i] = if self.ablation == Ablation::Persistence {
                    inputs[i]
                } else {
                    inputs[i] + delta + self.head_b
                };
            }
        }
        Ok(())
    }

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
        let x = Tensor::from_vec(xs, (batch, window, 1), &self.device)?;
        let y = Tensor::from_vec(ys, (batch, window), &self.device)?;
        let loss = candle_nn::loss::mse(&self.model.forward_seq(&x)?, &y)?;
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
        let x = Tensor::from_vec(xs, (batch, window, 1), &self.device)?;
        let y = Tensor::from_vec(ys, (batch, window), &self.device)?;
        let loss = candle_nn::loss::mse(&self.model.forward_seq(&x)?.detach(), &y)?;
        Ok(loss.to_scalar::<f32>()?)
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
fn adamw(varmap: &VarMap, lr: f64) -> Result<AdamW, ModelError> {
    let params = ParamsAdamW {
        lr,
        weight_decay: 0.0,
        ..Default::default()
    };
    Ok(AdamW::new(varmap.all_vars(), params)?)
}

/// Score margin by which an event must beat the alarm that began a
/// refractory period to alarm again within it.
const STRONGER_BY: f32 = 0.1;
/// The most a held-back score may be (below any sensible threshold).
const HELD_CAP: f32 = 0.5;

/// The refractory period: an alarm at `threshold` starts `samples` of
/// quiet in which the score is capped at [`HELD_CAP`], unless it beats the
/// alarm by [`STRONGER_BY`] (which starts a new period). A score still at
/// the threshold prolongs the quiet: a run is one detection, however long.
fn hold_back(slot: &mut Slot, score: f32, samples: u32, threshold: f32) -> f32 {
    if samples == 0 {
        return score;
    }
    if slot.quiet > 0 {
        slot.quiet -= 1;
        if score < slot.fired + STRONGER_BY {
            if score >= threshold {
                // Still the same run: it stays one detection.
                slot.quiet = samples;
            }
            return score.min(HELD_CAP);
        }
    } else if score < threshold {
        return score;
    }
    (slot.fired, slot.quiet) = (score, samples);
    score
}

/// Maps a deviation in spreads to [0, 1]: `1 - exp(-(z / z_scale)²)`.
fn to_score(z: f32, z_scale: f32) -> f32 {
    let r = z / z_scale;
    let s = 1.0 - (-(r * r)).exp();
    if s.is_finite() {
        s
    } else {
        1.0
    }
}

/// The fused inference cell and the head, from the current variables.
fn inference_cell(varmap: &VarMap) -> Result<(FusedLstm, Vec<f32>, f32), ModelError> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Config("variable map poisoned".into()))?;
    let get = |name: &str| {
        data.get(name)
            .map(|v| v.as_tensor().detach())
            .ok_or_else(|| ModelError::Config(format!("model has no variable {name}")))
    };
    let cell = FusedLstm::new(
        &get("lstm.weight_ih_l0")?,
        &get("lstm.weight_hh_l0")?,
        &get("lstm.bias_ih_l0")?,
        &get("lstm.bias_hh_l0")?,
    )?;
    let head_w = get("head.weight")?.flatten_all()?.to_vec1::<f32>()?;
    let head_b = get("head.bias")?
        .flatten_all()?
        .to_vec1::<f32>()?
        .first()
        .copied()
        .unwrap_or(0.0);
    Ok((cell, head_w, head_b))
}

/// Re-draws the LSTM weight matrices from `rng` (uniform ±1/√hidden, as
/// PyTorch does), because candle's CPU generator cannot be seeded. Biases
/// and the zero-initialised head are left alone.
fn seed_weights(varmap: &VarMap, hidden: usize, rng: &mut StdRng) -> Result<(), ModelError> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Config("variable map poisoned".into()))?;
    let mut names: Vec<&String> = data
        .keys()
        .filter(|k| k.starts_with("lstm.weight"))
        .collect();
    names.sort();
    let k = 1.0 / (hidden as f32).sqrt();
    for name in names {
        let var = &data[name];
        let n = var.elem_count();
        let vals: Vec<f32> = (0..n).map(|_| rng.random_range(-k..k)).collect();
        var.set(&Tensor::from_vec(vals, var.shape(), var.device())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(i: usize) -> f64 {
        // Deterministic noise in [-1, 1].
        ((i as f64 * 12.9898).sin() * 43758.5453).fract()
    }

    #[test]
    fn a_restored_row_scores_as_the_original_would() {
        let mut a = Detector::new(DetectorConfig::default()).unwrap();
        for t in 0..120 {
            a.tick(&[Some(100.0 + noisy(t)), Some(1.0)]).unwrap();
        }
        // A new detector, rows in another order (slots differ after a restart).
        let mut b = Detector::new(DetectorConfig::default()).unwrap();
        b.load_weights_bytes(&a.weights_bytes().unwrap(), a.train_steps())
            .unwrap();
        assert!(b.restore_row(1, &a.row_state(0).unwrap()));
        assert!(b.restore_row(0, &a.row_state(1).unwrap()));
        let mut fresh = Detector::new(DetectorConfig::default()).unwrap();
        // The health flag drops: the restored detector sees it at once.
        let sa = a.tick(&[Some(100.0), Some(0.0)]).unwrap();
        let sb = b.tick(&[Some(0.0), Some(100.0)]).unwrap();
        let sf = fresh.tick(&[Some(100.0), Some(0.0)]).unwrap();
        assert_eq!(sa.scores[1], sb.scores[0]);
        assert_eq!(sa.scores[0], sb.scores[1]);
        assert!(sa.scores[1] >= 0.95, "{:?}", sa.scores);
        assert_eq!(sf.scores[1], 0.0, "a fresh detector is still learning");
        // Words that do not fit are refused and change nothing.
        let mut w = a.row_state(0).unwrap();
        w.pop();
        assert!(!b.restore_row(0, &w));
        assert!(!b.restore_row(0, &[]));
    }

    #[test]
    fn flags_a_level_fault_and_names_the_series() {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        for t in 0..200 {
            let s = d.tick(&[Some(100.0 + noisy(t)), Some(1.0)]).unwrap();
            if t > 30 {
                assert!(
                    s.scores.iter().all(|&x| x < 0.95),
                    "false alarm at {t}: {:?}",
                    s.scores
                );
            }
        }
        // Series 1 (a health flag) drops to 0 and stays there: the evidence
        // holds for as long as it lasts, the score alarms once, at onset.
        let thr = d.config().threshold;
        for t in 200..210 {
            let s = d.tick(&[Some(100.0 + noisy(t)), Some(0.0)]).unwrap();
            assert!(s.evidence[1] >= thr, "missed fault at {t}: {:?}", s);
            assert!(s.evidence[0] < thr);
            let onset = t == 200;
            assert_eq!(s.scores[1] >= thr, onset, "at {t}: {:?}", s.scores);
        }
        // Recovery: the return is itself a change for the forecast, then
        // within a few ticks the evidence falls back.
        let mut s = d.tick(&[Some(100.0), Some(1.0)]).unwrap();
        for _ in 0..3 {
            s = d.tick(&[Some(100.0), Some(1.0)]).unwrap();
        }
        assert!(s.evidence[1] < 0.5, "{:?}", s.evidence);
    }

    #[test]
    fn fused_inference_follows_the_trained_candle_model() {
        let mut d = Detector::new(DetectorConfig {
            train_every_ticks: 0,
            ..DetectorConfig::default()
        })
        .unwrap();
        d.optimizer = Some(
            AdamW::new(
                d.varmap.all_vars(),
                ParamsAdamW {
                    lr: 5e-2,
                    weight_decay: 0.0,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        let series = |t: usize| ((t as f64) * 0.4).sin() * 5.0 + 20.0;
        for t in 0..80 {
            d.tick(&[Some(series(t))]).unwrap();
        }
        for _ in 0..5 {
            d.train_step().unwrap();
        }
        // Replay the same normalised inputs through candle's cell from a zero state.
        let mut fresh = Detector::new(DetectorConfig {
            train_every_ticks: 0,
            ..DetectorConfig::default()
        })
        .unwrap();
        fresh.varmap = d.varmap.clone();
        fresh.model = d.model.clone();
        (fresh.cell, fresh.head_w, fresh.head_b) = inference_cell(&fresh.varmap).unwrap();
        let mut state = d.model.zero_state(1).unwrap();
        let mut want = 0.0f32;
        for t in 0..40 {
            fresh.tick(&[Some(series(t))]).unwrap();
            let u = fresh.slots[0].last_input;
            let x = Tensor::from_slice(&[u], (1, 1), &Device::Cpu).unwrap();
            let (pred, next) = fresh.model.step(&x, &state).unwrap();
            state = next;
            want = pred.to_vec1::<f32>().unwrap()[0];
        }
        assert!(
            fresh.head_w.iter().any(|w| *w != 0.0),
            "training moved the head"
        );
        assert!(
            (fresh.forecast[0] - want).abs() < 1e-4,
            "fused {} vs candle {want}",
            fresh.forecast[0]
        );
    }

    #[test]
    fn a_series_without_a_value_keeps_its_lstm_state() {
        let mut d = Detector::new(DetectorConfig {
            train_every_ticks: 0,
            ..DetectorConfig::default()
        })
        .unwrap();
        for t in 0..5 {
            d.tick(&[Some(t as f64), Some(10.0 - t as f64)]).unwrap();
        }
        let hd = d.cfg.hidden;
        let (h1, c1) = (d.h[hd..2 * hd].to_vec(), d.c[hd..2 * hd].to_vec());
        let h0 = d.h[..hd].to_vec();
        d.tick(&[Some(7.0), None]).unwrap();
        assert_eq!(
            (&d.h[hd..2 * hd], &d.c[hd..2 * hd]),
            (h1.as_slice(), c1.as_slice())
        );
        assert_ne!(&d.h[..hd], h0.as_slice(), "the series with a value stepped");
    }

    #[test]
    fn missing_values_keep_state_and_score_zero() {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        d.tick(&[Some(1.0)]).unwrap();
        let s = d.tick(&[None, Some(f64::NAN), Some(2.0)]).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(s.scores, vec![0.0, 0.0, 0.0]);
    }

    #[test]
    fn online_training_lowers_the_loss_and_is_deterministic() {
        let cfg = DetectorConfig {
            train_every_ticks: 0,
            learning_rate: 1e-2,
            ..DetectorConfig::default()
        };
        let run = || {
            let mut d = Detector::new(cfg.clone()).unwrap();
            // Same shape as the running config, but training driven by hand.
            d.optimizer = Some(
                AdamW::new(
                    d.varmap.all_vars(),
                    ParamsAdamW {
                        lr: 1e-2,
                        weight_decay: 0.0,
                        ..Default::default()
                    },
                )
                .unwrap(),
            );
            let mut losses = Vec::new();
            for t in 0..400 {
                let v: Vec<Option<f64>> = (0..8)
                    .map(|k| Some(((t + k * 3) as f64 * 0.3).sin() * 10.0))
                    .collect();
                d.tick(&v).unwrap();
                if t >= 40 && t % 4 == 0 {
                    losses.push(d.train_step().unwrap().unwrap());
                }
            }
            losses
        };
        let a = run();
        let first: f32 = a[..5].iter().sum::<f32>() / 5.0;
        let last: f32 = a[a.len() - 5..].iter().sum::<f32>() / 5.0;
        assert!(last < first * 0.7, "loss did not fall: {first} -> {last}");
        assert_eq!(a, run(), "same seed must give the same result");
    }

    #[test]
    fn a_new_fleet_of_smooth_periodic_series_raises_nothing_in_its_first_three_periods() {
        // 1 Hz samples; periods from 1 to 30 minutes, two phases and scales
        // each: a site that has just started must not flag its own cycles.
        let periods = [60.0, 120.0, 256.0, 300.0, 600.0, 900.0, 1200.0, 1800.0];
        let series: Vec<(f64, f64, f64, f64)> = periods
            .iter()
            .enumerate()
            .flat_map(|(k, &p)| [(p, 0.0, 10.0, 50.0), (p, 1.0 + k as f64, 0.5, 3.0)])
            .collect();
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        let mut worst = vec![0.0f32; series.len()];
        for t in 0..3 * 1800 {
            let row: Vec<Option<f64>> = series
                .iter()
                .map(|&(p, phase, amp, level)| {
                    let x = level + amp * (std::f64::consts::TAU * t as f64 / p + phase).sin();
                    ((t as f64) < 3.0 * p).then_some(x)
                })
                .collect();
            let s = d.tick(&row).unwrap();
            for (w, x) in worst.iter_mut().zip(&s.evidence) {
                *w = w.max(*x);
            }
        }
        let flagged: Vec<(f64, f32)> = series
            .iter()
            .zip(&worst)
            .filter(|(_, &w)| w >= d.config().threshold)
            .map(|(s, &w)| (s.0, w))
            .collect();
        assert!(flagged.is_empty(), "flagged (period, score): {flagged:?}");
    }

    /// Injects `fault` (the value during an episode of `len` samples, from
    /// the normal one) 5 times, 20 minutes apart at 1 Hz, into `normal`,
    /// and returns each episode's highest score.
    fn episode_scores(
        normal: impl Fn(usize) -> f64,
        fault: impl Fn(f64) -> f64,
        len: usize,
    ) -> Vec<f32> {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        let (start, every) = (1000usize, 1200usize);
        let mut best = vec![0.0f32; 5];
        for t in 0..start + 5 * every {
            let at = t.checked_sub(start).map(|o| (o / every, o % every));
            let x = match at {
                Some((_, o)) if o < len => fault(normal(t)),
                _ => normal(t),
            };
            let s = d.tick(&[Some(x)]).unwrap().scores[0];
            // Flagged within its first `level_for` (3) samples.
            if let Some((k, _)) = at.filter(|&(_, o)| o < len.min(3)) {
                best[k] = best[k].max(s);
            }
        }
        best
    }

    #[test]
    fn the_same_fault_five_times_is_flagged_five_times() {
        let noise = |t: usize| 100.0 + noisy(t);
        let latency = |t: usize| 0.05 + 0.005 * noisy(t);
        let threshold = DetectorConfig::default().threshold;
        let cases = [
            ("spike", episode_scores(noise, |x| x + 30.0, 1)),
            // 40 spreads (the spread's floor is 1% of the level): the
            // sustained rule's, every time.
            ("level shift", episode_scores(noise, |x| x + 40.0, 120)),
            // Ten minutes at an outage value, recovered, then again: the
            // outage must not have become the new normal.
            (
                "outage at 0 for 10 min",
                episode_scores(noise, |_| 0.0, 600),
            ),
            ("latency step", episode_scores(latency, |x| x * 10.0, 60)),
        ];
        let missed: Vec<_> = cases
            .iter()
            .filter(|(_, best)| best.iter().any(|&b| b < threshold))
            .collect();
        assert!(missed.is_empty(), "episode scores: {missed:?}");
    }

    #[test]
    fn an_alarm_is_held_back_after_onset_unless_a_stronger_one_follows() {
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        for t in 0..300 {
            d.tick(&[Some(100.0 + noisy(t))]).unwrap();
        }
        // A spike alarms; the same spike right after is held back, a far
        // larger one is not.
        let first = d.tick(&[Some(110.0)]).unwrap();
        assert!(first.scores[0] >= 0.95, "{first:?}");
        d.tick(&[Some(100.0)]).unwrap();
        let again = d.tick(&[Some(110.5)]).unwrap();
        assert!(again.scores[0] <= 0.5, "{again:?}");
        let cfg = DetectorConfig {
            refractory: 0,
            ..DetectorConfig::default()
        };
        let mut off = Detector::new(cfg).unwrap();
        for t in 0..300 {
            off.tick(&[Some(100.0 + noisy(t))]).unwrap();
        }
        off.tick(&[Some(110.0)]).unwrap();
        off.tick(&[Some(100.0)]).unwrap();
        let unheld = off.tick(&[Some(110.5)]).unwrap();
        assert_eq!(unheld.scores, unheld.evidence);
        assert!(unheld.scores[0] > 0.5, "{unheld:?}");
    }

    #[test]
    fn a_series_state_stays_under_a_kilobyte() {
        let cfg = DetectorConfig::default();
        let mut d = Detector::new(cfg.clone()).unwrap();
        for t in 0..200 {
            d.tick_at(&[Some(noisy(t))], &[t as i64 * 300]).unwrap();
        }
        let history = d.slots[0].history.capacity() * std::mem::size_of::<f32>();
        let lstm = 2 * cfg.hidden * std::mem::size_of::<f32>() + std::mem::size_of::<f32>();
        let bytes = std::mem::size_of::<Slot>() + history + lstm;
        assert!(bytes <= 1024, "{bytes} B a series");
        // The snapshot row holds the same state.
        assert!(d.row_state(0).unwrap().len() * 4 <= 1024);
    }

    #[test]
    fn rejects_bad_config_with_every_problem() {
        let cfg = DetectorConfig {
            hidden: 0,
            threshold: 2.0,
            train_window: 1,
            ..DetectorConfig::default()
        };
        let problems = cfg.validate();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(Detector::new(cfg).is_err());
    }
}
