//! The rails a matched policy passes before it may act, one file each, in
//! this order: the site-wide short-circuit, the budget (walking the
//! escalation chain), the cooldown, the mode (shadow), an agent that has
//! the action; then, for an `approve` policy, the approval; last, the
//! site-wide rate limit. Each says "hold, because …" one way: a [`Hold`].

mod agent;
mod approval;
mod budget;
mod cooldown;
mod mode;
mod rate_limit;
mod recovery;
mod short_circuit;

pub(super) use agent::Agents;
pub(super) use approval::Verdict;
pub(super) use rate_limit::RateLimit;
pub(super) use recovery::Recovery;
pub(super) use short_circuit::ShortCircuit;

use super::Engine;
use crate::entity::EntityState;
use crate::policy::Policy;

/// A rail that held an action back, and why.
pub(super) struct Hold {
    /// The policy that would have acted.
    pub policy: Box<Policy>,
    /// The rail's name (in the audit record's `rail`).
    pub rail: &'static str,
    /// Why, in words.
    pub reason: String,
}

impl Hold {
    /// Hold `policy` back at `rail`, because of `reason`.
    pub fn because(rail: &'static str, policy: &Policy, reason: impl Into<String>) -> Self {
        Self {
            policy: Box::new(policy.clone()),
            rail,
            reason: reason.into(),
        }
    }
}

/// The policy that will act (after escalation), its agent, and how it was reached.
pub(super) struct Chosen {
    pub policy: Policy,
    pub agent: String,
    pub note: String,
    /// Why the target was handed to `policy`, when it was.
    pub handed: Option<super::Cause>,
}

impl Engine {
    /// Runs the rails up to the mode and the agent: `Ok` is the policy that
    /// may act (perhaps escalated past spent budgets) and its agent.
    pub(super) fn choose(&self, p: &Policy, e: &EntityState, now_ms: i64) -> Result<Chosen, Hold> {
        self.short_circuit.check(p)?;
        let (acting, note) = self.budget_rail(p, &e.entity, now_ms)?;
        cooldown::check(self.targets.get(&e.entity), &acting, &note, now_ms)?;
        let agent = acting.agent_for(&e.entity);
        mode::check(&acting, agent.as_deref(), &note)?;
        let agent = self.agents.check(&acting, agent, &note)?;
        let handed = (acting.name != p.name).then_some(super::Cause::BudgetSpent);
        Ok(Chosen {
            policy: acting,
            agent,
            note,
            handed,
        })
    }
}
