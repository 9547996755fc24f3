//! The model's behaviour between two heartbeats, as the cloud's canary
//! judges it: how often it scored and how often it found anomalies.

use super::*;

/// The model's behaviour since the last heartbeat.
#[derive(Default)]
pub(super) struct HealthWindow {
    pub(super) h: ModelHealth,
    scores: Vec<f32>,
}

/// Scores kept per heartbeat window for the quantiles.
const HEALTH_SCORES: usize = 20_000;

impl HealthWindow {
    /// Adds this tick to the model-health window: values scored and
    /// flagged, and `up` series at 0 the model did not flag (missed incidents).
    pub(super) fn observe(
        &mut self,
        cache: &Cache,
        values: &[Option<f64>],
        scores: &[f32],
        threshold: f32,
    ) {
        let entries = cache.entries();
        for (i, v) in values.iter().enumerate() {
            let (Some(v), Some(&s)) = (v, scores.get(i)) else {
                continue;
            };
            self.h.scored += 1;
            if s >= threshold {
                self.h.flagged += 1;
            } else if *v == 0.0 && entries.get(i).is_some_and(|e| e.id.metric == "up") {
                self.h.missed += 1;
            }
            if self.scores.len() < HEALTH_SCORES {
                self.scores.push(s);
            }
        }
    }

    pub(super) fn take(&mut self) -> ModelHealth {
        let mut h = std::mem::take(&mut self.h);
        let mut s = std::mem::take(&mut self.scores);
        if !s.is_empty() {
            s.sort_by(f32::total_cmp);
            let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
            h.score_p50 = q(0.5);
            h.score_p99 = q(0.99);
        }
        h
    }
}
