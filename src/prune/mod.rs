//! Parameter pruning: which weights to remove, and removing them.
//!
//! A [`Pruner`] turns a weight view (plus optional statistics in a [`PruneContext`])
//! into a [`Mask`]. Implementations:
//!
//! | pruner | removes | criterion | paper |
//! | --- | --- | --- | --- |
//! | [`UnstructuredPruner`] | single weights, per tensor or per output row | any [`Saliency`] | Han et al. 2015 (magnitude) |
//! | [`GlobalPruner`] | single weights, one threshold over many tensors | any [`Saliency`] | Han et al. 2015 |
//! | [`StructuredPruner`] | whole filters / channels / neurons | L1, L2, geometric median | Li et al. 2017; He et al. 2019 |
//! | [`NmPruner`] | all but N of every M weights along the input | any [`Saliency`] | Mishra et al. 2021 (2:4) |
//!
//! Saliencies ([`Magnitude`], [`Random`], [`Taylor`], [`Obd`], [`Snip`], [`Movement`],
//! [`Wanda`]) say how important each weight is; users can write their own.
//! [`merge_neurons`] removes neurons of a Linear chain without data (Srinivas & Babu
//! 2015); [`Schedule`] says how sparse to be at each training step (AGP, Zhu & Gupta
//! 2017); [`Model`](crate::Model) methods prune selected parameters, make masks
//! permanent, and physically remove pruned channels.
//!
//! Every count is exact: pruning a fraction `s` of `n` weights removes exactly
//! `round(s·n)` (halves to even, as PyTorch rounds `amount`), ties broken by position
//! (earlier first), found in O(n) without sorting.

mod amount;
mod global;
mod half_magnitude;
mod merge;
mod model_ops;
mod nm;
mod removal;
mod saliency;
mod schedule;
mod structured;
mod threshold;
mod unstructured;

use ndarray::{ArrayRef, ArrayView1, ArrayViewD, IxDyn};

use crate::calib::LayerStats;
use crate::error::Result;
use crate::mask::Mask;
use crate::model::LayerKind;
use crate::tensor::{HalfFloat, HalfSliceMut, Scalar, narrow_from, subject, view_mut, widen_array};

pub use amount::Amount;
pub use global::GlobalPruner;
pub use merge::{MergedLayers, merge_neurons};
pub use model_ops::{PruneReport, SparsityRow, Statistics};
pub use nm::NmPruner;
pub use removal::{RemovalReport, RemovedChannels};
pub use saliency::{
    Magnitude, Movement, MovementScores, Obd, Random, Saliency, Snip, Taylor, Wanda,
};
pub use schedule::Schedule;
pub use structured::{ChannelAxis, ChannelCriterion, StructuredPruner, channel_scores};
pub use unstructured::{MagnitudePruner, Scope, UnstructuredPruner};

/// What a pruner knows about the tensor besides its values: its name and kind, a seed,
/// the mask it already has, and optional statistics.
///
/// Statistics are views with the weight's shape (gradient, Hessian diagonal, scores) or
/// one value per input feature (activation norms). A method that needs one fails with
/// [`Error::MissingStatistic`](crate::Error::MissingStatistic) if it is absent, and with
/// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) if its shape is wrong.
///
/// ```
/// use ndarray::ArrayD;
/// use slimnn::prune::PruneContext;
///
/// let grad = ArrayD::<f32>::zeros(ndarray::IxDyn(&[4, 8]));
/// let ctx = PruneContext::new().with_name("fc1.weight").with_gradient(grad.view());
/// assert!(ctx.gradient.is_some());
/// ```
#[derive(Clone, Debug)]
pub struct PruneContext<'a, T = f32> {
    /// The parameter's name (used in error messages and to derive random streams).
    pub name: Option<&'a str>,
    /// The layer kind; `None`: inferred from the name and shape.
    pub kind: Option<LayerKind>,
    /// Seed for randomised methods.
    pub seed: u64,
    /// Weights already pruned. Built-in pruners keep them pruned and count them toward
    /// their target, so repeated pruning is monotone.
    pub mask: Option<&'a Mask>,
    /// ∂L/∂w, the weight's shape.
    pub gradient: Option<ArrayViewD<'a, T>>,
    /// Diagonal of the Hessian ∂²L/∂w², the weight's shape.
    pub hessian_diag: Option<ArrayViewD<'a, T>>,
    /// L2 norm of each input feature over a calibration set, `‖X_j‖₂`: one value per
    /// input (Linear `in`; Conv2d `in` or `in·kh·kw`).
    pub activation_norms: Option<ArrayView1<'a, T>>,
    /// Importance scores accumulated elsewhere (e.g. [`MovementScores`]), the weight's shape.
    pub scores: Option<ArrayViewD<'a, T>>,
    /// Calibration statistics of the layer's inputs (`Σ x xᵀ`, rows, magnitudes): what
    /// data-aware methods (Wanda, SparseGPT, OBS, a user's own) read. Wanda takes its
    /// norms from them when [`activation_norms`](Self::activation_norms) is absent.
    pub layer_stats: Option<&'a LayerStats>,
}

impl<T> Default for PruneContext<'_, T> {
    fn default() -> Self {
        PruneContext {
            name: None,
            kind: None,
            seed: 0,
            mask: None,
            gradient: None,
            hessian_diag: None,
            activation_norms: None,
            scores: None,
            layer_stats: None,
        }
    }
}

impl<'a, T> PruneContext<'a, T> {
    /// A context with nothing known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the parameter name.
    pub fn with_name(mut self, name: &'a str) -> Self {
        self.name = Some(name);
        self
    }

    /// Sets the layer kind.
    pub fn with_kind(mut self, kind: LayerKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the mask the weights already have.
    pub fn with_mask(mut self, mask: &'a Mask) -> Self {
        self.mask = Some(mask);
        self
    }

    /// Sets the gradient.
    pub fn with_gradient(mut self, gradient: ArrayViewD<'a, T>) -> Self {
        self.gradient = Some(gradient);
        self
    }

    /// Sets the Hessian diagonal.
    pub fn with_hessian_diag(mut self, h: ArrayViewD<'a, T>) -> Self {
        self.hessian_diag = Some(h);
        self
    }

    /// Sets the input activation norms.
    pub fn with_activation_norms(mut self, norms: ArrayView1<'a, T>) -> Self {
        self.activation_norms = Some(norms);
        self
    }

    /// Sets accumulated scores.
    pub fn with_scores(mut self, scores: ArrayViewD<'a, T>) -> Self {
        self.scores = Some(scores);
        self
    }

    /// Sets the calibration statistics of the layer's inputs.
    pub fn with_layer_stats(mut self, stats: &'a LayerStats) -> Self {
        self.layer_stats = Some(stats);
        self
    }

    /// The kind given, or the one inferred from the name and `shape`.
    pub fn kind_for(&self, shape: &[usize]) -> LayerKind {
        self.kind
            .unwrap_or_else(|| LayerKind::infer(self.name.unwrap_or(""), shape))
    }

    /// How error messages name the tensor.
    pub(crate) fn what(&self) -> String {
        subject(self.name, "weights")
    }
}

/// Decides which weights of one tensor to remove.
///
/// Implement [`Pruner::mask`] to write your own; it is then usable everywhere the
/// built-in pruners are (e.g. [`Model::prune`](crate::Model::prune)).
///
/// ```
/// use ndarray::{ArrayRef, IxDyn, array};
/// use slimnn::prune::{PruneContext, Pruner};
/// use slimnn::{Mask, Result};
///
/// /// Prunes every negative weight.
/// struct NegativePruner;
///
/// impl Pruner for NegativePruner {
///     fn mask(&self, w: &ArrayRef<f32, IxDyn>, _ctx: &PruneContext<'_, f32>) -> Result<Mask> {
///         Ok(Mask::from_bools(&w.mapv(|x| x >= 0.0)))
///     }
/// }
///
/// let mut w = array![[1.0f32, -2.0], [-3.0, 4.0]].into_dyn();
/// let mask = NegativePruner.prune(&mut w, &PruneContext::new())?;
/// assert_eq!(mask.count_kept(), 2);
/// assert_eq!(w, array![[1.0f32, 0.0], [0.0, 4.0]].into_dyn());
/// # Ok::<(), slimnn::Error>(())
/// ```
pub trait Pruner<T: Scalar = f32>: Send + Sync {
    /// The mask for `weights` (1 = keep). Must not modify anything.
    fn mask(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<Mask>;

    /// A short description with the settings, for reports and pipeline step labels
    /// (e.g. `"magnitude 50%"`). Default: the type's name without its path.
    fn describe(&self) -> String {
        crate::tensor::short_type_name::<Self>()
    }

    /// Computes the mask and zeroes the pruned weights in place. A pruner that also
    /// corrects the kept weights for what it removed ([`SparseGpt`](crate::calib::SparseGpt),
    /// [`Obs`](crate::calib::Obs)) overrides this to write them;
    /// [`Model::prune`](crate::Model::prune), the pipeline and the slice entry points
    /// call it, so the update reaches the weights.
    fn prune(&self, weights: &mut ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<Mask> {
        let mask = self.mask(weights, ctx)?;
        mask.apply(weights)?;
        Ok(mask)
    }

    /// [`Pruner::prune`] on an engine's row-major buffer of the given shape.
    fn prune_slice(
        &self,
        weights: &mut [T],
        shape: &[usize],
        ctx: &PruneContext<'_, T>,
    ) -> Result<Mask> {
        let mut view = view_mut(weights, shape)?;
        self.prune(&mut view, ctx)
    }

    /// The 16-bit path behind [`HalfPruner::prune_half_slice`]; the default widens the
    /// tensor once. Not part of the public API.
    #[doc(hidden)]
    fn prune_half_hook(
        &self,
        weights: HalfSliceMut<'_>,
        shape: &[usize],
        ctx: &PruneContext<'_, T>,
    ) -> Result<Mask> {
        match weights {
            HalfSliceMut::F16(w) => prune_half_widened(self, w, shape, ctx),
            HalfSliceMut::Bf16(w) => prune_half_widened(self, w, shape, ctx),
        }
    }
}

/// Pruning of an engine's 16-bit buffer (`half::f16` or `half::bf16`), for every
/// [`Pruner`] (blanket-implemented; bring it into scope with `use
/// slimnn::prune::HalfPruner`).
///
/// The mask is the one the pruner computes from the values widened to f32 (exact), and
/// pruned entries become +0 in the 16-bit buffer; kept entries keep their bits, unless
/// the pruner updates them ([`SparseGpt`](crate::calib::SparseGpt),
/// [`Obs`](crate::calib::Obs)): then they take the new values, rounded to nearest even. NaN and
/// infinity, shape mismatches: the same typed errors as [`Pruner::prune_slice`].
/// [`MagnitudePruner`] (per tensor, no prior mask) reads the 16-bit values in place, with
/// no f32 copy; other pruners widen the tensor once.
///
/// ```
/// use slimnn::half::{bf16, f16};
/// use slimnn::prune::{HalfPruner, MagnitudePruner, NmPruner, PruneContext};
///
/// let mut w: Vec<f16> = [0.1f32, -0.9, 0.3, 0.8, -0.05, 0.5].map(f16::from_f32).to_vec();
/// let mask = MagnitudePruner::magnitude(0.5)?.prune_half_slice(&mut w, &[2, 3], &PruneContext::new())?;
/// assert_eq!(mask.count_pruned(), 3);
/// assert_eq!(w, [0.0f32, -0.9, 0.0, 0.8, 0.0, 0.5].map(f16::from_f32));
///
/// let mut w: Vec<bf16> = [0.1f32, -0.9, 0.3, 0.8].map(bf16::from_f32).to_vec();
/// NmPruner::magnitude(2, 4)?.prune_half_slice(&mut w, &[1, 4], &PruneContext::new())?;
/// assert_eq!(w, [0.0f32, -0.9, 0.0, 0.8].map(bf16::from_f32));
/// # Ok::<(), slimnn::Error>(())
/// ```
pub trait HalfPruner {
    /// [`Pruner::prune_slice`] on a row-major 16-bit buffer of `shape`.
    fn prune_half_slice<H: HalfFloat>(
        &self,
        weights: &mut [H],
        shape: &[usize],
        ctx: &PruneContext<'_, f32>,
    ) -> Result<Mask>;
}

impl<P: Pruner<f32> + ?Sized> HalfPruner for P {
    fn prune_half_slice<H: HalfFloat>(
        &self,
        weights: &mut [H],
        shape: &[usize],
        ctx: &PruneContext<'_, f32>,
    ) -> Result<Mask> {
        self.prune_half_hook(H::wrap_mut(weights), shape, ctx)
    }
}

/// The default 16-bit path: widen once, prune (with the pruner's updates, if it makes
/// any), narrow back. Values the pruner leaves alone narrow to their own bits (widening
/// is exact); pruned ones become +0.
pub(crate) fn prune_half_widened<T: Scalar, H: HalfFloat, P: Pruner<T> + ?Sized>(
    pruner: &P,
    weights: &mut [H],
    shape: &[usize],
    ctx: &PruneContext<'_, T>,
) -> Result<Mask> {
    let mut wide = widen_array::<H, T>(weights, shape)?;
    let mask = pruner.prune(&mut wide, ctx)?;
    narrow_from(wide.as_slice().expect("a fresh array"), weights);
    Ok(mask)
}

impl<T: Scalar, P: Pruner<T> + ?Sized> Pruner<T> for &P {
    fn mask(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<Mask> {
        (**self).mask(weights, ctx)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn prune(&self, weights: &mut ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<Mask> {
        (**self).prune(weights, ctx)
    }
    fn prune_half_hook(
        &self,
        weights: HalfSliceMut<'_>,
        shape: &[usize],
        ctx: &PruneContext<'_, T>,
    ) -> Result<Mask> {
        (**self).prune_half_hook(weights, shape, ctx)
    }
}

impl<T: Scalar, P: Pruner<T> + ?Sized> Pruner<T> for Box<P> {
    fn mask(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<Mask> {
        (**self).mask(weights, ctx)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn prune(&self, weights: &mut ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<Mask> {
        (**self).prune(weights, ctx)
    }
    fn prune_half_hook(
        &self,
        weights: HalfSliceMut<'_>,
        shape: &[usize],
        ctx: &PruneContext<'_, T>,
    ) -> Result<Mask> {
        (**self).prune_half_hook(weights, shape, ctx)
    }
}
