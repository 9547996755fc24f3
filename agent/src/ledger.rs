//! What the agent must remember across reconnects and restarts: which
//! commands already ran (a replay runs once), and which edge leases each
//! target with which fencing token (one actor per target). Kept in one JSON
//! file, rewritten through a rename before an action runs, so a crash between
//! the two can only make the agent refuse a command, never run one twice.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vigil_core::message::Command;

/// Most command ids kept; beyond it the ones that expire first go.
const MAX_SEEN: usize = 10_000;

/// A lease on one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds it (`<site>/<edge node>`).
    pub holder: String,
    /// Fencing token: grows by one each time the target changes hands.
    pub token: u64,
    /// When it ends, Unix ms.
    pub expires_ms: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Leases by target entity.
    leases: BTreeMap<String, Lease>,
    /// Command ids that ran, with their expiry (after which the expiry
    /// check refuses a replay anyway).
    seen: BTreeMap<String, i64>,
}

/// Why a command may not run.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// The id already ran.
    Duplicate,
    /// Another holder leases the target, or the token is stale.
    Fenced(String),
}

/// The ledger, in memory or backed by a file.
#[derive(Debug)]
pub struct Ledger {
    path: Option<PathBuf>,
    state: State,
}

impl Ledger {
    /// A ledger that is not saved (tests, or no data directory).
    pub fn in_memory() -> Self {
        Self {
            path: None,
            state: State::default(),
        }
    }

    /// Opens (or starts) the ledger at `path`. A file that cannot be read as
    /// a ledger is an error: starting empty would forget which commands ran.
    pub fn open(path: &Path) -> Result<Self, String> {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{}: not a command ledger ({e}); move it aside to start afresh",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Self {
            path: Some(path.to_path_buf()),
            state,
        })
    }

    /// Whether the command `id` already ran.
    pub fn ran(&self, id: &str) -> bool {
        self.state.seen.contains_key(id)
    }

    /// The lease on `target`, live or not.
    pub fn lease(&self, target: &str) -> Option<&Lease> {
        self.state.leases.get(target)
    }

    /// Checks a command and, if it may run, records its id and takes or
    /// renews the lease; returns the token it runs under.
    ///
    /// - an id that already ran is a duplicate;
    /// - a live lease of another holder fences it;
    /// - a token older than the target's newest is stale (the target changed
    ///   hands since this holder last had it), and so is a token this holder
    ///   never had;
    /// - otherwise the lease is renewed (same holder, still live) or granted
    ///   with the next token.
    pub fn admit(&mut self, cmd: &Command, now_ms: i64) -> Result<u64, Refusal> {
        let (id, target, holder) = (cmd.id.as_str(), cmd.target.as_str(), cmd.holder.as_str());
        let (token, lease_ms, expires_ms) = (cmd.lease_token, cmd.lease_ms, cmd.expires_ms);
        if self.state.seen.contains_key(id) {
            return Err(Refusal::Duplicate);
        }
        let current = self.state.leases.get(target);
        let newest = current.map(|l| l.token).unwrap_or(0);
        if let Some(l) = current.filter(|l| l.expires_ms > now_ms && l.holder != holder) {
            return Err(Refusal::Fenced(format!(
                "{target} is leased to {} (token {}) for {} ms more",
                l.holder,
                l.token,
                l.expires_ms - now_ms
            )));
        }
        if let Some(t) = token.filter(|&t| t != newest) {
            return Err(Refusal::Fenced(format!(
                "stale lease token {t} for {target}: the newest is {newest}"
            )));
        }
        let live_same = current.is_some_and(|l| l.expires_ms > now_ms && l.holder == holder);
        let granted = if live_same { newest } else { newest + 1 };
        self.state.leases.insert(
            target.to_string(),
            Lease {
                holder: holder.to_string(),
                token: granted,
                expires_ms: now_ms + lease_ms.max(0),
            },
        );
        self.state.seen.retain(|_, &mut exp| exp >= now_ms);
        if self.state.seen.len() >= MAX_SEEN {
            if let Some(first) = self
                .state
                .seen
                .iter()
                .min_by_key(|(_, &exp)| exp)
                .map(|(k, _)| k.clone())
            {
                self.state.seen.remove(&first);
            }
        }
        self.state.seen.insert(id.to_string(), expires_ms);
        Ok(granted)
    }

    /// Writes the ledger through a temporary file and a rename.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(&self.state).map_err(std::io::Error::other)?;
        vigil_core::file::write_atomic(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::EntityId;

    /// A command as the ledger sees it.
    fn cmd(
        id: &str,
        target: &str,
        holder: &str,
        token: Option<u64>,
        lease_ms: i64,
        expires_ms: i64,
    ) -> Command {
        Command {
            id: id.into(),
            action: "a".into(),
            target: EntityId(target.into()),
            params: Default::default(),
            issued_ms: 0,
            expires_ms,
            policy: "p".into(),
            anomaly_id: None,
            holder: holder.into(),
            lease_token: token,
            lease_ms,
            to: "h1".into(),
            signature: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn admit(
        l: &mut Ledger,
        id: &str,
        target: &str,
        holder: &str,
        token: Option<u64>,
        lease_ms: i64,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<u64, Refusal> {
        l.admit(
            &cmd(id, target, holder, token, lease_ms, expires_ms),
            now_ms,
        )
    }

    #[test]
    fn one_holder_at_a_time_and_stale_tokens_are_fenced() {
        let mut l = Ledger::in_memory();
        let t = "service/h1/web";
        // Edge A takes the lease (token 1); B is fenced while it lives.
        assert_eq!(
            admit(&mut l, "a1", t, "s/a", None, 60_000, 99_000, 0),
            Ok(1)
        );
        let refused = admit(&mut l, "b1", t, "s/b", None, 60_000, 99_000, 1_000);
        assert!(
            matches!(&refused, Err(Refusal::Fenced(m)) if m.contains("leased to s/a")),
            "{refused:?}"
        );
        // A renews under its token; the token stays.
        assert_eq!(
            admit(&mut l, "a2", t, "s/a", Some(1), 60_000, 99_000, 2_000),
            Ok(1)
        );
        // A's lease runs out; B takes the target with token 2.
        assert_eq!(
            admit(&mut l, "b2", t, "s/b", None, 60_000, 199_000, 70_000),
            Ok(2)
        );
        // A wakes up with its old token after B's lease has ended too: stale.
        let stale = admit(&mut l, "a3", t, "s/a", Some(1), 60_000, 299_000, 200_000);
        assert!(
            matches!(&stale, Err(Refusal::Fenced(m)) if m.contains("stale lease token 1")),
            "{stale:?}"
        );
        // Without a token A takes a fresh lease (token 3), fencing B's 2.
        assert_eq!(
            admit(&mut l, "a4", t, "s/a", None, 60_000, 299_000, 200_000),
            Ok(3)
        );
        assert!(matches!(
            admit(&mut l, "b3", t, "s/b", Some(2), 60_000, 399_000, 300_000),
            Err(Refusal::Fenced(_))
        ));
        // A token nobody was given is refused.
        assert!(matches!(
            admit(&mut l, "c1", "service/h1/db", "s/c", Some(7), 1, 9, 0),
            Err(Refusal::Fenced(_))
        ));
    }

    #[test]
    fn a_replay_runs_once_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(
            admit(&mut l, "x", "host/h", "s/a", None, 1000, 50_000, 0),
            Ok(1)
        );
        l.save().unwrap();
        let mut again = Ledger::open(&path).unwrap();
        assert_eq!(
            admit(&mut again, "x", "host/h", "s/a", None, 1000, 50_000, 10),
            Err(Refusal::Duplicate)
        );
        assert_eq!(again.lease("host/h").map(|l| l.token), Some(1));
        // A damaged ledger is an error, not a fresh start.
        std::fs::write(&path, "{not json").unwrap();
        let err = Ledger::open(&path).unwrap_err();
        assert!(err.contains("not a command ledger"), "{err}");
    }

    #[test]
    fn expired_ids_are_forgotten() {
        let mut l = Ledger::in_memory();
        assert!(admit(&mut l, "old", "host/h", "s/a", None, 0, 100, 0).is_ok());
        assert!(admit(&mut l, "new", "host/h", "s/a", None, 0, 10_000, 200).is_ok());
        assert!(!l.state.seen.contains_key("old"));
    }
}
