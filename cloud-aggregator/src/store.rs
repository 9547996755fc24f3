//! The Parquet store: rows are buffered per table, site and hour, and
//! flushed with polars to `{root}/{table}/site={site}/hour={YYYY-MM-DDTHH}/part-….parquet`.
//! Flushing is blocking file I/O; callers run it on a blocking thread.

use polars::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vigil_core::message::{shares_text, AnomalyEvent, AuditRecord, ScoredSample};

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

/// Column-wise buffer for one partition.
#[derive(Debug, Default)]
struct Rows {
    text: BTreeMap<&'static str, Vec<Option<String>>>,
    int: BTreeMap<&'static str, Vec<Option<i64>>>,
    float: BTreeMap<&'static str, Vec<Option<f64>>>,
    len: usize,
}

impl Rows {
    fn s(&mut self, col: &'static str, v: Option<String>) {
        self.text.entry(col).or_default().push(v);
    }
    fn i(&mut self, col: &'static str, v: i64) {
        self.opt_i(col, Some(v));
    }
    fn f(&mut self, col: &'static str, v: f64) {
        self.opt_f(col, Some(v));
    }
    fn opt_i(&mut self, col: &'static str, v: Option<i64>) {
        self.int.entry(col).or_default().push(v);
    }
    fn opt_f(&mut self, col: &'static str, v: Option<f64>) {
        self.float.entry(col).or_default().push(v);
    }

    fn frame(&self) -> PolarsResult<DataFrame> {
        let mut cols: Vec<Column> = Vec::new();
        for (name, v) in &self.int {
            cols.push(Column::new((*name).into(), v.as_slice()));
        }
        for (name, v) in &self.float {
            cols.push(Column::new((*name).into(), v.as_slice()));
        }
        for (name, v) in &self.text {
            cols.push(Column::new((*name).into(), v.as_slice()));
        }
        DataFrame::new(self.len, cols)
    }
}

/// Key of one partition buffer.
type Key = (Table, String, String);

/// Buffers and writes the fleet's data.
pub struct Store {
    root: PathBuf,
    buffers: BTreeMap<Key, Rows>,
    seq: u64,
}

/// What one flush wrote.
#[derive(Debug, Default, PartialEq)]
pub struct Flushed {
    /// Rows per table.
    pub rows: BTreeMap<&'static str, u64>,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Errors (their rows stay buffered for the next flush).
    pub errors: Vec<String>,
}

/// `YYYY-MM-DDTHH` (UTC) of a Unix-ms instant.
pub fn hour_of(ts_ms: i64) -> String {
    vigil_core::clock::rfc3339(ts_ms)[..13].to_string()
}

impl Store {
    /// A store rooted at `root` (created on first flush).
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            buffers: BTreeMap::new(),
            seq: 0,
        }
    }

    fn rows(&mut self, table: Table, site: &str, ts_ms: i64) -> &mut Rows {
        self.buffers
            .entry((table, site.to_string(), hour_of(ts_ms)))
            .or_default()
    }

    /// Buffers scored samples of `site`.
    pub fn add_samples(&mut self, site: &str, samples: &[ScoredSample]) {
        for s in samples {
            let r = self.rows(Table::Samples, site, s.ts_ms);
            r.s("entity", Some(s.entity.to_string()));
            r.s("metric", Some(s.metric.clone()));
            r.i("ts_ms", s.ts_ms);
            r.f("value", s.value);
            r.opt_f("score", s.score);
            r.len += 1;
        }
    }

    /// Buffers one anomaly event.
    pub fn add_anomaly(&mut self, a: &AnomalyEvent) {
        let r = self.rows(Table::Anomalies, &a.site, a.ts_ms);
        r.s("id", Some(a.id.clone()));
        r.s("entity", Some(a.entity.to_string()));
        r.s("top_metric", Some(a.top_metric.clone()));
        r.s("model_version", Some(a.model_version.clone()));
        r.i("ts_ms", a.ts_ms);
        r.f("score", a.score);
        r.opt_f("entity_score", a.entity_score);
        r.s("root_cause", Some(shares_text(&a.root_cause)));
        r.len += 1;
    }

    /// Buffers one audit record.
    pub fn add_audit(&mut self, a: &AuditRecord) {
        let r = self.rows(Table::Audit, &a.site, a.ts_ms);
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
        r.len += 1;
    }

    /// Rows buffered and not yet written.
    pub fn pending_rows(&self) -> usize {
        self.buffers.values().map(|r| r.len).sum()
    }

    /// Largest buffered partition, in rows.
    pub fn largest_partition(&self) -> usize {
        self.buffers.values().map(|r| r.len).max().unwrap_or(0)
    }

    /// Writes every buffered partition as a new Parquet file.
    pub fn flush(&mut self, now_ms: i64) -> Flushed {
        let mut out = Flushed::default();
        let buffers = std::mem::take(&mut self.buffers);
        for (key, rows) in buffers {
            if rows.len == 0 {
                continue;
            }
            self.seq += 1;
            let (table, site, hour) = &key;
            let dir = self
                .root
                .join(table.name())
                .join(format!("site={site}"))
                .join(format!("hour={hour}"));
            let path = dir.join(format!("part-{now_ms}-{:06}.parquet", self.seq));
            match write(&dir, &path, &rows) {
                Ok(()) => {
                    *out.rows.entry(table.name()).or_default() += rows.len as u64;
                    out.files.push(path);
                }
                Err(e) => {
                    out.errors.push(format!("{}: {e}", path.display()));
                    self.buffers.insert(key, rows);
                }
            }
        }
        out
    }
}

fn write(dir: &Path, path: &Path, rows: &Rows) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut df = rows.frame().map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes)
        .finish(&mut df)
        .map_err(|e| e.to_string())?;
    // Written beside, fsynced, renamed, the folder fsynced: a reader never
    // sees half a file, and the rows are on disk before their receipt goes.
    vigil_core::file::write_atomic(path, &bytes).map_err(|e| e.to_string())
}

/// Reads one Parquet file (for tests and tools).
pub fn read(path: &Path) -> PolarsResult<DataFrame> {
    let file = std::fs::File::open(path)?;
    ParquetReader::new(file).finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::EntityId;

    #[test]
    fn hours_are_utc_civil() {
        assert_eq!(hour_of(0), "1970-01-01T00");
        assert_eq!(hour_of(1_700_000_000_000), "2023-11-14T22");
        assert_eq!(hour_of(951_782_400_000), "2000-02-29T00");
    }

    #[test]
    fn partitions_by_site_and_hour_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new(dir.path());
        let s = |ts: i64, v: f64| ScoredSample {
            entity: EntityId::host("h"),
            metric: "cpu".into(),
            ts_ms: ts,
            value: v,
            score: Some(0.1),
        };
        store.add_samples("a", &[s(0, 1.0), s(1000, 2.0), s(3_600_000, 3.0)]);
        store.add_samples("b", &[s(0, 4.0)]);
        assert_eq!(store.pending_rows(), 4);
        let f = store.flush(5);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        assert_eq!(f.rows["samples"], 4);
        assert_eq!(f.files.len(), 3);
        assert_eq!(store.pending_rows(), 0);
        let first = f
            .files
            .iter()
            .find(|p| p.to_string_lossy().contains("site=a/hour=1970-01-01T00"))
            .unwrap();
        let df = read(first).unwrap();
        assert_eq!(df.height(), 2);
        let values: Vec<f64> = df
            .column("value")
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert_eq!(values, vec![1.0, 2.0]);
        let entity = df.column("entity").unwrap().str().unwrap().get(0);
        assert_eq!(entity, Some("host/h"));
    }

    #[test]
    fn failed_flush_keeps_rows() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "not a dir").unwrap();
        let mut store = Store::new(&blocker);
        store.add_samples(
            "a",
            &[ScoredSample {
                entity: EntityId::host("h"),
                metric: "m".into(),
                ts_ms: 0,
                value: 1.0,
                score: None,
            }],
        );
        let f = store.flush(1);
        assert_eq!(f.errors.len(), 1);
        assert_eq!(store.pending_rows(), 1);
    }
}
