//! Data-aware compression from calibration statistics: the layer Hessian `Σ x xᵀ` of each
//! Linear's inputs, and the second-order solvers that use it — GPTQ (quantization),
//! SparseGPT and OBS (pruning with weight updates).

pub mod gptq;
pub mod hessian;
pub mod obs;
pub mod sparsegpt;
