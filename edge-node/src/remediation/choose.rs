//! The rails a matched policy passes before it may act, in order: the
//! short-circuit, the budget (walking the escalation chain), the cooldown,
//! the mode (shadow), and an agent that has the action.

use super::{Chosen, Engine, Held, SHORT_CIRCUIT};
use crate::entity::EntityState;
use crate::policy::{Mode, Policy};

impl Engine {
    /// Walks the escalation chain from `p` past every policy whose budget on
    /// this target is spent, then applies the cooldown, mode and agent rails.
    pub(super) fn choose(&self, p: &Policy, e: &EntityState, now_ms: i64) -> Result<Chosen, Held> {
        if let Some(why) = self.tripped.as_ref().filter(|_| !p.site_wide) {
            return Err(Held {
                policy: Box::new(p.clone()),
                rail: SHORT_CIRCUIT,
                reason: why.clone(),
            });
        }
        let target = e.entity.as_str();
        let mut acting = p.clone();
        let mut note = String::new();
        for _ in 0..=self.policies.policies.len() {
            let b = &acting.budget;
            let used = self
                .budgets
                .used(target, &acting.action, now_ms, b.per_secs as i64 * 1000);
            if used < b.max as usize {
                break;
            }
            let spent = format!(
                "{} has run {used} times in {} s (budget {})",
                acting.action, b.per_secs, b.max
            );
            match acting.escalate.as_deref().and_then(|n| self.policy(n)) {
                Some(next) => {
                    note.push_str(&format!("{spent}, escalated to {}; ", next.name));
                    acting = next.clone();
                }
                None => {
                    return Err(Held {
                        policy: Box::new(acting),
                        rail: "budget",
                        reason: format!("{spent}, and there is nothing to escalate to"),
                    })
                }
            }
        }
        let cooling = self
            .targets
            .get(&e.entity)
            .and_then(|t| t.cooldowns.get(&acting.action))
            .map(|&until| until - now_ms)
            .filter(|&left| left > 0);
        let agent = acting.agent_for(&e.entity);
        let reason = |rail, reason| Held {
            policy: Box::new(acting.clone()),
            rail,
            reason,
        };
        if let Some(left) = cooling {
            return Err(reason(
                "cooldown",
                format!(
                    "{}{} s left for {}",
                    note,
                    (left + 999) / 1000,
                    acting.action
                ),
            ));
        }
        if acting.mode == Mode::Shadow {
            return Err(reason(
                "shadow mode",
                format!(
                    "{note}would run {} on {}",
                    acting.action,
                    agent.as_deref().unwrap_or("?")
                ),
            ));
        }
        match agent {
            Some(agent) if self.lacks(&agent, &acting.action) => Err(reason(
                "agent",
                format!(
                    "{note}agent {agent} has no action {:?} in its catalog",
                    acting.action
                ),
            )),
            Some(agent) => Ok(Chosen {
                policy: acting,
                agent,
                note,
            }),
            None => Err(reason("agent", format!("{note}no agent owns this target"))),
        }
    }
}
