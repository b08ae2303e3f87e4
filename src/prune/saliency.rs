//! [`Saliency`]: how important each weight is. Higher scores are kept.

use ndarray::{ArrayD, ArrayRef, ArrayViewD, IxDyn, Zip};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

use super::PruneContext;
use crate::error::{Error, Result};
use crate::tensor::{Scalar, check_finite, check_same_shape, row_major};

/// Scores the importance of every weight of a tensor; pruners remove the lowest.
///
/// Implement [`Saliency::scores`] to plug in your own criterion: it then works with
/// [`UnstructuredPruner`](super::UnstructuredPruner), [`GlobalPruner`](super::GlobalPruner)
/// and [`NmPruner`](super::NmPruner). Scores must be finite.
pub trait Saliency<T: Scalar = f32>: Send + Sync {
    /// One score per weight, in the weights' shape.
    fn scores(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<ArrayD<T>>;

    /// Whether the score is `|w|` itself. Pruners then read it straight from the weights
    /// instead of materialising a score tensor. Default: `false`.
    fn is_magnitude(&self) -> bool {
        false
    }

    /// A short name for reports (e.g. `"magnitude"`, `"random (seed 7)"`). Default: the
    /// type's name without its path.
    fn describe(&self) -> String {
        crate::tensor::short_type_name::<Self>()
    }
}

impl<T: Scalar, S: Saliency<T> + ?Sized> Saliency<T> for &S {
    fn scores(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<ArrayD<T>> {
        (**self).scores(weights, ctx)
    }
    fn is_magnitude(&self) -> bool {
        (**self).is_magnitude()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

impl<T: Scalar, S: Saliency<T> + ?Sized> Saliency<T> for Box<S> {
    fn scores(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<ArrayD<T>> {
        (**self).scores(weights, ctx)
    }
    fn is_magnitude(&self) -> bool {
        (**self).is_magnitude()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// A statistic the method needs, checked for presence, shape and finiteness.
fn needed<'v, 'a, T: Scalar>(
    stat: &'v Option<ArrayViewD<'a, T>>,
    method: &'static str,
    statistic: &'static str,
    weights: &ArrayRef<T, IxDyn>,
    ctx: &PruneContext<'_, T>,
) -> Result<&'v ArrayViewD<'a, T>> {
    let s = stat.as_ref().ok_or_else(|| Error::MissingStatistic {
        method,
        statistic,
        what: ctx.what(),
    })?;
    let what = || format!("{statistic} of {}", ctx.what());
    check_same_shape(weights.shape(), s.shape(), what)?;
    check_finite(&row_major(s), what)?;
    Ok(s)
}

/// `f(w, s)` elementwise over the weights and one statistic.
fn combine<T: Scalar>(
    weights: &ArrayRef<T, IxDyn>,
    stat: &ArrayViewD<'_, T>,
    f: impl Fn(T, T) -> T + Sync + Send,
) -> ArrayD<T> {
    Zip::from(weights)
        .and(stat)
        .par_map_collect(|&w, &s| f(w, s))
}

/// `|w|`: the weight's magnitude (Han et al., "Learning both Weights and Connections for
/// Efficient Neural Networks", NeurIPS 2015).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Magnitude;

impl<T: Scalar> Saliency<T> for Magnitude {
    fn describe(&self) -> String {
        "magnitude".into()
    }

    fn scores(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        _ctx: &PruneContext<'_, T>,
    ) -> Result<ArrayD<T>> {
        Ok(weights.mapv(|w| w.abs()))
    }
    fn is_magnitude(&self) -> bool {
        true
    }
}

/// Uniform random scores: pruning by them removes a uniformly random subset of exactly
/// the requested size (PyTorch's `random_unstructured`). Reproducible: the stream is
/// derived from this seed, the context's seed and the parameter name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Random {
    /// The seed.
    pub seed: u64,
}

impl Random {
    /// Random scores from `seed`.
    pub fn new(seed: u64) -> Random {
        Random { seed }
    }
}

impl<T: Scalar> Saliency<T> for Random {
    fn describe(&self) -> String {
        format!("random (seed {})", self.seed)
    }

    fn scores(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<ArrayD<T>> {
        // FNV-1a of the name, so tensors of one model draw different streams.
        let name_hash = ctx
            .name
            .unwrap_or("")
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
        let mut rng =
            Xoshiro256PlusPlus::seed_from_u64(self.seed ^ ctx.seed.rotate_left(17) ^ name_hash);
        Ok(weights.mapv(|_| T::of((rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64))))
    }
}

/// First-order Taylor importance `|w · ∂L/∂w|`: the loss change estimated for removing
/// the weight (Molchanov et al., "Pruning Convolutional Neural Networks for Resource
/// Efficient Inference", ICLR 2017; "Importance Estimation for Neural Network Pruning",
/// CVPR 2019). Needs [`PruneContext::gradient`], ideally accumulated over several batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Taylor;

impl<T: Scalar> Saliency<T> for Taylor {
    fn describe(&self) -> String {
        "Taylor".into()
    }

    fn scores(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<ArrayD<T>> {
        let g = needed(&ctx.gradient, "Taylor", "gradient", weights, ctx)?;
        Ok(combine(weights, g, |w, g| (w * g).abs()))
    }
}

/// Optimal Brain Damage saliency `½ · h · w²` with `h` the Hessian diagonal
/// (LeCun, Denker & Solla, "Optimal Brain Damage", NeurIPS 1989). Needs
/// [`PruneContext::hessian_diag`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Obd;

impl<T: Scalar> Saliency<T> for Obd {
    fn describe(&self) -> String {
        "OBD".into()
    }

    fn scores(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<ArrayD<T>> {
        let h = needed(&ctx.hessian_diag, "OBD", "hessian_diag", weights, ctx)?;
        let half = T::of(0.5);
        Ok(combine(weights, h, |w, h| half * h * w * w))
    }
}

/// SNIP connection sensitivity `|∂L/∂c · w|` at `c = 1`, i.e. `|g · w|`, computed at
/// initialisation on one batch, pruning once before training (Lee, Ajanthan & Torr,
/// "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019).
///
/// The paper divides every score by the same global sum, which changes no ranking, so
/// slimnn leaves it out: the scores equal [`Taylor`]'s; the methods differ in when the
/// gradient is taken (SNIP: at initialisation). Needs [`PruneContext::gradient`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snip;

impl<T: Scalar> Saliency<T> for Snip {
    fn describe(&self) -> String {
        "SNIP".into()
    }

    fn scores(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<ArrayD<T>> {
        let g = needed(&ctx.gradient, "SNIP", "gradient", weights, ctx)?;
        Ok(combine(weights, g, |w, g| (g * w).abs()))
    }
}

/// Movement pruning: keep the weights moving away from zero during fine-tuning,
/// `S = −Σ_t ∂L/∂w · w` (Sanh, Wolf & Rush, "Movement Pruning: Adaptive Sparsity by
/// Fine-Tuning", NeurIPS 2020).
///
/// Uses [`PruneContext::scores`] when given (accumulate them with [`MovementScores`]);
/// otherwise the one-step estimate `−g · w` from [`PruneContext::gradient`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Movement;

impl<T: Scalar> Saliency<T> for Movement {
    fn describe(&self) -> String {
        "movement".into()
    }

    fn scores(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<ArrayD<T>> {
        if ctx.scores.is_some() {
            let s = needed(&ctx.scores, "Movement", "scores", weights, ctx)?;
            return Ok(s.to_owned());
        }
        let g = needed(&ctx.gradient, "Movement", "gradient", weights, ctx)?;
        Ok(combine(weights, g, |w, g| -(g * w)))
    }
}

/// Accumulates movement scores `S ← S − ∂L/∂w · w` over fine-tuning steps, for
/// [`Movement`].
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use slimnn::prune::MovementScores;
///
/// let w = ArrayD::from_elem(IxDyn(&[2, 2]), 0.5f32);
/// let g = ArrayD::from_elem(IxDyn(&[2, 2]), -1.0f32); // the weight is growing
/// let mut s = MovementScores::new(&[2, 2]);
/// s.update(&w, &g)?;
/// s.update(&w, &g)?;
/// assert_eq!(s.scores()[[0, 0]], 1.0);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MovementScores<T = f32> {
    scores: ArrayD<T>,
}

impl<T: Scalar> MovementScores<T> {
    /// Zero scores for a weight of `shape`.
    pub fn new(shape: &[usize]) -> Self {
        MovementScores {
            scores: ArrayD::zeros(IxDyn(shape)),
        }
    }

    /// Adds one step's `−g · w`.
    pub fn update(
        &mut self,
        weights: &ArrayRef<T, IxDyn>,
        gradient: &ArrayRef<T, IxDyn>,
    ) -> Result<()> {
        check_same_shape(self.scores.shape(), weights.shape(), || "weights".into())?;
        check_same_shape(self.scores.shape(), gradient.shape(), || "gradient".into())?;
        Zip::from(&mut self.scores)
            .and(weights)
            .and(gradient)
            .for_each(|s, &w, &g| *s -= g * w);
        Ok(())
    }

    /// The accumulated scores, for [`PruneContext::with_scores`].
    pub fn scores(&self) -> ArrayViewD<'_, T> {
        self.scores.view()
    }
}

/// Wanda: `|w_ij| · ‖X_j‖₂`, weight magnitude times the norm of the input feature it
/// multiplies, compared within each output row (Sun, Liu, Bair & Kolter, "A Simple and
/// Effective Pruning Approach for Large Language Models", ICLR 2024). Use it with
/// [`UnstructuredPruner::wanda`](super::UnstructuredPruner::wanda), which prunes per
/// output row as the paper does, or with [`NmPruner`](super::NmPruner).
///
/// Needs [`PruneContext::activation_norms`]: one norm per input of a Linear `[out, in]`;
/// for a Conv2d `[out, in, kh, kw]`, one per input channel or one per `in·kh·kw` column.
/// Without them, the norms come from [`PruneContext::layer_stats`] (the square root of
/// the diagonal of `Σ x xᵀ`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanda;

impl<T: Scalar> Saliency<T> for Wanda {
    fn describe(&self) -> String {
        "Wanda".into()
    }

    fn scores(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<ArrayD<T>> {
        let from_stats: Option<ndarray::Array1<T>> = match (&ctx.activation_norms, ctx.layer_stats)
        {
            (None, Some(s)) => Some(s.sq_sum().mapv(|v| T::of(v.sqrt()))),
            _ => None,
        };
        let norms = ctx
            .activation_norms
            .or_else(|| from_stats.as_ref().map(|a| a.view()))
            .ok_or_else(|| Error::MissingStatistic {
                method: "Wanda",
                statistic: "activation_norms (or layer_stats)",
                what: ctx.what(),
            })?;
        let shape = weights.shape();
        if shape.len() != 2 && shape.len() != 4 {
            return Err(Error::bad_shape(
                ctx.what(),
                shape,
                "Wanda needs a Linear [out, in] or Conv2d [out, in, kh, kw] weight",
            ));
        }
        let cols: usize = shape[1..].iter().product();
        let per_channel = shape[2..].iter().product::<usize>();
        let stride = if norms.len() == cols {
            1
        } else if norms.len() == shape[1] {
            per_channel
        } else {
            return Err(Error::ShapeMismatch {
                what: format!("activation_norms of {}", ctx.what()),
                expected: vec![shape[1]],
                got: norms.shape().to_vec(),
            });
        };
        let norms: Vec<T> = norms.iter().copied().collect();
        check_finite(&norms, || format!("activation_norms of {}", ctx.what()))?;
        if let Some(bad) = norms.iter().find(|n| **n < T::zero()) {
            return Err(Error::invalid("activation_norms", bad, "norms ≥ 0"));
        }
        let flat = row_major(weights);
        let scores: Vec<T> = flat
            .iter()
            .enumerate()
            .map(|(i, &w)| w.abs() * norms[(i % cols) / stride])
            .collect();
        Ok(ArrayD::from_shape_vec(IxDyn(shape), scores).expect("same element count"))
    }
}
