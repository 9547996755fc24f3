//! The Numenta Anomaly Benchmark scorer, re-implemented from NAB's published
//! rules (its `sweeper`): anomaly windows from the labels file, a
//! probationary period (the first 15% of each file, at most 750 rows) that is
//! not scored, a scaled-sigmoid reward for the earliest detection inside a
//! window, a penalty for every false positive that shrinks with the distance
//! past the preceding window, a penalty for each missed window, one threshold
//! per cost profile optimised over the whole corpus, and normalisation
//! between the null detector (never detects) and the perfect one.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Errors reading or scoring a corpus.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file's content is not what NAB expects.
    #[error("{path}: {what}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NabError + '_ {
    move |source| NabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn format_err(path: &Path, what: impl Into<String>) -> NabError {
    NabError::Format {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Weights of one cost profile.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostMatrix {
    /// Reward for a detection at the very start of a window.
    pub tp_weight: f64,
    /// Penalty per false positive.
    pub fp_weight: f64,
    /// Penalty per missed window.
    pub fn_weight: f64,
}

#[derive(Deserialize)]
struct ProfileEntry {
    #[serde(rename = "CostMatrix")]
    cost_matrix: CostMatrix,
}

/// Reads NAB's `profiles.json`.
pub fn load_profiles(path: &Path) -> Result<BTreeMap<String, CostMatrix>, NabError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let raw: BTreeMap<String, ProfileEntry> =
        serde_json::from_str(&text).map_err(|e| format_err(path, e.to_string()))?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.cost_matrix)).collect())
}

/// Anomaly windows per data file (`<category>/<file>.csv`), as timestamps.
pub type Windows = BTreeMap<String, Vec<(String, String)>>;

/// Reads NAB's `combined_windows.json`.
pub fn load_windows(path: &Path) -> Result<Windows, NabError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let raw: BTreeMap<String, Vec<Vec<String>>> =
        serde_json::from_str(&text).map_err(|e| format_err(path, e.to_string()))?;
    raw.into_iter()
        .map(|(file, ws)| {
            let pairs = ws
                .into_iter()
                .map(|w| match w.as_slice() {
                    [a, b] => Ok((canonical(a), canonical(b))),
                    _ => Err(format_err(
                        path,
                        format!("{file}: a window must be [start, end]"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((file, pairs))
        })
        .collect()
}

/// Timestamps without a fractional-seconds part, so `2014-04-10 07:15:00.000000`
/// in the labels matches `2014-04-10 07:15:00` in the data.
pub fn canonical(ts: &str) -> String {
    match ts.split_once('.') {
        Some((head, frac)) if frac.chars().all(|c| c.is_ascii_digit()) => head.to_string(),
        _ => ts.to_string(),
    }
}

/// One data file's timestamps and a detector's anomaly score per row.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredFile {
    /// `<category>/<file>.csv`, the key into the labels.
    pub name: String,
    /// Row timestamps.
    pub timestamps: Vec<String>,
    /// Anomaly score per row.
    pub scores: Vec<f64>,
}

/// Reads a CSV with `timestamp` and `anomaly_score` columns (NAB's result format).
pub fn read_scored_csv(path: &Path, name: &str) -> Result<ScoredFile, NabError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|h| h.trim() == n)
            .ok_or_else(|| format_err(path, format!("no `{n}` column")))
    };
    let (ti, si) = (col("timestamp")?, col("anomaly_score")?);
    let mut f = ScoredFile {
        name: name.to_string(),
        timestamps: Vec::new(),
        scores: Vec::new(),
    };
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let (Some(t), Some(s)) = (cells.get(ti), cells.get(si)) else {
            return Err(format_err(path, format!("line {}: too few columns", n + 2)));
        };
        let score: f64 = s
            .trim()
            .parse()
            .map_err(|_| format_err(path, format!("line {}: bad anomaly_score {s:?}", n + 2)))?;
        f.timestamps.push(canonical(t.trim()));
        f.scores.push(score);
    }
    Ok(f)
}

/// Reads every result file of a detector laid out as NAB does:
/// `<dir>/<category>/<detector>_<file>.csv`, for each data file in `windows`.
pub fn read_results(
    dir: &Path,
    detector: &str,
    windows: &Windows,
) -> Result<Vec<ScoredFile>, NabError> {
    windows
        .keys()
        .map(|name| {
            let (category, file) = name
                .split_once('/')
                .ok_or_else(|| format_err(dir, format!("label key {name:?} has no category")))?;
            read_scored_csv(&dir.join(category).join(format!("{detector}_{file}")), name)
        })
        .collect()
}

/// Rows of the probationary period: 15% of the file, at most 750.
pub fn probationary_length(rows: usize) -> f64 {
    (0.15 * rows as f64).floor().min(0.15 * 5000.0)
}

/// NAB's scaled sigmoid of a position relative to a window's right edge.
pub fn scaled_sigmoid(position: f64) -> f64 {
    if position >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * position).exp()) - 1.0
    }
}

/// Where a scored row stands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Zone {
    Probationary,
    Outside,
    Window(usize),
}

#[derive(Clone, Copy, Debug)]
struct Point {
    score: f64,
    sweep: f64,
    zone: Zone,
}

/// Scores each row of one file as if it were a detection (the sweep score).
/// `first_window` numbers this file's windows so ids are unique in a corpus.
fn sweep(
    file: &ScoredFile,
    windows: &[(String, String)],
    cost: &CostMatrix,
    first_window: usize,
) -> Result<Vec<Point>, NabError> {
    let index: HashMap<&str, usize> = file
        .timestamps
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let at = |t: &str| {
        index.get(t).copied().ok_or_else(|| {
            format_err(
                Path::new(&file.name),
                format!("window edge {t} is not a row timestamp"),
            )
        })
    };
    let mut bounds = Vec::with_capacity(windows.len());
    for (a, b) in windows {
        bounds.push((at(a)?, at(b)?));
    }
    let max_tp = scaled_sigmoid(-1.0);
    let probation = probationary_length(file.timestamps.len());
    let mut out = Vec::with_capacity(file.scores.len());
    let mut next = 0;
    let mut current: Option<(usize, usize, f64)> = None; // (id, right index, width)
    let mut previous: Option<(usize, f64)> = None; // (right index, width)
    for (i, &score) in file.scores.iter().enumerate() {
        if current.is_none() && next < bounds.len() && bounds[next].0 == i {
            let (l, r) = bounds[next];
            current = Some((first_window + next, r, (r - l + 1) as f64));
            next += 1;
        }
        let (sweep, zone) = match current {
            Some((id, right, width)) => {
                let position = -((right as f64) - i as f64 + 1.0) / width;
                (
                    scaled_sigmoid(position) * cost.tp_weight / max_tp,
                    Zone::Window(id),
                )
            }
            None => {
                let position = match previous {
                    None => 3.0,
                    Some((right, width)) => (right as f64 - i as f64).abs() / (width - 1.0),
                };
                (scaled_sigmoid(position) * cost.fp_weight, Zone::Outside)
            }
        };
        let zone = if (i as f64) < probation {
            Zone::Probationary
        } else {
            zone
        };
        out.push(Point { score, sweep, zone });
        if let Some((_, right, width)) = current {
            if i == right {
                previous = Some((right, width));
                current = None;
            }
        }
    }
    Ok(out)
}

/// The corpus score at every distinct threshold, highest threshold first,
/// starting from 1.1 (no detections: every window missed).
fn scores_by_threshold(points: &[Point], cost: &CostMatrix) -> Vec<(f64, f64)> {
    let mut scorable: Vec<&Point> = points
        .iter()
        .filter(|p| p.zone != Zone::Probationary)
        .collect();
    scorable.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut window_part: HashMap<usize, f64> = HashMap::new();
    for p in &scorable {
        if let Zone::Window(id) = p.zone {
            window_part.insert(id, -cost.fn_weight);
        }
    }
    let mut windows_sum: f64 = window_part.values().sum();
    let mut fp = 0.0;
    let mut threshold = 1.1;
    let mut out = Vec::new();
    for p in scorable {
        if p.score != threshold {
            out.push((threshold, fp + windows_sum));
            threshold = p.score;
        }
        match p.zone {
            Zone::Window(id) => {
                let part = window_part.entry(id).or_insert(-cost.fn_weight);
                if p.sweep > *part {
                    windows_sum += p.sweep - *part;
                    *part = p.sweep;
                }
            }
            _ => fp += p.sweep,
        }
    }
    out.push((threshold, fp + windows_sum));
    out
}

/// One profile's result on a corpus.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ProfileScore {
    /// The optimised threshold.
    pub threshold: f64,
    /// Raw corpus score at that threshold.
    pub raw: f64,
    /// Normalised: 0 = null detector, 100 = perfect detector.
    pub normalised: f64,
}

/// Scores a corpus under one cost profile with the threshold optimised over
/// the whole corpus (ties go to the highest threshold, as in NAB).
pub fn score_profile(
    files: &[ScoredFile],
    windows: &Windows,
    cost: &CostMatrix,
) -> Result<ProfileScore, NabError> {
    let mut points = Vec::new();
    let mut first = 0;
    let mut total_windows = 0usize;
    for f in files {
        let ws = windows
            .get(&f.name)
            .ok_or_else(|| format_err(Path::new(&f.name), "no labels for this file"))?;
        if f.scores.len() != f.timestamps.len() {
            return Err(format_err(
                Path::new(&f.name),
                "scores and timestamps differ in length",
            ));
        }
        points.extend(sweep(f, ws, cost, first)?);
        first += ws.len();
        total_windows += ws.len();
    }
    let table = scores_by_threshold(&points, cost);
    let (threshold, raw) = table
        .iter()
        .copied()
        .fold((1.1, f64::NEG_INFINITY), |best, row| {
            if row.1 > best.1 {
                row
            } else {
                best
            }
        });
    // The null detector never detects: the 1.1 row. The perfect one finds every window at its start.
    let null = table.first().map(|r| r.1).unwrap_or(0.0);
    let perfect = total_windows as f64 * cost.tp_weight;
    let normalised = if perfect > null {
        100.0 * (raw - null) / (perfect - null)
    } else {
        0.0
    };
    Ok(ProfileScore {
        threshold,
        raw,
        normalised,
    })
}

/// Scores a corpus under every profile.
pub fn score_corpus(
    files: &[ScoredFile],
    windows: &Windows,
    profiles: &BTreeMap<String, CostMatrix>,
) -> Result<BTreeMap<String, ProfileScore>, NabError> {
    profiles
        .iter()
        .map(|(name, cost)| Ok((name.clone(), score_profile(files, windows, cost)?)))
        .collect()
}

#[cfg(test)]
mod tests;
