//! The Vigil cloud aggregator: receives every site's uplink over MQTT,
//! stores samples, anomalies and the audit trail as Parquet partitioned by
//! site and hour (polars), keeps the fleet registry from heartbeats and
//! retained presence, and serves a JSON API.

pub mod api;
pub mod cloud;
pub mod cluster;
pub mod config;
pub mod ingest;
pub mod lifecycle;
pub mod metrics;
pub mod receipts;
pub mod recent;
pub mod registry;
pub mod shared;
pub mod store;
pub mod wal;

pub use cloud::{run, serve};
pub use config::CloudConfig;
pub use metrics::CloudMetrics;
