//! The figures an operator feels (`../shared/data/README.md`, wsd-dev): an
//! alarm is an upward crossing of the alarm level; an incident (a labelled
//! window) is caught when an alarm starts inside it; an alarm outside every
//! incident is a false alarm. Event precision, recall and F1 from those, and
//! false alarms per series-day (each series' first-to-last span). Reported
//! at the level as shipped and, only beside it, at the best single level
//! the labels choose for the whole set.

use super::nab::{ScoredFile, Windows};
use serde::Serialize;
use vigil_core::clock::unix_secs;

/// The event figures of a corpus at one alarm level.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventFigures {
    /// The alarm level: a score crossing it upwards is an alarm.
    pub level: f64,
    /// Labelled incidents.
    pub incidents: usize,
    /// Incidents with an alarm starting inside.
    pub caught: usize,
    /// Alarms starting outside every incident.
    pub false_alarms: usize,
    /// Sum of each series' first-to-last span, in days.
    pub series_days: f64,
    /// caught / (caught + false alarms).
    pub precision: f64,
    /// caught / incidents.
    pub recall: f64,
    /// From the two.
    pub f1: f64,
    /// False alarms per series-day.
    pub false_per_series_day: f64,
}

/// The figures of `scored` against `windows` at `level`.
pub fn at_level(scored: &[ScoredFile], windows: &Windows, level: f64) -> EventFigures {
    let (mut incidents, mut caught, mut false_alarms, mut days) = (0, 0, 0, 0.0);
    for f in scored {
        let ws = windows.get(&f.name).map(Vec::as_slice).unwrap_or(&[]);
        incidents += ws.len();
        let mut hit = vec![false; ws.len()];
        let mut above = false;
        for (ts, &s) in f.timestamps.iter().zip(&f.scores) {
            let now_above = s >= level;
            if now_above && !above {
                // Timestamps and windows share one format, so text order is time order.
                match ws.iter().position(|(a, b)| a <= ts && ts <= b) {
                    Some(i) => hit[i] = true,
                    None => false_alarms += 1,
                }
            }
            above = now_above;
        }
        caught += hit.iter().filter(|h| **h).count();
        let span = |t: Option<&String>| t.and_then(|t| unix_secs(t));
        if let (Some(a), Some(b)) = (span(f.timestamps.first()), span(f.timestamps.last())) {
            days += (b - a).max(0) as f64 / 86_400.0;
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = ratio(caught, caught + false_alarms);
    let recall = ratio(caught, incidents);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    EventFigures {
        level,
        incidents,
        caught,
        false_alarms,
        series_days: days,
        precision,
        recall,
        f1,
        false_per_series_day: if days > 0.0 {
            false_alarms as f64 / days
        } else {
            0.0
        },
    }
}

/// The single level in 0.01..=0.99 (steps of 0.01) with the best event F1
/// on the whole set: chosen by the labels, so only ever shown beside the
/// shipped level's figures.
pub fn best_level(scored: &[ScoredFile], windows: &Windows) -> EventFigures {
    (1..=99)
        .map(|k| at_level(scored, windows, k as f64 / 100.0))
        .fold(None::<EventFigures>, |best, f| match best {
            Some(b) if b.f1 >= f.f1 => Some(b),
            _ => Some(f),
        })
        .unwrap_or_else(|| at_level(scored, windows, 0.5))
}

/// One table row: `label  caught/incidents  false/day  P / R / F1  (level)`.
pub fn row(label: &str, f: &EventFigures) -> String {
    format!(
        "  {label:<28} {:>4} / {:<4} {:>8.3}   {:.3} / {:.3} / {:.3}   (level {:.2})",
        f.caught, f.incidents, f.false_per_series_day, f.precision, f.recall, f.f1, f.level
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, scores: &[f64]) -> ScoredFile {
        ScoredFile {
            name: name.into(),
            timestamps: (0..scores.len())
                .map(|i| format!("2020-01-{:02} 00:00:00", i + 1))
                .collect(),
            scores: scores.to_vec(),
        }
    }

    #[test]
    fn alarms_are_upward_crossings_counted_once_per_incident() {
        let mut windows = Windows::new();
        windows.insert(
            "a/x.csv".into(),
            vec![
                ("2020-01-02 00:00:00".into(), "2020-01-04 00:00:00".into()),
                ("2020-01-08 00:00:00".into(), "2020-01-09 00:00:00".into()),
            ],
        );
        // Days 1..=10: an alarm on day 2 (caught, and staying up is one
        // alarm), another inside the same incident on day 4, a false one on
        // day 6, and none in the second incident.
        let f = file(
            "a/x.csv",
            &[0.1, 0.9, 0.9, 0.1, 0.1, 0.8, 0.2, 0.3, 0.1, 0.1],
        );
        let e = at_level(std::slice::from_ref(&f), &windows, 0.75);
        assert_eq!((e.incidents, e.caught, e.false_alarms), (2, 1, 1));
        assert_eq!(e.series_days, 9.0);
        assert_eq!((e.precision, e.recall), (0.5, 0.5));
        assert!((e.f1 - 0.5).abs() < 1e-12);
        assert!((e.false_per_series_day - 1.0 / 9.0).abs() < 1e-12);
        // Down at 0.3 the second incident is caught too (day 8), beside the
        // one false alarm: F1 0.8, the best the labels can choose.
        let best = best_level(&[f], &windows);
        assert_eq!((best.caught, best.false_alarms), (2, 1));
        assert!(best.level > 0.2 && best.level <= 0.3, "{}", best.level);
        assert!((best.f1 - 0.8).abs() < 1e-12);
        // A file no label mentions has no incidents, only false alarms.
        let none = at_level(&[file("b/y.csv", &[0.9, 0.1, 0.9])], &windows, 0.5);
        assert_eq!((none.incidents, none.false_alarms, none.f1), (0, 2, 0.0));
    }
}
