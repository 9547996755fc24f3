//! ed25519 keys and signatures: model bundles and releases (the cloud's
//! key), remediation commands (the edge's key).
//!
//! Key files are one line of text: `vigil-ed25519-secret:<64 hex>` or
//! `vigil-ed25519-public:<64 hex>`. A key's id is the first 16 hex digits of
//! the sha256 of its public key, so a signature names the key that made it
//! and a verifier holding several keys (rotation) knows which one to use.

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

const SECRET_TAG: &str = "vigil-ed25519-secret:";
const PUBLIC_TAG: &str = "vigil-ed25519-public:";

/// Why a key could not be read or a signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SignError {
    /// The key text is not a key.
    #[error("not a key: {0}")]
    BadKey(String),
    /// No trusted key has the signature's key id.
    #[error("signed by key {0}, which is not among the trusted keys")]
    UnknownKey(String),
    /// The signature does not match the bytes.
    #[error("the signature by key {0} does not verify: the content was changed or signed by another key")]
    Invalid(String),
    /// Nothing was signed.
    #[error("not signed")]
    Unsigned,
}

/// A signing key (keep it secret).
pub struct SecretKey(SigningKey);

/// A public key that verifies signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

/// A detached signature and the id of the key that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Id of the signing key.
    pub key_id: String,
    /// 64 bytes, hex.
    pub signature: String,
}

fn hex32(text: &str, tag: &str) -> Result<[u8; 32], SignError> {
    let t = text.trim();
    let t = t.strip_prefix(tag).unwrap_or(t);
    let bytes = hex::decode(t).map_err(|e| SignError::BadKey(format!("{e}")))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| SignError::BadKey(format!("{} bytes, expected 32", b.len())))
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, SignError> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| SignError::BadKey(format!("no random source: {e}")))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// Parses `vigil-ed25519-secret:<hex>` (the tag is optional).
    pub fn parse(text: &str) -> Result<Self, SignError> {
        Ok(Self(SigningKey::from_bytes(&hex32(text, SECRET_TAG)?)))
    }

    /// Reads a key file.
    pub fn read(path: &Path) -> Result<Self, SignError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SignError::BadKey(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| SignError::BadKey(format!("{}: {e}", path.display())))
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        format!("{SECRET_TAG}{}\n", hex::encode(self.0.to_bytes()))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> Signature {
        Signature {
            key_id: self.public().id(),
            signature: hex::encode(self.0.sign(bytes).to_bytes()),
        }
    }
}

impl PublicKey {
    /// Parses `vigil-ed25519-public:<hex>` (the tag is optional).
    pub fn parse(text: &str) -> Result<Self, SignError> {
        let bytes = hex32(text, PUBLIC_TAG)?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|e| SignError::BadKey(e.to_string()))
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_TAG}{}\n", hex::encode(self.0.to_bytes()))
    }

    /// The key's id: 16 hex digits of the sha256 of the key.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.to_bytes())[..8])
    }
}

impl SecretKey {
    /// Writes the key to `secret` (readable by its owner only) and its
    /// public half to `secret` with the extension `.pub`.
    pub fn write_pair(&self, secret: &Path) -> std::io::Result<std::path::PathBuf> {
        use std::io::Write;
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        open.open(secret)?.write_all(self.to_text().as_bytes())?;
        let public = secret.with_extension("pub");
        std::fs::write(&public, self.public().to_text())?;
        Ok(public)
    }

    /// Reads the key at `path`, or makes one there (with its `.pub`) when
    /// the file does not exist; `true` when it was made now.
    pub fn read_or_create(path: &Path) -> Result<(Self, bool), SignError> {
        if path.exists() {
            return Self::read(path).map(|k| (k, false));
        }
        let key = Self::generate()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| SignError::BadKey(format!("{}: {e}", dir.display())))?;
        }
        key.write_pair(path)
            .map_err(|e| SignError::BadKey(format!("{}: {e}", path.display())))?;
        Ok((key, true))
    }
}

/// The public keys a verifier trusts (several while keys rotate).
#[derive(Clone, Debug, Default)]
pub struct Keyring(Vec<PublicKey>);

impl Keyring {
    /// A keyring of `keys`.
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self(keys)
    }

    /// Reads each entry as a key (`vigil-ed25519-public:…` or bare hex) or
    /// else as the path of a key file; every bad entry is reported.
    pub fn load(entries: &[String]) -> Result<Self, Vec<String>> {
        let (mut keys, mut errors) = (Vec::new(), Vec::new());
        for (i, entry) in entries.iter().enumerate() {
            let looks_inline = entry.starts_with(PUBLIC_TAG)
                || (entry.len() == 64 && entry.chars().all(|c| c.is_ascii_hexdigit()));
            let parsed = if looks_inline {
                PublicKey::parse(entry)
            } else {
                std::fs::read_to_string(entry)
                    .map_err(|e| SignError::BadKey(format!("{entry}: {e}")))
                    .and_then(|t| PublicKey::parse(&t))
            };
            match parsed {
                Ok(k) => keys.push(k),
                Err(e) => errors.push(format!("trusted_keys[{i}]: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(Self(keys))
        } else {
            Err(errors)
        }
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ids of the trusted keys.
    pub fn ids(&self) -> Vec<String> {
        self.0.iter().map(PublicKey::id).collect()
    }

    /// Checks `sig` over `bytes`; returns the id of the key that verified it.
    pub fn verify(&self, bytes: &[u8], sig: &Signature) -> Result<String, SignError> {
        let key = self
            .0
            .iter()
            .find(|k| k.id() == sig.key_id)
            .ok_or_else(|| SignError::UnknownKey(sig.key_id.clone()))?;
        let invalid = || SignError::Invalid(sig.key_id.clone());
        let raw: [u8; 64] = hex::decode(&sig.signature)
            .map_err(|_| invalid())?
            .try_into()
            .map_err(|_| invalid())?;
        key.0
            .verify(bytes, &ed25519_dalek::Signature::from_bytes(&raw))
            .map_err(|_| invalid())?;
        Ok(sig.key_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refuse() {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        let ring = Keyring::new(vec![b.public(), a.public()]);
        let sig = a.sign(b"model");
        assert_eq!(ring.verify(b"model", &sig), Ok(a.public().id()));
        assert_eq!(
            ring.verify(b"modem", &sig),
            Err(SignError::Invalid(sig.key_id.clone()))
        );
        let only_b = Keyring::new(vec![b.public()]);
        assert_eq!(
            only_b.verify(b"model", &sig),
            Err(SignError::UnknownKey(sig.key_id.clone()))
        );
        // A signature claiming a trusted key's id but made by another key.
        let forged = Signature {
            key_id: b.public().id(),
            signature: sig.signature.clone(),
        };
        assert!(matches!(
            ring.verify(b"model", &forged),
            Err(SignError::Invalid(_))
        ));
    }

    #[test]
    fn key_files_round_trip_and_load() {
        let k = SecretKey::generate().unwrap();
        let back = SecretKey::parse(&k.to_text()).unwrap();
        assert_eq!(back.public(), k.public());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pub");
        std::fs::write(&path, k.public().to_text()).unwrap();
        let bare = hex::encode(k.public().0.to_bytes());
        let ring = Keyring::load(&[path.display().to_string(), bare]).unwrap();
        assert_eq!(ring.ids(), vec![k.public().id(), k.public().id()]);
        let errors = Keyring::load(&["/no/such.pub".into(), "abc".into()]).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("trusted_keys[0]"), "{errors:?}");
    }
}
