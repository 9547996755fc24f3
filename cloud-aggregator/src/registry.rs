//! The fleet registry: every agent and edge node seen, from retained
//! presence (with last will) and heartbeats. An edge whose heartbeat is older
//! than the TTL counts as offline even if its presence still says online.

use serde::Serialize;
use std::collections::BTreeMap;
use vigil_core::message::{Heartbeat, PresenceState};

/// One node as the cloud sees it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Node {
    /// Site.
    pub site: String,
    /// Node (host or edge) name.
    pub node: String,
    /// `agent` or `edge`.
    pub role: String,
    /// Online now.
    pub online: bool,
    /// Presence as last published.
    pub presence: Option<PresenceState>,
    /// Last heartbeat or presence, Unix ms.
    pub last_seen_ms: i64,
    /// From the latest heartbeat (edges).
    pub heartbeat: Option<Heartbeat>,
}

/// All nodes, by (site, role, node).
#[derive(Debug, Default)]
pub struct Registry {
    nodes: BTreeMap<(String, String, String), Node>,
    ttl_ms: i64,
}

impl Registry {
    /// A registry that expires heartbeats after `ttl_ms`.
    pub fn new(ttl_ms: i64) -> Self {
        Self {
            nodes: BTreeMap::new(),
            ttl_ms,
        }
    }

    fn entry(&mut self, site: &str, role: &str, node: &str) -> &mut Node {
        self.nodes
            .entry((site.into(), role.into(), node.into()))
            .or_insert_with(|| Node {
                site: site.into(),
                node: node.into(),
                role: role.into(),
                online: false,
                presence: None,
                last_seen_ms: 0,
                heartbeat: None,
            })
    }

    /// Records a presence message.
    pub fn presence(
        &mut self,
        site: &str,
        role: &str,
        node: &str,
        state: PresenceState,
        now_ms: i64,
    ) {
        let n = self.entry(site, role, node);
        n.presence = Some(state);
        n.last_seen_ms = now_ms;
    }

    /// Records an edge heartbeat.
    pub fn heartbeat(&mut self, hb: Heartbeat, now_ms: i64) {
        let n = self.entry(&hb.site.clone(), "edge", &hb.node.clone());
        n.heartbeat = Some(hb);
        n.last_seen_ms = now_ms;
    }

    /// Recomputes `online` for every node at `now_ms`.
    pub fn refresh(&mut self, now_ms: i64) {
        for n in self.nodes.values_mut() {
            let present = n.presence != Some(PresenceState::Offline);
            let fresh = match n.role.as_str() {
                // Edges heartbeat; agents have only their retained presence.
                "edge" => now_ms - n.last_seen_ms <= self.ttl_ms,
                _ => n.presence.is_some(),
            };
            n.online = present && fresh;
        }
    }

    /// Online edge nodes as `site/node`.
    pub fn online_edges(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.role == "edge" && n.online)
            .map(|n| format!("{}/{}", n.site, n.node))
            .collect()
    }

    /// Every node.
    pub fn nodes(&self) -> Vec<Node> {
        self.nodes.values().cloned().collect()
    }

    /// Counts by (role, online).
    pub fn counts(&self) -> BTreeMap<(String, bool), i64> {
        let mut c = BTreeMap::new();
        for n in self.nodes.values() {
            *c.entry((n.role.clone(), n.online)).or_default() += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(node: &str) -> Heartbeat {
        Heartbeat {
            site: "s".into(),
            node: node.into(),
            ts_ms: 0,
            version: "v".into(),
            model_version: "m".into(),
            series: 1,
            anomalous_entities: 0,
            agents_online: 1,
            model_family: "default".into(),
            model_release: None,
            health: Default::default(),
        }
    }

    #[test]
    fn edge_goes_offline_after_ttl_or_last_will() {
        let mut r = Registry::new(1000);
        r.presence("s", "edge", "e1", PresenceState::Online, 0);
        r.heartbeat(hb("e1"), 500);
        r.refresh(1200);
        assert!(r.nodes()[0].online);
        r.refresh(1600);
        assert!(
            !r.nodes()[0].online,
            "stale heartbeat must count as offline"
        );
        r.heartbeat(hb("e1"), 2000);
        r.presence("s", "edge", "e1", PresenceState::Offline, 2000);
        r.refresh(2000);
        assert!(!r.nodes()[0].online, "last will must count as offline");
    }

    #[test]
    fn agents_follow_presence() {
        let mut r = Registry::new(1000);
        r.presence("s", "agent", "h1", PresenceState::Online, 0);
        r.refresh(1_000_000);
        assert!(r.nodes()[0].online);
        r.presence("s", "agent", "h1", PresenceState::Offline, 5);
        r.refresh(6);
        assert_eq!(r.counts().get(&("agent".to_string(), false)), Some(&1));
    }
}
