//! One machine through the entity model: fitted on its training rows, then
//! scoring its test rows as one entity.

use super::{MachineRun, Rows};
use crate::entity::lstm::{EntityLstm, LstmState};
use crate::entity::{EntityConfig, EntityModel, EntityState};

/// Fits an entity model on `train` and scores `test`; the threshold is the
/// model's own (peaks over threshold on its training scores).
pub fn run_machine_entity(
    cfg: &EntityConfig,
    train: &Rows,
    test: &Rows,
    mut progress: impl FnMut(usize),
) -> Result<MachineRun, String> {
    let model = EntityModel::fit(train, cfg.clone())?;
    progress(train.len());
    let mut state = EntityState::default();
    // The state runs through training first, as it would have in service.
    for row in train.iter().rev().take(50).rev() {
        model.step(&mut state, row);
    }
    let mut run = MachineRun {
        threshold: model.threshold() as f32,
        scores: Vec::with_capacity(test.len()),
        top: Vec::with_capacity(test.len()),
        evidence: Vec::with_capacity(test.len()),
    };
    for row in test {
        let s = model.step(&mut state, row);
        push(&mut run, &s);
        progress(1);
    }
    Ok(run)
}

/// How the kind's LSTM forecaster is trained for the evaluation.
#[derive(Clone, Debug)]
pub struct LstmPlan {
    /// Hidden units.
    pub hidden: usize,
    /// Windows, batch, epochs, seed.
    pub plan: crate::training::Plan,
    /// AdamW learning rate.
    pub lr: f64,
}

impl Default for LstmPlan {
    fn default() -> Self {
        Self {
            hidden: 32,
            plan: crate::training::Plan {
                epochs: 2.0,
                batch: 64,
                window: 32,
                seed: 7,
            },
            lr: 3e-3,
        }
    }
}

/// Every machine as one entity of one kind: the kind's LSTM trained on all
/// their training rows (each normalised by its own level and spread), then
/// each machine calibrated on its training rows with the LSTM's forecasts
/// and scoring its test rows.
pub fn run_kind_lstm(
    cfg: &EntityConfig,
    plan: &LstmPlan,
    machines: &[(&Rows, &Rows)],
    mut progress: impl FnMut(&str),
) -> Result<Vec<MachineRun>, String> {
    let mut models = machines
        .iter()
        .map(|(train, _)| EntityModel::prepare(train, cfg.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let m = machines.first().map_or(0, |(t, _)| t[0].len());
    let normalised: Vec<Vec<Vec<f32>>> = machines
        .iter()
        .zip(&models)
        .map(|((train, _), model)| {
            // The first half trains, the second calibrates: error scales
            // from rows the LSTM has seen would be too small.
            train[..train.len() / 2]
                .iter()
                .map(|r| {
                    let mut z = Vec::with_capacity(m);
                    model.normalise(r, &mut z);
                    z
                })
                .collect()
        })
        .collect();
    let mut lstm = EntityLstm::new(m, plan.hidden, plan.plan.seed).map_err(|e| e.to_string())?;
    let loss = lstm
        .fit(&normalised, &plan.plan, plan.lr, |s, n, l| {
            if s % 50 == 0 || s == n {
                progress(&format!("training step {s}/{n} loss {l:.4}"));
            }
        })
        .map_err(|e| e.to_string())?;
    progress(&format!("trained; last epoch's loss {loss:?}"));
    let mut runs = Vec::new();
    for ((train, test), model) in machines.iter().zip(models.iter_mut()) {
        let mut st = LstmState::new(1, plan.hidden);
        let mut f = forecasts(&mut lstm, model, &mut st, train, None).map_err(|e| e.to_string())?;
        // The forecast past the last training row is the first test row's.
        let first = f.pop().flatten();
        model.calibrate(train, &f);
        let mut state = EntityState::default();
        let mut run = MachineRun {
            threshold: model.threshold() as f32,
            scores: Vec::with_capacity(test.len()),
            top: Vec::with_capacity(test.len()),
            evidence: Vec::with_capacity(test.len()),
        };
        let mut next =
            forecasts(&mut lstm, model, &mut st, test, first).map_err(|e| e.to_string())?;
        for (row, f) in test.iter().zip(next.iter_mut()) {
            state.next = f.take();
            let s = model.step(&mut state, row);
            push(&mut run, &s);
        }
        runs.push(run);
        progress("scored a machine");
    }
    Ok(runs)
}

/// The LSTM's forecast of each of `rows` (`first` for the first) and of
/// the row after them, raw units.
fn forecasts(
    lstm: &mut EntityLstm,
    model: &EntityModel,
    st: &mut LstmState,
    rows: &Rows,
    first: Option<Vec<f64>>,
) -> candle_core::Result<Vec<Option<Vec<f64>>>> {
    let mut out = vec![first];
    let (mut z, mut f) = (Vec::new(), Vec::new());
    for r in rows {
        z.clear();
        model.normalise(r, &mut z);
        lstm.step(st, &z, &mut f)?;
        out.push(Some(model.denormalise(&f)));
    }
    Ok(out)
}

fn push(run: &mut MachineRun, s: &crate::entity::EntityScore) {
    let top = (0..s.metrics.len())
        .max_by(|&a, &b| s.metrics[a].total_cmp(&s.metrics[b]))
        .unwrap_or(0);
    run.scores.push(s.score as f32);
    run.top.push(top);
    run.evidence
        .push(s.metrics.iter().map(|&v| v as f32).collect());
}
