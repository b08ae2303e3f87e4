//! [`SparseGpt`]: pruning that corrects the remaining weights for each removed one, from
//! the layer Hessian (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be
//! Accurately Pruned in One-Shot", ICML 2023).

use faer::{MatMut, MatRef};
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::gptq::check_weights;
use super::hessian::{
    DEFAULT_BLOCK_SIZE, DEFAULT_PERCDAMP, check_block_size, check_percdamp, check_statistics,
    prepare, sub_matmul,
};
use crate::error::{Error, Result};
use crate::mask::Mask;

/// The result of a pruning solver: which weights are kept, and the weights after the
/// update (pruned ones exactly 0).
#[derive(Clone, Debug, PartialEq)]
pub struct Pruned {
    /// Kept (`true`) and pruned weights, the weight's shape.
    pub mask: Mask,
    /// The updated weights `[out, in]`, 0 where pruned.
    pub weights: Array2<f32>,
}

/// Which weights SparseGPT may remove.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SparsityPattern {
    /// A fraction of all weights: in each column block, the weights of the whole block
    /// with the lowest `w² / [H⁻¹]_jj²` (the paper's adaptive mask selection). Every
    /// block loses its share (cumulative rounding), exactly `round(s · out · in)` in all.
    Unstructured(f64),
    /// The same fraction of every output row: as [`SparsityPattern::Unstructured`], with
    /// the selection made in each row of each block; exactly `round(s · in)` per row.
    PerRow(f64),
    /// Keep `n` of every `m` consecutive inputs of each row (e.g. 2:4), chosen by
    /// `w² / [H⁻¹]_jj²` when the group's first column is reached.
    NM {
        /// Weights kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
}

impl SparsityPattern {
    fn check(self) -> Result<Self> {
        match self {
            SparsityPattern::Unstructured(s) | SparsityPattern::PerRow(s) => {
                if !(0.0..=1.0).contains(&s) {
                    return Err(Error::invalid("sparsity", s, "a fraction in [0, 1]"));
                }
            }
            SparsityPattern::NM { n, m } => {
                if m < 2 {
                    return Err(Error::invalid("m", m, "a group size of at least 2"));
                }
                if n == 0 || n >= m {
                    return Err(Error::invalid("n", n, format!("1 ≤ n < m = {m}")));
                }
            }
        }
        Ok(self)
    }
}

/// `std::fmt::Display`: `"50%"`, `"50% per row"`, `"2:4"`.
impl std::fmt::Display for SparsityPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SparsityPattern::Unstructured(s) => write!(f, "{}%", s * 100.0),
            SparsityPattern::PerRow(s) => write!(f, "{}% per row", s * 100.0),
            SparsityPattern::NM { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

/// SparseGPT: prunes a Linear weight `W` `[out, in]` one input column at a time; each
/// removed weight's error is spread over the row's columns not yet visited, through the
/// inverse Hessian of `H = Σ x xᵀ`, so that the layer output on the calibration inputs
/// changes little.
///
/// The paper's algorithm, as its reference implementation: dampening and dead inputs
/// (see [`hessian`](super::hessian)), the upper Cholesky factor `U` of `H⁻¹`, column
/// blocks of 128 with the mask of each block chosen when the block starts by
/// `w² / U_jj²` (adaptive mask selection), or for N:M when each group of `m` starts, and
/// lazy batched updates (one matrix product per block). All arithmetic is in f64; ties
/// in the selection go by position, earlier first. For N:M the block size is rounded down
/// to a multiple of `m` (and `m` must divide `in`).
///
/// ```
/// use slimnn::calib::sparsegpt::{SparseGpt, SparsityPattern};
/// use slimnn::ndarray::Array2;
///
/// let x = Array2::from_shape_fn((64, 16), |(r, j)| ((r * 7 + j * 3) % 11) as f64 - 5.0 + (j % 4) as f64 * 0.3);
/// let h = x.t().dot(&x);
/// let w = Array2::from_shape_fn((4, 16), |(i, j)| ((i * 16 + j) as f32 * 0.37).sin());
/// let p = SparseGpt::new(SparsityPattern::NM { n: 2, m: 4 })?.prune(w.view(), h.view(), 64)?;
/// assert_eq!(p.mask.count_kept(), 32);
/// assert!(p.weights.iter().zip(p.mask.to_bools().iter()).all(|(&v, &k)| k || v == 0.0));
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SparseGpt {
    pattern: SparsityPattern,
    percdamp: f64,
    block_size: usize,
}

impl SparseGpt {
    /// SparseGPT to `pattern`, dampening 0.01, blocks of 128. Fails for a sparsity outside
    /// `[0, 1]` or an N:M without `1 ≤ n < m`.
    pub fn new(pattern: SparsityPattern) -> Result<Self> {
        Ok(SparseGpt {
            pattern: pattern.check()?,
            percdamp: DEFAULT_PERCDAMP,
            block_size: DEFAULT_BLOCK_SIZE,
        })
    }

    /// Sets the dampening fraction of the mean diagonal (≥ 0, default 0.01).
    pub fn with_percdamp(mut self, percdamp: f64) -> Result<Self> {
        self.percdamp = check_percdamp(percdamp)?;
        Ok(self)
    }

    /// Sets the column block (≥ 1, default 128). Mask selection happens per block, so the
    /// mask depends on it.
    pub fn with_block_size(mut self, block_size: usize) -> Result<Self> {
        self.block_size = check_block_size(block_size)?;
        Ok(self)
    }

    /// The pattern.
    pub fn pattern(&self) -> SparsityPattern {
        self.pattern
    }

    /// A short description, e.g. `"SparseGPT 2:4"`.
    pub fn describe(&self) -> String {
        let mut s = format!("SparseGPT {}", self.pattern);
        if self.percdamp != DEFAULT_PERCDAMP {
            s += &format!(", dampening {}", self.percdamp);
        }
        s
    }

    /// Prunes `w` `[out, in]` with the statistics `h = Σ x xᵀ` `[in, in]` of `rows`
    /// calibration rows.
    ///
    /// # Errors
    /// A Hessian that is not square or not `[in, in]`, non-finite values, zero rows, an
    /// `m` that does not divide `in`, or a Hessian that stays singular after dampening.
    pub fn prune(
        &self,
        w: ArrayView2<'_, f32>,
        h: ArrayView2<'_, f64>,
        rows: u64,
    ) -> Result<Pruned> {
        self.prune_named("weights", w, h, rows, &vec![false; w.len()])
    }

    /// [`SparseGpt::prune`], naming the weight `what` in errors. The weights `fixed`
    /// flags (row-major, `out · in`: pruned before) start from 0, stay pruned and count
    /// toward the target: the rest of the target is chosen among the other weights,
    /// spread over the blocks as the target is. With more fixed than the target, only
    /// they are pruned (an N:M group keeps at most `n`).
    pub(crate) fn prune_named(
        &self,
        what: &str,
        w: ArrayView2<'_, f32>,
        h: ArrayView2<'_, f64>,
        rows: u64,
        fixed: &[bool],
    ) -> Result<Pruned> {
        let (out, n) = w.dim();
        debug_assert_eq!(fixed.len(), out * n);
        check_statistics(what, [out, n], h, rows)?;
        check_weights(what, w)?;
        let mut bs = self.block_size;
        if let SparsityPattern::NM { m, .. } = self.pattern {
            if n % m != 0 {
                return Err(Error::bad_shape(
                    what,
                    &[out, n],
                    format!("N:M group size {m} does not divide the input size {n}"),
                ));
            }
            bs = (bs / m).max(1) * m;
        }
        let prep = prepare(h, self.percdamp, None, what)?;
        let u = prep.hinv_upper.as_slice().expect("standard layout");
        let mut wp: Vec<f64> = w
            .indexed_iter()
            .zip(fixed)
            .map(|(((_, j), &v), &f)| if prep.dead[j] || f { 0.0 } else { v as f64 })
            .collect();
        let mut pruned = fixed.to_vec();
        let mut err = vec![0.0f64; out * bs.min(n)];
        // Fixed weights before the block: in all (unstructured) and per row.
        let mut fixed_before = 0usize;
        let mut fixed_before_row = vec![0usize; out];
        let fixed_in = |r: usize, cols: std::ops::Range<usize>| {
            fixed[r * n + cols.start..r * n + cols.end]
                .iter()
                .filter(|&&f| f)
                .count()
        };
        let row_fixed: Vec<usize> = (0..out).map(|r| fixed_in(r, 0..n)).collect();
        let total_fixed: usize = row_fixed.iter().sum();
        for i1 in (0..n).step_by(bs) {
            let i2 = (i1 + bs).min(n);
            let count = i2 - i1;
            let score = |r: usize, c: usize| {
                let v = wp[r * n + c] / u[c * n + c];
                v * v
            };
            // Adaptive mask selection for the block.
            match self.pattern {
                SparsityPattern::Unstructured(s) => {
                    let s = free_fraction(s, out * n, total_fixed);
                    let block_fixed: usize = (0..out).map(|r| fixed_in(r, i1..i2)).sum();
                    let free_before = out * i1 - fixed_before;
                    let k = cumulative(s, free_before + out * count - block_fixed)
                        - cumulative(s, free_before);
                    fixed_before += block_fixed;
                    let mut idx: Vec<(usize, usize)> = (0..out)
                        .flat_map(|r| (i1..i2).map(move |c| (r, c)))
                        .filter(|&(r, c)| !fixed[r * n + c])
                        .collect();
                    select_smallest(&mut idx, k, |&(r, c)| score(r, c));
                    for &(r, c) in &idx[..k] {
                        pruned[r * n + c] = true;
                    }
                }
                SparsityPattern::PerRow(s) => {
                    pruned
                        .par_chunks_mut(n)
                        .zip(fixed_before_row.par_iter_mut())
                        .enumerate()
                        .for_each(|(r, (pr, before))| {
                            let s = free_fraction(s, n, row_fixed[r]);
                            let block_fixed = fixed_in(r, i1..i2);
                            let free_before = i1 - *before;
                            let k = cumulative(s, free_before + count - block_fixed)
                                - cumulative(s, free_before);
                            *before += block_fixed;
                            let mut idx: Vec<usize> =
                                (i1..i2).filter(|&c| !fixed[r * n + c]).collect();
                            select_smallest(&mut idx, k, |&c| score(r, c));
                            for &c in &idx[..k] {
                                pr[c] = true;
                            }
                        });
                }
                SparsityPattern::NM { .. } => {}
            }
            let err = &mut err[..out * count];
            let pattern = self.pattern;
            wp.par_chunks_mut(n)
                .zip(err.par_chunks_mut(count))
                .zip(pruned.par_chunks_mut(n))
                .zip(fixed.par_chunks(n))
                .for_each(|(((wr, er), pr), fr)| {
                    for (i, ei) in er.iter_mut().enumerate() {
                        let c = i1 + i;
                        if let SparsityPattern::NM { n: keep, m } = pattern
                            && i % m == 0
                        {
                            let mut idx: Vec<usize> = (c..c + m).collect();
                            let d = |j: usize| {
                                let v = wr[j] / u[j * n + j];
                                v * v
                            };
                            // Weights pruned before go first.
                            select_smallest(&mut idx, m - keep, |&j| {
                                if fr[j] { f64::NEG_INFINITY } else { d(j) }
                            });
                            for &j in &idx[..m - keep] {
                                pr[j] = true;
                            }
                        }
                        let x = wr[c];
                        let q = if pr[c] { 0.0 } else { x };
                        let e = (x - q) / u[c * n + c];
                        let urow = &u[c * n + c + 1..c * n + i2];
                        for (wj, &uj) in wr[c + 1..i2].iter_mut().zip(urow) {
                            *wj -= e * uj;
                        }
                        wr[c] = q;
                        *ei = e;
                    }
                });
            if i2 < n {
                let dst = MatMut::from_row_major_slice_mut(&mut wp, out, n).submatrix_mut(
                    0,
                    i2,
                    out,
                    n - i2,
                );
                let a = MatRef::from_row_major_slice(err, out, count);
                let b = MatRef::from_row_major_slice(u, n, n).submatrix(i1, i2, count, n - i2);
                sub_matmul(dst, a, b);
            }
        }
        Ok(Pruned {
            mask: Mask::from_fn(&[out, n], |i| !pruned[i]),
            weights: Array2::from_shape_fn((out, n), |(r, c)| {
                if pruned[r * n + c] {
                    0.0
                } else {
                    wp[r * n + c] as f32
                }
            }),
        })
    }
}

/// The fraction of the weights not pruned before (`fixed` of `total`) to prune so that
/// `round(sparsity · total)` are pruned in all (`sparsity` itself with none fixed, so the
/// counts are those of the paper's; 0 when the fixed ones reach the target).
fn free_fraction(sparsity: f64, total: usize, fixed: usize) -> f64 {
    if fixed == 0 {
        return sparsity;
    }
    let target = cumulative(sparsity, total);
    if fixed >= total {
        0.0
    } else {
        target.saturating_sub(fixed) as f64 / (total - fixed) as f64
    }
}

/// `round(s · x)`, halves to even: how many of the first `x` candidates a fraction `s`
/// prunes.
fn cumulative(s: f64, x: usize) -> usize {
    (s * x as f64).round_ties_even() as usize
}

/// Moves the `k` items of lowest `key` (ties: earlier first) to the front of `items`, in
/// that order.
pub(crate) fn select_smallest<T: Copy>(items: &mut [T], k: usize, key: impl Fn(&T) -> f64) {
    if k == 0 {
        return;
    }
    let mut keyed: Vec<(f64, usize, T)> = items
        .iter()
        .enumerate()
        .map(|(i, t)| (key(t), i, *t))
        .collect();
    let cmp = |a: &(f64, usize, T), b: &(f64, usize, T)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    if k < keyed.len() {
        keyed.select_nth_unstable_by(k - 1, cmp);
    }
    keyed[..k.min(items.len())].sort_by(cmp);
    for (slot, (_, _, t)) in items.iter_mut().zip(keyed) {
        *slot = t;
    }
}
