//! [`Obs`]: Optimal Brain Surgeon, layer-wise and exact (Hassibi & Stork, "Second order
//! derivatives for network pruning: Optimal Brain Surgeon", NIPS 1993; in the layer-wise
//! form of Frantar & Alistarh, "Optimal Brain Compression", NeurIPS 2022).

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::gptq::check_weights;
use super::hessian::{DEFAULT_PERCDAMP, check_percdamp, check_statistics, dampen, inverse};
use super::sparsegpt::Pruned;
use crate::error::{Error, Result};
use crate::mask::Mask;

/// Optimal Brain Surgeon on one Linear weight `W` `[out, in]`, row by row: the layer
/// error `Σ_r (w_r − ŵ_r)ᵀ H (w_r − ŵ_r)` with `H = Σ x xᵀ` splits into one problem per
/// output row. In each row, greedily: remove the weight `q` with the least
/// `w_q² / [H⁻¹]_qq` (the error its removal causes after the optimal update), update the
/// rest by `−w_q / [H⁻¹]_qq · H⁻¹[:, q]`, and remove `q` from the inverse
/// (`H⁻¹ ← H⁻¹ − H⁻¹[:, q] H⁻¹[q, :] / [H⁻¹]_qq`) — exactly, not SparseGPT's lazy
/// approximation, until `round(s · in)` weights of the row are gone.
///
/// Cost `O(out · s · in³)` time and one `in × in` inverse per thread: meant for layers up
/// to a few thousand inputs (LeNet-300-100's 784 take about a second per 100 rows on one
/// core). Dampening and dead inputs as in [`hessian`](super::hessian); f64 throughout;
/// ties go to the earlier input.
///
/// ```
/// use slimnn::calib::obs::Obs;
/// use slimnn::ndarray::Array2;
///
/// let x = Array2::from_shape_fn((64, 16), |(r, j)| ((r * 7 + j * 3) % 11) as f64 - 5.0 + (j % 4) as f64 * 0.3);
/// let h = x.t().dot(&x);
/// let w = Array2::from_shape_fn((4, 16), |(i, j)| ((i * 16 + j) as f32 * 0.37).sin());
/// let p = Obs::new(0.5)?.prune(w.view(), h.view(), 64)?;
/// assert_eq!(p.mask.count_pruned(), 32); // 8 of 16 in every row
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Obs {
    sparsity: f64,
    percdamp: f64,
}

impl Obs {
    /// OBS to a fraction `sparsity` of every row (in `[0, 1]`), dampening 0.01.
    pub fn new(sparsity: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&sparsity) {
            return Err(Error::invalid("sparsity", sparsity, "a fraction in [0, 1]"));
        }
        Ok(Obs {
            sparsity,
            percdamp: DEFAULT_PERCDAMP,
        })
    }

    /// Sets the dampening fraction of the mean diagonal (≥ 0, default 0.01).
    pub fn with_percdamp(mut self, percdamp: f64) -> Result<Self> {
        self.percdamp = check_percdamp(percdamp)?;
        Ok(self)
    }

    /// The fraction removed from each row.
    pub fn sparsity(&self) -> f64 {
        self.sparsity
    }

    /// A short description, e.g. `"OBS 50% per row"`.
    pub fn describe(&self) -> String {
        let mut s = format!("OBS {}% per row", self.sparsity * 100.0);
        if self.percdamp != DEFAULT_PERCDAMP {
            s += &format!(", dampening {}", self.percdamp);
        }
        s
    }

    /// Prunes `w` `[out, in]` with the statistics `h = Σ x xᵀ` `[in, in]` of `rows`
    /// calibration rows.
    ///
    /// # Errors
    /// A Hessian that is not square or not `[in, in]`, non-finite values, zero rows, or a
    /// Hessian that stays singular after dampening.
    pub fn prune(
        &self,
        w: ArrayView2<'_, f32>,
        h: ArrayView2<'_, f64>,
        rows: u64,
    ) -> Result<Pruned> {
        self.prune_named("weights", w, h, rows, &vec![false; w.len()])
    }

    /// [`Obs::prune`], naming the weight `what` in errors. The weights `fixed` flags
    /// (row-major, `out · in`: pruned before) start from 0 and are removed first (with
    /// the optimal update of the others), then the greedy removal goes on until
    /// `round(s · in)` of the row are gone, or only they if there are more.
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
        let (hd, dead) = dampen(h, self.percdamp);
        let hinv = inverse(hd.view(), what)?;
        let hinv = hinv.as_slice().expect("standard layout");
        let k = (self.sparsity * n as f64).round_ties_even() as usize;
        let mut weights = Array2::<f32>::zeros((out, n));
        let mut pruned = vec![false; out * n];
        weights
            .as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(n)
            .zip(pruned.par_chunks_mut(n))
            .zip(fixed.par_chunks(n))
            .enumerate()
            .for_each_init(
                || vec![0.0f64; n * n],
                |hv, (r, ((wr_out, pr), fr))| {
                    hv.copy_from_slice(hinv);
                    let mut wr: Vec<f64> = (0..n)
                        .map(|j| {
                            if dead[j] || fr[j] {
                                0.0
                            } else {
                                w[[r, j]] as f64
                            }
                        })
                        .collect();
                    let mut col = vec![0.0f64; n];
                    let removals = k.max(fr.iter().filter(|&&f| f).count());
                    for _ in 0..removals {
                        let mut best = usize::MAX;
                        let mut best_score = f64::INFINITY;
                        for q in 0..n {
                            if pr[q] {
                                continue;
                            }
                            let s = if fr[q] {
                                f64::NEG_INFINITY
                            } else {
                                wr[q] * wr[q] / hv[q * n + q]
                            };
                            if best == usize::MAX || s < best_score {
                                best = q;
                                best_score = s;
                            }
                        }
                        let q = best;
                        let d = hv[q * n + q];
                        col.copy_from_slice(&hv[q * n..(q + 1) * n]);
                        let f = wr[q] / d;
                        for (wj, &cj) in wr.iter_mut().zip(&col) {
                            *wj -= f * cj;
                        }
                        wr[q] = 0.0;
                        pr[q] = true;
                        for i in 0..n {
                            if pr[i] || col[i] == 0.0 {
                                continue;
                            }
                            let fi = col[i] / d;
                            for (hij, &cj) in hv[i * n..(i + 1) * n].iter_mut().zip(&col) {
                                *hij -= fi * cj;
                            }
                        }
                    }
                    for ((o, &v), &p) in wr_out.iter_mut().zip(&wr).zip(pr.iter()) {
                        *o = if p { 0.0 } else { v as f32 };
                    }
                },
            );
        Ok(Pruned {
            mask: Mask::from_fn(&[out, n], |i| !pruned[i]),
            weights,
        })
    }
}
