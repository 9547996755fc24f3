//! The detection gate for entity models. The candidate models and the ones
//! in force score every entity's held-back rows, into which one synthetic
//! fault per entity without a confirmed incident is injected: a spike, a
//! level shift, several metrics shifting together, a change of pattern or a
//! flat line, in turn. They are judged as the univariate gate judges:
//! flags outside the faults, confirmed incidents caught, injected faults
//! found and how soon.

use super::{detection_refusals, Figures, GateConfig, Verdict};
use crate::entity::{EntityModel, EntityState};

/// The held-back rows of every entity of a kind, and confirmed incidents
/// as (entity, row).
#[derive(Clone, Debug, Default)]
pub struct EntityHoldout {
    /// Per entity, its rows (one value per metric), oldest first.
    pub rows: Vec<Vec<Vec<f64>>>,
    /// Confirmed incidents.
    pub events: Vec<(usize, usize)>,
}

/// The kinds of fault injected, in turn over the entities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntityFault {
    /// One metric, one row far out.
    Spike,
    /// One metric steps and holds.
    LevelShift,
    /// A third of the metrics (at least two) step together.
    Correlated,
    /// One metric's wiggle grows fourfold.
    Pattern,
    /// One metric stops moving.
    Flat,
}

impl EntityFault {
    const ALL: [EntityFault; 5] = [
        EntityFault::Spike,
        EntityFault::LevelShift,
        EntityFault::Correlated,
        EntityFault::Pattern,
        EntityFault::Flat,
    ];
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq)]
pub struct EntityInjected {
    /// Entity index.
    pub entity: usize,
    /// First faulty row.
    pub at: usize,
    /// Rows it lasts.
    pub len: usize,
    /// What it is.
    pub kind: EntityFault,
    /// The metrics it changes.
    pub metrics: Vec<usize>,
}

/// Rows after a fault that the flag rate leaves out.
const RECOVERY: usize = 10;

/// Fewest rows an entity needs to get a fault.
const MIN_ROWS: usize = 100;

/// Each metric's mean and spread over `rows`.
fn mean_sd(rows: &[Vec<f64>], k: usize) -> (f64, f64) {
    let n = rows.len().max(1) as f64;
    let mean = rows.iter().map(|r| r[k]).sum::<f64>() / n;
    let var = rows.iter().map(|r| (r[k] - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// `rows` with one fault in each entity long enough and not in `skip`, at
/// a fixed place in its second half, and where each fault is.
pub fn inject_entities(
    rows: &[Vec<Vec<f64>>],
    skip: &[usize],
) -> (Vec<Vec<Vec<f64>>>, Vec<EntityInjected>) {
    let mut out = rows.to_vec();
    let mut faults = Vec::new();
    for (e, r) in out.iter_mut().enumerate() {
        let (n, m) = (r.len(), r.first().map_or(0, Vec::len));
        if n < MIN_ROWS || m == 0 || skip.contains(&e) {
            continue;
        }
        let stats: Vec<(f64, f64)> = (0..m).map(|k| mean_sd(&r[..n / 2], k)).collect();
        // Metrics that move, starting from one that depends on the entity.
        let moving: Vec<usize> = (0..m)
            .map(|j| (e + j) % m)
            .filter(|&k| stats[k].1 > 1e-9)
            .collect();
        let Some(&first) = moving.first() else {
            continue;
        };
        let kind = EntityFault::ALL[faults.len() % EntityFault::ALL.len()];
        let metrics = match kind {
            EntityFault::Correlated => moving.iter().take((m / 3).max(2)).copied().collect(),
            _ => vec![first],
        };
        let at = n / 2 + (e * 37) % (n / 4);
        let len = match kind {
            EntityFault::Spike => 1,
            EntityFault::Flat => 30,
            _ => 20,
        }
        .min(n - at);
        for &k in &metrics {
            let (mean, sd) = stats[k];
            let held = r[at][k];
            for row in &mut r[at..at + len] {
                let v = &mut row[k];
                *v = match kind {
                    EntityFault::Spike => *v + 8.0 * sd,
                    EntityFault::LevelShift => *v + 6.0 * sd,
                    EntityFault::Correlated => *v + 4.0 * sd,
                    EntityFault::Pattern => mean + 4.0 * (*v - mean),
                    EntityFault::Flat => held,
                };
            }
        }
        faults.push(EntityInjected {
            entity: e,
            at,
            len,
            kind,
            metrics,
        });
    }
    (out, faults)
}

/// Scores every entity's rows with its model from a fresh state and counts
/// as [`Figures`] (no forecast loss: the entity model's forecast is not
/// what it is judged on).
fn figures(
    models: &[EntityModel],
    rows: &[Vec<Vec<f64>>],
    faults: &[EntityInjected],
    events: &[(usize, usize)],
    lookback: usize,
) -> Figures {
    // A fault's end is a move too (the value falls back): the rows just
    // after it are not judged as false alarms.
    let mut window = vec![0..0; rows.len()];
    for f in faults {
        window[f.entity] = f.at..f.at + f.len + RECOVERY;
    }
    let (mut scored, mut flagged) = (0u64, 0u64);
    let flags: Vec<Vec<bool>> = models
        .iter()
        .zip(rows)
        .enumerate()
        .map(|(e, (model, r))| {
            let mut state = EntityState::default();
            r.iter()
                .enumerate()
                .map(|(t, row)| {
                    let f = model.step(&mut state, row).score >= model.threshold();
                    if !window[e].contains(&t) {
                        scored += 1;
                        flagged += u64::from(f);
                    }
                    f
                })
                .collect()
        })
        .collect();
    let faults: Vec<(usize, usize, usize)> =
        faults.iter().map(|f| (f.entity, f.at, f.len)).collect();
    Figures::counted(&flags, &faults, events, lookback, (scored, flagged))
}

/// One set of models' figures on `holdout` with its injected faults.
pub fn entity_figures(
    models: &[EntityModel],
    holdout: &EntityHoldout,
    cfg: &GateConfig,
) -> Figures {
    let incident: Vec<usize> = holdout.events.iter().map(|&(e, _)| e).collect();
    let (rows, faults) = if cfg.inject {
        inject_entities(&holdout.rows, &incident)
    } else {
        (holdout.rows.clone(), Vec::new())
    };
    figures(models, &rows, &faults, &holdout.events, cfg.event_lookback)
}

/// Judges the `candidate` models against the `current` ones (one per
/// entity of `holdout`, in the same order).
pub fn judge_entities(
    current: &[EntityModel],
    candidate: &[EntityModel],
    holdout: &EntityHoldout,
    cfg: &GateConfig,
) -> Result<Verdict, String> {
    let n = holdout.rows.len();
    if current.len() != n || candidate.len() != n {
        return Err(format!(
            "{} current and {} candidate models for {n} entities",
            current.len(),
            candidate.len()
        ));
    }
    let incident: Vec<usize> = holdout.events.iter().map(|&(e, _)| e).collect();
    let (rows, faults) = if cfg.inject {
        inject_entities(&holdout.rows, &incident)
    } else {
        (holdout.rows.clone(), Vec::new())
    };
    let lookback = cfg.event_lookback;
    let cur = figures(current, &rows, &faults, &holdout.events, lookback);
    let cand = figures(candidate, &rows, &faults, &holdout.events, lookback);
    let refusals = detection_refusals(&cur, &cand, holdout.events.len(), cfg);
    Ok(Verdict::of(refusals, cur, cand, holdout.events.len()))
}

#[cfg(test)]
mod tests;
