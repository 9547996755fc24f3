//! Streams a detector over a labelled corpus, causally: every file is one
//! series of one batch, and row `t` of every file is scored in tick `t`
//! using only rows up to `t`. Writes and reads NAB's result format.

use crate::episode::{alarm_scores, Levels};
use crate::eval::nab::{NabError, ScoredFile, Windows};
use crate::{Ablation, Detector, DetectorConfig, ModelError};
use std::io::Write;
use std::path::Path;
use vigil_core::clock::unix_secs;

/// One data file: `<category>/<file>.csv` with its rows.
#[derive(Clone, Debug, PartialEq)]
pub struct DataFile {
    /// Key into the labels.
    pub name: String,
    /// Row timestamps as written in the file.
    pub timestamps: Vec<String>,
    /// Row values.
    pub values: Vec<f64>,
    /// Row times, unix seconds (the timestamps read as UTC).
    pub times: Vec<i64>,
}

/// Reads every data file named in `windows` from `<data>/<category>/<file>.csv`.
pub fn read_data(data: &Path, windows: &Windows) -> Result<Vec<DataFile>, NabError> {
    windows
        .keys()
        .map(|name| read_data_file(&data.join(name), name))
        .collect()
}

fn read_data_file(path: &Path, name: &str) -> Result<DataFile, NabError> {
    let bad = |what: String| NabError::Format {
        path: path.to_path_buf(),
        what,
    };
    let text = std::fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut f = DataFile {
        name: name.to_string(),
        timestamps: Vec::new(),
        values: Vec::new(),
        times: Vec::new(),
    };
    for (n, line) in text
        .lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (ts, value) = line
            .split_once(',')
            .ok_or_else(|| bad(format!("line {}: expected timestamp,value", n + 1)))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| bad(format!("line {}: bad value {value:?}", n + 1)))?;
        let time =
            unix_secs(ts).ok_or_else(|| bad(format!("line {}: bad timestamp {ts:?}", n + 1)))?;
        f.timestamps.push(ts.trim().to_string());
        f.values.push(value);
        f.times.push(time);
    }
    Ok(f)
}

/// Scores every file with one fresh detector (with `ablation` applied), all
/// files batched per row, and writes each row's alarm score as the edge
/// alarms: the onset score and the evidence through the edge's episodes at
/// `levels` ([`alarm_scores`]), so an upward crossing of `levels.enter` is
/// an anomaly event. `progress(done_rows, total_rows)` is called now and then.
pub fn run(
    cfg: &DetectorConfig,
    ablation: Ablation,
    levels: Levels,
    files: &[DataFile],
    progress: impl FnMut(usize, usize),
) -> Result<Vec<ScoredFile>, ModelError> {
    let mut detector = Detector::ablated(cfg.clone(), ablation)?;
    run_with(&mut detector, levels, files, progress)
}

/// [`run`] with a detector made by the caller (loaded weights, say).
pub fn run_with(
    detector: &mut Detector,
    levels: Levels,
    files: &[DataFile],
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<ScoredFile>, ModelError> {
    let longest = files.iter().map(|f| f.values.len()).max().unwrap_or(0);
    let total: usize = files.iter().map(|f| f.values.len()).sum();
    let mut scores: Vec<Vec<f64>> = files
        .iter()
        .map(|f| Vec::with_capacity(f.values.len()))
        .collect();
    let mut evidence = scores.clone();
    let mut done = 0;
    for t in 0..longest {
        let row: Vec<Option<f64>> = files.iter().map(|f| f.values.get(t).copied()).collect();
        let times: Vec<i64> = files
            .iter()
            .map(|f| f.times.get(t).copied().unwrap_or(0))
            .collect();
        let s = detector.tick_at(&row, &times)?;
        for (i, v) in row.iter().enumerate() {
            if v.is_some() {
                scores[i].push(s.scores[i] as f64);
                evidence[i].push(s.evidence[i] as f64);
                done += 1;
            }
        }
        if t % 256 == 0 || t + 1 == longest {
            progress(done, total);
        }
    }
    Ok(files
        .iter()
        .zip(scores.iter().zip(&evidence))
        .map(|(f, (onset, evidence))| {
            let ms: Vec<i64> = f.times.iter().map(|t| t * 1000).collect();
            ScoredFile {
                name: f.name.clone(),
                timestamps: f.timestamps.clone(),
                scores: alarm_scores(onset, evidence, &ms, levels),
            }
        })
        .collect())
}

/// Writes NAB's result files: `<out>/<detector>/<category>/<detector>_<file>.csv`
/// with `timestamp,value,anomaly_score,label` (label 1 inside a window).
pub fn write_results(
    out: &Path,
    detector: &str,
    files: &[DataFile],
    scored: &[ScoredFile],
    windows: &Windows,
) -> Result<(), NabError> {
    for (f, s) in files.iter().zip(scored) {
        let (category, file) = f.name.split_once('/').unwrap_or(("", f.name.as_str()));
        let dir = out.join(detector).join(category);
        let path = dir.join(format!("{detector}_{file}"));
        let io = |source| NabError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let labelled = label_rows(f, windows.get(&f.name).map(Vec::as_slice).unwrap_or(&[]));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
        writeln!(w, "timestamp,value,anomaly_score,label").map_err(io)?;
        let rows = f
            .timestamps
            .iter()
            .zip(&f.values)
            .zip(&s.scores)
            .zip(&labelled);
        for (((ts, value), score), label) in rows {
            writeln!(w, "{ts},{value},{score},{}", *label as u8).map_err(io)?;
        }
        w.flush().map_err(io)?;
    }
    Ok(())
}

/// 1 for rows inside a window (by canonical timestamp order, inclusive;
/// canonical as the scorer reads them).
fn label_rows(f: &DataFile, windows: &[(String, String)]) -> Vec<bool> {
    f.timestamps
        .iter()
        .map(|t| {
            let t = crate::eval::nab::canonical(t);
            windows
                .iter()
                .any(|(a, b)| t.as_str() >= a.as_str() && t.as_str() <= b.as_str())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::nab::read_scored_csv;
    use std::collections::BTreeMap;

    #[test]
    fn streams_causally_writes_nab_format_and_reads_back() {
        let mk = |n: usize, jump: usize| DataFile {
            name: format!("cat/f{n}.csv"),
            timestamps: (0..n)
                .map(|i| format!("2020-01-01 00:{:02}:{:02}", i / 60, i % 60))
                .collect(),
            values: (0..n)
                .map(|i| {
                    if i >= jump {
                        50.0
                    } else {
                        10.0 + (i % 3) as f64
                    }
                })
                .collect(),
            times: (0..n as i64).map(|i| 1_577_836_800 + i).collect(),
        };
        let files = vec![mk(300, 250), mk(200, 1000)];
        let cfg = DetectorConfig {
            train_every_ticks: 0,
            ..DetectorConfig::default()
        };
        let levels = Levels::plain(cfg.threshold as f64);
        let scored = run(&cfg, Ablation::Full, levels, &files, |_, _| {}).unwrap();
        assert_eq!(scored[0].scores.len(), 300);
        assert_eq!(scored[1].scores.len(), 200);
        assert!(scored[0].scores[250] > 0.95, "the jump is flagged");
        // Causal: a second run over only the first 251 rows gives the same scores.
        let mut cut = files.clone();
        cut[0].values.truncate(251);
        cut[0].timestamps.truncate(251);
        cut[0].times.truncate(251);
        let again = run(&cfg, Ablation::Full, levels, &cut, |_, _| {}).unwrap();
        assert_eq!(again[0].scores[..251], scored[0].scores[..251]);
        let dir = tempfile::tempdir().unwrap();
        let windows: Windows = BTreeMap::from([
            (
                "cat/f300.csv".into(),
                vec![(
                    "2020-01-01 00:04:00".to_string(),
                    "2020-01-01 00:04:20".to_string(),
                )],
            ),
            ("cat/f200.csv".into(), vec![]),
        ]);
        let files = vec![
            DataFile {
                name: "cat/f300.csv".into(),
                ..files[0].clone()
            },
            DataFile {
                name: "cat/f200.csv".into(),
                ..files[1].clone()
            },
        ];
        let scored = run(&cfg, Ablation::Full, levels, &files, |_, _| {}).unwrap();
        write_results(dir.path(), "vigil", &files, &scored, &windows).unwrap();
        let path = dir.path().join("vigil/cat/vigil_f300.csv");
        let back = read_scored_csv(&path, "cat/f300.csv").unwrap();
        assert_eq!(back.scores.len(), 300);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().filter(|l| l.ends_with(",1")).count(), 21);
    }
}
