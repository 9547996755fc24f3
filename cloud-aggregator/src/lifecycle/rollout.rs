//! The canary: a new release goes to a share of the edge nodes first; their
//! heartbeats (model health per interval) are tallied against the rest of
//! the fleet's. A clear regression rolls it back as soon as enough has been
//! scored; promotion waits for the whole observation window. Pure: time and
//! heartbeats are passed in.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigil_core::message::ModelHealth;

/// Canary settings (`models.canary` in the cloud config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanaryConfig {
    /// Share of online edge nodes that take a new release first (at least one).
    pub share: f64,
    /// Seconds the canary is watched after its first node runs it, before promotion.
    pub observe_secs: u64,
    /// Values the canary must have scored before any decision.
    pub min_scored: u64,
    /// Regression: the canary's share of flagged values exceeds the rest's
    /// by this factor and by `margin`.
    pub max_ratio: f64,
    /// Absolute slack on every share compared.
    pub margin: f64,
    /// Roll back when no canary node runs the release after this many seconds.
    pub load_timeout_secs: u64,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self {
            share: 0.1,
            observe_secs: 900,
            min_scored: 5000,
            max_ratio: 2.0,
            margin: 0.01,
            load_timeout_secs: 600,
        }
    }
}

impl CanaryConfig {
    /// Every problem with the settings.
    pub fn validate(&self, e: &mut Vec<String>) {
        if !(self.share > 0.0 && self.share <= 1.0) {
            e.push(format!(
                "models.canary.share: {} is outside (0, 1]",
                self.share
            ));
        }
        if self.observe_secs == 0 || self.load_timeout_secs == 0 {
            e.push("models.canary.observe_secs and load_timeout_secs must be positive".into());
        }
        if self.max_ratio.is_nan()
            || self.max_ratio < 1.0
            || self.margin.is_nan()
            || self.margin < 0.0
        {
            e.push("models.canary.max_ratio must be at least 1 and margin not negative".into());
        }
    }
}

/// Health summed over heartbeats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Heartbeats counted.
    pub heartbeats: u64,
    /// Values scored.
    pub scored: u64,
    /// Values flagged.
    pub flagged: u64,
    /// Anomaly events.
    pub anomalies: u64,
    /// Remediation commands.
    pub actions: u64,
    /// `up` at 0 and not flagged.
    pub missed: u64,
}

impl Tally {
    fn add(&mut self, h: &ModelHealth) {
        self.heartbeats += 1;
        self.scored += h.scored;
        self.flagged += h.flagged;
        self.anomalies += h.anomalies;
        self.actions += h.actions;
        self.missed += h.missed;
    }

    fn share(&self, n: u64) -> f64 {
        n as f64 / self.scored.max(1) as f64
    }
}

/// A canary in progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// The release under trial.
    pub version: u64,
    /// Nodes (`site/node`) that take it.
    pub cohort: Vec<String>,
    /// Started, Unix ms.
    pub started_ms: i64,
    /// When a cohort node first reported running it.
    pub loaded_ms: Option<i64>,
    /// Cohort nodes running the release.
    pub canary: Tally,
    /// Other nodes running the stable release.
    pub control: Tally,
}

/// What the canary concluded.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Keep watching.
    Wait,
    /// Good: every node should take it.
    Promote(String),
    /// Bad: back to the stable release.
    Rollback(String),
}

/// The cohort for `version`: the first `ceil(share × n)` of the online
/// nodes ordered by a hash of version and node, so each release picks a
/// different, reproducible cohort.
pub fn cohort(nodes: &[String], version: u64, share: f64) -> Vec<String> {
    let mut ranked: Vec<(Vec<u8>, &String)> = nodes
        .iter()
        .map(|n| {
            let h = Sha256::digest(format!("{version}/{n}").as_bytes()).to_vec();
            (h, n)
        })
        .collect();
    ranked.sort();
    let k = ((nodes.len() as f64 * share).ceil() as usize).clamp(1, nodes.len().max(1));
    let mut c: Vec<String> = ranked.into_iter().take(k).map(|(_, n)| n.clone()).collect();
    c.sort();
    c
}

impl Canary {
    /// A canary of `version` on `cohort`.
    pub fn new(version: u64, cohort: Vec<String>, now_ms: i64) -> Self {
        Self {
            version,
            cohort,
            started_ms: now_ms,
            loaded_ms: None,
            canary: Tally::default(),
            control: Tally::default(),
        }
    }

    /// Counts one heartbeat of `node`, which runs `release`; `stable` is the
    /// release the rest of the fleet should run.
    pub fn observe(
        &mut self,
        node: &str,
        release: Option<u64>,
        stable: Option<u64>,
        health: &ModelHealth,
        now_ms: i64,
    ) {
        let in_cohort = self.cohort.iter().any(|c| c == node);
        if in_cohort && release == Some(self.version) {
            self.loaded_ms.get_or_insert(now_ms);
            self.canary.add(health);
        } else if !in_cohort && release == stable {
            self.control.add(health);
        }
    }

    /// Judges the tallies so far.
    pub fn decide(&self, cfg: &CanaryConfig, now_ms: i64) -> Decision {
        let Some(loaded) = self.loaded_ms else {
            if now_ms - self.started_ms >= cfg.load_timeout_secs as i64 * 1000 {
                return Decision::Rollback(format!(
                    "no canary node ran the release within {} s",
                    cfg.load_timeout_secs
                ));
            }
            return Decision::Wait;
        };
        let (c, k) = (&self.canary, &self.control);
        if c.scored < cfg.min_scored {
            return Decision::Wait;
        }
        // Without a control group, compare against a perfect one.
        let worse = |name: &str, cn: u64, kn: u64| {
            let (cs, ks) = (c.share(cn), if k.scored > 0 { k.share(kn) } else { 0.0 });
            (cs > (ks * cfg.max_ratio).max(ks + cfg.margin)).then(|| {
                format!(
                    "{name}: {:.2}% of values on the canary against {:.2}% on the rest",
                    cs * 100.0,
                    ks * 100.0
                )
            })
        };
        let regressions: Vec<String> = [
            worse("flagged", c.flagged, k.flagged),
            worse("actions", c.actions, k.actions),
            worse("missed incidents", c.missed, k.missed),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !regressions.is_empty() {
            return Decision::Rollback(regressions.join("; "));
        }
        if now_ms - loaded >= cfg.observe_secs as i64 * 1000 {
            return Decision::Promote(format!(
                "no regression over {} s: flagged {:.2}% against {:.2}%, {} values scored",
                cfg.observe_secs,
                c.share(c.flagged) * 100.0,
                k.share(k.flagged) * 100.0,
                c.scored
            ));
        }
        Decision::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(scored: u64, flagged: u64) -> ModelHealth {
        ModelHealth {
            scored,
            flagged,
            ..ModelHealth::default()
        }
    }

    fn cfg() -> CanaryConfig {
        CanaryConfig {
            observe_secs: 60,
            min_scored: 100,
            load_timeout_secs: 30,
            ..CanaryConfig::default()
        }
    }

    #[test]
    fn cohorts_are_a_share_reproducible_and_differ_by_version() {
        let nodes: Vec<String> = (0..20).map(|i| format!("s{i}/e")).collect();
        let a = cohort(&nodes, 7, 0.1);
        assert_eq!(a.len(), 2);
        assert_eq!(a, cohort(&nodes, 7, 0.1));
        assert_eq!(cohort(&nodes, 7, 0.01).len(), 1);
        assert_eq!(cohort(&nodes, 7, 1.0).len(), 20);
        let others: Vec<Vec<String>> = (8..14).map(|v| cohort(&nodes, v, 0.1)).collect();
        assert!(others.iter().any(|o| o != &a));
    }

    #[test]
    fn a_model_that_flags_everything_is_rolled_back_early() {
        let mut c = Canary::new(2, vec!["a/e".into()], 0);
        assert_eq!(c.decide(&cfg(), 1000), Decision::Wait);
        // Heartbeats from nodes still on the old release do not count.
        c.observe("a/e", Some(1), Some(1), &health(50, 50), 1000);
        assert_eq!(c.loaded_ms, None);
        c.observe("a/e", Some(2), Some(1), &health(60, 60), 2000);
        c.observe("b/e", Some(1), Some(1), &health(600, 3), 2000);
        assert_eq!(c.decide(&cfg(), 2000), Decision::Wait, "too little scored");
        c.observe("a/e", Some(2), Some(1), &health(60, 59), 3000);
        let Decision::Rollback(why) = c.decide(&cfg(), 3000) else {
            panic!("expected a rollback")
        };
        assert!(why.contains("flagged: 99.17%"), "{why}");
    }

    #[test]
    fn a_good_model_is_promoted_after_the_window_and_a_silent_one_rolled_back() {
        let mut c = Canary::new(2, vec!["a/e".into()], 0);
        c.observe("a/e", Some(2), Some(1), &health(500, 2), 5000);
        c.observe("b/e", Some(1), Some(1), &health(500, 3), 5000);
        assert_eq!(c.decide(&cfg(), 30_000), Decision::Wait);
        assert!(matches!(c.decide(&cfg(), 65_000), Decision::Promote(_)));
        // Missing incidents the rest catches is a regression too.
        c.observe(
            "a/e",
            Some(2),
            Some(1),
            &ModelHealth {
                scored: 100,
                missed: 40,
                ..ModelHealth::default()
            },
            66_000,
        );
        assert!(matches!(c.decide(&cfg(), 66_000), Decision::Rollback(r) if r.contains("missed")));
        let silent = Canary::new(3, vec!["a/e".into()], 0);
        assert!(
            matches!(silent.decide(&cfg(), 31_000), Decision::Rollback(r) if r.contains("no canary node"))
        );
    }
}
