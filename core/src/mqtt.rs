//! The MQTT link every role uses: one task owns rumqttc's `EventLoop`,
//! reconnects with capped, jittered backoff (rumqttc has none), resubscribes
//! after every ConnAck, and hands incoming publishes to a bounded channel.
//! Others publish through a [`Publisher`], which never blocks forever.

use crate::backoff::Backoff;
use crate::envelope::{encode, Payload};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How to reach the broker. Shared by every role's config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// Broker host name or address.
    pub host: String,
    /// Broker TCP port.
    pub port: u16,
    /// Client id; empty means one derived from the role and node name.
    pub client_id: String,
    /// Keep-alive interval in seconds.
    pub keep_alive_secs: u64,
    /// Largest packet sent, in bytes (rumqttc's default is 10 KiB); also
    /// the broker's limit to set (Mosquitto: `message_size_limit`).
    pub max_packet_bytes: usize,
    /// Largest packet read off the connection. A larger one costs the
    /// connection (the MQTT stream cannot skip it), so this sits well above
    /// `max_packet_bytes`: a message between the two is read and refused by
    /// size (counted as `oversized`), and the broker's own limit keeps
    /// anything larger from arriving at all.
    pub max_incoming_bytes: usize,
    /// Optional user name.
    pub username: Option<String>,
    /// Optional password.
    pub password: Option<String>,
    /// Connect with TLS (e.g. Mosquitto's port 8883) when set.
    pub tls: Option<TlsSettings>,
    /// First reconnect delay in milliseconds.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in milliseconds.
    pub reconnect_max_ms: u64,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: String::new(),
            keep_alive_secs: 15,
            max_packet_bytes: 1024 * 1024,
            max_incoming_bytes: 16 * 1024 * 1024,
            username: None,
            password: None,
            tls: None,
            reconnect_min_ms: 200,
            reconnect_max_ms: 10_000,
        }
    }
}

impl MqttSettings {
    /// Appends every problem to `errors`, each prefixed with `at` (e.g. `mqtt`).
    pub fn validate(&self, at: &str, errors: &mut Vec<String>) {
        if self.host.is_empty() {
            errors.push(format!("{at}.host: must not be empty"));
        }
        if self.port == 0 {
            errors.push(format!("{at}.port: must be 1..65535"));
        }
        if self.keep_alive_secs < 5 {
            errors.push(format!(
                "{at}.keep_alive_secs: must be at least 5 (rumqttc refuses less)"
            ));
        }
        if self.max_packet_bytes < 1024 {
            errors.push(format!("{at}.max_packet_bytes: must be at least 1024"));
        }
        if self.max_incoming_bytes < self.max_packet_bytes {
            errors.push(format!(
                "{at}.max_incoming_bytes: must be at least max_packet_bytes ({})",
                self.max_packet_bytes
            ));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            errors.push(format!(
                "{at}.reconnect_min_ms: must be positive and at most reconnect_max_ms"
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            errors.push(format!("{at}: username and password go together"));
        }
        if let Some(t) = &self.tls {
            if let Err(e) = t.client_config() {
                errors.push(format!("{at}.tls: {e}"));
            }
        }
    }
}

/// TLS to the broker: the CA that signed the broker's certificate, and
/// optionally this client's own certificate and key (for brokers that
/// require client certificates). PEM files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// CA certificate(s) to trust for the broker.
    pub ca_file: std::path::PathBuf,
    /// This client's certificate chain.
    #[serde(default)]
    pub cert_file: Option<std::path::PathBuf>,
    /// This client's private key.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
}

impl TlsSettings {
    /// Reads the files into a rustls client configuration (ring provider).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read = |p: &std::path::Path| format!("{}", p.display());
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&self.ca_file)
            .map_err(|e| format!("ca_file {}: {e}", read(&self.ca_file)))?;
        for c in cas {
            let c = c.map_err(|e| format!("ca_file {}: {e}", read(&self.ca_file)))?;
            roots
                .add(c)
                .map_err(|e| format!("ca_file {}: {e}", read(&self.ca_file)))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "ca_file {}: no certificate in it",
                read(&self.ca_file)
            ));
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("cert_file {}: {e}", read(cert)))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("key_file {}: {e}", read(key)))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("cert_file and key_file: {e}"))
            }
            _ => Err("cert_file and key_file go together".into()),
        }
    }
}

/// Message counters shared by every role, registered once per registry.
#[derive(Clone)]
pub struct LinkMetrics {
    /// 1 while connected to the broker.
    pub connected: IntGauge,
    /// Connection losses.
    pub reconnects: IntCounter,
    /// Messages received, by kind.
    pub received: IntCounterVec,
    /// Messages published, by kind.
    pub published: IntCounterVec,
    /// Messages that could not be queued for publishing, by kind.
    pub dropped: IntCounterVec,
    /// Messages refused on decoding, by reason.
    pub malformed: IntCounterVec,
}

impl LinkMetrics {
    /// Counts one message received, by kind.
    pub fn count(&self, kind: &str) {
        self.received.with_label_values(&[kind]).inc();
    }

    /// Counts a message refused on decoding (received, by its kind, and
    /// malformed, by reason) and logs it.
    pub fn refused(&self, topic: &str, kind: &str, e: &crate::envelope::DecodeError) {
        self.count(kind);
        self.malformed.with_label_values(&[e.reason()]).inc();
        warn!(topic, kind, error = %e, "Dropped malformed message.");
    }

    /// Creates and registers the counters in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let connected = IntGauge::new(
            "vigil_mqtt_connected",
            "1 while connected to the MQTT broker.",
        )?;
        let reconnects = IntCounter::new(
            "vigil_mqtt_connection_errors_total",
            "MQTT connection losses and failed attempts.",
        )?;
        let received = IntCounterVec::new(
            Opts::new(
                "vigil_messages_received_total",
                "MQTT messages received, by kind.",
            ),
            &["kind"],
        )?;
        let published = IntCounterVec::new(
            Opts::new(
                "vigil_messages_published_total",
                "MQTT messages published, by kind.",
            ),
            &["kind"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "vigil_messages_dropped_total",
                "Messages that could not be queued for the broker, by kind.",
            ),
            &["kind"],
        )?;
        let malformed = IntCounterVec::new(
            Opts::new(
                "vigil_messages_malformed_total",
                "Messages refused on decoding, by reason.",
            ),
            &["reason"],
        )?;
        crate::telemetry::register(registry, "all", &connected)?;
        crate::telemetry::register(registry, "all", &reconnects)?;
        crate::telemetry::register(registry, "all", &received)?;
        crate::telemetry::register(registry, "all", &published)?;
        crate::telemetry::register(registry, "all", &dropped)?;
        crate::telemetry::register(registry, "all", &malformed)?;
        Ok(Self {
            connected,
            reconnects,
            received,
            published,
            dropped,
            malformed,
        })
    }
}

/// A retained message the link publishes on every (re)connect, and the
/// matching last will and farewell.
#[derive(Clone, Debug)]
pub struct PresenceSpec {
    /// Retained topic.
    pub topic: String,
    /// Payload written on connect.
    pub online: Vec<u8>,
    /// Payload for the last will and the clean-shutdown farewell.
    pub offline: Vec<u8>,
}

/// What a link connects as and listens to.
#[derive(Clone, Debug)]
pub struct LinkSpec {
    /// Broker settings.
    pub settings: MqttSettings,
    /// Client id used when the settings leave it empty.
    pub default_client_id: String,
    /// Topic filters to (re)subscribe after every ConnAck.
    pub subscriptions: Vec<String>,
    /// Retained presence, if the role has one.
    pub presence: Option<PresenceSpec>,
}

/// Incoming publishes for a role, bounded in count and in bytes: the link
/// waits for room (the broker then holds what is left) instead of queueing
/// without limit.
pub struct Inbox {
    rx: mpsc::Receiver<Publish>,
    room: Arc<tokio::sync::Semaphore>,
    max: usize,
}

/// The link's end of an [`Inbox`].
pub struct InboxTx {
    tx: mpsc::Sender<Publish>,
    room: Arc<tokio::sync::Semaphore>,
    max: usize,
}

/// An inbox of at most `count` messages and `max_bytes` bytes (topic and
/// payload; a single message counts as at most `max_bytes`).
pub fn inbox(count: usize, max_bytes: usize) -> (InboxTx, Inbox) {
    let (tx, rx) = mpsc::channel(count.max(1));
    let max = max_bytes.clamp(1, u32::MAX as usize);
    let room = Arc::new(tokio::sync::Semaphore::new(max));
    (
        InboxTx {
            tx,
            room: room.clone(),
            max,
        },
        Inbox { rx, room, max },
    )
}

fn cost(p: &Publish, max: usize) -> u32 {
    (p.payload.len() + p.topic.len()).clamp(1, max) as u32
}

impl Inbox {
    /// The next message; `None` once the link has stopped.
    pub async fn recv(&mut self) -> Option<Publish> {
        let p = self.rx.recv().await?;
        self.room.add_permits(cost(&p, self.max) as usize);
        Some(p)
    }
}

impl InboxTx {
    /// Waits for room, then queues `p`; `Err` once the inbox is gone.
    async fn send(&self, p: Publish) -> Result<(), ()> {
        let permit = self
            .room
            .acquire_many(cost(&p, self.max))
            .await
            .map_err(|_| ())?;
        permit.forget();
        self.tx.send(p).await.map_err(|_| ())
    }
}

/// Publishes envelopes through a shared client, with a bounded wait.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    metrics: LinkMetrics,
    connected: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    extra: Arc<Mutex<Vec<String>>>,
    down: Down,
}

/// Since when the link is down (Unix ms) and its last error.
type Down = Arc<Mutex<Option<(i64, String)>>>;

impl Publisher {
    /// Subscribes to `filter` now and after every reconnect, until
    /// [`Self::unsubscribe`] (for subscriptions that come and go, such as a
    /// model transfer's chunks).
    pub fn subscribe(&self, filter: &str) {
        if let Ok(mut e) = self.extra.lock() {
            if !e.iter().any(|f| f == filter) {
                e.push(filter.to_string());
            }
        }
        if let Err(e) = self.client.try_subscribe(filter, QoS::AtLeastOnce) {
            warn!(filter, error = %e, "Could not subscribe; retried on reconnect.");
        }
    }

    /// Drops a subscription made with [`Self::subscribe`].
    pub fn unsubscribe(&self, filter: &str) {
        if let Ok(mut e) = self.extra.lock() {
            e.retain(|f| f != filter);
        }
        if let Err(e) = self.client.try_unsubscribe(filter) {
            debug!(filter, error = %e, "Could not unsubscribe.");
        }
    }

    /// Publishes `body` at QoS 1. Waits at most 2 s for room in the client's
    /// queue; when the broker is unreachable that long the message is counted
    /// as dropped instead of stalling the caller.
    pub async fn send<P: Payload>(&self, topic: &str, body: &P, retain: bool) -> bool {
        self.send_raw(topic, P::KIND, encode(body), retain).await
    }

    /// Publishes bytes already encoded, counted under `kind`.
    pub async fn send_raw(&self, topic: &str, kind: &str, bytes: Vec<u8>, retain: bool) -> bool {
        let fut = self.client.publish(topic, QoS::AtLeastOnce, retain, bytes);
        match tokio::time::timeout(Duration::from_secs(2), fut).await {
            Ok(Ok(())) => {
                self.metrics.published.with_label_values(&[kind]).inc();
                true
            }
            Ok(Err(e)) => {
                warn!(topic, error = %e, "Could not queue message for the broker.");
                self.metrics.dropped.with_label_values(&[kind]).inc();
                false
            }
            Err(_) => {
                warn!(topic, "Broker queue full for 2 s; message dropped.");
                self.metrics.dropped.with_label_values(&[kind]).inc();
                false
            }
        }
    }

    /// Whether the link is connected right now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// A `/healthz` check: ready while connected; otherwise how long the
    /// link has been down and the last error.
    pub fn readiness(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
        let (connected, down) = (self.connected.clone(), self.down.clone());
        move || {
            if connected.load(Ordering::Relaxed) {
                return Ok(());
            }
            let why = down.lock().ok().and_then(|d| d.clone());
            Err(match why {
                Some((since, e)) => format!(
                    "MQTT link down for {} s: {e}",
                    (crate::clock::now_ms() - since).max(0) / 1000
                ),
                None => "MQTT link not connected yet".into(),
            })
        }
    }

    /// Connections made so far; a change means the broker may have lost
    /// what was retained (a restarted broker without persistence).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// The task that owns the event loop.
pub struct Link {
    spec: LinkSpec,
    ratelog: crate::ratelog::RateLog,
    client: AsyncClient,
    eventloop: EventLoop,
    inbox: InboxTx,
    metrics: LinkMetrics,
    connected: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    extra: Arc<Mutex<Vec<String>>>,
    down: Down,
}

/// Creates the client and the link task; spawn `link.run(token)` and publish
/// through the returned [`Publisher`]. Incoming publishes go to `inbox`.
/// Fails only when the TLS files cannot be read.
pub fn open(
    spec: LinkSpec,
    inbox: InboxTx,
    metrics: LinkMetrics,
) -> anyhow::Result<(Publisher, Link)> {
    let s = &spec.settings;
    let id = if s.client_id.is_empty() {
        spec.default_client_id.clone()
    } else {
        s.client_id.clone()
    };
    let mut opts = MqttOptions::new(id, s.host.clone(), s.port);
    opts.set_keep_alive(Duration::from_secs(s.keep_alive_secs));
    opts.set_max_packet_size(
        s.max_incoming_bytes.max(s.max_packet_bytes),
        s.max_packet_bytes,
    );
    opts.set_clean_session(true);
    if let (Some(u), Some(p)) = (&s.username, &s.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    if let Some(t) = &s.tls {
        let config = t
            .client_config()
            .map_err(|e| anyhow::anyhow!("mqtt.tls: {e}"))?;
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
        ));
    }
    if let Some(p) = &spec.presence {
        opts.set_last_will(LastWill::new(
            &p.topic,
            p.offline.clone(),
            QoS::AtLeastOnce,
            true,
        ));
    }
    let (client, eventloop) = AsyncClient::new(opts, 256);
    let connected = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicU64::new(0));
    let extra = Arc::new(Mutex::new(Vec::new()));
    let down: Down = Arc::new(Mutex::new(None));
    let publisher = Publisher {
        client: client.clone(),
        metrics: metrics.clone(),
        connected: connected.clone(),
        connections: connections.clone(),
        extra: extra.clone(),
        down: down.clone(),
    };
    Ok((
        publisher,
        Link {
            spec,
            ratelog: Default::default(),
            client,
            eventloop,
            inbox,
            metrics,
            connected,
            connections,
            extra,
            down,
        },
    ))
}

impl Link {
    /// Spawns the link on `tracker` with its own stop token, to be cancelled
    /// after the tasks that publish through it have stopped.
    pub fn spawn_on(self, tracker: &tokio_util::task::TaskTracker) -> CancellationToken {
        let token = CancellationToken::new();
        tracker.spawn(self.run(token.clone()));
        token
    }

    /// Polls the event loop until `shutdown`, reconnecting with backoff.
    /// On shutdown it publishes the offline presence and disconnects cleanly.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let s = self.spec.settings.clone();
        let broker = format!("{}:{}", s.host, s.port);
        let mut backoff = Backoff::new(
            Duration::from_millis(s.reconnect_min_ms),
            Duration::from_millis(s.reconnect_max_ms),
        );
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = self.eventloop.poll() => ev,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    info!(%broker, "Connected to MQTT broker.");
                    backoff.reset();
                    self.on_connected();
                }
                Ok(Event::Incoming(Packet::Publish(p)))
                    if p.payload.len() > self.spec.settings.max_packet_bytes =>
                {
                    // Read off the wire so the connection survives, then
                    // refused here: it never takes room in the inbox.
                    self.metrics
                        .malformed
                        .with_label_values(&["oversized"])
                        .inc();
                    if let Some(skipped) = self.ratelog.allow(&p.topic) {
                        warn!(topic = %p.topic, bytes = p.payload.len(), limit = self.spec.settings.max_packet_bytes, skipped, "Dropped an oversized message.");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // A full inbox slows the broker down instead of losing data.
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        sent = self.inbox.send(p) => if sent.is_err() { break },
                    }
                }
                Ok(other) => debug!(event = ?other, "MQTT event."),
                Err(e) => {
                    let delay = backoff.next_delay();
                    if self.connected.swap(false, Ordering::Relaxed) {
                        warn!(%broker, error = %e, retry_in_ms = delay.as_millis() as u64, "Lost MQTT connection; reconnecting with backoff.");
                    } else {
                        // Every attempt: the backoff (capped at
                        // reconnect_max_ms) already spaces these lines.
                        warn!(%broker, error = %e, retry_in_ms = delay.as_millis() as u64, "Cannot connect to the MQTT broker; retrying with backoff.");
                    }
                    if let Ok(mut d) = self.down.lock() {
                        let since = d.as_ref().map_or_else(crate::clock::now_ms, |(s, _)| *s);
                        *d = Some((since, e.to_string()));
                    }
                    self.metrics.connected.set(0);
                    self.metrics.reconnects.inc();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.farewell().await;
    }

    fn on_connected(&mut self) {
        self.connected.store(true, Ordering::Relaxed);
        if let Ok(mut d) = self.down.lock() {
            *d = None;
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.metrics.connected.set(1);
        // try_* because awaiting the request channel from the task that drains
        // it would deadlock when it is full.
        let extra = self.extra.lock().map(|e| e.clone()).unwrap_or_default();
        for filter in self.spec.subscriptions.iter().chain(&extra) {
            if let Err(e) = self.client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                warn!(filter, error = %e, "Could not subscribe.");
            }
        }
        if let Some(p) = &self.spec.presence {
            if let Err(e) =
                self.client
                    .try_publish(&p.topic, QoS::AtLeastOnce, true, p.online.clone())
            {
                warn!(topic = %p.topic, error = %e, "Could not publish presence.");
            }
        }
    }

    async fn farewell(&mut self) {
        if !self.connected.load(Ordering::Relaxed) {
            return;
        }
        if let Some(p) = &self.spec.presence {
            let _ = self
                .client
                .try_publish(&p.topic, QoS::AtLeastOnce, true, p.offline.clone());
        }
        let _ = self.client.try_disconnect();
        // Drive the loop briefly so the farewell and the disconnect go out.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
        self.metrics.connected.set(0);
        self.connected.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_inbox_is_bounded_in_bytes_and_frees_room_as_it_is_read() {
        let (tx, mut rx) = inbox(10, 100);
        let msg = |n: usize| Publish::new("t", QoS::AtLeastOnce, vec![0u8; n]);
        tx.send(msg(59)).await.unwrap();
        // 60 bytes are in; another 60 do not fit until the first is read.
        let second = tx.send(msg(59));
        tokio::pin!(second);
        let blocked = tokio::time::timeout(Duration::from_millis(50), &mut second).await;
        assert!(blocked.is_err(), "over the byte bound");
        assert_eq!(rx.recv().await.map(|p| p.payload.len()), Some(59));
        second.await.unwrap();
        // A single message larger than the bound still gets through alone.
        assert_eq!(rx.recv().await.map(|p| p.payload.len()), Some(59));
        tx.send(msg(500)).await.unwrap();
        assert_eq!(rx.recv().await.map(|p| p.payload.len()), Some(500));
    }

    #[test]
    fn default_settings_validate_and_round_trip() {
        let s = MqttSettings::default();
        let mut errors = Vec::new();
        s.validate("mqtt", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<MqttSettings>(&text).unwrap(), s);
    }

    #[test]
    fn bad_settings_report_every_problem() {
        let s = MqttSettings {
            host: String::new(),
            port: 0,
            keep_alive_secs: 1,
            max_packet_bytes: 10,
            username: Some("u".into()),
            ..MqttSettings::default()
        };
        let mut errors = Vec::new();
        s.validate("mqtt", &mut errors);
        assert_eq!(errors.len(), 5, "{errors:?}");
    }
}
