//! Evaluation of detectors against labelled benchmarks.

pub mod events;
pub mod nab;
pub mod smd;
pub mod stream;
