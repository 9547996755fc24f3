//! A dead cluster member's state read into this one ([`crate::cluster`]):
//! its receipts are merged into ours, then every message in its write-ahead
//! log past its last roll is taken again through our own intake, so what it
//! had stored is not stored twice and what it had only logged is stored
//! (logged again in our log, receipted again). Its folder is deleted once a
//! roll of ours has made those rows and that state durable.

use super::Aggregator;
use crate::receipts::Receipts;
use std::path::{Path, PathBuf};
use tracing::{error, info, warn};

/// The receipts checkpoint's file name in a member's folder.
pub(super) const CHECKPOINT: &str = "uplink-receipts.json";

type Records = Vec<(String, Vec<u8>)>;

impl Aggregator {
    pub(super) async fn adopt(&mut self, member: String, dir: PathBuf) {
        let d = dir.clone();
        let read = tokio::task::spawn_blocking(move || read_state(&d)).await;
        let (receipts, records) = match read {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                return error!(member, dir = %dir.display(), error = %e, "Could not read a dead member's state; its sites wait (restart this aggregator to try again).");
            }
            Err(e) => {
                return error!(member, error = %e, "Reading a dead member's state failed to finish.");
            }
        };
        self.receipts.merge(receipts);
        let before = self.store.pending_rows();
        for (topic, payload) in &records {
            self.take(topic, payload, false);
        }
        let rows = self.store.pending_rows() - before;
        if let Ok(mut b) = self.board.lock() {
            b.merged.insert(member.clone());
        }
        self.adoptions.push((member.clone(), dir, self.roll_id));
        self.force_roll = true;
        self.metrics.cluster_adoptions.inc();
        info!(
            member,
            messages = records.len(),
            rows,
            "Read a dead member's receipts and log; taking its sites."
        );
    }

    /// A roll is durable: adoptions whose rows it held are done, and the
    /// dead members' folders go.
    pub(super) fn adopted(&mut self, rolled: u64) {
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.adoptions)
            .into_iter()
            .partition(|(_, _, roll)| *roll <= rolled);
        self.adoptions = waiting;
        for (member, dir, roll) in done {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    if let Ok(mut b) = self.board.lock() {
                        b.removed.insert(member);
                    }
                }
                Err(e) => {
                    warn!(member, dir = %dir.display(), error = %e, "Could not delete an adopted member's folder; trying after the next roll.");
                    self.adoptions.push((member, dir, roll));
                }
            }
        }
    }
}

fn read_state(dir: &Path) -> Result<(Receipts, Records), String> {
    let (receipts, problem) = Receipts::open(&dir.join(CHECKPOINT));
    if let Some(p) = problem {
        return Err(p);
    }
    let mut records = Vec::new();
    crate::wal::replay(&dir.join("wal"), receipts.wal_from(), |t, p| {
        records.push((t.to_string(), p.to_vec()));
    })
    .map_err(|e| e.to_string())?;
    Ok((receipts, records))
}
