//! Liveness rules: plain conditions on an entity's latest values (`up == 0`,
//! `http_ok == 0`, `rss_bytes > 2e9`) that a policy acts on beside anomaly
//! scores. A dead process is restarted every time, however long it has been
//! down and whatever the detector has come to expect: Monit, systemd and
//! Kubernetes liveness probes behave the same way.
//!
//! Conditions are judged per sample, in order, so "holds for 2 s" means two
//! samples 2 s apart both held, not "two ticks saw it".

use crate::cache::Cache;
use crate::policy::{glob, PolicySet};
pub use crate::policy::{Condition, Op};
use std::collections::HashMap;
use vigil_core::EntityId;

/// A liveness condition that holds now for a policy's target.
#[derive(Clone, Debug, PartialEq)]
pub struct Firing {
    /// The policy whose condition holds.
    pub policy: String,
    /// Its target.
    pub entity: EntityId,
    /// The condition, as written.
    pub condition: String,
    /// The metric that meets it and its latest value.
    pub metric: String,
    /// Latest value.
    pub value: f64,
    /// Timestamp of the first sample of this run that met it.
    pub since_ms: i64,
    /// How long it has held, from sample timestamps.
    pub held_ms: i64,
    /// Id of this episode (from its first sample to the first sample that
    /// no longer meets any condition); written where an anomaly id goes.
    pub episode: String,
}

/// One series a condition watches.
#[derive(Debug)]
struct Watch {
    policy: String,
    entity: EntityId,
    metric: String,
    condition: usize,
    /// The condition as written (a reload keeps the run of a watch whose
    /// condition did not change).
    text: String,
    slot: usize,
    /// The series' identity in that slot (slots are reused after eviction).
    born: u64,
    /// Newest sample looked at.
    last_ts: i64,
    /// First sample of the current run that met the condition.
    held_since: Option<i64>,
    /// First sample of the current run that did not.
    ok_since: Option<i64>,
    value: f64,
}

/// Condition state of every liveness policy over the cache.
#[derive(Debug, Default)]
pub struct Liveness {
    watches: Vec<Watch>,
    /// Cache slots born up to this have been matched against the policies.
    scanned: u64,
    /// Policy file version the watches were built for.
    version: String,
    /// Open episodes by (policy, entity).
    episodes: HashMap<(String, EntityId), String>,
    firing: Vec<Firing>,
}

impl Liveness {
    /// Reads the samples added to watched series since the last call and
    /// works out which conditions hold. `stale_ms`: a series without a
    /// sample that recent says nothing (its agent may be gone).
    pub fn update(&mut self, cache: &Cache, policies: &PolicySet, now_ms: i64, stale_ms: i64) {
        let mut kept = Vec::new();
        if self.version != policies.version {
            kept = std::mem::take(&mut self.watches);
            self.scanned = 0;
            self.version = policies.version.clone();
        }
        self.scan(cache, policies);
        // An edit elsewhere in the file must not restart a run: the cache
        // holds only its last minutes, the watch knows since when it held.
        for w in &mut self.watches {
            let same = |o: &&Watch| {
                (o.slot, o.born, &o.policy, &o.metric, &o.text)
                    == (w.slot, w.born, &w.policy, &w.metric, &w.text)
            };
            if let Some(o) = kept.iter().find(same) {
                (w.last_ts, w.held_since, w.ok_since, w.value) =
                    (o.last_ts, o.held_since, o.ok_since, o.value);
            }
        }
        let entries = cache.entries();
        self.watches
            .retain(|w| entries.get(w.slot).is_some_and(|e| e.born == w.born));
        for w in &mut self.watches {
            let e = &entries[w.slot];
            let Some(cond) = policies
                .policies
                .iter()
                .find(|p| p.name == w.policy)
                .and_then(|p| p.matcher.as_ref())
                .and_then(|m| m.when.get(w.condition))
            else {
                continue;
            };
            let after = w.last_ts;
            for p in e.points.iter().filter(|p| p.ts_ms > after) {
                if cond.holds(p.value) {
                    w.held_since.get_or_insert(p.ts_ms);
                    w.ok_since = None;
                } else {
                    w.ok_since.get_or_insert(p.ts_ms);
                    w.held_since = None;
                }
                w.value = p.value;
                w.last_ts = p.ts_ms;
            }
        }
        self.collect(policies, now_ms, stale_ms);
    }

    /// Matches cache slots born since the last scan against every condition.
    fn scan(&mut self, cache: &Cache, policies: &PolicySet) {
        let newest = cache.entries().iter().map(|e| e.born).max().unwrap_or(0);
        if newest <= self.scanned {
            return;
        }
        for (slot, e) in cache.entries().iter().enumerate() {
            if e.born <= self.scanned {
                continue;
            }
            for p in &policies.policies {
                let Some(m) = p.matcher.as_ref().filter(|m| !m.when.is_empty()) else {
                    continue;
                };
                if !glob(&m.entity, e.id.entity.as_str()) {
                    continue;
                }
                for (k, c) in m.when.iter().enumerate() {
                    if glob(&c.metric, &e.id.metric) {
                        self.watches.push(Watch {
                            policy: p.name.clone(),
                            entity: e.id.entity.clone(),
                            metric: e.id.metric.clone(),
                            condition: k,
                            text: c.to_string(),
                            slot,
                            born: e.born,
                            last_ts: i64::MIN,
                            held_since: None,
                            ok_since: None,
                            value: 0.0,
                        });
                    }
                }
            }
        }
        self.scanned = newest;
    }

    fn collect(&mut self, policies: &PolicySet, now_ms: i64, stale_ms: i64) {
        let mut groups: HashMap<(&str, &EntityId), Option<&Watch>> = HashMap::new();
        for w in &self.watches {
            let fresh = now_ms - w.last_ts <= stale_ms;
            let slot = groups.entry((&w.policy, &w.entity)).or_insert(None);
            if let (true, Some(since)) = (fresh, w.held_since) {
                if slot.is_none_or(|b| since < b.held_since.unwrap_or(i64::MAX)) {
                    *slot = Some(w);
                }
            }
        }
        let mut firing = Vec::new();
        let mut open = HashMap::new();
        for ((policy, entity), w) in groups {
            let Some(w) = w else { continue };
            let key = (policy.to_string(), entity.clone());
            let episode = self
                .episodes
                .remove(&key)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let since = w.held_since.unwrap_or(w.last_ts);
            let condition = policies
                .policies
                .iter()
                .find(|p| p.name == policy)
                .and_then(|p| p.matcher.as_ref())
                .and_then(|m| m.when.get(w.condition))
                .map(|c| c.to_string())
                .unwrap_or_default();
            firing.push(Firing {
                policy: policy.to_string(),
                entity: entity.clone(),
                condition,
                metric: w.metric.clone(),
                value: w.value,
                since_ms: since,
                held_ms: w.last_ts - since,
                episode: episode.clone(),
            });
            open.insert(key, episode);
        }
        firing.sort_by(|a, b| (&a.policy, &a.entity).cmp(&(&b.policy, &b.entity)));
        self.episodes = open;
        self.firing = firing;
    }

    /// Takes the series of every target a condition holds for out of a
    /// scoring tick (`values` indexed like `entries`): a dead or hung
    /// service is neither scored nor learnt from, so a long outage does not
    /// become its normal and its return to the normal it had is no surprise
    /// (the condition speaks for it meanwhile).
    pub fn hold_out(&self, values: &mut [Option<f64>], entries: &[crate::cache::Entry]) {
        if self.firing.is_empty() {
            return;
        }
        let down: std::collections::HashSet<&EntityId> =
            self.firing.iter().map(|f| &f.entity).collect();
        for (v, e) in values.iter_mut().zip(entries) {
            if down.contains(&e.id.entity) {
                *v = None;
            }
        }
    }

    /// Conditions that hold now, one per (policy, target), in a stable order.
    pub fn firing(&self) -> &[Firing] {
        &self.firing
    }

    /// Whether any condition of `policy` holds for `entity` now.
    pub fn holds(&self, policy: &str, entity: &EntityId) -> bool {
        self.firing
            .iter()
            .any(|f| f.policy == policy && &f.entity == entity)
    }

    /// Since when none of `policy`'s conditions has held for `entity`
    /// (the first sample of the current healthy run of each watched
    /// series, the latest of them); `None` while one holds or nothing is
    /// known.
    pub fn ok_since(&self, policy: &str, entity: &EntityId) -> Option<i64> {
        let mut out: Option<i64> = None;
        for w in self
            .watches
            .iter()
            .filter(|w| w.policy == policy && &w.entity == entity)
        {
            out = Some(out.unwrap_or(i64::MIN).max(w.ok_since?));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use vigil_core::SeriesId;

    #[test]
    fn conditions_parse_and_print() {
        let c = Condition::try_from("up == 0".to_string()).unwrap();
        assert_eq!((c.metric.as_str(), c.op, c.value), ("up", Op::Eq, 0.0));
        assert!(c.holds(0.0) && !c.holds(1.0));
        let c = Condition::try_from("http_*_seconds>=2.5".to_string()).unwrap();
        assert_eq!((c.op, c.value), (Op::Ge, 2.5));
        assert_eq!(c.to_string(), "http_*_seconds >= 2.5");
        assert_eq!(
            Condition::try_from("rss_bytes < 1e9".to_string())
                .unwrap()
                .op,
            Op::Lt
        );
        for bad in ["up", "up = 0", "== 0", "up == x", "up == inf", "a b == 1"] {
            assert!(Condition::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    fn policies() -> PolicySet {
        PolicySet::parse(
            "policies:\n  - name: live\n    match: { entity: \"service/*/web\", when: [\"up == 0\", \"http_ok == 0\"], for_secs: 2 }\n    action: restart\n",
            Path::new("p.yaml"),
        )
        .unwrap()
    }

    #[test]
    fn a_condition_holds_from_its_first_sample_and_clears_on_the_first_good_one() {
        let set = policies();
        let web = EntityId::service("h", "web");
        let up = SeriesId::new(web.clone(), "up");
        let cpu = SeriesId::new(web.clone(), "cpu_percent");
        let mut cache = Cache::new(10, 10);
        let mut live = Liveness::default();
        for (t, v) in [(1000, 1.0), (2000, 0.0), (3000, 0.0)] {
            cache.push(&up, t, v, t, 0).unwrap();
            cache.push(&cpu, t, 5.0, t, 0).unwrap();
        }
        live.update(&cache, &set, 3000, 5000);
        let f = &live.firing()[0];
        assert_eq!((f.since_ms, f.held_ms), (2000, 1000));
        assert_eq!((f.metric.as_str(), f.condition.as_str()), ("up", "up == 0"));
        let episode = f.episode.clone();
        assert_eq!(live.ok_since("live", &web), None);
        cache.push(&up, 4000, 0.0, 4000, 0).unwrap();
        live.update(&cache, &set, 4000, 5000);
        assert_eq!(live.firing()[0].held_ms, 2000);
        assert_eq!(live.firing()[0].episode, episode, "one episode per run");
        cache.push(&up, 5000, 1.0, 5000, 0).unwrap();
        live.update(&cache, &set, 5000, 5000);
        assert!(live.firing().is_empty());
        assert_eq!(live.ok_since("live", &web), Some(5000));
        // A stale series says nothing: its last word does not fire forever.
        cache.push(&up, 6000, 0.0, 6000, 0).unwrap();
        live.update(&cache, &set, 6000, 5000);
        assert_eq!(live.firing().len(), 1);
        assert_ne!(
            live.firing()[0].episode,
            episode,
            "a new run is a new episode"
        );
        live.update(&cache, &set, 20_000, 5000);
        assert!(live.firing().is_empty());
    }

    #[test]
    fn a_policy_edit_keeps_a_run_longer_than_the_cache_holds() {
        let set = policies();
        let up = SeriesId::new(EntityId::service("h", "web"), "up");
        // The ring holds 10 points; the outage lasts 60.
        let mut cache = Cache::new(10, 10);
        let mut live = Liveness::default();
        for t in 1..=60 {
            cache.push(&up, t * 1000, 0.0, t * 1000, 0).unwrap();
            live.update(&cache, &set, t * 1000, 5000);
        }
        assert_eq!(live.firing()[0].held_ms, 59_000);
        let episode = live.firing()[0].episode.clone();
        // shadow -> auto, say: the same condition, a new file version.
        let text = "policies:\n  - name: live\n    match: { entity: \"service/*/web\", when: [\"up == 0\", \"http_ok == 0\"], for_secs: 2 }\n    action: restart\n    mode: shadow\n";
        let edited = PolicySet::parse(text, Path::new("p.yaml")).unwrap();
        assert_ne!(edited.version, set.version);
        cache.push(&up, 61_000, 0.0, 61_000, 0).unwrap();
        live.update(&cache, &edited, 61_000, 5000);
        let f = &live.firing()[0];
        assert_eq!((f.since_ms, f.held_ms), (1000, 60_000));
        assert_eq!(f.episode, episode);
    }
}
