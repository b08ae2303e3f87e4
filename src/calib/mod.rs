//! Data-aware compression from calibration statistics: what a layer's inputs look like
//! over a calibration set (`Σ x xᵀ`, the number of rows, per-input magnitudes), where
//! they come from (a network run, an engine, a statistics file), and the methods that
//! use them: AWQ (scaled quantization), GPTQ (quantization), SparseGPT and OBS (pruning
//! with weight updates). Each is a [`Quantizer`](crate::quant::Quantizer) or
//! [`Pruner`](crate::prune::Pruner) that reads the statistics from its context.
//!
//! See the [calibration guide](crate::guide::calibration).

pub mod awq;
mod file;
pub mod gptq;
pub mod hessian;
mod methods;
pub mod obs;
pub mod sparsegpt;
pub mod stats;

pub use awq::{Awq, AwqScales};
pub use gptq::Gptq;
pub use obs::Obs;
pub use sparsegpt::{Pruned, SparseGpt, SparsityPattern};
pub use stats::{CalibrationStats, LayerStats};
