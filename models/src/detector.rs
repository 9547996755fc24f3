//! The detector: scores every series each tick in one batched LSTM step.
//!
//! Per series it keeps a [`Baseline`] (level and spread, which normalise the
//! LSTM's input), a [`Novelty`] and a [`Season`]; the evidence in [0, 1] is
//! the largest of
//! - novelty: the value or its smoothed value leaves the range the series
//!   has kept, or the LSTM's forecast error beats its recent peak (judged
//!   against the series' own past, so one threshold fits every series);
//! - the seasonal record: a residual from the series' time-of-day profile
//!   beats its recent peak;
//! - a sustained far deviation: at least `level_z` spreads from the
//!   baseline for `level_for` samples, mapped by `1 - exp(-(z / z_scale)²)`
//!   (a dead process or hung service alarms every time, not only the first).
//!
//! The score is the evidence held back for a refractory period after each
//! alarm. See docs/detector.md for why, and the NAB and SMD figures.
//!
//! Here: the tick. Beside it: the settings (`config`), a series' state as
//! snapshot words (`rows`), the weights and the fused cell (`weights`),
//! the refractory period (`refractory`), the seasonal-naive ablation's
//! forecast (`day_ago`), and learning (`train`): the LSTM learns online
//! from recent windows every `train_every_ticks`.

use crate::ablation::Ablation;
use crate::baseline::{Baseline, BaselineRates};
use crate::forecaster::{Forecaster, ForecasterConfig};
use crate::fused::FusedLstm;
use crate::novelty::{Novelty, NoveltyRates};
use crate::season::Season;
use crate::ModelError;
use candle_core::{DType, Device};
use candle_nn::{AdamW, VarBuilder, VarMap};
use rand::{rngs::StdRng, SeedableRng};
use std::collections::VecDeque;

mod config;
mod day_ago;
mod refractory;
mod rows;
#[cfg(test)]
mod tests;
mod train;
pub(crate) mod weights;

pub use config::DetectorConfig;
use day_ago::DayAgo;
use refractory::hold_back;
use train::adamw;
use weights::{inference_cell, seed_weights};

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
    /// The seasonal-naive ablation's day of samples (none otherwise).
    day_ago: Option<Box<DayAgo>>,
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
            day_ago: None,
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
        let parts = self.parts();
        for i in 0..n {
            inputs[i] = self.slots[i].last_input;
            let Some(v) = values.get(i).copied().flatten().filter(|v| v.is_finite()) else {
                continue;
            };
            let (score, raw, u) = self.score_slot(i, v as f32, times.get(i).copied(), &parts);
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

    /// The parts the ablation in force leaves on, for one tick.
    fn parts(&self) -> Parts {
        let a = self.ablation;
        Parts {
            novelty: NoveltyRates {
                learn: self.cfg.novelty_learn,
                peak_decay: self.cfg.novelty_peak_decay,
                on: [
                    a != Ablation::NoRange,
                    a != Ablation::NoSmoothedRange,
                    a != Ablation::NoForecastRecord,
                ],
                line_gate: a != Ablation::NoLineGate,
            },
            season: a != Ablation::NoSeason,
            sustained: a != Ablation::NoSustained,
            refractory: if a == Ablation::NoRefractory {
                0
            } else {
                self.cfg.refractory
            },
        }
    }

    /// Scores series `i`'s new value `x` (sampled at `t`, unix seconds, when
    /// known) and learns it: (score, evidence, normalised input).
    fn score_slot(&mut self, i: usize, x: f32, t: Option<i64>, parts: &Parts) -> (f32, f32, f32) {
        let slot = &self.slots[i];
        let u = slot.base.normalise(x, &self.rates);
        let warm = slot.base.count >= self.cfg.warmup_samples;
        let lz = slot.base.level_z(x, &self.rates);
        let scale = slot.base.scale(&self.rates);
        // The forecast was made in the normalisation this baseline still holds.
        let mut predicted = slot.base.mean + self.forecast[i] * scale;
        let slot = &mut self.slots[i];
        if let (Ablation::SeasonalNaive, Some(t)) = (self.ablation, t) {
            let day = slot.day_ago.get_or_insert_with(Default::default);
            predicted = day.forecast(t).unwrap_or(x);
            day.push(t, x);
        }
        let novelty = slot
            .novelty
            .update(x, (x - predicted).abs(), &parts.novelty);
        let season = match t {
            Some(t) if parts.season => slot.season.update(x, t, scale),
            _ => 0.0,
        };
        let far = parts.sustained && self.cfg.level_z > 0.0 && lz >= self.cfg.level_z;
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
            (
                raw,
                hold_back(slot, raw, parts.refractory, self.cfg.threshold),
            )
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
        (score, raw, u)
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
                // Seasonal-naive falls back to persistence without times.
                let naive = matches!(
                    self.ablation,
                    Ablation::Persistence | Ablation::SeasonalNaive
                );
                self.forecast[i] = if naive {
                    inputs[i]
                } else {
                    inputs[i] + delta + self.head_b
                };
            }
        }
        Ok(())
    }
}

/// What the ablation in force leaves on, for one tick.
struct Parts {
    novelty: NoveltyRates,
    season: bool,
    sustained: bool,
    refractory: u32,
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
