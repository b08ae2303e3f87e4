//! The second-order solvers as the crate's methods: [`Gptq`] is a [`Quantizer`],
//! [`SparseGpt`] and [`Obs`] are [`Pruner`]s. Each reads its layer's statistics from the
//! method's context ([`QuantContext::layer_stats`], [`PruneContext::layer_stats`]), so
//! a model ([`Model::quantize_calibrated`](crate::Model::quantize_calibrated),
//! [`Model::prune`](crate::Model::prune) with
//! [`Statistics::with_calibration`](crate::prune::Statistics::with_calibration)), a
//! pipeline step and an engine's buffer ([`Pruner::prune_slice`], [`Quantizer::quantize`]
//! on a view of it) all reach them the same way.
//!
//! A Linear weight `[out, in]` is solved as it is; a Conv2d weight `[out, in, kh, kw]` as
//! `[out, in·kh·kw]`, the order of its im2col statistics (channel, kernel row, kernel
//! column: [`Network::calibration_stats`](crate::nn::Network::calibration_stats)), and
//! the result takes the weight's shape again. SparseGPT's N:M groups on a Conv2d run
//! across input channels at each kernel position, as [`NmPruner`](crate::prune::NmPruner)'s
//! do (the columns are solved in the order kernel row, kernel column, channel).

use ndarray::{Array2, ArrayRef, ArrayView2, IxDyn};

use super::LayerStats;
use super::gptq::Gptq;
use super::obs::Obs;
use super::sparsegpt::{Pruned, SparseGpt, SparsityPattern};
use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::prune::{PruneContext, Pruner};
use crate::quant::{QuantContext, QuantizedTensor, Quantizer};
use crate::tensor::{check_same_shape, subject};

/// Runs `solver` on `weights` seen as `[out, cols]` with the statistics `stats` (which
/// must be there and of width `cols`, or a typed error naming the weight and `method`)
/// and the flags of the weights `mask` prunes (none without a mask); with `order`, on
/// the columns in that order (`order[p]`: the column solved at position `p`). The
/// solver gets the weight's name for errors, the weight `[out, cols]`, `Σ x xᵀ`
/// `[cols, cols]`, the number of rows and the flags (row-major).
fn solve<R>(
    method: &'static str,
    weights: &ArrayRef<f32, IxDyn>,
    name: Option<&str>,
    stats: Option<&LayerStats>,
    mask: Option<&Mask>,
    order: Option<&[usize]>,
    solver: impl FnOnce(&str, ArrayView2<'_, f32>, ArrayView2<'_, f64>, u64, &[bool]) -> Result<R>,
) -> Result<R> {
    let what = subject(name, "weights");
    let stats = stats.ok_or_else(|| Error::MissingStatistic {
        method,
        statistic: "layer_stats",
        what: what.clone(),
    })?;
    let shape = weights.shape();
    let out = shape.first().copied().unwrap_or(0);
    if shape.len() < 2 || out == 0 {
        return Err(Error::bad_shape(
            what,
            shape,
            format!("{method} needs a Linear [out, in] or Conv2d [out, in, kh, kw] weight"),
        ));
    }
    let cols = weights.len() / out;
    stats.check_for(&what, cols)?;
    let mut pruned = vec![false; weights.len()];
    if let Some(m) = mask {
        check_same_shape(shape, m.shape(), || format!("mask of {what}"))?;
        for i in m.iter_pruned() {
            pruned[i] = true;
        }
    }
    let w = weights.as_standard_layout();
    let w2 = ArrayView2::from_shape((out, cols), w.as_slice().expect("standard layout"))?;
    let (h, rows) = (stats.xtx(), stats.rows());
    match order {
        None => solver(&what, w2, h, rows, &pruned),
        Some(o) => {
            let wp = Array2::from_shape_fn((out, cols), |(r, p)| w2[[r, o[p]]]);
            let hp = Array2::from_shape_fn((cols, cols), |(a, b)| h[[o[a], o[b]]]);
            let pp: Vec<bool> = (0..out * cols)
                .map(|i| pruned[i / cols * cols + o[i % cols]])
                .collect();
            solver(&what, wp.view(), hp.view(), rows, &pp)
        }
    }
}

/// GPTQ on a Linear or Conv2d weight, from [`QuantContext::layer_stats`]
/// ([`Error::MissingStatistic`] without them). Weights the context's mask prunes are
/// quantized to exactly 0 (their error spread over the others), so GPTQ after pruning
/// keeps the sparsity; pass them zeroed, as [`Model::quantize`](crate::Model::quantize)
/// does.
///
/// ```
/// use slimnn::calib::{LayerStats, gptq::Gptq};
/// use slimnn::ndarray::{Array2, ArrayViewD, IxDyn};
/// use slimnn::quant::{Granularity, QuantContext, Quantizer, Scheme, UniformQuantizer};
///
/// // An engine's weight buffer [4, 16] and the inputs it saw (64 rows of 16).
/// let w: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
/// let rows: Vec<f32> = (0..64 * 16).map(|k| ((k * 7 % 11) as f32 - 5.0) * (1 + k % 3) as f32).collect();
/// let mut stats = LayerStats::new(16);
/// stats.observe(&rows, 64, 16)?;
/// let view = ArrayViewD::from_shape(IxDyn(&[4, 16]), &w)?;
/// let ctx = QuantContext::new().with_name("fc.weight").with_layer_stats(&stats);
/// // `Gptq::quantize(w, h, rows)` is the solver's own; the trait's takes a context.
/// let q = Quantizer::quantize(&Gptq::new(3)?, &view, &ctx)?;
/// assert_eq!((q.shape(), q.codes().bits()), (&[4, 16][..], 3));
/// // The same grid as round-to-nearest; only the codes differ.
/// let rtn = UniformQuantizer::new(3, Scheme::Affine, Granularity::PerChannel { axis: 0 })?
///     .quantize(&view, &ctx)?;
/// assert_eq!(q.decoding(), rtn.decoding());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl Quantizer<f32> for Gptq {
    fn quantize(
        &self,
        weights: &ArrayRef<f32, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        let q = solve(
            "GPTQ",
            weights,
            ctx.name,
            ctx.layer_stats,
            ctx.mask,
            None,
            |what, w, h, rows, pruned| self.quantize_named(what, w, h, rows, pruned),
        )?;
        if q.shape() == weights.shape() {
            return Ok(q);
        }
        QuantizedTensor::new(weights.shape(), q.codes().clone(), q.decoding().clone())
    }

    fn describe(&self) -> String {
        Gptq::describe(self)
    }
}

/// A solver's result in the weight's `shape`, its columns back in their order if they
/// were solved in `order`.
fn restored(p: Pruned, shape: &[usize], order: Option<&[usize]>) -> Result<Pruned> {
    let p = match order {
        None => p,
        Some(o) => {
            let (out, cols) = p.weights.dim();
            let mut weights = Array2::zeros((out, cols));
            let mut kept = vec![false; out * cols];
            for ((r, pos), &v) in p.weights.indexed_iter() {
                weights[[r, o[pos]]] = v;
                kept[r * cols + o[pos]] = p.mask.get(r * cols + pos);
            }
            Pruned {
                mask: Mask::from_fn(&[out, cols], |i| kept[i]),
                weights,
            }
        }
    };
    if p.mask.shape() == shape {
        return Ok(p);
    }
    Ok(Pruned {
        mask: Mask::from_words(shape, p.mask.words().to_vec())?,
        weights: p.weights,
    })
}

impl SparseGpt {
    /// The order SparseGPT solves the columns of a weight of `shape` in: N:M on a
    /// Conv2d goes kernel row, kernel column, channel (groups across channels, `m` must
    /// divide them); otherwise as stored.
    fn column_order(&self, what: &str, shape: &[usize]) -> Result<Option<Vec<usize>>> {
        let (SparsityPattern::NM { m, .. }, &[out, ch, kh, kw]) = (self.pattern(), shape) else {
            return Ok(None);
        };
        if ch % m != 0 {
            return Err(Error::bad_shape(
                what,
                &[out, ch, kh, kw],
                format!("N:M group size {m} does not divide the input channels {ch}"),
            ));
        }
        Ok(Some(
            (0..ch * kh * kw)
                .map(|p| {
                    let (pos, c) = (p / ch, p % ch);
                    c * kh * kw + pos
                })
                .collect(),
        ))
    }
}

impl Obs {
    /// OBS solves the columns as stored.
    fn column_order(&self, _what: &str, _shape: &[usize]) -> Result<Option<Vec<usize>>> {
        Ok(None)
    }
}

/// Writes the solver's updated weights into `weights` (same element order); its mask.
fn write_back(p: Pruned, weights: &mut ArrayRef<f32, IxDyn>) -> Mask {
    for (w, &v) in weights.iter_mut().zip(p.weights.iter()) {
        *w = v;
    }
    p.mask
}

/// The [`Pruner`] impls of the solvers that prune and update (`$name` in errors).
macro_rules! updating_pruner {
    ($t:ty, $name:literal) => {
        impl $t {
            /// The solver's mask and updated weights for `weights`, from the context.
            fn solve_in(
                &self,
                weights: &ArrayRef<f32, IxDyn>,
                ctx: &PruneContext<'_, f32>,
            ) -> Result<Pruned> {
                let order = self.column_order(&ctx.what(), weights.shape())?;
                let p = solve(
                    $name,
                    weights,
                    ctx.name,
                    ctx.layer_stats,
                    ctx.mask,
                    order.as_deref(),
                    |what, w, h, rows, fixed| self.prune_named(what, w, h, rows, fixed),
                )?;
                restored(p, weights.shape(), order.as_deref())
            }
        }

        impl Pruner<f32> for $t {
            /// The mask the solver chooses (the weights it would update are discarded:
            /// [`Pruner::prune`] keeps them).
            fn mask(
                &self,
                weights: &ArrayRef<f32, IxDyn>,
                ctx: &PruneContext<'_, f32>,
            ) -> Result<Mask> {
                Ok(self.solve_in(weights, ctx)?.mask)
            }

            fn describe(&self) -> String {
                <$t>::describe(self)
            }

            /// Prunes and writes the solver's updated weights (pruned ones 0) into
            /// `weights`; nothing is written on error.
            fn prune(
                &self,
                weights: &mut ArrayRef<f32, IxDyn>,
                ctx: &PruneContext<'_, f32>,
            ) -> Result<Mask> {
                let p = self.solve_in(weights, ctx)?;
                Ok(write_back(p, weights))
            }
        }
    };
}

updating_pruner!(SparseGpt, "SparseGPT");
updating_pruner!(Obs, "OBS");
