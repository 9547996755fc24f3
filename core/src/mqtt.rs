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

mod inbox;
mod metrics;
mod publisher;
mod settings;

pub use inbox::*;
pub use metrics::*;
pub use publisher::*;
pub use settings::*;

/// A retained message the link publishes on every (re)connect, and the
/// matching last will and farewell.
#[derive(Clone, Debug)]
pub struct PresenceSpec {
    /// Retained topic.
    pub topic: String,
    /// Payload written on connect (until [`Publisher::announce`] replaces it).
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
    /// The online presence as last announced (published on every connect).
    online: Arc<Mutex<Vec<u8>>>,
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
    let online = Arc::new(Mutex::new(
        spec.presence
            .as_ref()
            .map(|p| p.online.clone())
            .unwrap_or_default(),
    ));
    let publisher = Publisher {
        presence: spec
            .presence
            .as_ref()
            .map(|p| (p.topic.clone(), online.clone())),
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
            online,
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
        let all: Vec<&String> = self.spec.subscriptions.iter().chain(&extra).collect();
        for chunk in all.chunks(publisher::SUBSCRIBE_CHUNK) {
            let many = chunk
                .iter()
                .map(|f| rumqttc::SubscribeFilter::new((*f).clone(), QoS::AtLeastOnce));
            if let Err(e) = self.client.try_subscribe_many(many) {
                warn!(filters = chunk.len(), error = %e, "Could not subscribe.");
            }
        }
        if let Some(p) = &self.spec.presence {
            let online = self.online.lock().map(|o| o.clone()).unwrap_or_default();
            if let Err(e) = self
                .client
                .try_publish(&p.topic, QoS::AtLeastOnce, true, online)
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
    fn try_send_never_waits_and_a_full_queue_is_not_counted_as_dropped() {
        // A client whose event loop never runs: its queue of 2 fills.
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 1), 2);
        let metrics = LinkMetrics::new(&prometheus::Registry::new()).unwrap();
        let p = Publisher {
            client,
            metrics: metrics.clone(),
            connected: Default::default(),
            connections: Default::default(),
            extra: Default::default(),
            down: Default::default(),
            presence: None,
        };
        let ack = crate::message::UplinkAck {
            stream: "s".into(),
            seqs: vec![1],
        };
        let sent: Vec<bool> = (0..4).map(|_| p.try_send("t", &ack, false)).collect();
        assert_eq!(sent, vec![true, true, false, false]);
        assert_eq!(
            metrics.published.with_label_values(&["uplink_ack"]).get(),
            2
        );
        assert_eq!(metrics.dropped.with_label_values(&["uplink_ack"]).get(), 0);
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
