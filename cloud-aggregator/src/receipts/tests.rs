use super::*;

fn seq(n: u64, floor: u64) -> Seq {
    Seq {
        stream: "s1".into(),
        n,
        floor,
    }
}

fn acked(r: &mut Receipts) -> Vec<u64> {
    r.take_receipts()
        .into_iter()
        .flat_map(|(_, a)| a.seqs)
        .collect()
}

#[test]
fn each_number_is_stored_once_and_receipted_only_after_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receipts.json");
    let (mut r, problem) = Receipts::open(&path);
    assert!(problem.is_none());
    assert_eq!(r.admit("a", &seq(1, 1), 0), Intake::New);
    assert_eq!(r.admit("a", &seq(2, 1), 0), Intake::New);
    // Sent again before the commit: not stored twice, no receipt yet.
    assert_eq!(r.admit("a", &seq(1, 1), 0), Intake::Duplicate);
    assert!(r.take_receipts().is_empty());
    assert_eq!(r.pending(), 2);
    let sealed = r.seal();
    assert_eq!(r.pending(), 0);
    // While the commit is written: still a duplicate, still no receipt.
    assert_eq!(r.admit("a", &seq(2, 1), 0), Intake::Duplicate);
    assert_eq!(r.admit("a", &seq(3, 1), 0), Intake::New);
    assert!(r.take_receipts().is_empty());
    r.committed(sealed);
    let acks = r.take_receipts();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].0, "a");
    assert_eq!(acks[0].1.seqs, vec![1, 2]);
    // A receipt was lost and the edge sends 2 again: receipt only.
    assert_eq!(r.admit("a", &seq(2, 1), 0), Intake::Duplicate);
    assert_eq!(acked(&mut r), [2]);
    // A failed commit: its numbers wait for the next one, unreceipted.
    let failed = r.seal();
    r.uncommitted(failed);
    assert!(r.take_receipts().is_empty());
    assert_eq!(r.pending(), 1);
    let again = r.seal();
    r.committed(again);
    assert_eq!(acked(&mut r), [3]);
    // A receipt the broker had no room for is owed again.
    r.owe(&UplinkAck {
        stream: "s1".into(),
        seqs: vec![3],
    });
    assert_eq!(acked(&mut r), [3]);
    // Another stream numbers on its own.
    let other = Seq {
        stream: "s2".into(),
        n: 1,
        floor: 1,
    };
    assert_eq!(r.admit("b", &other, 0), Intake::New);
}

#[test]
fn a_checkpoint_counts_everything_admitted_and_names_the_log_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receipts.json");
    let (mut r, _) = Receipts::open(&path);
    r.admit("a", &seq(1, 1), 0);
    let sealed = r.seal();
    r.committed(sealed);
    r.admit("a", &seq(2, 1), 0);
    let in_flight = r.seal();
    r.admit("a", &seq(3, 1), 0);
    Receipts::save_checkpoint(&path, &r.checkpoint(7)).unwrap();
    drop((r, in_flight));
    let (mut r, problem) = Receipts::open(&path);
    assert!(problem.is_none());
    assert_eq!(r.wal_from(), 7);
    for n in 1..=3 {
        assert_eq!(r.admit("a", &seq(n, 1), 0), Intake::Duplicate, "{n}");
    }
    assert_eq!(acked(&mut r), [1, 2, 3]);
    // The sender forgot everything below 3: the state shrinks.
    assert_eq!(r.admit("a", &seq(4, 3), 0), Intake::New);
    assert_eq!(r.admit("a", &seq(1, 3), 0), Intake::Duplicate);
    assert_eq!(
        r.streams["s1"].stored.iter().copied().collect::<Vec<_>>(),
        vec![3]
    );
}

#[test]
fn replayed_messages_are_stored_and_receipted() {
    let mut r = Receipts::default();
    r.replayed("a", &seq(5, 1), 0);
    r.replayed("a", &seq(5, 1), 0);
    assert_eq!(r.admit("a", &seq(5, 1), 0), Intake::Duplicate);
    assert_eq!(acked(&mut r), [5]);
    assert_eq!(r.pending(), 0);
}

#[test]
fn older_files_and_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receipts.json");
    // Before the log, the file held the streams alone.
    std::fs::write(
        &path,
        r#"{"s1":{"site":"a","floor":1,"stored":[1,2],"last_ms":0}}"#,
    )
    .unwrap();
    let (mut r, problem) = Receipts::open(&path);
    assert!(problem.is_none());
    assert_eq!(r.wal_from(), 0);
    assert_eq!(r.admit("a", &seq(2, 1), 0), Intake::Duplicate);
    std::fs::write(&path, "{not json").unwrap();
    let (mut r, problem) = Receipts::open(&path);
    assert!(problem.unwrap().contains("not a receipts file"));
    assert_eq!(r.admit("a", &seq(1, 1), 0), Intake::New);
}

#[test]
fn merging_a_dead_member_s_receipts_keeps_its_stored_numbers_duplicates() {
    let (mut dead, _) = Receipts::open(std::path::Path::new("/nonexistent"));
    assert_eq!(dead.admit("a", &seq(5, 3), 0), Intake::New);
    let sealed = dead.seal();
    dead.committed(sealed);
    let (mut mine, _) = Receipts::open(std::path::Path::new("/nonexistent"));
    assert_eq!(mine.admit("a", &seq(7, 4), 0), Intake::New);
    mine.merge(dead);
    // What the dead member stored is a duplicate here now; below the
    // higher floor too; a new number is new.
    assert_eq!(mine.admit("a", &seq(5, 4), 0), Intake::Duplicate);
    assert_eq!(mine.admit("a", &seq(3, 4), 0), Intake::Duplicate);
    assert_eq!(mine.admit("a", &seq(7, 4), 0), Intake::Duplicate);
    assert_eq!(mine.admit("a", &seq(8, 4), 0), Intake::New);
}
