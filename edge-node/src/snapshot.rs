//! Detector snapshots: every series' learnt state (baseline, ranges, the
//! LSTM's state, training history) and the online-trained weights, written
//! to `<data_dir>/detector.snap` every `snapshot_secs` and at a clean stop,
//! so a restarted edge scores from its first tick instead of learning each
//! series again (a blind minute during which it also flags what it has not
//! learnt yet). Rows are kept by series id: slots differ after a restart.
//!
//! Format (little endian): `VGSNAP1\n`, weights length (u32) and bytes
//! (safetensors; empty for a released model), online steps (u64), rows
//! (u32), then per row the id (u16 length, UTF-8) and its words (u32
//! count, u32 each).

use crate::cache::Cache;
use std::collections::HashMap;
use std::path::Path;
use vigil_models::Detector;

const MAGIC: &[u8; 8] = b"VGSNAP1\n";

/// A snapshot read back: rows by series id, waiting for their series.
#[derive(Debug, Default)]
pub struct Snapshot {
    rows: HashMap<String, Vec<u32>>,
    /// Online-trained weights and their step count.
    pub weights: Option<(Vec<u8>, u64)>,
}

impl Snapshot {
    /// The saved row of series `id`, taken out (each is restored once).
    pub fn take(&mut self, id: &str) -> Option<Vec<u32>> {
        self.rows.remove(id)
    }

    /// Rows not restored yet.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether every row was restored (or there were none).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Forgets the rows whose series have not come back.
    pub fn clear(&mut self) {
        self.rows = HashMap::new();
    }
}

/// The snapshot of `detector` over the series in `cache`, as bytes. The
/// weights go along only for a model trained here (a released model's
/// weights are in its bundle).
pub fn encode(detector: &Detector, cache: &Cache) -> Vec<u8> {
    let weights = if detector.release().is_none() {
        detector.weights_bytes().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut out = Vec::with_capacity(64 + weights.len() + cache.len() * 300);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(weights.len() as u32).to_le_bytes());
    out.extend_from_slice(&weights);
    out.extend_from_slice(&detector.train_steps().to_le_bytes());
    let rows: Vec<(String, Vec<u32>)> = cache
        .entries()
        .iter()
        .enumerate()
        .filter(|(_, e)| e.born != 0)
        .filter_map(|(i, e)| Some((e.id.to_string(), detector.row_state(i)?)))
        .filter(|(id, _)| id.len() <= u16::MAX as usize)
        .collect();
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for (id, words) in rows {
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&(words.len() as u32).to_le_bytes());
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out
}

/// Reads a snapshot; `None` for a file that is missing, torn or not one.
pub fn load(path: &Path) -> Option<Snapshot> {
    let bytes = std::fs::read(path).ok()?;
    decode(&bytes)
}

fn decode(bytes: &[u8]) -> Option<Snapshot> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(8)? != MAGIC {
        return None;
    }
    let wlen = r.u32()? as usize;
    let weights = r.take(wlen)?.to_vec();
    let steps = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let n = r.u32()? as usize;
    let mut rows = HashMap::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let len = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
        let id = std::str::from_utf8(r.take(len)?).ok()?.to_string();
        let words = r.u32()? as usize;
        let raw = r.take(words.checked_mul(4)?)?;
        let w = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        rows.insert(id, w);
    }
    Some(Snapshot {
        rows,
        weights: (!weights.is_empty()).then_some((weights, steps)),
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::{EntityId, SeriesId};
    use vigil_models::DetectorConfig;

    #[test]
    fn a_restarted_edge_scores_its_series_from_the_first_tick() {
        let up = SeriesId::new(EntityId::service("h", "web"), "up");
        let mut cache = Cache::new(10, 5);
        let mut d = Detector::new(DetectorConfig::default()).unwrap();
        for t in 0..120i64 {
            cache.push(&up, t * 1000, 1.0, t * 1000, 0).unwrap();
            d.tick(&cache.take_pending()).unwrap();
        }
        let bytes = encode(&d, &cache);
        let mut snap = decode(&bytes).expect("reads back");
        assert_eq!(snap.len(), 1);
        // After the restart: a fresh detector, the rows put back by id.
        let mut after = Detector::new(DetectorConfig::default()).unwrap();
        let (w, steps) = snap
            .weights
            .clone()
            .expect("weights of a model trained here");
        after.load_weights_bytes(&w, steps).unwrap();
        assert!(after.restore_row(0, &snap.take(&up.to_string()).unwrap()));
        assert!(snap.is_empty());
        let dead = after.tick(&[Some(0.0)]).unwrap();
        assert!(dead.scores[0] >= 0.95, "{:?}", dead.scores);
        // Torn or foreign files are not snapshots.
        assert!(decode(&bytes[..bytes.len() - 3]).is_none());
        assert!(decode(b"something else").is_none());
    }
}
