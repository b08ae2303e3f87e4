//! [`UniformQuantizer`]: affine and symmetric integer quantization.

use std::borrow::Cow;

use ndarray::{ArrayRef, IxDyn};
use rayon::prelude::*;

use super::calibrate::Calibration;
use super::scheme::Runs;
use super::{
    Decoding, Granularity, Levels, PackedCodes, QuantContext, QuantizedTensor, Quantizer, Rounding,
    Scheme,
};
use crate::error::{Error, Result};
use crate::kernels::quant::{
    min_max, pack_codes, quantize as quantize_kernel, quantize_stochastic,
};
use crate::mask::Mask;
use crate::tensor::{Scalar, check_finite, check_nonempty, row_major};

/// Uniform quantization to `bits`-bit integers (Jacob et al., "Quantization and
/// Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR
/// 2018; Krishnamoorthi, "Quantizing deep convolutional networks for efficient
/// inference: A whitepaper", 2018).
///
/// - **Symmetric, signed** (the default for symmetric): levels `−(2^(b−1)−1) … 2^(b−1)−1`
///   (the restricted range, so `±max` are both exact), `scale = max|x| / (2^(b−1)−1)`.
/// - **Symmetric, unsigned**: levels `0 … 2^b−1`, `scale = max(x) / (2^b−1)`, for
///   non-negative data; negative values clip to 0.
/// - **Affine** (unsigned by default): levels `0 … 2^b−1` (signed: `−2^(b−1) …
///   2^(b−1)−1`) with an integer zero point `z`: `x ≈ scale·(q − z)`. The range always
///   includes 0, so 0 is exact.
///
/// Per tensor, per channel (any axis) or per group of consecutive elements along rows;
/// 2 to 8 bits; round-to-nearest-even or stochastic rounding; the range from the
/// min/max (default) or a [`Calibration`] method. Codes are packed at their width.
///
/// ```
/// use ndarray::Array;
/// use slimnn::quant::{Granularity, QuantContext, Quantizer, Scheme, UniformQuantizer};
///
/// let w = Array::from_shape_fn(ndarray::IxDyn(&[8, 256]), |i| ((i[0] * 256 + i[1]) as f32 * 0.01).sin());
/// let int4 = UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 128 })?;
/// let q = int4.quantize(&w, &QuantContext::new())?;
/// // 4-bit codes, plus an f32 scale and a 4-bit zero point per 128 weights.
/// assert!((q.bits_per_weight() - (4.0 + 36.0 / 128.0)).abs() < 1e-12);
/// let err = (&q.dequantize::<f32>() - &w).mapv(f32::abs).fold(0.0f32, |m, &e| m.max(e));
/// assert!(err <= 2.0 / 15.0 / 2.0 + 1e-6); // half a step of a range of width ≤ 2
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UniformQuantizer {
    bits: u8,
    scheme: Scheme,
    signed: bool,
    granularity: Granularity,
    rounding: Rounding,
    calibration: Calibration,
}

impl UniformQuantizer {
    /// A `bits`-bit quantizer (2 ≤ bits ≤ 8); symmetric schemes use signed codes,
    /// affine ones unsigned codes.
    pub fn new(bits: u8, scheme: Scheme, granularity: Granularity) -> Result<Self> {
        if !(2..=8).contains(&bits) {
            return Err(Error::invalid(
                "bits",
                bits,
                "2 to 8 bits (1-bit weights: BinaryQuantizer)",
            ));
        }
        if let Granularity::PerGroup { size: 0 } = granularity {
            return Err(Error::invalid("group size", 0, "at least 1"));
        }
        Ok(UniformQuantizer {
            bits,
            scheme,
            signed: scheme == Scheme::Symmetric,
            granularity,
            rounding: Rounding::NearestEven,
            calibration: Calibration::MinMax,
        })
    }

    /// Signed or unsigned codes.
    pub fn with_signed(mut self, signed: bool) -> Self {
        self.signed = signed;
        self
    }

    /// Sets the rounding.
    pub fn with_rounding(mut self, rounding: Rounding) -> Self {
        self.rounding = rounding;
        self
    }

    /// Sets how ranges are chosen. Fails for a percentile outside `(0.5, 1]`.
    pub fn with_calibration(mut self, calibration: Calibration) -> Result<Self> {
        self.calibration = calibration.check()?;
        Ok(self)
    }

    /// Bits per code.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether codes are signed.
    pub fn signed(&self) -> bool {
        self.signed
    }

    /// The granularity.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The lowest level and the number of levels.
    fn grid(&self) -> (i32, usize) {
        let b = self.bits as u32;
        match (self.scheme, self.signed) {
            (Scheme::Symmetric, true) => (-((1i32 << (b - 1)) - 1), (1usize << b) - 1),
            (Scheme::Symmetric, false) | (Scheme::Affine, false) => (0, 1usize << b),
            (Scheme::Affine, true) => (-(1i32 << (b - 1)), 1usize << b),
        }
    }

    /// Scale and zero point (in level units) for the range `[lo, hi]`.
    pub fn params_for_range(&self, lo: f32, hi: f32) -> Result<(f32, f32)> {
        if !(lo.is_finite() && hi.is_finite()) || lo > hi {
            return Err(Error::invalid(
                "range",
                format!("[{lo}, {hi}]"),
                "a finite range with lo ≤ hi",
            ));
        }
        let (min, count) = self.grid();
        let max = min + count as i32 - 1;
        // A zero range (or one so small that 1/scale overflows) decodes to 0 with any
        // scale; 1 keeps the arithmetic finite.
        let usable = |s: f32| {
            if s > 0.0 && (1.0 / s).is_finite() {
                s
            } else {
                1.0
            }
        };
        let (scale, zero) = match self.scheme {
            Scheme::Symmetric => {
                let amax = if self.signed {
                    lo.abs().max(hi.abs())
                } else {
                    hi.max(0.0)
                };
                (usable(amax / max as f32), 0.0)
            }
            Scheme::Affine => {
                let (lo, hi) = (lo.min(0.0), hi.max(0.0));
                let scale = usable((hi - lo) / (count - 1) as f32);
                let zero = (min as f32 - lo / scale).round_ties_even();
                (scale, zero.clamp(min as f32, max as f32))
            }
        };
        Ok((scale, zero))
    }
}

impl<T: Scalar> Quantizer<T> for UniformQuantizer {
    /// E.g. `"uniform 8-bit symmetric per channel (axis 0)"`, with the rounding and
    /// calibration when they are not the defaults.
    fn describe(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Symmetric => "symmetric",
            Scheme::Affine => "affine",
        };
        let sign = if self.signed { "" } else { " unsigned" };
        let mut s = format!(
            "uniform {}-bit {scheme}{sign} {}",
            self.bits, self.granularity
        );
        if let Rounding::Stochastic { seed } = self.rounding {
            s += &format!(", stochastic rounding (seed {seed})");
        }
        match self.calibration {
            Calibration::MinMax => {}
            Calibration::Percentile(p) => s += &format!(", percentile {p} calibration"),
            Calibration::Mse => s += ", MSE calibration",
            Calibration::Kl => s += ", KL calibration",
        }
        s
    }

    fn quantize(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        let shape = weights.shape();
        check_nonempty(shape, || ctx.what())?;
        let values = as_f32(weights);
        let runs = Runs::new(shape, self.granularity).map_err(|e| rename(e, ctx))?;
        let (min, count) = self.grid();
        let cmax = (count - 1) as f32;
        let code = |run: usize, x: &[f32], codes: &mut [u8], (scale, zero): (f32, f32)| {
            let offset = zero - min as f32;
            match self.rounding {
                Rounding::NearestEven => quantize_kernel(x, 1.0 / scale, offset, cmax, codes),
                Rounding::Stochastic { seed } => quantize_stochastic(
                    x,
                    1.0 / scale,
                    offset,
                    cmax,
                    seed,
                    run * runs.run_len,
                    codes,
                ),
            }
        };
        let one_run_per_group = values.len() / runs.run_len == runs.groups;
        let (codes, params) =
            if self.calibration == Calibration::MinMax && one_run_per_group && runs.groups > 1 {
                // Each group is one run (per row, per block): take its range and quantize it
                // while it is in cache, one pass over memory.
                let (codes, params) = encode_with(&values, runs, self.bits, |run, x, c| {
                    let (lo, hi, finite) = min_max(x);
                    let p = if finite {
                        self.params_for_range(lo, hi).unwrap_or((1.0, 0.0))
                    } else {
                        (1.0, 0.0)
                    };
                    code(run, x, c, p);
                    (p, finite)
                });
                if params.iter().any(|p| !p.1) {
                    check_finite(&values, || ctx.what())?;
                }
                (codes, params.into_iter().map(|p| p.0).collect::<Vec<_>>())
            } else {
                let ranges = group_ranges(
                    &values,
                    runs,
                    self.calibration,
                    self.scheme == Scheme::Symmetric && self.signed,
                    count,
                    ctx,
                )?;
                let params: Vec<(f32, f32)> = ranges
                    .iter()
                    .map(|&(lo, hi)| self.params_for_range(lo, hi))
                    .collect::<Result<_>>()?;
                let codes = encode(&values, runs, self.bits, |run, x, c| {
                    code(run, x, c, params[runs.group(run)])
                });
                (codes, params)
            };
        let affine = self.scheme == Scheme::Affine;
        QuantizedTensor::new(
            shape,
            codes,
            Decoding::Scalar {
                levels: Levels::Integers {
                    min,
                    max: min + count as i32 - 1,
                },
                granularity: self.granularity,
                scales: params.iter().map(|p| p.0).collect(),
                zero_points: if affine {
                    params.iter().map(|p| p.1).collect()
                } else {
                    Vec::new()
                },
                scale_bits: 32,
            },
        )
    }
}

/// Encodes `values` run by run with `code_run(run index, run values, codes out)` (codes
/// below 2^bits) and packs the codes, in parallel: each task handles a multiple of 8
/// elements, so it owns whole bytes of the packed output.
pub(crate) fn encode(
    values: &[f32],
    runs: Runs,
    bits: u8,
    code_run: impl Fn(usize, &[f32], &mut [u8]) + Sync,
) -> PackedCodes {
    encode_with(values, runs, bits, code_run).0
}

/// [`encode`], also collecting what `code_run` returns for every run, in order.
pub(crate) fn encode_with<R: Send>(
    values: &[f32],
    runs: Runs,
    bits: u8,
    code_run: impl Fn(usize, &[f32], &mut [u8]) -> R + Sync,
) -> (PackedCodes, Vec<R>) {
    let runs_per_task = (65_536 / runs.run_len).max(1).next_multiple_of(8);
    let per_task = runs_per_task * runs.run_len;
    let mut bytes = vec![0u8; (values.len() * bits as usize).div_ceil(8)];
    let results: Vec<Vec<R>> = bytes
        .par_chunks_mut(per_task * bits as usize / 8)
        .zip(values.par_chunks(per_task))
        .enumerate()
        .map(|(t, (out, x))| {
            let mut codes = vec![0u8; x.len()];
            let results = codes
                .chunks_mut(runs.run_len)
                .zip(x.chunks(runs.run_len))
                .enumerate()
                .map(|(r, (c, xr))| code_run(t * runs_per_task + r, xr, c))
                .collect();
            pack_codes(&codes, bits, out);
            results
        })
        .collect();
    (
        PackedCodes::from_packed(bytes, bits, values.len()),
        results.into_iter().flatten().collect(),
    )
}

/// The elements in row-major order as f32: borrowed when they already are.
pub(crate) fn as_f32<'a, T: Scalar>(weights: &'a ArrayRef<T, IxDyn>) -> Cow<'a, [f32]> {
    match row_major(weights) {
        Cow::Borrowed(s) => match T::as_f32_slice(s) {
            Some(f) => Cow::Borrowed(f),
            None => Cow::Owned(s.iter().map(|x| x.as_f64() as f32).collect()),
        },
        Cow::Owned(v) => Cow::Owned(v.iter().map(|x| x.as_f64() as f32).collect()),
    }
}

pub(crate) fn rename(e: Error, ctx: &QuantContext<'_>) -> Error {
    match e {
        Error::BadShape { shape, reason, .. } => Error::BadShape {
            what: ctx.what(),
            shape,
            reason,
        },
        e => e,
    }
}

/// The values of a run (its first element at flat index `start`) that `mask` keeps.
pub(crate) fn kept<'a>(
    x: &'a [f32],
    start: usize,
    mask: Option<&'a Mask>,
) -> impl Iterator<Item = f32> + Clone + 'a {
    x.iter()
        .enumerate()
        .filter(move |(i, _)| mask.is_none_or(|m| m.get(start + i)))
        .map(|(_, &v)| v)
}

/// Sums `f(run values, flat index of the run's start, group)` (a pair) over the runs of
/// every group, in parallel.
pub(crate) fn group_sums(
    values: &[f32],
    runs: Runs,
    f: impl Fn(&[f32], usize, usize) -> (f64, f64) + Sync,
) -> Vec<(f64, f64)> {
    group_fold(values, runs, f, |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Combines `f(run values, run start, group)` over the runs of every group with `combine`
/// (associative, with identity `(0, 0)`), in parallel.
pub(crate) fn group_fold(
    values: &[f32],
    runs: Runs,
    f: impl Fn(&[f32], usize, usize) -> (f64, f64) + Sync,
    combine: impl Fn((f64, f64), (f64, f64)) -> (f64, f64),
) -> Vec<(f64, f64)> {
    let runs_per_task = (65_536 / runs.run_len).max(1);
    let per_run: Vec<(f64, f64)> = values
        .par_chunks(runs_per_task * runs.run_len)
        .enumerate()
        .flat_map_iter(|(t, task)| {
            task.chunks(runs.run_len)
                .enumerate()
                .map(|(r, x)| {
                    let run = t * runs_per_task + r;
                    f(x, run * runs.run_len, runs.group(run))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut out = vec![(0.0, 0.0); runs.groups];
    for (r, pair) in per_run.into_iter().enumerate() {
        let g = &mut out[runs.group(r)];
        *g = combine(*g, pair);
    }
    out
}

/// The calibrated range of every group; fails on the first non-finite value. Histogram
/// calibrations see only the weights `mask` keeps (pruned zeros would swamp them).
fn group_ranges(
    values: &[f32],
    runs: Runs,
    calibration: Calibration,
    magnitude: bool,
    levels: usize,
    ctx: &QuantContext<'_>,
) -> Result<Vec<(f32, f32)>> {
    if calibration != Calibration::MinMax {
        check_finite(values, || ctx.what())?;
        let mut members: Vec<Vec<f32>> = vec![Vec::new(); runs.groups];
        for (r, run) in values.chunks(runs.run_len).enumerate() {
            let start = r * runs.run_len;
            let kept = run
                .iter()
                .enumerate()
                .filter(|(i, _)| ctx.mask.is_none_or(|m| m.get(start + i)));
            members[runs.group(r)].extend(kept.map(|(_, &v)| v));
        }
        return Ok(members
            .par_iter()
            .map(|m| {
                if m.is_empty() {
                    (0.0, 0.0)
                } else {
                    calibration.range(m, magnitude, levels)
                }
            })
            .collect());
    }
    let mut out = vec![(f32::INFINITY, f32::NEG_INFINITY); runs.groups];
    if runs.run_len < 64 {
        // Tiny runs (per channel along the last axis): one sequential pass.
        for (i, &v) in values.iter().enumerate() {
            if !v.is_finite() {
                check_finite(values, || ctx.what())?;
            }
            let g = &mut out[runs.group(i / runs.run_len)];
            *g = (g.0.min(v), g.1.max(v));
        }
        return Ok(out);
    }
    // One pass, in parallel; finiteness is checked on the way.
    let runs_per_task = (65_536 / runs.run_len).max(1);
    let per_run: Vec<(f32, f32, bool)> = values
        .par_chunks(runs_per_task * runs.run_len)
        .flat_map_iter(|task| task.chunks(runs.run_len).map(min_max).collect::<Vec<_>>())
        .collect();
    if per_run.iter().any(|r| !r.2) {
        check_finite(values, || ctx.what())?;
    }
    for (r, (lo, hi, _)) in per_run.into_iter().enumerate() {
        let g = &mut out[runs.group(r)];
        *g = (g.0.min(lo), g.1.max(hi));
    }
    Ok(out)
}
