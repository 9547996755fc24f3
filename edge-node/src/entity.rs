//! Entities: series scores rolled up per host, service or sensor. An entity's
//! score is the highest of its fresh series; beside it, the entity model
//! scores all its metrics together (`model`). An entity is anomalous when
//! either says so; a normal → anomalous transition is an anomaly event,
//! naming the top metrics with their shares (the root cause).

mod metrics;
pub mod model;
pub use metrics::DetectionMetrics;
pub use model::{EntityModels, Verdict};

use crate::cache::Cache;
use serde::Serialize;
use std::collections::BTreeMap;
use vigil_core::message::{AnomalyEvent, Contributor, MetricShare};
use vigil_core::EntityId;

/// How many contributing metrics an event lists.
const CONTRIBUTORS: usize = 3;

/// The current view of one entity.
#[derive(Clone, Debug, Serialize)]
pub struct EntityState {
    /// The entity.
    pub entity: EntityId,
    /// Highest fresh series score.
    pub score: f64,
    /// Metric with that score.
    pub top_metric: String,
    /// Most anomalous metrics, highest first.
    pub contributors: Vec<Contributor>,
    /// Score at or above the detector threshold.
    pub anomalous: bool,
    /// When the current state (anomalous or not) began, Unix ms.
    pub since_ms: i64,
    /// Id of the open anomaly, while anomalous.
    pub anomaly_id: Option<String>,
    /// The entity model's score over its threshold, once it has a model.
    pub entity_score: Option<f64>,
    /// Top metrics with their shares: the entity model's ranking, or the
    /// series scores' before it has one.
    pub root_cause: Vec<MetricShare>,
    /// The episode: open while anomalous (closes once the score has stayed
    /// below the recovery level long enough).
    #[serde(skip)]
    episode: Episode,
}

impl EntityState {
    /// A healthy entity first seen at `now_ms`.
    fn new(entity: EntityId, now_ms: i64) -> Self {
        Self {
            entity,
            score: 0.0,
            top_metric: String::new(),
            contributors: Vec::new(),
            anomalous: false,
            since_ms: now_ms,
            anomaly_id: None,
            entity_score: None,
            root_cause: Vec::new(),
            episode: Episode::default(),
        }
    }

    /// Follows the episode on this tick's series scores and entity score
    /// (over its threshold): it opens on the onset score (quiet after an
    /// alarm, so one incident is one event) and stays open while the
    /// evidence `score` lasts; true when an episode opened.
    fn follow(
        &mut self,
        onset: f64,
        score: f64,
        ratio: Option<f64>,
        levels: Levels,
        now_ms: i64,
    ) -> bool {
        // The entity model's exit level sits where the series' does,
        // relative to its alarm level.
        let exit_ratio = levels.exit_ratio();
        let high = onset >= levels.enter || ratio.is_some_and(|r| r >= 1.0);
        let low = score < levels.exit && ratio.is_none_or(|r| r < exit_ratio);
        match self.episode.step(high, low, levels.exit_hold_ms, now_ms) {
            Step::Opened => {
                self.anomalous = true;
                self.since_ms = now_ms;
                self.anomaly_id = Some(uuid::Uuid::new_v4().to_string());
                true
            }
            Step::Closed { since_ms } => {
                // Healthy since the score first went below the exit level.
                self.anomalous = false;
                self.since_ms = since_ms;
                self.anomaly_id = None;
                false
            }
            Step::Stayed => false,
        }
    }

    /// The anomaly event of the episode that just opened.
    fn event(&self, site: &str, model: &str, now_ms: i64) -> AnomalyEvent {
        AnomalyEvent {
            id: self.anomaly_id.clone().unwrap_or_default(),
            site: site.to_string(),
            entity: self.entity.clone(),
            score: self.score,
            top_metric: self.top_metric.clone(),
            contributors: self.contributors.clone(),
            ts_ms: now_ms,
            model_version: model.to_string(),
            entity_score: self.entity_score,
            root_cause: self.root_cause.clone(),
        }
    }

    /// The view of an entity whose liveness condition holds: sick since
    /// the condition's first sample, with the condition's episode where an
    /// anomaly id goes and its metric as the top contributor.
    pub fn from_condition(f: &crate::liveness::Firing) -> Self {
        Self {
            entity: f.entity.clone(),
            score: 1.0,
            top_metric: f.metric.clone(),
            contributors: vec![Contributor {
                metric: f.metric.clone(),
                score: 1.0,
                value: f.value,
            }],
            anomalous: true,
            since_ms: f.since_ms,
            anomaly_id: Some(f.episode.clone()),
            entity_score: None,
            root_cause: vec![MetricShare {
                metric: f.metric.clone(),
                share: 1.0,
            }],
            episode: Episode::default(),
        }
    }
}

/// When an entity turns anomalous and when it counts as recovered: the
/// one follower `vigil eval` measures too.
pub use vigil_models::episode::Levels;
use vigil_models::episode::{Episode, Step};

/// Every entity the edge has seen.
#[derive(Debug, Default)]
pub struct Entities {
    map: BTreeMap<EntityId, EntityState>,
}

impl Entities {
    /// Rolls the cache's latest scores up per entity, beside the entity
    /// models' verdicts. Series without a point in the last `stale_ms` do
    /// not count (a dead process stops reporting its CPU; its last score
    /// must not linger). Returns the new anomalies.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        cache: &Cache,
        verdicts: &BTreeMap<EntityId, Verdict>,
        levels: Levels,
        now_ms: i64,
        stale_ms: i64,
        site: &str,
        model: &str,
    ) -> Vec<AnomalyEvent> {
        let rolled = contributors(cache, now_ms, stale_ms);
        // An entity whose every series left the cache goes too (unless it
        // is anomalous: its episode closes first).
        self.map
            .retain(|k, st| st.anomalous || rolled.contains_key(k));
        let mut events = Vec::new();
        for (entity, Rolled { mut list, onset }) in rolled {
            list.sort_by(|a, b| b.score.total_cmp(&a.score));
            list.truncate(CONTRIBUTORS);
            let (score, top) = list
                .first()
                .map(|c| (c.score, c.metric.clone()))
                .unwrap_or((0.0, String::new()));
            let verdict = verdicts.get(entity);
            let st = self
                .map
                .entry(entity.clone())
                .or_insert_with(|| EntityState::new(entity.clone(), now_ms));
            let opened = st.follow(onset, score, verdict.map(|v| v.score), levels, now_ms);
            st.root_cause = match verdict {
                Some(v) => v.root_cause.clone(),
                None => series_shares(&list),
            };
            st.score = score;
            st.top_metric = top;
            st.contributors = list;
            st.entity_score = verdict.map(|v| v.score);
            if opened {
                events.push(st.event(site, model, now_ms));
            }
        }
        events
    }

    /// Entities in an anomaly episode now (not learnt from).
    pub fn in_episode(&self) -> std::collections::BTreeSet<EntityId> {
        self.map
            .values()
            .filter(|e| e.anomalous)
            .map(|e| e.entity.clone())
            .collect()
    }

    /// One entity's state.
    pub fn get(&self, entity: &EntityId) -> Option<&EntityState> {
        self.map.get(entity)
    }

    /// All entities.
    pub fn all(&self) -> impl Iterator<Item = &EntityState> {
        self.map.values()
    }

    /// Entities anomalous now.
    pub fn anomalous_count(&self) -> usize {
        self.map.values().filter(|e| e.anomalous).count()
    }
}

/// The listed series' shares of their scores.
fn series_shares(list: &[Contributor]) -> Vec<MetricShare> {
    model::shares(list.iter().map(|c| (c.metric.as_str(), c.score)))
}

/// One entity's fresh series: their scores (evidence) and the highest
/// onset score among them.
#[derive(Default)]
struct Rolled {
    list: Vec<Contributor>,
    onset: f64,
}

/// Each entity's series that reported within `stale_ms`, with their
/// scores (an entity with none listed has gone quiet).
fn contributors(cache: &Cache, now_ms: i64, stale_ms: i64) -> BTreeMap<&EntityId, Rolled> {
    let mut rolled: BTreeMap<&EntityId, Rolled> = BTreeMap::new();
    for e in cache.entries() {
        let Some(last) = e.points.back() else {
            continue;
        };
        let r = rolled.entry(&e.id.entity).or_default();
        if now_ms - last.ts_ms <= stale_ms {
            r.onset = r.onset.max(e.onset as f64);
            r.list.push(Contributor {
                metric: e.id.metric.clone(),
                score: e.score as f64,
                value: last.value,
            });
        }
    }
    rolled
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::SeriesId;

    #[test]
    fn rolls_up_and_opens_one_event_per_episode() {
        let web = EntityId::service("h", "web");
        let mut cache = Cache::new(10, 5);
        let up = SeriesId::new(web.clone(), "up");
        let lat = SeriesId::new(web.clone(), "http_latency_seconds");
        cache.push(&up, 1000, 1.0, 1000, 0).unwrap();
        cache.push(&lat, 1000, 0.5, 1000, 0).unwrap();
        let pending = cache.take_pending();
        cache.set_scores(&pending, &[0.2, 0.99]);
        let mut ents = Entities::default();
        let ev = ents.update(
            &cache,
            &BTreeMap::new(),
            Levels::plain(0.95),
            1000,
            5000,
            "s",
            "m1",
        );
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].top_metric, "http_latency_seconds");
        assert_eq!(ev[0].contributors.len(), 2);
        // Still anomalous: no second event.
        assert!(ents
            .update(
                &cache,
                &BTreeMap::new(),
                Levels::plain(0.95),
                2000,
                5000,
                "s",
                "m1"
            )
            .is_empty());
        assert!(ents.get(&web).unwrap().anomalous);
        // The anomalous series goes stale: the entity is healthy again.
        cache.push(&up, 9000, 1.0, 9000, 0).unwrap();
        let p = cache.take_pending();
        cache.set_scores(&p, &[0.1, 0.0]);
        assert!(ents
            .update(
                &cache,
                &BTreeMap::new(),
                Levels::plain(0.95),
                9000,
                5000,
                "s",
                "m1"
            )
            .is_empty());
        let st = ents.get(&web).unwrap();
        assert!(!st.anomalous);
        assert_eq!(st.since_ms, 9000);
        assert_eq!(ents.anomalous_count(), 0);
    }

    #[test]
    fn an_episode_opens_on_the_onset_score_and_lasts_while_the_evidence_does() {
        let web = EntityId::service("h", "web");
        let lat = SeriesId::new(web.clone(), "http_latency_seconds");
        let mut cache = Cache::new(10, 5);
        let mut ents = Entities::default();
        let levels = Levels {
            enter: 0.75,
            exit: 0.6,
            exit_hold_ms: 3_000,
        };
        let mut step = |ents: &mut Entities, t: i64, evidence: f32, onset: f32| {
            cache.push(&lat, t, 1.0, t, 0).unwrap();
            let p = cache.take_pending();
            cache.set_tick(&p, &[evidence], &[onset]);
            ents.update(&cache, &BTreeMap::new(), levels, t, 5_000, "s", "m1")
                .len()
        };
        // High evidence in a refractory period (onset held back): no event.
        assert_eq!(step(&mut ents, 1000, 0.9, 0.4), 0);
        assert!(!ents.get(&web).unwrap().anomalous);
        // The onset reaches the level: one event; the evidence keeps it
        // open after the onset falls back.
        assert_eq!(step(&mut ents, 2000, 0.95, 0.95), 1);
        for t in [3000, 4000, 5000, 9000] {
            assert_eq!(step(&mut ents, t, 0.9, 0.3), 0);
            assert!(ents.get(&web).unwrap().anomalous, "{t}");
        }
        // The evidence stays low for the hold: recovered.
        step(&mut ents, 10_000, 0.1, 0.1);
        step(&mut ents, 13_000, 0.1, 0.1);
        assert!(!ents.get(&web).unwrap().anomalous);
    }

    #[test]
    fn hysteresis_keeps_one_episode_through_flicker() {
        let web = EntityId::service("h", "web");
        let lat = SeriesId::new(web.clone(), "http_latency_seconds");
        let mut cache = Cache::new(10, 5);
        let mut ents = Entities::default();
        let levels = Levels {
            enter: 0.95,
            exit: 0.76,
            exit_hold_ms: 3_000,
        };
        let mut step = |ents: &mut Entities, t: i64, score: f32| {
            cache.push(&lat, t, 1.0, t, 0).unwrap();
            let p = cache.take_pending();
            cache.set_scores(&p, &[score]);
            ents.update(&cache, &BTreeMap::new(), levels, t, 5_000, "s", "m1")
                .len()
        };
        // Flicker around the threshold: one event, one episode since t=1000.
        let mut events = 0;
        for (i, s) in [0.96, 0.90, 0.97, 0.80, 0.96, 0.93].into_iter().enumerate() {
            events += step(&mut ents, 1000 * (i as i64 + 1), s);
        }
        assert_eq!(events, 1);
        let st = ents.get(&web).unwrap();
        assert!(st.anomalous);
        assert_eq!(st.since_ms, 1000);
        // Below the exit level, but not for long enough; a rise resets the hold.
        step(&mut ents, 7000, 0.5);
        step(&mut ents, 9000, 0.5);
        step(&mut ents, 9500, 0.8);
        step(&mut ents, 10_000, 0.5);
        step(&mut ents, 12_000, 0.5);
        assert!(ents.get(&web).unwrap().anomalous);
        // Held below for 3 s: recovered, healthy since it went below.
        step(&mut ents, 13_000, 0.5);
        let st = ents.get(&web).unwrap();
        assert!(!st.anomalous);
        assert_eq!(st.since_ms, 10_000);
        // With one plain level the same flicker is many episodes.
        let mut plain = Entities::default();
        let mut cache = Cache::new(10, 5);
        let mut n = 0;
        for (i, s) in [0.96, 0.90, 0.97, 0.80, 0.96].into_iter().enumerate() {
            let t = 1000 * (i as i64 + 1);
            cache.push(&lat, t, 1.0, t, 0).unwrap();
            let p = cache.take_pending();
            cache.set_scores(&p, &[s]);
            n += plain
                .update(
                    &cache,
                    &BTreeMap::new(),
                    Levels::plain(0.95),
                    t,
                    5_000,
                    "s",
                    "m1",
                )
                .len();
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn the_entity_score_alone_opens_and_closes_an_episode() {
        let h = EntityId::host("h1");
        let cpu = SeriesId::new(h.clone(), "cpu");
        let mut cache = Cache::new(10, 5);
        let mut ents = Entities::default();
        let levels = Levels {
            enter: 0.95,
            exit: 0.76,
            exit_hold_ms: 0,
        };
        let mut step = |ents: &mut Entities, t: i64, ratio: f64| {
            cache.push(&cpu, t, 1.0, t, 0).unwrap();
            let p = cache.take_pending();
            cache.set_scores(&p, &[0.1]);
            let v = Verdict {
                score: ratio,
                root_cause: vec![MetricShare {
                    metric: "cpu".into(),
                    share: 1.0,
                }],
            };
            let verdicts = [(h.clone(), v)].into_iter().collect();
            ents.update(&cache, &verdicts, levels, t, 5_000, "s", "m1")
        };
        assert!(step(&mut ents, 1000, 0.9).is_empty());
        let ev = step(&mut ents, 2000, 1.3);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].entity_score, Some(1.3));
        assert_eq!(ev[0].root_cause[0].metric, "cpu");
        // Under the alarm level but above 0.8 of it (the series' exit
        // ratio, 0.76 / 0.95): still the same episode.
        assert!(step(&mut ents, 3000, 0.85).is_empty());
        assert!(ents.get(&h).unwrap().anomalous);
        step(&mut ents, 4000, 0.5);
        assert!(!ents.get(&h).unwrap().anomalous);
        assert!(ents.in_episode().is_empty());
    }
}
