//! Classifies and decodes what the aggregator receives, by topic, as the
//! edge's `ingest` does. Nothing here panics on bad input: every refusal
//! comes back as the message kind and a reason to count.

use vigil_core::envelope::{decode_kind, decode_seq, DecodeError, Seq};
use vigil_core::message::{
    AnomalyEvent, AuditRecord, ChunkRequest, Heartbeat, Presence, PresenceState, SampleBatch,
    SampleBatchRef,
};
use vigil_core::topic::{self, Route, UplinkKind};
use vigil_core::{decode, Payload};

/// A decoded incoming message; samples borrow their text from the payload.
#[derive(Debug, PartialEq)]
pub enum Inbound<'a> {
    /// Samples (raw, or with their scores) from a site's uplink.
    Samples {
        /// Site from the topic.
        site: String,
        /// `Samples` or `Scores`: what the metric counts it as.
        kind: UplinkKind,
        /// The batch.
        batch: SampleBatchRef<'a>,
        /// Its delivery sequence, when spooled (stored once, then receipted).
        seq: Option<Seq>,
    },
    /// An anomaly event from a site's uplink.
    Anomaly {
        /// Site from the topic.
        site: String,
        /// The event.
        event: AnomalyEvent,
        /// Its delivery sequence.
        seq: Option<Seq>,
    },
    /// An audit record from a site's uplink.
    Audit {
        /// Site from the topic.
        site: String,
        /// The record.
        record: AuditRecord,
        /// Its delivery sequence.
        seq: Option<Seq>,
    },
    /// An edge's heartbeat.
    Heartbeat(Heartbeat),
    /// An edge asks for chunks of a release.
    ChunkRequest(ChunkRequest),
    /// An agent or an edge came or went.
    Presence {
        /// Site from the topic.
        site: String,
        /// `agent` or `edge`.
        role: &'static str,
        /// The host (agents) or the node the edge names itself.
        node: String,
        /// Online or offline.
        state: PresenceState,
    },
    /// Not for the aggregator (its own releases and chunks, unknown topics).
    Ignored,
}

/// Decodes a message; `Err` carries the message kind and why it was refused.
pub fn classify<'a>(
    topic_name: &str,
    payload: &'a [u8],
    max_bytes: usize,
) -> Result<Inbound<'a>, (&'static str, DecodeError)> {
    let Some(route) = topic::parse(topic_name) else {
        return Ok(Inbound::Ignored);
    };
    Ok(match route {
        Route::Uplink {
            site,
            kind: kind @ (UplinkKind::Samples | UplinkKind::Scores),
        } => {
            let d =
                decode_kind(payload, max_bytes, SampleBatch::KIND).map_err(|e| ("samples", e))?;
            let (batch, seq) = (d.body, d.seq);
            Inbound::Samples {
                site: site.to_string(),
                kind,
                batch,
                seq,
            }
        }
        Route::Uplink {
            site,
            kind: UplinkKind::Anomaly,
        } => {
            let (event, seq) = decode_seq(payload, max_bytes).map_err(|e| ("anomaly", e))?;
            Inbound::Anomaly {
                site: site.to_string(),
                event,
                seq,
            }
        }
        Route::Uplink {
            site,
            kind: UplinkKind::Audit,
        } => {
            let (record, seq) = decode_seq(payload, max_bytes).map_err(|e| ("audit", e))?;
            Inbound::Audit {
                site: site.to_string(),
                record,
                seq,
            }
        }
        Route::Uplink {
            kind: UplinkKind::Heartbeat,
            ..
        } => Inbound::Heartbeat(decode(payload, max_bytes).map_err(|e| ("heartbeat", e))?),
        Route::ModelRequest { .. } => {
            Inbound::ChunkRequest(decode(payload, max_bytes).map_err(|e| ("chunk_request", e))?)
        }
        Route::AgentPresence { site, host } => {
            let p: Presence = decode(payload, max_bytes).map_err(|e| ("presence", e))?;
            Inbound::Presence {
                site: site.to_string(),
                role: "agent",
                node: host.to_string(),
                state: p.state,
            }
        }
        Route::EdgePresence { site } => {
            let p: Presence = decode(payload, max_bytes).map_err(|e| ("presence", e))?;
            Inbound::Presence {
                site: site.to_string(),
                role: "edge",
                node: p.node,
                state: p.state,
            }
        }
        _ => Inbound::Ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::encode;

    fn presence(node: &str) -> Vec<u8> {
        encode(&Presence {
            node: node.into(),
            role: "edge".into(),
            state: PresenceState::Online,
            ts_ms: 1,
            actions: vec![],
        })
    }

    #[test]
    fn routes_by_topic_and_refuses_bad_payloads_by_kind() {
        let (p1, p2) = (presence("n1"), presence("x"));
        let edge = classify(&topic::edge_presence("s"), &p1, 1 << 20).unwrap();
        assert_eq!(
            edge,
            Inbound::Presence {
                site: "s".into(),
                role: "edge",
                node: "n1".into(),
                state: PresenceState::Online
            }
        );
        let agent = classify(&topic::agent_presence("s", "h1"), &p2, 1 << 20).unwrap();
        assert!(matches!(agent, Inbound::Presence { role: "agent", ref node, .. } if node == "h1"));
        for (kind, label) in [
            (UplinkKind::Samples, "samples"),
            (UplinkKind::Scores, "samples"),
            (UplinkKind::Anomaly, "anomaly"),
            (UplinkKind::Audit, "audit"),
            (UplinkKind::Heartbeat, "heartbeat"),
        ] {
            let err = classify(&topic::uplink("s", kind), b"{not json", 1 << 20).unwrap_err();
            assert_eq!(err.0, label);
        }
        let big = vec![b' '; 2048];
        let err = classify(&topic::uplink("s", UplinkKind::Audit), &big, 1024).unwrap_err();
        assert!(matches!(err.1, DecodeError::Oversized { .. }));
        assert_eq!(
            classify(&topic::model_release("f"), b"x", 1 << 20).unwrap(),
            Inbound::Ignored
        );
        assert_eq!(
            classify("other/topic", b"x", 1 << 20).unwrap(),
            Inbound::Ignored
        );
    }
}
