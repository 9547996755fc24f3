//! The append-only audit log: one JSON line per decision, flushed as it is
//! written, plus the most recent records in memory for the API.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use vigil_core::message::AuditRecord;

/// Records kept in memory for the API.
const RECENT: usize = 1000;

/// Bytes of an existing log read back at start (its last records).
const TAIL_BYTES: u64 = 2 * 1024 * 1024;

/// The last records of the log at `path` (a torn last line is skipped).
fn tail(path: &Path) -> std::io::Result<VecDeque<AuditRecord>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let from = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(from))?;
    let mut text = Vec::new();
    f.read_to_end(&mut text)?;
    let mut lines = text.split(|&b| b == b'\n');
    if from > 0 {
        lines.next(); // starts mid-line
    }
    let mut out: VecDeque<AuditRecord> = lines
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    while out.len() > RECENT {
        out.pop_front();
    }
    Ok(out)
}

/// The audit trail of one edge node.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    recent: VecDeque<AuditRecord>,
}

impl AuditLog {
    /// Opens (creating) `path` for appending; the last records already in
    /// it are read back (so a restarted edge knows what it left open).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            recent: tail(path)?,
        })
    }

    /// `action_sent` records with no result, verdict or unexpected-result
    /// record after them: what an edge killed mid-action left open.
    pub fn open_actions(&self) -> Vec<AuditRecord> {
        use vigil_core::message::AuditKind;
        let closed: std::collections::HashSet<&str> = self
            .recent
            .iter()
            .filter(|r| r.kind != AuditKind::ActionSent)
            .filter_map(|r| r.command_id.as_deref())
            .collect();
        self.recent
            .iter()
            .filter(|r| r.kind == AuditKind::ActionSent)
            .filter(|r| {
                r.command_id
                    .as_deref()
                    .is_some_and(|id| !closed.contains(id))
            })
            .cloned()
            .collect()
    }

    /// The result recorded for `command_id`, if it is recent.
    pub fn result_of(&self, command_id: &str) -> Option<&AuditRecord> {
        self.find(vigil_core::message::AuditKind::ActionResult, command_id)
    }

    /// Whether a result of `command_id` with `outcome` was audited as
    /// unexpected already (an agent sends its recent results again to an
    /// edge that comes back: a forged one is not news the second time).
    pub fn unexpected_on_record(
        &self,
        command_id: &str,
        outcome: vigil_core::message::Outcome,
    ) -> bool {
        self.recent.iter().any(|r| {
            r.kind == vigil_core::message::AuditKind::UnexpectedResult
                && r.command_id.as_deref() == Some(command_id)
                && r.outcome == Some(outcome)
        })
    }

    /// The latest recent record of `kind` about `command_id`.
    pub fn find(
        &self,
        kind: vigil_core::message::AuditKind,
        command_id: &str,
    ) -> Option<&AuditRecord> {
        self.recent
            .iter()
            .rev()
            .find(|r| r.kind == kind && r.command_id.as_deref() == Some(command_id))
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record; the in-memory copy is kept even if the write fails.
    pub fn append(&mut self, rec: &AuditRecord) -> std::io::Result<()> {
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(rec.clone());
        let mut line = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.flush()
    }

    /// The `action_sent` record of `command_id`, if it is recent.
    pub fn sent(&self, command_id: &str) -> Option<&AuditRecord> {
        self.find(vigil_core::message::AuditKind::ActionSent, command_id)
    }

    /// The most recent records, oldest first.
    pub fn recent(&self) -> Vec<AuditRecord> {
        self.recent.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::message::AuditKind;
    use vigil_core::EntityId;

    #[test]
    fn appends_lines_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/audit.jsonl");
        let rec = AuditRecord {
            ts_ms: 1,
            site: "s".into(),
            kind: AuditKind::ActionSent,
            policy: "p".into(),
            policy_version: "v".into(),
            target: EntityId::host("h"),
            action: "x".into(),
            command_id: Some("c".into()),
            anomaly_id: None,
            model_version: "m".into(),
            score: Some(0.97),
            top_metric: "up".into(),
            mode: "auto".into(),
            lease_token: Some(3),
            rail: None,
            outcome: None,
            detail: "d".into(),
            root_cause: vec![
                vigil_core::message::MetricShare {
                    metric: "up".into(),
                    share: 0.75,
                },
                vigil_core::message::MetricShare {
                    metric: "latency".into(),
                    share: 0.25,
                },
            ],
        };
        {
            let mut log = AuditLog::open(&path).unwrap();
            log.append(&rec).unwrap();
        }
        let mut log = AuditLog::open(&path).unwrap();
        log.append(&rec).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<AuditRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, vec![rec.clone(), rec.clone()]);
        // What the first run wrote is read back at open.
        assert_eq!(log.recent().len(), 2);
        // A torn last line (a crash mid-write) is skipped, and an
        // action_sent with nothing after it is open.
        let sent = AuditRecord {
            kind: vigil_core::message::AuditKind::ActionSent,
            command_id: Some("open-1".into()),
            ..rec.clone()
        };
        let closed = AuditRecord {
            kind: vigil_core::message::AuditKind::ActionResult,
            ..rec
        };
        log.append(&closed).unwrap();
        log.append(&sent).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"ts_ms\":1,\"si")
            .unwrap();
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.recent().len(), 4);
        let open: Vec<_> = log
            .open_actions()
            .into_iter()
            .filter_map(|r| r.command_id)
            .collect();
        assert_eq!(open, ["open-1"]);
    }

    #[test]
    fn a_result_audited_as_unexpected_is_known_after_a_restart() {
        use vigil_core::message::Outcome;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        let rec = AuditRecord {
            ts_ms: 1,
            site: "s".into(),
            kind: AuditKind::UnexpectedResult,
            policy: String::new(),
            policy_version: "v".into(),
            target: EntityId::host("h"),
            action: "x".into(),
            command_id: Some("forged-1".into()),
            anomaly_id: None,
            model_version: "m".into(),
            score: None,
            top_metric: String::new(),
            mode: String::new(),
            lease_token: None,
            rail: None,
            outcome: Some(Outcome::Rejected),
            detail: "d".into(),
            root_cause: Vec::new(),
        };
        log.append(&rec).unwrap();
        let log = AuditLog::open(&path).unwrap();
        assert!(log.unexpected_on_record("forged-1", Outcome::Rejected));
        assert!(!log.unexpected_on_record("forged-1", Outcome::Duplicate));
        assert!(!log.unexpected_on_record("forged-2", Outcome::Rejected));
    }
}
