//! The mode rail: a policy in `shadow` mode says what it would run and holds.
//! (`approve` mode is the approval rail's.)

use super::Hold;
use crate::policy::{Mode, Policy};

const RAIL: &str = "shadow mode";

/// Holds a shadow-mode policy, naming what it would have run where.
pub(super) fn check(acting: &Policy, agent: Option<&str>, note: &str) -> Result<(), Hold> {
    if acting.mode != Mode::Shadow {
        return Ok(());
    }
    Err(Hold::because(
        RAIL,
        acting,
        format!(
            "{note}would run {} on {}",
            acting.action,
            agent.unwrap_or("?")
        ),
    ))
}
