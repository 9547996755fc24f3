//! The evaluation gate: a candidate model is judged against the current one
//! on a held-back window of fleet data (forecast loss, share of points
//! flagged outside faults), on incidents the fleet confirmed, and on
//! synthetic faults injected into the window (found, and how soon). A
//! candidate that is worse on any count is not published; the verdict says
//! why.

pub mod entity;
mod inject;
mod refusal;

pub use inject::{inject, FaultKind, Injected};
pub use refusal::{Refusal, Rule};

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
    /// Judge on injected faults as well.
    pub inject: bool,
    /// Refuse when the candidate finds the injected faults both find this
    /// many samples later on average.
    pub max_delay_slack: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            max_loss_ratio: 1.05,
            max_flag_ratio: 1.5,
            flag_rate_margin: 0.005,
            event_lookback: 60,
            inject: true,
            max_delay_slack: 1.0,
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
    /// Points (or rows) judged for the flag rate.
    pub scored: u64,
    /// Per injected fault, the samples from its start to its first flag
    /// (`None`: not found).
    pub delays: Vec<Option<usize>>,
}

impl Figures {
    /// Injected faults found.
    pub fn found(&self) -> usize {
        self.delays.iter().flatten().count()
    }

    /// The figures from each series' (or entity's) flags: `faults` as
    /// (series, start, length), confirmed `events` as (series, index),
    /// and the points judged for the flag rate, (scored, flagged). No loss.
    fn counted(
        flags: &[Vec<bool>],
        faults: &[(usize, usize, usize)],
        events: &[(usize, usize)],
        lookback: usize,
        (scored, flagged): (u64, u64),
    ) -> Figures {
        let delays = faults
            .iter()
            .map(|&(i, at, len)| {
                let end = (at + len + 5).min(flags[i].len());
                (at..end).find(|&t| flags[i][t]).map(|t| t - at)
            })
            .collect();
        let caught = events
            .iter()
            .filter(|&&(i, t)| {
                flags.get(i).is_some_and(|f| {
                    let from = t.saturating_sub(lookback);
                    let to = (t + lookback / 4 + 1).min(f.len());
                    from < to && f[from..to].iter().any(|&x| x)
                })
            })
            .count();
        Figures {
            loss: None,
            flag_rate: if scored > 0 {
                flagged as f64 / scored as f64
            } else {
                0.0
            },
            caught,
            scored,
            delays,
        }
    }

    /// The figures of two sets of series (or entities) judged apart.
    pub fn merge(&self, other: &Figures) -> Figures {
        let scored = self.scored + other.scored;
        let flagged = self.flag_rate * self.scored as f64 + other.flag_rate * other.scored as f64;
        Figures {
            loss: self.loss.or(other.loss),
            flag_rate: if scored > 0 {
                flagged / scored as f64
            } else {
                0.0
            },
            caught: self.caught + other.caught,
            scored,
            delays: self.delays.iter().chain(&other.delays).copied().collect(),
        }
    }
}

/// The gate's decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Verdict {
    /// Whether the candidate may be published.
    pub passed: bool,
    /// Why not, one line per count it lost on.
    pub reasons: Vec<String>,
    /// The same as data: the rule, the candidate's figure and the current's.
    pub refusals: Vec<Refusal>,
    /// The model in force.
    pub current: Figures,
    /// The candidate.
    pub candidate: Figures,
    /// Confirmed incidents in the window.
    pub events: usize,
}

/// Scores the held-back window (`raw`: with the injected `faults`) with a
/// fresh, non-learning replica of `model`.
fn figures(
    model: &Detector,
    h: &Holdout,
    raw: &[Vec<f64>],
    faults: &[Injected],
    lookback: usize,
) -> Result<Figures, ModelError> {
    let mut d = model.replica(false)?;
    let threshold = d.config().threshold;
    let len = raw.iter().map(Vec::len).max().unwrap_or(0);
    let mut flags: Vec<Vec<bool>> = raw.iter().map(|s| vec![false; s.len()]).collect();
    // Each series' fault window, looked up per point (a series has one
    // fault at most): not a scan of every fault for every point.
    let mut window = vec![0..0; raw.len()];
    for f in faults {
        window[f.series] = f.at..f.at + f.len;
    }
    let in_fault = |i: usize, t: usize| window[i].contains(&t);
    let (mut scored, mut flagged) = (0u64, 0u64);
    for t in 0..len {
        let row: Vec<Option<f64>> = raw.iter().map(|s| s.get(t).copied()).collect();
        let s = d.tick(&row)?;
        // Flags as the edge raises them: on the evidence, not held back.
        for (i, ((v, f), &score)) in row
            .iter()
            .zip(flags.iter_mut())
            .zip(&s.evidence)
            .enumerate()
        {
            if v.is_none() {
                continue;
            }
            f[t] = score >= threshold;
            // The flag rate is judged outside the injected faults.
            if !in_fault(i, t) {
                scored += 1;
                flagged += u64::from(f[t]);
            }
        }
    }
    let faults: Vec<(usize, usize, usize)> =
        faults.iter().map(|f| (f.series, f.at, f.len)).collect();
    let mut fig = Figures::counted(&flags, &faults, &h.events, lookback, (scored, flagged));
    fig.loss = loss(model, &h.normalised, h.window)?;
    Ok(fig)
}

/// Judges `candidate` against `current` on `holdout`.
pub fn judge(
    current: &Detector,
    candidate: &Detector,
    holdout: &Holdout,
    cfg: &GateConfig,
) -> Result<Verdict, ModelError> {
    let incident_series: Vec<usize> = holdout.events.iter().map(|&(i, _)| i).collect();
    let (raw, faults) = if cfg.inject {
        inject(&holdout.raw, &incident_series)
    } else {
        (holdout.raw.clone(), Vec::new())
    };
    let cur = figures(current, holdout, &raw, &faults, cfg.event_lookback)?;
    let cand = figures(candidate, holdout, &raw, &faults, cfg.event_lookback)?;
    let mut refusals = Vec::new();
    if let (Some(c), Some(n)) = (cur.loss, cand.loss) {
        if n > c * cfg.max_loss_ratio {
            refusals.push(Refusal {
                rule: Rule::ForecastLoss,
                candidate: n as f64,
                current: c as f64,
                reason: format!(
                    "forecast loss {n:.4} on the held-back window is worse than the current model's {c:.4}"
                ),
            });
        }
    }
    refusals.extend(detection_refusals(&cur, &cand, holdout.events.len(), cfg));
    Ok(Verdict::of(refusals, cur, cand, holdout.events.len()))
}

impl Verdict {
    /// The verdict from the counts the candidate lost on.
    pub fn of(refusals: Vec<Refusal>, current: Figures, candidate: Figures, events: usize) -> Self {
        Self {
            passed: refusals.is_empty(),
            reasons: refusals.iter().map(|r| r.reason.clone()).collect(),
            refusals,
            current,
            candidate,
            events,
        }
    }
}

/// The detection counts a candidate loses on: more flags outside faults,
/// fewer confirmed incidents, fewer injected faults or found later.
pub fn detection_refusals(
    cur: &Figures,
    cand: &Figures,
    events: usize,
    cfg: &GateConfig,
) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    let allowed = (cur.flag_rate * cfg.max_flag_ratio).max(cur.flag_rate + cfg.flag_rate_margin);
    if cand.flag_rate > allowed {
        refusals.push(Refusal {
            rule: Rule::FlagRate,
            candidate: cand.flag_rate,
            current: cur.flag_rate,
            reason: format!(
                "flags {:.2}% of held-back points against the current model's {:.2}%",
                cand.flag_rate * 100.0,
                cur.flag_rate * 100.0
            ),
        });
    }
    if cand.caught < cur.caught {
        refusals.push(Refusal {
            rule: Rule::Incidents,
            candidate: cand.caught as f64,
            current: cur.caught as f64,
            reason: format!(
                "catches {} of {events} confirmed incidents; the current model catches {}",
                cand.caught, cur.caught
            ),
        });
    }
    refusals.extend(injected_reasons(cur, cand, cfg));
    refusals
}

/// Why the candidate loses on the injected faults: it finds fewer, or it
/// finds the ones both find later.
pub fn injected_reasons(cur: &Figures, cand: &Figures, cfg: &GateConfig) -> Vec<Refusal> {
    let mut reasons = Vec::new();
    let n = cur.delays.len();
    if cand.found() < cur.found() {
        reasons.push(Refusal {
            rule: Rule::InjectedFound,
            candidate: cand.found() as f64,
            current: cur.found() as f64,
            reason: format!(
                "finds {} of {n} injected faults; the current model finds {}",
                cand.found(),
                cur.found()
            ),
        });
    }
    let both: Vec<(usize, usize)> = cur
        .delays
        .iter()
        .zip(&cand.delays)
        .filter_map(|(a, b)| Some(((*a)?, (*b)?)))
        .collect();
    if !both.is_empty() {
        let mean = |f: fn(&(usize, usize)) -> usize| {
            both.iter().map(f).sum::<usize>() as f64 / both.len() as f64
        };
        let (c, k) = (mean(|p| p.0), mean(|p| p.1));
        if k > c + cfg.max_delay_slack {
            reasons.push(Refusal {
                rule: Rule::InjectedDelay,
                candidate: k,
                current: c,
                reason: format!(
                    "finds the injected faults {k:.1} samples after they start on average; the current model {c:.1}"
                ),
            });
        }
    }
    reasons
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
        assert_eq!(v.refusals[0].rule, Rule::FlagRate);
        assert!(v.refusals[0].by() > 0.4, "{:?}", v.refusals);
        // And the reverse: a model worse on loss and incidents than the trained one.
        let v = judge(&trained, &current, &h, &GateConfig::default()).unwrap();
        assert!(!v.passed, "{v:?}");
        assert!(
            v.reasons.iter().any(|r| r.contains("forecast loss")),
            "{v:?}"
        );
    }

    fn with_delays(delays: &[Option<usize>]) -> Figures {
        Figures {
            delays: delays.to_vec(),
            ..Figures::default()
        }
    }

    #[test]
    fn a_candidate_that_finds_fewer_injected_faults_or_finds_them_later_is_refused() {
        let cfg = GateConfig::default();
        let cur = with_delays(&[Some(0), Some(2), None]);
        assert!(injected_reasons(&cur, &with_delays(&[Some(0), Some(2), None]), &cfg).is_empty());
        let fewer = injected_reasons(&cur, &with_delays(&[Some(0), None, None]), &cfg);
        assert_eq!(fewer.len(), 1, "{fewer:?}");
        assert!(
            fewer[0].reason.starts_with("finds 1 of 3 injected faults"),
            "{fewer:?}"
        );
        assert_eq!((fewer[0].rule, fewer[0].by()), (Rule::InjectedFound, -1.0));
        // Both find faults 0 and 1; the candidate 3 and 4 samples later.
        let later = injected_reasons(&cur, &with_delays(&[Some(3), Some(6), Some(1)]), &cfg);
        assert_eq!(later.len(), 1, "{later:?}");
        assert!(later[0].reason.contains("4.5 samples after"), "{later:?}");
        assert_eq!((later[0].rule, later[0].by()), (Rule::InjectedDelay, 3.5));
        // Within the slack: not later.
        assert!(injected_reasons(&cur, &with_delays(&[Some(1), Some(2), None]), &cfg).is_empty());
    }

    #[test]
    fn a_model_that_misses_the_injected_faults_the_current_one_finds_is_refused() {
        let cfg = DetectorConfig::default();
        let current = Detector::new(cfg.clone()).unwrap();
        // The same model, deaf: still warming up through the whole window.
        let deaf = Detector::new(DetectorConfig {
            warmup_samples: 1_000_000,
            ..cfg.clone()
        })
        .unwrap();
        let h = holdout(&cfg);
        let v = judge(&current, &deaf, &h, &GateConfig::default()).unwrap();
        // The decision log: `cargo test -p vigil-models gate -- --nocapture`.
        println!(
            "gate: passed={} current found {}/{} delays {:?}, candidate found {} delays {:?}; reasons: {:?}",
            v.passed,
            v.current.found(),
            v.current.delays.len(),
            v.current.delays,
            v.candidate.found(),
            v.candidate.delays,
            v.reasons
        );
        assert!(v.current.found() >= 2, "{v:?}");
        assert_eq!(v.candidate.found(), 0, "{v:?}");
        assert!(!v.passed);
        assert!(
            v.reasons.iter().any(|r| r.contains("injected faults")),
            "{:?}",
            v.reasons
        );
        // Without injection the same pair is judged on the incident alone.
        let off = GateConfig {
            inject: false,
            ..GateConfig::default()
        };
        let v = judge(&current, &deaf, &h, &off).unwrap();
        assert!(v.current.delays.is_empty());
    }
}
