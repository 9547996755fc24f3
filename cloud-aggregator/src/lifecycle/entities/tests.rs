use super::*;
use crate::lifecycle::dataset::Series;

const T0: i64 = 1_700_000_000_000;

fn series(entity: &str, metric: &str, ts: Vec<i64>, values: Vec<f64>) -> Series {
    Series {
        key: ("a".into(), entity.into(), metric.into()),
        ts,
        values,
    }
}

#[test]
fn series_align_into_rows_holding_a_missing_value_from_the_first_full_step() {
    let ds = Dataset {
        series: vec![
            // `cpu` from step 0, every step; `mem` from step 2, every
            // other step and half a step late.
            series(
                "host/h1",
                "cpu",
                (0..8).map(|i| T0 + i * 1000).collect(),
                (0..8).map(|i| i as f64).collect(),
            ),
            series(
                "host/h1",
                "mem",
                vec![T0 + 2500, T0 + 4500, T0 + 6500],
                vec![20.0, 40.0, 60.0],
            ),
            series("host/h2", "cpu", vec![T0], vec![1.0]),
        ],
        ..Dataset::default()
    };
    let (r, skipped) = rows(&ds, 1000, (100, 1 << 20));
    assert_eq!(skipped, 0);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].metrics, vec!["cpu", "mem"]);
    assert_eq!(r[0].ts.first(), Some(&(T0 + 2000)));
    let want: Vec<Vec<f64>> = vec![
        vec![2.0, 20.0],
        vec![3.0, 20.0],
        vec![4.0, 40.0],
        vec![5.0, 40.0],
        vec![6.0, 60.0],
        vec![7.0, 60.0],
    ];
    assert_eq!(r[0].rows, want);
    // The bound keeps the latest rows.
    let (r, _) = rows(&ds, 1000, (3, 1 << 20));
    assert_eq!(r[0].rows, want[3..].to_vec());
    assert_eq!(r[1].rows, vec![vec![1.0]]);
    // The byte bound: room for h1's 6 rows of 2 values, not for h2 too.
    let (r, skipped) = rows(&ds, 1000, (100, 6 * 2 * 8));
    assert_eq!((r.len(), skipped), (1, 1));
    assert_eq!(r[0].entity, "host/h1");
}

/// A host with three metrics for `n` rows a second apart; `cpu` and
/// `load` move together.
fn host(entity: &str, n: usize, phase: f64) -> Vec<Series> {
    let ts: Vec<i64> = (0..n as i64).map(|i| T0 + i * 1000).collect();
    let noise =
        |t: usize, k: usize| (((t * 7919 + k * 104_729) % 1000) as f64 / 1000.0 - 0.5) * 0.02;
    let wave = |t: usize| ((t as f64 + phase) / 40.0).sin();
    let col = |f: &dyn Fn(usize) -> f64| (0..n).map(f).collect::<Vec<f64>>();
    vec![
        series(
            entity,
            "cpu",
            ts.clone(),
            col(&|t| 0.5 + 0.3 * wave(t) + noise(t, 0)),
        ),
        series(
            entity,
            "load",
            ts.clone(),
            col(&|t| 2.0 + 1.2 * wave(t) + 4.0 * noise(t, 1)),
        ),
        series(
            entity,
            "mem",
            ts,
            col(&|t| 0.4 + 0.1 * ((t as f64 + phase) / 97.0).cos() + noise(t, 2)),
        ),
    ]
}

fn fleet() -> Vec<Rows> {
    let mut series = host("host/h1", 3000, 0.0);
    series.extend(host("host/h2", 3000, 11.0));
    rows(
        &Dataset {
            series,
            ..Dataset::default()
        },
        1000,
        (50_000, 1 << 30),
    )
    .0
}

#[test]
fn new_entities_are_fitted_and_judged_on_their_own_flag_rate() {
    let cut = T0 + 2400 * 1000;
    let cfg = EntityTrainConfig::default();
    let run = train(&fleet(), &[], cut, &cfg, &GateConfig::default(), None);
    assert_eq!(run.set.entries.len(), 2);
    assert_eq!(run.set.entries[0].entity, "host/h1");
    assert_eq!(run.set.entries[0].metrics, vec!["cpu", "load", "mem"]);
    assert!(run.verdict.passed, "{:?}", run.verdict);
    // Their figures are in the verdict: one injected fault per entity.
    assert_eq!(run.verdict.candidate.delays.len(), 2, "{:?}", run.verdict);
    // A risk that calls a tenth of normal rows anomalous: refused, and the
    // verdict says which rule and by how much.
    let noisy = EntityTrainConfig { risk: 0.09, ..cfg };
    let run = train(&fleet(), &[], cut, &noisy, &GateConfig::default(), None);
    assert!(!run.verdict.passed);
    let r = &run.verdict.refusals[0];
    assert_eq!(r.rule, Rule::FlagRate);
    assert!(r.candidate > 0.02, "{r:?}");
}

#[test]
fn with_models_in_force_each_entity_is_judged_against_its_own() {
    let cut = T0 + 2400 * 1000;
    let cfg = EntityTrainConfig::default();
    let stable = train(&fleet(), &[], cut, &cfg, &GateConfig::default(), None).set;
    let again = train(
        &fleet(),
        &[],
        cut,
        &cfg,
        &GateConfig::default(),
        Some(&stable),
    );
    assert!(again.verdict.passed, "{:?}", again.verdict);
    // Judged side by side: both models' faults found, in both entities.
    assert_eq!(again.verdict.current.delays.len(), 2, "{:?}", again.verdict);
    assert_eq!(again.verdict.current.found(), 2, "{:?}", again.verdict);
    // Candidates far keener than the models in force: refused for their
    // flag rate against the stable models'.
    let keen = EntityTrainConfig {
        risk: 0.05,
        ..cfg.clone()
    };
    let v = train(
        &fleet(),
        &[],
        cut,
        &keen,
        &GateConfig::default(),
        Some(&stable),
    )
    .verdict;
    println!("cloud entity gate: {:?}", v.reasons);
    assert!(!v.passed);
    assert_eq!(v.refusals[0].rule, Rule::FlagRate, "{v:?}");
    assert!(
        v.reasons[0].ends_with(&format!(
            "against the current model's {:.2}%",
            v.current.flag_rate * 100.0
        )),
        "{v:?}"
    );
    // A stable model for other metrics is no model in force: the same keen
    // candidates are judged alone, against the gate's margin.
    let mut other = stable.clone();
    for e in &mut other.entries {
        e.metrics = vec!["a".into(), "b".into(), "c".into()];
    }
    let v = train(
        &fleet(),
        &[],
        cut,
        &keen,
        &GateConfig::default(),
        Some(&other),
    )
    .verdict;
    assert!(!v.passed);
    assert!(
        v.reasons[0].starts_with("the new entities' models flag"),
        "{v:?}"
    );
}

#[test]
fn rows_around_a_confirmed_incident_are_not_learnt() {
    let mut series = host("host/h1", 3000, 0.0);
    // An outage: `load` stuck at 50 for rows 1000..1300.
    for v in &mut series[1].values[1000..1300] {
        *v = 50.0;
    }
    let (rows, _) = rows(
        &Dataset {
            series,
            ..Dataset::default()
        },
        1000,
        (50_000, 1 << 30),
    );
    let key = ("a".to_string(), "host/h1".to_string(), "load".to_string());
    let cut = T0 + 2400 * 1000;
    let cfg = EntityTrainConfig {
        incident_before_secs: 10,
        incident_after_secs: 400,
        ..EntityTrainConfig::default()
    };
    let learnt = train(&rows, &[], cut, &cfg, &GateConfig::default(), None).set;
    let clean = train(
        &rows,
        &[(key, T0 + 1000 * 1000)],
        cut,
        &cfg,
        &GateConfig::default(),
        None,
    )
    .set;
    // Rows in the outage, scored by each model: the one that learnt the
    // outage as normal scores it lower.
    let score = |set: &EntitySet| {
        let m = &set.entries[0].model;
        let mut st = vigil_models::entity::EntityState::default();
        let s: Vec<f64> = rows[0].rows[990..1010]
            .iter()
            .map(|r| m.step(&mut st, r).score / m.threshold())
            .collect();
        s.into_iter().fold(0.0, f64::max)
    };
    assert!(
        score(&clean) > 1.0,
        "clean model misses the outage: {}",
        score(&clean)
    );
    assert!(
        score(&learnt) < score(&clean),
        "{} vs {}",
        score(&learnt),
        score(&clean)
    );
}
