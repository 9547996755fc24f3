//! The site-wide short-circuit rail: when more than `short_circuit_share`
//! of the targets are anomalous, a sick site is not a sick host; every
//! action is held, and one page goes out.

use super::Hold;
use crate::entity::Entities;
use crate::policy::Policy;
use crate::rails::fleet_sick;
use crate::remediation::{Decisions, Engine, SHORT_CIRCUIT};
use std::collections::HashMap;
use vigil_core::message::{AuditKind, AuditRecord, Command};
use vigil_core::EntityId;

/// The short-circuit's state.
#[derive(Debug, Default)]
pub(in crate::remediation) struct ShortCircuit {
    /// Why it holds everything, while it does.
    pub tripped: Option<String>,
    /// Page commands sent when it tripped, awaiting their result.
    pub pages: HashMap<String, Command>,
}

impl ShortCircuit {
    /// Holds every policy but a `site_wide` one while tripped.
    pub fn check(&self, p: &Policy) -> Result<(), Hold> {
        match self.tripped.as_ref().filter(|_| !p.site_wide) {
            Some(why) => Err(Hold::because(SHORT_CIRCUIT, p, why.clone())),
            None => Ok(()),
        }
    }
}

impl Engine {
    /// Trips (once, with one page) or clears the site-wide short-circuit.
    pub(in crate::remediation) fn short_circuit(
        &mut self,
        now_ms: i64,
        entities: &Entities,
        model: &str,
        d: &mut Decisions,
    ) {
        let (sick, total) = (entities.anomalous_count(), entities.all().count());
        let why = format!(
            "{sick} of {total} targets are anomalous, more than {:.0}%: a sick site is not a sick host; holding every action",
            self.rails.short_circuit_share * 100.0
        );
        let sick_site = fleet_sick(&self.rails, sick, total);
        let site_target = EntityId::host(&self.site);
        match (&self.short_circuit.tripped, sick_site) {
            (None, true) => {
                tracing::error!(sick, total, "Site-wide short-circuit: remediation paused.");
                d.audit.push(self.base(
                    AuditKind::HeldBack,
                    SHORT_CIRCUIT,
                    &site_target,
                    model,
                    format!("{SHORT_CIRCUIT}: {why}"),
                ));
                if let (Some(action), Some(agent)) =
                    (&self.rails.page_action, &self.rails.page_agent)
                {
                    let command = Command {
                        id: uuid::Uuid::new_v4().to_string(),
                        action: action.clone(),
                        target: EntityId::host(agent),
                        params: Default::default(),
                        issued_ms: now_ms,
                        expires_ms: now_ms + self.command_ttl_ms,
                        policy: SHORT_CIRCUIT.into(),
                        anomaly_id: None,
                        holder: self.holder.clone(),
                        lease_token: None,
                        lease_ms: 0,
                        to: agent.clone(),
                        signature: None,
                    };
                    d.audit.push(AuditRecord {
                        action: command.action.clone(),
                        command_id: Some(command.id.clone()),
                        ..self.base(
                            AuditKind::ActionSent,
                            SHORT_CIRCUIT,
                            &site_target,
                            model,
                            format!("paging: {why}"),
                        )
                    });
                    self.short_circuit
                        .pages
                        .insert(command.id.clone(), command.clone());
                    d.commands.push((agent.clone(), command));
                }
                self.short_circuit.tripped = Some(why);
            }
            (Some(_), false) => {
                tracing::warn!(
                    sick,
                    total,
                    "Site-wide short-circuit cleared: remediation resumes."
                );
                d.audit.push(self.base(
                    AuditKind::Verified,
                    SHORT_CIRCUIT,
                    &site_target,
                    model,
                    format!("{SHORT_CIRCUIT} cleared: {sick} of {total} targets anomalous"),
                ));
                self.short_circuit.tripped = None;
            }
            _ => {}
        }
    }
}
