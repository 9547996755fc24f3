//! Vigil's anomaly model: a small candle LSTM that forecasts each series one
//! step ahead, run as one batched, stateful step per tick across all series,
//! with online per-series baselines that turn values and forecast errors into
//! scores in [0, 1]. Synchronous by design: callers run it off async threads.

pub mod ablation;
pub mod baseline;
pub mod bundle;
pub mod detector;
pub mod entity;
pub mod episode;
pub mod eval;
pub mod forecaster;
pub mod fused;
pub mod gate;
pub mod novelty;
pub mod pot;
pub mod season;
pub use vigil_core::signing;
pub mod training;

pub use ablation::Ablation;
pub use detector::{Detector, DetectorConfig, TickScores};

/// Errors from the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The configuration is unusable.
    #[error("invalid detector config: {0}")]
    Config(String),
    /// A model bundle could not be written or read.
    #[error("model bundle {path}: {what}")]
    Bundle {
        /// The bundle directory.
        path: std::path::PathBuf,
        /// What went wrong.
        what: String,
    },
}
