//! [`PowerOfTwoQuantizer`]: weights as signed powers of two (or zero).

use ndarray::{ArrayRef, IxDyn};

use super::binary::prepare;
use super::uniform::{encode, group_fold};
use super::{Decoding, Granularity, Levels, QuantContext, QuantizedTensor, Quantizer};
use crate::error::{Error, Result};
use crate::tensor::Scalar;

/// Logarithmic quantization: every weight becomes `0` or `±2^e`, so multiplications
/// turn into shifts (Miyashita, Lee & Murmann, "Convolutional Neural Networks using
/// Logarithmic Data Representation", 2016; Zhou et al., "Incremental Network
/// Quantization", ICLR 2017).
///
/// With `bits` bits there are `m = 2^(bits−1) − 1` exponents `n₁, n₁−1, …, n₁−m+1` per
/// group, `n₁ = ⌊log₂(4·max|w|/3)⌋` as in INQ, plus zero. Each weight goes to the
/// nearest level (INQ's rule: `β` for `3β/4 ≤ |w| < 3β/2`; 0 below half the smallest).
/// Stored as codes of `bits` bits, a power-of-two scale `2^n₁` per group and the
/// shared table of `2^bits − 1` levels.
///
/// ```
/// use ndarray::array;
/// use slimnn::quant::{Granularity, PowerOfTwoQuantizer, QuantContext, Quantizer};
///
/// let w = array![1.0f32, -0.3, 0.2, 0.1].into_dyn();
/// let q = PowerOfTwoQuantizer::new(3, Granularity::PerTensor)?.quantize(&w, &QuantContext::new())?;
/// // 3 bits: levels ±1, ±0.5, ±0.25 and 0 (0.1 is below half of 0.25).
/// assert_eq!(q.dequantize::<f32>(), array![1.0f32, -0.25, 0.25, 0.0].into_dyn());
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerOfTwoQuantizer {
    bits: u8,
    granularity: Granularity,
}

impl PowerOfTwoQuantizer {
    /// `bits` from 2 to 8 (one sign bit; 2 bits give `{0, ±2^n₁}`).
    pub fn new(bits: u8, granularity: Granularity) -> Result<Self> {
        if !(2..=8).contains(&bits) {
            return Err(Error::invalid("bits", bits, "2 to 8 bits"));
        }
        Ok(PowerOfTwoQuantizer { bits, granularity })
    }

    fn exponents(&self) -> usize {
        (1usize << (self.bits - 1)) - 1
    }
}

impl<T: Scalar> Quantizer<T> for PowerOfTwoQuantizer {
    /// E.g. `"power-of-two 4-bit per tensor"`.
    fn describe(&self) -> String {
        format!("power-of-two {}-bit {}", self.bits, self.granularity)
    }

    fn quantize(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        let (values, runs) = prepare(weights, self.granularity, ctx)?;
        let m = self.exponents();
        let amax = group_fold(
            &values,
            runs,
            |x, _, _| (x.iter().fold(0.0f64, |a, v| a.max(v.abs() as f64)), 0.0),
            |a, b| (a.0.max(b.0), 0.0),
        );
        // Scales 2^n₁ per group; an all-zero group gets scale 1 (every code is zero).
        let scales: Vec<f32> = amax
            .iter()
            .map(|&(a, _)| {
                if a > 0.0 {
                    2f64.powi((4.0 * a / 3.0).log2().floor() as i32) as f32
                } else {
                    1.0
                }
            })
            .collect();
        // Level table: 0, then +2^0 … +2^−(m−1), then −2^0 … −2^−(m−1).
        let mut table = vec![0.0f32];
        table.extend((0..m).map(|j| 2f32.powi(-(j as i32))));
        table.extend((0..m).map(|j| -(2f32.powi(-(j as i32)))));
        let smallest = 2f32.powi(-(m as i32 - 1));
        let codes = encode(&values, runs, self.bits, |run, x, c| {
            let s = scales[runs.group(run)];
            for (c, &v) in c.iter_mut().zip(x) {
                let y = v.abs() / s;
                *c = if y < smallest / 2.0 {
                    0
                } else {
                    // The nearest power 2^k: y in [3/4·2^k, 3/2·2^k).
                    let k = ((4.0 * y / 3.0).log2().floor() as i32).clamp(-(m as i32 - 1), 0);
                    let j = (-k) as u8;
                    if v >= 0.0 { 1 + j } else { 1 + m as u8 + j }
                };
            }
        });
        QuantizedTensor::new(
            weights.shape(),
            codes,
            Decoding::Scalar {
                levels: Levels::Table(table),
                granularity: self.granularity,
                scales,
                zero_points: Vec::new(),
                scale_bits: 32,
            },
        )
    }
}
