//! The edge node's run loop: one task owns the cache, detector and engine;
//! it takes messages from the MQTT link, scores on a fixed tick (the tensor
//! work on a blocking thread), acts through the outbox, sends the cloud's
//! data through the durable uplink buffer, and stops cleanly.

use crate::approval::SharedApprovals;
use crate::audit::AuditLog;
use crate::cache::{Cache, Refusal};
use crate::config::EdgeConfig;
use crate::entity::Entities;
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
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use vigil_core::clock::now_ms;
use vigil_core::message::{
    AnomalyEvent, AuditKind, AuditRecord, Heartbeat, ModelHealth, Presence, PresenceState, Release,
    SampleBatch, ScoredSample,
};
use vigil_core::mqtt::{self, LinkSpec, PresenceSpec};
use vigil_core::watch::FileWatch;
use vigil_core::{encode, topic, EntityId, SeriesId};
use vigil_models::bundle::Bundle;
use vigil_models::signing::Keyring;
use vigil_models::Detector;

/// Anomaly events kept for the API.
const RECENT_ANOMALIES: usize = 500;

/// Versions reported by the API and heartbeat.
#[derive(Clone, Debug, Default)]
pub struct Info {
    /// Model scoring now.
    pub model_version: String,
    /// Its release number, when it came from the cloud.
    pub model_release: Option<u64>,
    /// Policy file in force.
    pub policy_version: String,
}

/// State the run loop writes and the API reads. Locks are never held across `.await`.
pub struct Shared {
    /// Site.
    pub site: String,
    /// Node name.
    pub node: String,
    /// The series cache.
    pub cache: Mutex<Cache>,
    /// Entity roll-up.
    pub entities: Mutex<Entities>,
    /// Recent anomaly events.
    pub anomalies: Mutex<VecDeque<AnomalyEvent>>,
    /// The audit trail.
    pub audit: Mutex<AuditLog>,
    /// Agents by host: online or not.
    pub agents: Mutex<BTreeMap<String, bool>>,
    /// Versions in force.
    pub info: Mutex<Info>,
    /// Approval requests of `approve`-mode policies.
    pub approvals: SharedApprovals,
    /// Bearer token the API's approval endpoints require, when set.
    pub api_token: Option<String>,
}

impl Shared {
    /// The cache, even if a panicking holder poisoned the lock.
    pub fn lock_cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The entities, even if poisoned.
    pub fn lock_entities(&self) -> MutexGuard<'_, Entities> {
        self.entities.lock().unwrap_or_else(|p| p.into_inner())
    }
}

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
    let node_id = format!("{site}/{}", config.node);
    let (mut models, installed) = Models::open(
        config.model.clone(),
        keys.clone(),
        &node_id,
        &config.data_dir.join("models"),
    );
    // The model installed before a restart, verified again before it scores.
    let detector = match installed.map(|b| verify_bundle(&b, &keys, None)) {
        Some(Ok(d)) => {
            if let Some((_, v)) = d.release() {
                models.resumed(v);
                metrics.model_release.set(v as i64);
            }
            info!(model = %d.model_version(), "Loaded the installed model.");
            d
        }
        Some(Err(e)) => {
            warn!(error = %e.0, "The installed model does not verify; starting the default model.");
            Detector::new(config.detector.clone())?
        }
        None => Detector::new(config.detector.clone())?,
    };
    // A snapshot from before a restart: rows go back as their series return.
    let snap_path = config.data_dir.join("detector.snap");
    let mut snapshot = crate::snapshot::load(&snap_path).unwrap_or_default();
    let mut detector = detector;
    if let Some((w, steps)) = snapshot
        .weights
        .take()
        .filter(|_| detector.release().is_none())
    {
        if let Err(e) = detector.load_weights_bytes(&w, steps) {
            warn!(error = %e, "The snapshot's weights do not fit; starting from the model's own.");
        }
    }
    if !snapshot.is_empty() {
        info!(
            series = snapshot.len(),
            "Detector snapshot read; series resume where they left off."
        );
    }
    let shared = Arc::new(Shared {
        site: site.clone(),
        node: config.node.clone(),
        cache: Mutex::new(
            Cache::new(config.cache.max_series, config.cache.points_per_series)
                .with_max_past(config.max_past_secs as i64 * 1000)
                .with_max_abs(config.max_abs_value)
                .with_lifecycle(
                    config.cache.evict_idle_secs as i64 * 1000,
                    config.cache.protect_secs as i64 * 1000,
                ),
        ),
        entities: Mutex::new(Entities::default()),
        anomalies: Mutex::new(VecDeque::new()),
        audit: Mutex::new(audit),
        agents: Mutex::new(BTreeMap::new()),
        info: Mutex::new(Info {
            model_version: detector.model_version(),
            model_release: detector.release().map(|(_, v)| v),
            policy_version: policies.version.clone(),
        }),
        approvals: SharedApprovals::default(),
        api_token: config.api_token.clone(),
    });

    let presence = |state| {
        encode(&Presence {
            node: config.node.clone(),
            role: "edge".into(),
            state,
            ts_ms: now_ms(),
            actions: vec![],
        })
    };
    let p = topic::PREFIX;
    let spec = LinkSpec {
        settings: config.mqtt.clone(),
        default_client_id: format!("vigil-edge-{site}-{}", config.node),
        subscriptions: vec![
            format!("{p}/{site}/+/metrics"),
            format!("{p}/{site}/+/results"),
            format!("{p}/{site}/+/presence"),
            format!("{p}/{site}/sensors/+"),
            topic::model_release(&config.model.family),
            topic::uplink_ack(&site),
        ],
        presence: Some(PresenceSpec {
            topic: topic::edge_presence(&site),
            online: presence(PresenceState::Online),
            offline: presence(PresenceState::Offline),
        }),
    };
    // At most 256 messages and 16 MiB: the link waits for room beyond it.
    let (inbox_tx, inbox) = mqtt::inbox(256, 16 << 20);
    let (publisher, link) = mqtt::open(spec, inbox_tx, metrics.link.clone())?;
    let (out, out_task) = outbox(4096, publisher.clone(), metrics.link.clone());
    let spool_path = config.data_dir.join("uplink.redb");
    let (uplink, uplink_task) = crate::uplink::open(
        &spool_path,
        &config.uplink,
        publisher.clone(),
        metrics.uplink.clone(),
    )
    .with_context(|| format!("opening the uplink buffer {}", spool_path.display()))?;

    let tracker = TaskTracker::new();
    let link_token = link.spawn_on(&tracker);
    let out_token = CancellationToken::new();
    tracker.spawn(out_task.run(out_token.clone()));
    let uplink_token = CancellationToken::new();
    tracker.spawn(uplink_task.run(uplink_token.clone()));
    let health = vigil_core::telemetry::Health::default();
    health.add("mqtt", publisher.readiness());
    vigil_core::telemetry::spawn_server(
        &tracker,
        listener,
        &metrics.registry,
        health,
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

    // The uplink task stores what is still queued before it stops.
    uplink_token.cancel();
    out_token.cancel();
    link_token.cancel();
    if !vigil_core::shutdown::drain(&tracker, Duration::from_secs(3)).await {
        warn!("Some edge tasks did not stop within 3 s.");
    }
    info!("Edge node stopped.");
    Ok(())
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

/// The model's behaviour since the last heartbeat.
#[derive(Default)]
struct HealthWindow {
    h: ModelHealth,
    scores: Vec<f32>,
}

/// Scores kept per heartbeat window for the quantiles.
const HEALTH_SCORES: usize = 20_000;

impl HealthWindow {
    /// Adds this tick to the model-health window: values scored and
    /// flagged, and `up` series at 0 the model did not flag (missed incidents).
    fn observe(&mut self, cache: &Cache, values: &[Option<f64>], scores: &[f32], threshold: f32) {
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

    fn take(&mut self) -> ModelHealth {
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

/// Checks a bundle file (format, every hash, signature) and builds its
/// detector; when `release` is given, the bundle must be that release.
fn verify_bundle(
    bytes: &[u8],
    keys: &Keyring,
    release: Option<&Release>,
) -> Result<Detector, (String, &'static str)> {
    let refuse = |e: vigil_models::bundle::BundleError| (e.to_string(), e.reason());
    let b = Bundle::from_bytes(bytes).map_err(refuse)?;
    b.verify(keys).map_err(refuse)?;
    let m = b.manifest();
    if let Some(r) = release {
        if m.family != r.family || m.version != r.version {
            return Err((
                format!(
                    "bundle is {}-v{}, the release names {}-v{}",
                    m.family, m.version, r.family, r.version
                ),
                "mismatch",
            ));
        }
    }
    b.detector().map_err(refuse)
}

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

    /// Adds a message for the cloud to this turn's batch.
    fn for_cloud<P: vigil_core::Payload>(&mut self, priority: Priority, kind: &str, body: &P) {
        let topic = topic::uplink(&self.config.site, kind);
        self.to_cloud.push(Queued::new(priority, topic, body));
    }

    /// Acts on what the model updater asks: a chunk request goes out; a
    /// complete bundle is verified and built on a blocking thread, and comes
    /// back through `installs` to be swapped in between two ticks.
    fn model_next(&mut self, next: Next) {
        match next {
            Next::Idle => {}
            Next::Ask(req) => {
                let want = topic::model_chunks(&req.family, req.version);
                if self.chunk_sub.as_deref() != Some(want.as_str()) {
                    self.drop_chunk_sub();
                    self.publisher.subscribe(&want);
                    self.chunk_sub = Some(want);
                }
                let t = topic::model_request(self.models.family());
                self.out.send(t, &req, false);
            }
            Next::Reset => self.reset_model(),
            Next::Install { release, bytes } => {
                self.drop_chunk_sub();
                let (keys, tx) = (self.keys.clone(), self.installs_tx.clone());
                tokio::task::spawn_blocking(move || {
                    let built = verify_bundle(&bytes, &keys, Some(&release));
                    let _ = tx.blocking_send((release, bytes, built));
                });
            }
        }
    }

    /// Goes back to the edge's own model (a signed rollback to release 0).
    fn reset_model(&mut self) {
        self.drop_chunk_sub();
        match Detector::new(self.config.detector.clone()) {
            Ok(fresh) => {
                if let Err(e) = self.models.reset() {
                    warn!(error = %e, "Could not move the model bundle aside.");
                }
                let (was, now) = self.put_model(fresh, None);
                info!(from = %was, to = %now, "Rolled back to the edge's own model.");
            }
            Err(e) => {
                warn!(error = %e, "Could not build the default model; the running one stays.")
            }
        }
    }

    /// Puts `new` in place of the running model between two ticks: it takes
    /// over the per-series state, so scoring goes on with no warm-up.
    /// Returns the versions before and after.
    fn put_model(&mut self, mut new: Detector, release: Option<u64>) -> (String, String) {
        if let Some(old) = self.detector.as_mut() {
            new.adopt_state(old);
        }
        let was = self.model_version();
        let now = new.model_version();
        self.detector = Some(new);
        if let Ok(mut i) = self.shared.info.lock() {
            i.model_version = now.clone();
            i.model_release = release;
        }
        self.metrics.model_release.set(release.unwrap_or(0) as i64);
        self.metrics
            .model_updates
            .with_label_values(&["installed"])
            .inc();
        (was, now)
    }

    /// Counts a refused release or bundle; the running model stays.
    fn refused(&self, reason: &str) {
        self.metrics
            .model_refusals
            .with_label_values(&[reason])
            .inc();
        self.metrics
            .model_updates
            .with_label_values(&["refused"])
            .inc();
    }

    fn drop_chunk_sub(&mut self) {
        if let Some(f) = self.chunk_sub.take() {
            self.publisher.unsubscribe(&f);
        }
    }

    /// Swaps in a verified model; a refused one leaves the running model scoring.
    fn swap(&mut self, (release, bytes, built): Install) {
        let new = match built {
            Ok(d) => d,
            Err((e, reason)) => {
                self.models.abandon();
                self.refused(reason);
                warn!(version = release.version, reason, error = %e, "Model bundle refused; the running model keeps scoring.");
                return;
            }
        };
        let started = self.models.transfer_started_ms();
        if let Err(e) = self.models.installed(release.version, &bytes) {
            warn!(error = %e, "Could not keep the model bundle on disk; it scores until restart.");
        }
        let (was, now) = self.put_model(new, Some(release.version));
        if let Some(t) = started {
            self.metrics
                .model_transfer_seconds
                .observe((now_ms() - t).max(0) as f64 / 1000.0);
        }
        info!(from = %was, to = %now, stage = release.stage.as_str(), bytes = bytes.len(), "Model swapped in.");
    }

    fn count_chunks(&self) {
        let c = self.models.counts;
        for (label, n) in [
            ("stored", c.stored),
            ("duplicate", c.duplicate),
            ("bad", c.bad),
            ("unexpected", c.unexpected),
        ] {
            let m = self.metrics.model_chunks.with_label_values(&[label]);
            m.inc_by(n.saturating_sub(m.get()));
        }
    }

    /// Takes an edited policy file; a broken edit is refused with every
    /// error, counted, and the policies in force stay.
    fn reload_policy(&mut self) {
        let Some(watch) = &mut self.policy_watch else {
            return;
        };
        let Some(result) = watch.reload(PolicySet::parse) else {
            return;
        };
        match result {
            Ok(set) => {
                info!(path = %watch.path().display(), version = %set.version, policies = set.policies.len(), "Policy reloaded.");
                self.metrics.policy_reloads.with_label_values(&["ok"]).inc();
                if let Ok(mut i) = self.shared.info.lock() {
                    i.policy_version = set.version.clone();
                }
                self.engine.set_policies(set);
                // Policies that went away lose their budget gauge.
                self.metrics.budget_left.reset();
            }
            Err(errors) => {
                self.metrics
                    .policy_reloads
                    .with_label_values(&["failed"])
                    .inc();
                warn!(errors = %errors.join("\n"), version = %self.engine.policy_version(), "Policy edit refused; the policies in force stay.");
            }
        }
    }

    fn on_message(&mut self, m: &Publish) {
        let now = now_ms();
        match classify(
            &self.config.site,
            &m.topic,
            &m.payload,
            self.config.max_message_bytes,
            now,
        ) {
            Ok(Inbound::Batch { batch, sent_ms }) => {
                self.metrics
                    .link
                    .received
                    .with_label_values(&["metrics"])
                    .inc();
                let timing = self.config.timing();
                let shift = timing.batch_shift(sent_ms, now);
                if shift != 0 {
                    self.metrics
                        .samples_restamped
                        .with_label_values(&[Restamp::SenderClock.as_str()])
                        .inc_by(batch.samples.len() as u64);
                    if let Some(skipped) = self.ratelog.allow(&format!("clock {}", batch.host)) {
                        warn!(sender = %batch.host, off_secs = -shift as f64 / 1000.0, skipped, "Sender's clock is off; judging its samples by their arrival time.");
                    }
                }
                let shared = self.shared.clone();
                let mut cache = shared.lock_cache();
                for s in batch.samples {
                    let placed = timing.place(s.ts_ms.saturating_add(shift), now);
                    let id = SeriesId::new(s.entity, s.metric);
                    self.accept(&mut cache, &batch.host, &id, placed, s.value, now);
                }
                self.metrics.series.set(cache.len() as i64);
                drop(cache);
                self.after_samples(now);
            }
            Ok(Inbound::Sensor { name, ts_ms, value }) => {
                self.metrics
                    .link
                    .received
                    .with_label_values(&["sensor"])
                    .inc();
                let placed = self.config.timing().place_sensor(ts_ms, now);
                let id = SeriesId::new(EntityId::sensor(&name), "value");
                let shared = self.shared.clone();
                let mut cache = shared.lock_cache();
                self.accept(&mut cache, &id.entity.to_string(), &id, placed, value, now);
                self.metrics.series.set(cache.len() as i64);
                drop(cache);
                self.after_samples(now);
            }
            Ok(Inbound::Result(r)) => {
                self.metrics
                    .link
                    .received
                    .with_label_values(&["result"])
                    .inc();
                let model = self.model_version();
                match self.engine.on_result(&r, now, &model) {
                    Some(d) => {
                        self.metrics
                            .action_results
                            .with_label_values(&[r.outcome.as_str()])
                            .inc();
                        self.apply(d)
                    }
                    None => self.unexpected_result(&r, &model),
                }
            }
            Ok(Inbound::AgentPresence {
                host,
                online,
                actions,
            }) => {
                self.metrics
                    .link
                    .received
                    .with_label_values(&["presence"])
                    .inc();
                info!(%host, online, actions = actions.len(), "Agent presence.");
                if online && !actions.is_empty() {
                    self.engine.set_agent_actions(&host, actions);
                    self.check_policies_against_agents();
                }
                if let Ok(mut a) = self.shared.agents.lock() {
                    a.insert(host, online);
                }
            }
            Ok(Inbound::Ack(ack)) => {
                self.metrics
                    .link
                    .received
                    .with_label_values(&["uplink_ack"])
                    .inc();
                self.uplink.ack(ack);
            }
            Ok(Inbound::Release { family, signed }) if family == self.models.family() => {
                self.metrics
                    .link
                    .received
                    .with_label_values(&["release"])
                    .inc();
                match self.models.on_release(&signed, now) {
                    Ok(next) => self.model_next(next),
                    Err(r) => {
                        self.refused(r.reason());
                        warn!(reason = r.reason(), error = %r, "Model release refused; the running model keeps scoring.");
                    }
                }
            }
            Ok(Inbound::Chunk {
                family,
                version,
                index,
                bytes,
            }) if family == self.models.family() => {
                self.metrics
                    .link
                    .received
                    .with_label_values(&["chunk"])
                    .inc();
                let next = self.models.on_chunk(version, index, &bytes, now);
                self.count_chunks();
                self.model_next(next);
            }
            Ok(Inbound::Release { .. } | Inbound::Chunk { .. } | Inbound::Ignored) => {}
            Err((kind, e)) => {
                self.metrics.link.received.with_label_values(&[kind]).inc();
                self.metrics
                    .link
                    .malformed
                    .with_label_values(&[e.reason()])
                    .inc();
                warn!(topic = %m.topic, kind, error = %e, "Dropped malformed message.");
            }
        }
    }

    /// Caches one sample placed on the edge's clock; every refusal and
    /// restamp is counted, and logged (rate-limited) with its sender.
    fn accept(
        &mut self,
        cache: &mut Cache,
        sender: &str,
        id: &SeriesId,
        placed: Result<(i64, Option<Restamp>), Refusal>,
        value: f64,
        now: i64,
    ) {
        let pushed = placed.and_then(|(ts, restamp)| {
            let max_future = self.config.max_future_secs as i64 * 1000;
            let displaced = cache.push_admit(id, ts, value, now, max_future)?;
            if displaced {
                self.metrics
                    .series_evicted
                    .with_label_values(&["room"])
                    .inc();
                if let Some(skipped) = self.ratelog.allow("room") {
                    info!(%sender, series = %id, skipped, "Cache full: a new series took the slot of the stalest one that was not live.");
                }
            }
            Ok(restamp)
        });
        match pushed {
            Ok(restamp) => {
                self.metrics.samples.inc();
                if let Some(r) = restamp.filter(|r| *r == Restamp::Ahead) {
                    self.metrics
                        .samples_restamped
                        .with_label_values(&[r.as_str()])
                        .inc();
                    if let Some(skipped) = self.ratelog.allow(&format!("ahead {sender}")) {
                        warn!(%sender, series = %id, skipped, "Sample stamped ahead of the edge's clock; placed at its arrival time.");
                    }
                }
            }
            Err(r) => {
                self.metrics
                    .samples_refused
                    .with_label_values(&[r.as_str()])
                    .inc();
                self.health.h.refused += 1;
                if let Some(skipped) = self.ratelog.allow(&format!("{} {sender}", r.as_str())) {
                    warn!(%sender, series = %id, reason = r.as_str(), %value, skipped, "Sample refused.");
                }
            }
        }
    }

    /// Warns about every policy that names an action an agent it would
    /// send to does not have (from the catalogs agents announce), and
    /// counts them; the engine holds such actions back, naming the rail.
    fn check_policies_against_agents(&mut self) {
        let problems = self.engine.missing_actions(&self.shared.lock_entities());
        self.metrics.policy_problems.set(problems.len() as i64);
        for p in problems
            .iter()
            .filter(|p| !self.policy_problems.contains(p))
        {
            warn!(problem = %p, "Policy names an action the agent does not have.");
        }
        self.policy_problems = problems;
    }

    /// Audits a result for no command in flight: one this edge never sent
    /// (forged, or another edge's) or one it closed already (a replay).
    fn unexpected_result(&mut self, r: &vigil_core::message::CommandResult, model: &str) {
        let sent = self
            .shared
            .audit
            .lock()
            .ok()
            .and_then(|a| a.sent(&r.command_id).cloned());
        let known = sent.as_ref().is_some_and(|_| {
            self.shared.audit.lock().is_ok_and(|a| {
                a.result_of(&r.command_id)
                    .is_some_and(|x| x.outcome.is_some())
            })
        });
        if known {
            // An agent sends its recent results again when the edge comes
            // back; these are already on record.
            tracing::debug!(command_id = %r.command_id, "Result already on record.");
            return;
        }
        self.metrics.unexpected_results.inc();
        let why = match &sent {
            Some(_) => "a command this edge sent and has closed (a replay or a late result)",
            None => "a command this edge never sent (forged, or another edge's)",
        };
        if let Some(skipped) = self.ratelog.allow(&format!("unexpected {}", r.host)) {
            warn!(command_id = %r.command_id, agent = %r.host, outcome = r.outcome.as_str(), why, skipped, "Result for no command in flight.");
        }
        let rec = AuditRecord {
            ts_ms: now_ms(),
            site: self.config.site.clone(),
            kind: AuditKind::UnexpectedResult,
            policy: sent.as_ref().map(|s| s.policy.clone()).unwrap_or_default(),
            policy_version: self.engine.policy_version().to_string(),
            target: r.target.clone(),
            action: r.action.clone(),
            command_id: Some(r.command_id.clone()),
            anomaly_id: sent.and_then(|s| s.anomaly_id),
            model_version: model.to_string(),
            score: None,
            top_metric: String::new(),
            mode: String::new(),
            lease_token: r.lease_token,
            outcome: Some(r.outcome),
            rail: None,
            detail: format!(
                "{} on {} for {why}: {}",
                r.outcome.as_str(),
                r.host,
                r.detail
            ),
        };
        self.apply(Decisions {
            commands: Vec::new(),
            audit: vec![rec],
        });
    }

    fn model_version(&self) -> String {
        self.shared
            .info
            .lock()
            .map(|i| i.model_version.clone())
            .unwrap_or_default()
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
        let timer = self.metrics.tick_seconds.start_timer();
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
        self.metrics.threshold.set(threshold);
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

    /// (policy, target) pairs whose liveness condition has held long enough.
    fn due_now(&self) -> std::collections::HashSet<(String, EntityId)> {
        let policies = &self.engine.policies().policies;
        self.live
            .firing()
            .iter()
            .filter(|f| {
                policies
                    .iter()
                    .find(|p| p.name == f.policy)
                    .is_some_and(|p| f.held_ms as f64 >= p.for_secs() * 1000.0)
            })
            .map(|f| (f.policy.clone(), f.entity.clone()))
            .collect()
    }

    /// Whether a liveness condition has come due since the last decision.
    fn newly_due(&self) -> bool {
        !self.due_now().is_subset(&self.due)
    }

    /// Counts an anomaly, keeps it for the API and sends it to the cloud.
    fn record_anomaly(&mut self, ev: AnomalyEvent) {
        self.metrics.anomalies.inc();
        self.for_cloud(Priority::Audit, "anomaly", &ev);
        if let Ok(mut a) = self.shared.anomalies.lock() {
            if a.len() >= RECENT_ANOMALIES {
                a.pop_front();
            }
            a.push_back(ev);
        }
    }

    /// Runs the remediation engine over the entities and liveness
    /// conditions as they stand, and carries out what it decides. A
    /// condition that has just come due is an incident of its own: an
    /// anomaly event whose id the commands it leads to carry.
    fn decide(&mut self, now: i64, model: &str) {
        let due = self.due_now();
        let opened: Vec<AnomalyEvent> = self
            .live
            .firing()
            .iter()
            .filter(|f| {
                let key = (f.policy.clone(), f.entity.clone());
                due.contains(&key) && !self.due.contains(&key)
            })
            .inspect(|f| {
                // The fault showed in its first sample that met the condition.
                self.metrics
                    .fault_to_detection_seconds
                    .observe((now - f.since_ms).max(0) as f64 / 1000.0);
            })
            .map(|f| AnomalyEvent {
                id: f.episode.clone(),
                site: self.config.site.clone(),
                entity: f.entity.clone(),
                score: 1.0,
                top_metric: f.metric.clone(),
                contributors: vec![vigil_core::message::Contributor {
                    metric: f.metric.clone(),
                    score: 1.0,
                    value: f.value,
                }],
                ts_ms: now,
                model_version: format!("liveness: {}", f.condition),
            })
            .collect();
        for ev in opened {
            info!(entity = %ev.entity, condition = %ev.model_version, "Liveness condition holds.");
            self.record_anomaly(ev);
        }
        let decisions = {
            let ents = self.shared.lock_entities();
            self.metrics
                .anomalous_entities
                .set(ents.anomalous_count() as i64);
            self.engine.on_tick(now, &ents, &self.live, model)
        };
        self.due = due;
        self.metrics
            .short_circuit
            .set(self.engine.short_circuited() as i64);
        self.apply(decisions);
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
            self.metrics.anomaly_score.reset();
        }
        for (score, id) in top {
            self.metrics
                .anomaly_score
                .with_label_values(&[id.as_str()])
                .set(score as f64);
        }
    }

    fn apply(&mut self, d: Decisions) {
        let now = now_ms();
        for (agent, mut cmd) in d.commands {
            cmd.to = agent.clone();
            cmd.sign(&self.command_key);
            // Detected when its anomaly (or liveness episode) opened.
            let opened = cmd.anomaly_id.as_ref().and_then(|id| {
                let recent = self.shared.anomalies.lock().ok()?;
                recent.iter().rev().find(|a| &a.id == id).map(|a| a.ts_ms)
            });
            if let Some(since) = opened {
                self.metrics
                    .detection_to_action_seconds
                    .observe((now - since).max(0) as f64 / 1000.0);
            }
            info!(target_entity = %cmd.target, action = %cmd.action, %agent, id = %cmd.id, "Sending remediation command.");
            self.metrics.commands_sent.inc();
            if cmd.policy == crate::remediation::SHORT_CIRCUIT {
                self.metrics.pages.inc();
            }
            self.health.h.actions += 1;
            self.out
                .send(topic::commands(&self.config.site, &agent), &cmd, false);
        }
        for rec in d.audit {
            self.count_audit(&rec);
            info!(kind = ?rec.kind, policy = %rec.policy, target_entity = %rec.target, detail = %rec.detail, "Audit.");
            if let Ok(mut log) = self.shared.audit.lock() {
                if let Err(e) = log.append(&rec) {
                    self.metrics.audit_write_errors.inc();
                    warn!(error = %e, path = %log.path().display(), "Could not write audit record.");
                }
            }
            self.for_cloud(Priority::Audit, "audit", &rec);
        }
    }

    fn count_audit(&self, rec: &AuditRecord) {
        if matches!(rec.kind, AuditKind::Verified | AuditKind::VerifyFailed) {
            self.metrics
                .policy_outcome(&rec.policy, rec.kind == AuditKind::Verified);
        }
        match rec.kind {
            AuditKind::HeldBack => self
                .metrics
                .held_back
                .with_label_values(&[crate::metrics::rail_label(rec)])
                .inc(),
            AuditKind::Verified => self
                .metrics
                .verifications
                .with_label_values(&["verified"])
                .inc(),
            AuditKind::VerifyFailed => self
                .metrics
                .verifications
                .with_label_values(&["failed"])
                .inc(),
            AuditKind::ActionResult if rec.outcome.is_none() => self
                .metrics
                .action_results
                .with_label_values(&["no_result"])
                .inc(),
            _ => {}
        }
    }

    /// Hands every point gathered since the last call to the uplink: the
    /// points a tick scored as scores, the ones between ticks as raw samples.
    fn uplink_samples(&mut self) {
        let unsent = self.shared.lock_cache().take_unsent();
        self.metrics.uplink.ring_lost.inc_by(unsent.lost);
        let (scored, raw): (Vec<_>, Vec<_>) = unsent
            .points
            .into_iter()
            .map(|(id, p)| ScoredSample {
                entity: id.entity,
                metric: id.metric,
                ts_ms: p.ts_ms,
                value: p.value,
                score: p.scored.then_some(p.score as f64),
            })
            .partition(|s| s.score.is_some());
        for (priority, kind, samples) in [
            (Priority::Scores, "scores", scored),
            (Priority::Samples, "samples", raw),
        ] {
            // Keep each message well under the broker's packet limit.
            for chunk in samples.chunks(2000) {
                let batch = SampleBatch {
                    site: self.config.site.clone(),
                    samples: chunk.to_vec(),
                };
                self.for_cloud(priority, kind, &batch);
            }
        }
    }

    fn heartbeat(&mut self) {
        // New entities can bring policies to agents that lack their action.
        self.check_policies_against_agents();
        // Budgets walk every known target: once a heartbeat, not every tick.
        for (policy, left) in self.engine.budgets_left(now_ms()) {
            self.metrics
                .budget_left
                .with_label_values(&[policy])
                .set(left as i64);
        }
        let health = self.health.take();
        let model_release = self.shared.info.lock().ok().and_then(|i| i.model_release);
        let hb = Heartbeat {
            model_family: self.models.family().to_string(),
            model_release,
            health,
            site: self.config.site.clone(),
            node: self.config.node.clone(),
            ts_ms: now_ms(),
            version: env!("CARGO_PKG_VERSION").into(),
            model_version: self.model_version(),
            series: self.shared.lock_cache().len() as u64,
            anomalous_entities: self.shared.lock_entities().anomalous_count() as u64,
            agents_online: self
                .shared
                .agents
                .lock()
                .map(|a| a.values().filter(|&&o| o).count() as u64)
                .unwrap_or(0),
        };
        self.out
            .send(topic::uplink(&self.config.site, "heartbeat"), &hb, false);
    }
}
