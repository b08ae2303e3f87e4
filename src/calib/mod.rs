//! Data-aware compression from calibration statistics: what a layer's inputs look like
//! over a calibration set (`Σ x xᵀ`, the number of rows, per-input magnitudes), where
//! they come from (a network run, an engine, a statistics file), and the methods that
//! use them.
//!
//! See the [calibration guide](crate::guide::calibration).

pub mod awq;
mod file;
pub mod stats;

pub use awq::{Awq, AwqScales};
pub use stats::{CalibrationStats, LayerStats};
