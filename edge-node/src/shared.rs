//! State the edge's run loop writes and its API reads: the cache, the
//! entities, recent anomalies, the audit trail, agents, versions and
//! approvals. Its own module, so the API and the run loop both depend on
//! it and not on each other.

use crate::approval::SharedApprovals;
use crate::audit::AuditLog;
use crate::cache::Cache;
use crate::config::EdgeConfig;
use crate::entity::Entities;
use crate::policy::PolicySet;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use vigil_core::message::AnomalyEvent;
use vigil_models::Detector;

/// Versions reported by the API and heartbeat.
#[derive(Clone, Debug, Default)]
pub struct Info {
    /// Model scoring now.
    pub model_version: String,
    /// Its release number, when it came from the cloud.
    pub model_release: Option<u64>,
    /// Policy file in force.
    pub policy_version: String,
    /// Why the last edit of the policy file was refused (empty when the
    /// last edit was taken).
    pub policy_errors: Vec<String>,
    /// Policies in force naming an action an agent they send to lacks.
    pub policy_problems: Vec<String>,
}

/// State the run loop writes and the API reads. Locks are never held across `.await`.
pub struct Shared {
    /// Site.
    pub site: String,
    /// Node name.
    pub node: String,
    /// The series cache.
    pub cache: Mutex<Cache>,
    /// Entity roll-up.
    pub entities: Mutex<Entities>,
    /// Recent anomaly events.
    pub anomalies: Mutex<VecDeque<AnomalyEvent>>,
    /// The audit trail.
    pub audit: Mutex<AuditLog>,
    /// Agents by host: online or not.
    pub agents: Mutex<BTreeMap<String, bool>>,
    /// Versions in force.
    pub info: Mutex<Info>,
    /// Approval requests of `approve`-mode policies.
    pub approvals: SharedApprovals,
    /// Bearer token the API's approval endpoints require, when set.
    pub api_token: Option<String>,
}

impl Shared {
    /// The state of a starting edge: an empty cache bounded as configured,
    /// the audit log opened, the versions of the model and policies in force.
    pub fn new(
        config: &EdgeConfig,
        audit: AuditLog,
        detector: &Detector,
        policies: &PolicySet,
    ) -> Self {
        Shared {
            site: config.site.clone(),
            node: config.node.clone(),
            cache: Mutex::new(
                Cache::new(config.cache.max_series, config.cache.points_per_series)
                    .with_max_past(config.max_past_secs as i64 * 1000)
                    .with_max_abs(config.max_abs_value)
                    .with_lifecycle(
                        config.cache.evict_idle_secs as i64 * 1000,
                        config.cache.protect_secs as i64 * 1000,
                    ),
            ),
            entities: Mutex::new(Entities::default()),
            anomalies: Mutex::new(VecDeque::new()),
            audit: Mutex::new(audit),
            agents: Mutex::new(BTreeMap::new()),
            info: Mutex::new(Info {
                model_version: detector.model_version(),
                model_release: detector.release().map(|(_, v)| v),
                policy_version: policies.version.clone(),
                ..Default::default()
            }),
            approvals: SharedApprovals::default(),
            api_token: config.api_token.clone(),
        }
    }

    /// The cache, even if a panicking holder poisoned the lock.
    pub fn lock_cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The entities, even if poisoned.
    pub fn lock_entities(&self) -> MutexGuard<'_, Entities> {
        self.entities.lock().unwrap_or_else(|p| p.into_inner())
    }
}
