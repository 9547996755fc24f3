//! One MQTT connection carrying a share of the simulated edges: it
//! subscribes to their receipt topics, makes their batches on time, and
//! publishes what is due at QoS 1, as `vigil-edge` does. Many edges share a
//! connection so that ten thousand of them fit in one process; the
//! aggregator cannot tell (it reads the site from the topic and the stream
//! from the envelope).

use super::edge::{Shape, SimEdge};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vigil_core::clock::now_ms;
use vigil_core::message::UplinkAck;
use vigil_core::topic;

/// The simulated fleet's running totals (all connections).
#[derive(Debug, Default)]
pub struct Totals {
    /// Samples made.
    pub made: AtomicU64,
    /// Samples receipted.
    pub receipted: AtomicU64,
    /// Anomaly events and audit records made.
    pub events_made: AtomicU64,
    /// Anomaly events and audit records receipted.
    pub events_receipted: AtomicU64,
    /// Messages published (first sends).
    pub sent: AtomicU64,
    /// Messages published again.
    pub resent: AtomicU64,
    /// Messages receipted.
    pub receipted_messages: AtomicU64,
    /// Receipts that could not be read.
    pub bad_receipts: AtomicU64,
    /// From first send to receipt, of every receipted message.
    pub latencies: Mutex<Latencies>,
}

/// How the edges deliver.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    /// Most messages out per edge without a receipt.
    pub window: usize,
    /// Milliseconds before a message without a receipt is sent again.
    pub resend_ms: i64,
}

type Edges = Arc<Mutex<Vec<SimEdge>>>;
/// Retained messages (topic, payload) to publish on every connect.
type Retained = Vec<(String, Vec<u8>)>;

/// Drives `edges` over one connection to the broker on `port` until
/// `stop`; batches are made only until `load` is cancelled.
pub async fn drive(
    name: String,
    port: u16,
    edges: Vec<SimEdge>,
    (shape, delivery): (Shape, Delivery),
    totals: Arc<Totals>,
    (load, stop): (CancellationToken, CancellationToken),
) {
    let mut opts = rumqttc::MqttOptions::new(name, "127.0.0.1", port);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(1000);
    let (client, eventloop) = rumqttc::AsyncClient::new(opts, 1024);
    let by_topic: HashMap<String, usize> = edges
        .iter()
        .enumerate()
        .map(|(i, e)| (topic::uplink_ack(&e.site), i))
        .collect();
    let presence: Vec<(String, Vec<u8>)> = edges.iter().map(|e| presence(&e.site)).collect();
    let edges: Edges = Arc::new(Mutex::new(edges));
    let receiver = tokio::spawn(receive(
        eventloop,
        client.clone(),
        (by_topic, Arc::new(presence)),
        edges.clone(),
        totals.clone(),
        stop.clone(),
    ));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let sends = {
            let Ok(mut all) = edges.lock() else { break };
            let mut sends = Vec::new();
            for e in all.iter_mut() {
                if !load.is_cancelled() {
                    let made = e.make(&shape, now);
                    totals.made.fetch_add(made.samples, Ordering::Relaxed);
                    totals.events_made.fetch_add(made.events, Ordering::Relaxed);
                }
                sends.extend(e.due(&shape, now, delivery.window, delivery.resend_ms));
            }
            sends
        };
        for s in sends {
            let counter = if s.resend {
                &totals.resent
            } else {
                &totals.sent
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let publish = client.publish(s.topic, rumqttc::QoS::AtLeastOnce, false, s.payload);
            tokio::select! {
                _ = stop.cancelled() => break,
                r = publish => if r.is_err() { break },
            }
        }
    }
    let _ = client.try_disconnect();
    receiver.abort();
}

/// An edge's retained presence, online, as `vigil-edge` publishes it (a
/// clustered cloud learns its sites from it).
fn presence(site: &str) -> (String, Vec<u8>) {
    let p = vigil_core::message::Presence {
        node: "sim".into(),
        role: "edge".into(),
        state: vigil_core::message::PresenceState::Online,
        ts_ms: now_ms(),
        actions: vec![],
    };
    (topic::edge_presence(site), vigil_core::encode(&p))
}

/// Polls the connection: subscribes and publishes presence on every
/// (re)connect, sends everything out again after a reconnect, and applies
/// receipts.
async fn receive(
    mut eventloop: rumqttc::EventLoop,
    client: rumqttc::AsyncClient,
    (by_topic, presence): (HashMap<String, usize>, Arc<Retained>),
    edges: Edges,
    totals: Arc<Totals>,
    stop: CancellationToken,
) {
    use rumqttc::{Event, Packet};
    let filters: Vec<rumqttc::SubscribeFilter> = by_topic
        .keys()
        .map(|t| rumqttc::SubscribeFilter::new(t.clone(), rumqttc::QoS::AtLeastOnce))
        .collect();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                for chunk in filters.chunks(100) {
                    let _ = client.try_subscribe_many(chunk.to_vec());
                }
                if let Ok(mut all) = edges.lock() {
                    all.iter_mut().for_each(SimEdge::resend_all);
                }
                // Off the poll loop (publishing waits on it), spread over a
                // few seconds as edges come online: a burst of thousands
                // would overflow the broker's queue for each subscriber.
                let (client, presence) = (client.clone(), presence.clone());
                tokio::spawn(async move {
                    let gap = Duration::from_secs(5) / presence.len().max(1) as u32;
                    for (topic, payload) in presence.iter() {
                        let p =
                            client.publish(topic, rumqttc::QoS::AtLeastOnce, true, payload.clone());
                        if p.await.is_err() {
                            return;
                        }
                        tokio::time::sleep(gap).await;
                    }
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some(&i) = by_topic.get(&p.topic) else {
                    continue;
                };
                let Ok(ack) = vigil_core::decode::<UplinkAck>(&p.payload, 1 << 20) else {
                    totals.bad_receipts.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let settled = match edges.lock() {
                    Ok(mut all) => all[i].receipt(&ack.stream, &ack.seqs, now_ms()),
                    Err(_) => return,
                };
                totals
                    .receipted
                    .fetch_add(settled.samples, Ordering::Relaxed);
                totals
                    .receipted_messages
                    .fetch_add(settled.messages, Ordering::Relaxed);
                totals
                    .events_receipted
                    .fetch_add(settled.events, Ordering::Relaxed);
                if let Ok(mut l) = totals.latencies.lock() {
                    settled.latencies_ms.iter().for_each(|&ms| l.add(ms));
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Receipt latencies in 10 ms buckets up to 10 minutes (the last bucket
/// holds everything longer): a fixed size however long the run.
#[derive(Debug)]
pub struct Latencies(Vec<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(vec![0; 60_000])
    }
}

impl Latencies {
    /// Counts one latency.
    pub fn add(&mut self, ms: f64) {
        let last = self.0.len() - 1;
        self.0[((ms.max(0.0) / 10.0) as usize).min(last)] += 1;
    }

    /// Forgets everything counted.
    pub fn clear(&mut self) {
        self.0.iter_mut().for_each(|c| *c = 0);
    }

    /// The `q` quantile in seconds (upper edge of its bucket); None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n: u64 = self.0.iter().sum();
        let rank = ((n as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.0.iter().enumerate() {
            seen += c;
            if seen >= rank && n > 0 {
                return Some((i + 1) as f64 / 100.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_come_from_the_buckets() {
        let mut l = Latencies::default();
        assert_eq!(l.quantile(0.5), None);
        for ms in 0..100 {
            l.add(ms as f64 * 100.0); // 0 .. 9.9 s
        }
        l.add(1e9);
        assert_eq!(l.quantile(0.5), Some(5.01));
        assert_eq!(l.quantile(1.0), Some(600.0));
        l.clear();
        assert_eq!(l.quantile(0.99), None);
    }
}
