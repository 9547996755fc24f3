//! Exactly-once intake of the edges' spooled uplink. Each spooled message
//! carries its buffer's stream id and a sequence number; a number seen
//! before is a duplicate and is not stored again. A message is
//! acknowledged only once the rows it brought are written to Parquet, so an
//! edge forgets nothing the store does not have.
//!
//! Per stream this keeps the numbers stored at or above the sender's
//! `floor` (below it the sender has forgotten everything, so nothing below
//! comes again). The state is saved (through a rename) after every flush and
//! before the receipts go out. A crash between a Parquet file's rename and
//! that save can store that flush's rows twice when the edge sends them
//! again; it can never lose them.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
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
    path: Option<PathBuf>,
    streams: BTreeMap<String, Stream>,
}

impl Receipts {
    /// Opens the state saved at `path`. An unreadable file is reported and
    /// replaced: the cost is that messages in flight may be stored twice.
    pub fn open(path: &Path) -> (Self, Option<String>) {
        let mut r = Self {
            path: Some(path.to_path_buf()),
            streams: BTreeMap::new(),
        };
        let problem = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(streams) => {
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
        if seq.n < s.floor || s.pending.contains(&seq.n) {
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

    /// Messages admitted and not yet written.
    pub fn pending(&self) -> usize {
        self.streams.values().map(|s| s.pending.len()).sum()
    }

    /// Marks everything admitted as written and saves; returns the receipts
    /// to send (`(site, receipt)`).
    pub fn written(&mut self) -> std::io::Result<Vec<(String, UplinkAck)>> {
        for s in self.streams.values_mut() {
            let pending = std::mem::take(&mut s.pending);
            s.stored.extend(pending.iter().copied());
            s.reack.extend(pending);
            while s.stored.len() > MAX_PER_STREAM {
                if let Some(first) = s.stored.pop_first() {
                    s.floor = first + 1;
                }
            }
        }
        self.save()?;
        Ok(self.take_receipts())
    }

    /// A receipt that could not go out: owed again with the next ones.
    pub fn owe(&mut self, ack: &UplinkAck) {
        if let Some(s) = self.streams.get_mut(&ack.stream) {
            s.reack.extend(ack.seqs.iter().copied());
        }
    }

    /// Receipts owed for duplicates of stored messages.
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

    fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(&self.streams).map_err(std::io::Error::other)?;
        vigil_core::file::write_atomic(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u64, floor: u64) -> Seq {
        Seq {
            stream: "s1".into(),
            n,
            floor,
        }
    }

    #[test]
    fn each_number_is_stored_once_and_acknowledged_only_after_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.json");
        let (mut r, problem) = Receipts::open(&path);
        assert!(problem.is_none());
        assert_eq!(r.admit("a", &seq(1, 1), 0), Intake::New);
        assert_eq!(r.admit("a", &seq(2, 1), 0), Intake::New);
        // Sent again before the write: not stored twice, no receipt yet.
        assert_eq!(r.admit("a", &seq(1, 1), 0), Intake::Duplicate);
        assert!(r.take_receipts().is_empty());
        assert_eq!(r.pending(), 2);
        let acks = r.written().unwrap();
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].0, "a");
        assert_eq!(acks[0].1.seqs, vec![1, 2]);
        assert_eq!(r.pending(), 0);
        // A receipt was lost and the edge sends 2 again: receipt only.
        assert_eq!(r.admit("a", &seq(2, 1), 0), Intake::Duplicate);
        assert_eq!(r.take_receipts()[0].1.seqs, vec![2]);
        // After a restart of the cloud, the same.
        drop(r);
        let (mut r, _) = Receipts::open(&path);
        assert_eq!(r.admit("a", &seq(2, 1), 0), Intake::Duplicate);
        assert_eq!(r.admit("a", &seq(3, 1), 0), Intake::New);
        // The sender forgot everything below 3: the state shrinks.
        assert_eq!(r.admit("a", &seq(4, 3), 0), Intake::New);
        assert_eq!(r.admit("a", &seq(1, 3), 0), Intake::Duplicate);
        r.written().unwrap();
        assert_eq!(
            r.streams["s1"].stored.iter().copied().collect::<Vec<_>>(),
            vec![3, 4]
        );
        // A receipt the broker had no room for is owed again.
        r.owe(&UplinkAck {
            stream: "s1".into(),
            seqs: vec![3, 4],
        });
        assert_eq!(r.take_receipts()[0].1.seqs, vec![3, 4]);
        assert!(r.take_receipts().is_empty());
        // Another stream numbers on its own.
        let other = Seq {
            stream: "s2".into(),
            n: 1,
            floor: 1,
        };
        assert_eq!(r.admit("b", &other, 0), Intake::New);
    }

    #[test]
    fn a_corrupt_file_is_reported_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.json");
        std::fs::write(&path, "{not json").unwrap();
        let (mut r, problem) = Receipts::open(&path);
        assert!(problem.unwrap().contains("not a receipts file"));
        assert_eq!(r.admit("a", &seq(1, 1), 0), Intake::New);
        r.written().unwrap();
        let (_, problem) = Receipts::open(&path);
        assert!(problem.is_none());
    }
}
