//! AWQ, activation-aware weight quantization (Lin et al., "AWQ: Activation-aware Weight
//! Quantization for LLM Compression and Acceleration", MLSys 2024).

use ndarray::{Array1, Array2, ArrayRef, ArrayView2, ArrayViewD, IxDyn};

use super::LayerStats;
use crate::error::{Error, Result};
use crate::quant::{
    Granularity, QuantContext, QuantizedTensor, Quantizer, Scheme, UniformQuantizer,
};

/// AWQ: scale each input column `j` of a weight by `s_j = mean|x_j|^α` before
/// round-to-nearest, so that the columns that meet large activations lose less to
/// rounding, and divide it back out when decoding: `Ŵ = Q(W·diag(s))·diag(s)⁻¹`.
///
/// The exponent `α` is searched on a grid of 20 points `0, 0.05, …, 0.95` (as the
/// authors' code), minimizing the layer's output error on the calibration rows,
/// `‖(Ŵ − W)X‖² = tr(ΔW·XᵀX·ΔWᵀ)`, computed from the statistics' `Σ x xᵀ`. As there,
/// `mean|x|` is clamped below at `1e-4` and `s` normalized by `√(max s · min s)`.
/// `α = 0` is plain round-to-nearest, so AWQ's output error is never larger.
///
/// Round-to-nearest is affine (min/max with a zero point), per output row or in groups
/// of `group` inputs. As a [`Quantizer`] it needs
/// [`QuantContext::layer_stats`]; the scales are kept in the result's decoding
/// ([`QuantizedTensor::with_input_scales`]). To fold them into the previous layer
/// instead (dividing its output channel `j` by `s_j`, exact through ReLU), use
/// [`Awq::search`] and quantize `W·diag(s)` yourself.
///
/// ```
/// use ndarray::Array2;
/// use slimnn::calib::{Awq, LayerStats};
/// use slimnn::quant::{QuantContext, Quantizer};
///
/// let w = Array2::from_shape_fn((8, 16), |(i, j)| ((i * 16 + j) as f32 * 0.7).sin());
/// // Calibration rows where input 3 is 50 times larger than the others.
/// let rows: Vec<f32> = (0..64 * 16)
///     .map(|k| ((k as f32) * 0.37).cos() * if k % 16 == 3 { 50.0 } else { 1.0 })
///     .collect();
/// let mut stats = LayerStats::new(16);
/// stats.observe(&rows, 64, 16)?;
/// let awq = Awq::new(3, None)?;
/// let found = awq.search(w.view(), &stats)?;
/// assert!(found.error <= found.rtn_error);
/// let q = awq.quantize(&w.view().into_dyn(), &QuantContext::new().with_layer_stats(&stats))?;
/// assert_eq!(q.input_scales().unwrap().len(), 16);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Awq {
    bits: u8,
    group: Option<usize>,
    grid: usize,
}

/// What [`Awq::search`] found for one weight.
#[derive(Clone, Debug, PartialEq)]
pub struct AwqScales {
    /// The exponent chosen.
    pub alpha: f64,
    /// `s_j` per input column (the weight's columns are multiplied by them before
    /// rounding, and divided after).
    pub scales: Array1<f32>,
    /// The output error `tr(ΔW·XᵀX·ΔWᵀ)` with these scales.
    pub error: f64,
    /// The same error of plain round-to-nearest (`α = 0`).
    pub rtn_error: f64,
}

impl Awq {
    /// AWQ at `bits` (2 to 8) per output row, or in groups of `group` inputs.
    pub fn new(bits: u8, group: Option<usize>) -> Result<Awq> {
        if !(2..=8).contains(&bits) {
            return Err(Error::invalid("bits", bits, "2 to 8"));
        }
        if group == Some(0) {
            return Err(Error::invalid("group", 0, "a group size ≥ 1"));
        }
        Ok(Awq {
            bits,
            group,
            grid: 20,
        })
    }

    fn rtn(&self) -> Result<UniformQuantizer> {
        let g = match self.group {
            Some(size) => Granularity::PerGroup { size },
            None => Granularity::PerChannel { axis: 0 },
        };
        UniformQuantizer::new(self.bits, Scheme::Affine, g)
    }

    /// The scales for `w` (`[out, in]`; a Conv2d weight flattened to `[out, in·kh·kw]`)
    /// given its layer's statistics. Errors: [`Error::ShapeMismatch`] for statistics of
    /// another width, [`Error::InvalidParameter`] for zero rows, those of
    /// round-to-nearest.
    pub fn search(&self, w: ArrayView2<'_, f32>, stats: &LayerStats) -> Result<AwqScales> {
        let shape = [w.nrows(), w.ncols()];
        self.search_shaped(w.into_dyn(), &shape, stats, &QuantContext::new())
            .map(|(found, _)| found)
    }

    /// The search on a weight of any shape `[out, …]` (columns flattened), also giving
    /// the quantized tensor of the best scales.
    fn search_shaped(
        &self,
        w: ArrayViewD<'_, f32>,
        shape: &[usize],
        stats: &LayerStats,
        ctx: &QuantContext<'_>,
    ) -> Result<(AwqScales, QuantizedTensor)> {
        let what = crate::tensor::subject(ctx.name, "weights");
        let out = shape.first().copied().unwrap_or(0);
        if shape.len() < 2 || out == 0 {
            return Err(Error::bad_shape(
                what,
                shape,
                "AWQ needs a Linear [out, in] or Conv2d [out, in, kh, kw] weight",
            ));
        }
        let w = w.as_standard_layout();
        let flat = w.as_slice().expect("standard layout");
        let cols = flat.len() / out;
        stats.check_for(&what, cols)?;
        let w2 = ArrayView2::from_shape((out, cols), flat)?;
        let w64 = w2.mapv(f64::from);
        let h = stats.xtx().mapv(|v| v / stats.rows() as f64);
        let act = stats.abs_mean().mapv(|v| v.max(1e-4));
        let rtn = self.rtn()?;
        let mut best: Option<(AwqScales, QuantizedTensor)> = None;
        let mut rtn_error = f64::NAN;
        for step in 0..self.grid {
            let alpha = step as f64 / self.grid as f64;
            let s = act.mapv(|a| a.powf(alpha));
            let (lo, hi) = s
                .iter()
                .fold((f64::INFINITY, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
            let norm = (lo * hi).sqrt();
            let s: Array1<f32> = s.mapv(|v| (v / norm) as f32);
            let s = if step == 0 { Array1::ones(cols) } else { s };
            let scaled: Vec<f32> = flat
                .iter()
                .enumerate()
                .map(|(i, &v)| v * s[i % cols])
                .collect();
            let scaled = ndarray::ArrayD::from_shape_vec(IxDyn(shape), scaled)?;
            let mut q = rtn.quantize(&scaled, ctx)?;
            if step > 0 {
                q = q.with_input_scales(s.to_vec())?;
            }
            let decoded = q.dequantize::<f32>();
            let d = decoded.as_slice().expect("standard layout");
            let dw = Array2::from_shape_fn((out, cols), |(i, j)| {
                f64::from(d[i * cols + j]) - w64[[i, j]]
            });
            let error = (dw.dot(&h) * &dw).sum();
            if step == 0 {
                rtn_error = error;
            }
            if best.as_ref().is_none_or(|(b, _)| error < b.error) {
                best = Some((
                    AwqScales {
                        alpha,
                        scales: s,
                        error,
                        rtn_error,
                    },
                    q,
                ));
            }
        }
        let (mut found, q) = best.expect("a grid of 20 points");
        found.rtn_error = rtn_error;
        Ok((found, q))
    }
}

impl Quantizer<f32> for Awq {
    fn quantize(
        &self,
        weights: &ArrayRef<f32, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        let stats = ctx.layer_stats.ok_or_else(|| Error::MissingStatistic {
            method: "AWQ",
            statistic: "layer_stats",
            what: crate::tensor::subject(ctx.name, "weights"),
        })?;
        let shape = weights.shape().to_vec();
        Ok(self.search_shaped(weights.view(), &shape, stats, ctx)?.1)
    }

    fn describe(&self) -> String {
        match self.group {
            Some(g) => format!("AWQ {} bits, groups of {g}", self.bits),
            None => format!("AWQ {} bits per row", self.bits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows whose inputs differ in scale by up to 40×, as LLM activations do.
    fn skewed(n: usize, d: usize, seed: u64) -> LayerStats {
        let rows: Vec<f32> = (0..n * d)
            .map(|k| {
                let j = k % d;
                let v = (((k as u64 * 2_654_435_761 + seed) % 10_007) as f32 / 5003.5) - 1.0;
                v * if j.is_multiple_of(7) { 40.0 } else { 1.0 }
            })
            .collect();
        let mut s = LayerStats::new(d);
        s.observe(&rows, n, d).unwrap();
        s
    }

    #[test]
    fn awq_never_loses_to_round_to_nearest_and_wins_on_skewed_inputs() {
        for (bits, group, seed) in [
            (3, None, 1),
            (4, Some(16), 2),
            (2, Some(8), 3),
            (3, Some(32), 4),
        ] {
            let w = Array2::from_shape_fn((12, 32), |(i, j)| {
                (((i * 32 + j) as u64 * 40_503 + seed) % 997) as f32 / 498.5 - 1.0
            });
            let stats = skewed(200, 32, seed);
            let found = Awq::new(bits, group)
                .unwrap()
                .search(w.view(), &stats)
                .unwrap();
            assert!(found.error <= found.rtn_error, "{bits} {group:?}");
            assert!(
                found.error < 0.95 * found.rtn_error,
                "{bits} {group:?}: {found:?}"
            );
            assert!(found.alpha > 0.0);
        }
    }

    #[test]
    fn the_decoding_divides_the_scales_back_out() {
        let w = Array2::from_shape_fn((4, 8), |(i, j)| (i as f32 - 1.5) * (j as f32 + 1.0) / 8.0);
        let stats = skewed(50, 8, 5);
        let awq = Awq::new(8, None).unwrap();
        let q = awq
            .quantize(
                &w.view().into_dyn(),
                &QuantContext::new().with_layer_stats(&stats),
            )
            .unwrap();
        let back = q.dequantize::<f32>();
        for (a, b) in back.iter().zip(w.iter()) {
            assert!((a - b).abs() < 0.02, "{a} vs {b}");
        }
        assert!(q.int8_codes().is_none());
        assert!(q.storage_bits() > q.codes().storage_bits() + 8 * 32);
        let e = awq
            .quantize(&w.view().into_dyn(), &QuantContext::new())
            .unwrap_err();
        assert!(matches!(e, Error::MissingStatistic { .. }), "{e}");
        let e = awq
            .quantize(
                &w.view().into_dyn(),
                &QuantContext::new().with_layer_stats(&skewed(5, 7, 1)),
            )
            .unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    }
}
