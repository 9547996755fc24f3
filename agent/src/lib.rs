//! The Vigil host agent: collects host and service metrics each interval and
//! publishes them to its edge node; runs remediation commands, but only those
//! that name an action in its local catalog, and reports the result. It
//! also scrapes Prometheus endpoints on the host (`scrape`).

pub mod actions;
pub mod agent;
pub mod backlog;
pub mod breaker;
pub mod catalog;
mod collect;
pub mod collector;
pub mod config;
pub mod executor;
pub mod ledger;
pub mod metrics;
pub mod scrape;
pub mod supervisor;

pub use agent::{run, serve};
pub use catalog::Catalog;
pub use config::AgentConfig;
pub use metrics::AgentMetrics;
