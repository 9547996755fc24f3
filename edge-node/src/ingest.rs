//! Classifies and decodes incoming MQTT messages by topic. Nothing here
//! panics on bad input: every refusal comes back as a reason to count.

use vigil_core::decode;
use vigil_core::envelope::{decode_meta, DecodeError};
use vigil_core::message::{
    CommandResult, MetricBatch, Presence, PresenceState, SignedRelease, UplinkAck,
};
use vigil_core::topic::{self, Route};

/// A decoded incoming message.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// An agent's metric batch (already checked against the topic's host).
    Batch {
        /// The batch.
        batch: MetricBatch,
        /// When the agent sent it, by its own clock.
        sent_ms: Option<i64>,
    },
    /// A sensor reading.
    Sensor {
        /// Sensor name from the topic.
        name: String,
        /// Unix ms.
        ts_ms: i64,
        /// Reading.
        value: f64,
    },
    /// An agent's command result.
    Result(CommandResult),
    /// An agent came or went.
    AgentPresence {
        /// Host.
        host: String,
        /// Online or not.
        online: bool,
        /// Its catalog's action names (empty from agents that do not say).
        actions: Vec<String>,
    },
    /// A model family's signed release (checked by `model`).
    Release {
        /// Family from the topic.
        family: String,
        /// The release as signed.
        signed: SignedRelease,
    },
    /// A chunk of a release's bundle.
    Chunk {
        /// Family from the topic.
        family: String,
        /// Release number.
        version: u64,
        /// Chunk index.
        index: u32,
        /// The bytes (checked against the release's hash by `model`).
        bytes: Vec<u8>,
    },
    /// The cloud's receipt for uplinked messages.
    Ack(UplinkAck),
    /// Not for this edge (other site, own echo, unknown topic).
    Ignored,
}

/// Decodes a message; `Err` carries the message kind and why it was refused.
pub fn classify(
    site: &str,
    topic_name: &str,
    payload: &[u8],
    max_bytes: usize,
    now_ms: i64,
) -> Result<Inbound, (&'static str, DecodeError)> {
    let Some(route) = topic::parse(topic_name) else {
        return Ok(Inbound::Ignored);
    };
    match route {
        Route::Metrics { site: s, host } if s == site => {
            metrics(host, payload, max_bytes).map_err(|e| ("metrics", e))
        }
        Route::Results { site: s, .. } if s == site => decode::<CommandResult>(payload, max_bytes)
            .map(Inbound::Result)
            .map_err(|e| ("result", e)),
        Route::AgentPresence { site: s, host } if s == site => {
            let p: Presence = decode(payload, max_bytes).map_err(|e| ("presence", e))?;
            Ok(Inbound::AgentPresence {
                host: host.to_string(),
                online: p.state == PresenceState::Online,
                actions: p.actions,
            })
        }
        Route::Sensor { site: s, sensor } if s == site => {
            let (ts_ms, value) =
                parse_sensor(payload, now_ms, max_bytes).map_err(|e| ("sensor", e))?;
            Ok(Inbound::Sensor {
                name: sensor.to_string(),
                ts_ms,
                value,
            })
        }
        Route::UplinkAck { site: s } if s == site => decode::<UplinkAck>(payload, max_bytes)
            .map(Inbound::Ack)
            .map_err(|e| ("uplink_ack", e)),
        Route::ModelRelease { family } => decode::<SignedRelease>(payload, max_bytes)
            .map(|signed| Inbound::Release {
                family: family.to_string(),
                signed,
            })
            .map_err(|e| ("release", e)),
        Route::ModelChunk { .. } if payload.len() > max_bytes => Err((
            "chunk",
            DecodeError::Oversized {
                len: payload.len(),
                max: max_bytes,
            },
        )),
        Route::ModelChunk {
            family,
            version,
            index,
        } => Ok(Inbound::Chunk {
            family: family.to_string(),
            version,
            index,
            bytes: payload.to_vec(),
        }),
        _ => Ok(Inbound::Ignored),
    }
}

/// An agent's batch, checked against the host of its topic: an agent
/// speaks only for its own host's entities.
fn metrics(host: &str, payload: &[u8], max_bytes: usize) -> Result<Inbound, DecodeError> {
    let d = decode_meta::<MetricBatch>(payload, max_bytes)?;
    let (mut batch, sent_ms) = (d.body, d.sent_ms);
    if batch.host != host {
        return Err(DecodeError::Malformed(format!(
            "batch from {:?} on the topic of {host:?}",
            batch.host
        )));
    }
    batch
        .samples
        .retain(|smp| smp.entity.host_name() == Some(host));
    Ok(Inbound::Batch { batch, sent_ms })
}

/// A sensor payload: a plain number (`21.5`), or JSON
/// `{"value": 21.5, "unit": "C", "timestamp": 1700000000}` where `unit` and
/// `timestamp` are optional and the timestamp is Unix seconds or milliseconds.
pub fn parse_sensor(
    payload: &[u8],
    now_ms: i64,
    max_bytes: usize,
) -> Result<(i64, f64), DecodeError> {
    if payload.len() > max_bytes.min(4096) {
        return Err(DecodeError::Oversized {
            len: payload.len(),
            max: max_bytes.min(4096),
        });
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| DecodeError::Malformed("sensor payload is not UTF-8".into()))?
        .trim();
    // NaN and inf are readings, if useless ones: the cache refuses them
    // and counts them as `not_finite`, like a batch's.
    if let Ok(v) = text.parse::<f64>() {
        return Ok((now_ms, v));
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Reading {
        value: f64,
        #[serde(default)]
        #[allow(dead_code)]
        unit: Option<String>,
        #[serde(default)]
        timestamp: Option<f64>,
    }
    let r: Reading = serde_json::from_str(text)
        .map_err(|e| DecodeError::Malformed(format!("sensor payload: {e}")))?;
    let ts = match r.timestamp {
        Some(t) if t.is_finite() && t > 1e11 => t as i64,
        Some(t) if t.is_finite() && t > 0.0 => (t * 1000.0) as i64,
        Some(_) => {
            return Err(DecodeError::Malformed(
                "sensor timestamp must be positive".into(),
            ))
        }
        None => now_ms,
    };
    Ok((ts, r.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::message::Sample;
    use vigil_core::{encode, EntityId};

    #[test]
    fn sensor_payload_forms() {
        assert_eq!(parse_sensor(b" 21.5 ", 7, 1024).unwrap(), (7, 21.5));
        assert_eq!(
            parse_sensor(br#"{"value":3,"unit":"C"}"#, 7, 1024).unwrap(),
            (7, 3.0)
        );
        assert_eq!(
            parse_sensor(br#"{"value":3,"timestamp":1700000000}"#, 7, 1024).unwrap(),
            (1_700_000_000_000, 3.0)
        );
        assert_eq!(
            parse_sensor(br#"{"value":3,"timestamp":1700000000123}"#, 7, 1024)
                .unwrap()
                .0,
            1_700_000_000_123
        );
        assert!(parse_sensor(b"NaN", 7, 1024).unwrap().1.is_nan());
        assert_eq!(parse_sensor(b"-inf", 7, 1024).unwrap().1, f64::NEG_INFINITY);
        for bad in [
            &b"hot"[..],
            b"{\"value\": 1e999}",
            b"{\"value\":\"x\"}",
            b"{\"v\":1}",
            &[0xff, 0x00],
        ] {
            assert!(parse_sensor(bad, 7, 1024).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn batches_are_checked_against_their_topic() {
        let sample = |host: &str| Sample {
            entity: EntityId::host(host),
            metric: "cpu_percent".into(),
            ts_ms: 1,
            value: 1.0,
        };
        let batch = MetricBatch {
            host: "h1".into(),
            seq: 1,
            samples: vec![sample("h1"), sample("h2")],
        };
        let got = classify("s", &topic::metrics("s", "h1"), &encode(&batch), 1 << 20, 0).unwrap();
        let Inbound::Batch { batch: b, .. } = got else {
            panic!("{got:?}")
        };
        assert_eq!(b.samples.len(), 1, "a foreign entity must be dropped");
        let err =
            classify("s", &topic::metrics("s", "h9"), &encode(&batch), 1 << 20, 0).unwrap_err();
        assert_eq!(err.0, "metrics");
        assert_eq!(
            classify(
                "other",
                &topic::metrics("s", "h1"),
                &encode(&batch),
                1 << 20,
                0
            )
            .unwrap(),
            Inbound::Ignored
        );
        let err = classify("s", &topic::metrics("s", "h1"), b"{garbage", 1 << 20, 0).unwrap_err();
        assert_eq!(err.1.reason(), "malformed");
    }
}
