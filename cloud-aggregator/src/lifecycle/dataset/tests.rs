use super::*;
use crate::store::Store;
use vigil_core::message::ScoredSample;
use vigil_core::EntityId;

/// A part as written before parts held every site: under `site=…`, no
/// `site` column.
fn legacy_part(root: &Path, site: &str, values: &[f64]) {
    let dir = root.join(format!("samples/site={site}/hour=1970-01-01T00"));
    std::fs::create_dir_all(&dir).unwrap();
    let n = values.len();
    let mut df = DataFrame::new(
        n,
        vec![
            Column::new("entity".into(), vec!["host/old"; n]),
            Column::new("metric".into(), vec!["cpu"; n]),
            Column::new("ts_ms".into(), (0..n as i64).collect::<Vec<_>>()),
            Column::new("value".into(), values),
        ],
    )
    .unwrap();
    let file = std::fs::File::create(dir.join("part-1.parquet")).unwrap();
    ParquetWriter::new(file).finish(&mut df).unwrap();
}

#[test]
fn reads_shared_parts_and_older_per_site_parts_by_site() {
    let dir = tempfile::tempdir().unwrap();
    legacy_part(dir.path(), "old", &[1.0, 2.0]);
    let mut store = Store::new(dir.path());
    let s = |v: f64| ScoredSample {
        entity: EntityId::host("new"),
        metric: "cpu".into(),
        ts_ms: 5,
        value: v,
        score: None,
    };
    store.add_samples("a", &[s(3.0)]);
    store.add_samples("b", &[s(4.0), s(5.0)]);
    assert!(store.flush(1).errors.is_empty());
    let count = |sites: &[&str]| {
        let q = Query {
            sites: sites.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let d = load(dir.path(), &q).unwrap();
        (d.samples, d.sites)
    };
    assert_eq!(count(&[]), (5, vec!["a".into(), "b".into(), "old".into()]));
    assert_eq!(count(&["old"]), (2, vec!["old".into()]));
    assert_eq!(count(&["b", "old"]), (4, vec!["b".into(), "old".into()]));
    assert_eq!(count(&["a"]), (1, vec!["a".into()]));
}
