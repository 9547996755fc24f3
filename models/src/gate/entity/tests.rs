use super::*;
use crate::entity::EntityConfig;

/// Entity `e`'s row at `t`: metric 0 a slow wave, 1 tracks it, 2 its own
/// wave, 3 and 4 small noise; phases differ per entity.
fn row(e: usize, t: usize) -> Vec<f64> {
    let a = ((t + 13 * e) as f64 / 30.0).sin();
    let noise = |k: usize| ((t * 7919 + k * 104_729 + e * 31) % 13) as f64 / 13.0 - 0.5;
    vec![
        0.5 + 0.3 * a,
        0.4 + 0.3 * a + 0.01 * noise(0),
        0.5 + 0.2 * ((t + 7 * e) as f64 / 17.0).cos(),
        0.2 + 0.02 * noise(1),
        1.0 + 0.05 * noise(2),
    ]
}

const ENTITIES: usize = 10;

fn models(cfg: &EntityConfig) -> Vec<EntityModel> {
    (0..ENTITIES)
        .map(|e| {
            let train: Vec<Vec<f64>> = (0..2000).map(|t| row(e, t)).collect();
            EntityModel::fit(&train, cfg.clone()).unwrap()
        })
        .collect()
}

fn holdout() -> EntityHoldout {
    EntityHoldout {
        rows: (0..ENTITIES)
            .map(|e| (2000..2400).map(|t| row(e, t)).collect())
            .collect(),
        events: Vec::new(),
    }
}

fn log(what: &str, v: &Verdict) {
    // The decision log: `cargo test -p vigil-models gate::entity -- --nocapture`.
    println!(
        "entity gate, {what}: passed={} flag rate {:.4} vs {:.4}; found {}/{} vs {}, delays {:?} vs {:?}; refusals: {:?}",
        v.passed,
        v.candidate.flag_rate,
        v.current.flag_rate,
        v.candidate.found(),
        v.current.delays.len(),
        v.current.found(),
        v.candidate.delays,
        v.current.delays,
        v.refusals
            .iter()
            .map(|r| format!("{} by {:+.3}: {}", r.rule.as_str(), r.by(), r.reason))
            .collect::<Vec<_>>()
    );
}

#[test]
fn faults_of_every_kind_go_into_the_second_half_and_a_correlated_one_moves_several_metrics() {
    let h = holdout();
    let (rows, faults) = inject_entities(&h.rows, &[3]);
    assert_eq!(faults.len(), ENTITIES - 1);
    let kinds: Vec<EntityFault> = faults.iter().take(5).map(|f| f.kind).collect();
    assert_eq!(kinds, EntityFault::ALL);
    for f in &faults {
        assert!(f.at >= 200 && f.at + f.len <= 400, "{f:?}");
        let changed: Vec<usize> = (0..5)
            .filter(|&k| {
                (f.at..f.at + f.len).any(|t| rows[f.entity][t][k] != h.rows[f.entity][t][k])
            })
            .collect();
        assert_eq!(changed, f.metrics, "{f:?}");
        assert_eq!(rows[f.entity][..f.at], h.rows[f.entity][..f.at]);
    }
    let correlated = &faults[2];
    assert_eq!(correlated.kind, EntityFault::Correlated);
    assert!(correlated.metrics.len() >= 2);
    assert_eq!(
        rows[3], h.rows[3],
        "the entity with an incident is untouched"
    );
}

#[test]
fn the_same_models_pass() {
    let m = models(&EntityConfig::default());
    let v = judge_entities(&m, &m, &holdout(), &GateConfig::default()).unwrap();
    log("same models", &v);
    assert!(v.passed, "{v:?}");
    assert!(v.current.found() >= 3, "{v:?}");
}

#[test]
fn a_model_that_flags_everything_is_refused() {
    let current = models(&EntityConfig::default());
    // Fitted on a calm stretch (every metric near its mean): the held-back
    // rows' usual moves are far beyond anything it saw.
    let noisy: Vec<EntityModel> = (0..ENTITIES)
        .map(|e| {
            let calm: Vec<Vec<f64>> = (0..2000)
                .map(|t| row(e, t).iter().map(|v| 0.5 + 0.001 * (v - 0.5)).collect())
                .collect();
            EntityModel::fit(&calm, EntityConfig::default()).unwrap()
        })
        .collect();
    let v = judge_entities(&current, &noisy, &holdout(), &GateConfig::default()).unwrap();
    log("flags everything", &v);
    assert!(!v.passed);
    assert_eq!(v.refusals[0].rule, super::super::Rule::FlagRate, "{v:?}");
    assert!(v.candidate.flag_rate > 0.9, "{v:?}");
    assert!(v.refusals[0].by() > 0.8, "{v:?}");
}

#[test]
fn a_model_that_misses_the_injected_faults_is_refused() {
    let current = models(&EntityConfig::default());
    let deaf = models(&EntityConfig {
        forecast: false,
        subspace: false,
        ..EntityConfig::default()
    });
    let v = judge_entities(&current, &deaf, &holdout(), &GateConfig::default()).unwrap();
    log("deaf", &v);
    assert!(!v.passed);
    assert_eq!(v.candidate.found(), 0, "{v:?}");
    assert!(
        v.refusals
            .iter()
            .any(|r| r.rule == super::super::Rule::InjectedFound && r.by() <= -3.0),
        "{v:?}"
    );
}

#[test]
fn a_model_that_finds_them_later_is_refused() {
    let current = models(&EntityConfig::default());
    // Heavy smoothing: the score climbs slowly after each fault starts.
    let slow = models(&EntityConfig {
        smooth: 0.9,
        ..EntityConfig::default()
    });
    let v = judge_entities(&current, &slow, &holdout(), &GateConfig::default()).unwrap();
    log("slow", &v);
    assert!(!v.passed);
    assert!(
        v.refusals
            .iter()
            .any(|r| r.rule == super::super::Rule::InjectedDelay
                || r.rule == super::super::Rule::InjectedFound),
        "{v:?}"
    );
}

#[test]
fn mismatched_models_are_an_error() {
    let m = models(&EntityConfig::default());
    assert!(judge_entities(&m[..2], &m, &holdout(), &GateConfig::default()).is_err());
}
