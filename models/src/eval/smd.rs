//! Multivariate evaluation on the Server Machine Dataset: one detector per
//! machine learns from its training rows, scores its test rows, and alarms
//! on a threshold fixed from the training scores alone (no labels).
//!
//! Figures, per machine and pooled:
//! - event-level precision, recall and F1 without point-adjust: a labelled
//!   anomaly (a run of label-1 rows) is found if any alarm row falls in it; an
//!   alarm event (a run of alarm rows) is correct if it overlaps one;
//! - point-adjusted point-wise figures (every row of a found anomaly counts
//!   as detected), only for comparison with papers, which inflate with it;
//! - root cause: for each found anomaly, whether the top contributing metric
//!   at its first alarm is one of the metrics that moved most in it.

use crate::{Detector, DetectorConfig, ModelError};

/// Metrics counted as "the ones that moved most" in a labelled span.
pub const ROOT_CAUSE_TOP: usize = 3;

/// Rows of one machine: `rows[t][metric]`.
pub type Rows = Vec<Vec<f64>>;

/// What the detector made of one machine.
#[derive(Clone, Debug)]
pub struct MachineRun {
    /// Alarm threshold, fixed from the training scores.
    pub threshold: f32,
    /// Machine score per test row: the highest metric score.
    pub scores: Vec<f32>,
    /// The metric behind each test row's score.
    pub top: Vec<usize>,
}

/// Precision, recall and F1.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Prf {
    /// Share of positives that were right.
    pub precision: f64,
    /// Share of truths found.
    pub recall: f64,
    /// Harmonic mean.
    pub f1: f64,
}

impl Prf {
    fn from_counts(tp_pred: usize, pred: usize, tp_true: usize, truth: usize) -> Self {
        let precision = ratio(tp_pred, pred);
        let recall = ratio(tp_true, truth);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Self {
            precision,
            recall,
            f1,
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Raw counts for one machine, so machines can be pooled.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Counts {
    /// Labelled anomalies.
    pub events: usize,
    /// Labelled anomalies with an alarm inside.
    pub events_found: usize,
    /// Alarm events (runs of alarm rows).
    pub alarms: usize,
    /// Alarm events overlapping a labelled anomaly.
    pub alarms_correct: usize,
    /// Point-adjusted true positives, false positives and false negatives.
    pub pa_tp: usize,
    /// See `pa_tp`.
    pub pa_fp: usize,
    /// See `pa_tp`.
    pub pa_fn: usize,
    /// Found anomalies whose top metric is among the ones that moved most.
    pub root_cause_hits: usize,
}

impl Counts {
    /// Adds another machine's counts.
    pub fn add(&mut self, o: &Counts) {
        self.events += o.events;
        self.events_found += o.events_found;
        self.alarms += o.alarms;
        self.alarms_correct += o.alarms_correct;
        self.pa_tp += o.pa_tp;
        self.pa_fp += o.pa_fp;
        self.pa_fn += o.pa_fn;
        self.root_cause_hits += o.root_cause_hits;
    }

    /// Event-level figures without point-adjust.
    pub fn event(&self) -> Prf {
        Prf::from_counts(
            self.alarms_correct,
            self.alarms,
            self.events_found,
            self.events,
        )
    }

    /// Point-adjusted point-wise figures.
    pub fn point_adjusted(&self) -> Prf {
        Prf::from_counts(
            self.pa_tp,
            self.pa_tp + self.pa_fp,
            self.pa_tp,
            self.pa_tp + self.pa_fn,
        )
    }

    /// Share of found anomalies with the right root cause.
    pub fn root_cause_rate(&self) -> f64 {
        ratio(self.root_cause_hits, self.events_found)
    }
}

/// Streams `train` then `test` through one fresh detector. The threshold is
/// the higher of the detector's own and the highest machine score over the
/// second half of training (the first half is still learning ranges).
pub fn run_machine(
    cfg: &DetectorConfig,
    train: &Rows,
    test: &Rows,
    mut progress: impl FnMut(usize),
) -> Result<MachineRun, ModelError> {
    let mut d = Detector::new(cfg.clone())?;
    let mut train_max = 0.0f32;
    for (t, row) in train.iter().enumerate() {
        let s = d.tick(&as_values(row))?;
        if t >= train.len() / 2 {
            train_max = train_max.max(s.evidence.iter().copied().fold(0.0, f32::max));
        }
        progress(1);
    }
    let threshold = cfg.threshold.max(train_max.min(1.0));
    let mut scores = Vec::with_capacity(test.len());
    let mut top = Vec::with_capacity(test.len());
    for row in test {
        // A machine's alarms as the edge raises them: on the evidence, which
        // lasts as long as the anomaly (the onset-shaped score would cut one
        // anomaly into an alarm every refractory period).
        let s = d.tick(&as_values(row))?;
        let (k, best) = s
            .evidence
            .iter()
            .copied()
            .enumerate()
            .fold((0, 0.0f32), |b, (k, v)| if v > b.1 { (k, v) } else { b });
        scores.push(best);
        top.push(k);
        progress(1);
    }
    Ok(MachineRun {
        threshold,
        scores,
        top,
    })
}

fn as_values(row: &[f64]) -> Vec<Option<f64>> {
    row.iter().map(|&v| Some(v)).collect()
}

/// Runs of `true` as half-open `[start, end)` ranges.
pub fn runs(flags: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (t, &f) in flags.iter().chain(std::iter::once(&false)).enumerate() {
        match (f, start) {
            (true, None) => start = Some(t),
            (false, Some(s)) => {
                out.push((s, t));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Counts for one machine: its run, test labels, and the rows needed to
/// judge root causes (training rows give each metric's usual mean and spread).
pub fn count(run: &MachineRun, labels: &[bool], train: &Rows, test: &Rows) -> Counts {
    let alarm: Vec<bool> = run.scores.iter().map(|&s| s >= run.threshold).collect();
    let events = runs(labels);
    let alarms = runs(&alarm);
    let mut c = Counts {
        events: events.len(),
        alarms: alarms.len(),
        ..Counts::default()
    };
    c.alarms_correct = alarms
        .iter()
        .filter(|&&(a, b)| events.iter().any(|&(s, e)| a < e && s < b))
        .count();
    let stats = metric_stats(train);
    let mut adjusted = alarm.clone();
    for &(s, e) in &events {
        let Some(first) = (s..e).find(|&t| alarm[t]) else {
            continue;
        };
        c.events_found += 1;
        adjusted[s..e].iter_mut().for_each(|a| *a = true);
        if moved_most(test, &stats, s, e).contains(&run.top[first]) {
            c.root_cause_hits += 1;
        }
    }
    for (&a, &l) in adjusted.iter().zip(labels) {
        match (a, l) {
            (true, true) => c.pa_tp += 1,
            (true, false) => c.pa_fp += 1,
            (false, true) => c.pa_fn += 1,
            _ => {}
        }
    }
    c
}

/// Mean and standard deviation of every metric over the training rows.
fn metric_stats(train: &Rows) -> Vec<(f64, f64)> {
    let m = train.first().map_or(0, Vec::len);
    let n = train.len().max(1) as f64;
    (0..m)
        .map(|k| {
            let mean = train.iter().map(|r| r[k]).sum::<f64>() / n;
            let var = train.iter().map(|r| (r[k] - mean).powi(2)).sum::<f64>() / n;
            (mean, var.sqrt())
        })
        .collect()
}

/// The metrics that moved most in `[s, e)`: largest peak deviation from
/// their training mean, in training standard deviations.
fn moved_most(test: &Rows, stats: &[(f64, f64)], s: usize, e: usize) -> Vec<usize> {
    let mut dev: Vec<(f64, usize)> = stats
        .iter()
        .enumerate()
        .map(|(k, &(mean, sd))| {
            let peak = test[s..e]
                .iter()
                .map(|r| (r[k] - mean).abs())
                .fold(0.0, f64::max);
            (peak / sd.max(1e-3), k)
        })
        .collect();
    dev.sort_by(|a, b| b.0.total_cmp(&a.0));
    dev.iter().take(ROOT_CAUSE_TOP).map(|&(_, k)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_half_open() {
        assert_eq!(
            runs(&[false, true, true, false, true]),
            vec![(1, 3), (4, 5)]
        );
        assert!(runs(&[false, false]).is_empty());
    }

    fn machine(threshold: f32, scores: &[f32], top: &[usize]) -> MachineRun {
        MachineRun {
            threshold,
            scores: scores.to_vec(),
            top: top.to_vec(),
        }
    }

    #[test]
    fn counts_events_without_point_adjust_and_with_it() {
        // Two labelled anomalies (rows 2..5 and 8..10); alarms at 3 and at 6..7.
        let labels = [
            false, false, true, true, true, false, false, false, true, true,
        ];
        let scores = [0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.9, 0.9, 0.0, 0.0];
        let rows: Rows = (0..10).map(|_| vec![0.0, 0.0]).collect();
        let run = machine(0.5, &scores, &[0; 10]);
        let c = count(&run, &labels, &rows, &rows);
        assert_eq!((c.events, c.events_found), (2, 1));
        assert_eq!((c.alarms, c.alarms_correct), (2, 1));
        let e = c.event();
        assert_eq!((e.precision, e.recall), (0.5, 0.5));
        // Point-adjusted: rows 2..5 all count (3 TP), 6..7 are FP, 8..10 FN.
        assert_eq!((c.pa_tp, c.pa_fp, c.pa_fn), (3, 2, 2));
        assert!((c.point_adjusted().precision - 0.6).abs() < 1e-12);
    }

    #[test]
    fn root_cause_is_judged_against_the_metrics_that_moved() {
        // Metrics 3, 5 and 6 of 8 jump in the labelled span; the rest stay put.
        let train: Rows = (0..50)
            .map(|t| (0..8).map(|k| 0.5 + 0.01 * ((t + k) % 3) as f64).collect())
            .collect();
        let mut test = train[..10].to_vec();
        for r in &mut test[4..7] {
            (r[3], r[5], r[6]) = (0.95, 0.9, 0.85);
        }
        let labels: Vec<bool> = (0..10).map(|t| (4..7).contains(&t)).collect();
        let scores: Vec<f32> = (0..10).map(|t| if t == 5 { 0.9 } else { 0.0 }).collect();
        let hit = count(&machine(0.5, &scores, &[3; 10]), &labels, &train, &test);
        assert_eq!((hit.events_found, hit.root_cause_hits), (1, 1));
        let miss = count(&machine(0.5, &scores, &[0; 10]), &labels, &train, &test);
        assert_eq!((miss.events_found, miss.root_cause_hits), (1, 0));
    }

    #[test]
    fn threshold_comes_from_training_scores_not_labels() {
        let cfg = DetectorConfig {
            train_every_ticks: 0,
            ..DetectorConfig::default()
        };
        let wave = |t: usize| vec![(t % 7) as f64 / 7.0, ((t * 3) % 5) as f64 / 5.0];
        let train: Rows = (0..400).map(wave).collect();
        let mut test: Rows = (400..600).map(wave).collect();
        test[100][1] = 3.0; // far outside anything seen in training
        let run = run_machine(&cfg, &train, &test, |_| {}).unwrap();
        assert!(run.threshold >= cfg.threshold);
        assert!(run.scores[100] >= run.threshold, "{}", run.scores[100]);
        assert_eq!(run.top[100], 1);
        let alarms = run.scores.iter().filter(|&&s| s >= run.threshold).count();
        assert!(alarms <= 5, "{alarms} alarm rows on a repeating pattern");
    }
}
