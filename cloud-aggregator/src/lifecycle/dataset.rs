//! Training sets from the Parquet store, with polars: lazy scans of every
//! part (each holds every site's rows, with a `site` column; parts written
//! before that sit under `site=…` folders and take their site from the
//! folder), filtered by site, time and entity kind, and the
//! normalisation statistics (level and mean absolute deviation per series)
//! computed by polars over the training part only.

use polars::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What to train on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Sites (empty: all).
    pub sites: Vec<String>,
    /// Entity kinds such as `host`, `service`, `sensor` (empty: all).
    pub kinds: Vec<String>,
    /// From this time on, Unix ms.
    pub from_ms: Option<i64>,
    /// Before this time, Unix ms.
    pub to_ms: Option<i64>,
}

/// (site, entity, metric).
pub type Key = (String, String, String);

/// One series, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Which series.
    pub key: Key,
    /// Sample times, Unix ms.
    pub ts: Vec<i64>,
    /// Values.
    pub values: Vec<f64>,
}

/// The data read.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// Every series found.
    pub series: Vec<Series>,
    /// Samples in all.
    pub samples: u64,
    /// Sites found.
    pub sites: Vec<String>,
    /// Earliest sample, Unix ms.
    pub from_ms: Option<i64>,
    /// Latest sample, Unix ms.
    pub to_ms: Option<i64>,
}

/// Parquet files of `table`, with the site of their folder when they sit
/// under one (`site=…/hour=…/`, the layout before parts held every site).
fn files(root: &Path, table: &str) -> Vec<(Option<String>, PathBuf)> {
    let mut out = Vec::new();
    let parquet = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|f| f.path())
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect()
    };
    let Ok(dirs) = std::fs::read_dir(root.join(table)) else {
        return out;
    };
    for d in dirs.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        if name.starts_with("hour=") {
            out.extend(parquet(&d.path()).into_iter().map(|p| (None, p)));
        } else if let Some(site) = name.strip_prefix("site=") {
            for hour in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let files = parquet(&hour.path()).into_iter();
                out.extend(files.map(|p| (Some(site.to_string()), p)));
            }
        }
    }
    out.sort();
    out
}

/// A lazy scan of `columns` of `table` plus a `site` column, of the sites
/// asked for (all when none), or `None` when it has no files. Selecting the
/// columns per file lets files written by older versions (with fewer
/// columns) union cleanly.
fn scan(
    root: &Path,
    table: &str,
    sites: &[String],
    columns: &[&str],
) -> PolarsResult<Option<LazyFrame>> {
    let mut frames = Vec::new();
    let wanted = |site: &str| sites.is_empty() || sites.iter().any(|w| w == site);
    for (site, path) in files(root, table) {
        if site.as_deref().is_some_and(|s| !wanted(s)) {
            continue;
        }
        let args = ScanArgsParquet {
            hive_options: HiveOptions {
                enabled: Some(false),
                ..Default::default()
            },
            ..Default::default()
        };
        let lf = LazyFrame::scan_parquet(PlRefPath::new(path.to_string_lossy().as_ref()), args)?;
        let mut select: Vec<Expr> = columns.iter().map(|c| col(*c)).collect();
        let lf = match site {
            Some(site) => lf.select(select).with_column(lit(site).alias("site")),
            None => {
                select.push(col("site"));
                let lf = lf.select(select);
                match sites.split_first() {
                    Some((first, rest)) => {
                        let is = |s: &String| col("site").eq(lit(s.clone()));
                        lf.filter(rest.iter().fold(is(first), |acc, s| acc.or(is(s))))
                    }
                    None => lf,
                }
            }
        };
        frames.push(lf);
    }
    if frames.is_empty() {
        return Ok(None);
    }
    Ok(Some(concat(frames, UnionArgs::default())?))
}

fn samples(root: &Path, q: &Query) -> PolarsResult<Option<LazyFrame>> {
    let columns = ["entity", "metric", "ts_ms", "value"];
    let Some(mut lf) = scan(root, "samples", &q.sites, &columns)? else {
        return Ok(None);
    };
    if let Some(f) = q.from_ms {
        lf = lf.filter(col("ts_ms").gt_eq(lit(f)));
    }
    if let Some(t) = q.to_ms {
        lf = lf.filter(col("ts_ms").lt(lit(t)));
    }
    if let Some(first) = q.kinds.first() {
        let kind = |k: &str| col("entity").str().starts_with(lit(format!("{k}/")));
        let any = q.kinds[1..]
            .iter()
            .fold(kind(first), |acc, k| acc.or(kind(k)));
        lf = lf.filter(any);
    }
    // Finite values only: a NaN must not poison a series' statistics.
    Ok(Some(lf.filter(col("value").is_finite())))
}

fn text(df: &DataFrame, name: &str) -> PolarsResult<Vec<String>> {
    let ca = df.column(name)?.str()?;
    Ok((0..ca.len())
        .map(|i| ca.get(i).unwrap_or_default().to_string())
        .collect())
}

/// Reads the series the query selects, each sorted by time.
pub fn load(root: &Path, q: &Query) -> PolarsResult<Dataset> {
    let Some(lf) = samples(root, q)? else {
        return Ok(Dataset::default());
    };
    let df = lf
        .select([
            col("site"),
            col("entity"),
            col("metric"),
            col("ts_ms"),
            col("value"),
        ])
        .sort(
            ["site", "entity", "metric", "ts_ms"],
            SortMultipleOptions::default(),
        )
        .collect()?;
    let (sites, entities, metrics) = (
        text(&df, "site")?,
        text(&df, "entity")?,
        text(&df, "metric")?,
    );
    let ts: Vec<i64> = df.column("ts_ms")?.i64()?.into_no_null_iter().collect();
    let values: Vec<f64> = df.column("value")?.f64()?.into_no_null_iter().collect();
    let mut ds = Dataset::default();
    for i in 0..df.height() {
        let key = (sites[i].clone(), entities[i].clone(), metrics[i].clone());
        if ds.series.last().is_none_or(|s| s.key != key) {
            ds.series.push(Series {
                key,
                ..Series::default()
            });
        }
        if let Some(s) = ds.series.last_mut() {
            s.ts.push(ts[i]);
            s.values.push(values[i]);
        }
    }
    ds.samples = df.height() as u64;
    ds.from_ms = ts.iter().min().copied();
    ds.to_ms = ts.iter().max().copied();
    ds.sites = sites;
    ds.sites.dedup();
    Ok(ds)
}

/// Level (mean) and spread (mean absolute deviation) per series, from the
/// samples before `cut_ms`.
pub fn stats(root: &Path, q: &Query, cut_ms: i64) -> PolarsResult<HashMap<Key, (f64, f64)>> {
    let Some(lf) = samples(root, q)? else {
        return Ok(HashMap::new());
    };
    let df = lf
        .filter(col("ts_ms").lt(lit(cut_ms)))
        .group_by([col("site"), col("entity"), col("metric")])
        .agg([
            col("value").mean().alias("level"),
            (col("value") - col("value").mean())
                .abs()
                .mean()
                .alias("spread"),
        ])
        .collect()?;
    let (sites, entities, metrics) = (
        text(&df, "site")?,
        text(&df, "entity")?,
        text(&df, "metric")?,
    );
    let level = df.column("level")?.f64()?.clone();
    let spread = df.column("spread")?.f64()?.clone();
    let mut out = HashMap::new();
    for i in 0..df.height() {
        if let (Some(l), Some(s)) = (level.get(i), spread.get(i)) {
            out.insert(
                (sites[i].clone(), entities[i].clone(), metrics[i].clone()),
                (l, s),
            );
        }
    }
    Ok(out)
}

/// Confirmed incidents: anomalies whose remediation was verified to fix
/// the target, as (series, onset time).
pub fn incidents(root: &Path, q: &Query) -> PolarsResult<Vec<(Key, i64)>> {
    let (Some(audit), Some(anomalies)) = (
        scan(root, "audit", &q.sites, &["kind", "anomaly_id"])?,
        scan(
            root,
            "anomalies",
            &q.sites,
            &["id", "entity", "top_metric", "ts_ms"],
        )?,
    ) else {
        return Ok(Vec::new());
    };
    let fixed = audit
        .filter(col("kind").eq(lit("verified")))
        .select([col("anomaly_id").alias("id")])
        .unique(None, UniqueKeepStrategy::First);
    let df = anomalies
        .join(
            fixed,
            [col("id")],
            [col("id")],
            JoinArgs::new(JoinType::Inner),
        )
        .select([col("site"), col("entity"), col("top_metric"), col("ts_ms")])
        .collect()?;
    let (sites, entities, metrics) = (
        text(&df, "site")?,
        text(&df, "entity")?,
        text(&df, "top_metric")?,
    );
    let ts: Vec<i64> = df.column("ts_ms")?.i64()?.into_no_null_iter().collect();
    Ok((0..df.height())
        .map(|i| {
            (
                (sites[i].clone(), entities[i].clone(), metrics[i].clone()),
                ts[i],
            )
        })
        .collect())
}

#[cfg(test)]
mod tests;
