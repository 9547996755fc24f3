//! The budget rail: a policy whose action has run its `budget.max` times on
//! this target inside `budget.per_secs` hands over to the policy it
//! escalates to; with nothing to escalate to, it holds.

use super::Hold;
use crate::policy::Policy;
use crate::remediation::Engine;
use vigil_core::EntityId;

const RAIL: &str = "budget";

impl Engine {
    /// Walks the escalation chain from `p` past every policy whose budget
    /// on `target` is spent: the policy that may act, and a note of the
    /// escalations on the way.
    pub(super) fn budget_rail(
        &self,
        p: &Policy,
        target: &EntityId,
        now_ms: i64,
    ) -> Result<(Policy, String), Hold> {
        let mut acting = p.clone();
        let mut note = String::new();
        // Bounded by the chain's length: a loop in it was refused at load.
        for _ in 0..=self.policies.policies.len() {
            let b = &acting.budget;
            let window = b.per_secs as i64 * 1000;
            let used = self
                .budgets
                .used(target.as_str(), &acting.action, now_ms, window);
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
                    let why = format!("{spent}, and there is nothing to escalate to");
                    return Err(Hold::because(RAIL, &acting, why));
                }
            }
        }
        Ok((acting, note))
    }
}
