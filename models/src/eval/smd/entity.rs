//! One machine through the entity model: fitted on its training rows, then
//! scoring its test rows as one entity.

use super::{MachineRun, Rows};
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
        let top = (0..s.metrics.len())
            .max_by(|&a, &b| s.metrics[a].total_cmp(&s.metrics[b]))
            .unwrap_or(0);
        run.scores.push(s.score as f32);
        run.top.push(top);
        run.evidence
            .push(s.metrics.iter().map(|&v| v as f32).collect());
        progress(1);
    }
    Ok(run)
}
