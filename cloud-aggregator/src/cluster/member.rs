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

    fn under(&self, kvs: &[Kv], kind: &str) -> BTreeMap<String, String> {
        let p = format!("{}{kind}/", self.prefix);
        kvs.iter()
            .filter_map(|kv| Some((kv.key.strip_prefix(&p)?.to_string(), kv.value.clone())))
            .collect()
    }

    async fn read(&self) -> Result<Seen, String> {
        let all = self.etcd.prefix(&self.prefix).await?;
        let leader = all
            .iter()
            .find(|kv| kv.key == format!("{}leader", self.prefix))
            .map(|kv| kv.value.clone());
        Ok(Seen {
            members: self.under(&all, "members"),
            owners: self.under(&all, "sites"),
            homes: self.under(&all, "home"),
            adopting: self.under(&all, "adopting"),
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
        let mut waiting = BTreeMap::new();
        let mut ratelog = RateLog::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let places = (&mut owned, &mut waiting);
            match self.round(&board, &orders, places, &leadership).await {
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

    /// One round; `Ok(false)` when the lease has expired. `owned`: the sites
    /// this member owns; `waiting`: free sites and the rounds they have been
    /// free.
    async fn round(
        &self,
        board: &Mutex<Board>,
        orders: &mpsc::Sender<Order>,
        (owned, waiting): (&mut BTreeSet<String>, &mut BTreeMap<String, u32>),
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
        let mut own = Vec::new();
        for (site, owner) in &s.owners {
            if owner == &self.name && owned.insert(site.clone()) {
                own.push(site.clone());
            }
        }
        if !own.is_empty() {
            send(orders, Order::Own(own)).await;
        }
        let gone: Vec<String> = owned
            .iter()
            .filter(|site| s.owners.get(*site) != Some(&self.name))
            .cloned()
            .collect();
        if !gone.is_empty() {
            gone.iter().for_each(|site| {
                owned.remove(site);
            });
            send(orders, Order::Disown(gone)).await;
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
        let share = known.len().div_ceil(s.members.len().max(1));
        let mut take = Vec::new();
        let mut free_now = BTreeMap::new();
        for site in known {
            if s.owners.contains_key(site) {
                continue;
            }
            let home = s.homes.get(site);
            let ours = home.is_some_and(|h| *h == self.name || merged.contains(h));
            let free = ours
                || home.is_none_or(|h| {
                    !s.members.contains_key(h)
                        && !s.adopting.contains_key(h)
                        && !member_dir(&self.data_dir, h).exists()
                });
            if !free {
                continue;
            }
            let rounds = waiting.get(site).copied().unwrap_or(0) + 1;
            free_now.insert(site.clone(), rounds);
            let first = first_choice(s.members.keys(), site) == Some(&self.name);
            let left = rounds > FIRST_CHOICE_ROUNDS && owned.len() + take.len() < share;
            if (ours || first || left) && take.len() < MAX_CLAIMS {
                take.push(site.clone());
            }
        }
        *waiting = free_now;
        let got = self.claim(&take, &s.homes).await?;
        if !got.is_empty() {
            owned.extend(got.iter().cloned());
            send(orders, Order::Own(got)).await;
        }
        Ok(true)
    }
}

impl Member {
    /// Claims `sites` (and makes this member their home), a batch to a
    /// transaction, one by one where a batch finds one taken; the sites got.
    async fn claim(
        &self,
        sites: &[String],
        homes: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, String> {
        let mut got = Vec::new();
        let ops = |batch: &[String]| {
            let keys: Vec<String> = batch.iter().map(|s| self.key("sites", s)).collect();
            let puts: Vec<(String, String)> = batch
                .iter()
                .filter(|s| homes.get(*s) != Some(&self.name))
                .map(|s| (self.key("home", s), self.name.clone()))
                .collect();
            (keys, puts)
        };
        for batch in sites.chunks(CLAIM_BATCH) {
            let (keys, puts) = ops(batch);
            if self
                .etcd
                .create_all(&keys, &self.name, self.lease, &puts)
                .await?
            {
                got.extend(batch.iter().cloned());
                continue;
            }
            for site in batch {
                let (keys, puts) = ops(std::slice::from_ref(site));
                if self
                    .etcd
                    .create_all(&keys, &self.name, self.lease, &puts)
                    .await?
                {
                    got.push(site.clone());
                }
            }
        }
        Ok(got)
    }
}

/// Sites a transaction claims (two operations each, within etcd's 128).
const CLAIM_BATCH: usize = 60;
/// Most sites claimed in one round, so a round stays short.
const MAX_CLAIMS: usize = 1200;
/// Rounds (about seconds) a free site waits for its first choice before
/// any member below an even share may take it.
const FIRST_CHOICE_ROUNDS: u32 = 5;

/// The live member that ranks highest for `site` (rendezvous hashing).
fn first_choice<'a>(members: impl Iterator<Item = &'a String>, site: &str) -> Option<&'a String> {
    members.max_by_key(|m| fnv1a(&[m.as_bytes(), b"/", site.as_bytes()]))
}

/// FNV-1a, 64 bits, then MurmurHash3's finaliser (FNV alone leaves the
/// high bits, which decide the ranking, poorly mixed): the same in every
/// member's process.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

async fn send(orders: &mpsc::Sender<Order>, order: Order) {
    let _ = orders.send(order).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_choices_spread_sites_evenly_and_agree_everywhere() {
        let members = [
            "cloud-1".to_string(),
            "cloud-2".to_string(),
            "cloud-3".to_string(),
        ];
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            // Names as the fleet bench makes them.
            let site = format!("fleet-{i:05}");
            let a = super::first_choice(members.iter(), &site);
            let b = super::first_choice(members.iter().rev(), &site);
            assert_eq!(a, b, "the order members are listed in does not matter");
            let at = members.iter().position(|m| Some(m) == a).unwrap();
            counts[at] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..=1150).contains(&c)),
            "{counts:?}"
        );
    }
}
