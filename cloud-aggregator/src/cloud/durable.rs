//! How what the aggregator takes becomes durable, off the async threads.
//!
//! - A *commit* appends the log records taken since the last one to the
//!   write-ahead log and syncs them; then their receipts go out. One commit
//!   runs at a time, every `commit_ms`.
//! - A *roll* writes the buffered rows as Parquet parts. It starts as a
//!   commit that also takes the whole buffer and starts a new log segment
//!   (so the buffer's rows are exactly those of the segments before it);
//!   then the parts are written while intake and later commits go on, the
//!   receipts checkpoint is saved naming the new segment, and the segments
//!   before it are deleted. A roll that fails keeps its rows (they join the
//!   next roll, under the same part names) and its segments.

use super::Aggregator;
use crate::receipts::{Receipts, Sealed};
use crate::store::{Flushed, Store};
use crate::wal::Wal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// A buffer on its way to Parquet.
pub(super) struct Roll {
    store: Store,
    /// Its part names: the first log segment of its rows.
    id: u64,
    /// The receipts checkpoint to save once it is written.
    checkpoint: Vec<u8>,
}

/// What a commit did.
pub(super) struct Committed {
    records: Vec<u8>,
    sealed: Sealed,
    result: std::io::Result<()>,
    /// The roll it started, and the new segment (or why there is none).
    roll: Option<(Roll, std::io::Result<u64>)>,
}

/// What a roll did.
pub(super) struct Rolled {
    roll: Roll,
    flushed: Flushed,
    /// The segment the checkpoint now names, once saved.
    checkpointed: Result<u64, String>,
}

/// The log and where the checkpoint goes; shared with the blocking tasks.
pub(super) struct Durable {
    pub wal: Arc<Mutex<Wal>>,
    pub wal_dir: PathBuf,
    pub checkpoint_path: PathBuf,
}

impl Aggregator {
    /// Whether a roll is due: enough bytes, or rows older than `roll_secs`.
    pub(super) fn roll_due(&self, now_ms: i64) -> bool {
        let bytes = self.store.pending_bytes();
        let age = now_ms - self.roll_started_ms;
        self.force_roll
            || bytes >= self.config.roll_bytes
            || (self.store.pending_rows() > 0 && age >= self.config.roll_secs as i64 * 1000)
    }

    /// Starts a commit of what was taken since the last one, and a roll
    /// with it when `roll`. Nothing happens while a commit runs, or (for a
    /// roll) while one is being written.
    pub(super) fn start_commit(&mut self, roll: bool, now_ms: i64) {
        let roll = roll && self.rolling.is_none();
        if self.committing.is_some() || (self.log.is_empty() && !roll) {
            return;
        }
        let records = std::mem::take(&mut self.log);
        let sealed = self.receipts.seal();
        let wal = self.durable.wal.clone();
        let fresh = roll.then(|| self.fresh_store());
        if roll {
            self.force_roll = false;
        }
        let roll = fresh.map(|fresh| {
            self.roll_started_ms = now_ms;
            // No commit runs, so the segment the roll's commit starts is
            // the next one. Everything admitted so far is in this roll.
            let next = wal.lock().map_or(0, |w| w.segment() + 1);
            Roll {
                store: std::mem::replace(&mut self.store, fresh),
                id: self.roll_id,
                checkpoint: self.receipts.checkpoint(next),
            }
        });
        self.committing = Some(tokio::task::spawn_blocking(move || {
            let Ok(mut w) = wal.lock() else {
                let result = Err(std::io::Error::other("the log's lock is poisoned"));
                return Committed {
                    records,
                    sealed,
                    result,
                    roll: roll.map(|r| (r, Err(std::io::Error::other("no commit")))),
                };
            };
            let result = w.commit(&records);
            let roll = roll.map(|r| {
                let rotated = match &result {
                    Ok(()) => w.rotate(),
                    Err(_) => Err(std::io::Error::other("the commit failed")),
                };
                (r, rotated)
            });
            Committed {
                records,
                sealed,
                result,
                roll,
            }
        }));
    }

    /// A commit is done: receipts for it, or its records and numbers back
    /// to wait for the next; a roll it started goes on to Parquet.
    pub(super) async fn on_committed(&mut self, c: Committed) {
        match c.result {
            Ok(()) => {
                self.metrics.wal_commits.inc();
                self.metrics.wal_bytes.inc_by(c.records.len() as u64);
                self.receipts.committed(c.sealed);
                self.send_receipts().await;
            }
            Err(e) => {
                self.metrics.wal_errors.inc();
                if let Some(skipped) = self.ratelog.allow("wal") {
                    warn!(error = %e, skipped, "Write-ahead log commit failed; its messages wait, unreceipted, for the next commit.");
                }
                self.receipts.uncommitted(c.sealed);
                let mut records = c.records;
                records.append(&mut self.log);
                self.log = records;
            }
        }
        let Some((roll, rotated)) = c.roll else {
            return;
        };
        match rotated {
            Ok(segment) => {
                self.roll_id = segment;
                self.start_roll(roll, segment);
            }
            Err(e) => {
                warn!(error = %e, "Could not start a new log segment; the roll waits for the next.");
                self.metrics.flush_errors.inc();
                self.store.absorb(roll.store);
            }
        }
    }

    fn start_roll(&mut self, mut roll: Roll, segment: u64) {
        let durable = (
            self.durable.wal_dir.clone(),
            self.durable.checkpoint_path.clone(),
        );
        self.rolling = Some(tokio::task::spawn_blocking(move || {
            let flushed = roll.store.flush(roll.id);
            let checkpointed = if flushed.errors.is_empty() {
                Receipts::save_checkpoint(&durable.1, &roll.checkpoint)
                    .and_then(|()| Wal::remove_below(&durable.0, segment))
                    .map(|_| segment)
                    .map_err(|e| e.to_string())
            } else {
                Err("not every part was written".into())
            };
            Rolled {
                roll,
                flushed,
                checkpointed,
            }
        }));
    }

    /// A roll is done: counted; one that failed joins the buffer again,
    /// under its own part names.
    pub(super) fn on_rolled(&mut self, r: Rolled) {
        for (table, rows) in &r.flushed.rows {
            self.metrics
                .rows_written
                .with_label_values(&[table])
                .inc_by(*rows);
        }
        self.metrics
            .files_written
            .inc_by(r.flushed.files.len() as u64);
        match r.checkpointed {
            Ok(segment) => {
                self.metrics.rolls.inc();
                info!(
                    roll = r.roll.id,
                    files = r.flushed.files.len(),
                    wal_from = segment,
                    "Rolled buffered rows into Parquet."
                );
                self.adopted(r.roll.id);
            }
            Err(e) => {
                self.metrics.flush_errors.inc();
                for err in &r.flushed.errors {
                    warn!(error = %err, "Parquet part not written.");
                }
                warn!(roll = r.roll.id, error = %e, "Parquet roll failed; its rows stay buffered (and in the log) for the next roll.");
                self.roll_id = r.roll.id;
                let mut store = r.roll.store;
                let fresh = self.fresh_store();
                store.absorb(std::mem::replace(&mut self.store, fresh));
                self.store = store;
            }
        }
    }
}
