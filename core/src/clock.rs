//! Wall-clock helpers. Messages carry Unix milliseconds so every tier agrees.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, 0 if the clock is before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
