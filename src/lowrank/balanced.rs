//! The mechanism shared by the conversions whose two factors come from one truncated
//! SVD of the weight rearranged as a matrix: [`SpatialSeparable`](super::SpatialSeparable)
//! (one SVD of the whole weight) and
//! [`DepthwiseSeparable`](crate::filters::DepthwiseSeparable) (one rank-1 SVD per input
//! channel). Each method only arranges the weight into matrices and the split halves
//! into its factors.

use ndarray::{Array2, ArrayRef, ArrayView2, IxDyn, s};

use super::linalg::svd;
use super::{Factorization, Factors, LowRankContext};
use crate::error::Result;

/// A matrix `M ≈ L·R` by its truncated SVD, the singular values split evenly between
/// the two factors: `L = U_r·√Σ_r`, `R = √Σ_r·V_rᵀ`.
pub(crate) struct BalancedSplit {
    /// `[m, r]`: column `j` is `±√σ_j·u_j`.
    pub left: Array2<f64>,
    /// `[r, n]`: row `j` is `±√σ_j·v_jᵀ` (the same sign as column `j` of `left`).
    pub right: Array2<f64>,
    /// `‖M‖²_F`.
    pub total: f64,
    /// `Σ_{j<r} σ_j²`, the energy kept.
    pub kept: f64,
}

/// Which sign each pair of singular vectors gets (both flip together, so `L·R` is the
/// same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sign {
    /// The SVD's own.
    AsComputed,
    /// The one that makes the largest entry of each row of `R` positive.
    RightLargestPositive,
}

/// [`BalancedSplit`] of `m`, keeping the `r` components that `rank(σ, ‖M‖²)` chooses
/// from the singular values (descending) and the energy.
pub(crate) fn balanced_split(
    m: ArrayView2<'_, f64>,
    sign: Sign,
    rank: impl FnOnce(&[f64], f64) -> Result<usize>,
) -> Result<BalancedSplit> {
    let (u, sv, vt) = svd(m)?;
    let s = sv.to_vec();
    let total: f64 = m.iter().map(|v| v * v).sum();
    let r = rank(&s, total)?.min(s.len());
    let mut left = u.slice(s![.., ..r]).to_owned();
    let mut right = vt.slice(s![..r, ..]).to_owned();
    for (j, &sj) in s[..r].iter().enumerate() {
        let largest = match sign {
            Sign::AsComputed => 1.0,
            Sign::RightLargestPositive => right
                .row(j)
                .iter()
                .fold(0.0f64, |a, &v| if v.abs() > a.abs() { v } else { a }),
        };
        let root = sj.sqrt() * if largest < 0.0 { -1.0 } else { 1.0 };
        left.column_mut(j).mapv_inplace(|v| v * root);
        right.row_mut(j).mapv_inplace(|v| v * root);
    }
    let kept = s[..r].iter().map(|v| v * v).sum();
    Ok(BalancedSplit {
        left,
        right,
        total,
        kept,
    })
}

/// The relative error `√((total − kept) / total)` of keeping the energy `kept` of
/// `total` (0 for a zero weight).
pub(crate) fn energy_error(total: f64, kept: f64) -> f64 {
    if total > 0.0 {
        ((total - kept).max(0.0) / total).sqrt()
    } else {
        0.0
    }
}

/// `factors` as the factorization of the convolution weight `weights`, with the
/// context's stride and padding and the relative error `error`.
pub(crate) fn conv_factorization(
    weights: &ArrayRef<f32, IxDyn>,
    factors: Factors,
    ctx: &LowRankContext<'_>,
    error: f64,
) -> Result<Factorization> {
    Ok(Factorization::new(weights.shape(), factors)?
        .with_conv_spec(ctx.conv)?
        .with_error(error))
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::*;

    /// The split of full rank gives the matrix back, the split of rank 1 keeps the
    /// first singular value's energy, and the sign rule makes the row of `R` peak
    /// positive.
    #[test]
    fn balanced_split_reconstructs_and_normalizes_signs() {
        let m = Array2::from_shape_fn((5, 4), |(i, j)| {
            (i as f64 + 1.0) * (0.3 - j as f64) + 0.5 * ((i * j) as f64).sin()
        });
        let full = balanced_split(m.view(), Sign::AsComputed, |s, _| Ok(s.len())).unwrap();
        let back = full.left.dot(&full.right);
        assert!((&back - &m).iter().all(|d| d.abs() < 1e-9));
        assert!(energy_error(full.total, full.kept) < 1e-6);

        for sign in [Sign::AsComputed, Sign::RightLargestPositive] {
            let one = balanced_split(m.view(), sign, |_, _| Ok(1)).unwrap();
            assert_eq!((one.left.dim(), one.right.dim()), ((5, 1), (1, 4)));
            let s0 = one.left.column(0).dot(&one.left.column(0)).sqrt()
                * one.right.row(0).dot(&one.right.row(0)).sqrt();
            assert!((one.kept - s0 * s0).abs() < 1e-9 * one.total);
            if sign == Sign::RightLargestPositive {
                let largest = one
                    .right
                    .row(0)
                    .iter()
                    .fold(0.0f64, |a, &v| if v.abs() > a.abs() { v } else { a });
                assert!(largest > 0.0);
            }
        }
        assert_eq!(energy_error(0.0, 0.0), 0.0);
        assert!((energy_error(4.0, 3.0) - 0.5).abs() < 1e-12);
    }
}
