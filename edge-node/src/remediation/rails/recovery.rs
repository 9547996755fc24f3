//! The recovery rail: once a liveness condition on a target clears (a dead
//! service runs again), an anomaly whose top metric is one the condition
//! names does not move the target's score policies for
//! `rails.recovery_grace_secs`. The return to health (`up` back at 1 after
//! a long outage) is not a fault to repair again.

use super::Hold;
use crate::entity::EntityState;
use crate::liveness::Liveness;
use crate::policy::{glob, Policy, PolicySet};
use std::collections::HashMap;
use vigil_core::EntityId;

const RAIL: &str = "recovery";

/// Targets whose liveness condition held, and those that have just come back.
#[derive(Debug, Default)]
pub(in crate::remediation) struct Recovery {
    /// Targets a condition holds for now, with the metrics it names.
    down: HashMap<EntityId, Vec<String>>,
    /// Targets whose condition cleared: when, and the metrics it named.
    back: HashMap<EntityId, (i64, Vec<String>)>,
}

impl Recovery {
    /// Follows the conditions as they stand at `now_ms`; forgets recoveries
    /// older than `grace_ms`.
    pub fn observe(&mut self, live: &Liveness, policies: &PolicySet, now_ms: i64, grace_ms: i64) {
        let mut down: HashMap<EntityId, Vec<String>> = HashMap::new();
        for f in live.firing() {
            let named = policies
                .policies
                .iter()
                .find(|p| p.name == f.policy)
                .and_then(|p| p.matcher.as_ref())
                .map(|m| m.when.iter().map(|c| c.metric.clone()).collect::<Vec<_>>())
                .unwrap_or_else(|| vec![f.metric.clone()]);
            down.entry(f.entity.clone()).or_default().extend(named);
        }
        for (entity, named) in self.down.drain() {
            if !down.contains_key(&entity) {
                self.back.insert(entity, (now_ms, named));
            }
        }
        for entity in down.keys() {
            self.back.remove(entity);
        }
        self.back.retain(|_, (at, _)| now_ms - *at < grace_ms);
        self.down = down;
    }

    /// Holds score policy `p` on `e` while `e` is in its grace after a
    /// recovery and its top metric is one the cleared condition named.
    pub fn check(&self, p: &Policy, e: &EntityState, now_ms: i64) -> Result<(), Hold> {
        let Some((at, named)) = self.back.get(&e.entity) else {
            return Ok(());
        };
        let Some(metric) = named.iter().find(|m| glob(m, &e.top_metric)) else {
            return Ok(());
        };
        Err(Hold::because(
            RAIL,
            p,
            format!(
                "{} came back {:.1} s ago ({metric} was what its liveness condition watched): its return is not a fault",
                e.entity,
                (now_ms - at) as f64 / 1000.0
            ),
        ))
    }
}
