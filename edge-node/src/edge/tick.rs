//! One scoring tick: the cache hands over each series' newest value (idle
//! series swept, new ones restored from the snapshot), the detector scores
//! them on a blocking thread, the scores roll up into entities and anomaly
//! events, and the engine decides.

use super::*;
use crate::entity::model::{EntityRow, Tally};
use crate::entity::{EntityModels, Verdict};
use std::collections::BTreeMap;
use vigil_models::TickScores;

/// What the cache hands the detector for one tick.
struct Pending {
    values: Vec<Option<f64>>,
    evicted: Vec<usize>,
    restores: Vec<(usize, Vec<u32>)>,
    /// The same values grouped per entity, for the entity models.
    rows: Vec<EntityRow>,
}

/// What one tick scored.
struct Scored {
    detector: Detector,
    values: Vec<Option<f64>>,
    scores: TickScores,
    verdicts: BTreeMap<EntityId, Verdict>,
}

impl Node {
    /// Scores every series once and acts on what changed.
    pub(super) async fn tick(&mut self) {
        let Some(mut detector) = self.detector.take() else {
            return;
        };
        let pending = self.take_pending();
        detector.reset_rows(&pending.evicted);
        for (row, words) in pending.restores {
            detector.restore_row(row, &words);
        }
        let Some(Scored {
            detector,
            values,
            scores,
            verdicts,
        }) = self.score(detector, pending.values, pending.rows).await
        else {
            return;
        };
        let model = detector.model_version();
        let threshold = detector.config().threshold as f64;
        self.metrics.detection.threshold.set(threshold);
        self.detector = Some(detector);
        self.ticks += 1;
        let now = now_ms();
        let events = self.roll_up(&values, &scores, &verdicts, threshold, now, &model);
        if let Ok(mut i) = self.shared.info.lock() {
            i.model_version = model.clone();
        }
        self.health.h.anomalies += events.len() as u64;
        for ev in events {
            info!(
                entity = %ev.entity,
                score = ev.score,
                entity_score = ?ev.entity_score,
                top_metric = %ev.top_metric,
                root_cause = %vigil_core::message::shares_text(&ev.root_cause),
                "Anomaly detected."
            );
            self.record_anomaly(ev);
        }
        self.decide(now, &model);
        if self.ticks % self.config.uplink_every_ticks == 0 {
            self.uplink_samples();
        }
        let every = (self.config.snapshot_secs * 1000 / self.config.tick_ms.max(1)).max(1);
        if self.config.snapshot_secs > 0 && self.ticks % every == 0 {
            self.save_snapshot(true);
            // Series that have not come back within a snapshot period are gone.
            self.snapshot.clear();
        }
    }

    /// Sweeps idle series and takes each series' newest value, the rows
    /// evicted since the last tick, and the snapshot rows of series that
    /// came back.
    fn take_pending(&mut self) -> Pending {
        let mut cache = self.shared.lock_cache();
        let idle = cache.sweep(now_ms());
        if idle > 0 {
            self.metrics
                .cache
                .series_evicted
                .with_label_values(&["idle"])
                .inc_by(idle as u64);
            info!(series = idle, "Evicted idle series.");
        }
        let admitted = cache.take_admitted();
        let restores: Vec<(usize, Vec<u32>)> = if self.snapshot.is_empty() {
            Vec::new()
        } else {
            admitted
                .into_iter()
                .filter_map(|i| {
                    let id = cache.entries().get(i)?.id.to_string();
                    Some((i, self.snapshot.take(&id)?))
                })
                .collect()
        };
        let mut values = cache.take_pending();
        self.live.hold_out(&mut values, cache.entries());
        let rows = if self.config.entity_model.enabled {
            entity_rows(cache.entries(), &values)
        } else {
            Vec::new()
        };
        Pending {
            values,
            evicted: cache.take_evicted(),
            restores,
            rows,
        }
    }

    /// Runs the detector and the entity models on a blocking thread
    /// (tensor work and fits stay off the async workers). `None` when
    /// scoring failed this tick; a panicked detector is replaced by a fresh
    /// one rather than stop scoring.
    async fn score(
        &mut self,
        mut detector: Detector,
        values: Vec<Option<f64>>,
        rows: Vec<EntityRow>,
    ) -> Option<Scored> {
        let timer = self.metrics.detection.tick_seconds.start_timer();
        // Every series is stamped with the tick's time (samples are on the
        // edge's clock by now): the seasonal evidence needs the time of day.
        let times = vec![now_ms().div_euclid(1000); values.len()];
        let mut models = self
            .entity_models
            .take()
            .unwrap_or_else(|| EntityModels::new(self.config.entity_model.clone()));
        let episode = self.shared.lock_entities().in_episode();
        let joined = tokio::task::spawn_blocking(move || {
            let r = detector.tick_at(&values, &times);
            let (verdicts, tally) = models.step(&rows, &episode);
            (detector, models, values, r, verdicts, tally)
        })
        .await;
        timer.observe_duration();
        match joined {
            Ok((detector, models, values, Ok(scores), verdicts, tally)) => {
                self.entity_models = Some(models);
                self.count_entity_models(tally);
                Some(Scored {
                    detector,
                    values,
                    scores,
                    verdicts,
                })
            }
            Ok((d, models, _, Err(e), _, _)) => {
                warn!(error = %e, "Scoring failed this tick.");
                self.detector = Some(d);
                self.entity_models = Some(models);
                None
            }
            Err(e) => {
                warn!(error = %e, "Detector task failed; starting a fresh model.");
                self.detector = Detector::new(self.config.detector.clone()).ok();
                None
            }
        }
    }

    fn count_entity_models(&self, t: Tally) {
        let m = &self.metrics.detection;
        m.entity_models_fitted.set(t.fitted as i64);
        m.entity_models_from_cloud.set(t.from_cloud as i64);
        m.entity_model_fits.inc_by(t.fits as u64);
        m.entity_model_refused.inc_by(t.refused as u64);
        m.entity_model_bytes.set(t.bytes as i64);
    }

    /// Stores the scores in the cache, rolls them up per entity and updates
    /// the liveness conditions; the anomaly events opened this tick.
    fn roll_up(
        &mut self,
        values: &[Option<f64>],
        scores: &TickScores,
        verdicts: &BTreeMap<EntityId, Verdict>,
        threshold: f64,
        now: i64,
        model: &str,
    ) -> Vec<AnomalyEvent> {
        let stale_ms = self.stale_ms();
        let mut cache = self.shared.lock_cache();
        // An episode opens on the onset score (one incident, one event) and
        // lasts while the evidence does: a fault that persists must not
        // read as a recovery. `vigil eval` measures the same follower.
        cache.set_tick(values, &scores.evidence, &scores.scores);
        self.health
            .observe(&cache, values, &scores.evidence, threshold as f32);
        self.update_score_gauges(&cache, threshold as f32);
        let levels = self.config.rails.levels(threshold);
        let mut entities = self.shared.lock_entities();
        let events = entities.update(
            &cache,
            verdicts,
            levels,
            now,
            stale_ms,
            &self.config.site,
            model,
        );
        if let Some(m) = self.entity_models.as_mut() {
            m.retain(|id| entities.get(id).is_some());
        }
        drop(entities);
        self.live
            .update(&cache, self.engine.policies(), now, stale_ms);
        for ev in &events {
            let top = SeriesId::new(ev.entity.clone(), &ev.top_metric);
            if let Some(onset) = cache.onset(&top, levels.exit as f32) {
                self.metrics
                    .detection
                    .fault_to_detection_seconds
                    .observe((now - onset).max(0) as f64 / 1000.0);
            }
        }
        events
    }

    fn update_score_gauges(&self, cache: &Cache, threshold: f32) {
        // Bounded label set: only the highest-scoring series get a gauge
        // (and, if so configured, only anomalous ones).
        let anomalous_only = self.config.score_gauges_anomalous_only;
        let mut top: Vec<(f32, String)> = cache
            .live_entries()
            .filter(|e| !anomalous_only || e.score >= threshold)
            .map(|e| (e.score, e.id.to_string()))
            .collect();
        let max = self.config.score_gauges_max;
        if anomalous_only || top.len() > max {
            if top.len() > max {
                top.select_nth_unstable_by(max, |a, b| b.0.total_cmp(&a.0));
                top.truncate(max);
            }
            self.metrics.detection.anomaly_score.reset();
        }
        for (score, id) in top {
            self.metrics
                .detection
                .anomaly_score
                .with_label_values(&[id.as_str()])
                .set(score as f64);
        }
    }

    /// Writes the detector snapshot (on a blocking thread when `background`).
    pub(super) fn save_snapshot(&self, background: bool) {
        if self.config.snapshot_secs == 0 {
            return;
        }
        let Some(d) = &self.detector else { return };
        let bytes = crate::snapshot::encode(d, &self.shared.lock_cache());
        let path = self.config.data_dir.join("detector.snap");
        let write = move || {
            if let Err(e) = vigil_core::file::write_atomic(&path, &bytes) {
                warn!(error = %e, path = %path.display(), "Could not write the detector snapshot.");
            }
        };
        if background {
            drop(tokio::task::spawn_blocking(write));
        } else {
            write();
        }
    }
}

/// The tick's new values grouped per entity (series without a value this
/// tick left out: the entity model holds their last value).
fn entity_rows(entries: &[crate::cache::Entry], values: &[Option<f64>]) -> Vec<EntityRow> {
    let mut by: BTreeMap<&EntityId, Vec<(String, f64)>> = BTreeMap::new();
    for (e, v) in entries.iter().zip(values) {
        if let Some(v) = v {
            by.entry(&e.id.entity)
                .or_default()
                .push((e.id.metric.clone(), *v));
        }
    }
    by.into_iter()
        .map(|(entity, values)| EntityRow {
            entity: entity.clone(),
            values,
        })
        .collect()
}
