//! [`CpAls`]: a convolution as four thin convolutions by CP decomposition.

use ndarray::{Array2, ArrayRef, IxDyn, s};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, StandardNormal};

use super::linalg::{matmul, svd, sym_eig};
use super::{Factorization, Factors, LowRank, LowRankContext, conv_weight};
use crate::error::{Error, Result};

/// CP (canonical polyadic) decomposition of a Conv2d weight by alternating least squares
/// (Lebedev, Ganin, Rakhuba, Oseledets & Lempitsky, "Speeding-up Convolutional Neural
/// Networks Using Fine-tuned CP-Decomposition", ICLR 2015):
/// `W[o, c, y, x] ≈ Σ_r A[o, r]·B[c, r]·C[y, r]·D[x, r]`, run as a 1×1 convolution
/// `in → R`, a depthwise `kh×1`, a depthwise `1×kw`, and a 1×1 convolution `R → out`.
///
/// Starts from the leading singular vectors of each unfolding (padded with seeded
/// Gaussian columns where a mode is smaller than `R`), then updates one factor at a time
/// by least squares until the relative error changes by less than `tol`. ALS need not
/// converge within its budget: that is an [`Error::NotConverged`] with the error reached,
/// unless [`CpAls::best_effort`] asks for the last iterate (whose error
/// [`Factorization::relative_error`] reports).
///
/// ```
/// use ndarray::Array4;
/// use slimnn::lowrank::{CpAls, LowRank, LowRankContext};
///
/// // A sum of two rank-one tensors.
/// let w = Array4::from_shape_fn((6, 5, 3, 3), |(o, c, y, x)| {
///     (o as f32 + 1.0) * (c as f32 - 2.0) * (y as f32 + 1.0) * (x as f32 - 1.0)
///         + ((o * 7 % 5) as f32) * ((c + 1) as f32) * ((2 - y) as f32) * ((x + 2) as f32) * 0.5
/// }).into_dyn();
/// let f = CpAls::new(2)?.factorize(&w, &LowRankContext::new())?;
/// assert!(f.relative_error().unwrap() < 1e-3);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpAls {
    rank: usize,
    max_iter: usize,
    tol: f64,
    best_effort: bool,
}

impl CpAls {
    /// Rank `R ≥ 1`; at most 500 sweeps, stopping when the relative error changes by
    /// less than 1e-7.
    pub fn new(rank: usize) -> Result<Self> {
        if rank == 0 {
            return Err(Error::invalid("rank", 0, "at least 1"));
        }
        Ok(CpAls {
            rank,
            max_iter: 500,
            tol: 1e-7,
            best_effort: false,
        })
    }

    /// Sets the sweep budget.
    pub fn with_max_iter(mut self, max_iter: usize) -> Self {
        self.max_iter = max_iter.max(1);
        self
    }

    /// Sets the stopping tolerance.
    pub fn with_tol(mut self, tol: f64) -> Self {
        self.tol = tol;
        self
    }

    /// Returns the last iterate instead of an error when the budget runs out.
    pub fn best_effort(mut self, yes: bool) -> Self {
        self.best_effort = yes;
        self
    }
}

/// `(gram)^†`: the pseudo-inverse of a small symmetric positive semi-definite matrix.
fn pinv(gram: &Array2<f64>) -> Result<Array2<f64>> {
    let (vals, vecs) = sym_eig(gram.view())?;
    let cut = vals.first().copied().unwrap_or(0.0).abs() * 1e-12;
    let mut scaled = vecs.clone();
    for (j, &v) in vals.iter().enumerate() {
        let inv = if v > cut { 1.0 / v } else { 0.0 };
        scaled.column_mut(j).mapv_inplace(|x| x * inv);
    }
    Ok(matmul(scaled.view(), vecs.t()))
}

fn hadamard(mats: &[&Array2<f64>]) -> Array2<f64> {
    let mut out = mats[0].clone();
    for m in &mats[1..] {
        out *= *m;
    }
    out
}

fn gram(f: &Array2<f64>) -> Array2<f64> {
    matmul(f.t(), f.view())
}

/// Leading left singular vectors of `x` `[n, rest]`, `r` columns (Gaussian beyond `n`).
fn init(x: &Array2<f64>, r: usize, rng: &mut Xoshiro256PlusPlus) -> Result<Array2<f64>> {
    let (u, _, _) = svd(x.view())?;
    let n = x.nrows();
    let mut f = Array2::<f64>::zeros((n, r));
    let have = u.ncols().min(r);
    f.slice_mut(s![.., ..have]).assign(&u.slice(s![.., ..have]));
    for j in have..r {
        for i in 0..n {
            f[[i, j]] = StandardNormal.sample(rng);
        }
    }
    Ok(f)
}

impl LowRank for CpAls {
    fn factorize(
        &self,
        weights: &ArrayRef<f32, IxDyn>,
        ctx: &LowRankContext<'_>,
    ) -> Result<Factorization> {
        let w = conv_weight(weights, ctx, "CP")?;
        let (o, c, kh, kw) = w.dim();
        let r = self.rank;
        let w = w.mapv(f64::from);
        let total: f64 = w.iter().map(|v| v * v).sum();
        if total == 0.0 {
            return Err(Error::invalid(
                "weights",
                "all zero",
                "a weight with some energy to factorize",
            ));
        }
        let unfold = |perm: [usize; 4], rows: usize| -> Array2<f64> {
            let n = w.len();
            w.view()
                .permuted_axes(perm)
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((rows, n / rows))
                .expect("contiguous")
        };
        let x0 = unfold([0, 1, 2, 3], o); // [o, (c, y, x)]
        let x1 = unfold([1, 0, 2, 3], c); // [c, (o, y, x)]
        let x2 = unfold([2, 0, 1, 3], kh); // [y, (o, c, x)]
        let x3 = unfold([3, 0, 1, 2], kw); // [x, (o, c, y)]
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(ctx.seed);
        let mut a = init(&x0, r, &mut rng)?;
        let mut b = init(&x1, r, &mut rng)?;
        let mut cc = init(&x2, r, &mut rng)?;
        let mut d = init(&x3, r, &mut rng)?;
        // Khatri–Rao product of three factors, rows in the unfolding's column order.
        let kr3 = |p: &Array2<f64>, q: &Array2<f64>, t: &Array2<f64>| -> Array2<f64> {
            let (np, nq, nt) = (p.nrows(), q.nrows(), t.nrows());
            Array2::from_shape_fn((np * nq * nt, r), |(row, j)| {
                let (i, rest) = (row / (nq * nt), row % (nq * nt));
                p[[i, j]] * q[[rest / nt, j]] * t[[rest % nt, j]]
            })
        };
        let normalize = |f: &mut Array2<f64>| {
            for mut col in f.columns_mut() {
                let n = col.iter().map(|v| v * v).sum::<f64>().sqrt();
                if n > 0.0 {
                    col.mapv_inplace(|v| v / n);
                }
            }
        };
        let mut err = f64::INFINITY;
        let mut converged = false;
        let mut sweeps = 0;
        while sweeps < self.max_iter {
            sweeps += 1;
            b = matmul(
                matmul(x1.view(), kr3(&a, &cc, &d).view()).view(),
                pinv(&hadamard(&[&gram(&a), &gram(&cc), &gram(&d)]))?.view(),
            );
            normalize(&mut b);
            cc = matmul(
                matmul(x2.view(), kr3(&a, &b, &d).view()).view(),
                pinv(&hadamard(&[&gram(&a), &gram(&b), &gram(&d)]))?.view(),
            );
            normalize(&mut cc);
            d = matmul(
                matmul(x3.view(), kr3(&a, &b, &cc).view()).view(),
                pinv(&hadamard(&[&gram(&a), &gram(&b), &gram(&cc)]))?.view(),
            );
            normalize(&mut d);
            let m0 = matmul(x0.view(), kr3(&b, &cc, &d).view());
            let v = hadamard(&[&gram(&b), &gram(&cc), &gram(&d)]);
            a = matmul(m0.view(), pinv(&v)?.view());
            // ‖W − Ŵ‖² = ‖W‖² − 2⟨W, Ŵ⟩ + ‖Ŵ‖², both inner terms from small matrices.
            let inner: f64 = (&m0 * &a).sum();
            let norm_hat: f64 = hadamard(&[&gram(&a), &v]).sum();
            let next = ((total - 2.0 * inner + norm_hat).max(0.0) / total).sqrt();
            let change = (err - next).abs();
            err = next;
            if change < self.tol {
                converged = true;
                break;
            }
        }
        if !converged && !self.best_effort {
            return Err(Error::NotConverged {
                method: "CP alternating least squares",
                iterations: sweeps,
                error: err,
            });
        }
        let to32 = |f: &Array2<f64>| f.mapv(|v| v as f32);
        let factors = Factors::Cp {
            out: to32(&a),
            input: to32(&b),
            rows: to32(&cc),
            cols: to32(&d),
        };
        Ok(Factorization::new(weights.shape(), factors)?
            .with_conv_spec(ctx.conv)?
            .with_error(err))
    }
}
