//! `vigil eval nab`: streams Vigil's detector over a NAB corpus, writes NAB's
//! result files and prints the three normalised scores. `vigil eval smd`:
//! per-machine detectors over the Server Machine Dataset.

use anyhow::Context;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use vigil_models::eval::{events, nab, smd, stream};
use vigil_models::{Ablation, DetectorConfig};

/// What `vigil eval nab` needs.
#[derive(Clone, Debug)]
pub struct NabArgs {
    /// NAB data folder (`<category>/<file>.csv`).
    pub data: PathBuf,
    /// `combined_windows.json`.
    pub labels: PathBuf,
    /// `profiles.json`; default: found beside the labels (see [`find_profiles`]).
    pub profiles: Option<PathBuf>,
    /// Where result files go.
    pub out: PathBuf,
    /// Detector name used in result paths.
    pub detector: String,
}

/// What one `vigil eval nab` run measured.
#[derive(Clone, Debug)]
pub struct NabRun {
    /// NAB's normalised scores by profile.
    pub scores: BTreeMap<String, nab::ProfileScore>,
    /// The event figures (`../shared/data/README.md`) of the written score
    /// at the detector's threshold as shipped...
    pub shipped: events::EventFigures,
    /// ...and, only beside it, at the best single level the labels choose.
    pub best: events::EventFigures,
}

/// Runs the evaluation with `ablation` applied; returns the scores by
/// profile and the event figures. Result files of an ablation go under
/// `<detector>-<ablation>`, with `<name>_scores.json` and `<name>_events.json`.
pub fn nab(args: &NabArgs, cfg: &DetectorConfig, ablation: Ablation) -> anyhow::Result<NabRun> {
    let profiles_path = match &args.profiles {
        Some(p) => p.clone(),
        None => find_profiles(&args.labels)?,
    };
    let windows = nab::load_windows(&args.labels)?;
    let profiles = nab::load_profiles(&profiles_path)?;
    let files = stream::read_data(&args.data, &windows)?;
    let bar = Progress::new("scoring", files.iter().map(|f| f.values.len()).sum());
    // The edge's episodes as shipped: what an upward crossing of the
    // threshold in the written score means.
    let levels = vigil_edge::rails::RailsConfig::default().levels(cfg.threshold as f64);
    let scored = stream::run(cfg, ablation, levels, &files, |done, _| bar.show(done))?;
    bar.finish();
    let name = match ablation {
        Ablation::Full => args.detector.clone(),
        a => format!("{}-{a}", args.detector),
    };
    stream::write_results(&args.out, &name, &files, &scored, &windows)?;
    let scores = nab::score_corpus(&scored, &windows, &profiles)?;
    let summary = args.out.join(&name).join(format!("{name}_scores.json"));
    std::fs::write(&summary, serde_json::to_vec_pretty(&scores)?)
        .with_context(|| format!("writing {}", summary.display()))?;
    let shipped = events::at_level(&scored, &windows, cfg.threshold as f64);
    let best = events::best_level(&scored, &windows);
    let path = args.out.join(&name).join(format!("{name}_events.json"));
    let both = serde_json::json!({ "shipped": shipped, "best_label_chosen": best });
    std::fs::write(&path, serde_json::to_vec_pretty(&both)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(NabRun {
        scores,
        shipped,
        best,
    })
}

/// NAB's cost profiles for a labels file: `profiles.json` beside the labels
/// folder (the layout in shared/), or `config/profiles.json` in a NAB
/// checkout (`NAB/labels/combined_windows.json` → `NAB/config/profiles.json`).
pub fn find_profiles(labels: &Path) -> anyhow::Result<PathBuf> {
    let root = labels
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let candidates = [
        root.join("profiles.json"),
        root.join("config").join("profiles.json"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no NAB cost profiles at {} or {}; pass --profiles",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

/// The ablation table: the three normalised scores per row, each row's
/// difference from the full detector's standard score, and the event
/// figures at the shipped threshold (caught, false alarms per series-day,
/// event F1 and its difference from the full detector's).
pub fn ablation_table(rows: &[(Ablation, NabRun)]) -> String {
    let get = |s: &BTreeMap<String, nab::ProfileScore>, p: &str| {
        s.get(p).map(|x| x.normalised).unwrap_or(f64::NAN)
    };
    let full = rows
        .iter()
        .find(|(a, _)| *a == Ablation::Full)
        .map(|(_, r)| (get(&r.scores, "standard"), r.shipped.f1));
    let mut out = format!(
        "\n{:<20} {:>9} {:>8} {:>8} {:>10} {:>13} {:>9} {:>7} {:>8}\n",
        "ablation",
        "standard",
        "low FP",
        "low FN",
        "vs full",
        "caught",
        "false/day",
        "F1",
        "vs full"
    );
    for (a, r) in rows {
        let std = get(&r.scores, "standard");
        let e = &r.shipped;
        let (d_std, d_f1) = full
            .map(|(s, f)| (format!("{:+.2}", std - s), format!("{:+.3}", e.f1 - f)))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<20} {:>9.2} {:>8.2} {:>8.2} {:>10} {:>13} {:>9.3} {:>7.3} {:>8}\n",
            a.name(),
            std,
            get(&r.scores, "reward_low_FP_rate"),
            get(&r.scores, "reward_low_FN_rate"),
            d_std,
            format!("{} / {}", e.caught, e.incidents),
            e.false_per_series_day,
            e.f1,
            d_f1
        ));
    }
    out
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

/// Which model `vigil eval smd` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SmdModel {
    /// Every metric scored alone by the edge's detector.
    Series,
    /// All of a machine's metrics scored at once by the entity model.
    Entity,
    /// The entity model without its forecast error (ablation).
    EntityNoForecast,
    /// The entity model without its subspace error (ablation).
    EntityNoSubspace,
    /// The entity model with the kind's LSTM forecast in place of persistence.
    EntityLstm,
}

impl SmdModel {
    /// How this model's threshold is chosen (printed under the table).
    pub fn threshold_rule(self, risk: f64) -> String {
        match self {
            SmdModel::Series => format!(
                "threshold: the higher of the detector's own ({}) and the machine's highest score over the second half of training",
                DetectorConfig::default().threshold
            ),
            _ => format!(
                "threshold: peaks over threshold on the machine's training scores (second half), risk {risk:e}: a normal row exceeds it with that probability"
            ),
        }
    }
}

/// The published root causes of one machine; none when the file is absent.
fn interpretation(path: &Path) -> anyhow::Result<Vec<smd::Interpretation>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            smd::parse_interpretation(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Runs `vigil eval smd` over every `<machine>_train.parquet` /
/// `<machine>_test.parquet` pair in `data`, machines in parallel.
pub fn smd(data: &Path, model: SmdModel, risk: f64) -> anyhow::Result<Vec<SmdMachine>> {
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
    let spans = names
        .iter()
        .map(|n| interpretation(&data.join("interpretation_label").join(format!("{n}.txt"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if model == SmdModel::EntityLstm {
        return smd_kind(&machines, &spans, risk);
    }
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
                let progress = |n| {
                    let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                    if d % 2048 == 0 {
                        bar.show(d);
                    }
                };
                let job = (model, risk);
                let r = score_machine(job, name, train, test, labels, &spans[i], progress);
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

/// Every machine as an entity of one kind, through the kind's LSTM.
fn smd_kind(
    machines: &[(String, smd::Rows, smd::Rows, Vec<bool>)],
    spans: &[Vec<smd::Interpretation>],
    risk: f64,
) -> anyhow::Result<Vec<SmdMachine>> {
    let mut cfg = vigil_models::entity::EntityConfig::default();
    cfg.pot.risk = risk;
    let pairs: Vec<(&smd::Rows, &smd::Rows)> = machines.iter().map(|m| (&m.1, &m.2)).collect();
    let plan = smd::LstmPlan::default();
    let runs = smd::run_kind_lstm(&cfg, &plan, &pairs, |s| eprintln!("{s}"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(machines
        .iter()
        .zip(runs)
        .zip(spans)
        .map(|(((name, train, test, labels), run), spans)| {
            let mut counts = smd::count(&run, labels, train, test);
            smd::count_root_causes(&mut counts, &run, spans);
            SmdMachine {
                name: name.clone(),
                threshold: run.threshold,
                counts,
            }
        })
        .collect())
}

/// One machine through `model`, counted against its labels and root causes.
fn score_machine(
    (model, risk): (SmdModel, f64),
    name: &str,
    train: &smd::Rows,
    test: &smd::Rows,
    labels: &[bool],
    spans: &[smd::Interpretation],
    progress: impl FnMut(usize),
) -> anyhow::Result<SmdMachine> {
    let run = match model {
        SmdModel::Series => {
            let cfg = DetectorConfig::default();
            smd::run_machine(&cfg, train, test, progress)?
        }
        entity => {
            let mut cfg = vigil_models::entity::EntityConfig {
                forecast: entity != SmdModel::EntityNoForecast,
                subspace: entity != SmdModel::EntityNoSubspace,
                ..Default::default()
            };
            cfg.pot.risk = risk;
            smd::run_machine_entity(&cfg, train, test, progress)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?
        }
    };
    let mut counts = smd::count(&run, labels, train, test);
    smd::count_root_causes(&mut counts, &run, spans);
    Ok(SmdMachine {
        name: name.to_string(),
        threshold: run.threshold,
        counts,
    })
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
        "{:<14} {:>5} {:>7} {:>7} {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} | {:>10} | {:>7} {:>7}\n",
        "machine",
        "thr",
        "events",
        "alarms",
        "P",
        "R",
        "F1",
        "PA-P",
        "PA-R",
        "PA-F1",
        "root cause",
        "Hit@100",
        "Hit@150"
    );
    let mut line = |name: &str, thr: String, c: &smd::Counts| {
        let (e, pa) = (c.event(), c.point_adjusted());
        out.push_str(&format!(
            "{name:<14} {thr:>5} {:>7} {:>7} {:>6.3} {:>6.3} {:>6.3} | {:>6.3} {:>6.3} {:>6.3} | {:>4}/{:<3} {:>3.0}% | {:>7.3} {:>7.3}\n",
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
            c.hit_rates().0,
            c.hit_rates().1,
        ));
    };
    for m in machines {
        all.add(&m.counts);
        line(&m.name, format!("{:.2}", m.threshold), &m.counts);
    }
    line("overall", "".into(), &all);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_found_in_a_nab_checkout_and_beside_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("labels").join("combined_windows.json");
        std::fs::create_dir_all(labels.parent().unwrap()).unwrap();
        let err = find_profiles(&labels).unwrap_err().to_string();
        assert!(
            err.contains("config/profiles.json") && err.contains("--profiles"),
            "{err}"
        );
        // NAB's own layout: NAB/config/profiles.json.
        let nab = dir.path().join("config").join("profiles.json");
        std::fs::create_dir_all(nab.parent().unwrap()).unwrap();
        std::fs::write(&nab, "{}").unwrap();
        assert_eq!(find_profiles(&labels).unwrap(), nab);
        // shared/'s layout wins when both are there.
        let beside = dir.path().join("profiles.json");
        std::fs::write(&beside, "{}").unwrap();
        assert_eq!(find_profiles(&labels).unwrap(), beside);
    }
}
