//! After an action: waiting for its result, verifying recovery, closing
//! approvals whose anomaly ended, resetting the cooldown backoff once a
//! target stays calm, and taking up commands in flight after a restart.

use super::{Decisions, Engine, Phase, Target, RESULT_GRACE_MS, SHORT_CIRCUIT};
use crate::entity::Entities;
use crate::liveness::Liveness;
use crate::policy::Policy;
use vigil_core::message::{AuditKind, AuditRecord, Command, CommandResult, Outcome};
use vigil_core::EntityId;

impl Engine {
    /// Since when `entity` has been healthy, as the policy that matched it
    /// judges: its liveness conditions clear, or its anomaly closed.
    pub(super) fn healthy_since(
        &self,
        matched: &str,
        entity: &EntityId,
        entities: &Entities,
        live: &Liveness,
    ) -> Option<i64> {
        if self.policy(matched).is_some_and(Policy::is_liveness) {
            live.ok_since(matched, entity)
        } else {
            entities
                .get(entity)
                .filter(|e| !e.anomalous)
                .map(|e| e.since_ms)
        }
    }

    /// Closes every open approval request whose anomaly (or liveness
    /// episode) has ended, with an audit record: answering it later gets a
    /// 409 that says why, and nothing runs.
    pub(super) fn close_ended_approvals(
        &mut self,
        entities: &Entities,
        live: &Liveness,
        model: &str,
        d: &mut Decisions,
    ) {
        let closed = match self.approvals.lock() {
            Ok(mut q) => q.close_ended(
                |a| {
                    let anomaly = entities.get(&a.target).and_then(|e| e.anomaly_id.as_ref());
                    a.anomaly_id.is_some()
                        && (anomaly == a.anomaly_id.as_ref()
                            || live
                                .firing()
                                .iter()
                                .any(|f| Some(&f.episode) == a.anomaly_id.as_ref()))
                },
                "its anomaly ended before it was acted on; nothing ran",
            ),
            Err(_) => return,
        };
        for a in closed {
            let detail = format!(
                "approval: request {} to run {} closed: its anomaly ended before it was acted on; nothing ran",
                a.id, a.action
            );
            let mut rec = self.base(AuditKind::HeldBack, &a.policy, &a.target, model, detail);
            rec.action = a.action.clone();
            rec.anomaly_id = a.anomaly_id.clone();
            rec.rail = Some("approval closed".into());
            d.audit.push(rec);
        }
    }

    /// Ends the cooldowns (and restarts the backoff) of every idle target
    /// that has stayed healthy for its policy's `cooldown_reset_secs` since
    /// it was last acted on.
    pub(super) fn reset_calm(&mut self, now_ms: i64, entities: &Entities, live: &Liveness) {
        let mut calm = Vec::new();
        for (entity, t) in &self.targets {
            let Some(acted_ms) = t.acted_ms.filter(|&a| t.reset_ms < Some(a)) else {
                continue;
            };
            if !matches!(t.phase, Phase::Idle) {
                continue;
            }
            let Some(reset_ms) = self
                .policy(&t.matched)
                .map(|p| p.cooldown_reset_secs as i64 * 1000)
            else {
                continue;
            };
            let since = self.healthy_since(&t.matched, entity, entities, live);
            if since.is_some_and(|s| s >= acted_ms && now_ms - s >= reset_ms) {
                calm.push(entity.clone());
            }
        }
        for entity in calm {
            if let Some(t) = self.targets.get_mut(&entity) {
                t.cooldowns.clear();
                t.escalated = None;
                t.reset_ms = Some(now_ms);
            }
        }
    }

    /// Whether a target being verified has recovered (healthy for the
    /// policy's `healthy_for_secs`) or has run out of time; `None` while
    /// neither.
    fn verdict(
        &self,
        entity: &EntityId,
        t: &Target,
        now_ms: i64,
        entities: &Entities,
        live: &Liveness,
    ) -> Option<(AuditKind, String)> {
        let Phase::Verifying {
            command,
            result_ms,
            until_ms,
        } = &t.phase
        else {
            return None;
        };
        let healthy_ms = self
            .healthy_since(&t.matched, entity, entities, live)
            .map(|s| now_ms - s.max(*result_ms))
            .unwrap_or(0);
        if healthy_ms >= self.healthy_for_ms(&t.policy) {
            Some((
                AuditKind::Verified,
                format!(
                    "{entity} healthy for {:.1} s after {}",
                    healthy_ms as f64 / 1000.0,
                    command.action
                ),
            ))
        } else if now_ms > *until_ms {
            Some((
                AuditKind::VerifyFailed,
                format!(
                    "{entity} still unhealthy {:.0} s after {}",
                    (now_ms - result_ms) as f64 / 1000.0,
                    command.action
                ),
            ))
        } else {
            None
        }
    }

    /// Commands taken back after a restart whose result never came may well
    /// have run: their targets' recovery is checked all the same.
    fn verify_resumed(
        &mut self,
        unknown: Vec<(EntityId, Command, AuditRecord)>,
        now_ms: i64,
        d: &mut Decisions,
    ) {
        for (entity, command, rec) in unknown {
            let within_ms = self
                .targets
                .get(&entity)
                .and_then(|t| self.policy(&t.policy))
                .map_or(60_000, |p| (p.verify.within_secs * 1000.0) as i64);
            if let Some(t) = self.targets.get_mut(&entity) {
                t.phase = Phase::Verifying {
                    command,
                    result_ms: now_ms,
                    until_ms: now_ms + within_ms,
                };
            }
            d.audit.push(rec);
        }
    }

    pub(super) fn advance_in_flight(
        &mut self,
        now_ms: i64,
        entities: &Entities,
        live: &Liveness,
        model: &str,
        d: &mut Decisions,
    ) {
        let mut done = Vec::new();
        let mut escalations = Vec::new();
        let mut unknown = Vec::new();
        for (entity, t) in &self.targets {
            let cooldown = self.cooldown_ms(&t.policy, entity, now_ms);
            match &t.phase {
                Phase::Awaiting {
                    command,
                    sent_ms,
                    resumed,
                } if now_ms > sent_ms + self.command_ttl_ms + RESULT_GRACE_MS => {
                    let detail = if *resumed {
                        "unknown: the edge restarted before the agent's result arrived; checking recovery"
                    } else {
                        "no result from the agent in time"
                    };
                    let rec = self.record(
                        AuditKind::ActionResult,
                        &t.policy,
                        command,
                        model,
                        None,
                        detail.into(),
                    );
                    // A command taken back after a restart may well have
                    // run: its target's recovery is checked all the same.
                    if *resumed {
                        unknown.push((entity.clone(), command.clone(), rec));
                    } else {
                        done.push((entity.clone(), now_ms + cooldown, rec));
                    }
                }
                Phase::Verifying { command, .. } => {
                    let verdict = self.verdict(entity, t, now_ms, entities, live);
                    if let Some((kind, detail)) = verdict {
                        let rec = self.record(kind, &t.policy, command, model, None, detail);
                        let next = self
                            .policy(&t.policy)
                            .filter(|p| {
                                kind == AuditKind::VerifyFailed && p.verify.escalate_on_failure
                            })
                            .and_then(|p| p.escalate.clone())
                            .map(|next| (command.anomaly_id.clone(), next));
                        escalations.extend(next.map(|n| (entity.clone(), n)));
                        done.push((entity.clone(), now_ms + cooldown, rec));
                    }
                }
                _ => {}
            }
        }
        for (entity, next) in escalations {
            if let Some(t) = self.targets.get_mut(&entity) {
                t.escalated = Some(next);
            }
        }
        for (entity, cooldown_until, rec) in done {
            if let Some(t) = self.targets.get_mut(&entity) {
                t.phase = Phase::Idle;
                t.cooldowns.insert(rec.action.clone(), cooldown_until);
            }
            d.audit.push(rec);
        }
        self.verify_resumed(unknown, now_ms, d);
    }

    /// Takes back the commands this edge sent before it restarted and never
    /// saw a result for (their `action_sent` records): each waits for its
    /// result (an agent sends its recent results again when the edge comes
    /// back) and is then verified; pages are closed as unknown at once.
    pub fn resume(&mut self, open: &[AuditRecord], model: &str) -> Decisions {
        let mut d = Decisions::default();
        for rec in open {
            let Some(id) = rec.command_id.clone() else {
                continue;
            };
            let command = Command {
                id,
                action: rec.action.clone(),
                target: rec.target.clone(),
                params: Default::default(),
                issued_ms: rec.ts_ms,
                expires_ms: rec.ts_ms + self.command_ttl_ms,
                policy: rec.policy.clone(),
                anomaly_id: rec.anomaly_id.clone(),
                holder: self.holder.clone(),
                lease_token: rec.lease_token,
                lease_ms: 0,
                to: String::new(),
                signature: None,
            };
            if rec.policy == SHORT_CIRCUIT {
                let mut closed = self.record(
                    AuditKind::ActionResult,
                    SHORT_CIRCUIT,
                    &command,
                    model,
                    None,
                    "unknown: the edge restarted before the page's result arrived".into(),
                );
                closed.target = rec.target.clone();
                d.audit.push(closed);
                continue;
            }
            let t = self
                .targets
                .entry(rec.target.clone())
                .or_insert_with(|| Target::new(&rec.policy));
            t.policy = rec.policy.clone();
            t.acted_ms = Some(rec.ts_ms);
            t.trigger = (
                rec.score.unwrap_or(0.0),
                rec.top_metric.clone(),
                rec.root_cause.clone(),
            );
            t.lease = rec.lease_token;
            t.phase = Phase::Awaiting {
                command,
                sent_ms: rec.ts_ms,
                resumed: true,
            };
        }
        d
    }

    /// Takes an agent's result. Unknown command ids return `None`.
    pub fn on_result(&mut self, r: &CommandResult, now_ms: i64, model: &str) -> Option<Decisions> {
        if let Some(page) = self.short_circuit.pages.remove(&r.command_id) {
            let detail = format!("{} on {}: {}", r.outcome.as_str(), r.host, r.detail);
            let rec = self.record(
                AuditKind::ActionResult,
                SHORT_CIRCUIT,
                &page,
                model,
                Some(r.outcome),
                detail,
            );
            return Some(Decisions {
                audit: vec![rec],
                ..Default::default()
            });
        }
        let (entity, command, policy) = self.targets.iter().find_map(|(e, t)| match &t.phase {
            Phase::Awaiting { command, .. } if command.id == r.command_id => {
                Some((e.clone(), command.clone(), t.policy.clone()))
            }
            _ => None,
        })?;
        let within_ms = self
            .policy(&policy)
            .map(|p| (p.verify.within_secs * 1000.0) as i64)
            .unwrap_or(60_000);
        let cooldown = self.cooldown_ms(&policy, &entity, now_ms);
        let mut d = Decisions::default();
        let detail = format!("{} on {}: {}", r.outcome.as_str(), r.host, r.detail);
        let mut rec = self.record(
            AuditKind::ActionResult,
            &policy,
            &command,
            model,
            Some(r.outcome),
            detail,
        );
        if r.outcome == Outcome::Fenced {
            // Another edge holds the target, or ours is stale: stand back.
            rec.rail = Some("lease".into());
        }
        rec.lease_token = r.lease_token.or(rec.lease_token);
        d.audit.push(rec);
        let t = self.targets.get_mut(&entity)?;
        t.lease = match r.outcome {
            Outcome::Fenced => None,
            _ => r.lease_token.or(t.lease),
        };
        if r.outcome == Outcome::Succeeded {
            t.phase = Phase::Verifying {
                command,
                result_ms: now_ms,
                until_ms: now_ms + within_ms,
            };
        } else {
            t.phase = Phase::Idle;
            t.cooldowns
                .insert(command.action.clone(), now_ms + cooldown);
        }
        Some(d)
    }
}
