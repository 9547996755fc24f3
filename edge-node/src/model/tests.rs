use super::*;
use vigil_models::signing::SecretKey;

fn release(version: u64, stage: Stage, bytes: &[u8], chunk: usize) -> Release {
    Release {
        family: "default".into(),
        version,
        stage,
        cohort: vec![],
        sha256: sha256_hex(bytes),
        size: bytes.len() as u64,
        chunk_bytes: chunk as u64,
        chunks: bytes.chunks(chunk).map(sha256_hex).collect(),
        issued_ms: 0,
    }
}

fn sign(key: &SecretKey, r: &Release) -> SignedRelease {
    SignedRelease::sign(r, key).unwrap()
}

fn models(key: &SecretKey, dir: &Path) -> Models {
    let cfg = ModelConfig {
        window: 2,
        ..ModelConfig::default()
    };
    Models::open(cfg, Keyring::new(vec![key.public()]), "s/e", dir).0
}

#[test]
fn fetches_in_windows_checks_chunks_and_resumes() {
    let key = SecretKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut m = models(&key, dir.path());
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let r = release(4, Stage::Promoted, &bytes, 300);
    let Next::Ask(req) = m.on_release(&sign(&key, &r), 0).unwrap() else {
        panic!("expected a request")
    };
    assert_eq!((req.version, req.chunks.clone()), (4, vec![0, 1]));
    // The same release again (retained, re-delivered): no second transfer.
    assert_eq!(m.on_release(&sign(&key, &r), 1).unwrap(), Next::Idle);
    let c: Vec<&[u8]> = bytes.chunks(300).collect();
    assert_eq!(m.on_chunk(4, 0, b"garbage", 2), Next::Idle);
    assert_eq!(m.counts.bad, 1);
    assert_eq!(m.on_chunk(4, 0, c[0], 3), Next::Idle);
    assert_eq!(m.on_chunk(4, 0, c[0], 3), Next::Idle);
    assert_eq!(m.counts.duplicate, 1);
    // Chunk 1 is lost (broker restart): after retry_ms only it is asked again.
    assert_eq!(m.poll(500), Next::Idle);
    let Next::Ask(again) = m.poll(1003) else {
        panic!("expected a retry")
    };
    assert_eq!(again.chunks, vec![1, 2]);
    assert_eq!(m.on_chunk(4, 1, c[1], 1100), Next::Idle);
    let Next::Ask(last) = m.on_chunk(4, 2, c[2], 1100) else {
        panic!("expected the next window")
    };
    assert_eq!(last.chunks, vec![3]);
    let Next::Install {
        release,
        bytes: got,
    } = m.on_chunk(4, 3, c[3], 1200)
    else {
        panic!("expected the bundle")
    };
    assert_eq!((release.version, got), (4, bytes));
    assert_eq!(m.counts.stored, 4);
}

#[test]
fn refuses_bad_signatures_older_versions_and_ignores_other_cohorts() {
    let key = SecretKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut m = models(&key, dir.path());
    m.resumed(5);
    let bytes = b"bundle".to_vec();
    let other = SecretKey::generate().unwrap();
    let e = m
        .on_release(&sign(&other, &release(6, Stage::Promoted, &bytes, 4)), 0)
        .unwrap_err();
    assert_eq!(e.reason(), "bad_signature");
    let mut tampered = sign(&key, &release(6, Stage::Canary, &bytes, 4));
    tampered.release = tampered.release.replace("\"canary\"", "\"promoted\"");
    assert_eq!(
        m.on_release(&tampered, 0).unwrap_err().reason(),
        "bad_signature"
    );
    let e = m
        .on_release(&sign(&key, &release(3, Stage::Promoted, &bytes, 4)), 0)
        .unwrap_err();
    assert_eq!(
        e,
        Refusal::Older {
            offered: 3,
            running: 5
        }
    );
    // A canary for other nodes is not for this one.
    let mut canary = release(6, Stage::Canary, &bytes, 4);
    canary.cohort = vec!["s/other".into()];
    assert_eq!(m.on_release(&sign(&key, &canary), 0).unwrap(), Next::Idle);
    canary.cohort.push("s/e".into());
    assert!(matches!(
        m.on_release(&sign(&key, &canary), 0).unwrap(),
        Next::Ask(_)
    ));
    // A signed rollback to an older version is taken.
    assert!(matches!(
        m.on_release(&sign(&key, &release(3, Stage::Rollback, &bytes, 4)), 0)
            .unwrap(),
        Next::Ask(_)
    ));
    // Without trusted keys nothing is taken.
    let mut none = Models::open(
        ModelConfig::default(),
        Keyring::default(),
        "s/e",
        dir.path(),
    )
    .0;
    let r = sign(&key, &release(9, Stage::Promoted, &bytes, 4));
    assert_eq!(
        none.on_release(&r, 0).unwrap_err().reason(),
        "bad_signature"
    );
}

#[test]
fn keeps_the_previous_bundle_for_rollback() {
    let key = SecretKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = vigil_models::Detector::new(Default::default()).unwrap();
    let bundle = |v| {
        let mut b =
            vigil_models::bundle::Bundle::of(&d, "default", v, 0, Default::default()).unwrap();
        b.sign(&key);
        b.to_bytes().unwrap()
    };
    let (b1, b2) = (bundle(1), bundle(2));
    let mut m = models(&key, dir.path());
    m.installed(1, &b1).unwrap();
    m.installed(2, &b2).unwrap();
    assert_eq!(m.running(), Some(2));
    // A rollback to 1 needs no transfer: the previous bundle is at hand.
    let r = release(1, Stage::Rollback, &b1, 1 << 20);
    let Next::Install { bytes, .. } = m.on_release(&sign(&key, &r), 0).unwrap() else {
        panic!("expected an immediate install")
    };
    assert_eq!(bytes, b1);
    // And both survive a restart.
    let (again, current) = Models::open(
        ModelConfig::default(),
        Keyring::new(vec![key.public()]),
        "s/e",
        dir.path(),
    );
    assert_eq!(current, Some(b2));
    assert_eq!(again.previous.map(|p| p.0), Some(1));
    // A rollback to no release at all (the first release was bad).
    let mut none = release(0, Stage::Rollback, &[], 4);
    none.chunks.clear();
    assert_eq!(m.on_release(&sign(&key, &none), 0).unwrap(), Next::Reset);
    m.reset().unwrap();
    assert_eq!(m.running(), None);
    assert!(!dir.path().join(CURRENT).exists());
    assert_eq!(m.previous.map(|p| p.0), Some(2));
}
