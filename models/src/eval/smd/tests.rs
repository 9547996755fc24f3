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
        evidence: Vec::new(),
    }
}

#[test]
fn interpretation_lines_are_half_open_rows_and_one_based_metrics() {
    let got = parse_interpretation("246-252:1,2,11\n\n2884-2888:6\n").unwrap();
    assert_eq!(
        got,
        vec![
            Interpretation {
                start: 246,
                end: 252,
                metrics: vec![0, 1, 10]
            },
            Interpretation {
                start: 2884,
                end: 2888,
                metrics: vec![5]
            },
        ]
    );
    let err = parse_interpretation("1-2:0\n").unwrap_err();
    assert!(err.starts_with("line 1:"), "{err}");
    assert!(parse_interpretation("5-3:1").is_err());
    assert!(parse_interpretation("garbage").is_err());
}

#[test]
fn hit_rate_counts_true_metrics_among_the_top_of_the_ranking() {
    // 4 metrics; in rows 1..3 metric 2 leads, then 0, then 3, then 1.
    let evidence: Vec<Vec<f32>> = (0..4)
        .map(|t| {
            if (1..3).contains(&t) {
                vec![0.6, 0.1, 0.9, 0.3]
            } else {
                vec![0.0; 4]
            }
        })
        .collect();
    let run = MachineRun {
        evidence,
        ..machine(0.5, &[0.0; 4], &[0; 4])
    };
    let span = |metrics: Vec<usize>| Interpretation {
        start: 1,
        end: 3,
        metrics,
    };
    // Truth {2, 3}: @100 looks at the top 2 (2, 0): one of two.
    assert_eq!(hit_rate(&run, &[span(vec![2, 3])], 100), 0.5);
    // @150 looks at the top 3 (2, 0, 3): both.
    assert_eq!(hit_rate(&run, &[span(vec![2, 3])], 150), 1.0);
    // Summed over spans.
    assert_eq!(hit_rate(&run, &[span(vec![2]), span(vec![1])], 100), 1.0);
}

#[test]
fn counts_events_without_point_adjust_and_with_it() {
    // Two labelled anomalies (rows 2..5 and 18..20); a short alarm at 3
    // (held for the recovery rows: 3..8) and one at 10..12 (held: 10..16).
    let labels: Vec<bool> = (0..20)
        .map(|t| (2..5).contains(&t) || (18..20).contains(&t))
        .collect();
    let scores: Vec<f32> = (0..20)
        .map(|t| {
            if t == 3 || (10..12).contains(&t) {
                0.9
            } else {
                0.0
            }
        })
        .collect();
    let rows: Rows = (0..20).map(|_| vec![0.0, 0.0]).collect();
    let run = machine(0.5, &scores, &[0; 20]);
    let c = count(&run, &labels, &rows, &rows);
    assert_eq!((c.events, c.events_found), (2, 1));
    assert_eq!((c.alarms, c.alarms_correct), (2, 1));
    let e = c.event();
    assert_eq!((e.precision, e.recall), (0.5, 0.5));
    // Point-adjusted: rows 2..5 all count (3 TP); 5..8 and 10..16 are FP;
    // 18..20 FN.
    assert_eq!((c.pa_tp, c.pa_fp, c.pa_fn), (3, 9, 2));
    assert!((c.point_adjusted().precision - 0.25).abs() < 1e-12);
}

#[test]
fn an_alarm_ends_only_after_the_recovery_rows_below_the_exit_level() {
    let t = 1.0;
    // Over, a dip just under the threshold (still above the exit level),
    // four rows under the exit level, over again: one event.
    let s = [
        1.2, 0.9, 0.1, 0.1, 0.1, 0.1, 1.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1,
    ];
    let on = alarms(&s, t);
    assert_eq!(runs(&on), vec![(0, 11)], "{on:?}");
    // Never over: never on, however close.
    assert!(alarms(&[0.99; 10], t).iter().all(|a| !a));
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
