//! The aggregator's run loop: one task owns the buffer and the receipts.
//! It takes uplinks and presence ([`intake`]); what it stores is logged and
//! receipted after each group commit of the write-ahead log, and rolled into
//! Parquet in large parts ([`durable`]); it refreshes the registry; on start
//! it reads back the log the last run left, and on shutdown it rolls what it
//! holds.

mod adopt;
mod durable;
mod intake;

use crate::cluster::{self, Board, Leadership, Order};
use crate::config::CloudConfig;
use crate::lifecycle::{server, Hub, Lifecycle};
use crate::metrics::CloudMetrics;
use crate::receipts::Receipts;
use crate::recent::{self, Recent};
use crate::registry::Registry;
use crate::shared::Shared;
use crate::store::{Sink, Store};
use crate::wal::{self, Wal};
use anyhow::Context;
use durable::{Committed, Durable, Rolled};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use vigil_core::clock::now_ms;
use vigil_core::mqtt::LinkSpec;
use vigil_core::ratelog::RateLog;
use vigil_core::role::Role;
use vigil_core::topic::{self, UplinkKind};

/// A commit starts early once its records reach this many bytes.
const COMMIT_BYTES: usize = 8 << 20;

/// Runs an aggregator with `config` until SIGINT or SIGTERM, with its own
/// listener and metrics (`vigil-cloud` and `vigil cloud`).
pub async fn serve(config: CloudConfig) -> anyhow::Result<()> {
    let listener = vigil_core::telemetry::bind(&config.listen).await?;
    let metrics = CloudMetrics::new()?;
    run(config, listener, metrics, vigil_core::shutdown::on_signal()).await
}

/// Runs the aggregator until `shutdown`. `listener` serves the API and metrics.
pub async fn run(
    config: CloudConfig,
    listener: TcpListener,
    metrics: CloudMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sink = Arc::new(
        Sink::open(config.store.as_deref(), &config.s3, &config.data_dir)
            .map_err(anyhow::Error::msg)?,
    );
    sink.check().await.map_err(anyhow::Error::msg)?;
    let clustered = config.cluster.enabled();
    let member = match clustered {
        true => {
            let url = format!("http://{}", listener.local_addr()?);
            Some(cluster::join(&config.cluster, &config.data_dir, &url, &shutdown).await?)
        }
        false => None,
    };
    let (leadership, state_dir, tag) = match &member {
        Some(m) => (
            Leadership::member(),
            cluster::member_dir(&config.data_dir, m.name()),
            m.name().to_string(),
        ),
        None => (Leadership::alone(), config.data_dir.clone(), String::new()),
    };
    let leadership = Arc::new(leadership);
    let hub = Hub::open(
        config.models.clone(),
        &config.data_dir,
        metrics.lifecycle.clone(),
    )?;
    if !hub.can_publish() {
        warn!("No models.signing_key: models are trained and judged but nothing is published.");
    }
    let hub = Arc::new(Mutex::new(hub));
    let (jobs_tx, jobs) = mpsc::channel(256);
    let shared = Arc::new(Shared {
        registry: Mutex::new(Registry::new(config.node_ttl_secs as i64 * 1000)),
        anomalies: Mutex::new(Recent::new(config.recent, recent::MAX_BYTES)),
        audit: Mutex::new(Recent::new(config.recent, recent::MAX_BYTES)),
        models: Arc::new(Lifecycle {
            hub: hub.clone(),
            jobs: jobs_tx,
            data_dir: config.data_dir.clone(),
            sink: sink.clone(),
            leadership: leadership.clone(),
            training: Default::default(),
            metrics: metrics.lifecycle.clone(),
        }),
        api_token: config.api_token.clone(),
    });
    let spec = LinkSpec {
        settings: config.mqtt.clone(),
        default_client_id: format!("vigil-cloud-{}", std::process::id()),
        subscriptions: subscriptions(clustered, &config.models.family),
        presence: None,
    };
    // At most 1024 messages and 64 MiB: the link waits for room beyond it.
    let (mut role, inbox) =
        Role::start("aggregator", spec, (1024, 64 << 20), metrics.link.clone())?;
    let publisher = role.publisher.clone();
    let (server_publisher, lifecycle) = (publisher.clone(), metrics.lifecycle.clone());
    role.spawn_until_drain(|stop| server::serve(hub, server_publisher, jobs, lifecycle, stop));
    role.serve(
        listener,
        &metrics.registry,
        crate::api::router(shared.clone()),
        &shutdown,
    );

    let (store, receipts, durable, roll_id) =
        recover(&config, (&state_dir, &tag), &sink, &metrics)?;
    let board = Arc::new(Mutex::new(Board::default()));
    let (orders_tx, orders) = mpsc::channel(4096);
    let member_task = member.map(|m| {
        let (board, leadership, metrics) = (board.clone(), leadership.clone(), metrics.clone());
        tokio::spawn(m.run(board, orders_tx, leadership, metrics, shutdown.clone()))
    });
    let mut agg = Aggregator {
        sink,
        tag,
        owned: clustered.then(BTreeSet::new),
        board,
        adoptions: Vec::new(),
        force_roll: false,
        restoring: None,
        store,
        receipts,
        log: Vec::new(),
        durable,
        roll_id,
        roll_started_ms: now_ms(),
        committing: None,
        rolling: None,
        ratelog: RateLog::default(),
        publisher,
        shared,
        metrics,
        config,
    };
    info!(data_dir = %agg.config.data_dir.display(), store = %agg.sink.describe(""), "Cloud aggregator running.");
    let ran = agg.run(inbox, orders, shutdown).await;
    agg.finish().await;
    // Its lease goes only now that what it held is rolled: a survivor then
    // adopts what is left (the receipts) before taking its sites.
    if let Some(t) = member_task {
        match t.await {
            Ok(Some(m)) => m.leave().await,
            Ok(None) => {}
            Err(e) => warn!(error = %e, "The cluster member task failed to finish."),
        }
    }
    role.drain().await;
    info!("Cloud aggregator stopped.");
    ran
}

/// Reads back what the last run logged and did not roll: the buffer, the
/// receipts, the log (on a new segment) and the buffer's roll id.
fn recover(
    config: &CloudConfig,
    (state_dir, tag): (&Path, &str),
    sink: &Arc<Sink>,
    metrics: &CloudMetrics,
) -> anyhow::Result<(Store, Receipts, Durable, u64)> {
    let checkpoint_path = state_dir.join(adopt::CHECKPOINT);
    let (mut receipts, problem) = Receipts::open(&checkpoint_path);
    if let Some(p) = problem {
        warn!(problem = %p, "Starting with fresh uplink receipts; messages in flight may be stored twice.");
    }
    let wal_dir = state_dir.join("wal");
    let from = receipts.wal_from();
    // Left by a stop between a checkpoint and the deletion it allows.
    Wal::remove_below(&wal_dir, from)
        .with_context(|| format!("clearing rolled log segments in {}", wal_dir.display()))?;
    let mut store = Store::on(sink.clone()).tagged(tag);
    let max = config.max_message_bytes;
    let mut rows = 0u64;
    let replayed = wal::replay(&wal_dir, from, |topic, payload| {
        rows += u64::from(intake::replay(
            topic,
            payload,
            max,
            (&mut store, &mut receipts),
        ));
    })
    .with_context(|| format!("reading the write-ahead log in {}", wal_dir.display()))?;
    metrics.wal_replayed.inc_by(rows);
    if replayed.records > 0 || !replayed.torn.is_empty() {
        info!(messages = rows, torn_segments = ?replayed.torn, "Read back the write-ahead log: taken, not yet in Parquet.");
    }
    let roll_id = from.max(1);
    let wal = Wal::open(&wal_dir, roll_id)
        .with_context(|| format!("opening the write-ahead log in {}", wal_dir.display()))?;
    let durable = Durable {
        wal: Arc::new(Mutex::new(wal)),
        wal_dir,
        checkpoint_path,
    };
    Ok((store, receipts, durable, roll_id))
}

struct Aggregator {
    /// Where rolls go.
    sink: Arc<Sink>,
    /// In part names: the cluster member's name (empty alone).
    tag: String,
    /// The sites a cluster member owns; `None` alone (every site).
    owned: Option<BTreeSet<String>>,
    /// What the cluster member and the run loop tell each other.
    board: Arc<Mutex<Board>>,
    /// Dead members adopted: name, folder, and the roll that must be
    /// durable before the folder goes.
    adoptions: Vec<(String, PathBuf, u64)>,
    /// Roll at the next commit (after an adoption), rows or not.
    force_roll: bool,
    /// A dead member's rows being taken in.
    restoring: Option<adopt::Restoring>,
    /// Rows taken since the last roll began.
    store: Store,
    receipts: Receipts,
    /// Log records taken since the last commit began.
    log: Vec<u8>,
    durable: Durable,
    /// The buffer's part names: the first log segment of its rows.
    roll_id: u64,
    roll_started_ms: i64,
    committing: Option<JoinHandle<Committed>>,
    rolling: Option<JoinHandle<Rolled>>,
    ratelog: RateLog,
    publisher: vigil_core::mqtt::Publisher,
    shared: Arc<Shared>,
    metrics: CloudMetrics,
    config: CloudConfig,
}

/// What an aggregator subscribes to from the start. Alone: every uplink.
/// A cluster member: every site's heartbeats (sites whose retained presence
/// it missed, in a burst that overflowed its broker queue, are learnt from
/// them), anomalies and audit records (it lists them all in its API and
/// stores those of its own sites); the rows of a site once it owns it
/// ([`rows_of`]). The filters never overlap, so nothing comes twice.
fn subscriptions(clustered: bool, family: &str) -> Vec<String> {
    let mut s = match clustered {
        false => vec![topic::filter::all_uplinks()],
        true => [
            UplinkKind::Heartbeat,
            UplinkKind::Anomaly,
            UplinkKind::Audit,
        ]
        .map(topic::filter::all_uplinks_of)
        .to_vec(),
    };
    s.push(topic::filter::all_presence());
    s.push(topic::model_request(family));
    s
}

/// The topics of the rows (samples and scores) of `sites`.
fn rows_of(sites: &[String]) -> Vec<String> {
    sites
        .iter()
        .flat_map(|s| [UplinkKind::Samples, UplinkKind::Scores].map(|k| topic::uplink(s, k)))
        .collect()
}

/// The next message of a dead member's log being taken in; `None` once
/// it is all read (never while nothing is being taken in).
async fn restoring(r: &mut Option<adopt::Restoring>) -> Option<(String, Vec<u8>)> {
    match r.as_mut() {
        Some(r) => r.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits for a task that is there (the select arm is off otherwise).
async fn joined<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task.as_mut() {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

impl Aggregator {
    fn fresh_store(&self) -> Store {
        Store::on(self.sink.clone()).tagged(&self.tag)
    }

    async fn run(
        &mut self,
        mut inbox: vigil_core::mqtt::Inbox,
        mut orders: mpsc::Receiver<Order>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut commit = tokio::time::interval(Duration::from_millis(self.config.commit_ms));
        commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(Duration::from_secs(1));
        let every = self.config.models.train_every_secs.max(1);
        let mut retrain = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(every),
            Duration::from_secs(every),
        );
        loop {
            let paused = self.paused();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                m = inbox.recv(), if !paused => match m {
                    Some(m) => {
                        self.on_message(&m);
                        if self.log.len() >= COMMIT_BYTES {
                            self.start_commit(false, now_ms());
                        }
                    }
                    None => break,
                },
                c = joined(&mut self.committing) => {
                    self.committing = None;
                    let c = c.context("a write-ahead log commit failed to finish")?;
                    self.on_committed(c).await;
                }
                r = joined(&mut self.rolling) => {
                    self.rolling = None;
                    let r = r.context("a Parquet roll failed to finish")?;
                    self.on_rolled(r);
                }
                _ = commit.tick() => {
                    let now = now_ms();
                    let roll = self.roll_due(now);
                    self.start_commit(roll, now);
                }
                _ = refresh.tick() => {
                    self.send_receipts().await;
                    self.refresh_registry();
                    self.shared.models.tick(&self.shared.registry, now_ms());
                    self.metrics.buffered_bytes.set(self.store.pending_bytes() as i64);
                }
                m = restoring(&mut self.restoring), if !paused => match m {
                    Some((topic, payload)) => self.restore(&topic, &payload),
                    None => self.restored().await,
                },
                Some(order) = orders.recv() => {
                    if let Some(why) = self.on_order(order).await {
                        anyhow::bail!(why);
                    }
                }
                _ = retrain.tick(), if self.config.models.train_every_secs > 0 && self.shared.models.leadership.leads() => {
                    if !self.shared.models.start_training("schedule") {
                        info!("Scheduled training skipped: a run is still going.");
                    }
                }
            }
        }
        Ok(())
    }

    /// Does what the cluster member asks; a reason to stop, if it is one.
    async fn on_order(&mut self, order: Order) -> Option<String> {
        match order {
            Order::Own(sites) => {
                self.publisher.subscribe_all(&rows_of(&sites));
                info!(sites = sites.len(), "Took sites: subscribed to their rows.");
                if let Some(o) = &mut self.owned {
                    o.extend(sites);
                }
            }
            Order::Disown(sites) => {
                self.publisher.unsubscribe_all(&rows_of(&sites));
                warn!(
                    sites = sites.len(),
                    "This member no longer owns these sites; their new owners take their uplinks."
                );
                if let Some(o) = &mut self.owned {
                    sites.iter().for_each(|s| {
                        o.remove(s);
                    });
                }
            }
            Order::Adopt(member, dir) => self.adopt(member, dir).await,
            Order::Stop(why) => {
                error!(why, "Leaving the cluster.");
                return Some(why);
            }
        }
        None
    }

    /// Whether intake waits: the buffer holds twice a roll while a roll is
    /// still being written. The broker, then the edges' spools, hold the rest.
    fn paused(&mut self) -> bool {
        let full = self.store.pending_bytes() >= 2 * self.config.roll_bytes
            && (self.rolling.is_some() || self.committing.is_some());
        let was = self.metrics.ingest_paused.get() == 1;
        if full != was {
            self.metrics.ingest_paused.set(i64::from(full));
            if full {
                self.metrics.ingest_pauses.inc();
                if let Some(skipped) = self.ratelog.allow("paused") {
                    warn!(buffered_bytes = self.store.pending_bytes(), skipped, "Intake paused: the buffer is full and the last roll is still being written; the broker and the edges hold the rest.");
                }
            }
        }
        full
    }

    /// Waits for what is running, then commits and rolls what is left.
    async fn finish(&mut self) {
        // A dead member's rows being taken in are taken in whole first, so
        // the last roll holds all of them or (after a crash) none.
        while self.restoring.is_some() {
            match restoring(&mut self.restoring).await {
                Some((topic, payload)) => self.restore(&topic, &payload),
                None => self.restored().await,
            }
        }
        for _ in 0..2 {
            if let Some(c) = self.committing.take() {
                match c.await {
                    Ok(c) => self.on_committed(c).await,
                    Err(e) => {
                        error!(error = %e, "A log commit failed to finish; what it held is read back from the log on start.")
                    }
                }
            }
            if let Some(r) = self.rolling.take() {
                match r.await {
                    Ok(r) => self.on_rolled(r),
                    Err(e) => {
                        error!(error = %e, "A roll failed to finish; its rows are read back from the log on start.")
                    }
                }
            }
            let rows = self.store.pending_rows() > 0;
            self.start_commit(rows, now_ms());
        }
    }

    /// Publishes the receipts owed: for commits, and for duplicates of
    /// stored messages. A receipt never waits for room in the broker queue
    /// (intake would stop behind it): one that finds none is owed again with
    /// the next receipts, and meanwhile the edge keeps the message.
    async fn send_receipts(&mut self) {
        let all = self.receipts.take_receipts();
        let mut deferred = 0u64;
        for (site, ack) in all {
            if self
                .publisher
                .try_send(&topic::uplink_ack(&site), &ack, false)
            {
                self.metrics.uplink_acked.inc_by(ack.seqs.len() as u64);
            } else {
                deferred += ack.seqs.len() as u64;
                self.receipts.owe(&ack);
            }
        }
        if deferred > 0 {
            self.metrics.receipts_deferred.inc_by(deferred);
            if let Some(skipped) = self.ratelog.allow("deferred") {
                warn!(
                    messages = deferred,
                    skipped, "The broker queue is full; receipts deferred to the next commit."
                );
            }
        }
    }

    fn refresh_registry(&self) {
        if let Ok(mut r) = self.shared.registry.lock() {
            r.refresh(now_ms());
            // Zero rather than remove, so every role and state stays a series.
            for role in ["edge", "agent"] {
                for state in ["online", "offline"] {
                    self.metrics.nodes.with_label_values(&[role, state]).set(0);
                }
            }
            for ((role, online), n) in r.counts() {
                let state = if online { "online" } else { "offline" };
                self.metrics
                    .nodes
                    .with_label_values(&[role.as_str(), state])
                    .set(n);
            }
        }
    }
}
