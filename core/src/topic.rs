//! The MQTT topic scheme, under the versioned prefix `vigil/v1`.
//!
//! ```text
//! vigil/v1/{site}/{host}/metrics      agent → edge   MetricBatch
//! vigil/v1/{site}/{host}/commands     edge → agent   Command
//! vigil/v1/{site}/{host}/results      agent → edge   CommandResult
//! vigil/v1/{site}/{host}/presence     agent, retained, last will offline
//! vigil/v1/{site}/sensors/{sensor}    device → edge  a number or {"value":…}
//! vigil/v1/{site}/edge/presence       edge, retained, last will offline
//! vigil/v1/{site}/uplink/{kind}       edge → cloud   UplinkKind: scores|samples|anomaly|audit|heartbeat
//! vigil/v1/{site}/edge/ack            cloud → edge   UplinkAck (stored, may be deleted)
//! vigil/v1/models/{family}/release    cloud, retained SignedRelease
//! vigil/v1/models/{family}/chunk/{version}/{index}   cloud → edges, raw bytes
//! vigil/v1/models/{family}/request    edge → cloud   ChunkRequest
//! ```
//!
//! `models` is therefore not a usable site name.

/// Prefix of every topic.
pub const PREFIX: &str = "vigil/v1";

/// The site level under which model releases travel.
pub const MODELS: &str = "models";

/// The retained release of a model family.
pub fn model_release(family: &str) -> String {
    format!("{PREFIX}/{MODELS}/{family}/release")
}
/// One chunk of a release's bundle.
pub fn model_chunk(family: &str, version: u64, index: u32) -> String {
    format!("{PREFIX}/{MODELS}/{family}/chunk/{version}/{index}")
}
/// Filter for every chunk of one release (subscribed while it is fetched).
pub fn model_chunks(family: &str, version: u64) -> String {
    format!("{PREFIX}/{MODELS}/{family}/chunk/{version}/+")
}
/// Chunk requests of a family.
pub fn model_request(family: &str) -> String {
    format!("{PREFIX}/{MODELS}/{family}/request")
}

/// Host names that would collide with the fixed topic levels.
pub const RESERVED_HOSTS: [&str; 3] = ["sensors", "edge", "uplink"];

/// Agent metrics.
pub fn metrics(site: &str, host: &str) -> String {
    format!("{PREFIX}/{site}/{host}/metrics")
}
/// Commands for one agent.
pub fn commands(site: &str, host: &str) -> String {
    format!("{PREFIX}/{site}/{host}/commands")
}
/// Results from one agent.
pub fn results(site: &str, host: &str) -> String {
    format!("{PREFIX}/{site}/{host}/results")
}
/// Presence of one agent.
pub fn agent_presence(site: &str, host: &str) -> String {
    format!("{PREFIX}/{site}/{host}/presence")
}
/// One sensor's readings.
pub fn sensor(site: &str, sensor: &str) -> String {
    format!("{PREFIX}/{site}/sensors/{sensor}")
}
/// Presence of the site's edge node.
pub fn edge_presence(site: &str) -> String {
    format!("{PREFIX}/{site}/edge/presence")
}
/// The cloud's receipts for a site's spooled uplink.
pub fn uplink_ack(site: &str) -> String {
    format!("{PREFIX}/{site}/edge/ack")
}

/// Uplink of one message kind.
pub fn uplink(site: &str, kind: UplinkKind) -> String {
    format!("{PREFIX}/{site}/uplink/{}", kind.as_str())
}

/// What an uplink message carries: the last level of its topic. The edge
/// sends by it, the cloud routes by it, and metrics label by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UplinkKind {
    /// Raw samples (`SampleBatch`).
    Samples,
    /// Samples with their scores (`SampleBatch`, sent before raw ones).
    Scores,
    /// An anomaly event (`AnomalyEvent`).
    Anomaly,
    /// An audit record (`AuditRecord`).
    Audit,
    /// The edge's heartbeat (`Heartbeat`).
    Heartbeat,
}

impl UplinkKind {
    /// Every kind.
    pub const ALL: [UplinkKind; 5] = [
        UplinkKind::Samples,
        UplinkKind::Scores,
        UplinkKind::Anomaly,
        UplinkKind::Audit,
        UplinkKind::Heartbeat,
    ];

    /// The topic level, and the label in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            UplinkKind::Samples => "samples",
            UplinkKind::Scores => "scores",
            UplinkKind::Anomaly => "anomaly",
            UplinkKind::Audit => "audit",
            UplinkKind::Heartbeat => "heartbeat",
        }
    }

    /// The kind a topic level names; `None` for anything else.
    pub fn parse(level: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == level)
    }
}

/// Subscription filters: what each role listens to, built here beside the
/// topics they must match.
pub mod filter {
    use super::{UplinkKind, PREFIX};

    /// Every agent's metrics at a site (the edge).
    pub fn metrics(site: &str) -> String {
        format!("{PREFIX}/{site}/+/metrics")
    }
    /// Every agent's command results at a site (the edge).
    pub fn results(site: &str) -> String {
        format!("{PREFIX}/{site}/+/results")
    }
    /// Every presence at a site: its agents' and its edge's (the edge).
    pub fn presence(site: &str) -> String {
        format!("{PREFIX}/{site}/+/presence")
    }
    /// Every sensor of a site (the edge).
    pub fn sensors(site: &str) -> String {
        format!("{PREFIX}/{site}/sensors/+")
    }
    /// Every uplink of every site (the cloud).
    pub fn all_uplinks() -> String {
        format!("{PREFIX}/+/uplink/+")
    }
    /// One kind of uplink of every site (a clustered cloud hears every
    /// site's heartbeats, anomalies and audit records, whoever owns it).
    pub fn all_uplinks_of(kind: UplinkKind) -> String {
        format!("{PREFIX}/+/uplink/{}", kind.as_str())
    }
    /// Every presence of every site (the cloud).
    pub fn all_presence() -> String {
        format!("{PREFIX}/+/+/presence")
    }
}

/// What a topic is, as parsed from an incoming message.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// Agent metrics from `host`.
    Metrics {
        /// Site.
        site: &'a str,
        /// Host.
        host: &'a str,
    },
    /// Commands for `host`.
    Commands {
        /// Site.
        site: &'a str,
        /// Host.
        host: &'a str,
    },
    /// Results from `host`.
    Results {
        /// Site.
        site: &'a str,
        /// Host.
        host: &'a str,
    },
    /// Presence of agent `host`.
    AgentPresence {
        /// Site.
        site: &'a str,
        /// Host.
        host: &'a str,
    },
    /// Edge presence.
    EdgePresence {
        /// Site.
        site: &'a str,
    },
    /// A sensor reading.
    Sensor {
        /// Site.
        site: &'a str,
        /// Sensor name.
        sensor: &'a str,
    },
    /// A model family's release.
    ModelRelease {
        /// Family.
        family: &'a str,
    },
    /// A chunk of a release's bundle.
    ModelChunk {
        /// Family.
        family: &'a str,
        /// Release number.
        version: u64,
        /// Chunk index.
        index: u32,
    },
    /// A chunk request.
    ModelRequest {
        /// Family.
        family: &'a str,
    },
    /// The cloud's receipts for a site's uplink.
    UplinkAck {
        /// Site.
        site: &'a str,
    },
    /// An uplink message.
    Uplink {
        /// Site.
        site: &'a str,
        /// Kind (last level).
        kind: UplinkKind,
    },
}

/// Parses a topic of the scheme; `None` for anything else.
pub fn parse(topic: &str) -> Option<Route<'_>> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [MODELS, family, "release"] => Some(Route::ModelRelease { family }),
        [MODELS, family, "request"] => Some(Route::ModelRequest { family }),
        [MODELS, family, "chunk", version, index] => Some(Route::ModelChunk {
            family,
            version: version.parse().ok()?,
            index: index.parse().ok()?,
        }),
        [MODELS, ..] => None,
        [site, "sensors", sensor] => Some(Route::Sensor { site, sensor }),
        [site, "edge", "presence"] => Some(Route::EdgePresence { site }),
        [site, "edge", "ack"] => Some(Route::UplinkAck { site }),
        [site, "uplink", kind] => Some(Route::Uplink {
            site,
            kind: UplinkKind::parse(kind)?,
        }),
        [site, host, "metrics"] => Some(Route::Metrics { site, host }),
        [site, host, "commands"] => Some(Route::Commands { site, host }),
        [site, host, "results"] => Some(Route::Results { site, host }),
        [site, host, "presence"] => Some(Route::AgentPresence { site, host }),
        _ => None,
    }
}

/// Checks a site, host or sensor name for use as one topic level.
pub fn valid_level(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Checks a site name: a topic level that is not the reserved `models`.
pub fn valid_site(name: &str) -> bool {
    valid_level(name) && name != MODELS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_every_topic() {
        assert_eq!(
            parse(&metrics("s", "h")),
            Some(Route::Metrics {
                site: "s",
                host: "h"
            })
        );
        assert_eq!(
            parse(&commands("s", "h")),
            Some(Route::Commands {
                site: "s",
                host: "h"
            })
        );
        assert_eq!(
            parse(&results("s", "h")),
            Some(Route::Results {
                site: "s",
                host: "h"
            })
        );
        assert_eq!(
            parse(&agent_presence("s", "h")),
            Some(Route::AgentPresence {
                site: "s",
                host: "h"
            })
        );
        assert_eq!(
            parse(&sensor("s", "t")),
            Some(Route::Sensor {
                site: "s",
                sensor: "t"
            })
        );
        assert_eq!(
            parse(&edge_presence("s")),
            Some(Route::EdgePresence { site: "s" })
        );
        assert_eq!(
            parse(&uplink_ack("s")),
            Some(Route::UplinkAck { site: "s" })
        );
        for kind in UplinkKind::ALL {
            assert_eq!(
                parse(&uplink("s", kind)),
                Some(Route::Uplink { site: "s", kind })
            );
        }
        assert_eq!(parse("vigil/v1/s/uplink/scorez"), None);
        assert_eq!(
            parse(&model_release("f")),
            Some(Route::ModelRelease { family: "f" })
        );
        assert_eq!(
            parse(&model_request("f")),
            Some(Route::ModelRequest { family: "f" })
        );
        assert_eq!(
            parse(&model_chunk("f", 7, 12)),
            Some(Route::ModelChunk {
                family: "f",
                version: 7,
                index: 12
            })
        );
        assert_eq!(parse("vigil/v1/models/f/chunk/x/1"), None);
        assert_eq!(parse("vigil/v1/models/f/presence"), None);
        assert_eq!(parse("vigil/v2/s/h/metrics"), None);
        assert_eq!(parse("vigil/v1/s/h/other"), None);
    }

    /// MQTT filter matching: `+` is one level, `#` the rest.
    fn matches(filter: &str, topic: &str) -> bool {
        let (mut f, mut t) = (filter.split('/'), topic.split('/'));
        loop {
            match (f.next(), t.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn each_filter_matches_its_topics_and_no_other() {
        let cases = [
            (filter::metrics("s"), metrics("s", "h")),
            (filter::results("s"), results("s", "h")),
            (filter::presence("s"), agent_presence("s", "h")),
            (filter::presence("s"), edge_presence("s")),
            (filter::sensors("s"), sensor("s", "t")),
            (filter::all_uplinks(), uplink("s", UplinkKind::Audit)),
            (filter::all_presence(), agent_presence("s", "h")),
            (filter::all_presence(), edge_presence("s")),
            (
                filter::all_uplinks_of(UplinkKind::Anomaly),
                uplink("s", UplinkKind::Anomaly),
            ),
        ];
        for (f, t) in &cases {
            assert!(matches(f, t), "{f} should match {t}");
        }
        assert!(!matches(&filter::metrics("s"), &metrics("other", "h")));
        assert!(!matches(&filter::metrics("s"), &results("s", "h")));
        assert!(!matches(&filter::all_uplinks(), &uplink_ack("s")));
        let anomalies = filter::all_uplinks_of(UplinkKind::Anomaly);
        assert!(!matches(&anomalies, &uplink("s", UplinkKind::Audit)));
        assert!(!matches(&filter::sensors("s"), &metrics("s", "h")));
    }

    #[test]
    fn level_names() {
        assert!(valid_level("web-1.example_a"));
        assert!(!valid_level("a/b"));
        assert!(!valid_level("+"));
        assert!(!valid_level(""));
    }
}
