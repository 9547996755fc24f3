//! The state the run loop writes and the API reads (its own module, so that
//! the API and the run loop do not import each other).

use crate::lifecycle::Lifecycle;
use crate::recent::Recent;
use crate::registry::Registry;
use std::sync::{Arc, Mutex};
use vigil_core::message::{AnomalyEvent, AuditRecord};

/// State the run loop writes and the API reads.
pub struct Shared {
    /// Fleet registry.
    pub registry: Mutex<Registry>,
    /// Recent anomaly events (in a cluster, of every site).
    pub anomalies: Mutex<Recent<AnomalyEvent>>,
    /// Recent audit records (in a cluster, of every site).
    pub audit: Mutex<Recent<AuditRecord>>,
    /// The model lifecycle.
    pub models: Arc<Lifecycle>,
    /// Bearer token for the API's writes, when set.
    pub api_token: Option<String>,
}
