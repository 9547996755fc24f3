//! Vigil's shared vocabulary: series and entity ids, the messages that travel
//! between agent, edge and cloud, their versioned envelopes and MQTT topics, and
//! the helpers every role uses (MQTT link, backoff, telemetry, shutdown, clock).

pub mod backoff;
pub mod clock;
pub mod config;
pub mod envelope;
pub mod file;
pub mod message;
pub mod mqtt;
pub mod prom;
pub mod ratelog;
pub mod role;
pub mod runtime;
pub mod series;
pub mod shutdown;
pub mod signing;
pub mod telemetry;
pub mod topic;
pub mod watch;

pub use envelope::{decode, encode, DecodeError, Payload, SCHEMA_VERSION};
pub use series::{EntityId, SeriesId};
