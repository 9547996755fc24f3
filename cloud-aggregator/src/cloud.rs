//! The aggregator's run loop: one task owns the store; it ingests uplinks and
//! presence, flushes Parquet on a timer (on a blocking thread), acknowledges
//! spooled uplink messages once their rows are written, refreshes the
//! registry, and flushes once more on shutdown.

use crate::config::CloudConfig;
use crate::ingest::{self, Inbound};
use crate::lifecycle::{server, Hub, Lifecycle};
use crate::metrics::CloudMetrics;
use crate::receipts::{Intake, Receipts};
use crate::registry::Registry;
use crate::shared::{push_bounded, Shared};
use crate::store::Store;
use rumqttc::Publish;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigil_core::clock::now_ms;
use vigil_core::envelope::Seq;
use vigil_core::message::UplinkAck;
use vigil_core::mqtt::LinkSpec;
use vigil_core::role::Role;
use vigil_core::topic;

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
        anomalies: Mutex::new(VecDeque::new()),
        audit: Mutex::new(VecDeque::new()),
        models: Arc::new(Lifecycle {
            hub: hub.clone(),
            jobs: jobs_tx,
            data_dir: config.data_dir.clone(),
            training: Default::default(),
            metrics: metrics.lifecycle.clone(),
        }),
        api_token: config.api_token.clone(),
    });
    let spec = LinkSpec {
        settings: config.mqtt.clone(),
        default_client_id: format!("vigil-cloud-{}", std::process::id()),
        subscriptions: vec![
            topic::filter::all_uplinks(),
            topic::filter::all_presence(),
            topic::model_request(&config.models.family),
        ],
        presence: None,
    };
    // At most 1024 messages and 64 MiB: the link waits for room beyond it.
    let (mut role, inbox) =
        Role::start("aggregator", spec, (1024, 64 << 20), metrics.link.clone())?;
    let publisher = role.publisher.clone();
    let receipts_path = config.data_dir.join("uplink-receipts.json");
    let (receipts, problem) = Receipts::open(&receipts_path);
    if let Some(p) = problem {
        warn!(problem = %p, "Starting with fresh uplink receipts; messages in flight may be stored twice.");
    }
    let (server_publisher, lifecycle) = (publisher.clone(), metrics.lifecycle.clone());
    role.spawn_until_drain(|stop| server::serve(hub, server_publisher, jobs, lifecycle, stop));
    role.serve(
        listener,
        &metrics.registry,
        crate::api::router(shared.clone()),
        &shutdown,
    );

    let mut agg = Aggregator {
        store: Some(Store::new(&config.data_dir)),
        receipts: Some(receipts),
        publisher,
        shared,
        metrics,
        config,
    };
    info!(data_dir = %agg.config.data_dir.display(), "Cloud aggregator running.");
    agg.run(inbox, shutdown).await;
    agg.flush().await;

    role.drain().await;
    info!("Cloud aggregator stopped.");
    Ok(())
}

struct Aggregator {
    store: Option<Store>,
    /// Taken with the store while a flush runs: both describe the same rows.
    receipts: Option<Receipts>,
    publisher: vigil_core::mqtt::Publisher,
    shared: Arc<Shared>,
    metrics: CloudMetrics,
    config: CloudConfig,
}

impl Aggregator {
    async fn run(&mut self, mut inbox: vigil_core::mqtt::Inbox, shutdown: CancellationToken) {
        let mut flush = tokio::time::interval(Duration::from_secs(self.config.flush_secs));
        let mut refresh = tokio::time::interval(Duration::from_secs(1));
        let every = self.config.models.train_every_secs.max(1);
        let mut retrain = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(every),
            Duration::from_secs(every),
        );
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                m = inbox.recv() => match m {
                    Some(m) => {
                        self.on_message(&m);
                        let rows = self.store.as_ref().is_some_and(|s| s.largest_partition() >= self.config.flush_rows);
                        let acks = self.receipts.as_ref().is_some_and(|r| r.pending() >= self.config.flush_acks);
                        if rows || acks {
                            self.flush().await;
                        }
                    }
                    None => break,
                },
                _ = flush.tick() => self.flush().await,
                _ = refresh.tick() => {
                    self.send_receipts(None).await;
                    self.refresh_registry();
                    self.shared.models.tick(&self.shared.registry, now_ms());
                }
                _ = retrain.tick(), if self.config.models.train_every_secs > 0 => {
                    if !self.shared.models.start_training("schedule") {
                        info!("Scheduled training skipped: a run is still going.");
                    }
                }
            }
        }
    }

    fn on_message(&mut self, m: &Publish) {
        let inbound = match ingest::classify(&m.topic, &m.payload, self.config.max_message_bytes) {
            Ok(i) => i,
            Err((kind, e)) => return self.metrics.link.refused(&m.topic, kind, &e),
        };
        let now = now_ms();
        match inbound {
            Inbound::Samples {
                site,
                kind,
                batch,
                seq,
            } => {
                self.metrics.link.count(kind.as_str());
                if self.admit(&site, seq.as_ref(), now) {
                    if let Some(s) = self.store.as_mut() {
                        s.add_samples(&site, &batch.samples);
                    }
                }
            }
            Inbound::Anomaly { site, event, seq } => {
                self.metrics.link.count("anomaly");
                if !self.admit(&site, seq.as_ref(), now) {
                    return;
                }
                self.metrics.anomalies.inc();
                if let Some(s) = self.store.as_mut() {
                    s.add_anomaly(&event);
                }
                push_bounded(&self.shared.anomalies, event, self.config.recent);
            }
            Inbound::Audit { site, record, seq } => {
                self.metrics.link.count("audit");
                if !self.admit(&site, seq.as_ref(), now) {
                    return;
                }
                self.metrics
                    .audit_records
                    .with_label_values(&[record.kind.as_str()])
                    .inc();
                if let Some(s) = self.store.as_mut() {
                    s.add_audit(&record);
                }
                push_bounded(&self.shared.audit, record, self.config.recent);
            }
            Inbound::Heartbeat(hb) => {
                self.metrics.link.count("heartbeat");
                if let Ok(mut h) = self.shared.models.hub.lock() {
                    let node = format!("{}/{}", hb.site, hb.node);
                    h.observe(&node, hb.model_release, &hb.health, now);
                }
                if let Ok(mut r) = self.shared.registry.lock() {
                    r.heartbeat(hb, now);
                }
            }
            Inbound::ChunkRequest(req) => {
                self.metrics.link.count("chunk_request");
                let job = server::Job::Chunks(req);
                if self.shared.models.jobs.try_send(job).is_err() {
                    self.metrics
                        .link
                        .dropped
                        .with_label_values(&["chunk_request"])
                        .inc();
                }
            }
            Inbound::Presence {
                site,
                role,
                node,
                state,
            } => {
                self.metrics.link.count("presence");
                if let Ok(mut r) = self.shared.registry.lock() {
                    r.presence(&site, role, &node, state, now);
                }
            }
            Inbound::Ignored => {}
        }
    }

    /// Whether to store a message: unsequenced ones always; sequenced ones
    /// the first time only.
    fn admit(&mut self, site: &str, seq: Option<&Seq>, now: i64) -> bool {
        let (Some(seq), Some(r)) = (seq, self.receipts.as_mut()) else {
            return true;
        };
        let new = r.admit(site, seq, now) == Intake::New;
        let intake = if new { "new" } else { "duplicate" };
        self.metrics
            .uplink_intake
            .with_label_values(&[intake])
            .inc();
        new
    }

    /// Publishes receipts: those `written` returned, and those owed for
    /// duplicates of stored messages. A receipt never waits for room in
    /// the broker queue (ingest would stop behind it): one that finds none
    /// is owed again with the next receipts, and meanwhile the edge keeps
    /// the message and resends it.
    async fn send_receipts(&mut self, written: Option<Vec<(String, UplinkAck)>>) {
        let mut all = written.unwrap_or_default();
        if let Some(r) = self.receipts.as_mut() {
            all.extend(r.take_receipts());
        }
        let mut deferred = 0u64;
        for (site, ack) in all {
            if self
                .publisher
                .try_send(&topic::uplink_ack(&site), &ack, false)
            {
                self.metrics.uplink_acked.inc_by(ack.seqs.len() as u64);
            } else {
                deferred += ack.seqs.len() as u64;
                if let Some(r) = self.receipts.as_mut() {
                    r.owe(&ack);
                }
            }
        }
        if deferred > 0 {
            self.metrics.receipts_deferred.inc_by(deferred);
            warn!(
                messages = deferred,
                "The broker queue is full; receipts deferred to the next flush."
            );
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

    /// Writes buffered rows on a blocking thread; failed partitions are
    /// retried next time. Receipts go out only after a flush with no errors.
    async fn flush(&mut self) {
        let (Some(mut store), Some(mut receipts)) = (self.store.take(), self.receipts.take())
        else {
            return;
        };
        if store.pending_rows() == 0 && receipts.pending() == 0 {
            self.store = Some(store);
            self.receipts = Some(receipts);
            return;
        }
        let joined = tokio::task::spawn_blocking(move || {
            let f = store.flush(now_ms());
            let written = f.errors.is_empty().then(|| receipts.written());
            (store, receipts, f, written)
        })
        .await;
        match joined {
            Ok((store, receipts, f, written)) => {
                self.store = Some(store);
                self.receipts = Some(receipts);
                for (table, rows) in &f.rows {
                    self.metrics
                        .rows_written
                        .with_label_values(&[table])
                        .inc_by(*rows);
                }
                self.metrics.files_written.inc_by(f.files.len() as u64);
                for e in &f.errors {
                    self.metrics.flush_errors.inc();
                    warn!(error = %e, "Parquet flush failed; rows kept for the next flush.");
                }
                match written {
                    Some(Ok(acks)) => self.send_receipts(Some(acks)).await,
                    Some(Err(e)) => {
                        self.metrics.flush_errors.inc();
                        warn!(error = %e, "Could not save the uplink receipts; edges will send again.");
                    }
                    None => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "Parquet flush task failed; starting an empty buffer.");
                self.metrics.flush_errors.inc();
                self.store = Some(Store::new(&self.config.data_dir));
                let path = self.config.data_dir.join("uplink-receipts.json");
                self.receipts = Some(Receipts::open(&path).0);
            }
        }
    }
}
