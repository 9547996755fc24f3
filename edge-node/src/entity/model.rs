//! The entity model at the edge: every entity's metrics scored together
//! (`vigil_models::entity`). Each entity learns from its own rows: once it
//! has `fit_rows` of them it fits normalisation, principal subspace, error
//! scales and a threshold without labels, and refits on the latest rows
//! every `refit_rows`. Rows taken while the entity is in an anomaly episode
//! are not learnt (an outage is not normal). Models the cloud trained on
//! the fleet's longer history and passed at its detection gate arrive in
//! the model bundle: an entity with the same metrics takes its cloud model
//! and keeps it over its own fits until a rollback. The verdict is the entity's
//! score over its threshold (1: the alarm level) and its top metrics with
//! their shares of the evidence: the root cause.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use vigil_core::message::MetricShare;
use vigil_core::EntityId;
use vigil_models::entity::{EntityConfig, EntityModel, EntitySet, EntityState};

/// Metrics named in a verdict.
const ROOT_CAUSE: usize = 3;

/// Settings of the entity model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntityModelConfig {
    /// Score entities with it at all.
    pub enabled: bool,
    /// Rows (ticks) an entity needs before its first fit.
    pub fit_rows: usize,
    /// New normal rows between refits (each on the latest `fit_rows`).
    pub refit_rows: usize,
    /// Probability that a normal row exceeds the threshold (peaks over
    /// threshold on the training scores). At 1 Hz, 1e-5 is about one
    /// false row a day per entity.
    pub risk: f64,
    /// Entities with more metrics are not modelled (counted).
    pub max_metrics: usize,
    /// Bound on the rows kept for fitting, all entities together; an
    /// entity that would pass it is not modelled (counted).
    pub max_bytes: usize,
}

impl Default for EntityModelConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            fit_rows: 1800,
            refit_rows: 3600,
            risk: 1e-5,
            max_metrics: 64,
            max_bytes: 64 << 20,
        }
    }
}

impl EntityModelConfig {
    /// Every problem with the settings, prefixed `entity_model.`.
    pub fn validate(&self, e: &mut Vec<String>) {
        if !(100..=100_000).contains(&self.fit_rows) {
            e.push(format!(
                "entity_model.fit_rows: {} is outside 100..=100000",
                self.fit_rows
            ));
        }
        if self.refit_rows == 0 {
            e.push("entity_model.refit_rows: must be positive".into());
        }
        if !(self.risk > 0.0 && self.risk < 0.1) {
            e.push(format!(
                "entity_model.risk: {} is outside (0, 0.1)",
                self.risk
            ));
        }
        if !(2..=1024).contains(&self.max_metrics) {
            e.push(format!(
                "entity_model.max_metrics: {} is outside 2..=1024",
                self.max_metrics
            ));
        }
    }
}

/// What the entity model says about one entity this tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Score over threshold: at or above 1 is anomalous.
    pub score: f64,
    /// Its top metrics, highest first, with their shares of their evidence.
    pub root_cause: Vec<MetricShare>,
}

/// One entity's newest values this tick, by metric.
#[derive(Clone, Debug)]
pub struct EntityRow {
    /// The entity.
    pub entity: EntityId,
    /// Metric name and newest value.
    pub values: Vec<(String, f64)>,
}

/// One entity's rows, model and state.
#[derive(Debug, Default)]
struct Slot {
    /// Metric names, sorted: the row's columns.
    metrics: Vec<String>,
    /// Latest value of each metric (held while a metric skips a tick).
    last: Vec<f64>,
    rows: VecDeque<Vec<f32>>,
    model: Option<EntityModel>,
    /// The model came from the cloud (local fits do not replace it).
    from_cloud: bool,
    state: EntityState,
    since_fit: usize,
}

impl Slot {
    fn bytes(&self) -> usize {
        self.rows.len() * self.metrics.len() * 4
    }
}

/// What a tick of the entity models did, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Entities with a fitted model.
    pub fitted: usize,
    /// ...of which the cloud's.
    pub from_cloud: usize,
    /// Fits this tick.
    pub fits: usize,
    /// Entities refused this tick (too many metrics, or over `max_bytes`).
    pub refused: usize,
    /// Bytes of rows kept.
    pub bytes: usize,
}

/// Every entity's model.
#[derive(Debug, Default)]
pub struct EntityModels {
    cfg: EntityModelConfig,
    slots: HashMap<EntityId, Slot>,
    bytes: usize,
    /// The cloud's models for this site, by entity: (metrics, model).
    cloud: HashMap<String, (Vec<String>, EntityModel)>,
}

impl EntityModels {
    /// Empty, with `cfg`.
    pub fn new(cfg: EntityModelConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    /// Scores and learns one row per entity in `rows`; entities in
    /// `episode` are scored but not learnt from. Entities absent from
    /// `rows` for good are dropped with [`Self::retain`].
    pub fn step(
        &mut self,
        rows: &[EntityRow],
        episode: &BTreeSet<EntityId>,
    ) -> (BTreeMap<EntityId, Verdict>, Tally) {
        let mut out = BTreeMap::new();
        let mut tally = Tally::default();
        if !self.cfg.enabled {
            return (out, tally);
        }
        for row in rows {
            if row.values.len() > self.cfg.max_metrics {
                tally.refused += 1;
                continue;
            }
            let learn = !episode.contains(&row.entity);
            if let Some(v) = self.step_one(row, learn, &mut tally) {
                out.insert(row.entity.clone(), v);
            }
        }
        tally.fitted = self.slots.values().filter(|s| s.model.is_some()).count();
        tally.from_cloud = self.slots.values().filter(|s| s.from_cloud).count();
        tally.bytes = self.bytes;
        (out, tally)
    }

    /// Installs the cloud's models for `site` (none: forget them and go
    /// back to each entity's own fits). Returns how many this site got.
    pub fn install(&mut self, site: &str, set: Option<&EntitySet>) -> usize {
        self.cloud = set
            .into_iter()
            .flat_map(|s| &s.entries)
            .filter(|e| e.site == site)
            .map(|e| (e.entity.clone(), (e.metrics.clone(), e.model.clone())))
            .collect();
        let refit = self.cfg.refit_rows;
        for (id, slot) in self.slots.iter_mut() {
            adopt(slot, self.cloud.get(id.as_str()), refit);
        }
        self.cloud.len()
    }

    /// Forgets entities not in `keep` (gone from the cache).
    pub fn retain(&mut self, keep: impl Fn(&EntityId) -> bool) {
        let mut freed = 0;
        self.slots.retain(|id, s| {
            let k = keep(id);
            if !k {
                freed += s.bytes();
            }
            k
        });
        self.bytes -= freed;
    }

    fn step_one(&mut self, row: &EntityRow, learn: bool, tally: &mut Tally) -> Option<Verdict> {
        let Self {
            cfg,
            slots,
            bytes,
            cloud,
        } = self;
        let slot = slots.entry(row.entity.clone()).or_default();
        // A new metric: the columns change, so the entity starts over.
        if row
            .values
            .iter()
            .any(|(m, _)| slot.metrics.binary_search(m).is_err())
        {
            let mut names: BTreeSet<String> = slot.metrics.iter().cloned().collect();
            names.extend(row.values.iter().map(|(m, _)| m.clone()));
            *bytes -= slot.bytes();
            *slot = Slot {
                last: vec![f64::NAN; names.len()],
                metrics: names.into_iter().collect(),
                ..Slot::default()
            };
            adopt(slot, cloud.get(row.entity.as_str()), cfg.refit_rows);
        }
        for (m, v) in &row.values {
            if let Ok(k) = slot.metrics.binary_search(m) {
                slot.last[k] = *v;
            }
        }
        if slot.last.iter().any(|v| !v.is_finite()) {
            return None; // a metric has not reported yet
        }
        let verdict = slot.model.as_ref().map(|model| {
            let s = model.step(&mut slot.state, &slot.last);
            Verdict {
                score: s.score / model.threshold(),
                root_cause: root_cause(&slot.metrics, &s.metrics),
            }
        });
        if learn {
            let row_bytes = slot.metrics.len() * 4;
            let full = slot.rows.len() >= cfg.fit_rows;
            if !full && *bytes + row_bytes > cfg.max_bytes {
                tally.refused += 1;
                return verdict;
            }
            if full {
                slot.rows.pop_front();
            } else {
                *bytes += row_bytes;
            }
            slot.rows
                .push_back(slot.last.iter().map(|&v| v as f32).collect());
            slot.since_fit += 1;
            let due = slot.model.is_none() || slot.since_fit >= cfg.refit_rows;
            if slot.rows.len() >= cfg.fit_rows && due && !slot.from_cloud {
                fit(slot, cfg);
                tally.fits += 1;
            }
        }
        verdict
    }
}

/// Gives `slot` the cloud's model when its metrics are the same; takes a
/// cloud model away when there is none now (the next normal row refits).
fn adopt(slot: &mut Slot, cloud: Option<&(Vec<String>, EntityModel)>, refit: usize) {
    match cloud.filter(|(m, _)| *m == slot.metrics) {
        Some((_, model)) => {
            slot.model = Some(model.clone());
            slot.from_cloud = true;
            slot.state = EntityState::default();
        }
        None if slot.from_cloud => {
            slot.model = None;
            slot.from_cloud = false;
            slot.state = EntityState::default();
            slot.since_fit = refit;
        }
        None => {}
    }
}

/// Fits `slot`'s model on its rows; keeps the old model if the fit fails.
fn fit(slot: &mut Slot, cfg: &EntityModelConfig) {
    let train: Vec<Vec<f64>> = slot
        .rows
        .iter()
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect();
    let mut ec = EntityConfig::default();
    ec.pot.risk = cfg.risk;
    if let Ok(m) = EntityModel::fit(&train, ec) {
        slot.model = Some(m);
        slot.since_fit = 0;
    }
}

/// The top metrics by evidence, with their shares of the listed evidence.
fn root_cause(metrics: &[String], evidence: &[f64]) -> Vec<MetricShare> {
    let mut order: Vec<usize> = (0..evidence.len()).collect();
    order.sort_by(|&a, &b| evidence[b].total_cmp(&evidence[a]));
    order.truncate(ROOT_CAUSE);
    shares(
        order
            .into_iter()
            .map(|k| (metrics[k].as_str(), evidence[k])),
    )
}

/// Each metric's share of the listed evidence (negative evidence counts
/// as none; all shares 0 when there is none).
pub(crate) fn shares<'a>(listed: impl Iterator<Item = (&'a str, f64)> + Clone) -> Vec<MetricShare> {
    let total: f64 = listed.clone().map(|(_, e)| e.max(0.0)).sum();
    listed
        .map(|(metric, e)| MetricShare {
            metric: metric.to_string(),
            share: if total > 0.0 { e.max(0.0) / total } else { 0.0 },
        })
        .collect()
}

#[cfg(test)]
mod tests;
