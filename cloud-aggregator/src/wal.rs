//! The aggregator's write-ahead log: every uplink message it takes is
//! appended here as received (topic and payload) and made durable in group
//! commits (one write and one `fdatasync` for everything taken since the last
//! one); its receipt goes out only after that commit. Parquet is written
//! later and in large parts; a part that is written and checkpointed lets the
//! segments before it go. After a crash the segments after the checkpoint are
//! read again, so a receipted message is never lost.
//!
//! Segments are `wal-{n:010}.log` in one folder. A record is
//! `len(u32 LE) crc32(u32 LE) topic_len(u16 LE) topic payload`, where `len`
//! counts from `topic_len` on and the CRC covers the same bytes. A torn or
//! corrupt record ends its segment's replay (it was never committed, so it
//! was never receipted).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use vigil_core::file::sync_dir;

/// Largest record replay accepts (the broker's packet limit is far below).
const MAX_RECORD: usize = 256 << 20;

/// Appends one record to a commit buffer.
pub fn append(buf: &mut Vec<u8>, topic: &str, payload: &[u8]) {
    let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
    let len = 2 + topic.len() + payload.len();
    let start = buf.len();
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(topic);
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The log's writer: the current segment, appended to and synced.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    segment: u64,
    file: File,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:010}.log"))
}

/// The segments in `dir`, oldest first.
pub fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("wal-")
            .and_then(|r| r.strip_suffix(".log"))
            .and_then(|n| n.parse().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

impl Wal {
    /// Opens the log in `dir` on a new segment after every one there (so
    /// what is replayed is never appended to), numbered `at_least` or more
    /// (numbers are never reused, even after every segment is deleted).
    pub fn open(dir: &Path, at_least: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let next = segments(dir)?.last().map_or(1, |n| n + 1).max(at_least);
        let file = Self::create(dir, next)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            segment: next,
            file,
        })
    }

    fn create(dir: &Path, n: u64) -> std::io::Result<File> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(dir, n))?;
        sync_dir(dir)?;
        Ok(file)
    }

    /// The segment being written.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Appends `records` (made by [`append`]) and syncs them to disk.
    pub fn commit(&mut self, records: &[u8]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.file.write_all(records)?;
        self.file.sync_data()
    }

    /// Starts a new segment; returns its number. Everything committed
    /// before is in the segments below it.
    pub fn rotate(&mut self) -> std::io::Result<u64> {
        let next = self.segment + 1;
        self.file = Self::create(&self.dir, next)?;
        self.segment = next;
        Ok(next)
    }

    /// Deletes the segments below `segment` (their rows are in Parquet).
    pub fn remove_below(dir: &Path, segment: u64) -> std::io::Result<usize> {
        let mut removed = 0;
        let all = match segments(dir) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        for n in all.into_iter().filter(|&n| n < segment) {
            std::fs::remove_file(segment_path(dir, n))?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// What replay found.
#[derive(Debug, Default, PartialEq)]
pub struct Replayed {
    /// Records read.
    pub records: u64,
    /// Segments whose tail was torn or corrupt (the rest of it was skipped).
    pub torn: Vec<u64>,
}

/// Calls `each(topic, payload)` for every record of the segments from
/// `from` on, oldest first.
pub fn replay(
    dir: &Path,
    from: u64,
    mut each: impl FnMut(&str, &[u8]),
) -> std::io::Result<Replayed> {
    let mut out = Replayed::default();
    let all = match segments(dir) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for n in all.into_iter().filter(|&n| n >= from) {
        let mut bytes = Vec::new();
        File::open(segment_path(dir, n))?.read_to_end(&mut bytes)?;
        let mut at = 0;
        while at < bytes.len() {
            match record(&bytes[at..]) {
                Some((topic, payload, used)) => {
                    each(topic, payload);
                    out.records += 1;
                    at += used;
                }
                None => {
                    out.torn.push(n);
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// One record at the start of `b`: topic, payload, bytes used.
fn record(b: &[u8]) -> Option<(&str, &[u8], usize)> {
    let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
    if !(2..=MAX_RECORD).contains(&len) {
        return None;
    }
    let body = b.get(8..8 + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let topic_len = u16::from_le_bytes(body[..2].try_into().ok()?) as usize;
    let topic = std::str::from_utf8(body.get(2..2 + topic_len)?).ok()?;
    Some((topic, &body[2 + topic_len..], 8 + len))
}

#[cfg(test)]
mod tests;
