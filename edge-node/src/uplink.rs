//! Store and forward to the cloud. Every cloud-bound message (audit records,
//! anomaly events, scores, raw samples) is written to the on-disk [`Spool`]
//! first and leaves it only when the cloud acknowledges that the message is
//! in its store. The cloud's receipts come back on `{site}/edge/ack`.
//!
//! Each message carries the spool's stream id and its sequence number, so
//! the cloud stores it once however often it is sent. At most `window`
//! messages are out unacknowledged; they are sent again after `resend_secs`
//! without a receipt and at once after the broker connection comes back.
//! The spool is touched only on a blocking thread.

use crate::spool::{Priority, Spool, SpoolError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigil_core::clock::now_ms;
use vigil_core::envelope::{with_seq, Seq};
use vigil_core::message::UplinkAck;
use vigil_core::mqtt::Publisher;
use vigil_core::{encode, Payload};

mod delivery;
mod metrics;
mod outgoing;

pub use delivery::*;
pub use metrics::UplinkMetrics;
pub use outgoing::{sample_messages, SAMPLES_PER_MESSAGE};

/// Settings of the uplink buffer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkConfig {
    /// Most bytes the on-disk buffer holds; when full the oldest messages of
    /// the lowest priority present are dropped (and counted).
    pub buffer_bytes: u64,
    /// Most messages out without a receipt from the cloud.
    pub window: usize,
    /// ...and about this many bytes (a message of raw samples is up to
    /// ~200 KB): what is out is read again from the buffer to resend.
    pub window_bytes: u64,
    /// Seconds to wait for a receipt before sending a message again. Keep it
    /// well above the cloud's `commit_ms`: the cloud acknowledges once a
    /// message is durable in its log.
    pub resend_secs: u64,
    /// Most bytes waiting in memory for the buffer's writer (a slow disk);
    /// a batch beyond it is dropped and counted.
    pub queue_bytes: u64,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            buffer_bytes: 256 * 1024 * 1024,
            window: 256,
            window_bytes: 16 * 1024 * 1024,
            resend_secs: 30,
            queue_bytes: 16 * 1024 * 1024,
        }
    }
}

impl UplinkConfig {
    /// Adds every problem to `e`.
    pub fn validate(&self, e: &mut Vec<String>) {
        if self.buffer_bytes < 64 * 1024 {
            e.push(format!(
                "uplink.buffer_bytes: {} is below the minimum of 65536",
                self.buffer_bytes
            ));
        }
        if !(1..=100_000).contains(&self.window) {
            e.push(format!(
                "uplink.window: {} is outside 1..=100000",
                self.window
            ));
        }
        if self.resend_secs == 0 {
            e.push("uplink.resend_secs: must be positive".into());
        }
        if self.window_bytes < 64 * 1024 {
            e.push(format!(
                "uplink.window_bytes: {} is below the minimum of 65536",
                self.window_bytes
            ));
        }
        if self.queue_bytes < 64 * 1024 {
            e.push(format!(
                "uplink.queue_bytes: {} is below the minimum of 65536",
                self.queue_bytes
            ));
        }
    }
}

/// One message for the cloud.
#[derive(Clone, Debug)]
pub struct Queued {
    /// Its priority in the buffer.
    pub priority: Priority,
    /// MQTT topic.
    pub topic: String,
    /// The encoded envelope (without its sequence).
    pub payload: Vec<u8>,
}

impl Queued {
    /// Encodes `body` for `topic`.
    pub fn new<P: Payload>(priority: Priority, topic: String, body: &P) -> Self {
        Self {
            priority,
            topic,
            payload: encode(body),
        }
    }
}

/// The run loop's handle: queues batches and forwards receipts.
#[derive(Clone)]
pub struct Uplink {
    batches: mpsc::Sender<Vec<Queued>>,
    /// Bytes queued for the writer, and the bound.
    queued: std::sync::Arc<std::sync::atomic::AtomicU64>,
    max_queued: u64,
    acks: mpsc::Sender<UplinkAck>,
    stream: String,
    metrics: UplinkMetrics,
}

impl Uplink {
    /// Queues a batch for the buffer (one durable write); a batch the
    /// writer has no room for is dropped and counted.
    pub fn queue(&self, batch: Vec<Queued>) {
        if batch.is_empty() {
            return;
        }
        use std::sync::atomic::Ordering;
        let bytes = batch_bytes(&batch);
        // An empty queue takes any batch, so a large site still makes progress.
        let waiting = self.queued.load(Ordering::Relaxed);
        let room = waiting == 0 || waiting + bytes <= self.max_queued;
        let sent = if room {
            self.queued.fetch_add(bytes, Ordering::Relaxed);
            self.batches.try_send(batch).map_err(|e| {
                self.queued.fetch_sub(bytes, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
                }
            })
        } else {
            Err(batch)
        };
        if let Err(batch) = sent {
            warn!(
                messages = batch.len(),
                "Uplink writer is behind; dropped a batch."
            );
            for q in batch {
                self.metrics
                    .dropped
                    .with_label_values(&[q.priority.as_str()])
                    .inc();
            }
        }
    }

    /// Hands a receipt from the cloud to the writer (ignored if it is for
    /// another stream; a lost receipt only means a resend).
    pub fn ack(&self, ack: UplinkAck) {
        if ack.stream == self.stream {
            let _ = self.acks.try_send(ack);
        }
    }
}

/// What a batch costs in memory while it waits for the writer.
fn batch_bytes(batch: &[Queued]) -> u64 {
    batch
        .iter()
        .map(|q| (q.payload.len() + q.topic.len()) as u64)
        .sum()
}

/// Opens the buffer at `path` and returns the handle and the task that
/// writes, sends and acknowledges.
pub fn open(
    path: &Path,
    config: &UplinkConfig,
    publisher: Publisher,
    metrics: UplinkMetrics,
) -> Result<(Uplink, UplinkTask), SpoolError> {
    let delivery = Delivery::open(path, config)?;
    let held: u64 = Priority::ALL.iter().map(|&p| delivery.spool.len(p)).sum();
    if held > 0 {
        info!(
            messages = held,
            bytes = delivery.spool.bytes(),
            "Uplink buffer holds messages from before; they go first."
        );
    }
    let (btx, brx) = mpsc::channel(256);
    let (atx, arx) = mpsc::channel(256);
    let queued = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handle = Uplink {
        batches: btx,
        queued: queued.clone(),
        max_queued: config.queue_bytes,
        acks: atx,
        stream: delivery.spool.stream().to_string(),
        metrics: metrics.clone(),
    };
    let task = UplinkTask {
        delivery: Some(delivery),
        queued,
        batches: brx,
        acks: arx,
        publisher,
        metrics,
    };
    Ok((handle, task))
}

/// Moves messages from the run loop to the buffer and from the buffer to the
/// broker.
pub struct UplinkTask {
    delivery: Option<Delivery>,
    queued: std::sync::Arc<std::sync::atomic::AtomicU64>,
    batches: mpsc::Receiver<Vec<Queued>>,
    acks: mpsc::Receiver<UplinkAck>,
    publisher: Publisher,
    metrics: UplinkMetrics,
}

/// One unit of blocking work.
enum Work {
    Push(Vec<Queued>),
    Ack(Vec<u64>),
    Due,
}

impl UplinkTask {
    /// Runs until `shutdown`; then stores what is still queued, so a clean
    /// stop loses nothing.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut pump = tokio::time::interval(Duration::from_millis(200));
        pump.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut connections = self.publisher.connections();
        loop {
            let work = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(b) = self.batches.recv() => {
                    let mut all = b;
                    while let Ok(more) = self.batches.try_recv() {
                        all.extend(more);
                    }
                    self.queued.fetch_sub(batch_bytes(&all), std::sync::atomic::Ordering::Relaxed);
                    Work::Push(all)
                }
                Some(a) = self.acks.recv() => {
                    let mut seqs = a.seqs;
                    while let Ok(more) = self.acks.try_recv() {
                        seqs.extend(more.seqs);
                    }
                    Work::Ack(seqs)
                }
                _ = pump.tick() => {
                    let c = self.publisher.connections();
                    if c != connections {
                        connections = c;
                        if let Some(d) = self.delivery.as_mut() {
                            d.resend_all();
                        }
                    }
                    if !self.publisher.is_connected() {
                        continue;
                    }
                    Work::Due
                }
            };
            let pushed = matches!(work, Work::Push(_) | Work::Ack(_));
            self.work(work).await;
            // Fresh messages and freed window go out without waiting.
            if pushed && self.publisher.is_connected() {
                self.work(Work::Due).await;
            }
        }
        let mut rest = Vec::new();
        while let Ok(b) = self.batches.try_recv() {
            rest.extend(b);
        }
        if !rest.is_empty() {
            self.work(Work::Push(rest)).await;
        }
    }

    async fn work(&mut self, work: Work) {
        let Some(mut d) = self.delivery.take() else {
            return;
        };
        let joined = tokio::task::spawn_blocking(move || {
            let r = match work {
                Work::Push(batch) => d.push(&batch).map(|()| (Vec::new(), 0)),
                Work::Ack(seqs) => d.ack(&seqs).map(|n| (Vec::new(), n)),
                Work::Due => d.due(now_ms()).map(|s| (s, 0)),
            };
            (d, r)
        })
        .await;
        let Ok((mut d, r)) = joined else {
            // The blocking task panicked; the spool file is intact on disk.
            warn!("Uplink buffer task failed; the buffer is not used until restart.");
            return;
        };
        match r {
            Ok((sends, acked)) => {
                self.metrics.acked.inc_by(acked);
                for s in sends {
                    let attempt = if s.resend { "resend" } else { "first" };
                    self.metrics.sent.with_label_values(&[attempt]).inc();
                    self.publisher
                        .send_raw(&s.topic, "uplink", s.payload, false)
                        .await;
                }
            }
            Err(e) => warn!(error = %e, "Uplink buffer operation failed."),
        }
        self.update_metrics(&mut d);
        self.delivery = Some(d);
    }

    fn update_metrics(&self, d: &mut Delivery) {
        let m = &self.metrics;
        let s = d.spool();
        m.buffer_bytes.set(s.bytes() as i64);
        for p in Priority::ALL {
            m.buffer_messages
                .with_label_values(&[p.as_str()])
                .set(s.len(p) as i64);
        }
        for (p, n) in Priority::ALL.iter().zip(d.take_dropped()) {
            if n > 0 {
                m.dropped.with_label_values(&[p.as_str()]).inc_by(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::envelope::decode_seq;
    use vigil_core::message::Presence;

    fn queued(p: Priority, n: usize) -> Vec<Queued> {
        (0..n)
            .map(|i| {
                let body = Presence {
                    node: format!("m{i}"),
                    role: "edge".into(),
                    state: vigil_core::message::PresenceState::Online,
                    ts_ms: i as i64,
                    actions: vec![],
                };
                Queued::new(p, format!("t/{}", p.as_str()), &body)
            })
            .collect()
    }

    fn seqs(sends: &[Send]) -> Vec<u64> {
        sends
            .iter()
            .map(|s| {
                let (_, seq): (Presence, _) = decode_seq(&s.payload, 1 << 20).unwrap();
                seq.unwrap().n
            })
            .collect()
    }

    #[test]
    fn sends_a_window_resends_after_the_delay_and_forgets_on_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let config = UplinkConfig {
            window: 3,
            resend_secs: 10,
            ..Default::default()
        };
        let path = dir.path().join("u.redb");
        let mut d = Delivery::open(&path, &config).unwrap();
        d.push(&queued(Priority::Samples, 4)).unwrap();
        d.push(&queued(Priority::Audit, 1)).unwrap();
        // Audit first, then the oldest samples; never more than the window.
        let first = d.due(0).unwrap();
        assert_eq!(seqs(&first), vec![5, 1, 2]);
        assert!(first.iter().all(|s| !s.resend));
        assert!(d.due(5_000).unwrap().is_empty(), "all out, none overdue");
        // A receipt frees room: the next one goes, nothing is repeated.
        assert_eq!(d.ack(&[5, 1]).unwrap(), 2);
        assert_eq!(seqs(&d.due(6_000).unwrap()), vec![3, 4]);
        // No receipt for 2 within the delay: it goes again, with the floor.
        let again = d.due(10_000).unwrap();
        assert_eq!(seqs(&again), vec![2]);
        assert!(again[0].resend);
        let (_, seq): (Presence, _) = decode_seq(&again[0].payload, 1 << 20).unwrap();
        assert_eq!(seq.unwrap().floor, 2);
        // A reconnect sends everything out again at once.
        d.resend_all();
        assert_eq!(seqs(&d.due(10_001).unwrap()), vec![2, 3, 4]);
        // A crash loses nothing unacknowledged.
        drop(d);
        let mut d = Delivery::open(&path, &config).unwrap();
        assert_eq!(seqs(&d.due(0).unwrap()), vec![2, 3, 4]);
        d.ack(&[2, 3, 4]).unwrap();
        assert!(d.due(0).unwrap().is_empty());
        assert!(d.spool().is_empty());
    }
}
