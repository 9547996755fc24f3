//! Injects faults and follows what Vigil did about each one, from the same
//! uplink messages the cloud receives: the anomaly that detected it, the
//! action the edge sent, and the audit record that verified the recovery.

use super::FaultKind;
use serde::Serialize;
use vigil_core::message::{AnomalyEvent, AuditKind, AuditRecord};
use vigil_core::EntityId;

/// How far before an injection an anomaly may open and still count (one tick).
const ANOMALY_LEAD_MS: i64 = 1000;
/// How far before an injection a false alarm (an anomaly that matched no
/// fault) may have opened for an action taken on it after the injection to
/// be the fault's: the fault keeps that episode open, so it raises no
/// anomaly event of its own, and the edge acts on it as the fault deepens.
const FALSE_ALARM_LEAD_MS: i64 = 10_000;

/// What happened to one injected fault.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FaultRecord {
    /// Kind of fault.
    pub kind: FaultKind,
    /// Entity it was injected into.
    pub target: EntityId,
    /// When it was injected, Unix ms.
    pub injected_at_ms: i64,
    /// First anomaly on the target after injection, Unix ms.
    pub detected_at_ms: Option<i64>,
    /// Metric the detector named as the top contributor.
    pub detected_metric: Option<String>,
    /// Action the edge sent.
    pub action: Option<String>,
    /// When it was sent, Unix ms.
    pub action_at_ms: Option<i64>,
    /// The agent's reported result.
    pub action_result: Option<String>,
    /// When recovery was verified, Unix ms.
    pub healed_at_ms: Option<i64>,
    /// Seconds from injection to detection.
    pub detect_secs: Option<f64>,
    /// Seconds from injection to verified recovery.
    pub heal_secs: Option<f64>,
    /// Why it was not healed (empty when it was).
    pub why_not: Option<String>,
    /// Latest hold-back or failure detail seen for this fault.
    #[serde(skip)]
    last_note: Option<String>,
    /// A false alarm open at the injection that this fault's repair was
    /// acted on (its audit records are the fault's).
    #[serde(skip)]
    adopted: Option<String>,
}

/// Follows every injected fault.
#[derive(Debug, Default)]
pub struct Tracker {
    faults: Vec<FaultRecord>,
    /// Anomalies that matched no fault (the most recent few), with their
    /// opening time: what was done about them is not a repair
    /// of a later fault, unless the fault came while one was open and the
    /// action after it (see [`FALSE_ALARM_LEAD_MS`]).
    earlier: std::collections::VecDeque<(String, i64)>,
}

/// Earlier anomalies remembered.
const EARLIER: usize = 256;

/// A fault injected this recently that is not detected yet may still be.
const STILL_OPEN_MS: i64 = 30_000;

fn secs(from: i64, to: Option<i64>) -> Option<f64> {
    to.map(|t| ((t - from) as f64 / 100.0).round() / 10.0)
}

impl Tracker {
    /// Records an injection.
    pub fn injected(&mut self, kind: FaultKind, target: EntityId, at_ms: i64) {
        self.faults.push(FaultRecord {
            kind,
            target,
            injected_at_ms: at_ms,
            detected_at_ms: None,
            detected_metric: None,
            action: None,
            action_at_ms: None,
            action_result: None,
            healed_at_ms: None,
            detect_secs: None,
            heal_secs: None,
            why_not: None,
            last_note: None,
            adopted: None,
        });
    }

    /// The latest fault on `target` injected at or before `ts_ms`.
    fn fault_for(&mut self, target: &EntityId, ts_ms: i64) -> Option<&mut FaultRecord> {
        self.fault_within(target, ts_ms, 0)
    }

    /// Like `fault_for`, but also takes an anomaly that opened up to one
    /// tick before the injection: a blip in the tick just before stays open
    /// as the fault takes hold, and no new anomaly event follows.
    fn fault_for_anomaly(&mut self, target: &EntityId, ts_ms: i64) -> Option<&mut FaultRecord> {
        self.fault_within(target, ts_ms, ANOMALY_LEAD_MS)
    }

    fn fault_within(
        &mut self,
        target: &EntityId,
        ts_ms: i64,
        lead_ms: i64,
    ) -> Option<&mut FaultRecord> {
        self.faults
            .iter_mut()
            .rev()
            .find(|f| &f.target == target && f.injected_at_ms - lead_ms <= ts_ms)
    }

    /// Takes an anomaly event from the uplink.
    pub fn anomaly(&mut self, ev: &AnomalyEvent) {
        match self.fault_for_anomaly(&ev.entity, ev.ts_ms) {
            Some(f) if f.detected_at_ms.is_none() => {
                f.detected_at_ms = Some(ev.ts_ms.max(f.injected_at_ms));
                f.detected_metric = Some(ev.top_metric.clone());
                f.detect_secs = secs(f.injected_at_ms, f.detected_at_ms);
            }
            Some(_) => {}
            None => {
                if self.earlier.len() >= EARLIER {
                    self.earlier.pop_front();
                }
                self.earlier.push_back((ev.id.clone(), ev.ts_ms));
            }
        }
    }

    /// Takes an audit record from the uplink.
    pub fn audit(&mut self, rec: &AuditRecord) {
        let earlier = rec
            .anomaly_id
            .as_ref()
            .and_then(|a| self.earlier.iter().find(|(id, _)| id == a).cloned());
        let Some(f) = self.fault_for(&rec.target, rec.ts_ms) else {
            return;
        };
        if f.healed_at_ms.is_some() {
            return;
        }
        if let Some((id, opened)) = earlier {
            // Acting on an anomaly that opened before the fault: not its
            // repair, unless it is a false alarm the fault kept open and
            // the action came after the injection.
            let adopted = f.adopted.as_ref() == Some(&id);
            let adopt = !adopted
                && rec.kind == AuditKind::ActionSent
                && f.action.is_none()
                && opened >= f.injected_at_ms - FALSE_ALARM_LEAD_MS;
            if !adopted && !adopt {
                return;
            }
            if adopt {
                f.adopted = Some(id);
                // No anomaly event marks the detection: the action does.
                if f.detected_at_ms.is_none() {
                    f.detected_at_ms = Some(rec.ts_ms);
                    f.detected_metric = Some(rec.top_metric.clone());
                    f.detect_secs = secs(f.injected_at_ms, f.detected_at_ms);
                }
            }
        }
        match rec.kind {
            AuditKind::ActionSent => {
                f.action = Some(rec.action.clone());
                f.action_at_ms = Some(rec.ts_ms);
            }
            AuditKind::ActionResult => {
                f.action_result = Some(
                    rec.outcome
                        .map(|o| o.as_str().to_string())
                        .unwrap_or_else(|| "no result".into()),
                );
                f.last_note = Some(rec.detail.clone());
            }
            AuditKind::Verified if f.action.is_some() => {
                f.healed_at_ms = Some(rec.ts_ms);
                f.heal_secs = secs(f.injected_at_ms, f.healed_at_ms);
            }
            AuditKind::HeldBack | AuditKind::VerifyFailed => f.last_note = Some(rec.detail.clone()),
            _ => {}
        }
    }

    /// Every fault so far, each with `why_not` filled in if it is not healed.
    pub fn report(&self) -> Vec<FaultRecord> {
        let now = vigil_core::clock::now_ms();
        self.faults
            .iter()
            .cloned()
            .map(|mut f| {
                f.why_not = match (&f.detected_at_ms, &f.action, &f.healed_at_ms) {
                    (_, _, Some(_)) => None,
                    (None, _, _) if now - f.injected_at_ms < STILL_OPEN_MS => Some(format!(
                        "injected {:.0} s before this report; not detected yet",
                        (now - f.injected_at_ms) as f64 / 1000.0
                    )),
                    (None, _, _) => Some("not detected".into()),
                    (Some(_), None, _) => Some(format!(
                        "detected, but no action was sent{}",
                        f.last_note
                            .as_ref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    )),
                    (Some(_), Some(a), None) => Some(format!(
                        "{a} sent, recovery not verified{}",
                        f.last_note
                            .as_ref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    )),
                };
                f
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::message::Outcome;

    fn audit(kind: AuditKind, ts: i64, target: &EntityId) -> AuditRecord {
        AuditRecord {
            ts_ms: ts,
            site: "s".into(),
            kind,
            policy: "p".into(),
            policy_version: "v".into(),
            target: target.clone(),
            action: "restart".into(),
            command_id: Some("c".into()),
            anomaly_id: None,
            model_version: "m".into(),
            score: Some(0.97),
            top_metric: "up".into(),
            mode: "auto".into(),
            lease_token: Some(3),
            rail: None,
            outcome: Some(Outcome::Succeeded),
            detail: "held: cooldown".into(),
            root_cause: Vec::new(),
        }
    }

    #[test]
    fn follows_a_fault_to_its_recovery() {
        let web = EntityId::service("h", "web");
        let mut t = Tracker::default();
        t.injected(FaultKind::Crash, web.clone(), 1000);
        t.anomaly(&AnomalyEvent {
            id: "a".into(),
            site: "s".into(),
            entity: web.clone(),
            score: 1.0,
            top_metric: "up".into(),
            contributors: vec![],
            ts_ms: 3000,
            model_version: "m".into(),
            entity_score: None,
            root_cause: Vec::new(),
        });
        t.audit(&audit(AuditKind::ActionSent, 5000, &web));
        t.audit(&audit(AuditKind::ActionResult, 5500, &web));
        t.audit(&audit(AuditKind::Verified, 9000, &web));
        let r = t.report();
        assert_eq!(r[0].detect_secs, Some(2.0));
        assert_eq!(r[0].heal_secs, Some(8.0));
        assert_eq!(r[0].action.as_deref(), Some("restart"));
        assert_eq!(r[0].action_result.as_deref(), Some("succeeded"));
        assert_eq!(r[0].why_not, None);
    }

    #[test]
    fn says_why_not() {
        let web = EntityId::service("h", "web");
        let mut t = Tracker::default();
        t.injected(FaultKind::Hang, web.clone(), 1000);
        assert_eq!(t.report()[0].why_not.as_deref(), Some("not detected"));
        t.anomaly(&AnomalyEvent {
            id: "a".into(),
            site: "s".into(),
            entity: web.clone(),
            score: 1.0,
            top_metric: "http_ok".into(),
            contributors: vec![],
            ts_ms: 2000,
            model_version: "m".into(),
            entity_score: None,
            root_cause: Vec::new(),
        });
        t.audit(&audit(AuditKind::HeldBack, 3000, &web));
        let why = t.report()[0].why_not.clone().unwrap();
        assert!(
            why.contains("no action") && why.contains("cooldown"),
            "{why}"
        );
        // Actions before the injection belong to no fault.
        t.audit(&audit(AuditKind::ActionSent, 500, &web));
        assert_eq!(t.report()[0].action, None);
    }

    #[test]
    fn a_repair_of_an_earlier_anomaly_is_not_credited_to_a_later_fault() {
        let web = EntityId::service("h", "web");
        let mut t = Tracker::default();
        let ev = AnomalyEvent {
            id: "before".into(),
            site: "s".into(),
            entity: web.clone(),
            score: 1.0,
            top_metric: "rss_bytes".into(),
            contributors: vec![],
            ts_ms: 1_000,
            model_version: "m".into(),
            entity_score: None,
            root_cause: Vec::new(),
        };
        t.anomaly(&ev);
        t.injected(
            FaultKind::Crash,
            web.clone(),
            1_000 + FALSE_ALARM_LEAD_MS + 1,
        );
        let earlier = |kind, ts| AuditRecord {
            anomaly_id: Some("before".into()),
            ..audit(kind, ts, &web)
        };
        t.audit(&earlier(AuditKind::ActionSent, 16_000));
        t.audit(&earlier(AuditKind::Verified, 19_000));
        let r = t.report();
        assert_eq!((r[0].action.as_ref(), r[0].healed_at_ms), (None, None));
        assert_eq!(r[0].why_not.as_deref(), Some("not detected"));
        // A fault injected a moment ago is not "not detected" yet.
        t.injected(FaultKind::Crash, web.clone(), vigil_core::clock::now_ms());
        let last = t.report().pop().unwrap();
        assert!(last.why_not.unwrap().contains("not detected yet"));
    }

    #[test]
    fn an_anomaly_open_just_before_injection_counts_as_detection_at_injection() {
        let web = EntityId::service("h", "web");
        let mut t = Tracker::default();
        t.injected(FaultKind::Latency, web.clone(), 10_000);
        let ev = |ts| AnomalyEvent {
            id: "a".into(),
            site: "s".into(),
            entity: web.clone(),
            score: 1.0,
            top_metric: "http_latency_seconds".into(),
            contributors: vec![],
            ts_ms: ts,
            model_version: "m".into(),
            entity_score: None,
            root_cause: Vec::new(),
        };
        t.anomaly(&ev(8_000));
        assert_eq!(
            t.report()[0].detected_at_ms,
            None,
            "two ticks early is someone else's anomaly"
        );
        t.anomaly(&ev(9_997));
        assert_eq!(t.report()[0].detect_secs, Some(0.0));
    }

    #[test]
    fn a_false_alarm_the_fault_kept_open_is_the_faults_once_acted_on_after_it() {
        let sensor = EntityId::sensor("temp-1");
        let mut t = Tracker::default();
        // A fresh series' false alarm, 3 s before the drift begins.
        t.anomaly(&AnomalyEvent {
            id: "cold".into(),
            site: "s".into(),
            entity: sensor.clone(),
            score: 0.8,
            top_metric: "value".into(),
            contributors: vec![],
            ts_ms: 7_000,
            model_version: "m".into(),
            entity_score: None,
            root_cause: Vec::new(),
        });
        t.injected(FaultKind::SensorDrift, sensor.clone(), 10_000);
        let on_it = |kind, ts| AuditRecord {
            anomaly_id: Some("cold".into()),
            top_metric: "value".into(),
            ..audit(kind, ts, &sensor)
        };
        // Sent before the injection: still not the fault's.
        t.audit(&on_it(AuditKind::ActionSent, 9_000));
        assert_eq!(t.report()[0].action, None);
        t.audit(&on_it(AuditKind::ActionSent, 11_000));
        t.audit(&on_it(AuditKind::Verified, 40_000));
        let r = &t.report()[0];
        assert_eq!(r.action.as_deref(), Some("restart"));
        // Detected when acted on: no anomaly event came after the injection.
        assert_eq!((r.detect_secs, r.heal_secs), (Some(1.0), Some(30.0)));
        assert_eq!(r.detected_metric.as_deref(), Some("value"));
    }
}
