//! Several aggregators sharing a fleet through etcd (`cluster.etcd` set).
//!
//! Each member holds one etcd lease, renewed every second. Under `prefix`:
//! - `members/{name}` = its API URL, and `adopting/{name}` = its name, both
//!   on its lease, while it lives;
//! - `sites/{site}` = the member that owns the site, on the owner's lease:
//!   only the owner subscribes to the site's rows and stores its uplinks
//!   (every member hears every site's heartbeats, anomalies and audit
//!   records, and lists them in its API);
//! - `home/{site}` = the member whose state (write-ahead log and receipts)
//!   has the site's history (no lease: it outlives its member);
//! - `leader` = the member that trains and publishes models.
//!
//! Every member's own state lives in `{data_dir}/members/{name}` beside the
//! shared store, so it is "with the data". When a member dies its lease
//! expires and its keys go; a survivor takes `adopting/{dead}`, reads the
//! dead member's receipts and log into its own (so each message is stored
//! once, [`crate::cloud`]), then takes every site whose home was the dead
//! member; once a roll has made the adopted rows its own, it deletes the
//! dead member's folder and lets `adopting/{dead}` go. A site no one has
//! owned goes to the live member that ranks highest for it (rendezvous
//! hashing: an even spread, and members starting together do not race for
//! the same sites); one its first choice leaves free for a few rounds goes
//! to any member below an even share.
//!
//! When etcd cannot be reached a member keeps serving the sites it owns and
//! takes no new ones (`vigil_cloud_cluster_etcd_up` 0). If etcd answers
//! again and its lease has expired meanwhile, others may own its sites: it
//! stops with an error, and its supervisor starts it again.

pub mod etcd;
mod member;

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub use member::{join, Member};

/// The cluster settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// etcd endpoints, e.g. `http://10.0.0.5:2379`. Empty: one aggregator,
    /// no cluster.
    pub etcd: Vec<String>,
    /// This member's name, unique in the cluster (default: the host name).
    pub name: Option<String>,
    /// Seconds a dead member's sites wait before others take them.
    pub lease_ttl_secs: u64,
    /// Prefix of every key in etcd.
    pub prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            etcd: Vec::new(),
            name: None,
            lease_ttl_secs: 10,
            prefix: "/vigil/cloud/".into(),
        }
    }
}

impl ClusterConfig {
    /// Whether a cluster is configured.
    pub fn enabled(&self) -> bool {
        !self.etcd.is_empty()
    }

    /// Every problem with the settings.
    pub fn validate(&self, e: &mut Vec<String>) {
        for ep in &self.etcd {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                e.push(format!(
                    "cluster.etcd: {ep:?} is not an http:// or https:// URL"
                ));
            }
        }
        if let Some(n) = &self.name {
            if !vigil_core::topic::valid_level(n) {
                e.push(format!("cluster.name: {n:?} is not a valid name"));
            }
        }
        if !(2..=300).contains(&self.lease_ttl_secs) {
            e.push(format!(
                "cluster.lease_ttl_secs: {} is outside 2..=300",
                self.lease_ttl_secs
            ));
        }
        if !self.prefix.ends_with('/') {
            e.push(format!("cluster.prefix: {:?} must end with /", self.prefix));
        }
    }

    /// This member's name.
    pub fn member_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| vigil_core::topic::valid_level(h))
                .unwrap_or_else(|| format!("cloud-{}", std::process::id()))
        })
    }
}

/// Where a member keeps its own state under the shared `data_dir`.
pub fn member_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("members").join(name)
}

/// Who leads, for the API and the model lifecycle. A lone aggregator
/// always leads.
#[derive(Debug, Default)]
pub struct Leadership {
    clustered: bool,
    leads: AtomicBool,
    /// The leader's name and API URL, when known.
    leader: Mutex<Option<(String, String)>>,
}

impl Leadership {
    /// A lone aggregator: it leads.
    pub fn alone() -> Self {
        Self {
            clustered: false,
            leads: AtomicBool::new(true),
            leader: Mutex::new(None),
        }
    }

    /// A member that does not lead until etcd says so.
    pub fn member() -> Self {
        Self {
            clustered: true,
            ..Default::default()
        }
    }

    /// Whether this aggregator trains and publishes.
    pub fn leads(&self) -> bool {
        !self.clustered || self.leads.load(Ordering::Relaxed)
    }

    /// Who leads, for a refusal: "cloud-2 (http://…)" or "no one yet".
    pub fn leader(&self) -> String {
        match self.leader.lock().ok().and_then(|l| l.clone()) {
            Some((name, url)) => format!("{name} ({url})"),
            None => "no one yet".into(),
        }
    }

    pub(crate) fn set(&self, leads: bool, leader: Option<(String, String)>) {
        self.leads.store(leads, Ordering::Relaxed);
        if let Ok(mut l) = self.leader.lock() {
            *l = leader;
        }
    }
}

/// What the run loop and the member tell each other.
#[derive(Debug, Default)]
pub struct Board {
    /// Sites seen (their edges' presence), for the member to place.
    pub seen: BTreeSet<String>,
    /// Dead members whose state the run loop has merged: their sites may
    /// now be taken.
    pub merged: BTreeSet<String>,
    /// Dead members whose folder the run loop has deleted: their
    /// `adopting/` key may go.
    pub removed: BTreeSet<String>,
}

/// Most sites remembered as seen.
pub const MAX_SEEN: usize = 1_000_000;

/// What the member asks of the run loop.
#[derive(Debug, PartialEq)]
pub enum Order {
    /// Store these sites' uplinks.
    Own(Vec<String>),
    /// Stop taking them.
    Disown(Vec<String>),
    /// Read this dead member's state (its folder) into ours.
    Adopt(String, PathBuf),
    /// The lease is gone while others may own our sites: stop.
    Stop(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_it_leads_and_a_member_leads_only_when_etcd_says_so() {
        assert!(Leadership::alone().leads());
        let m = Leadership::member();
        assert!(!m.leads());
        assert_eq!(m.leader(), "no one yet");
        m.set(
            false,
            Some(("cloud-2".into(), "http://127.0.0.1:9103".into())),
        );
        assert!(!m.leads());
        assert_eq!(m.leader(), "cloud-2 (http://127.0.0.1:9103)");
        m.set(true, Some(("cloud-1".into(), String::new())));
        assert!(m.leads());
    }

    #[test]
    fn bad_settings_are_all_reported() {
        let c = ClusterConfig {
            etcd: vec!["127.0.0.1:2379".into()],
            name: Some("a/b".into()),
            lease_ttl_secs: 1,
            prefix: "/vigil".into(),
        };
        let mut e = Vec::new();
        c.validate(&mut e);
        assert_eq!(e.len(), 4, "{e:?}");
    }
}
