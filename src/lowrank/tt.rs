//! [`TtSvd`]: a Linear weight as a tensor train.

use ndarray::{Array2, Array4, ArrayRef, IxDyn, s};

use super::linalg::svd;
use super::{Factorization, Factors, LowRank, LowRankContext, Rank, linear_weight};
use crate::error::{Error, Result};

/// The tensor-train format of a Linear weight (Novikov, Podoprikhin, Osokin & Vetrov,
/// "Tensorizing Neural Networks", NeurIPS 2015), computed by TT-SVD (Oseledets,
/// "Tensor-Train Decomposition", SIAM J. Sci. Comput. 2011).
///
/// `W` `[out, in]` with `out = m₁⋯m_d` and `in = n₁⋯n_d` is reshaped to a `d`-way
/// tensor with modes `(m_k, n_k)`, and split into cores `[r_{k−1}, m_k, n_k, r_k]` by
/// successive truncated SVDs. `Rank::Fixed(r)` caps every TT-rank at `r`;
/// `Rank::Energy(e)` keeps the relative error within `√(1 − e)` (each of the `d − 1`
/// truncations within `√((1 − e)/(d − 1))`). The error is exact: the discarded parts
/// are orthogonal.
///
/// ```
/// use ndarray::Array2;
/// use slimnn::lowrank::{LowRank, LowRankContext, Rank, TtSvd};
///
/// let w = Array2::from_shape_fn((16, 16), |(i, j)| ((i * 16 + j) as f32 * 0.1).cos()).into_dyn();
/// let f = TtSvd::new(vec![4, 4], vec![4, 4], Rank::Fixed(16))?.factorize(&w, &LowRankContext::new())?;
/// assert!(f.relative_error().unwrap() < 1e-6); // full TT-rank: exact
/// let x = Array2::from_elem((2, 16), 1.0f32).into_dyn();
/// let (y, dense) = (f.forward(&x)?, x.clone().into_dimensionality::<ndarray::Ix2>().unwrap().dot(&w.into_dimensionality::<ndarray::Ix2>().unwrap().t()));
/// assert!(y.iter().zip(dense.iter()).all(|(a, b)| (a - b).abs() < 1e-3));
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TtSvd {
    out_modes: Vec<usize>,
    in_modes: Vec<usize>,
    rank: Rank,
}

impl TtSvd {
    /// Output and input factorizations (`out = Π out_modes`, `in = Π in_modes`, the same
    /// number of modes, each ≥ 1) and the rank rule (`Fixed` or `Energy`).
    pub fn new(out_modes: Vec<usize>, in_modes: Vec<usize>, rank: Rank) -> Result<Self> {
        if out_modes.is_empty()
            || out_modes.len() != in_modes.len()
            || out_modes.iter().chain(&in_modes).any(|&m| m == 0)
        {
            return Err(Error::invalid(
                "modes",
                format!("{out_modes:?} × {in_modes:?}"),
                "as many output as input modes, each at least 1",
            ));
        }
        match rank.check()? {
            Rank::Fixed(_) | Rank::Energy(_) => Ok(TtSvd {
                out_modes,
                in_modes,
                rank,
            }),
            r => Err(Error::invalid(
                "rank",
                format!("{r:?}"),
                "Rank::Fixed (maximum TT-rank) or Rank::Energy",
            )),
        }
    }
}

impl LowRank for TtSvd {
    fn factorize(
        &self,
        weights: &ArrayRef<f32, IxDyn>,
        ctx: &LowRankContext<'_>,
    ) -> Result<Factorization> {
        let w = linear_weight(weights, ctx, "a tensor train")?;
        let (rows, cols) = w.dim();
        let (pm, pn) = (
            self.out_modes.iter().product::<usize>(),
            self.in_modes.iter().product::<usize>(),
        );
        if (pm, pn) != (rows, cols) {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "modes {:?} × {:?} of {}",
                    self.out_modes,
                    self.in_modes,
                    ctx.what()
                ),
                expected: vec![rows, cols],
                got: vec![pm, pn],
            });
        }
        let d = self.out_modes.len();
        // [m₁…m_d, n₁…n_d] → [m₁, n₁, m₂, n₂, …]
        let mut dims: Vec<usize> = self.out_modes.clone();
        dims.extend(&self.in_modes);
        let perm: Vec<usize> = (0..d).flat_map(|k| [k, d + k]).collect();
        let t = w
            .mapv(f64::from)
            .into_shape_with_order(ndarray::IxDyn(&dims))
            .expect("element count matches")
            .permuted_axes(perm)
            .as_standard_layout()
            .into_owned();
        let total: f64 = t.iter().map(|v| v * v).sum();
        let per_step = match self.rank {
            Rank::Energy(e) if d > 1 => ((1.0 - e) / (d - 1) as f64).sqrt() * total.sqrt(),
            _ => 0.0,
        };
        let mut rest: Array2<f64> = t.into_shape_with_order((1, rows * cols)).expect("flat");
        let mut cores = Vec::with_capacity(d);
        let mut discarded = 0.0;
        let mut r_prev = 1;
        for k in 0..d - 1 {
            let (m, n) = (self.out_modes[k], self.in_modes[k]);
            let left = r_prev * m * n;
            let right = rest.len() / left;
            let c = rest.into_shape_with_order((left, right)).expect("reshape");
            let (u, s, vt) = svd(c.view())?;
            let mut r = match self.rank {
                Rank::Fixed(max) => max.min(s.len()),
                _ => {
                    // The smallest rank whose tail is within the per-step tolerance.
                    let mut tail = 0.0;
                    let mut r = s.len();
                    while r > 1 && tail + s[r - 1] * s[r - 1] <= per_step * per_step {
                        tail += s[r - 1] * s[r - 1];
                        r -= 1;
                    }
                    r
                }
            };
            r = r.max(1);
            discarded += s.iter().skip(r).map(|v| v * v).sum::<f64>();
            cores.push(
                u.slice(s![.., ..r])
                    .to_owned()
                    .into_shape_with_order((r_prev, m, n, r))
                    .expect("core")
                    .mapv(|v| v as f32),
            );
            let mut next = vt.slice(s![..r, ..]).to_owned();
            for (j, mut row) in next.rows_mut().into_iter().enumerate() {
                row.mapv_inplace(|v| v * s[j]);
            }
            rest = next;
            r_prev = r;
        }
        let (m, n) = (self.out_modes[d - 1], self.in_modes[d - 1]);
        cores.push(
            rest.into_shape_with_order((r_prev, m, n, 1))
                .map(|a: Array4<f64>| a.mapv(|v| v as f32))
                .expect("last core"),
        );
        let err = if total > 0.0 {
            (discarded / total).sqrt()
        } else {
            0.0
        };
        Ok(Factorization::new(weights.shape(), Factors::TensorTrain { cores })?.with_error(err))
    }
}
