//! The edge node's run loop: one task owns the cache, detector and engine;
//! it takes messages from the MQTT link, scores on a fixed tick (the tensor
//! work on a blocking thread), acts through the outbox, sends the cloud's
//! data through the durable uplink buffer, and stops cleanly.

use crate::audit::AuditLog;
use crate::cache::{Cache, Refusal};
use crate::config::EdgeConfig;
use crate::ingest::{classify, Inbound};
use crate::liveness::Liveness;
use crate::metrics::EdgeMetrics;
use crate::model::{Models, Next};
use crate::outbox::{outbox, Outbox};
use crate::policy::PolicySet;
use crate::remediation::{Decisions, Engine};
use crate::spool::Priority;
use crate::timing::Restamp;
use crate::uplink::{Queued, Uplink};
use anyhow::Context;
use rumqttc::Publish;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigil_core::clock::now_ms;
use vigil_core::message::{
    AnomalyEvent, AuditKind, AuditRecord, Heartbeat, ModelHealth, Presence, PresenceState, Release,
    SampleBatch, ScoredSample,
};
use vigil_core::mqtt::{self, LinkSpec, PresenceSpec};
use vigil_core::role::Role;
use vigil_core::topic::UplinkKind;
use vigil_core::watch::FileWatch;
use vigil_core::{encode, topic, EntityId, SeriesId};
use vigil_models::bundle::Bundle;
use vigil_models::signing::Keyring;
use vigil_models::Detector;

mod decide;
mod health;
mod inbound;
mod model_swap;
mod to_cloud;

use health::HealthWindow;
use model_swap::starting_model;

/// Anomaly events kept for the API.
const RECENT_ANOMALIES: usize = 500;

pub use crate::shared::{Info, Shared};

/// Runs the edge node until `shutdown`. `listener` serves the API and metrics.
pub async fn run(
    config: EdgeConfig,
    policies: PolicySet,
    listener: TcpListener,
    metrics: EdgeMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let site = config.site.clone();
    let audit_path = config.data_dir.join("audit.jsonl");
    let audit = AuditLog::open(&audit_path)
        .with_context(|| format!("opening audit log {}", audit_path.display()))?;
    // Budgets live beside the audit log so a restarted edge keeps counting.
    let budgets = crate::budget::Budgets::open(&config.data_dir.join("budgets.json"))?;
    let keys = Keyring::load(&config.model.trusted_keys)
        .map_err(|e| anyhow::anyhow!("model.trusted_keys: {}", e.join("; ")))?;
    let key_path = config.command_key_path();
    let (command_key, made) = vigil_core::signing::SecretKey::read_or_create(&key_path)
        .map_err(|e| anyhow::anyhow!("command_key: {e}"))?;
    if made {
        info!(key = %key_path.display(), public = %key_path.with_extension("pub").display(), "Made a command signing key; agents must trust its public half (trusted_edge_keys).");
    }
    info!(key_id = %command_key.public().id(), "Commands are signed.");
    let (models, detector, snapshot) = starting_model(&config, &keys, &metrics)?;
    let shared = Arc::new(Shared::new(&config, audit, &detector, &policies));

    let spec = link_spec(&config);
    // At most 256 messages and 16 MiB: the link waits for room beyond it.
    let (mut role, inbox) = Role::start("edge", spec, (256, 16 << 20), metrics.link.clone())?;
    let publisher = role.publisher.clone();
    let (out, out_task) = outbox(4096, publisher.clone(), metrics.link.clone());
    let spool_path = config.data_dir.join("uplink.redb");
    let (uplink, uplink_task) = crate::uplink::open(
        &spool_path,
        &config.uplink,
        publisher.clone(),
        metrics.uplink.clone(),
    )
    .with_context(|| format!("opening the uplink buffer {}", spool_path.display()))?;

    // Drained in reverse: the uplink stores what is still queued, then the
    // outbox sends what it holds, then the link goes.
    role.spawn_until_drain(|stop| out_task.run(stop));
    role.spawn_until_drain(|stop| uplink_task.run(stop));
    role.serve(
        listener,
        &metrics.registry,
        crate::api::router(shared.clone()),
        &shutdown,
    );

    let mut engine = Engine::new(
        site.clone(),
        policies,
        config.command_ttl_secs as i64 * 1000,
        budgets,
    )
    .with_rails(config.rails.clone())
    .with_node(&config.node)
    .with_approvals(shared.approvals.clone());
    // Commands sent before a restart whose result never came: take them
    // back, so every action_sent record ends with a result and a verdict.
    let open = shared
        .audit
        .lock()
        .map(|a| a.open_actions())
        .unwrap_or_default();
    if !open.is_empty() {
        info!(commands = open.len(), "Commands were in flight when the edge stopped; waiting for their results, then checking recovery.");
    }
    let resumed = engine.resume(&open, &detector.model_version());
    let policy_watch = (!config.policy.as_os_str().is_empty()).then(|| {
        let text = std::fs::read_to_string(&config.policy).ok();
        FileWatch::new(&config.policy, text)
    });
    let (installs_tx, installs) = mpsc::channel(4);
    let node = Node {
        config,
        shared,
        metrics,
        out,
        uplink,
        to_cloud: Vec::new(),
        engine,
        detector: Some(detector),
        ticks: 0,
        policy_watch,
        models,
        keys,
        installs_tx,
        health: HealthWindow::default(),
        publisher,
        chunk_sub: None,
        live: Liveness::default(),
        due: Default::default(),
        ratelog: Default::default(),
        command_key,
        policy_problems: Vec::new(),
        snapshot,
    };
    info!(%site, "Edge node running.");
    let mut node = node;
    node.apply(resumed);
    node.run(inbox, installs, shutdown).await;

    role.drain().await;
    info!("Edge node stopped.");
    Ok(())
}

/// What the edge listens to on the broker, and its presence (retained,
/// with an offline last will).
fn link_spec(config: &EdgeConfig) -> LinkSpec {
    let site = &config.site;
    let presence = |state| {
        encode(&Presence {
            node: config.node.clone(),
            role: "edge".into(),
            state,
            ts_ms: now_ms(),
            actions: vec![],
        })
    };
    LinkSpec {
        settings: config.mqtt.clone(),
        default_client_id: format!("vigil-edge-{site}-{}", config.node),
        subscriptions: vec![
            topic::filter::metrics(site),
            topic::filter::results(site),
            topic::filter::presence(site),
            topic::filter::sensors(site),
            topic::model_release(&config.model.family),
            topic::uplink_ack(site),
        ],
        presence: Some(PresenceSpec {
            topic: topic::edge_presence(site),
            online: presence(PresenceState::Online),
            offline: presence(PresenceState::Offline),
        }),
    }
}

struct Node {
    config: EdgeConfig,
    shared: Arc<Shared>,
    metrics: EdgeMetrics,
    out: Outbox,
    uplink: Uplink,
    /// Cloud-bound messages of the current tick or message, written to the
    /// buffer together.
    to_cloud: Vec<Queued>,
    engine: Engine,
    detector: Option<Detector>,
    ticks: u64,
    policy_watch: Option<FileWatch>,
    models: Models,
    keys: Keyring,
    installs_tx: mpsc::Sender<Install>,
    health: HealthWindow,
    /// For the chunk subscription, held only while a transfer runs (so
    /// edges outside a canary's cohort do not receive its bundle).
    publisher: vigil_core::mqtt::Publisher,
    chunk_sub: Option<String>,
    /// Liveness conditions over the cache.
    live: Liveness,
    /// Log lines about bad input, at most one per sender and kind a while.
    ratelog: vigil_core::ratelog::RateLog,
    /// Signs every command (agents run only what a trusted edge signed).
    command_key: vigil_core::signing::SecretKey,
    /// Policy problems already warned about.
    policy_problems: Vec<String>,
    /// Detector rows from before a restart, waiting for their series.
    snapshot: crate::snapshot::Snapshot,
    /// (policy, target) pairs whose condition had held long enough at the
    /// last decision: a new one is decided on at once, not at the next tick.
    due: std::collections::HashSet<(String, EntityId)>,
}

/// A verified model ready to swap in, or why it was refused.
type Install = (Release, Vec<u8>, Result<Detector, (String, &'static str)>);

impl Node {
    async fn run(
        mut self,
        mut inbox: mqtt::Inbox,
        mut installs: mpsc::Receiver<Install>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut heartbeat = tokio::time::interval(Duration::from_secs(self.config.heartbeat_secs));
        let mut reload = tokio::time::interval(Duration::from_secs_f64(self.config.reload_secs));
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut transfer = tokio::time::interval(Duration::from_millis(250));
        transfer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                m = inbox.recv() => match m { Some(m) => self.on_message(&m), None => break },
                _ = tick.tick() => self.tick().await,

                _ = heartbeat.tick() => self.heartbeat(),
                _ = reload.tick() => self.reload_policy(),
                _ = transfer.tick() => {
                    let next = self.models.poll(now_ms());
                    self.model_next(next);
                }
                Some(i) = installs.recv() => self.swap(i),
            }
            if !self.to_cloud.is_empty() {
                self.uplink.queue(std::mem::take(&mut self.to_cloud));
            }
        }
        // Points not yet handed over go to the buffer before we stop, and
        // what the detector learnt to its snapshot.
        self.save_snapshot(false);
        self.uplink_samples();
        self.uplink.queue(std::mem::take(&mut self.to_cloud));
    }

    async fn tick(&mut self) {
        let Some(mut detector) = self.detector.take() else {
            return;
        };
        let (values, evicted, restores) = {
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
            (cache.take_pending(), cache.take_evicted(), restores)
        };
        detector.reset_rows(&evicted);
        for (row, words) in restores {
            detector.restore_row(row, &words);
        }
        let timer = self.metrics.detection.tick_seconds.start_timer();
        // Tensor work stays off the async workers.
        // Every series is stamped with the tick's time (samples are on the
        // edge's clock by now): the seasonal evidence needs the time of day.
        let times = vec![now_ms().div_euclid(1000); values.len()];
        let joined = tokio::task::spawn_blocking(move || {
            let r = detector.tick_at(&values, &times);
            (detector, values, r)
        })
        .await;
        timer.observe_duration();
        let (detector, values, scores) = match joined {
            Ok((d, v, Ok(s))) => (d, v, s),
            Ok((d, _, Err(e))) => {
                warn!(error = %e, "Scoring failed this tick.");
                self.detector = Some(d);
                return;
            }
            Err(e) => {
                // The detector panicked: build a fresh one rather than stop scoring.
                warn!(error = %e, "Detector task failed; starting a fresh model.");
                self.detector = Detector::new(self.config.detector.clone()).ok();
                return;
            }
        };
        let model = detector.model_version();
        let threshold = detector.config().threshold as f64;
        self.metrics.detection.threshold.set(threshold);
        self.detector = Some(detector);
        self.ticks += 1;
        let now = now_ms();
        let stale_ms = self.stale_ms();
        let events = {
            let mut cache = self.shared.lock_cache();
            // The edge follows episodes on the evidence, not the onset-shaped
            // score: a fault that persists must not read as a recovery.
            cache.set_scores(&values, &scores.evidence);
            self.health
                .observe(&cache, &values, &scores.evidence, threshold as f32);
            self.update_score_gauges(&cache, threshold as f32);
            let levels = self.config.rails.levels(threshold);
            let events = self.shared.lock_entities().update(
                &cache,
                levels,
                now,
                stale_ms,
                &self.config.site,
                &model,
            );
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
        };
        if let Ok(mut i) = self.shared.info.lock() {
            i.model_version = model.clone();
        }
        self.health.h.anomalies += events.len() as u64;
        for ev in events {
            info!(entity = %ev.entity, score = ev.score, top_metric = %ev.top_metric, "Anomaly detected.");
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

    /// Writes the detector snapshot (on a blocking thread when `background`).
    fn save_snapshot(&self, background: bool) {
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

    /// A series without a sample this recent no longer speaks for its
    /// entity (a dead process stops reporting its CPU).
    fn stale_ms(&self) -> i64 {
        (self.config.tick_ms as i64 * 5).max(5_000)
    }

    /// After new samples: the liveness conditions are updated, and one that
    /// has just held long enough is acted on now (a crash costs one sample
    /// interval, not a tick).
    fn after_samples(&mut self, now: i64) {
        let stale_ms = self.stale_ms();
        {
            let cache = self.shared.lock_cache();
            self.live
                .update(&cache, self.engine.policies(), now, stale_ms);
        }
        if self.newly_due() {
            let model = self.model_version();
            self.decide(now, &model);
        }
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
}
