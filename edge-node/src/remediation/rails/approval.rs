//! The approval rail: an `approve` policy acts only on an approval given
//! for this anomaly, once; it asks when nobody has been asked.

use super::{Chosen, Hold};
use crate::approval::{Approval, State};
use crate::entity::EntityState;
use crate::remediation::Engine;

const RAIL: &str = "approval";

/// What the approval rail says.
pub(in crate::remediation) enum Verdict {
    /// Approved (this request id, by whom): act.
    Go(String, String),
    /// A new request was filed.
    Asked(Box<Approval>),
    /// Pending, rejected or expired.
    Wait(Hold),
}

impl Engine {
    /// The approval rail of an `approve` policy: go on an approval (once),
    /// ask when nobody was asked for this anomaly, wait otherwise.
    pub(in crate::remediation) fn approval(
        &self,
        c: &Chosen,
        e: &EntityState,
        now_ms: i64,
    ) -> Verdict {
        let Ok(mut q) = self.approvals.lock() else {
            let why = "the approval queue is unavailable";
            return Verdict::Wait(Hold::because(RAIL, &c.policy, why));
        };
        q.expire(now_ms);
        let held = |rail, reason: String| Verdict::Wait(Hold::because(rail, &c.policy, reason));
        // One target, one pending request, whatever asked first.
        if let Some(other) = q
            .pending_for(&e.entity)
            .filter(|a| a.policy != c.policy.name || a.anomaly_id != e.anomaly_id)
        {
            return held(
                RAIL,
                format!(
                    "approval {} ({} for {}) is pending for this target",
                    other.id, other.action, other.policy
                ),
            );
        }
        match q.find(&c.policy.name, &e.entity, &e.anomaly_id) {
            Some(a) if a.state == State::Approved => {
                Verdict::Go(a.id.clone(), a.decided_by.clone().unwrap_or_default())
            }
            Some(a) if a.state == State::Pending => held(
                RAIL,
                format!(
                    "waiting for approval {} ({} s left)",
                    a.id,
                    (a.expires_ms - now_ms + 999) / 1000
                ),
            ),
            Some(a) if a.state == State::Rejected => held(
                "approval rejected",
                format!(
                    "approval {} rejected by {}",
                    a.id,
                    a.decided_by.as_deref().unwrap_or("?")
                ),
            ),
            Some(a) if a.state == State::Expired => held(
                "approval expired",
                format!(
                    "approval {} expired unanswered after {} s; nothing ran",
                    a.id, c.policy.approval_ttl_secs
                ),
            ),
            // Nobody asked yet for this anomaly, or the approved action ran
            // and is needed again: ask (again).
            _ => Verdict::Asked(Box::new(q.request(Approval {
                id: String::new(),
                policy: c.policy.name.clone(),
                target: e.entity.clone(),
                action: c.policy.action.clone(),
                agent: c.agent.clone(),
                anomaly_id: e.anomaly_id.clone(),
                reason: format!(
                    "score {:.3} (top metric {}) for {:.0} s; {}",
                    e.score,
                    e.top_metric,
                    (now_ms - e.since_ms) as f64 / 1000.0,
                    c.note
                ),
                requested_ms: now_ms,
                expires_ms: now_ms + c.policy.approval_ttl_secs as i64 * 1000,
                state: State::Pending,
                decided_by: None,
                decided_ms: None,
                note: None,
            }))),
        }
    }
}
