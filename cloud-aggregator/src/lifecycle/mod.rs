//! The model lifecycle in the cloud: training sets from the store
//! (`dataset`), retraining and the gate (`train`; entity models in
//! `entities`), releases and their
//! rollout (`hub`), the canary (`rollout`), and the MQTT side (`server`).

pub mod cli;
pub mod config;
pub mod dataset;
pub mod entities;
pub mod hub;
pub mod metrics;
pub mod rollout;
pub mod runner;
pub mod server;
pub mod train;

pub use config::ModelsConfig;
pub use hub::Hub;
pub use metrics::LifecycleMetrics;
pub use runner::Lifecycle;
