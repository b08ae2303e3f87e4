//! [`TruncatedSvd`] and [`RandomizedSvd`] of Linear weights.

use ndarray::{Array2, ArrayRef, ArrayView2, IxDyn, s};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, StandardNormal};

use super::linalg::{matmul, overflow_scale, svd, thin_q, unscale};
use super::{Factorization, Factors, LowRank, LowRankContext, Rank, linear_weight};
use crate::error::{Error, Result};

/// `W ≈ A·B` from `U`, `s`, `Vᵀ` truncated to `r`, balanced: `A = U_r·diag(√s_r)`,
/// `B = diag(√s_r)·V_rᵀ`.
fn balanced(u: &Array2<f32>, s: &[f32], vt: &Array2<f32>, r: usize) -> (Array2<f32>, Array2<f32>) {
    let mut a = u.slice(s![.., ..r]).to_owned();
    let mut b = vt.slice(s![..r, ..]).to_owned();
    for (j, &sj) in s[..r].iter().enumerate() {
        let root = sj.max(0.0).sqrt();
        a.column_mut(j).mapv_inplace(|v| v * root);
        b.row_mut(j).mapv_inplace(|v| v * root);
    }
    (a, b)
}

/// `‖W‖²_F`, accumulated in f64.
fn energy(w: ArrayView2<'_, f32>) -> f64 {
    w.iter().map(|&v| (v as f64).powi(2)).sum()
}

/// The relative error of keeping the first `r` of all the singular values `s`: by
/// Eckart–Young `√(Σ_{i>r} σ_i²) / ‖W‖` (summing the tail, not subtracting the kept
/// energy from the total, which cancels catastrophically for small errors).
fn tail_error(s: &[f32], r: usize, total: f64) -> f64 {
    let tail: f64 = s[r..].iter().map(|&v| (v as f64).powi(2)).sum();
    (tail / total.max(f64::MIN_POSITIVE)).sqrt()
}

/// `‖W − A·B‖_F / ‖W‖_F`, measured.
fn residual_error(w: ArrayView2<'_, f32>, a: &Array2<f32>, b: &Array2<f32>, total: f64) -> f64 {
    let approx = matmul(a.view(), b.view());
    let (diff, _) = crate::tensor::squared_errors(w.iter(), approx.iter());
    crate::tensor::relative_from(diff, total)
}

/// Truncated SVD of a Linear weight (Denton, Zaremba, Bruna, LeCun & Fergus, "Exploiting
/// Linear Structure Within Convolutional Networks for Efficient Evaluation", NeurIPS
/// 2014): `W ≈ (U_r Σ_r^{1/2})(Σ_r^{1/2} V_rᵀ)`, two Linear layers `in → r → out`. By
/// Eckart–Young it is the best rank-`r` approximation in Frobenius norm; its error is
/// `√(Σ_{i>r} σ_i²)`.
///
/// ```
/// use ndarray::Array2;
/// use slimnn::lowrank::{LowRank, LowRankContext, Rank, TruncatedSvd};
///
/// let w = Array2::from_shape_fn((32, 48), |(i, j)| ((i + 1) as f32).recip() * ((j as f32) * 0.3).sin()).into_dyn();
/// let f = TruncatedSvd::new(Rank::Fixed(1))?.factorize(&w, &LowRankContext::new())?;
/// assert_eq!(f.params(), 32 + 48);
/// assert!(f.relative_error().unwrap() < 1e-5); // the matrix has rank 1
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TruncatedSvd {
    rank: Rank,
}

impl TruncatedSvd {
    /// Keeps the components `rank` chooses.
    pub fn new(rank: Rank) -> Result<Self> {
        Ok(TruncatedSvd {
            rank: rank.check()?,
        })
    }
}

impl LowRank for TruncatedSvd {
    fn factorize(
        &self,
        weights: &ArrayRef<f32, IxDyn>,
        ctx: &LowRankContext<'_>,
    ) -> Result<Factorization> {
        let w = linear_weight(weights, ctx, "a Linear method")?;
        let (m, n) = w.dim();
        let (u, s, vt) = svd(w)?;
        let s = s.to_vec();
        let s64: Vec<f64> = s.iter().map(|&v| v as f64).collect();
        let total = energy(w);
        let r = self.rank.choose(&s64, total, (m, n), m + n, m * n)?;
        let (a, b) = balanced(&u, &s, &vt, r);
        Ok(Factorization::new(w.shape(), Factors::Linear { a, b })?
            .with_error(tail_error(&s, r, total)))
    }
}

/// Randomized SVD (Halko, Martinsson & Tropp, "Finding Structure with Randomness", SIAM
/// Review 2011, Algorithm 4.4): a Gaussian sketch of `r + oversampling` columns, refined
/// by `power_iterations` rounds of multiplying by `W` and `Wᵀ` with re-orthonormalisation
/// (QR) in between, then an exact SVD of the small projected matrix. For a small rank of
/// a large layer it costs a few matrix products instead of a full SVD, and comes within
/// a small factor of the optimal error (closer with more power iterations).
///
/// ```
/// use ndarray::Array2;
/// use slimnn::lowrank::{LowRank, LowRankContext, RandomizedSvd, Rank, TruncatedSvd};
///
/// // Singular values 1/(i+1): a decaying spectrum.
/// let w = Array2::from_shape_fn((64, 64), |(i, j)| if i == j { 1.0 / (i + 1) as f32 } else { 0.0 }).into_dyn();
/// let ctx = LowRankContext::new().with_seed(7);
/// let fast = RandomizedSvd::new(Rank::Fixed(8))?.factorize(&w, &ctx)?;
/// let best = TruncatedSvd::new(Rank::Fixed(8))?.factorize(&w, &ctx)?;
/// assert!(fast.relative_error().unwrap() <= best.relative_error().unwrap() * 1.01);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomizedSvd {
    rank: Rank,
    oversampling: usize,
    power_iterations: usize,
}

impl RandomizedSvd {
    /// Rank `Fixed` or `Compression` (the others need the whole spectrum), 20 extra
    /// sketch columns and 4 power iterations. (scikit-learn oversamples by 10; 20 costs
    /// a few percent more time at rank 128 and halves the excess over the optimal error
    /// on slowly decaying spectra — see `docs/lowrank.md`.)
    pub fn new(rank: Rank) -> Result<Self> {
        match rank.check()? {
            r @ (Rank::Fixed(_) | Rank::Compression(_)) => Ok(RandomizedSvd {
                rank: r,
                oversampling: 20,
                power_iterations: 4,
            }),
            _ => Err(Error::invalid(
                "rank",
                format!("{rank:?}"),
                "Rank::Fixed or Rank::Compression (energy and VBMF need the full spectrum: use TruncatedSvd)",
            )),
        }
    }

    /// Sets the extra sketch columns.
    pub fn with_oversampling(mut self, p: usize) -> Self {
        self.oversampling = p;
        self
    }

    /// Sets the power iterations.
    pub fn with_power_iterations(mut self, q: usize) -> Self {
        self.power_iterations = q;
        self
    }
}

impl LowRank for RandomizedSvd {
    fn factorize(
        &self,
        weights: &ArrayRef<f32, IxDyn>,
        ctx: &LowRankContext<'_>,
    ) -> Result<Factorization> {
        let w = linear_weight(weights, ctx, "a Linear method")?;
        // Weights near f32::MAX would overflow the sketch: work on them scaled by a power
        // of two, and scale the singular values back.
        let scale = overflow_scale(w);
        let scaled = scale.map(|f| w.mapv(|v| v * f));
        let w = scaled.as_ref().map_or(w, |s| s.view());
        let (m, n) = w.dim();
        let total = energy(w);
        let r = self.rank.choose(&[], total, (m, n), m + n, m * n)?;
        let l = (r + self.oversampling).min(m.min(n));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(ctx.seed);
        let omega = Array2::from_shape_simple_fn((n, l), || StandardNormal.sample(&mut rng));
        let wt = w.t();
        let mut q = thin_q(matmul(w, omega.view()).view());
        for _ in 0..self.power_iterations {
            let z = thin_q(matmul(wt, q.view()).view());
            q = thin_q(matmul(w, z.view()).view());
        }
        let b = matmul(q.t(), w); // [l, n]
        let (ub, s, vt) = svd(b.view())?;
        let u = matmul(q.view(), ub.view());
        let mut s = s.to_vec();
        let (a, bb) = balanced(&u, &s, &vt, r);
        let error = residual_error(w, &a, &bb, total);
        let (a, bb) = match scale {
            Some(f) => {
                unscale(&mut s, f, (m, n))?;
                balanced(&u, &s, &vt, r)
            }
            None => (a, bb),
        };
        Ok(Factorization::new(w.shape(), Factors::Linear { a, b: bb })?.with_error(error))
    }
}
