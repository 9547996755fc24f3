use super::*;

fn read_all(dir: &Path, from: u64) -> (Vec<(String, Vec<u8>)>, Replayed) {
    let mut got = Vec::new();
    let r = replay(dir, from, |t, p| got.push((t.to_string(), p.to_vec()))).unwrap();
    (got, r)
}

#[test]
fn committed_records_replay_in_order_from_a_segment_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), 1).unwrap();
    assert_eq!(wal.segment(), 1);
    let mut buf = Vec::new();
    append(&mut buf, "a/1", b"one");
    append(&mut buf, "a/2", b"");
    wal.commit(&buf).unwrap();
    assert_eq!(wal.rotate().unwrap(), 2);
    let mut buf = Vec::new();
    append(&mut buf, "b/1", b"three");
    wal.commit(&buf).unwrap();
    let (all, r) = read_all(dir.path(), 0);
    let topics: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["a/1", "a/2", "b/1"]);
    assert_eq!(all[0].1, b"one");
    assert_eq!(
        r,
        Replayed {
            records: 3,
            torn: vec![]
        }
    );
    let (later, _) = read_all(dir.path(), 2);
    assert_eq!(later.len(), 1);
    assert_eq!(Wal::remove_below(dir.path(), 2).unwrap(), 1);
    assert_eq!(segments(dir.path()).unwrap(), [2]);
    // Reopening never appends to what may be replayed.
    drop(wal);
    assert_eq!(Wal::open(dir.path(), 0).unwrap().segment(), 3);
    assert_eq!(Wal::open(dir.path(), 9).unwrap().segment(), 9);
}

#[test]
fn a_torn_or_corrupt_tail_ends_its_segment_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), 1).unwrap();
    let mut buf = Vec::new();
    append(&mut buf, "t", b"kept");
    append(&mut buf, "t", b"torn away");
    wal.commit(&buf[..buf.len() - 3]).unwrap();
    wal.rotate().unwrap();
    let mut buf = Vec::new();
    append(&mut buf, "t", b"next segment");
    wal.commit(&buf).unwrap();
    wal.rotate().unwrap();
    let mut bad = Vec::new();
    append(&mut bad, "t", b"flipped");
    let last = bad.len() - 1;
    bad[last] ^= 1;
    wal.commit(&bad).unwrap();
    let (all, r) = read_all(dir.path(), 0);
    let payloads: Vec<&[u8]> = all.iter().map(|(_, p)| p.as_slice()).collect();
    assert_eq!(payloads, [b"kept".as_slice(), b"next segment"]);
    assert_eq!(r.torn, [1, 3]);
    // Garbage lengths are refused, not allocated.
    assert!(record(&[0xff; 16]).is_none());
    assert!(record(&[]).is_none());
}

#[test]
fn a_missing_folder_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (all, r) = read_all(&dir.path().join("none"), 0);
    assert!(all.is_empty());
    assert_eq!(r, Replayed::default());
}
