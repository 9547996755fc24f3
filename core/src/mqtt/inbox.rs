//! The bounded inbox between the link task and its role.

use super::*;

/// Incoming publishes for a role, bounded in count and in bytes: the link
/// waits for room (the broker then holds what is left) instead of queueing
/// without limit.
pub struct Inbox {
    rx: mpsc::Receiver<(Publish, i64)>,
    room: Arc<tokio::sync::Semaphore>,
    max: usize,
}

/// The link's end of an [`Inbox`].
pub struct InboxTx {
    tx: mpsc::Sender<(Publish, i64)>,
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
        Some(self.recv_stamped().await?.0)
    }

    /// The next message and when it arrived from the broker (Unix ms):
    /// a message that waited behind others is still judged by its arrival.
    pub async fn recv_stamped(&mut self) -> Option<(Publish, i64)> {
        let (p, at) = self.rx.recv().await?;
        self.room.add_permits(cost(&p, self.max) as usize);
        Some((p, at))
    }
}

impl InboxTx {
    /// Waits for room, then queues `p`; `Err` once the inbox is gone.
    pub(super) async fn send(&self, p: Publish) -> Result<(), ()> {
        let at = crate::clock::now_ms();
        let permit = self
            .room
            .acquire_many(cost(&p, self.max))
            .await
            .map_err(|_| ())?;
        permit.forget();
        self.tx.send((p, at)).await.map_err(|_| ())
    }
}
