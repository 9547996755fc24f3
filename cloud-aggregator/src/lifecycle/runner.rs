//! Glue between the run loop, the API and the hub: starting a training run
//! on a blocking thread (one at a time), storing a candidate that passed the
//! gate, starting canaries once edges are online, and letting the canary
//! decide every second.

use super::hub::Hub;
use super::server::Job;
use super::train;
use super::LifecycleMetrics;
use crate::registry::Registry;
use crate::store::Sink;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::{info, warn};
use vigil_core::clock::now_ms;
use vigil_models::bundle::Bundle;

/// Where a store on S3 is mirrored for training, under the data folder.
pub const MIRROR: &str = "store-mirror";

/// What the model lifecycle needs from the rest of the aggregator.
pub struct Lifecycle {
    /// Releases and rollout.
    pub hub: Arc<Mutex<Hub>>,
    /// Work for the release server.
    pub jobs: mpsc::Sender<Job>,
    /// The aggregator's folder (a store on S3 is mirrored under it).
    pub data_dir: PathBuf,
    /// Where the Parquet store is.
    pub sink: Arc<Sink>,
    /// Whether this aggregator leads (alone it always does): only the
    /// leader trains, publishes and runs canaries.
    pub leadership: Arc<crate::cluster::Leadership>,
    /// Set while a training run is going.
    pub training: AtomicBool,
    /// Metrics.
    pub metrics: LifecycleMetrics,
}

impl Lifecycle {
    /// Starts a training run unless one is going; false if one is.
    pub fn start_training(self: &Arc<Self>, by: &str) -> bool {
        if !self.leadership.leads() || self.training.swap(true, Ordering::SeqCst) {
            return false;
        }
        info!(by, "Model training started.");
        let me = self.clone();
        let by = by.to_string();
        tokio::task::spawn_blocking(move || {
            me.train(&by);
            me.training.store(false, Ordering::SeqCst);
        });
        true
    }

    fn set_progress(&self, p: train::Progress) {
        if let Ok(mut h) = self.hub.lock() {
            h.training = p;
        }
    }

    fn train(&self, by: &str) {
        let now = now_ms();
        let prepared = self
            .hub
            .lock()
            .map_err(|_| anyhow::anyhow!("hub lock"))
            .and_then(|mut h| {
                Ok((
                    h.config().train.clone(),
                    h.config().family.clone(),
                    (h.stable_detector()?, h.stable_entities()),
                ))
            });
        let (cfg, family, base) = match prepared {
            Ok(x) => x,
            Err(e) => return self.failed(now, &e.to_string()),
        };
        let (base, base_entities) = base;
        let root = match self.sink.readable(&self.data_dir.join(MIRROR)) {
            Ok(root) => root,
            Err(e) => return self.failed(now, &format!("reading the store: {e}")),
        };
        let result = train::run(&root, &cfg, (&base, base_entities.as_ref()), now, |p| {
            self.set_progress(p)
        });
        let t = match result {
            Ok(t) => t,
            Err(e) => return self.failed(now, &e.to_string()),
        };
        self.metrics.training_runs.with_label_values(&["ok"]).inc();
        let Ok(mut hub) = self.hub.lock() else {
            return;
        };
        let mut p = hub.training.clone();
        p.state = "done".into();
        p.finished_ms = Some(now_ms());
        p.verdict = Some(t.verdict.clone());
        p.entities = t.entities.as_ref().map_or(0, |e| e.set.entries.len());
        p.entities_skipped = t.entities.as_ref().map_or(0, |e| e.skipped);
        if p.entities_skipped > 0 {
            warn!(
                skipped = p.entities_skipped,
                "Entities left without a model: models.train.entities.max_bytes reached."
            );
        }
        p.entity_verdict = t.entities.as_ref().map(|e| e.verdict.clone());
        let result = if t.passed() { "passed" } else { "rejected" };
        self.metrics.gate.with_label_values(&[result]).inc();
        self.count_refusals("detector", &t.verdict);
        if let Some(e) = &t.entities {
            self.count_refusals("entity", &e.verdict);
        }
        if !t.passed() {
            let reasons = t.reasons();
            hub.rejected(&reasons, now_ms());
            p.message = format!("not published: {}", reasons.join("; "));
            warn!(by, reasons = %reasons.join("; "), "Trained candidate refused at the gate.");
            hub.training = p;
            return;
        }
        let stored = Bundle::of(&t.detector, &family, 0, now_ms(), t.training)
            .and_then(|mut b| {
                if let Some(e) = &t.entities {
                    b.put_entities(&e.set)?;
                }
                Ok(b)
            })
            .map_err(anyhow::Error::from)
            .and_then(|b| hub.add(b, "trained", now_ms()));
        match stored {
            Ok(v) => {
                p.version = Some(v);
                p.message = format!("passed the gate; stored as v{v} for canary");
            }
            Err(e) => p.message = format!("passed the gate but could not be stored: {e}"),
        }
        hub.training = p;
    }

    fn count_refusals(&self, model: &str, v: &vigil_models::gate::Verdict) {
        for r in &v.refusals {
            let labels = [model, r.rule.as_str()];
            self.metrics.gate_refusals.with_label_values(&labels).inc();
            self.metrics
                .gate_refusal_by
                .with_label_values(&labels)
                .set(r.by());
        }
    }

    fn failed(&self, now: i64, e: &str) {
        warn!(error = %e, "Model training failed.");
        self.metrics
            .training_runs
            .with_label_values(&["failed"])
            .inc();
        self.set_progress(train::Progress {
            state: "failed".into(),
            started_ms: now,
            finished_ms: Some(now_ms()),
            message: e.to_string(),
            ..Default::default()
        });
    }

    /// Every second: start a waiting candidate's canary when edges are
    /// online, and let a running canary decide.
    pub fn tick(&self, registry: &Mutex<Registry>, now: i64) {
        if !self.leadership.leads() {
            return;
        }
        let online = registry
            .lock()
            .map(|r| r.online_edges())
            .unwrap_or_default();
        let Ok(mut hub) = self.hub.lock() else {
            return;
        };
        let mut out = hub.decide(now);
        if out.is_none() && !online.is_empty() {
            if let Some(v) = hub.waiting_candidate() {
                match hub.start_canary(v, &online, now) {
                    Ok(r) => out = Some(r),
                    Err(e) => warn!(version = v, error = %e, "Could not start the canary."),
                }
            }
        }
        if let Some(r) = out {
            if self.jobs.try_send(Job::Release(r)).is_err() {
                warn!("Release server busy; the release goes out on the next reconnect check.");
            }
        }
    }
}
