//! The cloud's model releases of one family: bundles kept on disk under
//! `<data_dir>/models/<family>/v<N>.vmb`, signed with the cloud's key; the
//! rollout state (stable release, canary, every transition) kept in
//! `state.json` and `transitions.jsonl` beside them, and the signed release
//! message edges follow.

use super::rollout::{cohort, Canary, Decision};
use super::train::Progress;
use super::{LifecycleMetrics, ModelsConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{info, warn};
use vigil_core::message::{ModelHealth, Release, SignedRelease, Stage};
use vigil_models::bundle::{sha256_hex, Bundle};
use vigil_models::signing::SecretKey;
use vigil_models::Detector;

/// One release's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Release number.
    pub version: u64,
    /// sha256 of the bundle file.
    pub sha256: String,
    /// Bundle size in bytes.
    pub size: u64,
    /// Made, Unix ms.
    pub created_ms: i64,
    /// `trained` or `uploaded`.
    pub source: String,
    /// `candidate`, `canary`, `promoted`, `rolled_back`, `superseded`.
    pub state: String,
}

/// One audited step of the lifecycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// When, Unix ms.
    pub ts_ms: i64,
    /// Release concerned.
    pub version: u64,
    /// `rejected`, `candidate`, `canary`, `promoted`, `rolled_back`.
    pub to: String,
    /// `gate`, `canary`, `operator`, `schedule`.
    pub by: String,
    /// Why.
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Persisted {
    stable: Option<u64>,
    canary: Option<Canary>,
    entries: BTreeMap<u64, Entry>,
    transitions: Vec<Transition>,
    release: Option<SignedRelease>,
    next_version: u64,
}

/// Transitions kept in memory (all are in `transitions.jsonl`).
const KEEP_TRANSITIONS: usize = 1000;

/// The family's releases and rollout.
pub struct Hub {
    cfg: ModelsConfig,
    dir: PathBuf,
    key: Option<SecretKey>,
    p: Persisted,
    bundles: BTreeMap<u64, Arc<Vec<u8>>>,
    metrics: LifecycleMetrics,
    /// The latest training run.
    pub training: Progress,
}

impl Hub {
    /// Opens (or starts) the family's state under `data_dir`.
    pub fn open(
        cfg: ModelsConfig,
        data_dir: &Path,
        metrics: LifecycleMetrics,
    ) -> anyhow::Result<Self> {
        let dir = data_dir.join("models").join(&cfg.family);
        std::fs::create_dir_all(&dir)?;
        let key = match &cfg.signing_key {
            Some(k) => Some(SecretKey::read(k)?),
            None => None,
        };
        let p = match std::fs::read(dir.join("state.json")) {
            Ok(b) => serde_json::from_slice(&b)?,
            Err(_) => Persisted {
                next_version: 1,
                ..Persisted::default()
            },
        };
        let hub = Self {
            cfg,
            dir,
            key,
            p,
            bundles: BTreeMap::new(),
            metrics,
            training: Progress {
                state: "idle".into(),
                ..Progress::default()
            },
        };
        hub.gauges();
        Ok(hub)
    }

    /// The settings.
    pub fn config(&self) -> &ModelsConfig {
        &self.cfg
    }

    /// Whether releases can be signed.
    pub fn can_publish(&self) -> bool {
        self.key.is_some()
    }

    /// The public key edges must trust, when there is a signing key.
    pub fn public_key(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| k.public().to_text().trim().to_string())
    }

    /// The release edges should follow now (retained on the broker).
    pub fn release(&self) -> Option<&SignedRelease> {
        self.p.release.as_ref()
    }

    /// The next release number.
    pub fn next_version(&self) -> u64 {
        self.p.next_version.max(1)
    }

    /// A bundle file's bytes.
    pub fn bytes(&mut self, version: u64) -> Option<Arc<Vec<u8>>> {
        if let Some(b) = self.bundles.get(&version) {
            return Some(b.clone());
        }
        let b = Arc::new(std::fs::read(self.dir.join(format!("v{version}.vmb"))).ok()?);
        self.bundles.insert(version, b.clone());
        Some(b)
    }

    /// The model in force: the stable release, or the first model's settings.
    pub fn stable_detector(&mut self) -> anyhow::Result<Detector> {
        if let Some(v) = self.p.stable {
            if let Some(bytes) = self.bytes(v) {
                return Ok(Bundle::from_bytes(&bytes)?.detector()?);
            }
            warn!(
                version = v,
                "The stable bundle is missing; training from the first model's settings."
            );
        }
        Ok(Detector::new(self.cfg.detector.clone())?)
    }

    /// The entity models the stable release carries, if any.
    pub fn stable_entities(&mut self) -> Option<vigil_models::entity::EntitySet> {
        let bytes = self.bytes(self.p.stable?)?;
        match Bundle::from_bytes(&bytes).and_then(|b| b.entities()) {
            Ok(set) => set,
            Err(e) => {
                warn!(error = %e, "The stable bundle's entity models cannot be read; judging new ones alone.");
                None
            }
        }
    }

    fn save(&mut self) {
        let keep = self.p.transitions.len().saturating_sub(KEEP_TRANSITIONS);
        self.p.transitions.drain(..keep);
        let write = || -> std::io::Result<()> {
            let tmp = self.dir.join("state.json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&self.p)?)?;
            std::fs::rename(&tmp, self.dir.join("state.json"))
        };
        if let Err(e) = write() {
            warn!(error = %e, dir = %self.dir.display(), "Could not save the model state.");
        }
        self.gauges();
    }

    fn gauges(&self) {
        self.metrics.stable.set(self.p.stable.unwrap_or(0) as i64);
        self.metrics
            .canary
            .set(self.p.canary.as_ref().map_or(0, |c| c.version) as i64);
    }

    /// Audits one transition (log, JSONL, metric, API).
    pub fn transition(&mut self, version: u64, to: &str, by: &str, reason: &str, now_ms: i64) {
        let t = Transition {
            ts_ms: now_ms,
            version,
            to: to.into(),
            by: by.into(),
            reason: reason.into(),
        };
        info!(family = %self.cfg.family, version, to, by, reason, "Model transition.");
        self.metrics.transitions.with_label_values(&[to]).inc();
        let line = serde_json::to_string(&t).unwrap_or_default();
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("transitions.jsonl"))
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            warn!(error = %e, "Could not append the model transition.");
        }
        if let Some(e) = self.p.entries.get_mut(&version) {
            if to != "rejected" {
                e.state = to.into();
            }
        }
        self.p.transitions.push(t);
    }

    /// Signs and stores a candidate bundle under the next release number
    /// (an uploaded bundle must already carry a number above every release).
    pub fn add(&mut self, mut bundle: Bundle, source: &str, now_ms: i64) -> anyhow::Result<u64> {
        let key = self.key.as_ref().ok_or_else(|| {
            anyhow::anyhow!("no models.signing_key configured; nothing can be published")
        })?;
        bundle.check_files()?;
        let m = bundle.manifest();
        if m.family != self.cfg.family {
            anyhow::bail!(
                "bundle family {:?}, this cloud releases {:?}",
                m.family,
                self.cfg.family
            );
        }
        let version = if source == "uploaded" {
            if m.version < self.next_version() {
                anyhow::bail!(
                    "bundle version {} is not above the latest release {}",
                    m.version,
                    self.next_version() - 1
                );
            }
            m.version
        } else {
            bundle.set_version(self.next_version())?;
            self.next_version()
        };
        // The cloud signs what it publishes, uploads included.
        bundle.sign(key);
        let bytes = bundle.to_bytes()?;
        let path = self.dir.join(format!("v{version}.vmb"));
        std::fs::write(&path, &bytes)?;
        self.p.entries.insert(
            version,
            Entry {
                version,
                sha256: sha256_hex(&bytes),
                size: bytes.len() as u64,
                created_ms: now_ms,
                source: source.into(),
                state: "candidate".into(),
            },
        );
        self.bundles.insert(version, Arc::new(bytes));
        self.p.next_version = version + 1;
        self.transition(
            version,
            "candidate",
            if source == "uploaded" {
                "operator"
            } else {
                "gate"
            },
            &format!("{source} bundle stored"),
            now_ms,
        );
        self.save();
        Ok(version)
    }

    fn sign_release(
        &mut self,
        version: u64,
        stage: Stage,
        cohort: Vec<String>,
        now_ms: i64,
    ) -> anyhow::Result<SignedRelease> {
        let chunk = self.cfg.chunk_bytes;
        let (sha256, size, chunks) = if version == 0 {
            // A rollback to no release: edges go back to their own model.
            (String::new(), 0, Vec::new())
        } else {
            let bytes = self
                .bytes(version)
                .ok_or_else(|| anyhow::anyhow!("bundle v{version} is missing"))?;
            (
                sha256_hex(&bytes),
                bytes.len() as u64,
                bytes.chunks(chunk).map(sha256_hex).collect(),
            )
        };
        let r = Release {
            family: self.cfg.family.clone(),
            version,
            stage,
            cohort,
            sha256,
            size,
            chunk_bytes: chunk as u64,
            chunks,
            issued_ms: now_ms,
        };
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no models.signing_key configured"))?;
        let signed = SignedRelease::sign(&r, key)?;
        self.p.release = Some(signed.clone());
        Ok(signed)
    }

    /// Starts the canary of `version` on a share of `online` edge nodes.
    pub fn start_canary(
        &mut self,
        version: u64,
        online: &[String],
        now_ms: i64,
    ) -> anyhow::Result<SignedRelease> {
        if online.is_empty() {
            anyhow::bail!("no edge node is online to run a canary");
        }
        if let Some(c) = &self.p.canary {
            anyhow::bail!("release {} is still in canary", c.version);
        }
        let nodes = cohort(online, version, self.cfg.canary.share);
        let signed = self.sign_release(version, Stage::Canary, nodes.clone(), now_ms)?;
        self.p.canary = Some(Canary::new(version, nodes.clone(), now_ms));
        self.transition(
            version,
            "canary",
            "gate",
            &format!(
                "{} of {} online nodes: {}",
                nodes.len(),
                online.len(),
                nodes.join(", ")
            ),
            now_ms,
        );
        self.save();
        Ok(signed)
    }

    /// Counts a heartbeat towards the canary.
    pub fn observe(&mut self, node: &str, release: Option<u64>, health: &ModelHealth, now_ms: i64) {
        let stable = self.p.stable;
        if let Some(c) = self.p.canary.as_mut() {
            c.observe(node, release, stable, health, now_ms);
        }
    }

    /// Lets the canary decide; returns the release to publish when it did.
    pub fn decide(&mut self, now_ms: i64) -> Option<SignedRelease> {
        let decision = self.p.canary.as_ref()?.decide(&self.cfg.canary, now_ms);
        let done = match decision {
            Decision::Wait => return None,
            Decision::Promote(why) => self.promote("canary", &why, now_ms),
            Decision::Rollback(why) => self.rollback("canary", &why, now_ms),
        };
        match done {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, "Canary decision could not be published.");
                None
            }
        }
    }

    /// Promotes the canary release to every node.
    pub fn promote(
        &mut self,
        by: &str,
        reason: &str,
        now_ms: i64,
    ) -> anyhow::Result<SignedRelease> {
        let c = self
            .p
            .canary
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no release is in canary"))?;
        let signed = self.sign_release(c.version, Stage::Promoted, Vec::new(), now_ms)?;
        if let Some(old) = self.p.stable.replace(c.version) {
            if let Some(e) = self.p.entries.get_mut(&old) {
                e.state = "superseded".into();
            }
        }
        self.p.canary = None;
        self.transition(c.version, "promoted", by, reason, now_ms);
        self.save();
        Ok(signed)
    }

    /// Rolls the canary back, or (with no canary) the stable release back
    /// to the one before it.
    pub fn rollback(
        &mut self,
        by: &str,
        reason: &str,
        now_ms: i64,
    ) -> anyhow::Result<SignedRelease> {
        let (bad, to, nodes) = match self.p.canary.take() {
            Some(c) => (c.version, self.p.stable.unwrap_or(0), c.cohort),
            None => {
                let bad = self
                    .p
                    .stable
                    .ok_or_else(|| anyhow::anyhow!("nothing to roll back"))?;
                let before = self
                    .p
                    .entries
                    .values()
                    .filter(|e| e.version < bad && e.state == "superseded")
                    .map(|e| e.version)
                    .max()
                    .unwrap_or(0);
                self.p.stable = (before > 0).then_some(before);
                (bad, before, Vec::new())
            }
        };
        let signed = self.sign_release(to, Stage::Rollback, nodes, now_ms)?;
        self.transition(
            bad,
            "rolled_back",
            by,
            &format!("{reason} (back to v{to})"),
            now_ms,
        );
        self.save();
        Ok(signed)
    }

    /// The newest stored candidate waiting for its canary, if no canary runs.
    pub fn waiting_candidate(&self) -> Option<u64> {
        if self.p.canary.is_some() {
            return None;
        }
        self.p
            .entries
            .values()
            .filter(|e| e.state == "candidate" && Some(e.version) > self.p.stable)
            .map(|e| e.version)
            .max()
    }

    /// Records a candidate the gate refused.
    pub fn rejected(&mut self, reasons: &[String], now_ms: i64) {
        // The number is used up, so every candidate has its own.
        let v = self.next_version();
        self.p.next_version = v + 1;
        self.transition(v, "rejected", "gate", &reasons.join("; "), now_ms);
        self.save();
    }

    /// What the API shows.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "family": self.cfg.family,
            "stable": self.p.stable,
            "canary": self.p.canary,
            "releases": self.p.entries.values().collect::<Vec<_>>(),
            "transitions": self.p.transitions,
            "training": self.training,
            "public_key": self.public_key(),
        })
    }
}
