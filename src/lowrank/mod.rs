//! Low-rank factorization: a weight as a product of smaller factors that run as a chain
//! of smaller layers.
//!
//! A [`LowRank`] method turns a weight into a [`Factorization`]: its [`Factors`], the
//! layers they run as ([`Factorization::forward`]), the dense weight they stand for
//! ([`Factorization::reconstruct`]), parameter and FLOP counts, and the relative error.
//!
//! | method | weight | layers | paper |
//! | --- | --- | --- | --- |
//! | [`TruncatedSvd`] | Linear `[out, in]` | Linear → Linear | Denton et al. 2014 |
//! | [`RandomizedSvd`] | Linear | Linear → Linear | Halko, Martinsson & Tropp 2011 |
//! | [`Tucker2`] | Conv2d | 1×1 → k×k → 1×1 | Kim et al. 2016 |
//! | [`CpAls`] | Conv2d | 1×1 → k×1 → 1×k → 1×1 | Lebedev et al. 2015 |
//! | [`SpatialSeparable`] | Conv2d | k×1 → 1×k | Jaderberg et al. 2014 |
//! | [`TtSvd`] | Linear | tensor-train contraction | Novikov et al. 2015 |
//!
//! Ranks are fixed, or chosen by energy, compression or VBMF ([`Rank`]);
//! [`allocate_ranks`] spreads one parameter or FLOP budget over many layers, and
//! [`Model::factorize_within`](crate::Model::factorize_within) does so over a model's
//! Linear layers. The user guide with measured results is [`crate::guide::lowrank`].

pub(crate) mod balanced;
mod budget;
mod cp;
mod factorization;
mod gradients;
pub(crate) mod linalg;
mod model_ops;
mod rank;
mod separable;
mod svd;
mod tt;
mod tucker;

use ndarray::{ArrayRef, ArrayView2, ArrayView4, Ix2, Ix4, IxDyn};

use crate::error::{Error, Result};
use crate::model::LayerKind;
use crate::nn::ConvSpec;
use crate::tensor::{check_finite, check_nonempty, row_major, subject};

pub use budget::{Budget, LayerSpectrum, allocate_ranks};
pub use cp::CpAls;
pub use factorization::{Factorization, Factors};
pub use model_ops::{FactorizedLayer, LowRankReport};
pub use rank::Rank;
pub use separable::SpatialSeparable;
pub use svd::{RandomizedSvd, TruncatedSvd};
pub use tt::TtSvd;
pub use tucker::Tucker2;

/// What a low-rank method knows about the weight besides its values.
#[derive(Clone, Copy, Debug, Default)]
pub struct LowRankContext<'a> {
    /// The parameter's name (for error messages).
    pub name: Option<&'a str>,
    /// The layer kind; `None`: inferred from the name and shape.
    pub kind: Option<LayerKind>,
    /// Seed for randomised methods.
    pub seed: u64,
    /// A convolution's stride and padding, carried into the factorized layers.
    pub conv: ConvSpec,
}

impl<'a> LowRankContext<'a> {
    /// A context with nothing known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the parameter name.
    pub fn with_name(mut self, name: &'a str) -> Self {
        self.name = Some(name);
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets a convolution's stride and padding.
    pub fn with_conv(mut self, conv: ConvSpec) -> Self {
        self.conv = conv;
        self
    }

    pub(crate) fn what(&self) -> String {
        subject(self.name, "weights")
    }
}

/// The weight as a Linear `[out, in]` matrix, checked non-empty and finite; `method`
/// names what needs it in the error.
pub(crate) fn linear_weight<'a>(
    weights: &'a ArrayRef<f32, IxDyn>,
    ctx: &LowRankContext<'_>,
    method: &str,
) -> Result<ArrayView2<'a, f32>> {
    let w = weights.view().into_dimensionality::<Ix2>().map_err(|_| {
        Error::bad_shape(
            ctx.what(),
            weights.shape(),
            format!("{method} needs a Linear [out, in] weight"),
        )
    })?;
    check_values(weights, ctx)?;
    Ok(w)
}

/// The weight as a Conv2d `[out, in, kh, kw]` tensor, checked non-empty and finite.
pub(crate) fn conv_weight<'a>(
    weights: &'a ArrayRef<f32, IxDyn>,
    ctx: &LowRankContext<'_>,
    method: &str,
) -> Result<ArrayView4<'a, f32>> {
    let w = weights.view().into_dimensionality::<Ix4>().map_err(|_| {
        Error::bad_shape(
            ctx.what(),
            weights.shape(),
            format!("{method} needs a Conv2d [out, in, kh, kw] weight"),
        )
    })?;
    check_values(weights, ctx)?;
    Ok(w)
}

fn check_values(weights: &ArrayRef<f32, IxDyn>, ctx: &LowRankContext<'_>) -> Result<()> {
    check_nonempty(weights.shape(), || ctx.what())?;
    check_finite(&row_major(weights), || ctx.what())
}

/// Factorizes a weight. Implement [`LowRank::factorize`] to write your own (build the
/// result with [`Factorization::new`]).
pub trait LowRank: Send + Sync {
    /// The factorization of `weights`.
    fn factorize(
        &self,
        weights: &ArrayRef<f32, IxDyn>,
        ctx: &LowRankContext<'_>,
    ) -> Result<Factorization>;
}

impl<L: LowRank + ?Sized> LowRank for &L {
    fn factorize(
        &self,
        weights: &ArrayRef<f32, IxDyn>,
        ctx: &LowRankContext<'_>,
    ) -> Result<Factorization> {
        (**self).factorize(weights, ctx)
    }
}

impl<L: LowRank + ?Sized> LowRank for Box<L> {
    fn factorize(
        &self,
        weights: &ArrayRef<f32, IxDyn>,
        ctx: &LowRankContext<'_>,
    ) -> Result<Factorization> {
        (**self).factorize(weights, ctx)
    }
}
