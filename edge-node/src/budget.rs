//! Action budgets: how many times each action ran on each target, kept on
//! disk so a restart of the edge node does not hand out a fresh budget (a
//! crash-looping edge must not become a restart storm).
//!
//! The file is small JSON, rewritten whole through a temporary file and a
//! rename after every spend, so a crash leaves either the old or the new
//! version, never a torn one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Spends older than this are forgotten whatever the budgets say (bounds
/// the file).
const KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

/// Why the budgets could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The budget file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not a budget file.
    #[error("{path}: not a budget file ({source}); move it aside to start with fresh budgets")]
    Corrupt {
        /// The budget file.
        path: PathBuf,
        /// What did not parse.
        source: serde_json::Error,
    },
}

/// When each action ran on each target, Unix ms, oldest first.
#[derive(Debug, Default)]
pub struct Budgets {
    spent: BTreeMap<String, Vec<i64>>,
    path: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct File {
    spent: BTreeMap<String, Vec<i64>>,
}

fn key(target: &str, action: &str) -> String {
    format!("{target}|{action}")
}

impl Budgets {
    /// In memory only (tests, or an edge without a data directory).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Loads the budgets kept at `path` (none yet when the file is missing).
    pub fn open(path: &Path) -> Result<Self, BudgetError> {
        let spent = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<File>(&bytes)
                    .map_err(|source| BudgetError::Corrupt {
                        path: path.to_path_buf(),
                        source,
                    })?
                    .spent
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(BudgetError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Ok(Self {
            spent,
            path: Some(path.to_path_buf()),
        })
    }

    /// Times `action` ran on `target` in the `window_ms` before `now_ms`.
    pub fn used(&self, target: &str, action: &str, now_ms: i64, window_ms: i64) -> usize {
        self.spent
            .get(&key(target, action))
            .map(|ts| ts.iter().filter(|&&t| now_ms - t < window_ms).count())
            .unwrap_or(0)
    }

    /// Records that `action` ran on `target` now, and saves. The spend counts
    /// in memory even when saving fails (the error says so).
    pub fn spend(&mut self, target: &str, action: &str, now_ms: i64) -> Result<(), BudgetError> {
        let ts = self.spent.entry(key(target, action)).or_default();
        ts.push(now_ms);
        ts.retain(|&t| now_ms - t < KEEP_MS);
        self.save()
    }

    fn save(&self) -> Result<(), BudgetError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| BudgetError::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(&File {
            spent: self.spent.clone(),
        })
        .map_err(|e| io(std::io::Error::other(e)))?;
        vigil_core::file::write_atomic(path, &bytes).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_inside_the_window() {
        let mut b = Budgets::in_memory();
        for t in [0, 1000, 2000] {
            b.spend("service/h1/web", "restart", t).unwrap();
        }
        assert_eq!(b.used("service/h1/web", "restart", 2500, 10_000), 3);
        assert_eq!(b.used("service/h1/web", "restart", 10_500, 10_000), 2);
        assert_eq!(b.used("service/h1/web", "page", 2500, 10_000), 0);
        assert_eq!(b.used("service/h2/web", "restart", 2500, 10_000), 0);
    }

    #[test]
    fn survives_a_restart_and_refuses_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("budgets.json");
        let mut b = Budgets::open(&path).unwrap();
        b.spend("t", "a", 100).unwrap();
        b.spend("t", "a", 200).unwrap();
        drop(b);
        let again = Budgets::open(&path).unwrap();
        assert_eq!(again.used("t", "a", 300, 1000), 2);
        std::fs::write(&path, b"{not json").unwrap();
        let err = Budgets::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("budgets.json") && err.contains("not a budget file"),
            "{err}"
        );
    }
}
