//! `vigil eval nab`: streams Vigil's detector over a NAB corpus, writes NAB's
//! result files and prints the three normalised scores. `vigil eval smd`:
//! per-machine detectors over the Server Machine Dataset.

use anyhow::Context;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use vigil_models::eval::{nab, smd, stream};
use vigil_models::DetectorConfig;

/// What `vigil eval nab` needs.
#[derive(Clone, Debug)]
pub struct NabArgs {
    /// NAB data folder (`<category>/<file>.csv`).
    pub data: PathBuf,
    /// `combined_windows.json`.
    pub labels: PathBuf,
    /// `profiles.json`; default: beside the labels folder.
    pub profiles: Option<PathBuf>,
    /// Where result files go.
    pub out: PathBuf,
    /// Detector name used in result paths.
    pub detector: String,
}

/// Runs the evaluation; returns the scores by profile.
pub fn nab(
    args: &NabArgs,
    cfg: &DetectorConfig,
) -> anyhow::Result<std::collections::BTreeMap<String, nab::ProfileScore>> {
    let profiles_path = args
        .profiles
        .clone()
        .unwrap_or_else(|| default_profiles(&args.labels));
    let windows = nab::load_windows(&args.labels)?;
    let profiles = nab::load_profiles(&profiles_path)?;
    let files = stream::read_data(&args.data, &windows)?;
    let bar = Progress::new("scoring", files.iter().map(|f| f.values.len()).sum());
    let scored = stream::run(cfg, &files, |done, _| bar.show(done))?;
    bar.finish();
    stream::write_results(&args.out, &args.detector, &files, &scored, &windows)?;
    let scores = nab::score_corpus(&scored, &windows, &profiles)?;
    let summary = args
        .out
        .join(&args.detector)
        .join(format!("{}_scores.json", args.detector));
    std::fs::write(&summary, serde_json::to_vec_pretty(&scores)?)
        .with_context(|| format!("writing {}", summary.display()))?;
    Ok(scores)
}

fn default_profiles(labels: &Path) -> PathBuf {
    labels
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("profiles.json")
}

/// One machine's SMD result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SmdMachine {
    /// Machine name (`machine-1-6`).
    pub name: String,
    /// Alarm threshold fixed from its training scores.
    pub threshold: f32,
    /// Counts behind the figures.
    pub counts: smd::Counts,
}

/// Runs `vigil eval smd` over every `<machine>_train.parquet` /
/// `<machine>_test.parquet` pair in `data`, machines in parallel.
pub fn smd(data: &Path, cfg: &DetectorConfig) -> anyhow::Result<Vec<SmdMachine>> {
    let mut names: Vec<String> = std::fs::read_dir(data)
        .with_context(|| format!("reading {}", data.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix("_test.parquet"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    anyhow::ensure!(
        !names.is_empty(),
        "no <machine>_test.parquet files in {}",
        data.display()
    );
    let machines = names
        .iter()
        .map(|n| {
            let train = read_rows(&data.join(format!("{n}_train.parquet")), false)?.0;
            let (test, labels) = read_rows(&data.join(format!("{n}_test.parquet")), true)?;
            Ok((n.clone(), train, test, labels))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let total: usize = machines.iter().map(|m| m.1.len() + m.2.len()).sum();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let bar = Progress::new("scoring", total);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.min(machines.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((name, train, test, labels)) = machines.get(i) else {
                    break;
                };
                let r = smd::run_machine(cfg, train, test, |n| {
                    let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                    if d % 2048 == 0 {
                        bar.show(d);
                    }
                })
                .map(|run| SmdMachine {
                    name: name.clone(),
                    threshold: run.threshold,
                    counts: smd::count(&run, labels, train, test),
                });
                if let Ok(mut v) = results.lock() {
                    v.push(r);
                }
            });
        }
    });
    bar.show(total);
    bar.finish();
    let mut out = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a scoring thread panicked"))?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Reads `m0..mN` (and `label` when asked) from one SMD Parquet file.
fn read_rows(path: &Path, labelled: bool) -> anyhow::Result<(smd::Rows, Vec<bool>)> {
    use polars::prelude::{DataType, ParquetReader, SerReader};
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let df = ParquetReader::new(file)
        .finish()
        .with_context(|| format!("reading Parquet {}", path.display()))?;
    let mut metrics: Vec<(usize, Vec<f64>)> = Vec::new();
    for col in df.columns() {
        let Some(k) = col.name().strip_prefix('m').and_then(|k| k.parse().ok()) else {
            continue;
        };
        let values = col
            .cast(&DataType::Float64)
            .with_context(|| format!("{}: column {} is not numeric", path.display(), col.name()))?;
        let values = values
            .f64()?
            .iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect();
        metrics.push((k, values));
    }
    metrics.sort_by_key(|m| m.0);
    anyhow::ensure!(!metrics.is_empty(), "{}: no m0..mN columns", path.display());
    let rows = (0..df.height())
        .map(|t| metrics.iter().map(|m| m.1[t]).collect())
        .collect();
    let labels = if labelled {
        let col = df
            .column("label")
            .with_context(|| format!("{}: no label column", path.display()))?
            .cast(&DataType::Float64)?;
        col.f64()?.iter().map(|v| v.unwrap_or(0.0) > 0.5).collect()
    } else {
        Vec::new()
    };
    Ok((rows, labels))
}

/// A progress bar on stderr: redrawn in place on a terminal, every quarter otherwise.
struct Progress {
    what: &'static str,
    total: usize,
    tty: bool,
    last: std::sync::atomic::AtomicUsize,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Self {
        Self {
            what,
            total,
            tty: std::io::stderr().is_terminal(),
            last: std::sync::atomic::AtomicUsize::new(usize::MAX),
        }
    }

    fn show(&self, done: usize) {
        let pct = done * 100 / self.total.max(1);
        let prev = self.last.swap(pct, std::sync::atomic::Ordering::Relaxed);
        if pct == prev || !(self.tty || pct % 25 == 0) {
            return;
        }
        let bar = "#".repeat(pct / 4) + &".".repeat(25 - pct / 4);
        let end = if self.tty { "\r" } else { "\n" };
        eprint!(
            "{} [{bar}] {pct:3}% {done}/{} rows{end}",
            self.what, self.total
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// The SMD figures as a text table, one row per machine and one pooled.
pub fn smd_table(machines: &[SmdMachine]) -> String {
    let mut all = smd::Counts::default();
    let mut out = format!(
        "{:<14} {:>5} {:>7} {:>7} {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} | {:>10}\n",
        "machine", "thr", "events", "alarms", "P", "R", "F1", "PA-P", "PA-R", "PA-F1", "root cause"
    );
    let mut line = |name: &str, thr: String, c: &smd::Counts| {
        let (e, pa) = (c.event(), c.point_adjusted());
        out.push_str(&format!(
            "{name:<14} {thr:>5} {:>7} {:>7} {:>6.3} {:>6.3} {:>6.3} | {:>6.3} {:>6.3} {:>6.3} | {:>4}/{:<3} {:>3.0}%\n",
            format!("{}/{}", c.events_found, c.events),
            c.alarms,
            e.precision,
            e.recall,
            e.f1,
            pa.precision,
            pa.recall,
            pa.f1,
            c.root_cause_hits,
            c.events_found,
            100.0 * c.root_cause_rate(),
        ));
    };
    for m in machines {
        all.add(&m.counts);
        line(&m.name, format!("{:.2}", m.threshold), &m.counts);
    }
    line("overall", "".into(), &all);
    out
}
