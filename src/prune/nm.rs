//! [`NmPruner`]: N:M semi-structured sparsity.

use std::cmp::Ordering;

use ndarray::{ArrayRef, IxDyn};
use rayon::prelude::*;

use super::unstructured::{Keys, non_finite};
use super::{Magnitude, PruneContext, Pruner, Saliency};
use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::tensor::Scalar;

/// Keeps the `n` most salient of every `m` consecutive weights along the input
/// dimension, the pattern sparse tensor cores run at twice the dense speed for 2:4
/// (Mishra et al., "Accelerating Sparse Deep Neural Networks", 2021; Zhou et al.,
/// "Learning N:M Fine-grained Structured Sparse Neural Networks", ICLR 2021).
///
/// Groups run along axis 1 (`in`) of a Linear `[out, in]` or Conv2d `[out, in, kh, kw]`
/// weight — for a Conv2d, across input channels at each kernel position, as engines
/// that store NHWC expect. `m` must divide `in`. Ties go by position, earlier first.
///
/// ```
/// use ndarray::array;
/// use slimnn::prune::{NmPruner, PruneContext, Pruner};
///
/// let w = array![[0.1f32, -0.9, 0.3, 0.8, 0.5, -0.2, 0.05, 0.7]].into_dyn();
/// let mask = NmPruner::magnitude(2, 4)?.mask(&w, &PruneContext::new())?;
/// assert_eq!(mask.iter_kept().collect::<Vec<_>>(), vec![1, 3, 4, 7]);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NmPruner<S = Magnitude> {
    n: usize,
    m: usize,
    saliency: S,
}

impl NmPruner<Magnitude> {
    /// Keeps the `n` largest-magnitude of every `m` weights. Needs `1 ≤ n < m`.
    pub fn magnitude(n: usize, m: usize) -> Result<Self> {
        Self::new(Magnitude, n, m)
    }
}

impl<S> NmPruner<S> {
    /// Keeps the `n` most salient of every `m` weights by `saliency` (e.g. [`Wanda`](super::Wanda)).
    pub fn new(saliency: S, n: usize, m: usize) -> Result<Self> {
        if m < 2 {
            return Err(Error::invalid("m", m, "a group size of at least 2"));
        }
        if n == 0 || n >= m {
            return Err(Error::invalid("n", n, format!("1 ≤ n < m = {m}")));
        }
        Ok(NmPruner { n, m, saliency })
    }

    /// Weights kept per group.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Group size.
    pub fn m(&self) -> usize {
        self.m
    }
}

impl<T: Scalar, S: Saliency<T>> Pruner<T> for NmPruner<S> {
    /// E.g. `"magnitude 2:4"`.
    fn describe(&self) -> String {
        let saliency = Saliency::<T>::describe(&self.saliency);
        format!("{saliency} {}:{}", self.n, self.m)
    }

    fn mask(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<Mask> {
        let shape = weights.shape();
        if shape.len() < 2 {
            return Err(Error::bad_shape(
                ctx.what(),
                shape,
                "N:M pruning needs an input axis (a Linear or Conv2d weight)",
            ));
        }
        let (inputs, stride) = (shape[1], shape[2..].iter().product::<usize>());
        if inputs % self.m != 0 {
            return Err(Error::bad_shape(
                ctx.what(),
                shape,
                format!(
                    "M = {} does not divide the input dimension {inputs}",
                    self.m
                ),
            ));
        }
        let keys = Keys::compute(&self.saliency, weights, ctx)?;
        let v = keys.values();
        let abs = keys.is_abs();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(non_finite(
                super::threshold::NonFiniteAt(0, i),
                v,
                abs,
                || ctx.what(),
            ));
        }
        let row_len = inputs * stride;
        let (n, m) = (self.n, self.m);
        let mut keep = vec![true; v.len()];
        keep.par_chunks_mut(row_len)
            .zip(v.par_chunks(row_len))
            .for_each(|(keep, row)| {
                let mut group: Vec<(T, usize)> = Vec::with_capacity(m);
                for g in 0..inputs / m {
                    for r in 0..stride {
                        group.clear();
                        group.extend((0..m).map(|t| {
                            let i = (g * m + t) * stride + r;
                            let x = if abs { row[i].abs() } else { row[i] };
                            (x, i)
                        }));
                        // The m − n lowest by (score, position) go.
                        group.select_nth_unstable_by(m - n - 1, |a, b| {
                            a.0.partial_cmp(&b.0)
                                .unwrap_or(Ordering::Equal)
                                .then(a.1.cmp(&b.1))
                        });
                        for &(_, i) in &group[..m - n] {
                            keep[i] = false;
                        }
                    }
                }
            });
        let mask = Mask::from_fn(shape, |i| keep[i]);
        match ctx.mask {
            Some(old) => mask.and(old),
            None => Ok(mask),
        }
    }
}
