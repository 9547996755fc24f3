//! Metric collection: host metrics and per-service checks, gathered into one
//! batch per interval.

pub mod host;
pub mod service;

pub use host::HostCollector;
pub use service::ServiceChecker;
