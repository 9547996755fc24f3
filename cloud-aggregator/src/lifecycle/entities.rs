//! Entity models from the store. Each entity's series, read by polars
//! (`dataset::load`), are aligned into rows one `step_ms` apart (a metric
//! that skips a step keeps its last value); each entity's model is fitted
//! on its rows before the cut, leaving out the rows around confirmed
//! incidents (an outage is not normal), and the candidates are judged on
//! the held-back rows at the detection gate against the entity models in
//! force (`vigil_models::gate::entity`).

use super::dataset::{Dataset, Key};
use serde::{Deserialize, Serialize};
use vigil_models::entity::{EntityConfig, EntityEntry, EntityModel, EntitySet};
use vigil_models::gate::entity::{entity_figures, judge_entities, EntityHoldout};
use vigil_models::gate::{GateConfig, Refusal, Rule, Verdict};

/// Entity model retraining settings (`models.train.entities`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntityTrainConfig {
    /// Train entity models at all.
    pub enabled: bool,
    /// Rows one this many ms apart (the edges' tick).
    pub step_ms: i64,
    /// Most recent rows kept per entity (8 bytes a value).
    pub max_rows: usize,
    /// Bound on the rows of all entities together; entities past it get
    /// no model this run (counted in the run's `entities_skipped`).
    pub max_bytes: usize,
    /// Fewest training rows an entity needs.
    pub min_rows: usize,
    /// Rows left out of training from this long before a confirmed
    /// incident's onset to `incident_after_secs` after it.
    pub incident_before_secs: i64,
    /// See `incident_before_secs`.
    pub incident_after_secs: i64,
    /// Probability that a normal row passes an entity's threshold.
    pub risk: f64,
}

impl Default for EntityTrainConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            step_ms: 1000,
            max_rows: 50_000,
            max_bytes: 256 << 20,
            min_rows: 600,
            incident_before_secs: 60,
            incident_after_secs: 600,
            risk: 1e-5,
        }
    }
}

impl EntityTrainConfig {
    /// Every problem with the settings.
    pub fn validate(&self, e: &mut Vec<String>) {
        if self.step_ms <= 0 {
            e.push("models.train.entities.step_ms: must be positive".into());
        }
        if self.min_rows < 100 || self.max_rows < self.min_rows {
            e.push(format!(
                "models.train.entities: min_rows {} must be at least 100 and at most max_rows {}",
                self.min_rows, self.max_rows
            ));
        }
        if !(self.risk > 0.0 && self.risk < 0.1) {
            e.push(format!(
                "models.train.entities.risk: {} is outside (0, 0.1)",
                self.risk
            ));
        }
    }
}

/// One entity's aligned rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows {
    /// Site.
    pub site: String,
    /// Entity.
    pub entity: String,
    /// Metric names, sorted: the columns.
    pub metrics: Vec<String>,
    /// Each row's time, Unix ms (the start of its step).
    pub ts: Vec<i64>,
    /// The rows.
    pub rows: Vec<Vec<f64>>,
}

/// Aligns each entity's series (sorted by site, entity, metric, as
/// `dataset::load` returns them) into rows `step_ms` apart, from the first
/// step where every metric has a value; at most the last `max_rows`, and
/// at most `max_bytes` for all entities (the rest skipped). Returns the
/// rows and how many entities were skipped.
pub fn rows(
    ds: &Dataset,
    step_ms: i64,
    (max_rows, max_bytes): (usize, usize),
) -> (Vec<Rows>, usize) {
    let (mut out, mut bytes, mut skipped) = (Vec::new(), 0usize, 0usize);
    let mut start = 0;
    while start < ds.series.len() {
        let (site, entity) = (&ds.series[start].key.0, &ds.series[start].key.1);
        let end = start
            + ds.series[start..]
                .iter()
                .take_while(|s| &s.key.0 == site && &s.key.1 == entity)
                .count();
        let group = &ds.series[start..end];
        start = end;
        let Some(first) = group.iter().filter_map(|s| s.ts.first()).max() else {
            continue;
        };
        let last = group
            .iter()
            .filter_map(|s| s.ts.last())
            .max()
            .copied()
            .unwrap_or(*first);
        let (from, to) = (first.div_euclid(step_ms), last.div_euclid(step_ms));
        let from = from.max(to - max_rows as i64 + 1);
        let need = (to - from + 1).max(0) as usize * group.len() * 8;
        if bytes + need > max_bytes {
            skipped += 1;
            continue;
        }
        bytes += need;
        let mut r = Rows {
            site: site.clone(),
            entity: entity.clone(),
            metrics: group.iter().map(|s| s.key.2.clone()).collect(),
            ..Rows::default()
        };
        let mut at = vec![0usize; group.len()];
        for b in from..=to {
            let row = group
                .iter()
                .zip(at.iter_mut())
                .map(|(s, i)| {
                    // The last value at or before the end of step `b`.
                    while *i + 1 < s.ts.len() && s.ts[*i + 1].div_euclid(step_ms) <= b {
                        *i += 1;
                    }
                    s.values[*i]
                })
                .collect();
            r.ts.push(b * step_ms);
            r.rows.push(row);
        }
        out.push(r);
    }
    (out, skipped)
}

/// What an entity retraining produced.
#[derive(Clone, Debug, Default)]
pub struct EntityRun {
    /// The candidate models.
    pub set: EntitySet,
    /// The gate's verdict on them.
    pub verdict: Verdict,
    /// Entities left out for the byte bound.
    pub skipped: usize,
}

/// Fits a candidate per entity with enough rows before `cut_ms` and judges
/// them on the rows after it: against `current`'s model where it has one
/// for the same metrics; a model for a new entity must stay under the
/// gate's flag-rate margin on its own.
pub fn train(
    all: &[Rows],
    incidents: &[(Key, i64)],
    cut_ms: i64,
    cfg: &EntityTrainConfig,
    gate: &GateConfig,
    current: Option<&EntitySet>,
) -> EntityRun {
    let mut ecfg = EntityConfig::default();
    ecfg.pot.risk = cfg.risk;
    let mut set = EntitySet::default();
    let (mut paired, mut new) = (Paired::default(), Paired::default());
    for r in all {
        let split = r.ts.partition_point(|&t| t < cut_ms);
        let onsets: Vec<i64> = incidents
            .iter()
            .filter(|(k, _)| k.0 == r.site && k.1 == r.entity)
            .map(|(_, t)| *t)
            .collect();
        let (before, after) = (
            cfg.incident_before_secs * 1000,
            cfg.incident_after_secs * 1000,
        );
        let normal: Vec<Vec<f64>> = (0..split)
            .filter(|&i| {
                !onsets
                    .iter()
                    .any(|&o| (o - before..=o + after).contains(&r.ts[i]))
            })
            .map(|i| r.rows[i].clone())
            .collect();
        if normal.len() < cfg.min_rows {
            continue;
        }
        let Ok(model) = EntityModel::fit(&normal, ecfg.clone()) else {
            continue;
        };
        let held: Vec<Vec<f64>> = r.rows[split..].to_vec();
        let events: Vec<usize> = onsets
            .iter()
            .filter(|&&o| o >= cut_ms)
            .map(|&o| r.ts[split..].partition_point(|&t| t < o))
            .filter(|&i| i < held.len())
            .collect();
        let cur = current
            .and_then(|c| c.get(&r.site, &r.entity))
            .filter(|c| c.metrics == r.metrics)
            .map(|c| c.model.clone());
        let side = if cur.is_some() { &mut paired } else { &mut new };
        side.add(cur, model.clone(), held, events);
        set.entries.push(EntityEntry {
            site: r.site.clone(),
            entity: r.entity.clone(),
            metrics: r.metrics.clone(),
            model,
        });
    }
    set.sort();
    EntityRun {
        verdict: verdict(&paired, &new, gate),
        set,
        skipped: 0,
    }
}

/// The held-back rows of some entities with their current and candidate
/// models.
#[derive(Default)]
struct Paired {
    current: Vec<EntityModel>,
    candidate: Vec<EntityModel>,
    holdout: EntityHoldout,
}

impl Paired {
    fn add(
        &mut self,
        cur: Option<EntityModel>,
        cand: EntityModel,
        rows: Vec<Vec<f64>>,
        events: Vec<usize>,
    ) {
        let e = self.holdout.rows.len();
        self.holdout
            .events
            .extend(events.into_iter().map(|t| (e, t)));
        self.holdout.rows.push(rows);
        self.current.push(cur.unwrap_or_else(|| cand.clone()));
        self.candidate.push(cand);
    }
}

/// Entities with a model in force are judged against it; new ones on their
/// own flag rate. The verdict's figures cover both (a new entity counts as
/// its own model in force).
fn verdict(paired: &Paired, new: &Paired, gate: &GateConfig) -> Verdict {
    let mut v = match judge_entities(&paired.current, &paired.candidate, &paired.holdout, gate) {
        Ok(v) => v,
        Err(e) => {
            let r = Refusal {
                rule: Rule::FlagRate,
                candidate: 0.0,
                current: 0.0,
                reason: format!("entity models: {e}"),
            };
            return Verdict::of(vec![r], Default::default(), Default::default(), 0);
        }
    };
    let alone = entity_figures(&new.candidate, &new.holdout, gate);
    let (current, candidate) = (v.current.merge(&alone), v.candidate.merge(&alone));
    if alone.flag_rate > gate.flag_rate_margin {
        let r = Refusal {
            rule: Rule::FlagRate,
            candidate: alone.flag_rate,
            current: gate.flag_rate_margin,
            reason: format!(
                "the new entities' models flag {:.2}% of held-back rows, above the gate's margin of {:.2}%",
                alone.flag_rate * 100.0,
                gate.flag_rate_margin * 100.0
            ),
        };
        v.refusals.push(r);
    }
    let events = v.events + new.holdout.events.len();
    Verdict::of(v.refusals, current, candidate, events)
}

#[cfg(test)]
mod tests;
