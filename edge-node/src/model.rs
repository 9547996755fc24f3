//! Model updates at the edge: signed releases in, chunks fetched, the bundle
//! assembled and handed over for verification and the swap.
//!
//! A release is acted on only when its signature verifies against a trusted
//! key, it names this edge's family, it is meant for this node (cohort), and
//! it is newer than the model running (or a signed rollback to an older one).
//! Chunks are asked for a window at a time and each is checked against the
//! release's hash of it; what arrived is kept, so after a broker restart the
//! edge asks only for what it still lacks. The running bundle and the one
//! before it are kept in `<data_dir>/models/` for restarts and rollbacks.
//! No I/O but those two files; the run loop does the sending.

mod metrics;
pub use metrics::ModelMetrics;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use vigil_core::message::{ChunkRequest, Release, SignedRelease, Stage};
use vigil_models::bundle::sha256_hex;
use vigil_models::signing::{Keyring, SignError, Signature};

/// Model update settings (`model:` in the edge config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model family this edge follows.
    pub family: String,
    /// Public keys whose signatures are accepted (a key, or a key file's
    /// path); several while keys rotate. Empty: updates are refused.
    pub trusted_keys: Vec<String>,
    /// Chunks asked for per request.
    pub window: usize,
    /// Ask again for missing chunks after this long without progress, ms.
    pub retry_ms: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            family: "default".into(),
            trusted_keys: Vec::new(),
            window: 16,
            retry_ms: 1000,
        }
    }
}

impl ModelConfig {
    /// Every problem with the settings.
    pub fn validate(&self, e: &mut Vec<String>) {
        if !vigil_core::topic::valid_level(&self.family) {
            e.push(format!(
                "model.family: {:?} must be 1-64 of [A-Za-z0-9._-]",
                self.family
            ));
        }
        if self.window == 0 || self.window > 1024 {
            e.push(format!("model.window: {} is outside 1..=1024", self.window));
        }
        if self.retry_ms < 50 {
            e.push(format!(
                "model.retry_ms: {} must be at least 50",
                self.retry_ms
            ));
        }
        if let Err(errors) = Keyring::load(&self.trusted_keys) {
            e.extend(errors.into_iter().map(|x| format!("model.{x}")));
        }
    }
}

/// Why a release was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The signature did not verify (or no key is trusted).
    Signature(String),
    /// Not a release.
    Malformed(String),
    /// Older than the running model and not a rollback.
    Older {
        /// Offered version.
        offered: u64,
        /// Running version.
        running: u64,
    },
}

impl Refusal {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Signature(_) => "bad_signature",
            Refusal::Malformed(_) => "malformed",
            Refusal::Older { .. } => "older",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Signature(e) => write!(f, "release signature: {e}"),
            Refusal::Malformed(e) => write!(f, "release: {e}"),
            Refusal::Older { offered, running } => write!(
                f,
                "version {offered} is older than the running {running} and no signed rollback names it"
            ),
        }
    }
}

/// What the run loop should do next.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Nothing.
    Idle,
    /// Publish this request.
    Ask(ChunkRequest),
    /// A signed rollback to no release: go back to the edge's own model.
    Reset,
    /// The bundle is complete and matches the release: verify and swap.
    Install {
        /// The release.
        release: Release,
        /// The bundle file.
        bytes: Vec<u8>,
    },
}

struct Fetch {
    release: Release,
    chunks: Vec<Option<Vec<u8>>>,
    have: usize,
    asked: Vec<u32>,
    last_progress_ms: i64,
    started_ms: i64,
}

/// Counts of chunk handling, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkCounts {
    /// Chunks stored.
    pub stored: u64,
    /// Chunks already held (resent).
    pub duplicate: u64,
    /// Chunks whose hash did not match.
    pub bad: u64,
    /// Chunks of no transfer in progress.
    pub unexpected: u64,
}

/// The edge's model update state.
pub struct Models {
    cfg: ModelConfig,
    keys: Keyring,
    node: String,
    dir: PathBuf,
    running: Option<u64>,
    /// Version and bytes of the model before the running one.
    previous: Option<(u64, Vec<u8>)>,
    fetch: Option<Fetch>,
    /// Chunk counts so far.
    pub counts: ChunkCounts,
}

const CURRENT: &str = "current.vmb";
const PREVIOUS: &str = "previous.vmb";

impl Models {
    /// State for node `site/node`, keeping bundles under `dir`. Returns the
    /// bundle file last installed, if any, for the caller to verify and load.
    pub fn open(
        cfg: ModelConfig,
        keys: Keyring,
        node: &str,
        dir: &Path,
    ) -> (Self, Option<Vec<u8>>) {
        let current = std::fs::read(dir.join(CURRENT)).ok();
        let previous = std::fs::read(dir.join(PREVIOUS))
            .ok()
            .and_then(|b| version_of(&b).map(|v| (v, b)));
        let m = Self {
            cfg,
            keys,
            node: node.to_string(),
            dir: dir.to_path_buf(),
            running: None,
            previous,
            fetch: None,
            counts: ChunkCounts::default(),
        };
        (m, current)
    }

    /// The family followed.
    pub fn family(&self) -> &str {
        &self.cfg.family
    }

    /// The release running, if any.
    pub fn running(&self) -> Option<u64> {
        self.running
    }

    /// When the transfer in progress started, Unix ms.
    pub fn transfer_started_ms(&self) -> Option<i64> {
        self.fetch.as_ref().map(|f| f.started_ms)
    }

    /// Checks a signed release and decides what it asks of this node.
    pub fn on_release(&mut self, signed: &SignedRelease, now_ms: i64) -> Result<Next, Refusal> {
        if self.keys.is_empty() {
            return Err(Refusal::Signature(
                "no trusted_keys configured; model updates are off".into(),
            ));
        }
        let sig = Signature {
            key_id: signed.key_id.clone(),
            signature: signed.signature.clone(),
        };
        self.keys
            .verify(signed.release.as_bytes(), &sig)
            .map_err(|e: SignError| Refusal::Signature(e.to_string()))?;
        let r: Release =
            serde_json::from_str(&signed.release).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if r.family != self.cfg.family || !r.is_for(&self.node) {
            return Ok(Next::Idle);
        }
        if r.chunk_bytes == 0 || r.chunks.len() as u64 != r.size.div_ceil(r.chunk_bytes) {
            return Err(Refusal::Malformed(format!(
                "{} chunk hashes for {} bytes in chunks of {}",
                r.chunks.len(),
                r.size,
                r.chunk_bytes
            )));
        }
        match (r.stage, self.running) {
            (_, Some(run)) if run == r.version => return Ok(Next::Idle),
            (Stage::Rollback, Some(run)) if run > r.version => {}
            // A rollback for a node not running anything newer: nothing to undo.
            (Stage::Rollback, _) => return Ok(Next::Idle),
            (_, Some(run)) if run > r.version => {
                return Err(Refusal::Older {
                    offered: r.version,
                    running: run,
                })
            }
            _ => {}
        }
        if r.stage == Stage::Rollback && r.version == 0 {
            return Ok(Next::Reset);
        }
        if let Some((v, bytes)) = &self.previous {
            if *v == r.version && sha256_hex(bytes) == r.sha256 {
                return Ok(Next::Install {
                    bytes: bytes.clone(),
                    release: r,
                });
            }
        }
        if let Some(f) = &self.fetch {
            if f.release.version == r.version && f.release.sha256 == r.sha256 {
                return Ok(Next::Idle);
            }
        }
        let n = r.chunks.len();
        self.fetch = Some(Fetch {
            release: r,
            chunks: vec![None; n],
            have: 0,
            asked: Vec::new(),
            last_progress_ms: now_ms,
            started_ms: now_ms,
        });
        Ok(self.ask(now_ms))
    }

    fn ask(&mut self, now_ms: i64) -> Next {
        let window = self.cfg.window;
        let Some(f) = self.fetch.as_mut() else {
            return Next::Idle;
        };
        let missing: Vec<u32> = (0..f.chunks.len())
            .filter(|&i| f.chunks[i].is_none())
            .take(window)
            .map(|i| i as u32)
            .collect();
        f.asked = missing.clone();
        f.last_progress_ms = now_ms;
        Next::Ask(ChunkRequest {
            node: self.node.clone(),
            family: f.release.family.clone(),
            version: f.release.version,
            chunks: missing,
        })
    }

    /// Takes one chunk.
    pub fn on_chunk(&mut self, version: u64, index: u32, bytes: &[u8], now_ms: i64) -> Next {
        let Some(f) = self.fetch.as_mut() else {
            self.counts.unexpected += 1;
            return Next::Idle;
        };
        let i = index as usize;
        if f.release.version != version || i >= f.chunks.len() {
            self.counts.unexpected += 1;
            return Next::Idle;
        }
        if f.chunks[i].is_some() {
            self.counts.duplicate += 1;
            return Next::Idle;
        }
        if sha256_hex(bytes) != f.release.chunks[i] {
            self.counts.bad += 1;
            return Next::Idle;
        }
        f.chunks[i] = Some(bytes.to_vec());
        f.have += 1;
        f.last_progress_ms = now_ms;
        self.counts.stored += 1;
        if f.have == f.chunks.len() {
            let Some(f) = self.fetch.take() else {
                return Next::Idle;
            };
            let bytes: Vec<u8> = f.chunks.into_iter().flatten().flatten().collect();
            if sha256_hex(&bytes) != f.release.sha256 || bytes.len() as u64 != f.release.size {
                // Every chunk matched yet the whole does not: the release
                // itself is inconsistent. Drop it; a new release restarts.
                self.counts.bad += 1;
                return Next::Idle;
            }
            return Next::Install {
                release: f.release,
                bytes,
            };
        }
        let window_done = f.asked.iter().all(|&a| f.chunks[a as usize].is_some());
        if window_done {
            self.ask(now_ms)
        } else {
            Next::Idle
        }
    }

    /// Asks again for what is missing when nothing arrived for `retry_ms`
    /// (lost messages, a broker restart).
    pub fn poll(&mut self, now_ms: i64) -> Next {
        match &self.fetch {
            Some(f) if now_ms - f.last_progress_ms >= self.cfg.retry_ms as i64 => self.ask(now_ms),
            _ => Next::Idle,
        }
    }

    /// Records that `version` (`bytes`) now scores: the running bundle
    /// becomes the previous one, and both are written to disk.
    pub fn installed(&mut self, version: u64, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let cur = self.dir.join(CURRENT);
        // The file in place is the running release (verified when it came in).
        if let Some(run) = self.running.filter(|&r| r != version) {
            if let Ok(old) = std::fs::read(&cur) {
                write_atomic(&self.dir.join(PREVIOUS), &old)?;
                self.previous = Some((run, old));
            }
        }
        write_atomic(&cur, bytes)?;
        self.running = Some(version);
        Ok(())
    }

    /// Records the return to the edge's own model: the running bundle is
    /// kept as the previous one and nothing is loaded at the next start.
    pub fn reset(&mut self) -> std::io::Result<()> {
        let cur = self.dir.join(CURRENT);
        if let (Some(run), Ok(old)) = (self.running, std::fs::read(&cur)) {
            write_atomic(&self.dir.join(PREVIOUS), &old)?;
            self.previous = Some((run, old));
        }
        if cur.exists() {
            std::fs::remove_file(&cur)?;
        }
        self.fetch = None;
        self.running = None;
        Ok(())
    }

    /// Records the release loaded at start-up.
    pub fn resumed(&mut self, version: u64) {
        self.running = Some(version);
    }

    /// Drops a transfer whose bundle failed verification.
    pub fn abandon(&mut self) {
        self.fetch = None;
    }
}

fn version_of(bundle: &[u8]) -> Option<u64> {
    vigil_models::bundle::Bundle::from_bytes(bundle)
        .ok()
        .map(|b| b.manifest().version)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests;
