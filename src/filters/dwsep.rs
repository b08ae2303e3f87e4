//! [`DepthwiseSeparable`]: a trained convolution converted into the optimal
//! depthwise-separable pair.

use ndarray::{Array2, Array4, ArrayRef, IxDyn};

use crate::error::{Error, Result};
use crate::lowrank::balanced::{Sign, balanced_split, conv_factorization, energy_error};
use crate::lowrank::{Factorization, Factors, LowRank, LowRankContext, conv_weight};
use crate::model::LayerKind;

/// Converts a Conv2d weight `[out, in, kh, kw]` (one group) into a depthwise `kh×kw`
/// convolution (one filter per input channel) followed by a pointwise 1×1 convolution
/// (MobileNet's depthwise-separable pair, Howard et al. 2017), as
/// [`Factors::DepthwiseSeparable`].
///
/// For each input channel `c` the slice `W[:, c, :, :]`, an `out × kh·kw` matrix, is
/// replaced by its best rank-1 approximation `σ₁·u₁·v₁ᵀ` (Eckart–Young): the depthwise
/// filter is `√σ₁·v₁` and the pointwise column `√σ₁·u₁`. Since the pair reconstructs
/// `W[o, c, y, x] = p[o, c]·d[c, y, x]`, one rank-1 matrix per channel, and the channels
/// are independent, this is the pair closest to `W` in Frobenius norm; the squared error
/// is the sum over channels of the discarded singular values squared. The depthwise
/// filter's largest entry is made positive (the sign is otherwise arbitrary).
///
/// Fine-tune afterwards (the factors train like every factorization, see
/// [`Factorization::factor_gradients`]), or run the pair as real layers with
/// [`Network::split_depthwise_separable`](crate::nn::Network::split_depthwise_separable).
///
/// ```
/// use ndarray::{Array, IxDyn};
/// use slimnn::filters::DepthwiseSeparable;
/// use slimnn::lowrank::{LowRank, LowRankContext};
///
/// let w = Array::from_shape_fn(IxDyn(&[16, 8, 3, 3]), |i| ((i[0] * 7 + i[1] * 3 + i[2] * i[3]) as f32 * 0.1).sin());
/// let f = DepthwiseSeparable::new().factorize(&w, &LowRankContext::new())?;
/// assert_eq!(f.params(), 8 * 9 + 16 * 8); // 200 instead of 1152
/// assert!(f.relative_error().unwrap() < 1.0);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DepthwiseSeparable;

impl DepthwiseSeparable {
    /// The conversion (it has no settings).
    pub fn new() -> DepthwiseSeparable {
        DepthwiseSeparable
    }
}

impl LowRank for DepthwiseSeparable {
    fn factorize(
        &self,
        weights: &ArrayRef<f32, IxDyn>,
        ctx: &LowRankContext<'_>,
    ) -> Result<Factorization> {
        if let Some(kind) = ctx.kind
            && kind != LayerKind::Conv2d
        {
            return Err(Error::WrongKind {
                name: ctx.what(),
                kind: kind.to_string(),
                operation: "a depthwise-separable conversion",
                expected: "a Conv2d weight",
            });
        }
        if ctx.conv.groups != 1 {
            return Err(Error::invalid(
                "groups",
                ctx.conv.groups,
                "1 (a grouped convolution has no depthwise-separable conversion)",
            ));
        }
        let w = conv_weight(weights, ctx, "a depthwise-separable conversion")?;
        let (o, c, kh, kw) = w.dim();
        let k = kh * kw;
        let mut depthwise = Array4::<f32>::zeros((c, 1, kh, kw));
        let mut pointwise = Array4::<f32>::zeros((o, c, 1, 1));
        let (mut total, mut kept) = (0.0f64, 0.0f64);
        for ci in 0..c {
            let m = Array2::from_shape_fn((o, k), |(oi, j)| f64::from(w[[oi, ci, j / kw, j % kw]]));
            // The depthwise filter's largest entry positive (the sign is arbitrary).
            let split = balanced_split(m.view(), Sign::RightLargestPositive, |_, _| Ok(1))?;
            total += split.total;
            kept += split.kept;
            for (j, &v) in split.right.row(0).iter().enumerate() {
                depthwise[[ci, 0, j / kw, j % kw]] = v as f32;
            }
            for (oi, &v) in split.left.column(0).iter().enumerate() {
                pointwise[[oi, ci, 0, 0]] = v as f32;
            }
        }
        conv_factorization(
            weights,
            Factors::DepthwiseSeparable {
                depthwise,
                pointwise,
            },
            ctx,
            energy_error(total, kept),
        )
    }
}
