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
mod tick;
mod to_cloud;

use health::HealthWindow;
use model_swap::starting_model;

/// Anomaly events kept for the API.
const RECENT_ANOMALIES: usize = 500;

pub use crate::shared::{Info, Shared};

/// Runs an edge node with `config` and `policies` until SIGINT or SIGTERM,
/// with its own listener and metrics (`vigil-edge` and `vigil edge`).
pub async fn serve(config: EdgeConfig, policies: crate::PolicySet) -> anyhow::Result<()> {
    let listener = vigil_core::telemetry::bind(&config.listen).await?;
    let metrics = EdgeMetrics::new()?;
    run(
        config,
        policies,
        listener,
        metrics,
        vigil_core::shutdown::on_signal(),
    )
    .await
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
    let (audit, budgets, keys) = open_state(&config)?;
    let command_key = command_key(&config)?;
    let (models, detector, entity_models, snapshot) = starting_model(&config, &keys, &metrics)?;
    let shared = Arc::new(Shared::new(&config, audit, &detector, &policies));

    let spec = link_spec(&config);
    // At most 32 MiB (and 65536 messages): room for a second of agents'
    // batches at 300,000 samples/s while a tick scores, so the link keeps
    // reading and the broker's queue for this edge (Mosquitto: 1000
    // messages) never overflows. The link waits for room beyond it.
    let (mut role, inbox) = Role::start("edge", spec, (65_536, 32 << 20), metrics.link.clone())?;
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
    let alerts = match config.alerts.url.is_empty() {
        true => None,
        false => Some(crate::alerts::Alerts::start(
            &config.alerts,
            &config.site,
            metrics.alerts.clone(),
            shutdown.child_token(),
        )?),
    };
    let (remote_tx, remote) = mpsc::channel(crate::remote_write::QUEUE);
    let mut api = crate::api::router(shared.clone());
    if config.remote_write.enabled {
        api = api.merge(crate::remote_write::router(
            &config.remote_write,
            config.api_token.clone(),
            remote_tx,
            metrics.remote_write.clone(),
        ));
    }
    role.serve(listener, &metrics.registry, api, &shutdown);

    let (engine, resumed) = engine(
        &config,
        policies,
        budgets,
        &shared,
        &detector.model_version(),
    );
    let policy_watch = FileWatch::started_with(&config.policy);
    let (installs_tx, installs) = mpsc::channel(4);
    let gaps = crate::gaps::Gaps::new(metrics.batches_missing.clone());
    let intake = crate::intake::Intake::new(config.intake.clone());
    let mut node = Node {
        config,
        shared,
        metrics,
        out,
        uplink,
        to_cloud: Vec::new(),
        engine,
        detector: Some(detector),
        entity_models: Some(entity_models),
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
        gaps,
        command_key,
        policy_problems: Vec::new(),
        policy_refused: false,
        intake,
        snapshot,
        alerts,
    };
    info!(%site, "Edge node running.");
    node.apply(resumed);
    node.run(inbox, (installs, remote), shutdown).await;

    role.drain().await;
    info!("Edge node stopped.");
    Ok(())
}

/// What the edge keeps on disk and trusts: the audit log, the action
/// budgets (beside it, so a restarted edge keeps counting), and the keys
/// model releases must be signed with.
fn open_state(config: &EdgeConfig) -> anyhow::Result<(AuditLog, crate::budget::Budgets, Keyring)> {
    let audit_path = config.data_dir.join("audit.jsonl");
    let audit = AuditLog::open(&audit_path)
        .with_context(|| format!("opening audit log {}", audit_path.display()))?;
    // Budgets live beside the audit log so a restarted edge keeps counting.
    let budgets = crate::budget::Budgets::open(&config.data_dir.join("budgets.json"))?;
    let keys = Keyring::load(&config.model.trusted_keys)
        .map_err(|e| anyhow::anyhow!("model.trusted_keys: {}", e.join("; ")))?;
    Ok((audit, budgets, keys))
}

/// The key the edge signs its commands with (made on the first run).
fn command_key(config: &EdgeConfig) -> anyhow::Result<vigil_core::signing::SecretKey> {
    let key_path = config.command_key_path();
    let (key, made) = vigil_core::signing::SecretKey::read_or_create(&key_path)
        .map_err(|e| anyhow::anyhow!("command_key: {e}"))?;
    if made {
        info!(key = %key_path.display(), public = %key_path.with_extension("pub").display(), "Made a command signing key; agents must trust its public half (trusted_edge_keys).");
    }
    info!(key_id = %key.public().id(), "Commands are signed.");
    Ok(key)
}

/// The remediation engine, with the commands a restart left in flight
/// taken back: every action_sent record ends with a result and a verdict.
fn engine(
    config: &EdgeConfig,
    policies: PolicySet,
    budgets: crate::budget::Budgets,
    shared: &Shared,
    model: &str,
) -> (Engine, Decisions) {
    let mut engine = Engine::new(
        config.site.clone(),
        policies,
        config.command_ttl_secs as i64 * 1000,
        budgets,
    )
    .with_rails(config.rails.clone())
    .with_node(&config.node)
    .with_approvals(shared.approvals.clone());
    let open = shared
        .audit
        .lock()
        .map(|a| a.open_actions())
        .unwrap_or_default();
    if !open.is_empty() {
        info!(commands = open.len(), "Commands were in flight when the edge stopped; waiting for their results, then checking recovery.");
    }
    let resumed = engine.resume(&open, model);
    (engine, resumed)
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
    /// Every entity's model (taken while a tick scores on its thread).
    entity_models: Option<crate::entity::EntityModels>,
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
    /// Anomalies posted to Alertmanager, when `alerts.url` is set.
    alerts: Option<crate::alerts::Alerts>,
    /// Log lines about bad input, at most one per sender and kind a while.
    ratelog: vigil_core::ratelog::RateLog,
    /// Agent batches that never arrived.
    gaps: crate::gaps::Gaps,
    /// Signs every command (agents run only what a trusted edge signed).
    command_key: vigil_core::signing::SecretKey,
    /// Policy problems already warned about.
    policy_problems: Vec<String>,
    /// Whether the last policy edit was refused (read again when an
    /// agent's catalog changes).
    policy_refused: bool,
    /// Per-sender limits on bytes and new series.
    intake: crate::intake::Intake,
    /// Detector rows from before a restart, waiting for their series.
    snapshot: crate::snapshot::Snapshot,
    /// (policy, target) pairs whose condition had held long enough at the
    /// last decision: a new one is decided on at once, not at the next tick.
    due: std::collections::HashSet<(String, EntityId)>,
}

/// A verified model ready to swap in, or why it was refused.
type Install = (Release, Vec<u8>, Result<Built, (String, &'static str)>);

/// What a verified bundle holds: its detector and any entity models.
type Built = (Detector, Option<vigil_models::entity::EntitySet>);

impl Node {
    async fn run(
        mut self,
        mut inbox: mqtt::Inbox,
        (mut installs, mut remote): (
            mpsc::Receiver<Install>,
            mpsc::Receiver<crate::remote_write::Handoff>,
        ),
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
                m = inbox.recv_stamped() => match m { Some((m, at)) => self.on_message(&m, at), None => break },
                _ = tick.tick() => self.tick().await,

                _ = heartbeat.tick() => self.heartbeat(),
                _ = reload.tick() => self.reload_policy(),
                _ = transfer.tick() => {
                    let next = self.models.poll(now_ms());
                    self.model_next(next);
                }
                Some(i) = installs.recv() => self.swap(i),
                Some(samples) = remote.recv() => self.on_remote_write(samples),
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
}
