//! Entity and series identifiers.
//!
//! An entity is a thing that can be sick and healed: `host/<host>`,
//! `service/<host>/<service>` or `sensor/<sensor>`. A series is one metric of
//! an entity, written `<entity>:<metric>`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The thing a metric describes and a remediation acts on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntityId(pub String);

impl EntityId {
    /// The entity of a whole host.
    pub fn host(host: &str) -> Self {
        Self(format!("host/{host}"))
    }
    /// A service running on a host.
    pub fn service(host: &str, service: &str) -> Self {
        Self(format!("service/{host}/{service}"))
    }
    /// A sensor publishing straight to the edge.
    pub fn sensor(sensor: &str) -> Self {
        Self(format!("sensor/{sensor}"))
    }
    /// The host that owns this entity, if it names one (sensors do not).
    pub fn host_name(&self) -> Option<&str> {
        let mut parts = self.0.split('/');
        match (parts.next(), parts.next()) {
            (Some("host" | "service"), Some(h)) if !h.is_empty() => Some(h),
            _ => None,
        }
    }
    /// The kind prefix: `host`, `service` or `sensor`.
    pub fn kind(&self) -> &str {
        self.0.split('/').next().unwrap_or("")
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks the id's form: `host/<h>`, `service/<h>/<s>` or `sensor/<s>`,
    /// each name 1-64 of `[A-Za-z0-9._-]`. Whatever arrives from the
    /// network as a target passes this before anything acts on it (no
    /// spaces, no `;`, nothing a shell or a URL would read twice).
    pub fn validate(&self) -> Result<(), String> {
        let parts: Vec<&str> = self.0.split('/').collect();
        let names = match parts.as_slice() {
            ["host", h] | ["sensor", h] => vec![*h],
            ["service", h, s] => vec![*h, *s],
            _ => {
                return Err(format!(
                    "{:?} is not host/<host>, service/<host>/<service> or sensor/<sensor>",
                    self.0
                ))
            }
        };
        match names.iter().find(|n| !crate::topic::valid_level(n)) {
            Some(n) => Err(format!(
                "{:?}: name {n:?} must be 1-64 of [A-Za-z0-9._-]",
                self.0
            )),
            None => Ok(()),
        }
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One metric of one entity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesId {
    /// Entity the metric belongs to.
    pub entity: EntityId,
    /// Metric name, e.g. `http_latency_seconds`.
    pub metric: String,
}

impl SeriesId {
    /// Builds a series id from its parts.
    pub fn new(entity: EntityId, metric: impl Into<String>) -> Self {
        Self {
            entity,
            metric: metric.into(),
        }
    }
    /// Parses `<entity>:<metric>`; `None` if there is no colon or a part is
    /// empty. An entity's names hold no colon; a metric may (a scraped
    /// `http_requests_total:rate{code="500"}`).
    pub fn parse(text: &str) -> Option<Self> {
        let (entity, metric) = text.split_once(':')?;
        if entity.is_empty() || metric.is_empty() {
            return None;
        }
        Some(Self::new(EntityId(entity.to_string()), metric))
    }
}

impl fmt::Display for SeriesId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.entity, self.metric)
    }
}

/// `*`-glob match (a `*` matches any run of characters, `/` included).
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns() {
        assert!(glob("service/*/web", "service/h1/web"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXc"));
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn a_series_id_splits_at_the_entity_s_end() {
        let id = SeriesId::parse("host/h1:req_total:rate{url=\"http://x:80\"}").unwrap();
        assert_eq!(id.entity.as_str(), "host/h1");
        assert_eq!(id.metric, "req_total:rate{url=\"http://x:80\"}");
        assert_eq!(SeriesId::parse(&id.to_string()), Some(id));
        assert_eq!(SeriesId::parse("host/h1:"), None);
        assert_eq!(SeriesId::parse("nocolon"), None);
    }

    #[test]
    fn entity_ids_are_checked_for_form() {
        for ok in ["host/h1", "service/h1/web", "sensor/temp-1"] {
            assert_eq!(EntityId(ok.into()).validate(), Ok(()), "{ok}");
        }
        for bad in [
            "host/demo-host; rm -rf /tmp/x",
            "host/",
            "service/h1",
            "service/h1/web/x",
            "disk/h1",
            "host/a b",
            "",
        ] {
            assert!(EntityId(bad.into()).validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn entity_knows_its_host() {
        assert_eq!(EntityId::service("h1", "web").host_name(), Some("h1"));
        assert_eq!(EntityId::host("h2").host_name(), Some("h2"));
        assert_eq!(EntityId::sensor("t1").host_name(), None);
        assert_eq!(EntityId::sensor("t1").kind(), "sensor");
    }

    #[test]
    fn series_round_trips_through_text() {
        let s = SeriesId::new(EntityId::service("h", "web"), "rss_bytes");
        assert_eq!(s.to_string(), "service/h/web:rss_bytes");
        assert_eq!(SeriesId::parse(&s.to_string()), Some(s));
        assert_eq!(SeriesId::parse("nocolon"), None);
        assert_eq!(SeriesId::parse("x:"), None);
    }
}
