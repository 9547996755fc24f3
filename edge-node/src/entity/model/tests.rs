use super::*;

/// A host with three metrics: `cpu` and `load` move together, `mem`
/// wanders on its own; a little deterministic noise on each.
fn host(t: usize) -> Vec<(String, f64)> {
    let wave = (t as f64 / 40.0).sin();
    let noise = |k: usize| (((t * 7919 + k * 104_729) % 1000) as f64 / 1000.0 - 0.5) * 0.02;
    vec![
        ("cpu".into(), 0.5 + 0.3 * wave + noise(0)),
        ("load".into(), 2.0 + 1.2 * wave + 4.0 * noise(1)),
        ("mem".into(), 0.4 + 0.1 * (t as f64 / 97.0).cos() + noise(2)),
    ]
}

fn row(entity: &EntityId, values: Vec<(String, f64)>) -> EntityRow {
    EntityRow {
        entity: entity.clone(),
        values,
    }
}

fn cfg() -> EntityModelConfig {
    EntityModelConfig {
        fit_rows: 600,
        refit_rows: 600,
        risk: 1e-4,
        ..EntityModelConfig::default()
    }
}

#[test]
fn fits_after_enough_rows_then_names_the_metric_that_broke() {
    let h = EntityId::host("h1");
    let mut models = EntityModels::new(cfg());
    let none = BTreeSet::new();
    for t in 0..599 {
        let (v, tally) = models.step(&[row(&h, host(t))], &none);
        assert!(v.is_empty(), "no verdict before the fit (t {t})");
        assert_eq!(tally.fitted, 0);
    }
    let (_, tally) = models.step(&[row(&h, host(599))], &none);
    assert_eq!((tally.fits, tally.fitted), (1, 1));
    assert_eq!(tally.bytes, 600 * 3 * 4);
    // Normal rows: under the alarm level.
    let mut worst: f64 = 0.0;
    for t in 600..1200 {
        let (v, _) = models.step(&[row(&h, host(t))], &none);
        worst = worst.max(v[&h].score);
    }
    assert!(worst < 1.0, "normal rows scored up to {worst}");
    // `load` leaves `cpu` (both within their usual ranges): an anomaly
    // whose root cause is `load`, with the largest share.
    let mut seen = None;
    for t in 1200..1215 {
        let mut r = host(t);
        r[1].1 = 2.0 - 1.2 * (t as f64 / 40.0).sin();
        let (v, _) = models.step(&[row(&h, r)], &BTreeSet::from([h.clone()]));
        seen = Some(v[&h].clone());
    }
    let v = seen.unwrap();
    assert!(v.score >= 1.0, "score {}", v.score);
    assert_eq!(v.root_cause.len(), 3);
    assert_eq!(v.root_cause[0].metric, "load");
    let total: f64 = v.root_cause.iter().map(|s| s.share).sum();
    assert!((total - 1.0).abs() < 1e-9);
    assert!(v.root_cause[0].share > 0.4, "{v:?}");
}

#[test]
fn rows_in_an_episode_are_not_learnt() {
    let h = EntityId::host("h1");
    let mut models = EntityModels::new(cfg());
    let sick = BTreeSet::from([h.clone()]);
    // A whole outage's worth of rows while in an episode: nothing fitted.
    for t in 0..700 {
        let (_, tally) = models.step(&[row(&h, host(t))], &sick);
        assert_eq!(tally.fitted, 0);
        assert_eq!(tally.bytes, 0);
    }
    let none = BTreeSet::new();
    for t in 0..600 {
        models.step(&[row(&h, host(t))], &none);
    }
    assert_eq!(models.step(&[], &none).1.fitted, 1);
}

#[test]
fn holds_a_missing_metric_and_starts_over_on_a_new_one() {
    let h = EntityId::host("h1");
    let mut models = EntityModels::new(cfg());
    let none = BTreeSet::new();
    for t in 0..650 {
        let mut r = host(t);
        // `mem` reports every other tick; its last value is held.
        if t % 2 == 1 {
            r.pop();
        }
        models.step(&[row(&h, r)], &none);
    }
    let (v, _) = models.step(&[row(&h, host(650))], &none);
    assert!(v.contains_key(&h));
    // A fourth metric: new columns, so no model until it has rows again.
    let mut r = host(651);
    r.push(("disk".into(), 0.1));
    let (v, tally) = models.step(&[row(&h, r)], &none);
    assert!(v.is_empty());
    assert_eq!(tally.fitted, 0);
    assert_eq!(tally.bytes, 4 * 4);
}

#[test]
fn the_byte_bound_and_the_metric_cap_refuse_and_count() {
    let none = BTreeSet::new();
    let mut models = EntityModels::new(EntityModelConfig {
        // Room for 100 rows of 3 metrics.
        max_bytes: 100 * 3 * 4,
        max_metrics: 3,
        ..cfg()
    });
    let (a, b) = (EntityId::host("a"), EntityId::host("b"));
    let mut refused = 0;
    for t in 0..80 {
        let (_, tally) = models.step(&[row(&a, host(t)), row(&b, host(t))], &none);
        refused += tally.refused;
        assert!(tally.bytes <= 100 * 3 * 4);
    }
    // 160 rows offered, 100 kept (50 each: they take turns).
    assert_eq!(refused, 60);
    // Forgetting `a` frees its rows.
    models.retain(|id| *id == b);
    assert_eq!(models.step(&[], &none).1.bytes, 50 * 3 * 4);
    let mut wide = host(0);
    wide.push(("disk".into(), 1.0));
    assert_eq!(models.step(&[row(&b, wide)], &none).1.refused, 1);
}

#[test]
fn bad_settings_are_all_reported() {
    let mut e = Vec::new();
    EntityModelConfig {
        fit_rows: 10,
        refit_rows: 0,
        risk: 0.5,
        max_metrics: 1,
        ..EntityModelConfig::default()
    }
    .validate(&mut e);
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(e[0].starts_with("entity_model.fit_rows"));
}

#[test]
fn a_cloud_model_is_taken_for_the_same_metrics_and_kept_until_a_rollback() {
    let h = EntityId::host("h1");
    let none = BTreeSet::new();
    let train: Vec<Vec<f64>> = (0..2000)
        .map(|t| host(t).into_iter().map(|(_, v)| v).collect())
        .collect();
    let model = EntityModel::fit(&train, EntityConfig::default()).unwrap();
    let entry = |site: &str, metrics: &[&str]| vigil_models::entity::EntityEntry {
        site: site.into(),
        entity: "host/h1".into(),
        metrics: metrics.iter().map(|m| m.to_string()).collect(),
        model: model.clone(),
    };
    let set = EntitySet {
        entries: vec![
            entry("other-site", &["cpu", "load", "mem"]),
            entry("s", &["cpu", "load", "mem"]),
        ],
    };
    let mut models = EntityModels::new(cfg());
    assert_eq!(models.install("s", Some(&set)), 1);
    // Scored by the cloud's model from its first full row, no fit needed.
    let (v, tally) = models.step(&[row(&h, host(0))], &none);
    assert!(v.contains_key(&h));
    assert_eq!((tally.fitted, tally.from_cloud, tally.fits), (1, 1, 0));
    // Its own rows do not replace it.
    for t in 1..700 {
        assert_eq!(models.step(&[row(&h, host(t))], &none).1.fits, 0);
    }
    // A rollback: back to its own fit, at once (it has the rows).
    models.install("s", None);
    let (_, tally) = models.step(&[row(&h, host(700))], &none);
    assert_eq!((tally.fits, tally.fitted, tally.from_cloud), (1, 1, 0));
    // A cloud model for other metrics is not taken.
    let other = EntitySet {
        entries: vec![entry("s", &["cpu", "disk", "mem"])],
    };
    models.install("s", Some(&other));
    assert_eq!(models.step(&[row(&h, host(701))], &none).1.from_cloud, 0);
}
