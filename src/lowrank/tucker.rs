//! [`Tucker2`]: a convolution as 1×1 → k×k → 1×1 by Tucker decomposition of its two
//! channel modes.

use ndarray::{Array2, Array4, ArrayRef, IxDyn, s};

use super::linalg::{matmul, sym_eig};
use super::{Factorization, Factors, LowRank, LowRankContext, Rank, conv_weight};
use crate::error::{Error, Result};

/// Tucker-2 decomposition of a Conv2d weight `[out, in, kh, kw]` on its output and input
/// channel modes (Kim, Park, Yoo, Choi, Yang & Shin, "Compression of Deep Convolutional
/// Neural Networks for Fast and Low Power Mobile Applications", ICLR 2016):
/// `W ≈ core ×₁ U_out ×₂ U_in`, run as a 1×1 convolution `in → r_in`, the `kh×kw` core
/// `r_in → r_out` with the layer's stride and padding, and a 1×1 convolution
/// `r_out → out`. Starts from the truncated HOSVD and refines by higher-order orthogonal
/// iteration (HOOI; De Lathauwer, De Moor & Vandewalle, 2000) until the error changes by
/// less than `tol`.
///
/// Ranks per mode: fixed, by energy of the mode's unfolding, or by VBMF on it (Kim et
/// al.'s choice); `Rank::Compression` (given for the output mode) scales both ranks with
/// their channel counts to reach the ratio.
///
/// ```
/// use ndarray::Array4;
/// use slimnn::lowrank::{LowRank, LowRankContext, Rank, Tucker2};
///
/// let w = Array4::from_shape_fn((16, 12, 3, 3), |(o, c, y, x)| ((o % 4) as f32 + 1.0) * ((c % 3) as f32 - 1.0) * (y + x) as f32).into_dyn();
/// let f = Tucker2::new(Rank::Fixed(4), Rank::Fixed(3))?.factorize(&w, &LowRankContext::new())?;
/// assert_eq!(f.ranks(), vec![4, 3]);
/// assert!(f.relative_error().unwrap() < 1e-5); // the channel modes have ranks 4 and 3
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tucker2 {
    out_rank: Rank,
    in_rank: Rank,
    max_iter: usize,
    tol: f64,
}

impl Tucker2 {
    /// Ranks for the output and input channel modes; at most 50 HOOI iterations, stopping
    /// when the relative error changes by less than 1e-6.
    pub fn new(out_rank: Rank, in_rank: Rank) -> Result<Self> {
        Ok(Tucker2 {
            out_rank: out_rank.check()?,
            in_rank: in_rank.check()?,
            max_iter: 50,
            tol: 1e-6,
        })
    }

    /// Sets the HOOI budget (0: the truncated HOSVD alone).
    pub fn with_max_iter(mut self, max_iter: usize) -> Self {
        self.max_iter = max_iter;
        self
    }

    /// Sets the stopping tolerance on the change of the relative error.
    pub fn with_tol(mut self, tol: f64) -> Self {
        self.tol = tol;
        self
    }
}

/// The top `r` eigenvectors of `x·xᵀ` (the leading left singular vectors of `x`), and
/// all the singular values of `x`.
fn leading(x: &Array2<f64>, r: usize) -> Result<(Array2<f64>, Vec<f64>)> {
    let gram = matmul(x.view(), x.t());
    let (vals, vecs) = sym_eig(gram.view())?;
    let s = vals.iter().map(|&v| v.max(0.0).sqrt()).collect();
    Ok((vecs.slice(s![.., ..r]).to_owned(), s))
}

/// `[o, c, k] → [c, o·k]`.
fn unfold_in(w: &Array4<f64>) -> Array2<f64> {
    let (o, c, kh, kw) = w.dim();
    w.view()
        .permuted_axes([1, 0, 2, 3])
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((c, o * kh * kw))
        .expect("contiguous")
}

impl LowRank for Tucker2 {
    fn factorize(
        &self,
        weights: &ArrayRef<f32, IxDyn>,
        ctx: &LowRankContext<'_>,
    ) -> Result<Factorization> {
        let w4 = conv_weight(weights, ctx, "Tucker-2")?;
        let (o, c, kh, kw) = w4.dim();
        let k = kh * kw;
        let w = w4.mapv(f64::from);
        let total: f64 = w.iter().map(|v| v * v).sum();
        if total == 0.0 {
            return Err(Error::invalid(
                "weights",
                "all zero",
                "a weight with some energy to factorize",
            ));
        }
        let x0 = w
            .clone()
            .into_shape_with_order((o, c * k))
            .expect("contiguous");
        let x1 = unfold_in(&w);
        let (_, s0) = leading(&x0, 1)?;
        let (_, s1) = leading(&x1, 1)?;
        let (ro, ri) = match self.out_rank {
            Rank::Compression(ratio) => {
                // Ranks f·out and f·in: params o·ro + ro·ri·k + c·ri = (o·c·k) / ratio.
                let dense = (o * c * k) as f64;
                let target = dense / ratio;
                let params = |f: f64| {
                    let (a, b) = (
                        (f * o as f64).round().max(1.0),
                        (f * c as f64).round().max(1.0),
                    );
                    o as f64 * a + a * b * k as f64 + c as f64 * b
                };
                let (mut lo, mut hi) = (0.0, 1.0);
                for _ in 0..60 {
                    let mid = (lo + hi) / 2.0;
                    if params(mid) <= target {
                        lo = mid
                    } else {
                        hi = mid
                    }
                }
                if params(lo) > target {
                    return Err(Error::invalid(
                        "compression",
                        ratio,
                        "a ratio ranks (1, 1) can reach",
                    ));
                }
                (
                    ((lo * o as f64).round() as usize).clamp(1, o),
                    ((lo * c as f64).round() as usize).clamp(1, c),
                )
            }
            r => (
                r.choose(&s0, total, (o, c * k), c * k + o, o * c * k)?,
                self.in_rank
                    .choose(&s1, total, (c, o * k), o * k + c, o * c * k)?,
            ),
        };
        let (mut u_out, _) = leading(&x0, ro)?;
        let (mut u_in, _) = leading(&x1, ri)?;
        let core_of = |u_out: &Array2<f64>, u_in: &Array2<f64>| -> Array4<f64> {
            // (U_outᵀ X0) as [ro, c, k], then ×₂ U_inᵀ per output slice.
            let a = matmul(u_out.t(), x0.view())
                .into_shape_with_order((ro, c, k))
                .expect("ro × c·k");
            let mut core = Array4::<f64>::zeros((ro, ri, kh, kw));
            for (r, slice) in a.outer_iter().enumerate() {
                let b = matmul(u_in.t(), slice)
                    .into_shape_with_order((ri, kh, kw))
                    .expect("ri × k");
                core.slice_mut(s![r, .., .., ..]).assign(&b);
            }
            core
        };
        let error_of = |core: &Array4<f64>| {
            ((total - core.iter().map(|v| v * v).sum::<f64>()).max(0.0) / total).sqrt()
        };
        let mut core = core_of(&u_out, &u_in);
        let mut err = error_of(&core);
        for _ in 0..self.max_iter {
            // U_out from W ×₂ U_inᵀ, mode-0 unfolding [o, ri·k].
            let y1 = matmul(u_in.t(), x1.view()); // [ri, o·k]
            let y0 = y1
                .into_shape_with_order((ri, o, k))
                .expect("ri × o × k")
                .permuted_axes([1, 0, 2])
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((o, ri * k))
                .expect("contiguous");
            u_out = leading(&y0, ro)?.0;
            // U_in from W ×₁ U_outᵀ, mode-1 unfolding [c, ro·k].
            let z0 = matmul(u_out.t(), x0.view()); // [ro, c·k]
            let z1 = z0
                .into_shape_with_order((ro, c, k))
                .expect("ro × c × k")
                .permuted_axes([1, 0, 2])
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((c, ro * k))
                .expect("contiguous");
            u_in = leading(&z1, ri)?.0;
            core = core_of(&u_out, &u_in);
            let next = error_of(&core);
            let change = (err - next).abs();
            err = next;
            if change < self.tol {
                break;
            }
        }
        let factors = Factors::Tucker2 {
            u_out: u_out.mapv(|v| v as f32),
            core: core.mapv(|v| v as f32),
            u_in: u_in.mapv(|v| v as f32),
        };
        Ok(Factorization::new(weights.shape(), factors)?
            .with_conv_spec(ctx.conv)?
            .with_error(err))
    }
}
