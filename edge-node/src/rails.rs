//! Settings of the site-wide rails over every policy (the rails themselves
//! are in `remediation/rails/`): a global rate limit on actions, and a
//! short-circuit that stops acting when too much of the site looks sick at
//! once (a sick fleet is not a sick host: restarting everything amplifies
//! an outage whose cause is elsewhere, a network or a shared database).

use serde::{Deserialize, Serialize};

/// Site-wide rail settings (the edge config's `rails:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RailsConfig {
    /// Most actions sent in any 60 s, all targets and policies together.
    pub max_actions_per_minute: u32,
    /// Stop acting while more than this share of targets is anomalous...
    pub short_circuit_share: f64,
    /// ...and at least this many targets are known (a site of two hosts with
    /// one sick is not a sick fleet).
    pub short_circuit_min_targets: usize,
    /// Catalog action sent once when the short-circuit trips, to page a human.
    pub page_action: Option<String>,
    /// Agent that runs `page_action`.
    pub page_agent: Option<String>,
    /// Hysteresis: an anomalous target counts as recovered only once its
    /// score stays below this share of the detector threshold...
    pub recover_ratio: f64,
    /// ...for this many seconds.
    pub recover_secs: f64,
    /// After a liveness condition on a target clears (a dead service is
    /// back), anomalies whose top metric is one the condition names (`up`,
    /// `http_ok`) do not move its score policies for this many seconds: the
    /// return to health is not a fault.
    pub recovery_grace_secs: f64,
}

impl Default for RailsConfig {
    fn default() -> Self {
        Self {
            max_actions_per_minute: 20,
            short_circuit_share: 0.5,
            short_circuit_min_targets: 4,
            page_action: None,
            page_agent: None,
            recover_ratio: 0.8,
            recover_secs: 5.0,
            recovery_grace_secs: 120.0,
        }
    }
}

impl RailsConfig {
    /// The entity levels for a detector `threshold`.
    pub fn levels(&self, threshold: f64) -> crate::entity::Levels {
        crate::entity::Levels {
            enter: threshold,
            exit: threshold * self.recover_ratio,
            exit_hold_ms: (self.recover_secs * 1000.0) as i64,
        }
    }

    /// Every problem, prefixed `rails.`.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        if self.max_actions_per_minute == 0 {
            e.push("rails.max_actions_per_minute: must be at least 1".into());
        }
        if !(self.short_circuit_share > 0.0 && self.short_circuit_share <= 1.0) {
            e.push(format!(
                "rails.short_circuit_share: {} is outside (0, 1]",
                self.short_circuit_share
            ));
        }
        if !(self.recover_ratio > 0.0 && self.recover_ratio <= 1.0) {
            e.push(format!(
                "rails.recover_ratio: {} is outside (0, 1]",
                self.recover_ratio
            ));
        }
        if !(0.0..=3600.0).contains(&self.recover_secs) {
            e.push(format!(
                "rails.recover_secs: {} is outside 0..=3600",
                self.recover_secs
            ));
        }
        if !(0.0..=86_400.0).contains(&self.recovery_grace_secs) {
            e.push(format!(
                "rails.recovery_grace_secs: {} is outside 0..=86400",
                self.recovery_grace_secs
            ));
        }
        if self.page_action.is_some() != self.page_agent.is_some() {
            e.push("rails.page_action and rails.page_agent go together".into());
        }
        e
    }
}

/// Whether the site is sick as a whole: `sick` of `total` targets anomalous.
pub fn fleet_sick(cfg: &RailsConfig, sick: usize, total: usize) -> bool {
    total >= cfg.short_circuit_min_targets && sick as f64 > cfg.short_circuit_share * total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_is_sick_only_above_the_share_and_the_size() {
        let c = RailsConfig::default();
        assert!(!fleet_sick(&c, 2, 3), "too few targets to judge");
        assert!(!fleet_sick(&c, 2, 4), "half is not more than half");
        assert!(fleet_sick(&c, 3, 4));
    }

    #[test]
    fn validation_reports_everything() {
        let c = RailsConfig {
            max_actions_per_minute: 0,
            short_circuit_share: 1.5,
            page_action: Some("page".into()),
            recover_ratio: 0.0,
            ..RailsConfig::default()
        };
        assert_eq!(c.validate().len(), 4, "{:?}", c.validate());
    }
}
