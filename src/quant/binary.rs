//! 1-bit and ternary weights: [`BinaryQuantizer`], [`TernaryQuantizer`].

use ndarray::{ArrayRef, IxDyn};

use super::scheme::Runs;
use super::uniform::{as_f32, encode, group_sums, kept};
use super::{Decoding, Granularity, Levels, QuantContext, QuantizedTensor, Quantizer};
use crate::error::Result;
use crate::tensor::{Scalar, check_finite, check_nonempty};

/// Binary weights `α·sign(w)` with one `α = mean|w|` per group: the optimal scale for
/// a sign pattern in the least-squares sense (Rastegari et al., "XNOR-Net", ECCV 2016;
/// BinaryConnect, Courbariaux et al. 2015, uses the signs alone). 1 bit per weight plus
/// one f32 per group; `sign(0) = +1`.
///
/// ```
/// use ndarray::array;
/// use slimnn::quant::{BinaryQuantizer, Granularity, QuantContext, Quantizer};
///
/// let w = array![[0.5f32, -1.5], [2.0, 1.0]].into_dyn();
/// let q = BinaryQuantizer::new(Granularity::PerChannel { axis: 0 }).quantize(&w, &QuantContext::new())?;
/// assert_eq!(q.dequantize::<f32>(), array![[1.0f32, -1.0], [1.5, 1.5]].into_dyn());
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinaryQuantizer {
    granularity: Granularity,
}

impl BinaryQuantizer {
    /// One scale per `granularity` group (XNOR-Net: per output channel).
    pub fn new(granularity: Granularity) -> Self {
        BinaryQuantizer { granularity }
    }
}

impl<T: Scalar> Quantizer<T> for BinaryQuantizer {
    /// E.g. `"binary per channel (axis 0)"`.
    fn describe(&self) -> String {
        format!("binary {}", self.granularity)
    }

    fn quantize(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        let (values, runs) = prepare(weights, self.granularity, ctx)?;
        // Statistics of the kept weights only: pruned zeros would shrink α.
        let alpha: Vec<f32> = group_sums(&values, runs, |x, start, _| {
            let k = kept(x, start, ctx.mask);
            (k.clone().map(|v| v.abs() as f64).sum(), k.count() as f64)
        })
        .into_iter()
        .map(|(s, n)| if n > 0.0 { (s / n) as f32 } else { 0.0 })
        .collect();
        let codes = encode(&values, runs, 1, |_, x, c| {
            c.iter_mut()
                .zip(x)
                .for_each(|(c, &v)| *c = (v >= 0.0) as u8);
        });
        ctx.attach_mask(QuantizedTensor::new(
            weights.shape(),
            codes,
            Decoding::Scalar {
                levels: Levels::Table(vec![-1.0, 1.0]),
                granularity: self.granularity,
                scales: alpha,
                zero_points: Vec::new(),
                scale_bits: 32,
            },
        )?)
    }
}

/// Ternary weights `α·t` with `t ∈ {−1, 0, +1}`: Ternary Weight Networks (Li & Liu,
/// "Ternary Weight Networks", 2016). Per group, weights with `|w| ≤ Δ = 0.7·mean|w|` become
/// 0 and the rest `±α`, with `α` the mean magnitude of the rest (the paper's
/// approximate solution). Stored in 2 bits per weight plus one f32 per group.
///
/// ```
/// use ndarray::array;
/// use slimnn::quant::{Granularity, QuantContext, Quantizer, TernaryQuantizer};
///
/// let w = array![0.1f32, -2.0, 0.05, 3.0].into_dyn();
/// let q = TernaryQuantizer::new(Granularity::PerTensor).quantize(&w, &QuantContext::new())?;
/// // Δ = 0.7 · 1.2875 ≈ 0.90; α = (2 + 3) / 2.
/// assert_eq!(q.dequantize::<f32>(), array![0.0f32, -2.5, 0.0, 2.5].into_dyn());
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TernaryQuantizer {
    granularity: Granularity,
}

impl TernaryQuantizer {
    /// One threshold and scale per `granularity` group.
    pub fn new(granularity: Granularity) -> Self {
        TernaryQuantizer { granularity }
    }
}

impl<T: Scalar> Quantizer<T> for TernaryQuantizer {
    /// E.g. `"ternary per tensor"`.
    fn describe(&self) -> String {
        format!("ternary {}", self.granularity)
    }

    fn quantize(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        let (values, runs) = prepare(weights, self.granularity, ctx)?;
        // Statistics of the kept weights only: pruned zeros would lower Δ and α.
        let delta: Vec<f32> = group_sums(&values, runs, |x, start, _| {
            let k = kept(x, start, ctx.mask);
            (k.clone().map(|v| v.abs() as f64).sum(), k.count() as f64)
        })
        .into_iter()
        .map(|(s, n)| if n > 0.0 { (0.7 * s / n) as f32 } else { 0.0 })
        .collect();
        let alpha: Vec<f32> = group_sums(&values, runs, |x, start, g| {
            let above = kept(x, start, ctx.mask).filter(|v| v.abs() > delta[g]);
            (
                above.clone().map(|v| v.abs() as f64).sum(),
                above.count() as f64,
            )
        })
        .into_iter()
        .map(|(s, n)| if n > 0.0 { (s / n) as f32 } else { 0.0 })
        .collect();
        let codes = encode(&values, runs, 2, |run, x, c| {
            let d = delta[runs.group(run)];
            c.iter_mut().zip(x).for_each(|(c, &v)| {
                *c = if v > d {
                    2
                } else if v < -d {
                    0
                } else {
                    1
                }
            });
        });
        ctx.attach_mask(QuantizedTensor::new(
            weights.shape(),
            codes,
            Decoding::Scalar {
                levels: Levels::Table(vec![-1.0, 0.0, 1.0]),
                granularity: self.granularity,
                scales: alpha,
                zero_points: Vec::new(),
                scale_bits: 32,
            },
        )?)
    }
}

/// The values as f32, checked non-empty and finite, and how they split into groups.
pub(crate) fn prepare<'a, T: Scalar>(
    weights: &'a ArrayRef<T, IxDyn>,
    granularity: Granularity,
    ctx: &QuantContext<'_>,
) -> Result<(std::borrow::Cow<'a, [f32]>, Runs)> {
    check_nonempty(weights.shape(), || ctx.what())?;
    let values = as_f32(weights);
    check_finite(&values, || ctx.what())?;
    let runs =
        Runs::new(weights.shape(), granularity).map_err(|e| super::uniform::rename(e, ctx))?;
    Ok((values, runs))
}
