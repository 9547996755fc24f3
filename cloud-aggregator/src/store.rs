//! The Parquet store: rows are buffered per table and hour and written,
//! a roll at a time, to `{root}/{table}/hour={YYYY-MM-DDTHH}/part-{roll}.parquet`,
//! every site's rows together with a `site` column: a part holds what a
//! roll gathered (up to `store.roll_bytes`, or `store.roll_secs` of it), so
//! files stay large however many sites send. A roll's parts are named by
//! the roll alone, so writing a roll again (after a crash, from the
//! write-ahead log) replaces its parts instead of adding rows twice.
//! The parts go to the local disk or an S3 bucket ([`Sink`]). Flushing is
//! blocking I/O; callers run it on a blocking thread.

mod rows;
mod samples;
pub mod sink;

use polars::prelude::*;
use rows::Rows;
use samples::SampleRows;
pub use sink::Sink;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use vigil_core::message::{shares_text, AnomalyEvent, AuditRecord, ScoredSample};

/// One sample as buffered: (entity, metric, Unix ms, value, score).
pub type Sample<'a> = (&'a str, &'a str, i64, f64, Option<f64>);

/// A table of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Scored samples.
    Samples,
    /// Anomaly events.
    Anomalies,
    /// Audit records.
    Audit,
}

impl Table {
    /// Folder and label name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Samples => "samples",
            Table::Anomalies => "anomalies",
            Table::Audit => "audit",
        }
    }
}

/// Buffers and writes the fleet's data.
pub struct Store {
    sink: Arc<Sink>,
    /// Put in part names (a cluster member's name), so members sharing a
    /// store never write the same part.
    tag: String,
    /// Samples by hour.
    samples: BTreeMap<String, SampleRows>,
    /// Anomalies and audit records by table and hour.
    other: BTreeMap<(Table, String), Rows>,
    /// The hour (since the epoch) of the last sample, and its name.
    last_hour: Option<(i64, String)>,
}

/// What one flush wrote.
#[derive(Debug, Default, PartialEq)]
pub struct Flushed {
    /// Rows per table.
    pub rows: BTreeMap<&'static str, u64>,
    /// Parts written (paths, or URLs on S3).
    pub files: Vec<String>,
    /// Errors (their rows stay buffered for the next flush).
    pub errors: Vec<String>,
}

/// `YYYY-MM-DDTHH` (UTC) of a Unix-ms instant.
pub fn hour_of(ts_ms: i64) -> String {
    vigil_core::clock::rfc3339(ts_ms)[..13].to_string()
}

impl Store {
    /// A store rooted at the local folder `root` (created on first flush).
    pub fn new(root: &Path) -> Self {
        Self::on(Arc::new(Sink::Local(root.to_path_buf())))
    }

    /// A store writing to `sink`.
    pub fn on(sink: Arc<Sink>) -> Self {
        Self {
            sink,
            tag: String::new(),
            samples: BTreeMap::new(),
            other: BTreeMap::new(),
            last_hour: None,
        }
    }

    /// The same, its parts named `part-{tag}-{roll}`.
    pub fn tagged(mut self, tag: &str) -> Self {
        self.tag = if tag.is_empty() {
            String::new()
        } else {
            format!("{tag}-")
        };
        self
    }

    fn other(&mut self, table: Table, ts_ms: i64) -> &mut Rows {
        self.other.entry((table, hour_of(ts_ms))).or_default()
    }

    /// Buffers scored samples of `site`.
    pub fn add_samples(&mut self, site: &str, samples: &[ScoredSample]) {
        for s in samples {
            let sample = (
                s.entity.as_str(),
                s.metric.as_str(),
                s.ts_ms,
                s.value,
                s.score,
            );
            self.add_sample(site, sample);
        }
    }

    /// Buffers one sample of `site`.
    pub fn add_sample(&mut self, site: &str, s: Sample<'_>) {
        let hour = s.2.div_euclid(3_600_000);
        // Samples mostly share the hour of the one before: name it once.
        if self.last_hour.as_ref().is_none_or(|(h, _)| *h != hour) {
            self.last_hour = Some((hour, hour_of(s.2)));
        }
        let Some((_, name)) = &self.last_hour else {
            return;
        };
        let rows = match self.samples.get_mut(name.as_str()) {
            Some(rows) => rows,
            None => self.samples.entry(name.clone()).or_default(),
        };
        rows.push(site, s);
    }

    /// Buffers one anomaly event.
    pub fn add_anomaly(&mut self, a: &AnomalyEvent) {
        let r = self.other(Table::Anomalies, a.ts_ms);
        r.s("site", Some(a.site.clone()));
        r.s("id", Some(a.id.clone()));
        r.s("entity", Some(a.entity.to_string()));
        r.s("top_metric", Some(a.top_metric.clone()));
        r.s("model_version", Some(a.model_version.clone()));
        r.i("ts_ms", a.ts_ms);
        r.f("score", a.score);
        r.opt_f("entity_score", a.entity_score);
        r.s("root_cause", Some(shares_text(&a.root_cause)));
        r.end_row();
    }

    /// Buffers one audit record.
    pub fn add_audit(&mut self, a: &AuditRecord) {
        let r = self.other(Table::Audit, a.ts_ms);
        r.s("site", Some(a.site.clone()));
        r.i("ts_ms", a.ts_ms);
        r.s("kind", Some(a.kind.as_str().to_string()));
        r.s("policy", Some(a.policy.clone()));
        r.s("policy_version", Some(a.policy_version.clone()));
        r.s("target", Some(a.target.to_string()));
        r.s("action", Some(a.action.clone()));
        r.s("command_id", a.command_id.clone());
        r.s("anomaly_id", a.anomaly_id.clone());
        r.s("model_version", Some(a.model_version.clone()));
        r.opt_f("score", a.score);
        r.s("top_metric", Some(a.top_metric.clone()));
        r.s("mode", Some(a.mode.clone()));
        r.opt_i("lease_token", a.lease_token.map(|t| t as i64));
        r.s("outcome", a.outcome.map(|o| o.as_str().to_string()));
        r.s("rail", a.rail.clone());
        r.s("detail", Some(a.detail.clone()));
        r.s("root_cause", Some(shares_text(&a.root_cause)));
        r.end_row();
    }

    /// Rows buffered and not yet written.
    pub fn pending_rows(&self) -> usize {
        let other: usize = self.other.values().map(|r| r.len).sum();
        self.samples.values().map(SampleRows::len).sum::<usize>() + other
    }

    /// About how many bytes the buffered rows take in memory.
    pub fn pending_bytes(&self) -> usize {
        let other: usize = self.other.values().map(|r| r.bytes).sum();
        self.samples.values().map(SampleRows::bytes).sum::<usize>() + other
    }

    /// Takes every row of `other` (a roll that could not be written, to be
    /// written with the next one).
    pub fn absorb(&mut self, other: Store) {
        for (hour, rows) in other.samples {
            self.samples.entry(hour).or_default().absorb(rows);
        }
        for (key, rows) in other.other {
            self.other.entry(key).or_default().absorb(rows);
        }
    }

    /// Writes every buffered partition as part `roll` of its table and hour
    /// (replacing a part of the same roll). All or nothing: when any part
    /// fails, every row stays buffered, to be written again under the same
    /// names (with whatever joins them).
    pub fn flush(&mut self, roll: u64) -> Flushed {
        let mut out = Flushed::default();
        let tag = &self.tag;
        let key = |table: Table, hour: &str| {
            format!("{}/hour={hour}/part-{tag}{roll:013}.parquet", table.name())
        };
        let sink = &self.sink;
        let mut done = |table: Table, key: String, rows: usize, r: Result<(), String>| match r {
            Ok(()) => {
                *out.rows.entry(table.name()).or_default() += rows as u64;
                out.files.push(sink.describe(&key));
            }
            Err(e) => out.errors.push(format!("{}: {e}", sink.describe(&key))),
        };
        for (hour, rows) in &self.samples {
            let k = key(Table::Samples, hour);
            let r = write(sink, &k, |w| rows.write(w));
            done(Table::Samples, k, rows.len(), r);
        }
        for ((table, hour), rows) in &self.other {
            let k = key(*table, hour);
            let r = write(sink, &k, |w| {
                let mut df = rows.frame()?;
                ParquetWriter::new(w).finish(&mut df).map(|_| ())
            });
            done(*table, k, rows.len, r);
        }
        if out.errors.is_empty() {
            self.samples.clear();
            self.other.clear();
        } else {
            out.rows.clear();
            out.files.clear();
        }
        out
    }
}

/// Locally written beside, fsynced, renamed, the folder fsynced; on S3 one
/// PUT of the whole part: a reader never sees half a part, and the rows are
/// stored before the roll is checkpointed and its log segments go.
fn write(
    sink: &Sink,
    key: &str,
    parquet: impl FnOnce(&mut dyn std::io::Write) -> PolarsResult<()>,
) -> Result<(), String> {
    use std::io::Write as _;
    let Some(path) = sink.local_path(key) else {
        let mut bytes = Vec::new();
        parquet(&mut bytes).map_err(|e| e.to_string())?;
        return sink.put(key, bytes);
    };
    vigil_core::file::write_atomic_with(&path, |f| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        parquet(&mut w).map_err(std::io::Error::other)?;
        w.flush()
    })
    .map_err(|e| e.to_string())
}

/// Reads one Parquet file (for tests and tools).
pub fn read(path: &Path) -> PolarsResult<DataFrame> {
    let file = std::fs::File::open(path)?;
    ParquetReader::new(file).finish()
}

#[cfg(test)]
mod tests;
