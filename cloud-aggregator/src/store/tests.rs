use super::*;
use vigil_core::message::ScoredSample;
use vigil_core::EntityId;

fn sample(host: &str, ts: i64, v: f64) -> ScoredSample {
    ScoredSample {
        entity: EntityId::host(host),
        metric: "cpu".into(),
        ts_ms: ts,
        value: v,
        score: Some(0.1),
    }
}

fn column_f64(df: &DataFrame, name: &str) -> Vec<f64> {
    df.column(name)
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

#[test]
fn hours_are_utc_civil() {
    assert_eq!(hour_of(0), "1970-01-01T00");
    assert_eq!(hour_of(1_700_000_000_000), "2023-11-14T22");
    assert_eq!(hour_of(951_782_400_000), "2000-02-29T00");
}

#[test]
fn every_site_shares_a_part_per_hour_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::new(dir.path());
    let batch = [
        sample("h", 0, 1.0),
        sample("h", 1000, 2.0),
        sample("h", 3_600_000, 3.0),
    ];
    store.add_samples("a", &batch);
    store.add_samples("b", &[sample("g", 0, 4.0)]);
    assert_eq!(store.pending_rows(), 4);
    assert!(store.pending_bytes() >= 4 * 36);
    let f = store.flush(7);
    assert!(f.errors.is_empty(), "{:?}", f.errors);
    assert_eq!(f.rows["samples"], 4);
    assert_eq!(f.files.len(), 2, "one part per hour, every site in it");
    assert_eq!(store.pending_rows(), 0);
    let first = dir
        .path()
        .join("samples/hour=1970-01-01T00/part-0000000000007.parquet");
    let df = read(&first).unwrap();
    assert_eq!(df.height(), 3);
    assert_eq!(column_f64(&df, "value"), [1.0, 2.0, 4.0]);
    let site = df.column("site").unwrap().str().unwrap();
    let sites: Vec<&str> = (0..site.len()).filter_map(|i| site.get(i)).collect();
    assert_eq!(sites, ["a", "a", "b"]);
    let entity = df.column("entity").unwrap().str().unwrap().get(2);
    assert_eq!(entity, Some("host/g"));
    assert_eq!(df.column("score").unwrap().f64().unwrap().get(0), Some(0.1));
}

#[test]
fn writing_a_roll_again_replaces_its_parts() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::new(dir.path());
    store.add_samples("a", &[sample("h", 0, 1.0)]);
    store.flush(3);
    // The same roll again, with more (as after a crash, from the log).
    store.add_samples("a", &[sample("h", 0, 1.0), sample("h", 1, 2.0)]);
    store.flush(3);
    let hour = dir.path().join("samples/hour=1970-01-01T00");
    assert_eq!(std::fs::read_dir(&hour).unwrap().count(), 1);
    let df = read(&hour.join("part-0000000000003.parquet")).unwrap();
    assert_eq!(column_f64(&df, "value"), [1.0, 2.0]);
}

#[test]
fn a_failed_roll_keeps_every_row_and_joins_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "not a dir").unwrap();
    let mut failed = Store::new(&blocker);
    failed.add_samples("a", &[sample("h", 0, 1.0)]);
    let anomaly = AnomalyEvent {
        id: "x".into(),
        site: "a".into(),
        entity: EntityId::host("h"),
        score: 2.0,
        top_metric: "cpu".into(),
        contributors: vec![],
        ts_ms: 5,
        model_version: "v".into(),
        entity_score: None,
        root_cause: vec![],
    };
    failed.add_anomaly(&anomaly);
    let f = failed.flush(1);
    assert_eq!(f.errors.len(), 2);
    assert!(f.rows.is_empty() && f.files.is_empty());
    assert_eq!(failed.pending_rows(), 2);
    let mut store = Store::new(dir.path());
    store.add_samples("b", &[sample("g", 1, 2.0)]);
    store.absorb(failed);
    assert_eq!(store.pending_rows(), 3);
    let f = store.flush(1);
    assert!(f.errors.is_empty(), "{:?}", f.errors);
    assert_eq!((f.rows["samples"], f.rows["anomalies"]), (2, 1));
    let part = dir
        .path()
        .join("samples/hour=1970-01-01T00/part-0000000000001.parquet");
    assert_eq!(column_f64(&read(&part).unwrap(), "value"), [2.0, 1.0]);
}
