//! The cooldown rail: after an action ran on a target, the same action
//! waits out its cooldown there, backed off by how often it ran inside the
//! budget window (since the target last stayed calm long enough to reset it).

use super::Hold;
use crate::policy::Policy;
use crate::remediation::{Engine, Target};
use vigil_core::EntityId;

const RAIL: &str = "cooldown";

/// Holds `acting` while its action cools down on the target.
pub(super) fn check(
    target: Option<&Target>,
    acting: &Policy,
    note: &str,
    now_ms: i64,
) -> Result<(), Hold> {
    let left = target
        .and_then(|t| t.cooldowns.get(&acting.action))
        .map(|&until| until - now_ms)
        .filter(|&left| left > 0);
    match left {
        Some(left) => Err(Hold::because(
            RAIL,
            acting,
            format!("{note}{} s left for {}", (left + 999) / 1000, acting.action),
        )),
        None => Ok(()),
    }
}

impl Engine {
    /// The cooldown after `policy` acted on `entity`: backed off by how often
    /// its action ran there inside the budget window (since the target last
    /// stayed healthy long enough to reset it).
    pub(in crate::remediation) fn cooldown_ms(
        &self,
        policy: &str,
        entity: &EntityId,
        now_ms: i64,
    ) -> i64 {
        let reset_ms = self.targets.get(entity).and_then(|t| t.reset_ms);
        self.policy(policy)
            .map(|p| {
                let window = p.budget.per_secs as i64 * 1000;
                let window = reset_ms.map_or(window, |r| window.min(now_ms - r));
                p.cooldown_ms(
                    self.budgets
                        .used(entity.as_str(), &p.action, now_ms, window),
                )
            })
            .unwrap_or(60_000)
    }
}
