//! The buffer of one hour's samples: each (site, entity, metric) is stored
//! once and rows refer to it by number, so a row costs 36 bytes however long
//! its names. Written to Parquet in slices, so the strings are made for one
//! slice at a time.

use polars::prelude::*;
use std::collections::HashMap;

/// Rows per Parquet row group (and per slice of strings made at once).
const SLICE: usize = 1 << 20;

/// Bytes a series key costs besides its text (map entry, vector slot).
const KEY_OVERHEAD: usize = 96;

/// Bytes one row costs.
const ROW_BYTES: usize = 4 + 8 + 8 + 16;

#[derive(Debug, Default)]
pub(super) struct SampleRows {
    /// `site \0 entity \0 metric` → its number (a name holding `\0`
    /// only makes another key that maps to the same series).
    index: HashMap<String, u32>,
    /// (site, entity, metric) by number.
    keys: Vec<(String, String, String)>,
    series: Vec<u32>,
    ts: Vec<i64>,
    value: Vec<f64>,
    score: Vec<Option<f64>>,
    key_bytes: usize,
    scratch: String,
}

impl SampleRows {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn bytes(&self) -> usize {
        self.len() * ROW_BYTES + self.key_bytes
    }

    fn key(&mut self, site: &str, entity: &str, metric: &str) -> u32 {
        self.scratch.clear();
        for part in [site, "\0", entity, "\0", metric] {
            self.scratch.push_str(part);
        }
        if let Some(&n) = self.index.get(self.scratch.as_str()) {
            return n;
        }
        let n = self.keys.len() as u32;
        self.key_bytes += 2 * self.scratch.len() + KEY_OVERHEAD;
        self.keys
            .push((site.to_string(), entity.to_string(), metric.to_string()));
        self.index.insert(self.scratch.clone(), n);
        n
    }

    /// Adds (entity, metric, Unix ms, value, score) of `site`.
    pub fn push(&mut self, site: &str, (entity, metric, ts, value, score): super::Sample) {
        let n = self.key(site, entity, metric);
        self.push_row(n, ts, value, score);
    }

    fn push_row(&mut self, n: u32, ts: i64, value: f64, score: Option<f64>) {
        self.series.push(n);
        self.ts.push(ts);
        self.value.push(value);
        self.score.push(score);
    }

    /// Appends every row of `other`.
    pub fn absorb(&mut self, other: SampleRows) {
        let map: Vec<u32> = other
            .keys
            .iter()
            .map(|(s, e, m)| self.key(s, e, m))
            .collect();
        for i in 0..other.len() {
            let n = map[other.series[i] as usize];
            self.push_row(n, other.ts[i], other.value[i], other.score[i]);
        }
    }

    fn slice(&self, from: usize, to: usize) -> PolarsResult<DataFrame> {
        let ids = &self.series[from..to];
        let text = |name: &str, pick: fn(&(String, String, String)) -> &str| {
            let ca = StringChunked::from_iter_values(
                name.into(),
                ids.iter().map(|&n| pick(&self.keys[n as usize])),
            );
            Column::from(ca.into_series())
        };
        let cols = vec![
            Column::new("ts_ms".into(), &self.ts[from..to]),
            Column::new("value".into(), &self.value[from..to]),
            Column::new("score".into(), &self.score[from..to]),
            text("site", |k| k.0.as_str()),
            text("entity", |k| k.1.as_str()),
            text("metric", |k| k.2.as_str()),
        ];
        DataFrame::new(to - from, cols)
    }

    /// Writes the rows as Parquet to `w`, a row group per slice.
    pub fn write(&self, w: impl std::io::Write) -> PolarsResult<()> {
        let first = self.slice(0, self.len().min(SLICE))?;
        let mut writer = ParquetWriter::new(w).batched(first.schema())?;
        writer.write_batch(&first)?;
        let mut from = SLICE;
        while from < self.len() {
            let to = (from + SLICE).min(self.len());
            writer.write_batch(&self.slice(from, to)?)?;
            from = to;
        }
        writer.finish().map(|_| ())
    }
}
