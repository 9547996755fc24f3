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
//!   at its first alarm is one of the metrics that moved most in it;
//! - HitRate@P% against the published root causes (`interpretation_label`):
//!   for a labelled anomaly with k true metrics, the share of them among
//!   the top ⌊k·P/100⌋ of the detector's ranking, which orders the metrics
//!   by their mean evidence over the anomaly; averaged over anomalies.

use crate::{Detector, DetectorConfig, ModelError};

mod entity;

pub use entity::{run_kind_lstm, run_machine_entity, LstmPlan};

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
    /// Every metric's evidence per test row: `evidence[t][metric]`.
    pub evidence: Vec<Vec<f32>>,
}

/// One published root cause: a labelled span and the metrics behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Interpretation {
    /// First test row.
    pub start: usize,
    /// One past the last test row.
    pub end: usize,
    /// The metrics (0-based columns).
    pub metrics: Vec<usize>,
}

/// Reads an `interpretation_label` file: `start-end:d1,d2,...` per line,
/// rows half-open and 0-based, metrics 1-based.
pub fn parse_interpretation(text: &str) -> Result<Vec<Interpretation>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}: {line:?}", i + 1);
        let (span, dims) = line.split_once(':').ok_or_else(|| bad("no `:`"))?;
        let (a, b) = span
            .split_once('-')
            .ok_or_else(|| bad("no `-` in the span"))?;
        let start: usize = a.trim().parse().map_err(|_| bad("bad start"))?;
        let end: usize = b.trim().parse().map_err(|_| bad("bad end"))?;
        let metrics = dims
            .split(',')
            .map(|d| match d.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n - 1),
                _ => Err(bad("metrics are 1-based numbers")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if end <= start || metrics.is_empty() {
            return Err(bad("empty span or no metric"));
        }
        out.push(Interpretation {
            start,
            end,
            metrics,
        });
    }
    Ok(out)
}

/// HitRate@`percent` summed over `spans` (divide by their number): the
/// share of each span's true metrics among the top ⌊k·percent/100⌋ of the
/// metrics ranked by mean evidence over the span.
pub fn hit_rate(run: &MachineRun, spans: &[Interpretation], percent: usize) -> f64 {
    let mut sum = 0.0;
    for sp in spans {
        let rows = &run.evidence[sp.start.min(run.evidence.len())..sp.end.min(run.evidence.len())];
        let m = rows.first().map_or(0, Vec::len);
        let mut mean: Vec<(f32, usize)> = (0..m)
            .map(|k| {
                (
                    rows.iter().map(|r| r[k]).sum::<f32>() / rows.len() as f32,
                    k,
                )
            })
            .collect();
        mean.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let k = sp.metrics.len();
        let take = k * percent / 100;
        let hits = mean
            .iter()
            .take(take)
            .filter(|(_, j)| sp.metrics.contains(j))
            .count();
        sum += hits as f64 / k as f64;
    }
    sum
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
    /// Labelled anomalies with a published root cause.
    pub interpreted: usize,
    /// HitRate@100% summed over them.
    pub hit100: f64,
    /// HitRate@150% summed over them.
    pub hit150: f64,
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
        self.interpreted += o.interpreted;
        self.hit100 += o.hit100;
        self.hit150 += o.hit150;
    }

    /// HitRate@100% and @150% against the published root causes.
    pub fn hit_rates(&self) -> (f64, f64) {
        let n = self.interpreted.max(1) as f64;
        (self.hit100 / n, self.hit150 / n)
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
    let mut evidence = Vec::with_capacity(test.len());
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
        evidence.push(s.evidence);
        progress(1);
    }
    Ok(MachineRun {
        threshold,
        scores,
        top,
        evidence,
    })
}

fn as_values(row: &[f64]) -> Vec<Option<f64>> {
    row.iter().map(|&v| Some(v)).collect()
}

/// Below this share of the threshold a machine counts as recovering...
pub const RECOVER_RATIO: f32 = 0.8;
/// ...and recovered once it stayed there this many rows (the edge's
/// hysteresis, `rails.recover_ratio` and `recover_secs`, in rows).
pub const RECOVER_ROWS: usize = 5;

/// Alarm rows as the edge raises anomaly events: on at the threshold, off
/// once the score stayed below [`RECOVER_RATIO`] of it for
/// [`RECOVER_ROWS`] rows (a flicker around the threshold is one event).
pub fn alarms(scores: &[f32], threshold: f32) -> Vec<bool> {
    let mut on = false;
    let mut below = 0;
    let mut out = Vec::with_capacity(scores.len());
    for &s in scores {
        if s >= threshold {
            on = true;
            below = 0;
        } else if on && s < RECOVER_RATIO * threshold {
            below += 1;
            if below >= RECOVER_ROWS {
                on = false;
            }
        } else {
            below = 0;
        }
        out.push(on);
    }
    out
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
    let alarm = alarms(&run.scores, run.threshold);
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

/// Adds the HitRates against the published root causes `spans` to `c`.
pub fn count_root_causes(c: &mut Counts, run: &MachineRun, spans: &[Interpretation]) {
    c.interpreted += spans.len();
    c.hit100 += hit_rate(run, spans, 100);
    c.hit150 += hit_rate(run, spans, 150);
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
mod tests;
