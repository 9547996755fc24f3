use super::*;

fn file(scores: &[f64]) -> ScoredFile {
    ScoredFile {
        name: "cat/f.csv".into(),
        timestamps: (0..scores.len()).map(|i| format!("t{i}")).collect(),
        scores: scores.to_vec(),
    }
}

fn windows(pairs: &[(usize, usize)]) -> Windows {
    BTreeMap::from([(
        "cat/f.csv".to_string(),
        pairs
            .iter()
            .map(|(a, b)| (format!("t{a}"), format!("t{b}")))
            .collect(),
    )])
}

const STANDARD: CostMatrix = CostMatrix {
    tp_weight: 1.0,
    fp_weight: 0.11,
    fn_weight: 1.0,
};

#[test]
fn scaled_sigmoid_matches_nab_reference_points() {
    assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
    assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
    assert_eq!(scaled_sigmoid(0.0), 0.0);
    assert!((scaled_sigmoid(1.0) + 0.98661).abs() < 1e-5);
    assert_eq!(scaled_sigmoid(3.0), -1.0);
}

#[test]
fn probation_is_fifteen_percent_capped_at_750() {
    assert_eq!(probationary_length(10), 1.0);
    assert_eq!(probationary_length(4032), 604.0);
    assert_eq!(probationary_length(22695), 750.0);
}

#[test]
fn hand_computed_file() {
    // Rows 0..10, row 0 probationary, window rows 3..=5, one detection at row 3.
    let mut scores = vec![0.0; 10];
    scores[3] = 1.0;
    let f = file(&scores);
    let w = windows(&[(3, 5)]);
    let points = sweep(&f, &w["cat/f.csv"], &STANDARD, 0).unwrap();
    let table = scores_by_threshold(&points, &STANDARD);
    assert_eq!(table.len(), 3);
    assert_eq!(table[0], (1.1, -1.0), "no detections: the window is missed");
    assert_eq!(table[1].0, 1.0);
    assert!(
        (table[1].1 - 1.0).abs() < 1e-12,
        "earliest detection earns the full tp weight"
    );
    // At threshold 0 every row detects: rows 1, 2 are far from any window
    // (-0.11 each); rows 6..=9 are 0.5, 1, 1.5, 2 widths past it.
    let fp: f64 = -0.22
        + [0.5, 1.0, 1.5, 2.0]
            .iter()
            .map(|p| scaled_sigmoid(*p) * 0.11)
            .sum::<f64>();
    assert!((table[2].1 - (1.0 + fp)).abs() < 1e-12, "{table:?}");
    let s = score_profile(&[f], &w, &STANDARD).unwrap();
    assert_eq!(s.threshold, 1.0);
    assert!((s.normalised - 100.0).abs() < 1e-9);
}

#[test]
fn a_late_detection_earns_less_and_the_null_detector_scores_zero() {
    let mut scores = vec![0.0; 20];
    scores[9] = 0.9; // the last row of window 5..=9
    let w = windows(&[(5, 9)]);
    let late = score_profile(&[file(&scores)], &w, &STANDARD).unwrap();
    let position: f64 = -1.0 / 5.0;
    assert!((late.raw - scaled_sigmoid(position) / scaled_sigmoid(-1.0)).abs() < 1e-12);
    // A constant score: detecting everything costs far more in false
    // positives than the window earns, so the best threshold detects nothing.
    let long = windows(&[(1000, 1009)]);
    let null = score_profile(&[file(&[0.5; 2000])], &long, &STANDARD).unwrap();
    assert_eq!((null.threshold, null.normalised), (1.1, 0.0));
}

#[test]
fn window_edges_must_be_row_timestamps() {
    let w = BTreeMap::from([(
        "cat/f.csv".to_string(),
        vec![("t1".to_string(), "nope".to_string())],
    )]);
    assert!(score_profile(&[file(&[0.0; 5])], &w, &STANDARD).is_err());
}

#[test]
fn label_timestamps_lose_their_fraction() {
    assert_eq!(
        canonical("2014-04-10 07:15:00.000000"),
        "2014-04-10 07:15:00"
    );
    assert_eq!(canonical("2014-04-10 07:15:00"), "2014-04-10 07:15:00");
}

/// nab-dev lives in ../shared beside the checkout (there in CI too).
fn nab_dev() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/nab-dev");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("VIGIL_REQUIRE_EXTERNAL").as_deref() != Ok("1"),
        "nab-dev not found at {}",
        dir.display()
    );
    eprintln!("SKIPPED: nab-dev not found at {}", dir.display());
    None
}

#[test]
fn golden_scores_of_published_detectors() {
    let Some(dir) = nab_dev() else { return };
    let windows = load_windows(&dir.join("labels/combined_windows.json")).unwrap();
    let profiles = load_profiles(&dir.join("profiles.json")).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference_scores.json")).unwrap())
            .unwrap();
    for detector in ["numenta", "ARTime"] {
        let files = read_results(&dir.join("results").join(detector), detector, &windows).unwrap();
        let got = score_corpus(&files, &windows, &profiles).unwrap();
        for (profile, score) in &got {
            let want = reference[detector][profile].as_f64().unwrap();
            assert!(
                (score.normalised - want).abs() < 0.01,
                "{detector} {profile}: got {:.4}, published {want:.4} (threshold {})",
                score.normalised,
                score.threshold
            );
        }
    }
}
