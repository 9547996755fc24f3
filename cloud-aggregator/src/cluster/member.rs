//! One member's side of the cluster: joining (a lease, its keys, waiting
//! while a survivor adopts what its last life left), then once a second
//! renewing the lease, following the leader and placing sites.

use super::etcd::{Etcd, Kv};
use super::{member_dir, Board, ClusterConfig, Leadership, Order};
use crate::metrics::CloudMetrics;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigil_core::ratelog::RateLog;

/// A member that has joined.
pub struct Member {
    etcd: Etcd,
    name: String,
    prefix: String,
    lease: i64,
    ttl: u64,
    data_dir: PathBuf,
}

/// Joins the cluster: a clear error naming the endpoints when etcd cannot
/// be reached or another live member has this name. Waits while a survivor
/// adopts this member's folder from a previous life.
pub async fn join(
    cfg: &ClusterConfig,
    data_dir: &std::path::Path,
    url: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Member> {
    let etcd = Etcd::new(&cfg.etcd, Duration::from_secs(2)).map_err(anyhow::Error::msg)?;
    let name = cfg.member_name();
    let lease = etcd
        .grant(cfg.lease_ttl_secs)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach etcd at {}: {e}", etcd.endpoints()))?;
    let m = Member {
        name,
        prefix: cfg.prefix.clone(),
        lease,
        ttl: cfg.lease_ttl_secs,
        data_dir: data_dir.to_path_buf(),
        etcd,
    };
    let key = m.key("members", &m.name);
    if !m
        .etcd
        .create(&key, url, lease)
        .await
        .map_err(anyhow::Error::msg)?
    {
        let _ = m.etcd.revoke(lease).await;
        anyhow::bail!(
            "another live aggregator is named {:?} in etcd ({key}); give each cluster.name its own",
            m.name
        );
    }
    // A survivor holds adopting/{name} while it reads our last life's state.
    let mine = m.key("adopting", &m.name);
    let mut waited = false;
    loop {
        let got = m.etcd.create(&mine, &m.name, lease).await;
        if got.as_ref().is_ok_and(|g| *g) {
            break;
        }
        if !waited {
            info!(member = %m.name, "Another aggregator is adopting this member's last state; waiting for it to finish.");
            waited = true;
        }
        if let Err(e) = m.etcd.keepalive(lease).await {
            warn!(error = %e, "etcd lease renewal failed while waiting.");
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("stopped while waiting to join"),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    info!(member = %m.name, etcd = %m.etcd.endpoints(), lease_ttl_secs = m.ttl, "Joined the aggregator cluster.");
    Ok(m)
}

/// Keys read in one round.
struct Seen {
    members: BTreeMap<String, String>,
    owners: BTreeMap<String, String>,
    homes: BTreeMap<String, String>,
    adopting: BTreeMap<String, String>,
    leader: Option<String>,
}

impl Member {
    /// This member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}/{name}", self.prefix)
    }

    fn under(&self, kvs: Vec<Kv>, kind: &str) -> BTreeMap<String, String> {
        let p = format!("{}{kind}/", self.prefix);
        kvs.into_iter()
            .filter_map(|kv| Some((kv.key.strip_prefix(&p)?.to_string(), kv.value)))
            .collect()
    }

    async fn read(&self) -> Result<Seen, String> {
        let all = self.etcd.prefix(&self.prefix).await?;
        let leader = all
            .iter()
            .find(|kv| kv.key == format!("{}leader", self.prefix))
            .map(|kv| kv.value.clone());
        Ok(Seen {
            members: self.under(all.clone(), "members"),
            owners: self.under(all.clone(), "sites"),
            homes: self.under(all.clone(), "home"),
            adopting: self.under(all, "adopting"),
            leader,
        })
    }

    /// Gives the lease back (after a clean stop): the sites move at once.
    pub async fn leave(self) {
        match self.etcd.revoke(self.lease).await {
            Ok(()) => {
                info!(member = %self.name, "Left the aggregator cluster; its sites move now.")
            }
            Err(e) => {
                warn!(error = %e, "Could not give the etcd lease back; this member's sites move when it expires.")
            }
        }
    }

    /// Renews, leads or follows, and places sites once a second until
    /// `shutdown` (returning itself, to [`Member::leave`] once the
    /// aggregator has rolled what it holds), or until its lease is lost.
    pub async fn run(
        self,
        board: Arc<Mutex<Board>>,
        orders: mpsc::Sender<Order>,
        leadership: Arc<Leadership>,
        metrics: CloudMetrics,
        shutdown: CancellationToken,
    ) -> Option<Self> {
        let mut owned = BTreeSet::new();
        let mut ratelog = RateLog::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match self.round(&board, &orders, &mut owned, &leadership).await {
                Ok(true) => metrics.cluster_etcd_up.set(1),
                Ok(false) => {
                    let why = "the etcd lease expired while etcd was out of reach; other aggregators may own this member's sites now";
                    let _ = orders.send(Order::Stop(why.into())).await;
                    return None;
                }
                Err(e) => {
                    metrics.cluster_etcd_up.set(0);
                    if let Some(skipped) = ratelog.allow("etcd") {
                        warn!(error = %e, sites = owned.len(), skipped, "etcd is out of reach: serving the sites this member owns, taking no new ones.");
                    }
                }
            }
            metrics.cluster_sites.set(owned.len() as i64);
            metrics.cluster_leader.set(i64::from(leadership.leads()));
        }
        Some(self)
    }

    /// One round; `Ok(false)` when the lease has expired.
    async fn round(
        &self,
        board: &Mutex<Board>,
        orders: &mpsc::Sender<Order>,
        owned: &mut BTreeSet<String>,
        leadership: &Leadership,
    ) -> Result<bool, String> {
        if self.etcd.keepalive(self.lease).await? <= 0 {
            return Ok(false);
        }
        let mut s = self.read().await?;
        if s.leader.is_none()
            && self
                .etcd
                .create(&format!("{}leader", self.prefix), &self.name, self.lease)
                .await?
        {
            info!(member = %self.name, "This aggregator now leads: it trains and publishes models.");
            s.leader = Some(self.name.clone());
        }
        let leader = s
            .leader
            .clone()
            .map(|n| (n.clone(), s.members.get(&n).cloned().unwrap_or_default()));
        leadership.set(s.leader.as_deref() == Some(self.name.as_str()), leader);

        // What etcd says we own (after a restart: what we owned before).
        for (site, owner) in &s.owners {
            if owner == &self.name && owned.insert(site.clone()) {
                send(orders, Order::Own(site.clone())).await;
            }
        }
        for site in owned.clone() {
            if s.owners.get(&site) != Some(&self.name) {
                owned.remove(&site);
                send(orders, Order::Disown(site)).await;
            }
        }

        let (merged, removed, seen) = match board.lock() {
            Ok(b) => (b.merged.clone(), b.removed.clone(), b.seen.clone()),
            Err(_) => return Err("board lock poisoned".into()),
        };
        for dead in &removed {
            if s.adopting.get(dead) == Some(&self.name) {
                self.etcd.delete(&self.key("adopting", dead)).await?;
                info!(member = %dead, "Adopted a dead member's state and sites.");
            }
        }

        // Dead members with state or sites: adopt one at a time.
        let dead: BTreeSet<&String> = s
            .homes
            .values()
            .filter(|h| **h != self.name && !s.members.contains_key(*h))
            .collect();
        let adopting_now = s
            .adopting
            .iter()
            .any(|(m, a)| a == &self.name && m != &self.name && !removed.contains(m));
        for m in dead {
            if adopting_now || merged.contains(m) || s.adopting.contains_key(m) {
                continue;
            }
            let dir = member_dir(&self.data_dir, m);
            if !dir.exists() {
                continue;
            }
            if self
                .etcd
                .create(&self.key("adopting", m), &self.name, self.lease)
                .await?
            {
                info!(member = %m, "A member is gone: adopting its state before taking its sites.");
                send(orders, Order::Adopt(m.clone(), dir)).await;
                break;
            }
        }

        // Place sites no one owns.
        let known: BTreeSet<&String> = seen.iter().chain(s.homes.keys()).collect();
        let alive = s.members.len().max(1);
        let share = known.len().div_ceil(alive);
        for site in known {
            if s.owners.contains_key(site) {
                continue;
            }
            let home = s.homes.get(site);
            let ours = home.is_some_and(|h| *h == self.name || merged.contains(h));
            let free = match home {
                None => true,
                Some(h) => {
                    ours || (!s.members.contains_key(h)
                        && !s.adopting.contains_key(h)
                        && !member_dir(&self.data_dir, h).exists())
                }
            };
            if !free || (!ours && owned.len() >= share) {
                continue;
            }
            if self
                .etcd
                .create(&self.key("sites", site), &self.name, self.lease)
                .await?
            {
                if home != Some(&self.name) {
                    self.etcd.put(&self.key("home", site), &self.name).await?;
                }
                owned.insert(site.clone());
                send(orders, Order::Own(site.clone())).await;
            }
        }
        Ok(true)
    }
}

async fn send(orders: &mpsc::Sender<Order>, order: Order) {
    let _ = orders.send(order).await;
}
