//! The agent's small buffer for when the edge cannot hear it: metric
//! batches wait here, in memory and in order, while the broker connection is
//! down or the edge's presence says it is offline, and go out oldest first
//! when both are back. It is bounded in batches; when full the oldest goes,
//! counted. (The edge keeps the durable buffer; this one bridges restarts
//! of the broker or the edge, not of the agent.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use vigil_core::message::MetricBatch;

/// What the agent last heard of its edge, and on which broker connection.
/// Presence heard on an earlier connection does not count: after a broker
/// restart the edge may not be back yet (and a broker without persistence
/// has forgotten its retained presence).
#[derive(Debug, Default)]
pub struct EdgeSeen {
    online: AtomicBool,
    connection: AtomicU64,
}

impl EdgeSeen {
    /// Records the edge's presence, heard on broker connection `connection`.
    pub fn heard(&self, online: bool, connection: u64) -> bool {
        self.connection.store(connection, Ordering::Relaxed);
        self.online.swap(online, Ordering::Relaxed) != online
    }

    /// Whether the edge is listening, as of broker connection `connection`.
    pub fn listening(&self, connection: u64) -> bool {
        self.online.load(Ordering::Relaxed) && self.connection.load(Ordering::Relaxed) == connection
    }
}

/// Batches waiting to be sent.
#[derive(Debug)]
pub struct Backlog {
    q: VecDeque<MetricBatch>,
    max: usize,
}

impl Backlog {
    /// A backlog of at most `max` batches (0 keeps none).
    pub fn new(max: usize) -> Self {
        Self {
            q: VecDeque::new(),
            max,
        }
    }

    /// Holds a batch at the back; returns how many old batches went to make
    /// room (or 1 when nothing is kept at all).
    pub fn hold(&mut self, batch: MetricBatch) -> u64 {
        if self.max == 0 {
            return 1;
        }
        let mut dropped = 0;
        while self.q.len() >= self.max {
            self.q.pop_front();
            dropped += 1;
        }
        self.q.push_back(batch);
        dropped
    }

    /// Puts a batch that could not be sent back at the front.
    pub fn put_back(&mut self, batch: MetricBatch) {
        if self.q.len() < self.max {
            self.q.push_front(batch);
        }
    }

    /// The oldest held batch.
    pub fn take_oldest(&mut self) -> Option<MetricBatch> {
        self.q.pop_front()
    }

    /// Batches held.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64) -> MetricBatch {
        MetricBatch {
            host: "h".into(),
            seq,
            samples: vec![],
        }
    }

    #[test]
    fn keeps_order_drops_the_oldest_when_full_and_counts() {
        let mut b = Backlog::new(3);
        for s in 1..=5 {
            let dropped = b.hold(batch(s));
            assert_eq!(dropped, u64::from(s > 3));
        }
        assert_eq!(b.len(), 3);
        let first = b.take_oldest().unwrap();
        assert_eq!(first.seq, 3);
        b.put_back(first);
        let order: Vec<u64> = std::iter::from_fn(|| b.take_oldest())
            .map(|b| b.seq)
            .collect();
        assert_eq!(order, vec![3, 4, 5]);
        assert!(b.is_empty());
        assert_eq!(Backlog::new(0).hold(batch(1)), 1);
    }

    #[test]
    fn the_edge_counts_as_listening_only_when_heard_on_this_connection() {
        let e = EdgeSeen::default();
        assert!(!e.listening(1), "never heard of");
        e.heard(true, 1);
        assert!(e.listening(1));
        assert!(!e.listening(2), "heard before the reconnect");
        e.heard(true, 2);
        assert!(e.listening(2));
        e.heard(false, 2);
        assert!(!e.listening(2));
    }
}
