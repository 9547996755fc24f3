use super::*;
use vigil_core::EntityId;

fn id(m: &str) -> SeriesId {
    SeriesId::new(EntityId::host("h"), m)
}

#[test]
fn rings_are_bounded_and_pending_is_taken_once() {
    let mut c = Cache::new(10, 3);
    for t in 0..5 {
        c.push(&id("a"), t, t as f64, 100, 10).unwrap();
    }
    let e = c.get(&id("a")).unwrap();
    assert_eq!(
        e.points.iter().map(|p| p.ts_ms).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(c.take_pending(), vec![Some(4.0)]);
    assert_eq!(c.take_pending(), vec![None]);
}

#[test]
fn refuses_bad_samples_and_new_series_when_full() {
    let mut c = Cache::new(1, 3);
    assert_eq!(
        c.push(&id("a"), 1, f64::NAN, 100, 10),
        Err(Refusal::NotFinite)
    );
    assert_eq!(c.push(&id("a"), 1000, 1.0, 100, 10), Err(Refusal::Future));
    assert_eq!(
        c.push(&id("a"), i64::MAX, 1.0, 100, 10),
        Err(Refusal::Future)
    );
    let mut aged = Cache::new(1, 3).with_max_past(50);
    assert_eq!(aged.push(&id("a"), 49, 1.0, 100, 10), Err(Refusal::Past));
    assert_eq!(
        aged.push(&id("a"), i64::MIN, 1.0, 100, 10),
        Err(Refusal::Past)
    );
    aged.push(&id("a"), 50, 1.0, 100, 10).unwrap();
    c.push(&id("a"), 5, 1.0, 100, 10).unwrap();
    assert_eq!(c.push(&id("a"), 4, 1.0, 100, 10), Err(Refusal::OutOfOrder));
    assert_eq!(c.push(&id("a"), 5, 2.0, 100, 10), Err(Refusal::Duplicate));
    assert_eq!(c.push(&id("b"), 5, 1.0, 100, 10), Err(Refusal::Full));
    assert_eq!(c.len(), 1);
}

#[test]
fn junk_names_make_room_for_a_real_series_but_never_push_out_a_live_one() {
    let mut c = Cache::new(3, 5).with_lifecycle(3_600_000, 60_000);
    // A live series: two samples, the latest recent.
    c.push(&id("live"), 1_000, 1.0, 1_000, 0).unwrap();
    c.push(&id("live"), 2_000, 1.0, 2_000, 0).unwrap();
    c.push(&id("junk-0"), 2_000, 1.0, 2_000, 0).unwrap();
    c.push(&id("junk-1"), 3_000, 1.0, 3_000, 0).unwrap();
    assert_eq!(c.take_evicted(), Vec::<usize>::new());
    // Full: a new name takes the stalest junk slot, not the live one.
    assert_eq!(c.push_admit(&id("sensor"), 4_000, 1.0, 4_000, 0), Ok(true));
    assert!(c.get(&id("junk-0")).is_none());
    assert!(c.get(&id("live")).is_some());
    assert_eq!(c.take_evicted(), vec![1]);
    assert_eq!(c.get(&id("sensor")).unwrap().born, 4);
    assert_eq!(c.len(), 3);
    // Everything live: nothing to push out.
    c.push(&id("sensor"), 5_000, 1.0, 5_000, 0).unwrap();
    c.push(&id("junk-1"), 5_000, 1.0, 5_000, 0).unwrap();
    assert_eq!(
        c.push(&id("more"), 5_000, 1.0, 5_000, 0),
        Err(Refusal::Full)
    );
    // The live series goes quiet past protect_secs: now it can go.
    c.push(&id("sensor"), 70_000, 1.0, 70_000, 0).unwrap();
    c.push(&id("junk-1"), 70_000, 1.0, 70_000, 0).unwrap();
    assert_eq!(c.push_admit(&id("more"), 70_000, 1.0, 70_000, 0), Ok(true));
    assert!(c.get(&id("live")).is_none());
}

#[test]
fn idle_series_are_evicted_and_their_slots_reused() {
    let mut c = Cache::new(10, 5).with_lifecycle(10_000, 60_000);
    c.push(&id("a"), 1_000, 1.0, 1_000, 0).unwrap();
    c.push(&id("b"), 1_000, 1.0, 1_000, 0).unwrap();
    c.push(&id("b"), 9_000, 1.0, 9_000, 0).unwrap();
    assert_eq!(c.sweep(12_000), 1, "a is idle past 10 s");
    assert_eq!(c.len(), 1);
    assert_eq!(c.live_entries().count(), 1);
    assert_eq!(c.take_evicted(), vec![0]);
    // Its unsent point is counted as lost to the uplink.
    let u = c.take_unsent();
    assert_eq!((u.points.len(), u.lost), (2, 1));
    c.push(&id("c"), 12_000, 1.0, 12_000, 0).unwrap();
    assert_eq!(c.entries().len(), 2, "the free slot was reused");
    assert_eq!(c.take_pending(), vec![Some(1.0), Some(1.0)]);
}

#[test]
fn scores_land_on_the_scored_points() {
    let mut c = Cache::new(10, 3);
    c.push(&id("a"), 1, 1.0, 100, 10).unwrap();
    c.push(&id("b"), 1, 1.0, 100, 10).unwrap();
    c.take_pending();
    c.push(&id("a"), 2, 2.0, 100, 10).unwrap();
    let pending = c.take_pending();
    c.set_scores(&pending, &[0.9, 0.7]);
    assert_eq!(c.get(&id("a")).unwrap().score, 0.9);
    assert_eq!(c.get(&id("b")).unwrap().score, 0.0);
}

#[test]
fn onset_is_the_start_of_the_run_above_the_level() {
    let mut c = Cache::new(10, 10);
    for (t, score) in [(1, 0.1), (2, 0.9), (3, 0.95), (4, 0.8)] {
        c.push(&id("a"), t, 1.0, 100, 10).unwrap();
        let p = c.take_pending();
        c.set_scores(&p, &[score]);
    }
    // An unscored point after the run does not end it.
    c.push(&id("a"), 5, 1.0, 100, 10).unwrap();
    assert_eq!(c.onset(&id("a"), 0.5), Some(2));
    assert_eq!(
        c.onset(&id("a"), 0.85),
        None,
        "the newest scored point is below"
    );
    assert_eq!(c.onset(&id("b"), 0.5), None);
}

#[test]
fn every_point_is_taken_for_the_uplink_once_and_ring_losses_are_counted() {
    let mut c = Cache::new(10, 3);
    c.push(&id("a"), 1, 1.0, 100, 10).unwrap();
    c.push(&id("a"), 2, 2.0, 100, 10).unwrap();
    c.push(&id("b"), 1, 5.0, 100, 10).unwrap();
    let pending = c.take_pending();
    c.set_scores(&pending, &[0.5, 0.25]);
    let u = c.take_unsent();
    let got: Vec<(String, i64, bool)> = u
        .points
        .iter()
        .map(|(s, p)| (s.metric.clone(), p.ts_ms, p.scored))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), 1, false),
            ("a".into(), 2, true),
            ("b".into(), 1, true)
        ]
    );
    assert_eq!(u.lost, 0);
    assert!(c.take_unsent().points.is_empty());
    for t in 3..8 {
        c.push(&id("a"), t, 0.0, 100, 10).unwrap();
    }
    let u = c.take_unsent();
    assert_eq!(u.points.len(), 3);
    assert_eq!(u.lost, 2);
}
