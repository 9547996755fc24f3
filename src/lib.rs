//! The `vigil` umbrella: the embedded broker, the demo workload, and the
//! in-process stack behind `vigil up` (also used by the end-to-end tests).

pub mod bench;
pub mod broker;
pub mod cli;
pub mod console;
pub mod demo;
pub mod etcd;
pub mod eval;
pub mod fleet;
pub mod intake_bench;
pub mod memory_bench;
pub mod model_tool;
pub mod mosquitto;
pub mod moto;
pub mod policy_check;
pub mod procstat;
pub mod remote_write_bench;
pub mod scrape_bench;
pub mod stack;
pub mod wait;
