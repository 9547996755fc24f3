//! Entities: series scores rolled up per host, service or sensor. An entity's
//! score is the highest of its fresh series; the metric behind it is the
//! reported root cause. A normal → anomalous transition is an anomaly event.

use crate::cache::Cache;
use serde::Serialize;
use std::collections::BTreeMap;
use vigil_core::message::{AnomalyEvent, Contributor};
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
}

/// Every entity the edge has seen.
#[derive(Debug, Default)]
pub struct Entities {
    map: BTreeMap<EntityId, EntityState>,
}

impl Entities {
    /// Rolls the cache's latest scores up per entity. Series without a point
    /// in the last `stale_ms` do not count (a dead process stops reporting
    /// its CPU; its last score must not linger). Returns the new anomalies.
    pub fn update(
        &mut self,
        cache: &Cache,
        threshold: f64,
        now_ms: i64,
        stale_ms: i64,
        site: &str,
        model: &str,
    ) -> Vec<AnomalyEvent> {
        let mut rolled: BTreeMap<&EntityId, Vec<Contributor>> = BTreeMap::new();
        for e in cache.entries() {
            let Some(last) = e.points.back() else {
                continue;
            };
            let list = rolled.entry(&e.id.entity).or_default();
            if now_ms - last.ts_ms <= stale_ms {
                list.push(Contributor {
                    metric: e.id.metric.clone(),
                    score: e.score as f64,
                    value: last.value,
                });
            }
        }
        let mut events = Vec::new();
        for (entity, mut list) in rolled {
            list.sort_by(|a, b| b.score.total_cmp(&a.score));
            list.truncate(CONTRIBUTORS);
            let (score, top) = list
                .first()
                .map(|c| (c.score, c.metric.clone()))
                .unwrap_or((0.0, String::new()));
            let anomalous = score >= threshold;
            let st = self
                .map
                .entry(entity.clone())
                .or_insert_with(|| EntityState {
                    entity: entity.clone(),
                    score: 0.0,
                    top_metric: String::new(),
                    contributors: Vec::new(),
                    anomalous: false,
                    since_ms: now_ms,
                    anomaly_id: None,
                });
            if anomalous != st.anomalous {
                st.anomalous = anomalous;
                st.since_ms = now_ms;
                st.anomaly_id = None;
                if anomalous {
                    let id = uuid::Uuid::new_v4().to_string();
                    st.anomaly_id = Some(id.clone());
                    events.push(AnomalyEvent {
                        id,
                        site: site.to_string(),
                        entity: entity.clone(),
                        score,
                        top_metric: top.clone(),
                        contributors: list.clone(),
                        ts_ms: now_ms,
                        model_version: model.to_string(),
                    });
                }
            }
            st.score = score;
            st.top_metric = top;
            st.contributors = list;
        }
        events
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
        let ev = ents.update(&cache, 0.95, 1000, 5000, "s", "m1");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].top_metric, "http_latency_seconds");
        assert_eq!(ev[0].contributors.len(), 2);
        // Still anomalous: no second event.
        assert!(ents.update(&cache, 0.95, 2000, 5000, "s", "m1").is_empty());
        assert!(ents.get(&web).unwrap().anomalous);
        // The anomalous series goes stale: the entity is healthy again.
        cache.push(&up, 9000, 1.0, 9000, 0).unwrap();
        let p = cache.take_pending();
        cache.set_scores(&p, &[0.1, 0.0]);
        assert!(ents.update(&cache, 0.95, 9000, 5000, "s", "m1").is_empty());
        let st = ents.get(&web).unwrap();
        assert!(!st.anomalous);
        assert_eq!(st.since_ms, 9000);
        assert_eq!(ents.anomalous_count(), 0);
    }
}
