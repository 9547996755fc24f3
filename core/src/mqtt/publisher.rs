//! Publishing through the link's client: a bounded wait, never forever;
//! subscriptions added at run time; the readiness check.

use super::*;

/// Publishes envelopes through a shared client, with a bounded wait.
#[derive(Clone)]
pub struct Publisher {
    pub(super) client: AsyncClient,
    pub(super) metrics: LinkMetrics,
    pub(super) connected: Arc<AtomicBool>,
    pub(super) connections: Arc<AtomicU64>,
    pub(super) extra: Arc<Mutex<Vec<String>>>,
    pub(super) down: Down,
    /// The retained presence topic and the online payload the link
    /// publishes on every connect.
    pub(super) presence: Option<(String, Arc<Mutex<Vec<u8>>>)>,
}

/// Filters per SUBSCRIBE packet.
pub(super) const SUBSCRIBE_CHUNK: usize = 100;

/// Since when the link is down (Unix ms) and its last error.
pub(super) type Down = Arc<Mutex<Option<(i64, String)>>>;

impl Publisher {
    /// Subscribes to `filter` now and after every reconnect, until
    /// [`Self::unsubscribe`] (for subscriptions that come and go, such as a
    /// model transfer's chunks).
    pub fn subscribe(&self, filter: &str) {
        self.subscribe_all(&[filter.to_string()]);
    }

    /// Subscribes to every one of `filters` as [`Self::subscribe`] does, a
    /// hundred to a SUBSCRIBE packet (a cluster member taking thousands of
    /// sites would otherwise overflow the client's request queue).
    pub fn subscribe_all(&self, filters: &[String]) {
        if let Ok(mut e) = self.extra.lock() {
            for f in filters {
                if !e.contains(f) {
                    e.push(f.clone());
                }
            }
        }
        for chunk in filters.chunks(SUBSCRIBE_CHUNK) {
            let many = chunk
                .iter()
                .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
            if let Err(e) = self.client.try_subscribe_many(many) {
                warn!(filters = chunk.len(), error = %e, "Could not subscribe; retried on reconnect.");
            }
        }
    }

    /// Drops subscriptions made with [`Self::subscribe`].
    pub fn unsubscribe(&self, filter: &str) {
        self.unsubscribe_all(&[filter.to_string()]);
    }

    /// Drops every one of `filters`.
    pub fn unsubscribe_all(&self, filters: &[String]) {
        if let Ok(mut e) = self.extra.lock() {
            e.retain(|f| !filters.contains(f));
        }
        for filter in filters {
            if let Err(e) = self.client.try_unsubscribe(filter) {
                debug!(filter, error = %e, "Could not unsubscribe.");
            }
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

    /// Publishes `body` at QoS 1 only if the client's queue has room now;
    /// false (not counted as dropped: the caller keeps it) otherwise. For
    /// what must never hold up the caller, such as the cloud's receipts.
    pub fn try_send<P: Payload>(&self, topic: &str, body: &P, retain: bool) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, encode(body))
        {
            Ok(()) => {
                self.metrics.published.with_label_values(&[P::KIND]).inc();
                true
            }
            Err(_) => false,
        }
    }

    /// Replaces the online presence (an agent's catalog changed): published
    /// retained now when connected, and on every reconnect after. False
    /// when the link has no presence or could not queue it (it goes out
    /// on the next connect).
    pub fn announce(&self, online: Vec<u8>) -> bool {
        let Some((topic, current)) = &self.presence else {
            return false;
        };
        if let Ok(mut o) = current.lock() {
            o.clone_from(&online);
        }
        self.is_connected()
            && self
                .client
                .try_publish(topic, QoS::AtLeastOnce, true, online)
                .is_ok()
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
