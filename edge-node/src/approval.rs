//! Approvals for `approve`-mode policies: the engine asks, a human answers
//! through the HTTP API before the request expires, and the engine acts on
//! an approval once. Unanswered requests expire; nothing runs by default.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use vigil_core::EntityId;

/// Requests kept, answered or not (the oldest answered go first).
const KEPT: usize = 1000;

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for an answer.
    Pending,
    /// Approved; the engine acts on it at its next tick.
    Approved,
    /// Refused by a human.
    Rejected,
    /// Not answered in time.
    Expired,
    /// Approved and acted on.
    Used,
    /// Closed unanswered (or approved but not yet acted on) because its
    /// anomaly ended: nothing runs.
    Closed,
}

impl State {
    /// The state as written in JSON (and in `?state=`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Expired => "expired",
            State::Used => "used",
            State::Closed => "closed",
        }
    }
}

/// One request for approval.
#[derive(Clone, Debug, Serialize)]
pub struct Approval {
    /// Id used in the API's URLs.
    pub id: String,
    /// Policy asking.
    pub policy: String,
    /// Target it would act on.
    pub target: EntityId,
    /// Action it would run.
    pub action: String,
    /// Agent that would run it.
    pub agent: String,
    /// Anomaly behind it.
    pub anomaly_id: Option<String>,
    /// Why it asks (score, metric, how long).
    pub reason: String,
    /// Asked at, Unix ms.
    pub requested_ms: i64,
    /// Unanswered after this instant, it expires.
    pub expires_ms: i64,
    /// Where it stands.
    pub state: State,
    /// Who answered (from the API call), when someone did.
    pub decided_by: Option<String>,
    /// When it was answered, Unix ms.
    pub decided_ms: Option<i64>,
    /// Why it closed without running, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why an answer was not taken.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AnswerError {
    /// No request has this id.
    #[error("no approval request {0}")]
    Unknown(String),
    /// It was answered already, expired, or closed.
    #[error("approval request {0} is {s}, not pending{why}", s = .1.as_str(), why = .2.as_ref().map(|w| format!(": {w}")).unwrap_or_default())]
    NotPending(String, State, Option<String>),
}

/// The requests, shared by the engine and the API.
#[derive(Debug, Default)]
pub struct Approvals {
    list: VecDeque<Approval>,
}

/// Shared handle.
pub type SharedApprovals = Arc<Mutex<Approvals>>;

impl Approvals {
    /// Files a new pending request and returns it.
    pub fn request(&mut self, mut a: Approval) -> Approval {
        a.id = uuid::Uuid::new_v4().to_string();
        a.state = State::Pending;
        if self.list.len() >= KEPT {
            if let Some(i) = self.list.iter().position(|x| x.state != State::Pending) {
                self.list.remove(i);
            } else {
                self.list.pop_front();
            }
        }
        self.list.push_back(a.clone());
        a
    }

    /// Marks every pending request past its expiry as expired.
    pub fn expire(&mut self, now_ms: i64) {
        for a in &mut self.list {
            if a.state == State::Pending && now_ms > a.expires_ms {
                a.state = State::Expired;
            }
        }
    }

    /// The newest request of `policy` for `target` and this anomaly.
    pub fn find(
        &self,
        policy: &str,
        target: &EntityId,
        anomaly: &Option<String>,
    ) -> Option<&Approval> {
        self.list
            .iter()
            .rev()
            .find(|a| a.policy == policy && &a.target == target && &a.anomaly_id == anomaly)
    }

    /// Marks an approved request as acted on.
    pub fn mark_used(&mut self, id: &str) {
        if let Some(a) = self.list.iter_mut().find(|a| a.id == id) {
            a.state = State::Used;
        }
    }

    /// Answers a pending request.
    pub fn answer(
        &mut self,
        id: &str,
        approve: bool,
        by: &str,
        now_ms: i64,
    ) -> Result<Approval, AnswerError> {
        self.expire(now_ms);
        let a = self
            .list
            .iter_mut()
            .find(|a| a.id == id)
            .ok_or_else(|| AnswerError::Unknown(id.to_string()))?;
        if a.state != State::Pending {
            return Err(AnswerError::NotPending(
                id.to_string(),
                a.state,
                a.note.clone(),
            ));
        }
        a.state = if approve {
            State::Approved
        } else {
            State::Rejected
        };
        a.decided_by = Some(by.to_string());
        a.decided_ms = Some(now_ms);
        Ok(a.clone())
    }

    /// The pending request for `target`, whatever its policy or anomaly:
    /// one target has at most one.
    pub fn pending_for(&self, target: &EntityId) -> Option<&Approval> {
        self.list
            .iter()
            .find(|a| a.state == State::Pending && &a.target == target)
    }

    /// Closes every pending or approved-but-unused request whose anomaly is
    /// no longer `open`, noting `why`; returns those it closed.
    pub fn close_ended(&mut self, open: impl Fn(&Approval) -> bool, why: &str) -> Vec<Approval> {
        let mut closed = Vec::new();
        for a in &mut self.list {
            if matches!(a.state, State::Pending | State::Approved) && !open(a) {
                a.state = State::Closed;
                a.note = Some(why.to_string());
                closed.push(a.clone());
            }
        }
        closed
    }

    /// Every request, oldest first.
    pub fn all(&self) -> Vec<Approval> {
        self.list.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(q: &mut Approvals, expires_ms: i64) -> Approval {
        q.request(Approval {
            id: String::new(),
            policy: "failover".into(),
            target: EntityId::host("h1"),
            action: "failover-zone".into(),
            agent: "h1".into(),
            anomaly_id: Some("an-1".into()),
            reason: "zone unreachable".into(),
            requested_ms: 0,
            expires_ms,
            state: State::Pending,
            decided_by: None,
            decided_ms: None,
            note: None,
        })
    }

    #[test]
    fn state_names_match_their_json() {
        use State::*;
        for st in [Pending, Approved, Rejected, Expired, Used, Closed] {
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
    }

    #[test]
    fn answers_once_and_expires_unanswered() {
        let mut q = Approvals::default();
        let a = ask(&mut q, 1000);
        assert_eq!(
            q.answer(&a.id, true, "alice", 500).unwrap().state,
            State::Approved
        );
        assert_eq!(
            q.answer(&a.id, false, "bob", 600).unwrap_err(),
            AnswerError::NotPending(a.id.clone(), State::Approved, None)
        );
        let b = ask(&mut q, 1000);
        assert_eq!(
            q.answer(&b.id, true, "alice", 1001).unwrap_err(),
            AnswerError::NotPending(b.id.clone(), State::Expired, None)
        );
        assert!(matches!(
            q.answer("nope", true, "x", 0),
            Err(AnswerError::Unknown(_))
        ));
        // The newest request for the anomaly is the one that counts.
        assert_eq!(
            q.find("failover", &EntityId::host("h1"), &Some("an-1".into()))
                .unwrap()
                .id,
            b.id
        );
    }
}
