//! The model bundle: a directory with `weights.safetensors` (the LSTM and
//! head, keys as in the model's struct tree) and `manifest.json`
//! (architecture, detector settings including normalisation and threshold
//! parameters, version, training summary, and the sha256 of every file).
//! Signing and transfer come with the model lifecycle.

use crate::{Detector, DetectorConfig, ModelError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// Format tag written into every manifest.
pub const FORMAT: &str = "vigil-model-bundle/1";
const WEIGHTS: &str = "weights.safetensors";
const MANIFEST: &str = "manifest.json";

/// What the manifest says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Model version.
    pub version: String,
    /// Layer shapes.
    pub architecture: Architecture,
    /// Detector settings: normalisation, scoring and threshold parameters.
    pub detector: DetectorConfig,
    /// How the weights were trained.
    pub training: Training,
    /// sha256 (hex) of each file in the bundle.
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

/// Training summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// Optimiser steps taken.
    pub steps: u64,
    /// Loss of the last step.
    pub last_loss: Option<f32>,
}

fn err(path: &Path, what: impl Into<String>) -> ModelError {
    ModelError::Bundle {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Writes `detector`'s model to the directory `dir` (created if needed).
pub fn save(detector: &Detector, dir: &Path) -> Result<Manifest, ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e.to_string()))?;
    let weights = dir.join(WEIGHTS);
    detector.varmap().save(&weights)?;
    let manifest = Manifest {
        format: FORMAT.into(),
        version: detector.model_version(),
        architecture: Architecture {
            kind: "lstm-forecaster".into(),
            inputs: 1,
            hidden: detector.config().hidden,
        },
        detector: detector.config().clone(),
        training: Training {
            steps: detector.train_steps(),
            last_loss: detector.last_loss(),
        },
        files: BTreeMap::from([(WEIGHTS.to_string(), sha256_file(&weights)?)]),
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| err(dir, e.to_string()))?;
    std::fs::write(dir.join(MANIFEST), text).map_err(|e| err(dir, e.to_string()))?;
    Ok(manifest)
}

/// Reads a bundle, checks every file's sha256, and builds a detector with
/// its settings and weights (fresh per-series state).
pub fn load(dir: &Path) -> Result<(Detector, Manifest), ModelError> {
    let text =
        std::fs::read(dir.join(MANIFEST)).map_err(|e| err(dir, format!("{MANIFEST}: {e}")))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| err(dir, format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT {
        return Err(err(
            dir,
            format!("format {:?}, expected {FORMAT:?}", manifest.format),
        ));
    }
    if manifest.architecture.hidden != manifest.detector.hidden || manifest.architecture.inputs != 1
    {
        return Err(err(
            dir,
            "architecture does not match the detector settings",
        ));
    }
    for (file, want) in &manifest.files {
        let got = sha256_file(&dir.join(file))?;
        if &got != want {
            return Err(err(
                dir,
                format!("{file}: sha256 {got} does not match the manifest's {want}"),
            ));
        }
    }
    if !manifest.files.contains_key(WEIGHTS) {
        return Err(err(dir, format!("the manifest lists no {WEIGHTS}")));
    }
    let mut detector = Detector::new(manifest.detector.clone())?;
    detector.load_weights(&dir.join(WEIGHTS), manifest.training.steps)?;
    Ok((detector, manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(t: usize) -> f64 {
        ((t as f64) * 0.3).sin() * 4.0 + 10.0 + if t == 150 { 30.0 } else { 0.0 }
    }

    #[test]
    fn save_then_load_scores_identically() {
        let cfg = DetectorConfig {
            train_every_ticks: 10,
            learning_rate: 1e-2,
            ..DetectorConfig::default()
        };
        let mut trained = Detector::new(cfg).unwrap();
        for t in 0..200 {
            trained
                .tick(&[Some(series(t)), Some(series(t + 7))])
                .unwrap();
        }
        assert!(trained.train_steps() > 0);
        let dir = tempfile::tempdir().unwrap();
        let manifest = save(&trained, dir.path()).unwrap();
        assert_eq!(manifest.version, trained.model_version());
        let (mut a, _) = load(dir.path()).unwrap();
        let (mut b, back) = load(dir.path()).unwrap();
        assert_eq!(back, manifest);
        assert_eq!(a.model_version(), trained.model_version());
        // Same weights and settings, fresh per-series state: identical scores,
        // and they differ from an untrained model's.
        // Same settings and seed, so only the loaded weights can differ.
        let mut untrained = Detector::new(manifest.detector.clone()).unwrap();
        let (mut differs, mut sa_all) = (false, Vec::new());
        for t in 0..200 {
            let row = [Some(series(t))];
            let (sa, sb) = (a.tick(&row).unwrap(), b.tick(&row).unwrap());
            assert_eq!(sa.scores, sb.scores);
            assert_eq!(a.forecasts(), b.forecasts());
            untrained.tick(&row).unwrap();
            differs |= untrained.forecasts() != a.forecasts();
            sa_all.push(sa.scores[0]);
        }
        assert!(differs, "the loaded weights must be the trained ones");
        assert!(sa_all[150] > 0.95, "the spike is still flagged");
    }

    #[test]
    fn a_changed_byte_is_refused() {
        let d = Detector::new(DetectorConfig::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save(&d, dir.path()).unwrap();
        let w = dir.path().join(WEIGHTS);
        let mut bytes = std::fs::read(&w).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&w, bytes).unwrap();
        let e = load(dir.path()).err().unwrap().to_string();
        assert!(e.contains("sha256"), "{e}");
        std::fs::remove_file(&w).unwrap();
        assert!(load(dir.path()).is_err());
    }
}
