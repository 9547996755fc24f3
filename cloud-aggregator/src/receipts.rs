//! Exactly-once intake of the edges' spooled uplink. Each spooled message
//! carries its buffer's stream id and a sequence number; a number seen
//! before is a duplicate and is not stored again. A message is
//! acknowledged only once it is durable in the write-ahead log ([`crate::wal`]),
//! so an edge forgets nothing the cloud could lose.
//!
//! A number goes admitted (`pending`) → in a commit being written
//! (`committing`) → durable (`stored`, receipted). Per stream this keeps the
//! numbers stored at or above the sender's `floor` (below it the sender has
//! forgotten everything, so nothing below comes again). The state is saved
//! as a checkpoint (through a rename) with each roll of the log into
//! Parquet, beside the first log segment not rolled; the log after it
//! rebuilds the rest on start ([`Receipts::replayed`]).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use vigil_core::envelope::Seq;
use vigil_core::message::UplinkAck;

/// Most streams remembered; beyond it the one heard from longest ago goes.
const MAX_STREAMS: usize = 10_000;
/// Most stored numbers remembered per stream (a well-behaved edge has at
/// most its window out); beyond it the floor is raised.
const MAX_PER_STREAM: usize = 100_000;
/// Most sequence numbers in one receipt message.
const MAX_PER_ACK: usize = 4096;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stream {
    site: String,
    floor: u64,
    stored: BTreeSet<u64>,
    last_ms: i64,
    #[serde(skip)]
    pending: BTreeSet<u64>,
    #[serde(skip)]
    committing: BTreeSet<u64>,
    #[serde(skip)]
    reack: BTreeSet<u64>,
}

/// What to do with a sequenced message.
#[derive(Debug, PartialEq, Eq)]
pub enum Intake {
    /// First time: store it (its receipt follows the next flush).
    New,
    /// Seen before: do not store it again.
    Duplicate,
}

/// The receipts of every stream.
#[derive(Debug, Default)]
pub struct Receipts {
    streams: BTreeMap<String, Stream>,
    wal_from: u64,
}

/// The numbers of one commit, per stream.
#[derive(Debug, Default, PartialEq)]
pub struct Sealed(Vec<(String, Vec<u64>)>);

/// What is saved: the streams, and the first log segment whose messages are
/// not in Parquet.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    wal_from: u64,
    streams: BTreeMap<String, Stream>,
}

/// A saved file: a checkpoint, or the streams alone (before the log).
#[derive(Deserialize)]
#[serde(untagged)]
enum Saved {
    Checkpoint(Checkpoint),
    Streams(BTreeMap<String, Stream>),
}

impl Receipts {
    /// Opens the state saved at `path`. An unreadable file is reported and
    /// replaced: the cost is that messages in flight may be stored twice.
    pub fn open(path: &Path) -> (Self, Option<String>) {
        let mut r = Self::default();
        let problem = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(Saved::Checkpoint(c)) => {
                    (r.streams, r.wal_from) = (c.streams, c.wal_from);
                    None
                }
                Ok(Saved::Streams(streams)) => {
                    r.streams = streams;
                    None
                }
                Err(e) => Some(format!("{}: not a receipts file ({e})", path.display())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("{}: {e}", path.display())),
        };
        (r, problem)
    }

    /// Takes in another aggregator's receipts (a dead cluster member's):
    /// per stream, every number either has stored, above the higher floor.
    pub fn merge(&mut self, other: Receipts) {
        for (id, o) in other.streams {
            let s = self.streams.entry(id).or_default();
            if s.site.is_empty() {
                s.site = o.site;
            }
            s.floor = s.floor.max(o.floor);
            s.last_ms = s.last_ms.max(o.last_ms);
            s.stored.extend(o.stored);
            s.stored = s.stored.split_off(&s.floor);
            trim(s);
        }
    }

    /// Admits one message of `site`.
    pub fn admit(&mut self, site: &str, seq: &Seq, now_ms: i64) -> Intake {
        if !self.streams.contains_key(&seq.stream) && self.streams.len() >= MAX_STREAMS {
            let oldest = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.last_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.streams.remove(&k);
            }
        }
        let s = self.streams.entry(seq.stream.clone()).or_default();
        s.site = site.to_string();
        s.last_ms = now_ms;
        if seq.floor > s.floor {
            s.floor = seq.floor;
            s.stored = s.stored.split_off(&seq.floor);
        }
        if seq.n < s.floor || s.pending.contains(&seq.n) || s.committing.contains(&seq.n) {
            return Intake::Duplicate;
        }
        if s.stored.contains(&seq.n) {
            // Stored, but the receipt was lost: send it again.
            s.reack.insert(seq.n);
            return Intake::Duplicate;
        }
        s.pending.insert(seq.n);
        Intake::New
    }

    /// Messages admitted and not yet in a commit.
    pub fn pending(&self) -> usize {
        self.streams.values().map(|s| s.pending.len()).sum()
    }

    /// The first log segment whose messages are not in Parquet, as saved.
    pub fn wal_from(&self) -> u64 {
        self.wal_from
    }

    /// Takes the numbers admitted so far into a commit.
    pub fn seal(&mut self) -> Sealed {
        let mut out = Vec::new();
        for (stream, s) in &mut self.streams {
            if s.pending.is_empty() {
                continue;
            }
            let seqs = std::mem::take(&mut s.pending);
            s.committing.extend(seqs.iter().copied());
            out.push((stream.clone(), seqs.into_iter().collect()));
        }
        Sealed(out)
    }

    /// The commit is durable: its numbers are stored and receipts are owed.
    pub fn committed(&mut self, sealed: Sealed) {
        for (stream, seqs) in sealed.0 {
            let Some(s) = self.streams.get_mut(&stream) else {
                continue;
            };
            for n in seqs {
                if s.committing.remove(&n) {
                    s.stored.insert(n);
                    s.reack.insert(n);
                }
            }
            trim(s);
        }
    }

    /// The commit failed: its numbers wait for the next one.
    pub fn uncommitted(&mut self, sealed: Sealed) {
        for (stream, seqs) in sealed.0 {
            if let Some(s) = self.streams.get_mut(&stream) {
                for n in seqs {
                    if s.committing.remove(&n) {
                        s.pending.insert(n);
                    }
                }
            }
        }
    }

    /// A message read back from the log on start: stored (its rows are
    /// buffered again), with its receipt owed.
    pub fn replayed(&mut self, site: &str, seq: &Seq, now_ms: i64) {
        self.admit(site, seq, now_ms);
        if let Some(s) = self.streams.get_mut(&seq.stream) {
            s.pending.remove(&seq.n);
            if seq.n >= s.floor {
                s.stored.insert(seq.n);
                s.reack.insert(seq.n);
            }
            trim(s);
        }
    }

    /// The checkpoint of a roll that starts now, to save once its Parquet is
    /// durable: everything admitted so far counts as stored (it is all in
    /// the roll, and its log is committed before the roll is written), and
    /// the log from `wal_from` on is what the roll leaves out.
    pub fn checkpoint(&self, wal_from: u64) -> Vec<u8> {
        let streams: BTreeMap<&String, Stream> = self
            .streams
            .iter()
            .map(|(k, s)| {
                let mut stored = s.stored.clone();
                stored.extend(s.pending.iter().chain(&s.committing).copied());
                let saved = Stream {
                    site: s.site.clone(),
                    floor: s.floor,
                    stored,
                    last_ms: s.last_ms,
                    ..Default::default()
                };
                (k, saved)
            })
            .collect();
        let c = serde_json::json!({ "wal_from": wal_from, "streams": streams });
        c.to_string().into_bytes()
    }

    /// Saves a checkpoint made by [`Receipts::checkpoint`] at `path`.
    pub fn save_checkpoint(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        vigil_core::file::write_atomic(path, bytes)
    }

    /// A receipt that could not go out: owed again with the next ones.
    pub fn owe(&mut self, ack: &UplinkAck) {
        if let Some(s) = self.streams.get_mut(&ack.stream) {
            s.reack.extend(ack.seqs.iter().copied());
        }
    }

    /// Receipts owed: for commits, and for duplicates of stored messages.
    pub fn take_receipts(&mut self) -> Vec<(String, UplinkAck)> {
        let mut out = Vec::new();
        for (stream, s) in &mut self.streams {
            let seqs: Vec<u64> = std::mem::take(&mut s.reack).into_iter().collect();
            for chunk in seqs.chunks(MAX_PER_ACK) {
                out.push((
                    s.site.clone(),
                    UplinkAck {
                        stream: stream.clone(),
                        seqs: chunk.to_vec(),
                    },
                ));
            }
        }
        out
    }
}

/// Keeps at most [`MAX_PER_STREAM`] numbers, raising the floor.
fn trim(s: &mut Stream) {
    while s.stored.len() > MAX_PER_STREAM {
        if let Some(first) = s.stored.pop_first() {
            s.floor = first + 1;
        }
    }
}

#[cfg(test)]
mod tests;
