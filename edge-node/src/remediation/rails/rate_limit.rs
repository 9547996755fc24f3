//! The rate-limit rail: at most `rails.max_actions_per_minute` actions are
//! sent in any 60 s, all targets and policies together.

use super::Hold;
use crate::policy::Policy;
use std::collections::VecDeque;

const RAIL: &str = "rate limit";

/// Sent-action times for the rate limit.
#[derive(Debug, Default)]
pub(in crate::remediation) struct RateLimit {
    sent: VecDeque<i64>,
}

impl RateLimit {
    /// Counts one action of `acting` sent at `now_ms`, or holds it when
    /// `max` were sent in the last minute.
    pub fn check(&mut self, max: u32, acting: &Policy, now_ms: i64) -> Result<(), Hold> {
        let sent = self.in_last_minute(now_ms);
        if sent >= max as usize {
            let why = format!("{sent} actions in the last minute (at most {max})");
            return Err(Hold::because(RAIL, acting, why));
        }
        self.sent.push_back(now_ms);
        Ok(())
    }

    /// Actions sent in the 60 s before `now_ms`.
    fn in_last_minute(&mut self, now_ms: i64) -> usize {
        while self.sent.front().is_some_and(|&t| now_ms - t >= 60_000) {
            self.sent.pop_front();
        }
        self.sent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_forgets_after_a_minute() {
        let mut r = RateLimit::default();
        for t in [0, 10_000, 59_000] {
            r.sent.push_back(t);
        }
        assert_eq!(r.in_last_minute(59_500), 3);
        assert_eq!(r.in_last_minute(60_000), 2);
        assert_eq!(r.in_last_minute(119_000), 0);
    }
}
