//! `vigil keygen` and `vigil model inspect|verify|sign`: offline work on
//! keys and bundle files.

use anyhow::Context;
use std::fmt::Write as _;
use std::path::Path;
use vigil_models::bundle::{sha256_hex, Bundle};
use vigil_models::signing::{Keyring, SecretKey};

/// Writes `<dir>/<name>.key` (secret, mode 0600) and `<dir>/<name>.pub`;
/// refuses to overwrite a key unless `force`. Returns the public key's id.
pub fn keygen(dir: &Path, name: &str, force: bool) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (secret, public) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    if !force && (secret.exists() || public.exists()) {
        anyhow::bail!(
            "{} or {} exists; pass --force to replace it (edges trusting the old key will refuse new releases)",
            secret.display(),
            public.display()
        );
    }
    let key = SecretKey::generate()?;
    key.write_pair(&secret)
        .with_context(|| format!("writing {} and {}", secret.display(), public.display()))?;
    Ok(key.public().id())
}

fn read(file: &Path) -> anyhow::Result<(Vec<u8>, Bundle)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let b = Bundle::from_bytes(&bytes).with_context(|| file.display().to_string())?;
    Ok((bytes, b))
}

/// A readable summary of a bundle (its files are checked, the signature is
/// only named: `verify` checks it).
pub fn inspect(file: &Path) -> anyhow::Result<String> {
    let (bytes, b) = read(file)?;
    let m = b.manifest();
    let mut s = String::new();
    writeln!(
        s,
        "{}: {} bytes, sha256 {}",
        file.display(),
        bytes.len(),
        sha256_hex(&bytes)
    )?;
    writeln!(
        s,
        "  family {}  version {}  format {}",
        m.family, m.version, m.format
    )?;
    writeln!(
        s,
        "  architecture {} (inputs {}, hidden {})",
        m.architecture.kind, m.architecture.inputs, m.architecture.hidden
    )?;
    writeln!(
        s,
        "  normalisation: {} (clip ±{})",
        m.normalisation.scheme, m.normalisation.clip
    )?;
    writeln!(
        s,
        "  threshold {}  level_z {}  z_scale {}",
        m.detector.threshold, m.detector.level_z, m.detector.z_scale
    )?;
    let t = &m.training;
    writeln!(
        s,
        "  training: {} steps, last loss {:?}, held-back loss {:?}, {} samples of {} series from {} site(s), base v{:?}",
        t.steps,
        t.last_loss,
        t.holdout_loss,
        t.samples,
        t.series,
        t.sites.len(),
        t.base_version
    )?;
    for (name, size) in b.listing() {
        writeln!(s, "  file {name} ({size} bytes)")?;
    }
    writeln!(
        s,
        "  files: {}",
        match b.check_files() {
            Ok(()) => "every hash matches the manifest".to_string(),
            Err(e) => format!("REFUSED: {e}"),
        }
    )?;
    match b.signature() {
        Some(sig) => writeln!(s, "  signed by key {}", sig.key_id)?,
        None => writeln!(s, "  not signed")?,
    }
    Ok(s)
}

/// Checks files and signature against `keys` (keys or key files).
pub fn verify(file: &Path, keys: &[String]) -> anyhow::Result<String> {
    let ring = Keyring::load(keys).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
    anyhow::ensure!(!ring.is_empty(), "give at least one --key");
    let (_, b) = read(file)?;
    let id = b
        .verify(&ring)
        .with_context(|| format!("{} is refused", file.display()))?;
    Ok(format!(
        "{}: {}-v{} verified (signed by key {id})",
        file.display(),
        b.manifest().family,
        b.manifest().version
    ))
}

/// Signs a bundle with `key`, writing it to `out` (default: in place).
pub fn sign(file: &Path, key: &Path, out: Option<&Path>) -> anyhow::Result<String> {
    let secret = SecretKey::read(key)?;
    let (_, mut b) = read(file)?;
    b.check_files().with_context(|| {
        format!(
            "{} does not match its manifest; not signing it",
            file.display()
        )
    })?;
    b.sign(&secret);
    let to = out.unwrap_or(file);
    std::fs::write(to, b.to_bytes()?).with_context(|| format!("writing {}", to.display()))?;
    Ok(format!(
        "{} signed by key {}",
        to.display(),
        secret.public().id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_models::{bundle::Training, Detector, DetectorConfig};

    #[test]
    fn keygen_sign_verify_inspect() {
        let dir = tempfile::tempdir().unwrap();
        let id = keygen(dir.path(), "k", false).unwrap();
        assert!(
            keygen(dir.path(), "k", false).is_err(),
            "no silent overwrite"
        );
        let d = Detector::new(DetectorConfig::default()).unwrap();
        let file = dir.path().join("m.vmb");
        let b = Bundle::of(&d, "default", 4, 0, Training::default()).unwrap();
        std::fs::write(&file, b.to_bytes().unwrap()).unwrap();
        let pubkey = dir.path().join("k.pub").display().to_string();
        assert!(
            verify(&file, std::slice::from_ref(&pubkey)).is_err(),
            "unsigned"
        );
        sign(&file, &dir.path().join("k.key"), None).unwrap();
        let ok = verify(&file, std::slice::from_ref(&pubkey)).unwrap();
        assert!(ok.contains(&id), "{ok}");
        let text = inspect(&file).unwrap();
        assert!(text.contains("family default  version 4"), "{text}");
        assert!(text.contains(&format!("signed by key {id}")), "{text}");
        // One byte of the weights changed: inspect says so, verify refuses.
        let mut bytes = std::fs::read(&file).unwrap();
        let at = bytes.len() / 2; // inside the weights
        bytes[at] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let e = format!("{:#}", verify(&file, &[pubkey]).unwrap_err());
        assert!(e.contains("sha256") || e.contains("malformed"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("k.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
