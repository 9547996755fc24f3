//! The model bundle: one file, a plain tar archive (so `tar tf` lists it)
//! holding `manifest.json` (family, version, architecture, detector settings
//! with normalisation and threshold parameters, training-data summary, and
//! the sha256 of every other file), `weights.safetensors` (keys as in the
//! model's struct tree), any further listed files, and `signature.json`: an
//! ed25519 signature over the exact bytes of `manifest.json`. Since the
//! manifest names every file's hash, the one signature covers the bundle.

use crate::signing::{Keyring, SecretKey, SignError, Signature};
use crate::{Detector, DetectorConfig, ModelError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;

/// Format tag written into every manifest.
pub const FORMAT: &str = "vigil-model-bundle/2";
/// The weights file.
pub const WEIGHTS: &str = "weights.safetensors";
/// The manifest file.
pub const MANIFEST: &str = "manifest.json";
/// The signature file.
pub const SIGNATURE: &str = "signature.json";
/// Most files a bundle may hold.
const MAX_FILES: usize = 64;

/// What the manifest says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Model family: edges follow the releases of one family.
    pub family: String,
    /// Release number, increasing within the family.
    pub version: u64,
    /// When the bundle was made, Unix ms.
    pub created_ms: i64,
    /// Layer shapes.
    pub architecture: Architecture,
    /// How values are normalised before the LSTM sees them.
    pub normalisation: Normalisation,
    /// Detector settings: normalisation rates, scoring and threshold.
    pub detector: DetectorConfig,
    /// How the weights were trained, and on what.
    pub training: Training,
    /// sha256 (hex) of each file in the bundle but this manifest and the signature.
    pub files: BTreeMap<String, String>,
}

/// Layer shapes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// `lstm-forecaster`.
    pub kind: String,
    /// Inputs per step.
    pub inputs: usize,
    /// Hidden units.
    pub hidden: usize,
}

/// The normalisation scheme, for readers of the manifest; its rates and
/// floors are the detector settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalisation {
    /// What is computed.
    pub scheme: String,
    /// Normalised values are clipped to ±this.
    pub clip: f32,
}

impl Default for Normalisation {
    fn default() -> Self {
        Self {
            scheme: "per series: (value - level) / mean absolute deviation; online at the edge, \
                     from the training window in the cloud"
                .into(),
            clip: 10.0,
        }
    }
}

/// Training summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Training {
    /// Optimiser steps taken.
    pub steps: u64,
    /// Loss of the last step.
    pub last_loss: Option<f32>,
    /// Forecast loss on the held-back window.
    pub holdout_loss: Option<f32>,
    /// Samples trained on.
    pub samples: u64,
    /// Series trained on.
    pub series: u64,
    /// Sites the data came from.
    pub sites: Vec<String>,
    /// First and last sample time, Unix ms.
    pub from_ms: Option<i64>,
    /// Last sample time, Unix ms.
    pub to_ms: Option<i64>,
    /// Release the training started from.
    pub base_version: Option<u64>,
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not a readable bundle.
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// A listed file is missing.
    #[error("the manifest lists {0}, which the bundle lacks")]
    MissingFile(String),
    /// A file's content does not match its hash, or is not listed.
    #[error("{0}")]
    Tampered(String),
    /// The signature is absent, unknown or wrong.
    #[error("signature: {0}")]
    Signature(#[from] SignError),
    /// The weights do not build the model.
    #[error("model: {0}")]
    Model(#[from] ModelError),
}

impl BundleError {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            BundleError::Malformed(_) => "malformed",
            BundleError::MissingFile(_) => "missing_file",
            BundleError::Tampered(_) => "tampered",
            BundleError::Signature(SignError::Unsigned) => "unsigned",
            BundleError::Signature(SignError::UnknownKey(_)) => "unknown_key",
            BundleError::Signature(_) => "bad_signature",
            BundleError::Model(_) => "model",
        }
    }
}

/// sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A bundle in memory.
#[derive(Clone, Debug)]
pub struct Bundle {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    files: BTreeMap<String, Vec<u8>>,
    signature: Option<Signature>,
}

impl Bundle {
    /// An unsigned bundle of `detector`'s weights and settings.
    pub fn of(
        detector: &Detector,
        family: &str,
        version: u64,
        created_ms: i64,
        mut training: Training,
    ) -> Result<Self, BundleError> {
        training.steps = detector.train_steps();
        training.last_loss = training.last_loss.or(detector.last_loss());
        let manifest = Manifest {
            format: FORMAT.into(),
            family: family.into(),
            version,
            created_ms,
            architecture: Architecture {
                kind: "lstm-forecaster".into(),
                inputs: 1,
                hidden: detector.config().hidden,
            },
            normalisation: Normalisation::default(),
            detector: detector.config().clone(),
            training,
            files: BTreeMap::new(),
        };
        let mut b = Self {
            manifest,
            manifest_bytes: Vec::new(),
            files: BTreeMap::new(),
            signature: None,
        };
        b.put(WEIGHTS, detector.weights_bytes()?)?;
        Ok(b)
    }

    /// Adds (or replaces) a file, lists its hash and drops any signature.
    pub fn put(&mut self, name: &str, bytes: Vec<u8>) -> Result<(), BundleError> {
        if !plain_name(name) || name == MANIFEST || name == SIGNATURE {
            return Err(BundleError::Malformed(format!("bad file name {name:?}")));
        }
        self.manifest
            .files
            .insert(name.to_string(), sha256_hex(&bytes));
        self.files.insert(name.to_string(), bytes);
        self.reseal()
    }

    /// Changes the release number (drops any signature).
    pub fn set_version(&mut self, version: u64) -> Result<(), BundleError> {
        self.manifest.version = version;
        self.reseal()
    }

    fn reseal(&mut self) -> Result<(), BundleError> {
        self.manifest_bytes = serde_json::to_vec_pretty(&self.manifest)
            .map_err(|e| BundleError::Malformed(e.to_string()))?;
        self.signature = None;
        Ok(())
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The signature, if signed.
    pub fn signature(&self) -> Option<&Signature> {
        self.signature.as_ref()
    }

    /// Names and sizes of the files (manifest and signature included).
    pub fn listing(&self) -> Vec<(String, usize)> {
        let mut v = vec![(MANIFEST.to_string(), self.manifest_bytes.len())];
        v.extend(self.files.iter().map(|(k, b)| (k.clone(), b.len())));
        v
    }

    /// Signs the manifest with `key`.
    pub fn sign(&mut self, key: &SecretKey) {
        self.signature = Some(key.sign(&self.manifest_bytes));
    }

    /// The bundle file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BundleError> {
        let io = |e: std::io::Error| BundleError::Malformed(e.to_string());
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |name: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            tar.append_data(&mut h, name, bytes)
        };
        add(MANIFEST, &self.manifest_bytes).map_err(io)?;
        for (name, bytes) in &self.files {
            add(name, bytes).map_err(io)?;
        }
        if let Some(sig) = &self.signature {
            let text =
                serde_json::to_vec(sig).map_err(|e| BundleError::Malformed(e.to_string()))?;
            add(SIGNATURE, &text).map_err(io)?;
        }
        tar.into_inner().map_err(io)
    }

    /// Reads a bundle file's structure: the manifest must parse and name this
    /// format; hashes and signature are checked by [`Self::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BundleError> {
        let bad = |what: String| BundleError::Malformed(what);
        let mut archive = tar::Archive::new(bytes);
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
            let mut entry = entry.map_err(|e| bad(e.to_string()))?;
            if !entry.header().entry_type().is_file() {
                return Err(bad("an entry is not a plain file".into()));
            }
            let name = entry
                .path()
                .map_err(|e| bad(e.to_string()))?
                .to_string_lossy()
                .into_owned();
            if !plain_name(&name) {
                return Err(bad(format!("bad file name {name:?}")));
            }
            if files.len() >= MAX_FILES {
                return Err(bad(format!("more than {MAX_FILES} files")));
            }
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("{name}: {e}")))?;
            if files.insert(name.clone(), data).is_some() {
                return Err(bad(format!("{name} appears twice")));
            }
        }
        let manifest_bytes = files
            .remove(MANIFEST)
            .ok_or_else(|| BundleError::MissingFile(MANIFEST.into()))?;
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
        if manifest.format != FORMAT {
            return Err(bad(format!(
                "format {:?}, expected {FORMAT:?}",
                manifest.format
            )));
        }
        let signature = match files.remove(SIGNATURE) {
            Some(s) => {
                Some(serde_json::from_slice(&s).map_err(|e| bad(format!("{SIGNATURE}: {e}")))?)
            }
            None => None,
        };
        Ok(Self {
            manifest,
            manifest_bytes,
            files,
            signature,
        })
    }

    /// Checks that every listed file is there with its hash, that nothing
    /// unlisted rides along, and that the architecture matches the settings.
    pub fn check_files(&self) -> Result<(), BundleError> {
        for (name, want) in &self.manifest.files {
            let bytes = self
                .files
                .get(name)
                .ok_or_else(|| BundleError::MissingFile(name.clone()))?;
            let got = sha256_hex(bytes);
            if &got != want {
                return Err(BundleError::Tampered(format!(
                    "{name}: sha256 {got} does not match the manifest's {want}"
                )));
            }
        }
        if let Some(extra) = self
            .files
            .keys()
            .find(|k| !self.manifest.files.contains_key(*k))
        {
            return Err(BundleError::Tampered(format!(
                "{extra} is not listed in the manifest"
            )));
        }
        if !self.manifest.files.contains_key(WEIGHTS) {
            return Err(BundleError::MissingFile(WEIGHTS.into()));
        }
        let a = &self.manifest.architecture;
        if a.hidden != self.manifest.detector.hidden || a.inputs != 1 {
            return Err(BundleError::Malformed(
                "architecture does not match the detector settings".into(),
            ));
        }
        Ok(())
    }

    /// Checks files and signature against `keys`; returns the signing key's id.
    pub fn verify(&self, keys: &Keyring) -> Result<String, BundleError> {
        self.check_files()?;
        let sig = self.signature.as_ref().ok_or(SignError::Unsigned)?;
        Ok(keys.verify(&self.manifest_bytes, sig)?)
    }

    /// The entity models the bundle carries, if it carries any. Call
    /// [`Self::verify`] first.
    pub fn entities(&self) -> Result<Option<crate::entity::EntitySet>, BundleError> {
        let Some(bytes) = self.files.get(crate::entity::set::FILE) else {
            return Ok(None);
        };
        let set: crate::entity::EntitySet = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::Malformed(format!("{}: {e}", crate::entity::set::FILE)))?;
        set.check().map_err(BundleError::Malformed)?;
        Ok(Some(set))
    }

    /// Adds the entity models (replacing any; drops the signature).
    pub fn put_entities(&mut self, set: &crate::entity::EntitySet) -> Result<(), BundleError> {
        let bytes = serde_json::to_vec(set).map_err(|e| BundleError::Malformed(e.to_string()))?;
        self.put(crate::entity::set::FILE, bytes)
    }

    /// Builds a detector with the bundle's settings and weights (fresh
    /// per-series state), named by its family and version. Call
    /// [`Self::verify`] first.
    pub fn detector(&self) -> Result<Detector, BundleError> {
        let weights = self
            .files
            .get(WEIGHTS)
            .ok_or_else(|| BundleError::MissingFile(WEIGHTS.into()))?;
        let mut d = Detector::new(self.manifest.detector.clone())?;
        d.load_weights_bytes(weights, self.manifest.training.steps)?;
        d.set_release(&self.manifest.family, self.manifest.version);
        Ok(d)
    }
}

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('.')
}

#[cfg(test)]
mod tests;
