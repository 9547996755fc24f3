//! Outgoing messages go through a bounded queue drained by one task, so the
//! scoring loop never waits on the broker. When the queue is full the message
//! is counted as dropped. (The durable, prioritised on-disk uplink buffer
//! replaces this for cloud-bound data in a later step.)

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigil_core::mqtt::{LinkMetrics, Publisher};
use vigil_core::{encode, Payload};

struct Out {
    topic: String,
    kind: &'static str,
    bytes: Vec<u8>,
    retain: bool,
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Out>,
    metrics: LinkMetrics,
}

/// The draining task.
pub struct OutboxTask {
    rx: mpsc::Receiver<Out>,
    publisher: Publisher,
}

/// A queue of `capacity` messages in front of `publisher`.
pub fn outbox(capacity: usize, publisher: Publisher, metrics: LinkMetrics) -> (Outbox, OutboxTask) {
    let (tx, rx) = mpsc::channel(capacity);
    (Outbox { tx, metrics }, OutboxTask { rx, publisher })
}

impl Outbox {
    /// Queues `body` for `topic`; false (and counted) if the queue is full.
    pub fn send<P: Payload>(&self, topic: String, body: &P, retain: bool) -> bool {
        let out = Out {
            topic,
            kind: P::KIND,
            bytes: encode(body),
            retain,
        };
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(_) => {
                self.metrics.dropped.with_label_values(&[P::KIND]).inc();
                false
            }
        }
    }
}

impl OutboxTask {
    /// Publishes queued messages until `shutdown`, then drains what is left
    /// for at most a second so a clean stop loses nothing queued.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let out = tokio::select! {
                _ = shutdown.cancelled() => break,
                o = self.rx.recv() => match o { Some(o) => o, None => return },
            };
            self.publisher
                .send_raw(&out.topic, out.kind, out.bytes, out.retain)
                .await;
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while let Ok(Some(out)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.publisher
                .send_raw(&out.topic, out.kind, out.bytes, out.retain)
                .await;
        }
    }
}
