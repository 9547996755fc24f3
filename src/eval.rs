//! `vigil eval nab`: streams Vigil's detector over a NAB corpus, writes NAB's
//! result files and prints the three normalised scores.

use anyhow::Context;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use vigil_models::eval::{nab, stream};
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
    let tty = std::io::stderr().is_terminal();
    let mut last_pct = usize::MAX;
    let scored = stream::run(cfg, &files, |done, total| {
        let pct = done * 100 / total.max(1);
        if pct != last_pct && (tty || pct % 25 == 0) {
            last_pct = pct;
            let bar = "#".repeat(pct / 4) + &".".repeat(25 - pct / 4);
            let end = if tty { "\r" } else { "\n" };
            eprint!("scoring [{bar}] {pct:3}% {done}/{total} rows{end}");
            let _ = std::io::stderr().flush();
        }
    })?;
    if tty {
        eprintln!();
    }
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
