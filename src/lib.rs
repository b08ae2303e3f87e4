//! # slimnn
//!
//! Make trained neural networks smaller and faster while keeping their accuracy: the
//! methods of Cheng et al.'s survey "A Survey of Model Compression and Acceleration for
//! Deep Neural Networks" on your own buffers or on a safetensors model.
//!
//! - [`prune`]: magnitude (per layer and global), random, structured (L1/L2/geometric
//!   median) with physical removal, N:M, saliency (Taylor, OBD, SNIP, movement, Wanda),
//!   neuron merging, AGP schedules.
//! - [`Model`]: named parameters with their [`LayerKind`], loaded from and saved to
//!   safetensors ([`io`]), selected by name glob and kind ([`Selector`]).
//! - [`Mask`]: bit-packed pruning masks.
//! - [`quant`]: uniform, k-means (Lloyd and exact optimal), power-of-two, binary,
//!   ternary, product quantization, llama.cpp blocks, int8 kernels.
//! - [`lowrank`]: truncated and randomized SVD, Tucker-2, CP, separable filters, tensor
//!   trains, rank selection and global budgets.
//! - [`filters`]: compact and transferred filters: trained convolutions converted into
//!   depthwise-separable pairs, CReLU, tied (flipped and rotated) filter banks.
//! - [`encode`]: storage formats of compressed weights (CSR/CSC, bitmask, N:M, Deep
//!   Compression's relative index) and canonical Huffman coding; [`sparse_ops`]: products
//!   straight from CSR, N:M and weight-shared codes.
//! - [`dynamic`]: conditional computation: early exits (exit policies on logits,
//!   threshold calibration).
//! - [`calib`]: calibration statistics (`Σ x xᵀ` per layer input) from a network, an
//!   engine or a file, for data-aware methods (Wanda, AWQ, GPTQ, SparseGPT, OBS).
//! - [`pipeline`]: steps of every family chained over a model, and the [`Report`] of
//!   what they gained; [`store`]: the compressed model file.
//!
//! [`Report`]: pipeline::Report
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use slimnn::prune::{GlobalPruner, Statistics};
//! use slimnn::{Model, Selector};
//!
//! let mut model = Model::new();
//! model.add("fc1.weight", ArrayD::from_shape_fn(IxDyn(&[8, 16]), |i| (i[0] as f32 - 3.5) * (i[1] as f32 + 1.0)))?;
//! model.add("fc2.weight", ArrayD::from_shape_fn(IxDyn(&[4, 8]), |i| i[0] as f32 - i[1] as f32))?;
//! let report = model.prune_global(&Selector::prunable(), &GlobalPruner::magnitude(0.9)?, &Statistics::new())?;
//! assert_eq!(report.total_zeros(), 144); // round(0.9 · 160)
//! println!("{report}");
//! # Ok::<(), slimnn::Error>(())
//! ```
#![deny(missing_docs)]

pub mod calib;
pub mod distill;
pub mod dynamic;
pub mod encode;
pub mod error;
pub mod filters;
pub mod io;
pub mod kernels;
pub mod lowrank;
pub mod mask;
pub mod model;
pub mod nn;
pub mod pipeline;
pub mod prune;
pub mod quant;
pub mod sparse_ops;
pub mod store;
pub mod tensor;

pub mod guide {
    //! User guides, one page per method family (also in the repository's `docs/`).
    //! Their examples are compiled and run as tests, so they stay true.

    #[doc = include_str!("../docs/pruning.md")]
    pub mod pruning {}

    #[doc = include_str!("../docs/quantization.md")]
    pub mod quantization {}

    #[doc = include_str!("../docs/lowrank.md")]
    pub mod lowrank {}

    #[doc = include_str!("../docs/calibration.md")]
    pub mod calibration {}

    #[doc = include_str!("../docs/distillation.md")]
    pub mod distillation {}

    #[doc = include_str!("../docs/filters.md")]
    pub mod filters {}

    #[doc = include_str!("../docs/encode.md")]
    pub mod encode {}

    #[doc = include_str!("../docs/pipeline.md")]
    pub mod pipeline {}

    #[doc = include_str!("../docs/format.md")]
    pub mod format {}

    #[doc = include_str!("../docs/cli.md")]
    pub mod cli {}

    #[doc = include_str!("../docs/training.md")]
    pub mod training {}

    #[doc = include_str!("../docs/nn.md")]
    pub mod nn {}

    #[doc = include_str!("../docs/dynamic.md")]
    pub mod dynamic {}

    #[doc = include_str!("../docs/kernels.md")]
    pub mod kernels {}

    #[doc = include_str!("../docs/results.md")]
    pub mod results {}
}

/// The ndarray version slimnn's API takes and returns (0.17), so a user's arrays match.
pub use ndarray;

/// The `half` version slimnn's 16-bit entry points take (2.x), so a user's `f16` and
/// `bf16` buffers match.
pub use half;

pub use error::{Error, Result};
pub use mask::Mask;
pub use model::{DType, LayerKind, Model, Param, RawTensor, Selector};
pub use tensor::{HalfFloat, Scalar};
