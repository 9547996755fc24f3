//! What the aggregator does with each message: the fleet's rows are
//! admitted once (by sequence), logged for the next commit and buffered for
//! the next roll; heartbeats, presence and chunk requests update state.
//! The same path reads the log back on start.

use super::Aggregator;
use crate::ingest::{self, Inbound};
use crate::lifecycle::server;
use crate::receipts::{Intake, Receipts};
use crate::recent::Recent;
use crate::store::Store;
use rumqttc::Publish;
use vigil_core::clock::now_ms;
use vigil_core::envelope::Seq;
use vigil_core::message::SampleBatchRef;

impl Aggregator {
    pub(super) fn on_message(&mut self, m: &Publish) {
        self.take(&m.topic, &m.payload, true);
    }

    /// Takes one message: from the broker (`live`), or from a dead cluster
    /// member's log being adopted (admitted once, like any other, and
    /// logged again in this member's own log).
    pub(super) fn take(&mut self, topic: &str, payload: &[u8], live: bool) {
        let inbound = match ingest::classify(topic, payload, self.config.max_message_bytes) {
            Ok(i) => i,
            Err((kind, e)) => {
                if live {
                    self.metrics.link.refused(topic, kind, &e);
                }
                return;
            }
        };
        if live && !self.owns(&inbound) {
            self.view(inbound, payload.len());
            return;
        }
        let now = now_ms();
        match inbound {
            Inbound::Samples {
                site,
                kind,
                batch,
                seq,
            } => {
                self.metrics.link.count(kind.as_str());
                if self.admit(&site, seq.as_ref(), now) {
                    crate::wal::append(&mut self.log, topic, payload);
                    add_samples(&mut self.store, &site, &batch);
                }
            }
            Inbound::Anomaly { site, event, seq } => {
                self.metrics.link.count("anomaly");
                if !self.admit(&site, seq.as_ref(), now) {
                    return;
                }
                crate::wal::append(&mut self.log, topic, payload);
                self.metrics.anomalies.inc();
                self.store.add_anomaly(&event);
                list(
                    &self.shared.anomalies,
                    (&site, seq.as_ref()),
                    payload.len(),
                    event,
                );
            }
            Inbound::Audit { site, record, seq } => {
                self.metrics.link.count("audit");
                if !self.admit(&site, seq.as_ref(), now) {
                    return;
                }
                crate::wal::append(&mut self.log, topic, payload);
                self.metrics
                    .audit_records
                    .with_label_values(&[record.kind.as_str()])
                    .inc();
                self.store.add_audit(&record);
                list(
                    &self.shared.audit,
                    (&site, seq.as_ref()),
                    payload.len(),
                    record,
                );
            }
            other if live => self.on_state(other, now),
            _ => {}
        }
    }

    /// A message of a site another cluster member owns: its owner stores
    /// it; here anomalies and audit records are only listed in the API.
    fn view(&mut self, inbound: Inbound, bytes: usize) {
        match inbound {
            Inbound::Anomaly { site, event, seq } => {
                self.metrics.link.count("anomaly");
                list(&self.shared.anomalies, (&site, seq.as_ref()), bytes, event);
            }
            Inbound::Audit { site, record, seq } => {
                self.metrics.link.count("audit");
                list(&self.shared.audit, (&site, seq.as_ref()), bytes, record);
            }
            // Rows of a site that moved, still on their way here.
            _ => self.metrics.cluster_foreign.inc(),
        }
    }

    /// A site heard from, for a cluster member to place.
    fn seen(&self, site: &str) {
        if self.owned.is_none() || !vigil_core::topic::valid_site(site) {
            return;
        }
        if let Ok(mut b) = self.board.lock() {
            if b.seen.len() < crate::cluster::MAX_SEEN && !b.seen.contains(site) {
                b.seen.insert(site.to_string());
            }
        }
    }

    /// Whether this member stores the message: always alone; in a cluster,
    /// rows of the sites it owns only (a site that moved may still send
    /// here for a moment: its new owner takes the message, resent).
    fn owns(&self, inbound: &Inbound) -> bool {
        let Some(owned) = &self.owned else {
            return true;
        };
        match inbound {
            Inbound::Samples { site, .. }
            | Inbound::Anomaly { site, .. }
            | Inbound::Audit { site, .. } => owned.contains(site),
            _ => true,
        }
    }

    /// Messages that change state, not the store.
    fn on_state(&mut self, inbound: Inbound, now: i64) {
        match inbound {
            Inbound::Heartbeat(hb) => {
                self.metrics.link.count("heartbeat");
                self.seen(&hb.site);
                if let Ok(mut h) = self.shared.models.hub.lock() {
                    let node = format!("{}/{}", hb.site, hb.node);
                    h.observe(&node, hb.model_release, &hb.health, now);
                }
                if let Ok(mut r) = self.shared.registry.lock() {
                    r.heartbeat(hb, now);
                }
            }
            Inbound::ChunkRequest(_) if !self.shared.models.leadership.leads() => {
                // The leader serves model chunks; every member hears the request.
                self.metrics.link.count("chunk_request");
            }
            Inbound::ChunkRequest(req) => {
                self.metrics.link.count("chunk_request");
                let job = server::Job::Chunks(req);
                if self.shared.models.jobs.try_send(job).is_err() {
                    self.metrics
                        .link
                        .dropped
                        .with_label_values(&["chunk_request"])
                        .inc();
                }
            }
            Inbound::Presence {
                site,
                role,
                node,
                state,
            } => {
                self.metrics.link.count("presence");
                if role == "edge" {
                    self.seen(&site);
                }
                if let Ok(mut r) = self.shared.registry.lock() {
                    r.presence(&site, role, &node, state, now);
                }
            }
            _ => {}
        }
    }

    /// Whether to store a message: unsequenced ones always; sequenced ones
    /// the first time only.
    fn admit(&mut self, site: &str, seq: Option<&Seq>, now: i64) -> bool {
        let Some(seq) = seq else {
            return true;
        };
        let new = self.receipts.admit(site, seq, now) == Intake::New;
        let intake = if new { "new" } else { "duplicate" };
        self.metrics
            .uplink_intake
            .with_label_values(&[intake])
            .inc();
        new
    }
}

/// One record read back from the log: its rows are buffered again and its
/// number counts as stored. Only what was admitted was logged, so nothing
/// here is a duplicate. Returns whether it was a record of rows.
pub(super) fn replay(
    topic: &str,
    payload: &[u8],
    max_bytes: usize,
    (store, receipts): (&mut Store, &mut Receipts),
) -> bool {
    let Some((site, seq)) = restore_rows(topic, payload, max_bytes, store) else {
        return false;
    };
    if let Some(seq) = seq {
        receipts.replayed(&site, &seq, now_ms());
    }
    true
}

/// The rows of one logged record buffered again; its site and number, or
/// `None` when it holds no rows.
pub(super) fn restore_rows(
    topic: &str,
    payload: &[u8],
    max_bytes: usize,
    store: &mut Store,
) -> Option<(String, Option<Seq>)> {
    match ingest::classify(topic, payload, max_bytes) {
        Ok(Inbound::Samples {
            site, batch, seq, ..
        }) => {
            add_samples(store, &site, &batch);
            Some((site, seq))
        }
        Ok(Inbound::Anomaly { site, event, seq }) => {
            store.add_anomaly(&event);
            Some((site, seq))
        }
        Ok(Inbound::Audit { site, record, seq }) => {
            store.add_audit(&record);
            Some((site, seq))
        }
        _ => None,
    }
}

/// Lists `item` for the API, once per message.
fn list<T>(
    recent: &std::sync::Mutex<Recent<T>>,
    (site, seq): (&str, Option<&Seq>),
    bytes: usize,
    item: T,
) {
    if let Ok(mut r) = recent.lock() {
        r.push(site, seq, bytes, item);
    }
}

fn add_samples(store: &mut Store, site: &str, batch: &SampleBatchRef<'_>) {
    for s in &batch.samples {
        store.add_sample(site, (&s.entity, &s.metric, s.ts_ms, s.value, s.score));
    }
}
