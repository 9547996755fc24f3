//! The uplink's delivery over the spool: the window of unacknowledged
//! messages, resends after `resend_secs`, and receipts.

use super::*;

/// Delivery state over the spool: what to send, what is out, what is done.
/// Synchronous (it does disk I/O); the task runs it on a blocking thread.
pub struct Delivery {
    pub(super) spool: Spool,
    /// Sequence number → when it was last sent (Unix ms).
    pub(super) out: HashMap<u64, i64>,
    pub(super) window: usize,
    pub(super) window_bytes: u64,
    pub(super) resend_ms: i64,
    pub(super) dropped_seen: [u64; 3],
}

/// One publish the delivery asks for.
#[derive(Debug)]
pub struct Send {
    /// MQTT topic.
    pub topic: String,
    /// The envelope with its sequence.
    pub payload: Vec<u8>,
    /// Whether it went out before.
    pub resend: bool,
}

impl Delivery {
    /// Opens the buffer at `path`.
    pub fn open(path: &Path, config: &UplinkConfig) -> Result<Self, SpoolError> {
        Ok(Self {
            spool: Spool::open(path, config.buffer_bytes)?,
            out: HashMap::new(),
            window: config.window,
            window_bytes: config.window_bytes,
            resend_ms: config.resend_secs as i64 * 1000,
            dropped_seen: [0; 3],
        })
    }

    /// The buffer underneath.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Stores a batch durably.
    pub fn push(&mut self, batch: &[Queued]) -> Result<(), SpoolError> {
        let items: Vec<(Priority, &str, &[u8])> = batch
            .iter()
            .map(|q| (q.priority, q.topic.as_str(), q.payload.as_slice()))
            .collect();
        self.spool.push(&items)
    }

    /// Forgets what the cloud acknowledged; returns how many were held.
    pub fn ack(&mut self, seqs: &[u64]) -> Result<u64, SpoolError> {
        for s in seqs {
            self.out.remove(s);
        }
        self.spool.ack(seqs)
    }

    /// Sends everything out again at the next [`Delivery::due`].
    pub fn resend_all(&mut self) {
        self.out.clear();
    }

    /// What to publish now: the first `window` messages in replay order that
    /// are not out, or have been out longer than the resend delay.
    pub fn due(&mut self, now_ms: i64) -> Result<Vec<Send>, SpoolError> {
        let out = &self.out;
        let resend_ms = self.resend_ms;
        // Messages out and not yet due again are not read at all.
        let (items, window) = self.spool.window(self.window, self.window_bytes, |seq| {
            out.get(&seq).is_some_and(|&at| now_ms - at < resend_ms)
        })?;
        let floor = self.spool.floor()?;
        let stream = self.spool.stream().to_string();
        // Only what is in the window stays out (the rest was acked or dropped).
        let keep: std::collections::HashSet<u64> = window.into_iter().collect();
        self.out.retain(|s, _| keep.contains(s));
        let mut sends = Vec::new();
        for i in items {
            let resend = self.out.contains_key(&i.seq);
            self.out.insert(i.seq, now_ms);
            let seq = Seq {
                stream: stream.clone(),
                n: i.seq,
                floor,
            };
            sends.push(Send {
                payload: with_seq(&i.payload, &seq),
                topic: i.topic,
                resend,
            });
        }
        Ok(sends)
    }

    /// Dropped messages per priority since the last call.
    pub fn take_dropped(&mut self) -> [u64; 3] {
        let mut d = [0; 3];
        for p in Priority::ALL {
            let now = self.spool.dropped(p);
            d[p as usize] = now - self.dropped_seen[p as usize];
            self.dropped_seen[p as usize] = now;
        }
        d
    }
}
