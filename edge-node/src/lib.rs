//! The Vigil edge node: ingests agent batches and sensor readings into a
//! bounded cache, scores every series each tick in one batched LSTM step,
//! turns anomalies into remediation commands under policy, verifies
//! recovery, and forwards samples, events and the audit trail to the cloud.

pub mod alerts;
pub mod api;
pub mod approval;
pub mod audit;
pub mod budget;
pub mod cache;
pub mod config;
pub mod edge;
pub mod entity;
pub mod gaps;
pub mod ingest;
pub mod intake;
pub mod liveness;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod policy;
pub mod rails;
pub mod remediation;
pub mod remote_write;
pub mod shared;
pub mod snapshot;
pub mod spool;
pub mod timing;
pub mod uplink;

pub use config::EdgeConfig;
pub use edge::{run, serve};
pub use metrics::EdgeMetrics;
pub use policy::PolicySet;
