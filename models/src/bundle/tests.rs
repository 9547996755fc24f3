use super::*;

fn series(t: usize) -> f64 {
    ((t as f64) * 0.3).sin() * 4.0 + 10.0 + if t == 150 { 30.0 } else { 0.0 }
}

fn trained() -> Detector {
    let cfg = DetectorConfig {
        train_every_ticks: 10,
        learning_rate: 1e-2,
        ..DetectorConfig::default()
    };
    let mut d = Detector::new(cfg).unwrap();
    for t in 0..200 {
        d.tick(&[Some(series(t)), Some(series(t + 7))]).unwrap();
    }
    assert!(d.train_steps() > 0);
    d
}

fn signed(key: &SecretKey) -> Vec<u8> {
    let mut b = Bundle::of(&trained(), "default", 3, 1, Training::default()).unwrap();
    b.sign(key);
    b.to_bytes().unwrap()
}

#[test]
fn round_trip_scores_identically() {
    let key = SecretKey::generate().unwrap();
    let ring = Keyring::new(vec![key.public()]);
    let bytes = signed(&key);
    let b = Bundle::from_bytes(&bytes).unwrap();
    assert_eq!(b.verify(&ring).unwrap(), key.public().id());
    assert_eq!(b.manifest().version, 3);
    let (mut a, mut c) = (b.detector().unwrap(), b.detector().unwrap());
    assert_eq!(a.model_version(), "default-v3");
    assert_eq!(a.release(), Some(("default", 3)));
    // Same settings and seed, so only the loaded weights can differ.
    let mut untrained = Detector::new(b.manifest().detector.clone()).unwrap();
    let (mut differs, mut scores) = (false, Vec::new());
    for t in 0..200 {
        let row = [Some(series(t))];
        let (sa, sc) = (a.tick(&row).unwrap(), c.tick(&row).unwrap());
        assert_eq!(sa.scores, sc.scores);
        untrained.tick(&row).unwrap();
        differs |= untrained.forecasts() != a.forecasts();
        scores.push(sa.scores[0]);
    }
    assert!(differs, "the loaded weights must be the trained ones");
    assert!(scores[150] > 0.95, "the spike is still flagged");
    // Writing it again gives the same bytes (deterministic archive).
    assert_eq!(b.to_bytes().unwrap(), bytes);
}

#[test]
fn tampering_is_refused_with_its_reason() {
    let key = SecretKey::generate().unwrap();
    let ring = Keyring::new(vec![key.public()]);
    let bytes = signed(&key);
    let reason = |bytes: &[u8]| match Bundle::from_bytes(bytes) {
        Ok(b) => b.verify(&ring).err().map(|e| e.reason()),
        Err(e) => Some(e.reason()),
    };
    assert_eq!(reason(&bytes), None);
    // One byte of the weights changed (tar pads files to 512 bytes, so
    // find the weights' own bytes).
    let weights = Bundle::from_bytes(&bytes).unwrap().files[WEIGHTS].clone();
    let at = bytes
        .windows(weights.len())
        .position(|w| w == weights.as_slice())
        .unwrap();
    let mut changed = bytes.clone();
    changed[at + weights.len() - 1] ^= 1;
    assert_eq!(reason(&changed), Some("tampered"));
    // One byte of the manifest changed: still valid JSON, signature fails.
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let at = text.find("\"version\": 3").unwrap() + 11;
    let mut changed = bytes.clone();
    changed[at] = b'9';
    assert_eq!(reason(&changed), Some("bad_signature"));
    // Signed by a key the verifier does not trust.
    let other = SecretKey::generate().unwrap();
    assert_eq!(reason(&signed(&other)), Some("unknown_key"));
    // A missing file.
    let mut b = Bundle::from_bytes(&bytes).unwrap();
    b.files.remove(WEIGHTS);
    assert_eq!(reason(&b.to_bytes().unwrap()), Some("missing_file"));
    // Unsigned.
    let mut b = Bundle::from_bytes(&bytes).unwrap();
    b.signature = None;
    assert_eq!(reason(&b.to_bytes().unwrap()), Some("unsigned"));
    // Not a bundle at all.
    assert_eq!(reason(b"hello"), Some("malformed"));
    assert_eq!(reason(&bytes[..bytes.len() / 2]), Some("malformed"));
}

#[test]
fn extra_files_are_listed_and_covered() {
    let key = SecretKey::generate().unwrap();
    let ring = Keyring::new(vec![key.public()]);
    let mut b = Bundle::of(&trained(), "default", 1, 1, Training::default()).unwrap();
    b.put("notes.txt", b"hello".to_vec()).unwrap();
    assert!(b.put("../x", vec![]).is_err());
    b.sign(&key);
    let back = Bundle::from_bytes(&b.to_bytes().unwrap()).unwrap();
    back.verify(&ring).unwrap();
    assert!(back.manifest().files.contains_key("notes.txt"));
}
