use super::*;

/// Training-like rows: metric 0 a slow wave, metric 1 tracks it, metric 2
/// an independent wave, metric 3 small noise.
fn row(t: usize) -> Vec<f64> {
    let a = (t as f64 / 30.0).sin();
    let noise = ((t * 7919) % 13) as f64 / 13.0 - 0.5;
    vec![
        0.5 + 0.3 * a,
        0.4 + 0.3 * a + 0.01 * noise,
        0.5 + 0.2 * (t as f64 / 17.0).cos(),
        0.2 + 0.02 * noise,
    ]
}

fn fitted() -> EntityModel {
    let train: Vec<Vec<f64>> = (0..3000).map(row).collect();
    EntityModel::fit(&train, EntityConfig::default()).unwrap()
}

#[test]
fn jacobi_finds_the_eigenvalues_of_a_symmetric_matrix() {
    let (values, vectors) = linalg::jacobi(vec![
        vec![2.0, 1.0, 0.0],
        vec![1.0, 2.0, 0.0],
        vec![0.0, 0.0, 5.0],
    ]);
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    for (got, want) in sorted.iter().zip([1.0, 3.0, 5.0]) {
        assert!((got - want).abs() < 1e-9, "{values:?}");
    }
    // Columns are orthonormal eigenvectors: A v = λ v for the largest.
    let i = values.iter().position(|&v| (v - 5.0).abs() < 1e-9).unwrap();
    assert!((vectors[2][i].abs() - 1.0).abs() < 1e-9);
}

#[test]
fn normal_rows_stay_under_the_threshold() {
    let model = fitted();
    let mut state = EntityState::default();
    let alarms = (3000..5000)
        .filter(|&t| model.step(&mut state, &row(t)).score >= model.threshold())
        .count();
    assert!(alarms <= 10, "{alarms} alarm rows on normal data");
    assert!(model.threshold().is_finite() && model.threshold() > 0.0);
}

#[test]
fn a_step_in_one_metric_alarms_and_ranks_that_metric_first() {
    let model = fitted();
    let mut state = EntityState::default();
    for t in 3000..3200 {
        model.step(&mut state, &row(t));
    }
    let mut r = row(3200);
    r[3] += 0.3;
    let s = model.step(&mut state, &r);
    assert!(
        s.score >= model.threshold(),
        "{} < {}",
        s.score,
        model.threshold()
    );
    let first = (0..4).max_by(|&a, &b| s.metrics[a].total_cmp(&s.metrics[b]));
    assert_eq!(first, Some(3), "{:?}", s.metrics);
    // The score does not saturate: a ten times larger step scores higher.
    let mut again = EntityState::default();
    for t in 3000..3200 {
        model.step(&mut again, &row(t));
    }
    r[3] += 2.7;
    assert!(model.step(&mut again, &r).score > 5.0 * s.score);
}

#[test]
fn a_metric_leaving_its_partner_alarms_while_both_stay_in_range() {
    let model = fitted();
    assert!(
        model.components() < 4,
        "the tracking pair shares a direction"
    );
    let mut state = EntityState::default();
    let mut broke = 0;
    for t in 3000..3400 {
        let mut r = row(t);
        if t >= 3200 {
            // Metric 1 drifts away from metric 0, slowly and within its
            // training range: no single step is large.
            r[1] = 0.4 - 0.3 * (t as f64 / 30.0).sin();
        }
        if model.step(&mut state, &r).score >= model.threshold() && t >= 3200 {
            broke += 1;
        }
    }
    assert!(
        broke >= 20,
        "only {broke} alarm rows once metric 1 broke away"
    );
}

#[test]
fn too_few_rows_are_refused() {
    let err = EntityModel::fit(&vec![vec![1.0; 3]; 10], EntityConfig::default()).unwrap_err();
    assert!(err.contains("100"), "{err}");
}
