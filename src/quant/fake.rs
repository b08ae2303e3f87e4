//! Quantization-aware training helpers: the straight-through estimator.

use ndarray::{ArrayD, ArrayRef, IxDyn};

use super::scheme::Runs;
use super::{Decoding, Levels, QuantizedTensor};
use crate::error::Result;
use crate::tensor::{check_same_shape, row_major};

/// The straight-through estimator of the gradient through fake quantization (Bengio,
/// Léonard & Courville 2013; as PyTorch's `FakeQuantize`): the gradient with respect
/// to the dequantized weights passes unchanged to the latent float weights where they
/// lie inside the range their group can represent, and is zero where they were clipped.
///
/// Quantization-aware fine-tuning: run the forward pass with `q.dequantize()`, take the
/// gradient `grad` there, map it through this function, update the float `weights`, and
/// quantize again.
///
/// ```
/// use ndarray::{Array1, ArrayD};
/// use slimnn::quant::{Calibration, Granularity, QuantContext, Quantizer, Scheme, UniformQuantizer, straight_through};
///
/// // Nineteen small weights and one outlier.
/// let mut w: Vec<f32> = (1..20).map(|i| i as f32 * 0.01).collect();
/// w.push(9.0);
/// let w = Array1::from(w).into_dyn();
/// // Clip at the 90th percentile of |w|: the outlier is clipped, so it gets no gradient.
/// let q = UniformQuantizer::new(4, Scheme::Symmetric, Granularity::PerTensor)?
///     .with_calibration(Calibration::Percentile(0.9))?
///     .quantize(&w, &QuantContext::new())?;
/// let g = straight_through(&ArrayD::ones(w.raw_dim()), &w, &q)?;
/// assert_eq!(g[[19]], 0.0);
/// assert!(g.iter().take(19).all(|&v| v == 1.0));
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn straight_through(
    grad: &ArrayRef<f32, IxDyn>,
    weights: &ArrayRef<f32, IxDyn>,
    q: &QuantizedTensor,
) -> Result<ArrayD<f32>> {
    check_same_shape(q.shape(), grad.shape(), || "gradient".into())?;
    check_same_shape(q.shape(), weights.shape(), || "weights".into())?;
    let mut out = grad.as_standard_layout().into_owned();
    let Decoding::Scalar {
        levels,
        granularity,
        scales,
        zero_points,
        ..
    } = q.decoding()
    else {
        return Ok(out); // vector codebooks have no clipping range
    };
    let (lo_level, hi_level) = levels.bounds();
    // Half a step of slack at each end, in level units: values that round to the end
    // levels are inside (half the gap between the two outer levels of a table).
    let (slack_lo, slack_hi) = match levels {
        Levels::Integers { .. } => (0.5, 0.5),
        Levels::Table(t) => {
            let mut sorted = t.clone();
            sorted.sort_by(f32::total_cmp);
            match sorted.as_slice() {
                [a, b, .., y, z] => ((b - a) / 2.0, (z - y) / 2.0),
                _ => (0.0, 0.0),
            }
        }
    };
    let runs = Runs::new(q.shape(), *granularity)?;
    let w = row_major(weights);
    let g = out.as_slice_mut().expect("owned arrays are contiguous");
    for (r, (gs, ws)) in g
        .chunks_mut(runs.run_len)
        .zip(w.chunks(runs.run_len))
        .enumerate()
    {
        let group = runs.group(r);
        let (s, z) = (
            scales[group],
            zero_points.get(group).copied().unwrap_or(0.0),
        );
        let (a, b) = (s * (lo_level - slack_lo - z), s * (hi_level + slack_hi - z));
        let (lo, hi) = (a.min(b), a.max(b));
        for (gi, &wi) in gs.iter_mut().zip(ws) {
            if wi < lo || wi > hi {
                *gi = 0.0;
            }
        }
    }
    Ok(out)
}
