//! [`SpatialSeparable`]: a k×k convolution as a k×1 convolution followed by a 1×k one.

use ndarray::{Array4, ArrayRef, IxDyn, s};

use super::linalg::svd;
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
        let (u, sv, vt) = svd(m.view())?;
        let s: Vec<f64> = sv.to_vec();
        let total: f64 = m.iter().map(|v| v * v).sum();
        let r = self.rank.choose(
            &s,
            total,
            (c * kh, o * kw),
            c * kh + o * kw,
            o * c * kh * kw,
        )?;
        let mut vertical = Array4::<f32>::zeros((r, c, kh, 1));
        let mut horizontal = Array4::<f32>::zeros((o, r, 1, kw));
        for j in 0..r {
            let root = s[j].sqrt();
            let col = u.column(j);
            for ci in 0..c {
                for y in 0..kh {
                    vertical[[j, ci, y, 0]] = (col[ci * kh + y] * root) as f32;
                }
            }
            let row = vt.slice(s![j, ..]);
            for oi in 0..o {
                for x in 0..kw {
                    horizontal[[oi, j, 0, x]] = (row[oi * kw + x] * root) as f32;
                }
            }
        }
        let kept: f64 = s[..r].iter().map(|v| v * v).sum();
        let err = if total > 0.0 {
            ((total - kept).max(0.0) / total).sqrt()
        } else {
            0.0
        };
        Ok(Factorization::new(
            weights.shape(),
            Factors::Separable {
                vertical,
                horizontal,
            },
        )?
        .with_conv_spec(ctx.conv)?
        .with_error(err))
    }
}
