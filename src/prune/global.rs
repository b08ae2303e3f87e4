//! [`GlobalPruner`]: one threshold over many tensors.

use ndarray::{ArrayViewD, ArrayViewMutD};

use super::threshold;
use super::unstructured::{Keys, non_finite};
use super::{Amount, Magnitude, PruneContext, Saliency};
use crate::error::{Error, Result};
use crate::kernels::Abs;
use crate::mask::Mask;
use crate::tensor::{Scalar, check_nonempty};

/// Prunes a fraction of all the weights of many tensors together, with one threshold,
/// so layers with many unimportant weights lose more (Han et al., "Learning both Weights
/// and Connections for Efficient Neural Networks", NeurIPS 2015; PyTorch's
/// `global_unstructured`).
///
/// Exactly `round(s·n)` weights go, `n` counted over all tensors; ties at the threshold
/// are broken by position (tensor order, then row-major index). The k-th score is found
/// by sampled selection in O(n), without sorting or copying the weights.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use slimnn::prune::GlobalPruner;
///
/// let mut a = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![0.1f32, 0.2, 0.3, 0.4]).unwrap();
/// let mut b = ArrayD::from_shape_vec(IxDyn(&[3]), vec![5.0f32, 6.0, 0.05]).unwrap();
/// let masks = GlobalPruner::magnitude(0.6)?.prune(&mut [a.view_mut(), b.view_mut()], &[])?;
/// // 4 of 7 weights go: 0.05, 0.1, 0.2, 0.3.
/// assert_eq!(masks[0].count_kept() + masks[1].count_kept(), 3);
/// assert_eq!(a.as_slice().unwrap(), &[0.0, 0.0, 0.0, 0.4]);
/// assert_eq!(b.as_slice().unwrap(), &[5.0, 6.0, 0.0]);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GlobalPruner<S = Magnitude> {
    saliency: S,
    amount: Amount,
}

impl<S> GlobalPruner<S> {
    /// Prunes `amount` of all weights together by `saliency`.
    pub fn new(saliency: S, amount: impl Into<Amount>) -> Result<Self> {
        Ok(GlobalPruner {
            saliency,
            amount: amount.into().check()?,
        })
    }

    /// The criterion.
    pub fn saliency(&self) -> &S {
        &self.saliency
    }

    /// How much of all the weights goes.
    pub fn amount(&self) -> Amount {
        self.amount
    }
}

impl<S: Saliency> GlobalPruner<S> {
    /// A short description with the settings, e.g. `"magnitude 90%"` (pipeline step
    /// labels use it).
    pub fn describe(&self) -> String {
        format!("{} {}", self.saliency.describe(), self.amount)
    }
}

impl GlobalPruner<Magnitude> {
    /// Global magnitude pruning of `amount`.
    pub fn magnitude(amount: impl Into<Amount>) -> Result<Self> {
        Self::new(Magnitude, amount)
    }
}

fn contexts<'c, 'a, T>(
    n: usize,
    given: &'c [PruneContext<'a, T>],
) -> Result<Vec<std::borrow::Cow<'c, PruneContext<'a, T>>>>
where
    PruneContext<'a, T>: Clone,
{
    match given.len() {
        0 => Ok((0..n)
            .map(|_| std::borrow::Cow::Owned(PruneContext::default()))
            .collect()),
        m if m == n => Ok(given.iter().map(std::borrow::Cow::Borrowed).collect()),
        m => Err(Error::invalid(
            "contexts",
            m,
            format!("none, or one per tensor ({n})"),
        )),
    }
}

impl<S> GlobalPruner<S> {
    /// One mask per tensor. `contexts` is empty or holds one context per tensor (names,
    /// statistics, existing masks).
    pub fn masks<T: Scalar>(
        &self,
        weights: &[ArrayViewD<'_, T>],
        contexts: &[PruneContext<'_, T>],
    ) -> Result<Vec<Mask>>
    where
        S: Saliency<T>,
    {
        if weights.is_empty() {
            return Err(Error::Empty {
                what: "the list of tensors to prune".into(),
            });
        }
        let ctxs = self::contexts(weights.len(), contexts)?;
        let mut keys = weights
            .iter()
            .zip(&ctxs)
            .map(|(w, c)| Keys::compute(&self.saliency, w, c))
            .collect::<Result<Vec<_>>>()?;
        // One key function must rank every tensor: materialise |w| if any was scored.
        if keys.iter().any(|k| !k.is_abs()) {
            for k in keys.iter_mut().filter(|k| k.is_abs()) {
                *k = Keys::Scores(k.values().iter().map(|x| x.abs()).collect());
            }
        }
        let slices: Vec<&[T]> = keys.iter().map(Keys::values).collect();
        let n: usize = slices.iter().map(|s| s.len()).sum();
        let already: usize = ctxs
            .iter()
            .map(|c| c.mask.map_or(0, Mask::count_pruned))
            .sum();
        let k = self.amount.count_of(n)?.max(already);
        let abs = keys[0].is_abs();
        let cut = threshold::select_by(&slices, k, abs)
            .map_err(|at| non_finite(at, slices[at.0], abs, || ctxs[at.0].what()))?;
        Ok(slices
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(s, (v, w))| threshold::mask_by(v, w.shape(), s, &cut, abs))
            .collect())
    }

    /// Computes the masks and zeroes the pruned weights in place. For magnitude pruning
    /// without existing masks this is one selection pass and one pruning pass over memory.
    pub fn prune<T: Scalar>(
        &self,
        weights: &mut [ArrayViewMutD<'_, T>],
        contexts: &[PruneContext<'_, T>],
    ) -> Result<Vec<Mask>>
    where
        S: Saliency<T>,
    {
        let fused = self.saliency.is_magnitude()
            && contexts.iter().all(|c| c.mask.is_none())
            && weights.iter().all(|w| w.is_standard_layout());
        if !fused || weights.is_empty() {
            let views: Vec<ArrayViewD<'_, T>> = weights.iter().map(|w| w.view()).collect();
            let masks = self.masks(&views, contexts)?;
            for (m, w) in masks.iter().zip(weights.iter_mut()) {
                m.apply(w)?;
            }
            return Ok(masks);
        }
        let ctxs = self::contexts(weights.len(), contexts)?;
        for (w, c) in weights.iter().zip(&ctxs) {
            check_nonempty(w.shape(), || c.what())?;
        }
        let shapes: Vec<Vec<usize>> = weights.iter().map(|w| w.shape().to_vec()).collect();
        let mut slices: Vec<&mut [T]> = weights
            .iter_mut()
            .map(|w| w.as_slice_mut().expect("standard layout checked above"))
            .collect();
        let n: usize = slices.iter().map(|s| s.len()).sum();
        let k = self.amount.count_of(n)?;
        let cut = {
            let shared: Vec<&[T]> = slices.iter().map(|s| &**s).collect();
            threshold::select::<T, Abs>(&shared, k)
                .map_err(|at| non_finite(at, shared[at.0], true, || ctxs[at.0].what()))?
        };
        Ok(slices
            .iter_mut()
            .zip(&shapes)
            .enumerate()
            .map(|(s, (v, shape))| threshold::prune_in_place::<T, Abs>(v, shape, s, &cut))
            .collect())
    }
}
