//! Transferred and compact convolutional filters (the survey's third family): layers
//! whose architecture produces the same features with fewer parameters and operations.
//!
//! - [`DepthwiseSeparable`]: a trained Conv2d converted into its optimal depthwise +
//!   pointwise pair (Howard et al. 2017's MobileNet layers), as a [`LowRank`](crate::lowrank::LowRank)
//!   method, so that it is a pipeline step (`dwsep` in [`spec`](crate::pipeline::spec)),
//!   stored, reported and fine-tuned like every factorization;
//!   [`Network::convert_depthwise_separable`](crate::nn::Network::convert_depthwise_separable)
//!   and [`Network::split_depthwise_separable`](crate::nn::Network::split_depthwise_separable)
//!   make the network run the pair as real layers.
//! - [`crelu`] (Shang et al. 2016), [`Layer::CRelu`](crate::nn::Layer::CRelu) in a
//!   network: `[ReLU(x), ReLU(−x)]`, so a convolution with `k` filters gives `2k`
//!   channels.
//! - Tied filter banks (Dieleman et al. 2016), [`Layer::TiedConv2d`](crate::nn::Layer::TiedConv2d):
//!   base filters and their [`Transforms`] (flips, rotations), stored once
//!   ([`tied_bank`], [`tied_bank_backward`]).
//! - Blocks with named parameters: [`SeparableBlock`] (depthwise k×k → ReLU → 1×1, or
//!   MobileNet's layout with BatchNorms), [`FireModule`] (squeeze 1×1 → ReLU →
//!   [expand 1×1, expand 3×3] → ReLU), [`ConvBnRelu`] (conv → BatchNorm → ReLU) and
//!   [`ResidualBlock`] (ResNet's basic block).
//! - [`Network::costs`](crate::nn::Network::costs): parameters and multiply-adds per
//!   layer ([`NetworkCost`]), convolutions apart.
//! - k×k → k×1 + 1×k is the low-rank family's
//!   [`SpatialSeparable`](crate::lowrank::SpatialSeparable).
//!
//! The user guide is [`crate::guide::filters`].

mod blocks;
mod convert;
mod count;
mod crelu;
mod dwsep;
mod norm_blocks;
mod tied;

pub use blocks::{FireModule, SeparableBlock};
pub use count::{LayerCost, NetworkCost};
pub(crate) use crelu::crelu_example_shape;
pub use crelu::{crelu, crelu_backward};
pub use dwsep::DepthwiseSeparable;
pub use norm_blocks::{ConvBnRelu, ResidualBlock};
pub(crate) use tied::tied_output;
pub use tied::{Transform, Transforms, tied_bank, tied_bank_backward};

#[cfg(test)]
mod tests;
