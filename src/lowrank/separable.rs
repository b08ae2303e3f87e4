//! [`SpatialSeparable`]: a k×k convolution as a k×1 convolution followed by a 1×k one.

use ndarray::{Array4, ArrayRef, IxDyn};

use super::balanced::{Sign, balanced_split, conv_factorization, energy_error};
use super::{Factorization, Factors, LowRank, LowRankContext, Rank, conv_weight};
use crate::error::Result;

/// Spatially separable rank-`r` filters (Jaderberg, Vedaldi & Zisserman, "Speeding up
/// Convolutional Neural Networks with Low Rank Expansions", BMVC 2014, scheme 2):
/// `W[o, c, y, x] ≈ Σ_r H[o, r, x]·V[r, c, y]`, a vertical `kh×1` convolution `in → r`
/// then a horizontal `1×kw` convolution `r → out`. The optimal factors come from the
/// SVD of `W` arranged as a `[(in·kh), (out·kw)]` matrix (Tai, Xiao, Zhang, Wang & E,
/// "Convolutional neural networks with low-rank regularization", ICLR 2016).
///
/// ```
/// use ndarray::Array4;
/// use slimnn::lowrank::{LowRank, LowRankContext, Rank, SpatialSeparable};
///
/// // Each filter an outer product of a column and a row: separable with rank 1 per pair.
/// let w = Array4::from_shape_fn((4, 3, 3, 3), |(o, c, y, x)| (o + 1) as f32 * (c as f32 - 1.0) * (y as f32 + 1.0) * (2.0 - x as f32)).into_dyn();
/// let f = SpatialSeparable::new(Rank::Fixed(1))?.factorize(&w, &LowRankContext::new())?;
/// assert!(f.relative_error().unwrap() < 1e-5);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpatialSeparable {
    rank: Rank,
}

impl SpatialSeparable {
    /// Keeps the components `rank` chooses.
    pub fn new(rank: Rank) -> Result<Self> {
        Ok(SpatialSeparable {
            rank: rank.check()?,
        })
    }
}

impl LowRank for SpatialSeparable {
    fn factorize(
        &self,
        weights: &ArrayRef<f32, IxDyn>,
        ctx: &LowRankContext<'_>,
    ) -> Result<Factorization> {
        let w = conv_weight(weights, ctx, "separable filters")?;
        let (o, c, kh, kw) = w.dim();
        // [(c, y), (o, x)]
        let m = w
            .permuted_axes([1, 2, 0, 3])
            .mapv(f64::from)
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((c * kh, o * kw))
            .expect("contiguous");
        let split = balanced_split(m.view(), Sign::AsComputed, |s, total| {
            self.rank
                .choose(s, total, (c * kh, o * kw), c * kh + o * kw, o * c * kh * kw)
        })?;
        let r = split.left.ncols();
        let vertical = Array4::from_shape_fn((r, c, kh, 1), |(j, ci, y, _)| {
            split.left[[ci * kh + y, j]] as f32
        });
        let horizontal = Array4::from_shape_fn((o, r, 1, kw), |(oi, j, _, x)| {
            split.right[[j, oi * kw + x]] as f32
        });
        conv_factorization(
            weights,
            Factors::Separable {
                vertical,
                horizontal,
            },
            ctx,
            energy_error(split.total, split.kept),
        )
    }
}
