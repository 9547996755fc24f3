//! Audit records: what every decision writes down, sent or held back.

use super::rails::Hold;
use super::{Decisions, Engine};
use crate::entity::EntityState;
use crate::policy::Policy;
use vigil_core::message::{AuditKind, AuditRecord, Command, Outcome};
use vigil_core::EntityId;

impl Engine {
    /// An audit record with what every decision has; callers add the
    /// action, command, anomaly and outcome they know.
    pub(super) fn base(
        &self,
        kind: AuditKind,
        policy: &str,
        target: &EntityId,
        model: &str,
        detail: String,
    ) -> AuditRecord {
        AuditRecord {
            ts_ms: vigil_core::clock::now_ms(),
            site: self.site.clone(),
            kind,
            policy: policy.to_string(),
            policy_version: self.policies.version.clone(),
            target: target.clone(),
            action: String::new(),
            command_id: None,
            anomaly_id: None,
            model_version: model.to_string(),
            score: None,
            top_metric: String::new(),
            mode: self
                .policy(policy)
                .map(|p| p.mode.as_str().to_string())
                .unwrap_or_default(),
            lease_token: None,
            outcome: None,
            rail: None,
            detail,
            root_cause: Vec::new(),
        }
    }

    pub(super) fn record(
        &self,
        kind: AuditKind,
        policy: &str,
        cmd: &Command,
        model: &str,
        outcome: Option<Outcome>,
        detail: String,
    ) -> AuditRecord {
        let (score, top_metric, root_cause) = self
            .targets
            .get(&cmd.target)
            .map(|t| (Some(t.trigger.0), t.trigger.1.clone(), t.trigger.2.clone()))
            .unwrap_or_default();
        AuditRecord {
            action: cmd.action.clone(),
            command_id: Some(cmd.id.clone()),
            anomaly_id: cmd.anomaly_id.clone(),
            lease_token: cmd.lease_token,
            score,
            top_metric,
            root_cause,
            outcome,
            ..self.base(kind, policy, &cmd.target, model, detail)
        }
    }

    /// A decision about `e` that sent nothing: held back, or awaiting approval.
    pub(super) fn noted(
        &self,
        kind: AuditKind,
        p: &Policy,
        e: &EntityState,
        model: &str,
        rail: Option<&str>,
        detail: String,
    ) -> AuditRecord {
        AuditRecord {
            action: p.action.clone(),
            anomaly_id: e.anomaly_id.clone(),
            score: Some(e.score),
            top_metric: e.top_metric.clone(),
            root_cause: e.root_cause.clone(),
            mode: p.mode.as_str().to_string(),
            lease_token: self.targets.get(&e.entity).and_then(|t| t.lease),
            rail: rail.map(str::to_string),
            ..self.base(kind, &p.name, &e.entity, model, detail)
        }
    }

    /// Audits a held-back decision once per anomaly and rail.
    pub(super) fn hold(&mut self, held: Hold, e: &EntityState, model: &str, d: &mut Decisions) {
        let key = (e.anomaly_id.clone(), held.rail);
        let Some(t) = self.targets.get_mut(&e.entity) else {
            return;
        };
        if t.held_for.as_ref() == Some(&key) {
            return;
        }
        t.held_for = Some(key);
        d.gave_up.extend(super::Cause::of_rail(held.rail));
        let detail = format!("{}: {}", held.rail, held.reason);
        let rec = self.noted(
            AuditKind::HeldBack,
            &held.policy,
            e,
            model,
            Some(held.rail),
            detail,
        );
        d.audit.push(rec);
    }
}
