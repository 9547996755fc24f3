//! The edge node's Prometheus metrics, in its own explicit registry.

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use vigil_core::mqtt::LinkMetrics;

/// Label values of `vigil_edge_actions_held_back_total{rail}`: the rails
/// the engine names, so every series exists from the start.
pub const RAILS: [&str; 9] = [
    "budget",
    "cooldown",
    "short_circuit",
    "rate_limit",
    "approval",
    "shadow_mode",
    "agent",
    "lease",
    "other",
];

/// The rail label of a held-back audit record (the short-circuit audits its
/// trip under its policy name).
pub fn rail_label(rec: &vigil_core::message::AuditRecord) -> &'static str {
    let name = rec.rail.as_deref().unwrap_or(&rec.policy);
    if name == crate::remediation::SHORT_CIRCUIT {
        return "short_circuit";
    }
    let norm = name.replace([' ', '-'], "_");
    RAILS
        .iter()
        .find(|r| **r == norm)
        .copied()
        .unwrap_or("other")
}

/// Buckets for detection and reaction delays, seconds.
const DELAY_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Handles to every edge metric; cheap to clone.
#[derive(Clone)]
pub struct EdgeMetrics {
    /// The registry served on `/metrics`.
    pub registry: Registry,
    /// MQTT message counters.
    pub link: LinkMetrics,
    /// Series in the cache.
    pub series: IntGauge,
    /// Samples accepted into the cache.
    pub samples: IntCounter,
    /// Samples refused, by reason.
    pub samples_refused: IntCounterVec,
    /// Samples placed at their arrival time, by why.
    pub samples_restamped: IntCounterVec,
    /// Results for no command in flight (forged, another edge's, replays).
    pub unexpected_results: IntCounter,
    /// Series evicted from the cache, by reason.
    pub series_evicted: IntCounterVec,
    /// Policies naming an action an agent they would send to lacks.
    pub policy_problems: IntGauge,
    /// Anomaly score per series (limited to the highest `score_gauges_max`).
    pub anomaly_score: GaugeVec,
    /// Anomaly events opened.
    pub anomalies: IntCounter,
    /// Entities anomalous now.
    pub anomalous_entities: IntGauge,
    /// Remediation commands sent.
    pub commands_sent: IntCounter,
    /// Agent results, by outcome (plus `no_result`).
    pub action_results: IntCounterVec,
    /// Decisions a rail or mode held back, by rail.
    pub held_back: IntCounterVec,
    /// 1 while the site-wide short-circuit holds every action.
    pub short_circuit: IntGauge,
    /// Pages sent when the site-wide short-circuit trips.
    pub pages: IntCounter,
    /// Per policy, the runs its budget still allows on its most-repaired target.
    pub budget_left: IntGaugeVec,
    /// The detector's anomaly threshold (scores at or above it are anomalous).
    pub threshold: prometheus::Gauge,
    /// Recovery checks, by result (`verified`, `failed`).
    pub verifications: IntCounterVec,
    /// Time to score one tick.
    pub tick_seconds: Histogram,
    /// Audit records that could not be written to disk.
    pub audit_write_errors: IntCounter,
    /// Policy file reloads, by result (`ok`, `failed`).
    pub policy_reloads: IntCounterVec,
    /// Verified and failed recoveries per policy.
    pub policy_verifications: IntCounterVec,
    /// Share of each policy's verified actions that fixed the target.
    pub policy_fix_ratio: GaugeVec,
    /// Release number scoring now (0: the edge's own online model).
    pub model_release: IntGauge,
    /// Model updates, by result (`installed`, `refused`).
    pub model_updates: IntCounterVec,
    /// Refused releases and bundles, by reason.
    pub model_refusals: IntCounterVec,
    /// Bundle chunks received, by result (`stored`, `duplicate`, `bad`, `unexpected`).
    pub model_chunks: IntCounterVec,
    /// From the first chunk request to the model scoring.
    pub model_transfer_seconds: Histogram,
    /// From the first sample scoring above the recovery level to the anomaly.
    pub fault_to_detection_seconds: Histogram,
    /// From the anomaly to the first command sent for it.
    pub detection_to_action_seconds: Histogram,
    /// The uplink buffer and its delivery.
    pub uplink: crate::uplink::UplinkMetrics,
}

impl EdgeMetrics {
    /// Fresh metrics in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let link = LinkMetrics::new(&registry)?;
        let m = Self {
            uplink: crate::uplink::UplinkMetrics::new(&registry)?,
            link,
            series: IntGauge::new("vigil_edge_series", "Series in the edge cache.")?,
            samples: IntCounter::new(
                "vigil_edge_samples_total",
                "Samples accepted into the edge cache.",
            )?,
            samples_refused: IntCounterVec::new(
                Opts::new(
                    "vigil_edge_samples_refused_total",
                    "Samples refused by the edge, by reason.",
                ),
                &["reason"],
            )?,
            samples_restamped: IntCounterVec::new(
                Opts::new(
                    "vigil_edge_samples_restamped_total",
                    "Samples judged by their arrival time (sender_clock: the sender's clock is off; ahead: stamped ahead of the edge's clock).",
                ),
                &["reason"],
            )?,
            unexpected_results: IntCounter::new(
                "vigil_edge_unexpected_results_total",
                "Command results for no command in flight: never sent by this edge (forged, another edge's) or already closed (replays); each is audited.",
            )?,
            series_evicted: IntCounterVec::new(
                Opts::new(
                    "vigil_edge_series_evicted_total",
                    "Series evicted from the cache (idle: no sample for evict_idle_secs; room: a new series took the slot of the stalest one that was not live).",
                ),
                &["reason"],
            )?,
            policy_problems: IntGauge::new(
                "vigil_edge_policy_problems",
                "Policies naming an action that an agent they would send to does not have in its catalog (as the agents announce them).",
            )?,
            anomaly_score: GaugeVec::new(
                Opts::new(
                    "vigil_anomaly_score",
                    "Latest anomaly score of a series, 0..1 (highest series only).",
                ),
                &["series"],
            )?,
            anomalies: IntCounter::new(
                "vigil_anomalies_total",
                "Anomaly events opened (entity turned anomalous).",
            )?,
            anomalous_entities: IntGauge::new(
                "vigil_edge_anomalous_entities",
                "Entities anomalous now.",
            )?,
            commands_sent: IntCounter::new(
                "vigil_edge_commands_sent_total",
                "Remediation commands sent to agents.",
            )?,
            action_results: IntCounterVec::new(
                Opts::new(
                    "vigil_edge_action_results_total",
                    "Remediation results reported by agents, by outcome.",
                ),
                &["outcome"],
            )?,
            held_back: IntCounterVec::new(
                Opts::new(
                    "vigil_edge_actions_held_back_total",
                    "Remediation decisions held back, by rail (budget, cooldown, short_circuit, rate_limit, approval, shadow, ...).",
                ),
                &["rail"],
            )?,
            pages: IntCounter::new(
                "vigil_edge_pages_total",
                "Pages (rails.page_action) sent when the site-wide short-circuit tripped.",
            )?,
            budget_left: IntGaugeVec::new(
                Opts::new(
                    "vigil_edge_budget_left",
                    "Per policy, the runs its budget still allows on its most-repaired target (0: spent; policy names come from the policy file).",
                ),
                &["policy"],
            )?,
            threshold: prometheus::Gauge::new(
                "vigil_edge_detector_threshold",
                "Anomaly score at or above which a series counts as anomalous.",
            )?,
            short_circuit: IntGauge::new(
                "vigil_edge_short_circuit",
                "1 while the site-wide short-circuit holds every remediation action.",
            )?,
            verifications: IntCounterVec::new(
                Opts::new(
                    "vigil_edge_verifications_total",
                    "Recovery checks after an action, by result.",
                ),
                &["result"],
            )?,
            tick_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "vigil_edge_tick_duration_seconds",
                    "Time to score every series in one tick.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
            )?,
            audit_write_errors: IntCounter::new(
                "vigil_edge_audit_write_errors_total",
                "Audit records that could not be written to disk.",
            )?,
            policy_reloads: IntCounterVec::new(
                Opts::new(
                    "vigil_edge_policy_reloads_total",
                    "Policy file reloads, by result; a failed one leaves the policies in force.",
                ),
                &["result"],
            )?,
            policy_verifications: IntCounterVec::new(
                Opts::new(
                    "vigil_edge_policy_verifications_total",
                    "Recovery checks after an action, by policy and result.",
                ),
                &["policy", "result"],
            )?,
            policy_fix_ratio: GaugeVec::new(
                Opts::new(
                    "vigil_edge_policy_fix_ratio",
                    "Share of a policy's actions after which the target recovered (verified / checked).",
                ),
                &["policy"],
            )?,
            model_release: IntGauge::new(
                "vigil_edge_model_release",
                "Release number of the model scoring now (0: the edge's own online-trained model).",
            )?,
            model_updates: IntCounterVec::new(
                Opts::new(
                    "vigil_edge_model_updates_total",
                    "Model updates, by result (installed, refused).",
                ),
                &["result"],
            )?,
            model_refusals: IntCounterVec::new(
                Opts::new(
                    "vigil_edge_model_refusals_total",
                    "Releases and bundles refused, by reason; the running model stays.",
                ),
                &["reason"],
            )?,
            model_chunks: IntCounterVec::new(
                Opts::new(
                    "vigil_edge_model_chunks_total",
                    "Model bundle chunks received, by result.",
                ),
                &["result"],
            )?,
            model_transfer_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "vigil_edge_model_transfer_seconds",
                    "Time from the first chunk request to the new model scoring.",
                )
                .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            )?,
            fault_to_detection_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "vigil_edge_fault_to_detection_seconds",
                    "From the first sample of the top metric scoring above the recovery level (in the run that led to it) to the anomaly event.",
                )
                .buckets(DELAY_BUCKETS.to_vec()),
            )?,
            detection_to_action_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "vigil_edge_detection_to_action_seconds",
                    "From an anomaly event to a remediation command sent for it (persistence, escalation and rails included).",
                )
                .buckets(DELAY_BUCKETS.to_vec()),
            )?,
            registry,
        };
        let r = &m.registry;
        vigil_core::telemetry::register(r, "edge", &m.model_release)?;
        vigil_core::telemetry::register(r, "edge", &m.model_updates)?;
        vigil_core::telemetry::register(r, "edge", &m.model_refusals)?;
        vigil_core::telemetry::register(r, "edge", &m.model_chunks)?;
        vigil_core::telemetry::register(r, "edge", &m.model_transfer_seconds)?;
        vigil_core::telemetry::register(r, "edge", &m.series)?;
        vigil_core::telemetry::register(r, "edge", &m.samples)?;
        vigil_core::telemetry::register(r, "edge", &m.samples_refused)?;
        vigil_core::telemetry::register(r, "edge", &m.samples_restamped)?;
        vigil_core::telemetry::register(r, "edge", &m.unexpected_results)?;
        vigil_core::telemetry::register(r, "edge", &m.series_evicted)?;
        vigil_core::telemetry::register(r, "edge", &m.policy_problems)?;
        for r in ["idle", "room"] {
            m.series_evicted.with_label_values(&[r]);
        }
        vigil_core::telemetry::register(r, "edge", &m.anomaly_score)?;
        vigil_core::telemetry::register(r, "edge", &m.anomalies)?;
        vigil_core::telemetry::register(r, "edge", &m.anomalous_entities)?;
        vigil_core::telemetry::register(r, "edge", &m.commands_sent)?;
        vigil_core::telemetry::register(r, "edge", &m.action_results)?;
        vigil_core::telemetry::register(r, "edge", &m.held_back)?;
        vigil_core::telemetry::register(r, "edge", &m.short_circuit)?;
        vigil_core::telemetry::register(r, "edge", &m.threshold)?;
        vigil_core::telemetry::register(r, "edge", &m.budget_left)?;
        vigil_core::telemetry::register(r, "edge", &m.pages)?;
        // Every bounded label value exists from the start, so dashboards and
        // alerts see a 0 rather than no series.
        for rail in RAILS {
            m.held_back.with_label_values(&[rail]);
        }
        let outcomes = vigil_core::message::Outcome::ALL.map(|o| o.as_str());
        for o in outcomes.iter().chain(&["no_result"]) {
            m.action_results.with_label_values(&[o]);
        }
        for v in ["verified", "failed"] {
            m.verifications.with_label_values(&[v]);
        }
        for r in ["installed", "refused"] {
            m.model_updates.with_label_values(&[r]);
        }
        for r in crate::cache::Refusal::ALL {
            m.samples_refused.with_label_values(&[r.as_str()]);
        }
        for r in crate::timing::Restamp::ALL {
            m.samples_restamped.with_label_values(&[r.as_str()]);
        }
        for c in ["stored", "duplicate", "bad", "unexpected"] {
            m.model_chunks.with_label_values(&[c]);
        }
        for r in [
            "malformed",
            "missing_file",
            "tampered",
            "unsigned",
            "unknown_key",
            "bad_signature",
            "model",
            "older",
            "mismatch",
        ] {
            m.model_refusals.with_label_values(&[r]);
        }
        vigil_core::telemetry::register(r, "edge", &m.fault_to_detection_seconds)?;
        vigil_core::telemetry::register(r, "edge", &m.detection_to_action_seconds)?;
        vigil_core::telemetry::register(r, "edge", &m.verifications)?;
        vigil_core::telemetry::register(r, "edge", &m.tick_seconds)?;
        vigil_core::telemetry::register(r, "edge", &m.audit_write_errors)?;
        vigil_core::telemetry::register(r, "edge", &m.policy_reloads)?;
        vigil_core::telemetry::register(r, "edge", &m.policy_verifications)?;
        vigil_core::telemetry::register(r, "edge", &m.policy_fix_ratio)?;
        Ok(m)
    }

    /// Counts one recovery check of `policy` and updates its fix ratio.
    /// (Label values are policy names: bounded by the policy file.)
    pub fn policy_outcome(&self, policy: &str, fixed: bool) {
        let count = |r| self.policy_verifications.with_label_values(&[policy, r]);
        count(if fixed { "verified" } else { "failed" }).inc();
        let (ok, bad) = (count("verified").get(), count("failed").get());
        self.policy_fix_ratio
            .with_label_values(&[policy])
            .set(ok as f64 / (ok + bad).max(1) as f64);
    }
}
