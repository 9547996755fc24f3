//! A dead cluster member's state read into this one ([`crate::cluster`]):
//! its receipts are merged into ours and every number in its write-ahead
//! log past its last roll is counted as stored (receipted again), so what it
//! took is not stored twice; then its sites are served while the rows of
//! its log are buffered and logged again in ours. Its folder is deleted
//! once a roll of ours has made those rows and that state durable.

use super::Aggregator;
use crate::receipts::Receipts;
use std::path::PathBuf;
use tracing::{error, info, warn};

/// A dead member's rows on their way in.
pub(super) struct Restoring {
    member: String,
    dir: PathBuf,
    /// Its log's messages, from a blocking reader.
    pub(super) rx: tokio::sync::mpsc::Receiver<(String, Vec<u8>)>,
    reader: tokio::task::JoinHandle<std::io::Result<()>>,
    rows: u64,
}

/// The receipts checkpoint's file name in a member's folder.
pub(super) const CHECKPOINT: &str = "uplink-receipts.json";

impl Aggregator {
    /// First the numbers: the dead member's receipts merged and every
    /// number in its log counted as stored (only its envelopes are read, so
    /// this takes a moment however big the log); then its sites can be
    /// served. Its rows follow, streamed beside live intake ([`Restoring`]).
    pub(super) async fn adopt(&mut self, member: String, dir: PathBuf) {
        let (receipts, problem) = Receipts::open(&dir.join(CHECKPOINT));
        if let Some(p) = problem {
            return error!(member, error = %p, "Could not read a dead member's receipts; its sites wait (restart this aggregator to try again).");
        }
        let from = receipts.wal_from();
        let (wal, max) = (dir.join("wal"), self.config.max_message_bytes);
        let numbers = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            crate::wal::replay(&wal, from, |topic, payload| {
                let site = match vigil_core::topic::parse(topic) {
                    Some(vigil_core::topic::Route::Uplink { site, .. }) => site,
                    _ => return,
                };
                if let Ok(Some(seq)) = vigil_core::envelope::decode_seq_only(payload, max) {
                    out.push((site.to_string(), seq));
                }
            })
            .map(|_| out)
        })
        .await;
        let numbers = match numbers {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                return error!(member, error = %e, "Could not read a dead member's log; its sites wait (restart this aggregator to try again).");
            }
            Err(e) => {
                return error!(member, error = %e, "Reading a dead member's log failed to finish.")
            }
        };
        self.receipts.merge(receipts);
        let now = vigil_core::clock::now_ms();
        for (site, seq) in &numbers {
            self.receipts.replayed(site, seq, now);
        }
        if let Ok(mut b) = self.board.lock() {
            b.merged.insert(member.clone());
        }
        self.metrics.cluster_adoptions.inc();
        info!(
            member,
            messages = numbers.len(),
            "Read a dead member's receipts and log numbers; taking its sites, its rows follow."
        );
        // A few messages at a time: its log may hold two rolls' worth.
        let (tx, rx) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(64);
        let wal = dir.join("wal");
        let reader = tokio::task::spawn_blocking(move || {
            crate::wal::replay(&wal, from, |t, p| {
                let _ = tx.blocking_send((t.to_string(), p.to_vec()));
            })
            .map(|_| ())
        });
        self.restoring = Some(Restoring {
            member,
            dir,
            rx,
            reader,
            rows: 0,
        });
    }

    /// One message of the dead member's log: its rows buffered and logged
    /// again in ours (its number is already counted as stored).
    pub(super) fn restore(&mut self, topic: &str, payload: &[u8]) {
        let before = self.store.pending_rows();
        let max = self.config.max_message_bytes;
        if super::intake::restore_rows(topic, payload, max, &mut self.store).is_some() {
            crate::wal::append(&mut self.log, topic, payload);
        }
        if let Some(r) = &mut self.restoring {
            r.rows += (self.store.pending_rows() - before) as u64;
        }
    }

    /// The dead member's log is read: its folder goes after our next roll.
    pub(super) async fn restored(&mut self) {
        let Some(r) = self.restoring.take() else {
            return;
        };
        match r.reader.await {
            Ok(Ok(())) => {
                info!(
                    member = r.member,
                    rows = r.rows,
                    "A dead member's rows are taken; its folder goes after the next roll."
                );
                self.adoptions.push((r.member, r.dir, self.roll_id));
                self.force_roll = true;
            }
            Ok(Err(e)) => {
                error!(member = r.member, error = %e, "Could not read all of a dead member's log; its folder stays (restart this aggregator to try again).");
            }
            Err(e) => {
                error!(member = r.member, error = %e, "Reading a dead member's log failed to finish.")
            }
        }
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
