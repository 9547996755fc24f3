//! Versioned message envelopes.
//!
//! Every payload on the wire is `{"v":1,"kind":"…","sent_ms":…,"body":{…}}`.
//! Spooled uplink messages also carry `"seq":{"stream":…,"n":…,"floor":…}`,
//! which the cloud uses to store each exactly once and to acknowledge it.
//! Decoding checks size first, then the version, then the kind, so a bad
//! message is classified (and counted by the caller) without ever panicking.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The schema version this build writes and the only one it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// A message body that knows its envelope kind.
pub trait Payload: Serialize + DeserializeOwned {
    /// The `kind` field written into the envelope.
    const KIND: &'static str;
}

#[derive(Serialize)]
struct OutEnvelope<'a, P> {
    v: u32,
    kind: &'a str,
    sent_ms: i64,
    body: &'a P,
}

/// Delivery sequence of a spooled uplink message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seq {
    /// Id of the sending buffer (new when a buffer is created afresh).
    pub stream: String,
    /// This message's number in the stream.
    pub n: u64,
    /// Every number below this one has been acknowledged or dropped by the
    /// sender and will never be sent again.
    pub floor: u64,
}

/// Longest stream id a receiver accepts (receivers keep state per stream).
pub const MAX_STREAM_LEN: usize = 64;

/// The envelope as read: the body is kept as its raw text (borrowed from
/// the message), checked for version and kind, and only then parsed into
/// its type, once, without an intermediate tree.
#[derive(Deserialize)]
struct InEnvelope<'a> {
    v: u32,
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    seq: Option<Seq>,
    #[serde(default)]
    sent_ms: Option<i64>,
    #[serde(borrow, default)]
    body: Option<&'a serde_json::value::RawValue>,
}

/// A decoded envelope: the body and what the envelope says about it.
#[derive(Debug, PartialEq)]
pub struct Decoded<P> {
    /// The payload.
    pub body: P,
    /// Delivery sequence of a spooled uplink message.
    pub seq: Option<Seq>,
    /// When the sender encoded it, by the sender's clock (Unix ms); a
    /// receiver compares it with its own clock to see a sender's skew.
    pub sent_ms: Option<i64>,
}

/// Why a message was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// Bigger than the configured limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Size of the message.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a valid envelope or body.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A schema version this build does not read.
    #[error("unknown schema version {0} (this build reads {SCHEMA_VERSION})")]
    UnknownVersion(u32),
    /// A valid envelope of another kind than expected on this topic.
    #[error("expected a {expected} message, got {got}")]
    WrongKind {
        /// Kind expected on the topic.
        expected: &'static str,
        /// Kind found in the envelope.
        got: String,
    },
}

impl DecodeError {
    /// A short, bounded label value for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::UnknownVersion(_) => "unknown_version",
            DecodeError::WrongKind { .. } => "wrong_kind",
        }
    }
}

/// Serialises `body` into a version-1 envelope.
pub fn encode<P: Payload>(body: &P) -> Vec<u8> {
    let env = OutEnvelope {
        v: SCHEMA_VERSION,
        kind: P::KIND,
        sent_ms: crate::clock::now_ms(),
        body,
    };
    // Serialising plain data structs with string keys cannot fail.
    serde_json::to_vec(&env).unwrap_or_default()
}

/// Adds `seq` to an envelope made by [`encode`] (without parsing it again:
/// the field goes right after the opening brace).
pub fn with_seq(envelope: &[u8], seq: &Seq) -> Vec<u8> {
    let head = serde_json::json!({ "seq": seq }).to_string();
    let mut out = Vec::with_capacity(envelope.len() + head.len());
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    match envelope.get(1..) {
        Some(rest) if envelope.first() == Some(&b'{') && rest.len() > 1 => {
            out.push(b',');
            out.extend_from_slice(rest);
        }
        _ => out.push(b'}'),
    }
    out
}

/// Parses an envelope of kind `P::KIND`, refusing anything over `max_bytes`.
pub fn decode<P: Payload>(bytes: &[u8], max_bytes: usize) -> Result<P, DecodeError> {
    decode_seq(bytes, max_bytes).map(|(p, _)| p)
}

/// As [`decode`], also returning the delivery sequence if there is one.
pub fn decode_seq<P: Payload>(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<(P, Option<Seq>), DecodeError> {
    decode_meta(bytes, max_bytes).map(|d| (d.body, d.seq))
}

/// As [`decode`], with the envelope's sequence and send time.
pub fn decode_meta<P: Payload>(bytes: &[u8], max_bytes: usize) -> Result<Decoded<P>, DecodeError> {
    decode_kind(bytes, max_bytes, P::KIND)
}

/// The delivery sequence of an envelope of any kind, its body left unread
/// (a cheap look at a logged message's number).
pub fn decode_seq_only(bytes: &[u8], max_bytes: usize) -> Result<Option<Seq>, DecodeError> {
    envelope(bytes, max_bytes).map(|env| env.seq)
}

/// The envelope of `bytes` (at most `max_bytes`), its body left unread.
fn envelope(bytes: &[u8], max_bytes: usize) -> Result<InEnvelope<'_>, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(DecodeError::Oversized {
            len: bytes.len(),
            max: max_bytes,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// As [`decode_meta`] for a body of kind `kind` read into any type, which
/// may borrow from `bytes` (a receiver's lean view of a payload).
pub fn decode_kind<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    max_bytes: usize,
    kind: &'static str,
) -> Result<Decoded<T>, DecodeError> {
    let env: InEnvelope<'a> = envelope(bytes, max_bytes)?;
    if env.v != SCHEMA_VERSION {
        return Err(DecodeError::UnknownVersion(env.v));
    }
    if env.kind != kind {
        return Err(DecodeError::WrongKind {
            expected: kind,
            got: env.kind.into_owned(),
        });
    }
    if let Some(s) = env.seq.as_ref().filter(|s| s.stream.len() > MAX_STREAM_LEN) {
        return Err(DecodeError::Malformed(format!(
            "stream id of {} bytes (at most {MAX_STREAM_LEN})",
            s.stream.len()
        )));
    }
    let body = env.body.map_or("null", |b| b.get());
    let body = serde_json::from_str(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok(Decoded {
        body,
        seq: env.seq,
        sent_ms: env.sent_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Command, Presence, PresenceState};

    fn presence() -> Presence {
        Presence {
            node: "n1".into(),
            role: "agent".into(),
            state: PresenceState::Online,
            ts_ms: 5,
            actions: vec![],
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&presence());
        let back: Presence = decode(&bytes, 1024).unwrap();
        assert_eq!(back, presence());
    }

    #[test]
    fn sequence_round_trips_and_plain_envelopes_have_none() {
        let seq = Seq {
            stream: "ab12".into(),
            n: 7,
            floor: 3,
        };
        let bytes = with_seq(&encode(&presence()), &seq);
        let (back, got): (Presence, _) = decode_seq(&bytes, 1024).unwrap();
        assert_eq!(back, presence());
        assert_eq!(got, Some(seq.clone()));
        let (_, none): (Presence, _) = decode_seq(&encode(&presence()), 1024).unwrap();
        assert_eq!(none, None);
        // Garbage stays garbage rather than becoming valid.
        assert!(decode_seq::<Presence>(&with_seq(b"", &seq), 1024).is_err());
        let long = Seq {
            stream: "x".repeat(MAX_STREAM_LEN + 1),
            ..seq
        };
        let err = decode_seq::<Presence>(&with_seq(&encode(&presence()), &long), 1024);
        assert_eq!(err.unwrap_err().reason(), "malformed");
    }

    #[test]
    fn refuses_oversized_before_parsing() {
        let bytes = encode(&presence());
        let err = decode::<Presence>(&bytes, 10).unwrap_err();
        assert!(matches!(err, DecodeError::Oversized { max: 10, .. }));
    }

    #[test]
    fn classifies_bad_input() {
        assert_eq!(
            decode::<Presence>(b"{not json", 100).unwrap_err().reason(),
            "malformed"
        );
        let v2 = br#"{"v":2,"kind":"presence","body":{}}"#;
        assert_eq!(
            decode::<Presence>(v2, 100).unwrap_err(),
            DecodeError::UnknownVersion(2)
        );
        let other = encode(&presence());
        assert_eq!(
            decode::<Command>(&other, 1000).unwrap_err().reason(),
            "wrong_kind"
        );
        let bad_body = br#"{"v":1,"kind":"presence","body":{"node":3}}"#;
        assert_eq!(
            decode::<Presence>(bad_body, 100).unwrap_err().reason(),
            "malformed"
        );
        assert_eq!(
            decode::<Presence>(&[0xff, 0xfe], 100).unwrap_err().reason(),
            "malformed"
        );
    }
}
