//! The state the run loop writes and the API reads (its own module, so that
//! the API and the run loop do not import each other).

use crate::lifecycle::Lifecycle;
use crate::registry::Registry;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use vigil_core::message::{AnomalyEvent, AuditRecord};

/// State the run loop writes and the API reads.
pub struct Shared {
    /// Fleet registry.
    pub registry: Mutex<Registry>,
    /// Recent anomaly events.
    pub anomalies: Mutex<VecDeque<AnomalyEvent>>,
    /// Recent audit records.
    pub audit: Mutex<VecDeque<AuditRecord>>,
    /// The model lifecycle.
    pub models: Arc<Lifecycle>,
    /// Bearer token for the API's writes, when set.
    pub api_token: Option<String>,
}

/// Appends `item`, dropping the oldest beyond `max`.
pub(crate) fn push_bounded<T>(q: &Mutex<VecDeque<T>>, item: T, max: usize) {
    if let Ok(mut q) = q.lock() {
        if q.len() >= max {
            q.pop_front();
        }
        q.push_back(item);
    }
}
