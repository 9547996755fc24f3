//! The edge's durable uplink buffer: messages for the cloud wait here, on
//! disk, until they are sent. It is bounded by bytes and keeps three
//! priorities (audit records and events, then scores, then raw samples).
//! When full, the oldest message of the lowest priority present goes first.
//! A message never pushes out one of a higher priority: it is dropped itself
//! then. Every drop is counted by priority.
//!
//! The store is redb, an embedded, crash-safe (copy-on-write, checksummed)
//! key-value store: one table per priority keyed by a sequence number, so
//! each priority replays in the order it was written. Each `push` and each
//! `ack` is one transaction, made durable (fsync) before it returns; callers
//! batch (one push per tick) so the fsync cost is paid once a tick, not per
//! message. `vigil bench spool` measures it.

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;

/// Uplink priority, most important first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Audit records and anomaly events.
    Audit = 0,
    /// Scored samples.
    Scores = 1,
    /// Raw samples.
    Samples = 2,
}

impl Priority {
    /// Every priority, most important first.
    pub const ALL: [Priority; 3] = [Priority::Audit, Priority::Scores, Priority::Samples];

    /// A short label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Audit => "audit",
            Priority::Scores => "scores",
            Priority::Samples => "samples",
        }
    }
}

const TABLES: [TableDefinition<u64, &[u8]>; 3] = [
    TableDefinition::new("audit"),
    TableDefinition::new("scores"),
    TableDefinition::new("samples"),
];

/// The buffer's own facts: its stream id and the next sequence number
/// (kept so numbers never repeat, even after the buffer empties).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Bytes counted per stored message besides its value (key and overhead).
const PER_ITEM: u64 = 16;

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The store failed.
    #[error("uplink buffer: {0}")]
    Store(String),
}

fn store_err(e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Store(e.to_string())
}

/// One buffered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Its priority.
    pub priority: Priority,
    /// Its sequence number (increasing across all priorities).
    pub seq: u64,
    /// MQTT topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
}

fn encode(topic: &str, payload: &[u8]) -> Vec<u8> {
    let t = topic.as_bytes();
    let mut v = Vec::with_capacity(4 + t.len() + payload.len());
    v.extend_from_slice(&(t.len() as u32).to_le_bytes());
    v.extend_from_slice(t);
    v.extend_from_slice(payload);
    v
}

fn decode(v: &[u8]) -> Option<(String, Vec<u8>)> {
    let n = u32::from_le_bytes(v.get(..4)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(v.get(4..4 + n)?).ok()?.to_string();
    Some((topic, v.get(4 + n..)?.to_vec()))
}

/// redb's page cache for the buffer.
pub const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// The buffer.
pub struct Spool {
    db: Database,
    max_bytes: u64,
    bytes: u64,
    entries: [u64; 3],
    next_seq: u64,
    dropped: [u64; 3],
    stream: String,
}

impl Spool {
    /// Opens (or creates) the buffer at `path`, bounded by `max_bytes`;
    /// what a previous run left is kept and counted.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        // redb caches up to 1 GiB of pages by default: a server's size, not
        // an edge box's. The buffer is written once and read once, in order.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(store_err)?;
        let mut s = Self {
            db,
            max_bytes,
            bytes: 0,
            entries: [0; 3],
            next_seq: 1,
            dropped: [0; 3],
            stream: String::new(),
        };
        let tx = s.db.begin_write().map_err(store_err)?;
        {
            let mut meta = tx.open_table(META).map_err(store_err)?;
            let stored = meta.get("stream").map_err(store_err)?;
            let stream = stored.and_then(|v| String::from_utf8(v.value().to_vec()).ok());
            match stream {
                Some(id) => s.stream = id,
                None => {
                    s.stream = uuid::Uuid::new_v4().simple().to_string();
                    meta.insert("stream", s.stream.as_bytes())
                        .map_err(store_err)?;
                }
            }
            let stored = meta.get("next_seq").map_err(store_err)?;
            if let Some(b) = stored.and_then(|v| <[u8; 8]>::try_from(v.value()).ok()) {
                s.next_seq = u64::from_le_bytes(b);
            }
        }
        for (i, def) in TABLES.iter().enumerate() {
            let t = tx.open_table(*def).map_err(store_err)?;
            s.entries[i] = t.len().map_err(store_err)?;
            for row in t.iter().map_err(store_err)? {
                let (k, v) = row.map_err(store_err)?;
                s.bytes += v.value().len() as u64 + PER_ITEM;
                s.next_seq = s.next_seq.max(k.value() + 1);
            }
        }
        tx.commit().map_err(store_err)?;
        Ok(s)
    }

    /// Stores `items` in one durable transaction, dropping what the bound
    /// requires (see the module docs).
    pub fn push(&mut self, items: &[(Priority, &str, &[u8])]) -> Result<(), SpoolError> {
        if items.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(store_err)?;
        {
            let mut tables = [
                tx.open_table(TABLES[0]).map_err(store_err)?,
                tx.open_table(TABLES[1]).map_err(store_err)?,
                tx.open_table(TABLES[2]).map_err(store_err)?,
            ];
            for &(p, topic, payload) in items {
                let value = encode(topic, payload);
                let size = value.len() as u64 + PER_ITEM;
                let mut fits = size <= self.max_bytes;
                while fits && self.bytes + size > self.max_bytes {
                    // The lowest priority present, if not above this message's.
                    let Some(victim) = (0..3).rev().find(|&i| self.entries[i] > 0) else {
                        break;
                    };
                    if victim < p as usize {
                        fits = false;
                        break;
                    }
                    let old = tables[victim].pop_first().map_err(store_err)?;
                    if let Some((_, v)) = old {
                        self.bytes -= v.value().len() as u64 + PER_ITEM;
                    }
                    self.entries[victim] -= 1;
                    self.dropped[victim] += 1;
                }
                if !fits {
                    self.dropped[p as usize] += 1;
                    continue;
                }
                tables[p as usize]
                    .insert(self.next_seq, value.as_slice())
                    .map_err(store_err)?;
                self.next_seq += 1;
                self.entries[p as usize] += 1;
                self.bytes += size;
            }
            let mut meta = tx.open_table(META).map_err(store_err)?;
            meta.insert("next_seq", self.next_seq.to_le_bytes().as_slice())
                .map_err(store_err)?;
        }
        tx.commit().map_err(store_err)
    }

    /// Up to `max` messages to send next: the most important priority
    /// first, each priority oldest first.
    pub fn peek(&self, max: usize) -> Result<Vec<Item>, SpoolError> {
        self.window(max, u64::MAX, |_| false)
            .map(|(items, _)| items)
    }

    /// The window in replay order: at most `max` messages and about
    /// `max_bytes` (always at least one). Returns the messages not `held`
    /// (decoded) and the sequence numbers of the whole window; held ones are
    /// neither copied nor decoded.
    pub fn window(
        &self,
        max: usize,
        max_bytes: u64,
        held: impl Fn(u64) -> bool,
    ) -> Result<(Vec<Item>, Vec<u64>), SpoolError> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let (mut out, mut seqs, mut bytes) = (Vec::new(), Vec::new(), 0u64);
        for p in Priority::ALL {
            let t = tx.open_table(TABLES[p as usize]).map_err(store_err)?;
            for row in t.iter().map_err(store_err)? {
                if seqs.len() >= max || (bytes >= max_bytes && !seqs.is_empty()) {
                    return Ok((out, seqs));
                }
                let (k, v) = row.map_err(store_err)?;
                let seq = k.value();
                bytes += v.value().len() as u64;
                seqs.push(seq);
                if held(seq) {
                    continue;
                }
                // A value this build cannot read is skipped (and acked by seq).
                let (topic, payload) = decode(v.value()).unwrap_or_default();
                out.push(Item {
                    priority: p,
                    seq,
                    topic,
                    payload,
                });
            }
        }
        Ok((out, seqs))
    }

    /// Removes delivered messages by sequence number, in one durable
    /// transaction; returns how many were held (unknown numbers are ignored).
    pub fn ack(&mut self, seqs: &[u64]) -> Result<u64, SpoolError> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let mut removed = 0;
        let tx = self.db.begin_write().map_err(store_err)?;
        {
            for p in Priority::ALL {
                let mut t = tx.open_table(TABLES[p as usize]).map_err(store_err)?;
                for &seq in seqs {
                    if let Some(v) = t.remove(seq).map_err(store_err)? {
                        self.bytes -= v.value().len() as u64 + PER_ITEM;
                        self.entries[p as usize] -= 1;
                        removed += 1;
                    }
                }
            }
        }
        tx.commit().map_err(store_err)?;
        Ok(removed)
    }

    /// This buffer's stream id: sequence numbers are unique within it.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The lowest sequence number still held (every lower one was acked
    /// or dropped); the next number to be given when nothing is held.
    pub fn floor(&self) -> Result<u64, SpoolError> {
        let tx = self.db.begin_read().map_err(store_err)?;
        let mut floor = self.next_seq;
        for def in TABLES {
            let t = tx.open_table(def).map_err(store_err)?;
            let first = t.first().map_err(store_err)?.map(|(k, _)| k.value());
            if let Some(k) = first {
                floor = floor.min(k);
            }
        }
        Ok(floor)
    }

    /// Bytes held (as counted against the bound).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Messages held per priority.
    pub fn len(&self, p: Priority) -> u64 {
        self.entries[p as usize]
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|&n| n == 0)
    }

    /// Messages dropped per priority since this spool was opened.
    pub fn dropped(&self, p: Priority) -> u64 {
        self.dropped[p as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> Vec<u8> {
        vec![b'x'; n]
    }

    #[test]
    fn replays_by_priority_in_order_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.redb");
        let mut s = Spool::open(&path, 1 << 20).unwrap();
        let (a, b) = (msg(10), msg(20));
        s.push(&[
            (Priority::Samples, "t/s1", &a),
            (Priority::Audit, "t/a1", &b),
            (Priority::Scores, "t/c1", &a),
            (Priority::Audit, "t/a2", &a),
        ])
        .unwrap();
        let got: Vec<String> = s.peek(10).unwrap().into_iter().map(|i| i.topic).collect();
        assert_eq!(got, vec!["t/a1", "t/a2", "t/c1", "t/s1"]);
        let first = s.peek(1).unwrap();
        assert_eq!(
            (first[0].topic.as_str(), first[0].payload.len()),
            ("t/a1", 20)
        );
        s.ack(&[first[0].seq]).unwrap();
        let bytes = s.bytes();
        // Not acked: still there after the process goes away.
        drop(s);
        let mut s = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(s.bytes(), bytes);
        assert_eq!(
            (
                s.len(Priority::Audit),
                s.len(Priority::Scores),
                s.len(Priority::Samples)
            ),
            (1, 1, 1)
        );
        let got: Vec<String> = s.peek(10).unwrap().into_iter().map(|i| i.topic).collect();
        assert_eq!(got, vec!["t/a2", "t/c1", "t/s1"]);
        // New messages come after the old ones in their priority.
        s.push(&[(Priority::Audit, "t/a3", &a)]).unwrap();
        let got: Vec<String> = s.peek(2).unwrap().into_iter().map(|i| i.topic).collect();
        assert_eq!(got, vec!["t/a2", "t/a3"]);
        let all: Vec<u64> = s.peek(10).unwrap().iter().map(|i| i.seq).collect();
        assert_eq!(s.ack(&all).unwrap(), 4);
        assert_eq!(s.ack(&all).unwrap(), 0, "a second receipt changes nothing");
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn sequence_numbers_never_repeat_in_a_stream_and_floor_tracks_the_oldest_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.redb");
        let mut s = Spool::open(&path, 1 << 20).unwrap();
        let stream = s.stream().to_string();
        assert_eq!(stream.len(), 32);
        let a = msg(5);
        s.push(&[(Priority::Samples, "s", &a), (Priority::Audit, "a", &a)])
            .unwrap();
        assert_eq!(s.floor().unwrap(), 1);
        let all: Vec<(Priority, u64)> = s
            .peek(9)
            .unwrap()
            .iter()
            .map(|i| (i.priority, i.seq))
            .collect();
        assert_eq!(all, vec![(Priority::Audit, 2), (Priority::Samples, 1)]);
        s.ack(&[1]).unwrap();
        assert_eq!(s.floor().unwrap(), 2);
        s.ack(&[2]).unwrap();
        assert_eq!(s.floor().unwrap(), 3, "empty: the next number");
        drop(s);
        // Emptied and reopened: same stream, numbers go on.
        let mut s = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(s.stream(), stream);
        s.push(&[(Priority::Scores, "c", &a)]).unwrap();
        assert_eq!(s.peek(1).unwrap()[0].seq, 3);
        // A new file is a new stream.
        let other = Spool::open(&dir.path().join("other.redb"), 1 << 20).unwrap();
        assert_ne!(other.stream(), stream);
    }

    #[test]
    fn when_full_only_the_lowest_priority_is_dropped_oldest_first_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let body = msg(84); // 4 + 4-byte topic + 84 = 92 bytes, +16 = 108 counted
        let size = 108u64;
        let mut s = Spool::open(&dir.path().join("s.redb"), size * 10).unwrap();
        let samples: Vec<String> = (0..8).map(|i| format!("s{i:03}")).collect();
        let rows: Vec<(Priority, &str, &[u8])> = samples
            .iter()
            .map(|t| (Priority::Samples, t.as_str(), body.as_slice()))
            .collect();
        s.push(&rows).unwrap();
        // 8 samples held; 5 audit records and 2 scores need 7 places.
        let audit: Vec<String> = (0..5).map(|i| format!("a{i:03}")).collect();
        let mut rows: Vec<(Priority, &str, &[u8])> = audit
            .iter()
            .map(|t| (Priority::Audit, t.as_str(), body.as_slice()))
            .collect();
        rows.push((Priority::Scores, "c000", &body));
        rows.push((Priority::Scores, "c001", &body));
        s.push(&rows).unwrap();
        assert_eq!(s.bytes(), size * 10);
        assert_eq!(s.dropped(Priority::Samples), 5, "oldest samples make room");
        assert_eq!(
            (s.dropped(Priority::Audit), s.dropped(Priority::Scores)),
            (0, 0)
        );
        let left: Vec<String> = s.peek(100).unwrap().into_iter().map(|i| i.topic).collect();
        assert_eq!(
            left,
            vec!["a000", "a001", "a002", "a003", "a004", "c000", "c001", "s005", "s006", "s007"]
        );
        // Full of higher priorities: a new sample is dropped itself.
        s.push(&[
            (Priority::Audit, "a005", &body),
            (Priority::Audit, "a006", &body),
            (Priority::Audit, "a007", &body),
        ])
        .unwrap();
        assert_eq!(s.dropped(Priority::Samples), 8);
        s.push(&[(Priority::Samples, "s008", &body)]).unwrap();
        assert_eq!(s.dropped(Priority::Samples), 9);
        // Scores go next, oldest first; audit records only when nothing else is left.
        s.push(&[
            (Priority::Audit, "a008", &body),
            (Priority::Audit, "a009", &body),
            (Priority::Audit, "a010", &body),
        ])
        .unwrap();
        assert_eq!(
            (s.dropped(Priority::Scores), s.dropped(Priority::Audit)),
            (2, 1)
        );
        let left: Vec<String> = s.peek(100).unwrap().into_iter().map(|i| i.topic).collect();
        assert_eq!(left.first().map(String::as_str), Some("a001"));
        assert_eq!(left.len(), 10);
        // A message larger than the whole bound is dropped, not stored.
        let huge = msg(2000);
        s.push(&[(Priority::Audit, "big", &huge)]).unwrap();
        assert_eq!(s.dropped(Priority::Audit), 2);
    }

    #[test]
    fn the_file_stays_near_its_bound_while_full_buffers_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.redb");
        let bound = 4u64 << 20;
        let mut s = Spool::open(&path, bound).unwrap();
        let payload = vec![b'x'; 150_000];
        // 60 MB through a 4 MiB buffer, as with the cloud away for long.
        for _ in 0..400 {
            s.push(&[(Priority::Samples, "t", payload.as_slice())])
                .unwrap();
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(
            size <= 3 * bound + (8 << 20),
            "file {size} bytes for a {bound}-byte bound"
        );
    }
}
