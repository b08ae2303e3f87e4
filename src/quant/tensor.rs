//! [`QuantizedTensor`]: packed codes plus everything needed to decode them.

use half::f16;
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::PackedCodes;
use super::scheme::{Granularity, Runs};
use crate::error::{Error, Result};
use crate::kernels::quant::dequantize as dequantize_kernel;
use crate::mask::Mask;
use crate::tensor::Scalar;

/// A [`QuantizedTensor`]'s codes as signed integers with their scales
/// ([`QuantizedTensor::int8_codes`]): element `i` is `scales[g] · codes[i]`, `g` its group
/// under `granularity`.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Codes {
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// One signed code per element, row-major.
    pub codes: Vec<i8>,
    /// One scale per group.
    pub scales: Vec<f32>,
    /// Which elements share a scale.
    pub granularity: Granularity,
}

impl Int8Codes {
    /// For a 2-D weight `[out, in]`: the number of consecutive inputs that share a scale
    /// and one scale per such block of each row, row-major — the layout
    /// [`sparse_ops::int8_matmul`](crate::sparse_ops::int8_matmul) takes. `None` for
    /// other ranks and for scales per channel along an axis other than 0.
    pub fn row_blocks(&self) -> Option<(usize, Vec<f32>)> {
        let &[out, inputs] = self.shape.as_slice() else {
            return None;
        };
        match self.granularity {
            Granularity::PerTensor => Some((inputs, vec![*self.scales.first()?; out])),
            Granularity::PerChannel { axis: 0 } => Some((inputs, self.scales.clone())),
            Granularity::PerGroup { size } => Some((size, self.scales.clone())),
            Granularity::PerChannel { .. } => None,
        }
    }
}

/// The value each code stands for, before scaling.
#[derive(Clone, Debug, PartialEq)]
pub enum Levels {
    /// Code `c` stands for the integer `min + c`, up to `max` (uniform quantization).
    Integers {
        /// The level of code 0.
        min: i32,
        /// The highest level a code may stand for.
        max: i32,
    },
    /// Code `c` stands for `table[c]` (a codebook: k-means centroids, powers of two,
    /// ±1, ...).
    Table(Vec<f32>),
}

impl Levels {
    /// The lowest and highest level.
    pub fn bounds(&self) -> (f32, f32) {
        match self {
            Levels::Integers { min, max } => (*min as f32, *max as f32),
            Levels::Table(t) => t
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                }),
        }
    }
}

/// How codes decode to values.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoding {
    /// Element-wise: `x = scale[g] · (level(code) − zero_point[g])`, `g` the element's
    /// group.
    Scalar {
        /// What each code stands for.
        levels: Levels,
        /// Which elements share a scale and zero point.
        granularity: Granularity,
        /// One scale per group.
        scales: Vec<f32>,
        /// One zero point per group, in level units (integers within the levels for
        /// [`Levels::Integers`]); empty means all zero.
        zero_points: Vec<f32>,
        /// Bits each scale is stored in: 32 (f32) or 16 (the scales must then be exact
        /// in f16).
        scale_bits: u8,
    },
    /// Product quantization of rows: each row (axis 0) splits into subvectors of
    /// `sub_dim` elements; subvector `j` of a row is codeword `code` of codebook `j`.
    /// One code per subvector, row-major.
    Product {
        /// Elements per subvector.
        sub_dim: usize,
        /// Codewords per codebook.
        codewords: usize,
        /// Codebooks `[subspaces][codewords][sub_dim]`, flattened.
        codebooks: Vec<f32>,
    },
}

/// A quantized tensor: its shape, its codes packed at their bit width, the
/// [`Decoding`] that turns them back into values and, for a pruned tensor, the mask of
/// the weights that decode to exactly 0. Knows its exact storage.
///
/// ```
/// use ndarray::array;
/// use slimnn::quant::{Granularity, QuantContext, Quantizer, Scheme, UniformQuantizer};
///
/// let w = array![[0.5f32, -1.0, 0.25, 1.0], [2.0, 0.0, -2.0, 1.0]].into_dyn();
/// let q = UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })?
///     .quantize(&w, &QuantContext::new())?;
/// assert_eq!(q.codes().bits(), 8);
/// assert_eq!(q.storage_bits(), 8 * 8 + 2 * 32); // codes + one f32 scale per row
/// let back = q.dequantize::<f32>();
/// assert!((back[[0, 2]] - 0.25).abs() <= 1.0 / 127.0 / 2.0);
/// assert_eq!(back[[1, 1]], 0.0);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedTensor {
    shape: Vec<usize>,
    codes: PackedCodes,
    decoding: Decoding,
    mask: Option<Mask>,
    /// One divisor per input column (AWQ's activation-aware scales); `None`: all 1.
    input_scales: Option<Vec<f32>>,
}

fn mismatch(what: &str, expected: usize, got: usize) -> Error {
    Error::ShapeMismatch {
        what: what.to_string(),
        expected: vec![expected],
        got: vec![got],
    }
}

impl QuantizedTensor {
    /// Checks that codes and decoding fit the shape and each other.
    pub fn new(shape: &[usize], codes: PackedCodes, decoding: Decoding) -> Result<QuantizedTensor> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                Error::bad_shape("quantized tensor", shape, "element count overflows")
            })?;
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        match &decoding {
            Decoding::Scalar {
                levels,
                granularity,
                scales,
                zero_points,
                scale_bits,
            } => {
                if codes.len() != n {
                    return Err(mismatch("codes (one per element)", n, codes.len()));
                }
                let runs = Runs::new(shape, *granularity)?;
                if scales.len() != runs.groups {
                    return Err(mismatch(
                        "scales (one per group)",
                        runs.groups,
                        scales.len(),
                    ));
                }
                if !zero_points.is_empty() && zero_points.len() != runs.groups {
                    return Err(mismatch(
                        "zero points (one per group)",
                        runs.groups,
                        zero_points.len(),
                    ));
                }
                let count = match levels {
                    Levels::Integers { min, max } => {
                        if max < min {
                            return Err(Error::invalid(
                                "levels",
                                format!("{min}..={max}"),
                                "min ≤ max",
                            ));
                        }
                        if let Some(z) = zero_points
                            .iter()
                            .find(|z| z.fract() != 0.0 || **z < *min as f32 || **z > *max as f32)
                        {
                            return Err(Error::invalid(
                                "zero point",
                                z,
                                format!("an integer level in {min}..={max}"),
                            ));
                        }
                        (*max as i64 - *min as i64 + 1) as u64
                    }
                    Levels::Table(t) => {
                        if t.is_empty() || !finite(t) {
                            return Err(Error::invalid(
                                "codebook",
                                "empty or non-finite",
                                "finite values",
                            ));
                        }
                        t.len() as u64
                    }
                };
                if count < 1u64 << codes.bits()
                    && !codes.is_empty()
                    && codes.max_code() as u64 >= count
                {
                    return Err(Error::invalid(
                        "codes",
                        format!("a code ≥ {count}"),
                        format!("codes below the {count} levels"),
                    ));
                }
                match scale_bits {
                    32 => {}
                    16 if scales.iter().all(|&s| f16::from_f32(s).to_f32() == s) => {}
                    16 => {
                        return Err(Error::invalid(
                            "scales",
                            "not exact in f16",
                            "f16-exact scales with scale_bits 16",
                        ));
                    }
                    b => return Err(Error::invalid("scale_bits", b, "16 or 32")),
                }
                if !finite(scales) || !finite(zero_points) {
                    return Err(Error::invalid(
                        "decoding",
                        "a non-finite scale or zero point",
                        "finite values",
                    ));
                }
            }
            Decoding::Product {
                sub_dim,
                codewords,
                codebooks,
            } => {
                let rows = shape.first().copied().unwrap_or(1);
                let row = n.checked_div(rows).unwrap_or(0);
                if *sub_dim == 0 || row % sub_dim != 0 {
                    return Err(Error::bad_shape(
                        "product-quantized tensor",
                        shape,
                        format!("subvector length {sub_dim} does not divide the row length {row}"),
                    ));
                }
                let subspaces = row / sub_dim;
                if codes.len() != rows * subspaces {
                    return Err(mismatch(
                        "codes (one per subvector)",
                        rows * subspaces,
                        codes.len(),
                    ));
                }
                let expected = subspaces
                    .checked_mul(*codewords)
                    .and_then(|v| v.checked_mul(*sub_dim))
                    .ok_or_else(|| {
                        Error::invalid(
                            "codewords",
                            codewords,
                            "a codebook size that fits in memory",
                        )
                    })?;
                if codebooks.len() != expected {
                    return Err(mismatch("codebooks", expected, codebooks.len()));
                }
                if !finite(codebooks) {
                    return Err(Error::invalid(
                        "codebooks",
                        "a non-finite value",
                        "finite values",
                    ));
                }
                if !codes.is_empty() && codes.max_code() as usize >= *codewords {
                    return Err(Error::invalid(
                        "codes",
                        "a code past the codebook",
                        format!("codes below {codewords}"),
                    ));
                }
            }
        }
        Ok(QuantizedTensor {
            shape: shape.to_vec(),
            codes,
            decoding,
            mask: None,
            input_scales: None,
        })
    }

    /// Marks the elements `mask` prunes: they decode to exactly 0 (whatever their code),
    /// and the mask's bits count in the storage.
    pub fn with_mask(mut self, mask: Mask) -> Result<QuantizedTensor> {
        crate::tensor::check_same_shape(&self.shape, mask.shape(), || {
            "mask of a quantized tensor".into()
        })?;
        self.mask = Some(mask);
        Ok(self)
    }

    /// The mask of pruned elements, if any.
    pub fn mask(&self) -> Option<&Mask> {
        self.mask.as_ref()
    }

    /// Divides every element of input column `j` (the flattened dimensions after the
    /// first: `in`, or `in·kh·kw`) by `scales[j]` when decoding: the codes quantize
    /// `W·diag(s)` and decode to `Q(W·diag(s))·diag(s)⁻¹`, as AWQ
    /// ([`calib::Awq`](crate::calib::Awq)) folds its activation-aware scales into the
    /// weight's decoding. The scales count in the storage (32 bits each). Such a tensor
    /// has no [`int8_codes`](Self::int8_codes); the compressed file stores it as its
    /// decoded values and GGUF refuses it (or fold the scales into the previous layer
    /// with [`Awq::search`](crate::calib::Awq::search) and quantize `W·diag(s)`).
    ///
    /// Fails with [`Error::BadShape`] for a tensor of fewer than 2 dimensions,
    /// [`Error::ShapeMismatch`] for a wrong count, [`Error::InvalidParameter`] for a
    /// scale that is not finite and positive.
    pub fn with_input_scales(mut self, scales: Vec<f32>) -> Result<QuantizedTensor> {
        if self.shape.len() < 2 {
            return Err(Error::bad_shape(
                "quantized tensor with input scales",
                &self.shape,
                "needs an [out, in, ...] weight",
            ));
        }
        let cols = self.len() / self.shape[0].max(1);
        if scales.len() != cols {
            return Err(mismatch(
                "input scales (one per input column)",
                cols,
                scales.len(),
            ));
        }
        if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::invalid("input scale", s, "finite and > 0"));
        }
        self.input_scales = Some(scales);
        Ok(self)
    }

    /// The divisors of the input columns, if any (see
    /// [`with_input_scales`](Self::with_input_scales)).
    pub fn input_scales(&self) -> Option<&[f32]> {
        self.input_scales.as_deref()
    }

    /// The codes as signed integers with their scales, for an engine's own int8
    /// kernels (or [`sparse_ops::int8_matmul`](crate::sparse_ops::int8_matmul)), without
    /// matching on the [`Decoding`]: `value = scale · code`. `Some` for uniform integer
    /// levels within `−128..=127` (any bit width up to 8) with no zero points (or all
    /// zero); elements a stored mask prunes give code 0. `None` otherwise (codebooks,
    /// affine zero points, product quantization).
    ///
    /// ```
    /// use ndarray::Array2;
    /// use slimnn::quant::{Granularity, QuantContext, Quantizer, Scheme, UniformQuantizer};
    /// use slimnn::sparse_ops::int8_matmul;
    ///
    /// let w = Array2::from_shape_fn((4, 64), |(o, i)| ((o * 64 + i) as f32 * 0.37).sin());
    /// let q = UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerGroup { size: 32 })?
    ///     .quantize(&w.view().into_dyn(), &QuantContext::new())?;
    /// let int8 = q.int8_codes().expect("symmetric 8-bit");
    /// assert_eq!((int8.codes.len(), int8.scales.len()), (4 * 64, 4 * 2));
    /// let (block, scales) = int8.row_blocks().expect("a 2-D weight");
    /// let x = Array2::from_elem((1, 64), 0.5f32);
    /// let y = int8_matmul([4, 64], &int8.codes, &scales, block, &x)?;
    /// assert!((&y - &x.dot(&w.t())).iter().all(|e| e.abs() < 0.05));
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn int8_codes(&self) -> Option<Int8Codes> {
        if self.input_scales.is_some() {
            return None;
        }
        let Decoding::Scalar {
            levels: Levels::Integers { min, max },
            granularity,
            scales,
            zero_points,
            ..
        } = &self.decoding
        else {
            return None;
        };
        if *min < i8::MIN as i32 || *max > i8::MAX as i32 || zero_points.iter().any(|&z| z != 0.0) {
            return None;
        }
        let mut codes: Vec<i8> = self
            .codes
            .unpack()
            .into_iter()
            .map(|c| (c as i32 + min).clamp(*min, *max) as i8)
            .collect();
        if let Some(m) = &self.mask {
            for i in m.iter_pruned() {
                codes[i] = 0;
            }
        }
        Some(Int8Codes {
            shape: self.shape.clone(),
            codes,
            scales: scales.clone(),
            granularity: *granularity,
        })
    }

    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The packed codes.
    pub fn codes(&self) -> &PackedCodes {
        &self.codes
    }

    /// How the codes decode.
    pub fn decoding(&self) -> &Decoding {
        &self.decoding
    }

    /// The codebook, for table decodings.
    pub fn table(&self) -> Option<&[f32]> {
        match &self.decoding {
            Decoding::Scalar {
                levels: Levels::Table(t),
                ..
            } => Some(t),
            _ => None,
        }
    }

    /// Replaces the codebook (same size, finite values), e.g. after fine-tuning the
    /// centroids; codes stay.
    pub fn set_table(&mut self, table: Vec<f32>) -> Result<()> {
        match &mut self.decoding {
            Decoding::Scalar {
                levels: Levels::Table(t),
                ..
            } => {
                if table.len() != t.len() {
                    return Err(mismatch("codebook", t.len(), table.len()));
                }
                if table.iter().any(|v| !v.is_finite()) {
                    return Err(Error::invalid(
                        "codebook",
                        "a non-finite value",
                        "finite values",
                    ));
                }
                *t = table;
                Ok(())
            }
            _ => Err(Error::invalid(
                "quantized tensor",
                "no codebook",
                "a table decoding",
            )),
        }
    }

    /// Exact storage in bits: codes, plus scales, zero points (at the code width),
    /// codebooks (f32) and the mask of pruned elements (one bit each) — everything
    /// needed to decode.
    pub fn storage_bits(&self) -> usize {
        let params = match &self.decoding {
            Decoding::Scalar {
                levels,
                scales,
                zero_points,
                scale_bits,
                ..
            } => {
                let table = match levels {
                    Levels::Table(t) => t.len() * 32,
                    Levels::Integers { .. } => 0,
                };
                scales.len() * *scale_bits as usize
                    + zero_points.len() * self.codes.bits() as usize
                    + table
            }
            Decoding::Product { codebooks, .. } => codebooks.len() * 32,
        };
        self.codes.storage_bits()
            + params
            + self.mask.as_ref().map_or(0, Mask::len)
            + self.input_scales.as_ref().map_or(0, |s| s.len() * 32)
    }

    /// Storage per element, in bits.
    pub fn bits_per_weight(&self) -> f64 {
        self.storage_bits() as f64 / self.len().max(1) as f64
    }

    /// The decoded values.
    pub fn dequantize<T: Scalar>(&self) -> ArrayD<T> {
        let mut out = vec![0f32; self.len()];
        self.decode(&mut out);
        let values = out.into_iter().map(|v| T::of(v as f64)).collect();
        ArrayD::from_shape_vec(IxDyn(&self.shape), values).expect("length matches the shape")
    }

    /// Decodes into an engine's buffer of [`QuantizedTensor::len`] elements.
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<()> {
        if out.len() != self.len() {
            return Err(mismatch("output buffer", self.len(), out.len()));
        }
        self.decode(out);
        Ok(())
    }

    fn decode(&self, out: &mut [f32]) {
        match &self.decoding {
            Decoding::Scalar {
                levels,
                granularity,
                scales,
                zero_points,
                ..
            } => {
                let runs = Runs::new(&self.shape, *granularity).expect("checked in new");
                let zero = |g: usize| zero_points.get(g).copied().unwrap_or(0.0);
                // Tasks of whole runs, about 64 Ki elements each, decoded in parallel;
                // each task unpacks its codes at once.
                let runs_per_task = (65_536 / runs.run_len).max(1);
                let per_task = runs_per_task * runs.run_len;
                out.par_chunks_mut(per_task)
                    .enumerate()
                    .for_each(|(t, chunk)| {
                        let mut codes = vec![0u8; chunk.len()];
                        self.codes.unpack_into(t * per_task, &mut codes);
                        for (r, (run, codes)) in chunk
                            .chunks_mut(runs.run_len)
                            .zip(codes.chunks(runs.run_len))
                            .enumerate()
                        {
                            let g = runs.group(t * runs_per_task + r);
                            match levels {
                                Levels::Integers { min, .. } => {
                                    dequantize_kernel(codes, scales[g], zero(g) - *min as f32, run)
                                }
                                Levels::Table(table) => {
                                    let (s, z) = (scales[g], zero(g));
                                    for (o, &c) in run.iter_mut().zip(codes) {
                                        *o = s * (table[c as usize] - z);
                                    }
                                }
                            }
                        }
                    });
            }
            Decoding::Product {
                sub_dim,
                codewords,
                codebooks,
            } => {
                let codes = self.codes.unpack();
                let row = if self.shape.is_empty() {
                    1
                } else {
                    self.len() / self.shape[0].max(1)
                };
                let subspaces = row / sub_dim;
                for (i, chunk) in out.chunks_mut(*sub_dim).enumerate() {
                    let j = i % subspaces;
                    let start = (j * codewords + codes[i] as usize) * sub_dim;
                    chunk.copy_from_slice(&codebooks[start..start + sub_dim]);
                }
            }
        }
        if let Some(s) = &self.input_scales {
            for row in out.chunks_mut(s.len()) {
                row.iter_mut().zip(s).for_each(|(o, s)| *o /= s);
            }
        }
        if let Some(m) = &self.mask {
            m.apply_slice(out).expect("mask shape checked in with_mask");
        }
    }
}
