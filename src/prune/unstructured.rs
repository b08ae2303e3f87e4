//! [`UnstructuredPruner`]: remove single weights by a [`Saliency`], per tensor or per row.

use std::borrow::Cow;

use ndarray::{ArrayRef, IxDyn};
use rayon::prelude::*;

use super::threshold::{self, NonFiniteAt};
use super::{Amount, Magnitude, PruneContext, Pruner, Random, Saliency, Wanda};
use super::{half_magnitude, prune_half_widened};
use crate::error::{Error, Result};
use crate::kernels::Abs;
use crate::mask::Mask;
use crate::tensor::{
    HalfFloat, HalfSliceMut, Scalar, check_finite, check_nonempty, check_same_shape, row_major,
};

/// Where the pruned fraction is counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Over the whole tensor (the default).
    #[default]
    Tensor,
    /// Within each row along axis 0 (a Linear neuron, a Conv2d filter; for an Embedding,
    /// a token's vector): every row loses the same number of weights, as Wanda
    /// prescribes. Needs at least 2 dimensions.
    PerOutput,
}

/// Removes single weights with the lowest [`Saliency`], exactly `round(s·n)` of them
/// (PyTorch's `l1_unstructured` / `random_unstructured`, generalised to any criterion).
///
/// ```
/// use ndarray::array;
/// use slimnn::prune::{MagnitudePruner, PruneContext, Pruner};
///
/// let mut w = array![[0.1f32, -0.9, 0.3], [0.8, -0.05, 0.5]].into_dyn();
/// let pruner = MagnitudePruner::magnitude(0.5)?;
/// let mask = pruner.prune(&mut w, &PruneContext::new())?;
/// assert_eq!(mask.count_pruned(), 3);
/// assert_eq!(w, array![[0.0f32, -0.9, 0.0], [0.8, 0.0, 0.5]].into_dyn());
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnstructuredPruner<S = Magnitude> {
    saliency: S,
    amount: Amount,
    scope: Scope,
}

/// Magnitude pruning (Han et al. 2015): the lowest `|w|` go.
pub type MagnitudePruner = UnstructuredPruner<Magnitude>;

impl<S> UnstructuredPruner<S> {
    /// Prunes `amount` of each tensor by `saliency`. Fails for a fraction outside `[0, 1]`.
    pub fn new(saliency: S, amount: impl Into<Amount>) -> Result<Self> {
        Ok(UnstructuredPruner {
            saliency,
            amount: amount.into().check()?,
            scope: Scope::Tensor,
        })
    }

    /// Sets where the amount is counted.
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// The criterion.
    pub fn saliency(&self) -> &S {
        &self.saliency
    }

    /// How much each tensor (or row) loses.
    pub fn amount(&self) -> Amount {
        self.amount
    }

    /// Where the amount is counted.
    pub fn scope(&self) -> Scope {
        self.scope
    }
}

impl UnstructuredPruner<Magnitude> {
    /// Magnitude pruning of `amount` per tensor.
    pub fn magnitude(amount: impl Into<Amount>) -> Result<Self> {
        Self::new(Magnitude, amount)
    }
}

impl UnstructuredPruner<Random> {
    /// Random pruning of `amount` per tensor, reproducible from `seed`.
    pub fn random(seed: u64, amount: impl Into<Amount>) -> Result<Self> {
        Self::new(Random::new(seed), amount)
    }
}

impl UnstructuredPruner<Wanda> {
    /// Wanda pruning of `amount` of every output row (needs activation norms).
    pub fn wanda(amount: impl Into<Amount>) -> Result<Self> {
        Ok(Self::new(Wanda, amount)?.with_scope(Scope::PerOutput))
    }
}

/// Scores ready for selection, with the key that ranks them: `|x|` when read straight
/// from the weights, the identity when materialised.
pub(crate) enum Keys<'a, T: Clone> {
    /// The weights themselves; rank by magnitude.
    Abs(Cow<'a, [T]>),
    /// Materialised scores; rank as they are.
    Scores(Vec<T>),
}

impl<'a, T: Scalar> Keys<'a, T> {
    /// Scores `weights` by `saliency`. Weights already pruned by `ctx.mask` score lowest
    /// (the most negative finite value), so pruning them again counts them first.
    pub(crate) fn compute<S: Saliency<T> + ?Sized>(
        saliency: &S,
        weights: &'a ArrayRef<T, IxDyn>,
        ctx: &PruneContext<'_, T>,
    ) -> Result<Self> {
        check_nonempty(weights.shape(), || ctx.what())?;
        if let Some(m) = ctx.mask {
            check_same_shape(weights.shape(), m.shape(), || {
                format!("mask of {}", ctx.what())
            })?;
        }
        if saliency.is_magnitude() && ctx.mask.is_none() {
            // Finiteness is checked during selection, without an extra pass.
            return Ok(Keys::Abs(row_major(weights)));
        }
        check_finite(&row_major(weights), || ctx.what())?;
        let scores = saliency.scores(weights, ctx)?;
        check_same_shape(weights.shape(), scores.shape(), || {
            format!("saliency scores of {}", ctx.what())
        })?;
        let mut scores = scores.into_iter().collect::<Vec<_>>();
        if let Some(m) = ctx.mask {
            for i in m.iter_pruned() {
                scores[i] = T::min_value();
            }
        }
        Ok(Keys::Scores(scores))
    }

    pub(crate) fn values(&self) -> &[T] {
        match self {
            Keys::Abs(v) => v,
            Keys::Scores(v) => v,
        }
    }

    pub(crate) fn is_abs(&self) -> bool {
        matches!(self, Keys::Abs(_))
    }
}

/// Turns a selection failure into an error naming the tensor.
pub(crate) fn non_finite<T: Scalar>(
    at: NonFiniteAt,
    keys: &[T],
    abs: bool,
    what: impl FnOnce() -> String,
) -> Error {
    Error::NonFinite {
        what: if abs {
            what()
        } else {
            format!("saliency scores of {}", what())
        },
        index: at.1,
        value: keys[at.1].as_f64(),
    }
}

impl<T: Scalar, S: Saliency<T>> Pruner<T> for UnstructuredPruner<S> {
    /// E.g. `"magnitude 50%"`, `"Wanda 50% per output row"`.
    fn describe(&self) -> String {
        let scope = match self.scope {
            Scope::Tensor => "",
            Scope::PerOutput => " per output row",
        };
        format!(
            "{} {}{scope}",
            Saliency::<T>::describe(&self.saliency),
            self.amount
        )
    }

    fn mask(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<Mask> {
        let keys = Keys::compute(&self.saliency, weights, ctx)?;
        let shape = weights.shape();
        let mask = match self.scope {
            Scope::Tensor => {
                let already = ctx.mask.map_or(0, Mask::count_pruned);
                let k = self.amount.count_of(keys.values().len())?.max(already);
                let (v, abs) = (keys.values(), keys.is_abs());
                let cut = threshold::select_by(&[v], k, abs)
                    .map_err(|at| non_finite(at, v, abs, || ctx.what()))?;
                threshold::mask_by(v, shape, 0, &cut, abs)
            }
            Scope::PerOutput => self.per_row(&keys, shape, ctx)?,
        };
        Ok(mask)
    }

    fn prune(&self, weights: &mut ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<Mask> {
        let fused =
            self.saliency.is_magnitude() && ctx.mask.is_none() && self.scope == Scope::Tensor;
        let shape = weights.shape().to_vec();
        match weights.as_slice_mut() {
            Some(w) if fused => {
                check_nonempty(&shape, || ctx.what())?;
                let k = self.amount.count_of(w.len())?;
                let cut = threshold::select::<T, Abs>(&[&*w], k)
                    .map_err(|at| non_finite(at, w, true, || ctx.what()))?;
                Ok(threshold::prune_in_place::<T, Abs>(w, &shape, 0, &cut))
            }
            _ => {
                let mask = self.mask(weights, ctx)?;
                mask.apply(weights)?;
                Ok(mask)
            }
        }
    }

    /// Magnitude per tensor without a prior mask reads the 16-bit values in place (no
    /// f32 copy); other settings widen once.
    fn prune_half_hook(
        &self,
        weights: HalfSliceMut<'_>,
        shape: &[usize],
        ctx: &PruneContext<'_, T>,
    ) -> Result<Mask> {
        match weights {
            HalfSliceMut::F16(w) => self.prune_half(w, shape, ctx),
            HalfSliceMut::Bf16(w) => self.prune_half(w, shape, ctx),
        }
    }
}

impl<S> UnstructuredPruner<S> {
    /// The mask of 16-bit `values` read in place when that is possible (magnitude, per
    /// tensor, no prior mask): `None` means the caller must widen.
    pub(crate) fn mask_half_in_place<T: Scalar, H: HalfFloat>(
        &self,
        values: &[H],
        shape: &[usize],
        ctx: &PruneContext<'_, T>,
    ) -> Result<Option<Mask>>
    where
        S: Saliency<T>,
    {
        if !(self.saliency.is_magnitude() && ctx.mask.is_none() && self.scope == Scope::Tensor) {
            return Ok(None);
        }
        crate::tensor::view(values, shape)?;
        check_nonempty(shape, || ctx.what())?;
        let k = self.amount.count_of(values.len())?;
        half_magnitude::magnitude_mask(values, shape, k, || ctx.what()).map(Some)
    }

    fn prune_half<T: Scalar, H: HalfFloat>(
        &self,
        weights: &mut [H],
        shape: &[usize],
        ctx: &PruneContext<'_, T>,
    ) -> Result<Mask>
    where
        S: Saliency<T>,
        Self: Pruner<T>,
    {
        match self.mask_half_in_place(weights, shape, ctx)? {
            Some(mask) => {
                mask.apply_half_slice(weights)?;
                Ok(mask)
            }
            None => prune_half_widened(self, weights, shape, ctx),
        }
    }

    fn per_row<T: Scalar>(
        &self,
        keys: &Keys<'_, T>,
        shape: &[usize],
        ctx: &PruneContext<'_, T>,
    ) -> Result<Mask> {
        if shape.len() < 2 {
            return Err(Error::bad_shape(
                ctx.what(),
                shape,
                "per-output pruning needs rows (a tensor of at least 2 dimensions)",
            ));
        }
        let (v, abs) = (keys.values(), keys.is_abs());
        let row_len = v.len() / shape[0];
        let k_row = self.amount.count_of(row_len)?;
        let mut keep = vec![false; v.len()];
        keep.par_chunks_mut(row_len)
            .zip(v.par_chunks(row_len))
            .enumerate()
            .try_for_each(|(r, (keep, row))| {
                let already = ctx.mask.map_or(0, |m| {
                    (r * row_len..(r + 1) * row_len)
                        .filter(|&i| !m.get(i))
                        .count()
                });
                let cut = threshold::select_by(&[row], k_row.max(already), abs)
                    .map_err(|at| NonFiniteAt(0, r * row_len + at.1))?;
                let row_mask = threshold::mask_by(row, &[row_len], 0, &cut, abs);
                keep.iter_mut()
                    .enumerate()
                    .for_each(|(i, k)| *k = row_mask.get(i));
                Ok(())
            })
            .map_err(|at| non_finite(at, v, abs, || ctx.what()))?;
        Ok(Mask::from_fn(shape, |i| keep[i]))
    }
}
