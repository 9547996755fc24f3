//! The evaluation gate: a candidate model is judged against the current one
//! on a held-back window of fleet data (forecast loss, share of points
//! flagged) and on incidents the fleet confirmed. A candidate that is worse
//! on any count is not published; the verdict says why.

use crate::training::loss;
use crate::{Detector, ModelError};
use serde::Serialize;

/// How much worse a candidate may be before it is refused.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// Refuse when the held-back forecast loss exceeds the current model's by this factor.
    pub max_loss_ratio: f32,
    /// Refuse when the share of held-back points flagged exceeds the current
    /// model's by this factor and by `flag_rate_margin`.
    pub max_flag_ratio: f64,
    /// Absolute slack on the flagged share (so 0.1% against 0.05% is not a regression).
    pub flag_rate_margin: f64,
    /// A confirmed incident is caught when a flag falls this many samples
    /// before it, or a quarter of that after.
    pub event_lookback: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            max_loss_ratio: 1.05,
            max_flag_ratio: 1.5,
            flag_rate_margin: 0.005,
            event_lookback: 60,
        }
    }
}

/// The held-back data: raw series (for scoring), the same normalised (for
/// the forecast loss), and confirmed incidents as (series, sample index).
#[derive(Clone, Debug, Default)]
pub struct Holdout {
    /// Raw values per series, oldest first.
    pub raw: Vec<Vec<f64>>,
    /// The same, normalised.
    pub normalised: Vec<Vec<f32>>,
    /// Confirmed incidents.
    pub events: Vec<(usize, usize)>,
    /// Forecast window length.
    pub window: usize,
}

/// One model's figures on the held-back window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Mean forecast loss (normalised units).
    pub loss: Option<f32>,
    /// Share of scored points at or above the threshold.
    pub flag_rate: f64,
    /// Confirmed incidents caught.
    pub caught: usize,
}

/// The gate's decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Verdict {
    /// Whether the candidate may be published.
    pub passed: bool,
    /// Why not, one line per count it lost on.
    pub reasons: Vec<String>,
    /// The model in force.
    pub current: Figures,
    /// The candidate.
    pub candidate: Figures,
    /// Confirmed incidents in the window.
    pub events: usize,
}

/// Scores the held-back window with a fresh, non-learning replica of `model`.
fn figures(model: &Detector, h: &Holdout, lookback: usize) -> Result<Figures, ModelError> {
    let mut d = model.replica(false)?;
    let threshold = d.config().threshold;
    let len = h.raw.iter().map(Vec::len).max().unwrap_or(0);
    let mut flags: Vec<Vec<bool>> = h.raw.iter().map(|s| vec![false; s.len()]).collect();
    let (mut scored, mut flagged) = (0u64, 0u64);
    for t in 0..len {
        let row: Vec<Option<f64>> = h.raw.iter().map(|s| s.get(t).copied()).collect();
        let s = d.tick(&row)?;
        // Flags as the edge raises them: on the evidence, not held back.
        for ((v, f), &score) in row.iter().zip(flags.iter_mut()).zip(&s.evidence) {
            if v.is_some() {
                scored += 1;
                if score >= threshold {
                    flagged += 1;
                    f[t] = true;
                }
            }
        }
    }
    let caught = h
        .events
        .iter()
        .filter(|&&(i, t)| {
            flags.get(i).is_some_and(|f| {
                let from = t.saturating_sub(lookback);
                let to = (t + lookback / 4 + 1).min(f.len());
                from < to && f[from..to].iter().any(|&x| x)
            })
        })
        .count();
    Ok(Figures {
        loss: loss(model, &h.normalised, h.window)?,
        flag_rate: if scored > 0 {
            flagged as f64 / scored as f64
        } else {
            0.0
        },
        caught,
    })
}

/// Judges `candidate` against `current` on `holdout`.
pub fn judge(
    current: &Detector,
    candidate: &Detector,
    holdout: &Holdout,
    cfg: &GateConfig,
) -> Result<Verdict, ModelError> {
    let cur = figures(current, holdout, cfg.event_lookback)?;
    let cand = figures(candidate, holdout, cfg.event_lookback)?;
    let mut reasons = Vec::new();
    if let (Some(c), Some(n)) = (cur.loss, cand.loss) {
        if n > c * cfg.max_loss_ratio {
            reasons.push(format!(
                "forecast loss {n:.4} on the held-back window is worse than the current model's {c:.4}"
            ));
        }
    }
    let allowed = (cur.flag_rate * cfg.max_flag_ratio).max(cur.flag_rate + cfg.flag_rate_margin);
    if cand.flag_rate > allowed {
        reasons.push(format!(
            "flags {:.2}% of held-back points against the current model's {:.2}%",
            cand.flag_rate * 100.0,
            cur.flag_rate * 100.0
        ));
    }
    if cand.caught < cur.caught {
        reasons.push(format!(
            "catches {} of {} confirmed incidents; the current model catches {}",
            cand.caught,
            holdout.events.len(),
            cur.caught
        ));
    }
    Ok(Verdict {
        passed: reasons.is_empty(),
        reasons,
        current: cur,
        candidate: cand,
        events: holdout.events.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::{fit, normalise, Plan};
    use crate::DetectorConfig;

    fn series(n: usize, phase: f64, fault_at: Option<usize>) -> Vec<f64> {
        (0..n)
            .map(|t| {
                let base = 50.0 + 10.0 * ((t as f64 + phase) * 0.4).sin();
                match fault_at {
                    Some(f) if (f..f + 10).contains(&t) => base + 400.0,
                    _ => base,
                }
            })
            .collect()
    }

    fn holdout(cfg: &DetectorConfig) -> Holdout {
        let raw: Vec<Vec<f64>> = (0..4)
            .map(|i| series(400, i as f64 * 3.0, (i == 1).then_some(300)))
            .collect();
        let normalised = raw.iter().map(|s| normalise(s, 50.0, 6.4, cfg)).collect();
        Holdout {
            raw,
            normalised,
            events: vec![(1, 300)],
            window: 32,
        }
    }

    #[test]
    fn a_trained_model_passes_and_one_that_flags_everything_does_not() {
        let cfg = DetectorConfig {
            learning_rate: 1e-2,
            ..DetectorConfig::default()
        };
        let current = Detector::new(cfg.clone()).unwrap();
        let mut trained = Detector::new(cfg.clone()).unwrap();
        let train: Vec<Vec<f32>> = (0..8)
            .map(|i| normalise(&series(400, i as f64, None), 50.0, 6.4, &cfg))
            .collect();
        let plan = Plan {
            epochs: 10.0,
            batch: 16,
            ..Plan::default()
        };
        fit(&mut trained, &train, &plan, |_| true).unwrap();
        let h = holdout(&cfg);
        let v = judge(&current, &trained, &h, &GateConfig::default()).unwrap();
        assert!(v.passed, "{v:?}");
        assert_eq!(v.current.caught, 1, "{v:?}");
        assert!(v.candidate.loss < v.current.loss, "{v:?}");

        // Same weights, but settings that call every wiggle an anomaly.
        let noisy = DetectorConfig {
            z_scale: 0.01,
            level_z: 0.01,
            level_for: 1,
            threshold: 0.01,
            ..cfg.clone()
        };
        let mut bad = Detector::new(noisy).unwrap();
        bad.load_weights_bytes(&trained.weights_bytes().unwrap(), 0)
            .unwrap();
        let v = judge(&trained, &bad, &h, &GateConfig::default()).unwrap();
        assert!(!v.passed);
        assert!(v.candidate.flag_rate > 0.5, "{v:?}");
        assert!(v.reasons[0].contains("flags"), "{:?}", v.reasons);
        // And the reverse: a model worse on loss and incidents than the trained one.
        let v = judge(&trained, &current, &h, &GateConfig::default()).unwrap();
        assert!(!v.passed, "{v:?}");
        assert!(
            v.reasons.iter().any(|r| r.contains("forecast loss")),
            "{v:?}"
        );
    }
}
