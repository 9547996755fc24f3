//! One retraining run: read the fleet's data (polars), split off the most
//! recent share as the held-back window, train the current model further on
//! the rest (candle), and judge the candidate against the current model at
//! the gate. Blocking: run it on a blocking thread.

use super::dataset::{self, Key, Query};
use super::entities::{self, EntityRun, EntityTrainConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use vigil_models::bundle::Training;
use vigil_models::entity::EntitySet;
use vigil_models::gate::{self, GateConfig, Holdout, Verdict};
use vigil_models::training::{fit, normalise, Plan};
use vigil_models::{Detector, ModelError};

/// Retraining settings (`models.train` in the cloud config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Train on the last this many hours of samples.
    pub hours: f64,
    /// Sites to train on (empty: all).
    pub sites: Vec<String>,
    /// Entity kinds to train on, e.g. `host`, `service`, `sensor` (empty: all).
    pub kinds: Vec<String>,
    /// Most recent share of the time range held back for the gate.
    pub holdout_share: f64,
    /// Passes over the training windows.
    pub epochs: f32,
    /// Windows per step.
    pub batch: usize,
    /// Refuse to train on fewer samples.
    pub min_samples: u64,
    /// The evaluation gate.
    pub gate: GateConfig,
    /// Entity models: all of an entity's metrics together.
    pub entities: EntityTrainConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            hours: 24.0,
            sites: Vec::new(),
            kinds: Vec::new(),
            holdout_share: 0.2,
            epochs: 1.0,
            batch: 256,
            min_samples: 2000,
            gate: GateConfig::default(),
            entities: EntityTrainConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Every problem with the settings.
    pub fn validate(&self, e: &mut Vec<String>) {
        if self.hours.is_nan() || self.hours <= 0.0 {
            e.push(format!(
                "models.train.hours: {} must be positive",
                self.hours
            ));
        }
        if !(self.holdout_share > 0.0 && self.holdout_share < 1.0) {
            e.push(format!(
                "models.train.holdout_share: {} is outside (0, 1)",
                self.holdout_share
            ));
        }
        if self.epochs.is_nan() || self.epochs <= 0.0 || self.batch == 0 {
            e.push("models.train.epochs and models.train.batch must be positive".into());
        }
        self.entities.validate(e);
    }
}

/// Where a run is (also what the API shows).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Progress {
    /// `idle`, `loading`, `training`, `gating`, `done`, `failed`.
    pub state: String,
    /// Steps done.
    pub step: usize,
    /// Steps planned.
    pub steps: usize,
    /// Loss of the latest step.
    pub loss: Option<f32>,
    /// Samples read.
    pub samples: u64,
    /// Started, Unix ms.
    pub started_ms: i64,
    /// Finished, Unix ms.
    pub finished_ms: Option<i64>,
    /// What happened, in words.
    pub message: String,
    /// The gate's verdict.
    pub verdict: Option<Verdict>,
    /// Entity models trained.
    pub entities: usize,
    /// Entities left out for `models.train.entities.max_bytes`.
    pub entities_skipped: usize,
    /// The gate's verdict on the entity models.
    pub entity_verdict: Option<Verdict>,
    /// The release published from it, if any.
    pub version: Option<u64>,
}

/// A trained candidate and the gate's verdict on it.
pub struct Trained {
    /// The candidate.
    pub detector: Detector,
    /// Summary for the manifest.
    pub training: Training,
    /// The gate's verdict.
    pub verdict: Verdict,
    /// The entity models and their verdict, when trained.
    pub entities: Option<EntityRun>,
}

impl Trained {
    /// Whether the detector and the entity models (if any) both passed.
    pub fn passed(&self) -> bool {
        self.verdict.passed && self.entities.as_ref().is_none_or(|e| e.verdict.passed)
    }

    /// Every reason the gate gave, the entity models' marked as theirs.
    pub fn reasons(&self) -> Vec<String> {
        let entity = self.entities.iter().flat_map(|e| &e.verdict.reasons);
        self.verdict
            .reasons
            .iter()
            .cloned()
            .chain(entity.map(|r| format!("entity models: {r}")))
            .collect()
    }
}

/// Why a run produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the store failed.
    #[error("reading the store: {0}")]
    Store(#[from] polars::prelude::PolarsError),
    /// The model failed.
    #[error("model: {0}")]
    Model(#[from] ModelError),
    /// Not enough data.
    #[error("{0}")]
    TooLittle(String),
}

/// Each series normalised by its level and spread before `cut`: the part
/// before `cut` to train on, the rest held back with the confirmed
/// incidents in it.
fn split(
    root: &Path,
    q: &Query,
    ds: &dataset::Dataset,
    (cut, incidents): (i64, &[(Key, i64)]),
    dcfg: &vigil_models::DetectorConfig,
) -> Result<(Vec<Vec<f32>>, Holdout), TrainError> {
    let stats = dataset::stats(root, q, cut)?;
    let (mut train, mut holdout) = (Vec::new(), Holdout::default());
    let mut index: HashMap<&Key, (usize, &[i64])> = HashMap::new();
    for s in &ds.series {
        let Some(&(level, spread)) = stats.get(&s.key) else {
            continue;
        };
        let split = s.ts.partition_point(|&t| t < cut);
        train.push(normalise(&s.values[..split], level, spread, dcfg));
        if split < s.values.len() {
            index.insert(&s.key, (holdout.raw.len(), &s.ts[split..]));
            holdout.raw.push(s.values[split..].to_vec());
            holdout
                .normalised
                .push(normalise(&s.values[split..], level, spread, dcfg));
        }
    }
    holdout.window = dcfg.train_window;
    for (key, ts) in incidents {
        if let Some((i, times)) = index.get(key) {
            let at = times.partition_point(|&t| t < *ts);
            if at < times.len() {
                holdout.events.push((*i, at));
            }
        }
    }
    Ok((train, holdout))
}

/// The query for `cfg`, the samples it reads and their time range; an
/// error when there are too few.
fn load(
    root: &Path,
    cfg: &TrainConfig,
    now_ms: i64,
) -> Result<(Query, dataset::Dataset, (i64, i64)), TrainError> {
    let q = Query {
        sites: cfg.sites.clone(),
        kinds: cfg.kinds.clone(),
        from_ms: Some(now_ms - (cfg.hours * 3_600_000.0) as i64),
        to_ms: None,
    };
    let ds = dataset::load(root, &q)?;
    let (Some(from), Some(to)) = (ds.from_ms, ds.to_ms) else {
        return Err(TrainError::TooLittle(format!(
            "no samples in the last {} h under {}",
            cfg.hours,
            root.join("samples").display()
        )));
    };
    if ds.samples < cfg.min_samples {
        return Err(TrainError::TooLittle(format!(
            "{} samples, fewer than min_samples {}",
            ds.samples, cfg.min_samples
        )));
    }
    Ok((q, ds, (from, to)))
}

/// Trains a candidate from `base` (the model in force, with its entity
/// models) on the store at `root`, reporting progress through `report`.
pub fn run(
    root: &Path,
    cfg: &TrainConfig,
    (base, base_entities): (&Detector, Option<&EntitySet>),
    now_ms: i64,
    mut report: impl FnMut(Progress),
) -> Result<Trained, TrainError> {
    let started = Progress {
        state: "loading".into(),
        started_ms: now_ms,
        ..Progress::default()
    };
    report(started.clone());
    let (q, ds, (from, to)) = load(root, cfg, now_ms)?;
    let cut = to - ((to - from) as f64 * cfg.holdout_share) as i64;
    let dcfg = base.config().clone();
    let incidents = dataset::incidents(root, &q)?;
    let (train, holdout) = split(root, &q, &ds, (cut, &incidents), &dcfg)?;
    let mut candidate = base.replica(true)?;
    let plan = Plan {
        epochs: cfg.epochs,
        batch: cfg.batch,
        window: dcfg.train_window,
        seed: dcfg.seed,
    };
    let mut p = Progress {
        state: "training".into(),
        samples: ds.samples,
        ..started
    };
    let (_, last) = fit(&mut candidate, &train, &plan, |s| {
        p.step = s.step;
        p.steps = s.steps;
        p.loss = Some(s.loss);
        report(p.clone());
        true
    })?;
    p.state = "gating".into();
    report(p);
    let verdict = gate::judge(base, &candidate, &holdout, &cfg.gate)?;
    let entities = cfg.entities.enabled.then(|| {
        let e = &cfg.entities;
        let (rows, skipped) = entities::rows(&ds, e.step_ms, (e.max_rows, e.max_bytes));
        let run = entities::train(&rows, &incidents, cut, e, &cfg.gate, base_entities);
        EntityRun { skipped, ..run }
    });
    let training = Training {
        steps: candidate.train_steps(),
        last_loss: last,
        holdout_loss: verdict.candidate.loss,
        samples: ds.samples,
        series: ds.series.len() as u64,
        sites: ds.sites.clone(),
        from_ms: Some(from),
        to_ms: Some(to),
        base_version: base.release().map(|(_, v)| v),
    };
    Ok(Trained {
        detector: candidate,
        training,
        verdict,
        entities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use vigil_core::message::{AnomalyEvent, AuditKind, AuditRecord, ScoredSample};
    use vigil_core::EntityId;

    const T0: i64 = 1_700_000_000_000;

    /// Two sites; site `a` has a host with two metrics and a sensor, site
    /// `b` one host. The host's cpu has a fault at sample 900 that a
    /// verified remediation confirmed.
    fn store(root: &Path) {
        let mut s = Store::new(root);
        let wave = |t: usize, k: f64| 50.0 + 10.0 * (t as f64 * 0.3 + k).sin();
        let series = |e: EntityId, m: &str, k: f64, fault: bool| -> Vec<ScoredSample> {
            (0..1000)
                .map(|t| ScoredSample {
                    entity: e.clone(),
                    metric: m.into(),
                    ts_ms: T0 + t as i64 * 1000,
                    value: wave(t, k)
                        + if fault && (900..910).contains(&t) {
                            500.0
                        } else {
                            0.0
                        },
                    score: Some(0.0),
                })
                .collect()
        };
        s.add_samples("a", &series(EntityId::host("h1"), "cpu", 0.0, true));
        s.add_samples("a", &series(EntityId::host("h1"), "mem", 1.0, false));
        s.add_samples("a", &series(EntityId::sensor("t1"), "value", 2.0, false));
        s.add_samples("b", &series(EntityId::host("h9"), "cpu", 3.0, false));
        s.add_anomaly(&AnomalyEvent {
            id: "an-1".into(),
            site: "a".into(),
            entity: EntityId::host("h1"),
            score: 0.99,
            top_metric: "cpu".into(),
            contributors: vec![],
            ts_ms: T0 + 900_000,
            model_version: "m".into(),
            entity_score: None,
            root_cause: vec![],
        });
        let rec = |kind, anomaly: &str| AuditRecord {
            ts_ms: T0 + 930_000,
            site: "a".into(),
            kind,
            policy: "p".into(),
            policy_version: "v".into(),
            target: EntityId::host("h1"),
            action: "restart".into(),
            command_id: None,
            anomaly_id: Some(anomaly.into()),
            model_version: "m".into(),
            score: None,
            top_metric: "cpu".into(),
            mode: "auto".into(),
            lease_token: None,
            outcome: None,
            rail: None,
            detail: String::new(),
            root_cause: vec![],
        };
        s.add_audit(&rec(AuditKind::Verified, "an-1"));
        // A failed verification is no confirmed incident.
        s.add_audit(&rec(AuditKind::VerifyFailed, "an-2"));
        assert!(s.flush(1).errors.is_empty());
    }

    #[test]
    fn reads_by_site_kind_and_time_with_statistics_and_incidents() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path());
        let all = dataset::load(dir.path(), &Query::default()).unwrap();
        assert_eq!((all.series.len(), all.samples), (4, 4000));
        assert_eq!(all.sites, vec!["a", "b"]);
        let q = Query {
            sites: vec!["a".into()],
            kinds: vec!["host".into()],
            from_ms: Some(T0 + 500_000),
            to_ms: None,
        };
        let ds = dataset::load(dir.path(), &q).unwrap();
        let keys: Vec<String> = ds
            .series
            .iter()
            .map(|s| format!("{}|{}|{}", s.key.0, s.key.1, s.key.2))
            .collect();
        assert_eq!(keys, vec!["a|host/h1|cpu", "a|host/h1|mem"]);
        assert_eq!(ds.samples, 1000);
        assert!(ds.series[0].ts.windows(2).all(|w| w[0] < w[1]));
        let stats = dataset::stats(dir.path(), &q, T0 + 900_000).unwrap();
        let (level, spread) = stats[&("a".into(), "host/h1".into(), "mem".into())];
        // The wave's mean is 50 and its mean absolute deviation 10·2/π ≈ 6.37.
        assert!((level - 50.0).abs() < 0.5, "{level}");
        assert!((spread - 6.37).abs() < 0.3, "{spread}");
        let inc = dataset::incidents(dir.path(), &q).unwrap();
        assert_eq!(
            inc,
            vec![(("a".into(), "host/h1".into(), "cpu".into()), T0 + 900_000)]
        );
    }

    #[test]
    fn a_run_reports_progress_and_judges_the_candidate_on_the_incident() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path());
        let cfg = TrainConfig {
            hours: 1e6,
            min_samples: 100,
            epochs: 5.0,
            batch: 32,
            ..TrainConfig::default()
        };
        let base = Detector::new(vigil_models::DetectorConfig {
            learning_rate: 1e-2,
            ..Default::default()
        })
        .unwrap();
        let mut states = Vec::new();
        let t = run(dir.path(), &cfg, (&base, None), T0 + 1_000_000, |p| {
            if states.last() != Some(&p.state) {
                states.push(p.state.clone());
            }
        })
        .unwrap();
        assert_eq!(states, vec!["loading", "training", "gating"]);
        assert_eq!(t.training.samples, 4000);
        assert_eq!(t.training.series, 4);
        assert_eq!(t.verdict.events, 1, "{:?}", t.verdict);
        assert_eq!(t.verdict.current.caught, 1, "{:?}", t.verdict);
        assert!(t.verdict.passed, "{:?}", t.verdict);
        assert!(t.training.steps > 0);
        // Too little data is refused with the count.
        let strict = TrainConfig {
            min_samples: 1_000_000,
            ..cfg
        };
        let e = run(dir.path(), &strict, (&base, None), T0 + 1_000_000, |_| {})
            .err()
            .unwrap();
        assert!(e.to_string().contains("4000 samples"), "{e}");
    }
}
