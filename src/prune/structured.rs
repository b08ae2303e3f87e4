//! [`StructuredPruner`]: remove whole filters, channels or neurons.

use ndarray::{Array2, ArrayRef, ArrayView2, Axis, CowArray, Ix2, IxDyn};

use super::threshold;
use super::{Amount, PruneContext, Pruner};
use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::model::LayerKind;
use crate::tensor::{Scalar, check_finite, check_nonempty, check_same_shape, row_major};

/// How a channel's importance is measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChannelCriterion {
    /// `Σ|w|` over the channel (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017).
    #[default]
    L1,
    /// `‖w‖₂` over the channel.
    L2,
    /// Closeness to the geometric median of all channels: the channels with the smallest
    /// total Euclidean distance to the others are the most replaceable and go first
    /// (He et al., "Filter Pruning via Geometric Median", CVPR 2019). The score is that
    /// total distance.
    GeometricMedian,
}

/// Which channels are removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChannelAxis {
    /// Output channels: Conv2d filters, Linear neurons (rows), Embedding features.
    #[default]
    Output,
    /// Input channels of a Linear or Conv2d weight.
    Input,
}

impl ChannelAxis {
    /// The tensor axis this means for a parameter of `kind`.
    pub fn axis_for(self, kind: LayerKind) -> Option<usize> {
        match self {
            ChannelAxis::Output => kind.output_axis(),
            ChannelAxis::Input => kind.input_axis(),
        }
    }
}

/// The importance of every channel along `axis` of `weights`, by `criterion`.
///
/// ```
/// use ndarray::array;
/// use slimnn::prune::{ChannelCriterion, channel_scores};
///
/// let w = array![[3.0f32, -4.0], [1.0, 0.0]].into_dyn();
/// assert_eq!(channel_scores(&w, 0, ChannelCriterion::L1)?, vec![7.0, 1.0]);
/// assert_eq!(channel_scores(&w, 0, ChannelCriterion::L2)?, vec![5.0, 1.0]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn channel_scores<T: Scalar>(
    weights: &ArrayRef<T, IxDyn>,
    axis: usize,
    criterion: ChannelCriterion,
) -> Result<Vec<T>> {
    let shape = weights.shape();
    if axis >= shape.len() {
        return Err(Error::bad_shape(
            "weights",
            shape,
            format!("no axis {axis}"),
        ));
    }
    check_nonempty(shape, || "weights".into())?;
    check_finite(&row_major(weights), || "weights".into())?;
    Ok(scores_of_checked(weights, axis, criterion))
}

/// [`channel_scores`] of weights already checked to be non-empty and finite.
fn scores_of_checked<T: Scalar>(
    weights: &ArrayRef<T, IxDyn>,
    axis: usize,
    criterion: ChannelCriterion,
) -> Vec<T> {
    let rows = channel_rows(weights, axis);
    match criterion {
        // Sums in f64: large weights must not overflow a score to infinity.
        ChannelCriterion::L1 => rows
            .rows()
            .into_iter()
            .map(|r| T::of(r.iter().map(|x| x.as_f64().abs()).sum()))
            .collect(),
        ChannelCriterion::L2 => rows
            .rows()
            .into_iter()
            .map(|r| T::of(r.iter().map(|x| x.as_f64().powi(2)).sum::<f64>().sqrt()))
            .collect(),
        ChannelCriterion::GeometricMedian => {
            // Pairwise distances from the Gram matrix, in f64 so that near-identical
            // channels (the ones FPGM is after) do not lose their distance to rounding.
            let f = rows.mapv(|x| x.as_f64());
            let gram = f.dot(&f.t());
            let sq: Vec<f64> = gram.diag().to_vec();
            gram.rows()
                .into_iter()
                .enumerate()
                .map(|(i, g)| {
                    let total: f64 = g
                        .iter()
                        .enumerate()
                        .map(|(j, &gij)| (sq[i] + sq[j] - 2.0 * gij).max(0.0).sqrt())
                        .sum();
                    T::of(total)
                })
                .collect()
        }
    }
}

/// The weights as a matrix with one row per channel along `axis` (borrowed when the
/// channels are the outermost axis of a contiguous tensor).
fn channel_rows<T: Scalar>(weights: &ArrayRef<T, IxDyn>, axis: usize) -> CowArray<'_, T, Ix2> {
    let c = weights.shape()[axis];
    let rest = weights.len() / c;
    if axis == 0
        && let Some(flat) = weights.as_slice()
    {
        return ArrayView2::from_shape((c, rest), flat)
            .expect("element count is unchanged")
            .into();
    }
    let mut order: Vec<usize> = (0..weights.ndim()).collect();
    order.remove(axis);
    order.insert(0, axis);
    let moved = weights.view().permuted_axes(order);
    let flat: Vec<T> = moved.iter().copied().collect();
    Array2::from_shape_vec((c, rest), flat)
        .expect("element count is unchanged")
        .into()
}

/// Removes whole channels (filters, neurons, input channels) with the lowest importance
/// (Li et al. 2017 by L1/L2 norm; He et al. 2019 by geometric median). The mask covers
/// every weight of a removed channel; the model can then shrink for real with
/// [`Model::remove_pruned_channels`](crate::Model::remove_pruned_channels).
///
/// ```
/// use ndarray::{Array, IxDyn};
/// use slimnn::prune::{ChannelCriterion, PruneContext, Pruner, StructuredPruner};
///
/// // 4 filters of a conv [4, 2, 3, 3]; filter i has all entries i + 1.
/// let w = Array::from_shape_fn(IxDyn(&[4, 2, 3, 3]), |i| (i[0] + 1) as f32);
/// let pruner = StructuredPruner::new(ChannelCriterion::L2, 0.5)?;
/// let mask = pruner.mask(&w, &PruneContext::new())?;
/// assert_eq!(mask.count_kept(), 2 * 18); // filters 2 and 3 stay
/// assert!(!mask.get(0) && mask.get(2 * 18));
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StructuredPruner {
    criterion: ChannelCriterion,
    amount: Amount,
    axis: ChannelAxis,
}

impl StructuredPruner {
    /// Removes `amount` of the output channels by `criterion` (a fraction, or a count of
    /// channels).
    pub fn new(criterion: ChannelCriterion, amount: impl Into<Amount>) -> Result<Self> {
        Ok(StructuredPruner {
            criterion,
            amount: amount.into().check()?,
            axis: ChannelAxis::Output,
        })
    }

    /// Sets which channels are removed.
    pub fn with_axis(mut self, axis: ChannelAxis) -> Self {
        self.axis = axis;
        self
    }

    /// The criterion.
    pub fn criterion(&self) -> ChannelCriterion {
        self.criterion
    }

    /// How many channels go.
    pub fn amount(&self) -> Amount {
        self.amount
    }

    /// Which channels go.
    pub fn axis(&self) -> ChannelAxis {
        self.axis
    }

    /// The tensor axis of the channels and which channels stay.
    fn kept_channels<T: Scalar>(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &PruneContext<'_, T>,
    ) -> Result<(usize, Mask)> {
        let shape = weights.shape();
        let axis = self.tensor_axis(shape, ctx)?;
        check_nonempty(shape, || ctx.what())?;
        check_finite(&row_major(weights), || ctx.what())?;
        let mut scores = scores_of_checked(weights, axis, self.criterion);
        let c = shape[axis];
        // Channels the existing mask already removed go first and count toward the target.
        let dead = match ctx.mask {
            Some(m) => {
                check_same_shape(shape, m.shape(), || format!("mask of {}", ctx.what()))?;
                let as_values = m.to_array::<T>();
                let pruned = channel_rows(&as_values, axis);
                let dead: Vec<bool> = pruned
                    .rows()
                    .into_iter()
                    .map(|r| r.iter().all(|x| x.is_zero()))
                    .collect();
                for (s, _) in scores.iter_mut().zip(&dead).filter(|(_, d)| **d) {
                    *s = T::min_value();
                }
                dead.iter().filter(|&&d| d).count()
            }
            None => 0,
        };
        let k = self.amount.count_of(c)?.max(dead);
        let cut = threshold::select_by(&[&scores], k, false).map_err(|at| Error::NonFinite {
            what: format!("channel scores of {}", ctx.what()),
            index: at.1,
            value: scores[at.1].as_f64(),
        })?;
        let keep = threshold::mask_by(&scores, &[c], 0, &cut, false);
        Ok((axis, keep))
    }

    /// The channels (along [`StructuredPruner::axis`]: output channels by default) that
    /// [`Pruner::mask`] removes from `weights`, in increasing order: the indices an engine
    /// drops from this layer's rows, and from the next layer's inputs. Channels the
    /// context's mask already removed are among them.
    ///
    /// ```
    /// use ndarray::{Array, IxDyn};
    /// use slimnn::prune::{ChannelCriterion, PruneContext, StructuredPruner};
    ///
    /// // A Linear [4, 3]: row i has all entries (i + 1) · (−1)^i; L1 removes rows 0 and 1.
    /// let w = Array::from_shape_fn(IxDyn(&[4, 3]), |i| (i[0] + 1) as f32 * if i[0] % 2 == 0 { 1.0 } else { -1.0 });
    /// let pruner = StructuredPruner::new(ChannelCriterion::L1, 0.5)?;
    /// assert_eq!(pruner.removed_channels(&w, &PruneContext::new())?, vec![0, 1]);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn removed_channels<T: Scalar>(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &PruneContext<'_, T>,
    ) -> Result<Vec<usize>> {
        let (_, keep) = self.kept_channels(weights, ctx)?;
        Ok(keep.iter_pruned().collect())
    }

    /// The tensor axis the channels are on, for a weight of `shape` in `ctx`.
    fn tensor_axis<T>(&self, shape: &[usize], ctx: &PruneContext<'_, T>) -> Result<usize> {
        let kind = ctx.kind_for(shape);
        match self.axis.axis_for(kind) {
            Some(a) if shape.len() >= 2 && a < shape.len() => Ok(a),
            _ => Err(Error::WrongKind {
                name: ctx.name.unwrap_or("weights").to_string(),
                kind: format!("{kind} {shape:?}"),
                operation: "structured pruning",
                expected: "a Linear, Conv2d or (output axis) Embedding weight",
            }),
        }
    }
}

impl<T: Scalar> Pruner<T> for StructuredPruner {
    /// E.g. `"L1 50% of output channels"`.
    fn describe(&self) -> String {
        let criterion = match self.criterion {
            ChannelCriterion::L1 => "L1",
            ChannelCriterion::L2 => "L2",
            ChannelCriterion::GeometricMedian => "geometric median",
        };
        let axis = match self.axis {
            ChannelAxis::Output => "output",
            ChannelAxis::Input => "input",
        };
        format!("{criterion} {} of {axis} channels", self.amount)
    }

    fn mask(&self, weights: &ArrayRef<T, IxDyn>, ctx: &PruneContext<'_, T>) -> Result<Mask> {
        let shape = weights.shape();
        let (axis, keep) = self.kept_channels(weights, ctx)?;
        let c = shape[axis];
        // Each channel owns runs of `stride` consecutive elements, one per outer index.
        let stride: usize = shape[axis + 1..].iter().product();
        let mut mask = Mask::ones(shape);
        for run in 0..weights.len() / stride {
            if !keep.get(run % c) {
                mask.set_range(run * stride, (run + 1) * stride, false);
            }
        }
        match ctx.mask {
            Some(m) => mask.and(m),
            None => Ok(mask),
        }
    }
}

/// Whether every element of channel `c` along `axis` is zero in `values`.
pub(crate) fn zero_channels(values: &ArrayRef<f32, IxDyn>, axis: usize) -> Vec<bool> {
    values
        .axis_iter(Axis(axis))
        .map(|ch| ch.iter().all(|&x| x == 0.0))
        .collect()
}
