//! [`QuantizedTensor`]: packed codes plus everything needed to decode them.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::PackedCodes;
use super::scheme::{Granularity, Runs};
use crate::error::{Error, Result};
use crate::kernels::quant::dequantize as dequantize_kernel;
use crate::tensor::Scalar;

/// The value each code stands for, before scaling.
#[derive(Clone, Debug, PartialEq)]
pub enum Levels {
    /// Code `c` stands for the integer `min + c` (uniform quantization).
    Integers {
        /// The level of code 0.
        min: i32,
    },
    /// Code `c` stands for `table[c]` (a codebook: k-means centroids, powers of two,
    /// ±1, ...).
    Table(Vec<f32>),
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
        /// One zero point per group, in level units; empty means all zero.
        zero_points: Vec<f32>,
        /// Bits each scale is stored in (32 for f32, 16 for f16 scales).
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

/// A quantized tensor: its shape, its codes packed at their bit width, and the
/// [`Decoding`] that turns them back into values. Knows its exact storage.
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
        let mismatch = |what: &str, expected: usize, got: usize| Error::ShapeMismatch {
            what: what.to_string(),
            expected: vec![expected],
            got: vec![got],
        };
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
                if let Levels::Table(t) = levels
                    && t.len() < 1usize << codes.bits()
                    && codes.unpack().iter().any(|&c| c as usize >= t.len())
                {
                    return Err(Error::invalid(
                        "codes",
                        format!("a code ≥ {}", t.len()),
                        format!("codes below the codebook size {}", t.len()),
                    ));
                }
                if !matches!(scale_bits, 16 | 32) {
                    return Err(Error::invalid("scale_bits", scale_bits, "16 or 32"));
                }
                let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
                let table_ok = match levels {
                    Levels::Table(t) => !t.is_empty() && finite(t),
                    Levels::Integers { .. } => true,
                };
                if !finite(scales) || !finite(zero_points) || !table_ok {
                    return Err(Error::invalid(
                        "decoding",
                        "non-finite or empty",
                        "finite scales, zero points and levels",
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
                if codebooks.len() != subspaces * codewords * sub_dim {
                    return Err(mismatch(
                        "codebooks",
                        subspaces * codewords * sub_dim,
                        codebooks.len(),
                    ));
                }
                if codes.unpack().iter().any(|&c| c as usize >= *codewords) {
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
                    return Err(Error::ShapeMismatch {
                        what: "codebook".into(),
                        expected: vec![t.len()],
                        got: vec![table.len()],
                    });
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

    /// Exact storage in bits: codes, plus scales, zero points (at the code width) and
    /// codebooks (f32), everything needed to decode.
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
        self.codes.storage_bits() + params
    }

    /// Storage per element, in bits.
    pub fn bits_per_weight(&self) -> f64 {
        self.storage_bits() as f64 / self.len().max(1) as f64
    }

    /// The decoded values.
    pub fn dequantize<T: Scalar>(&self) -> ArrayD<T> {
        let mut out = vec![0f32; self.len()];
        self.dequantize_into(&mut out);
        let values = out.into_iter().map(|v| T::of(v as f64)).collect();
        ArrayD::from_shape_vec(IxDyn(&self.shape), values).expect("length matches the shape")
    }

    /// Decodes into an engine's buffer of [`QuantizedTensor::len`] elements.
    pub fn dequantize_into(&self, out: &mut [f32]) {
        assert_eq!(out.len(), self.len(), "output buffer length");
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
                // Tasks of whole runs, about 64 Ki elements each, decoded in parallel.
                let per_task = (65_536 / runs.run_len).max(1) * runs.run_len;
                out.par_chunks_mut(per_task)
                    .enumerate()
                    .for_each(|(t, chunk)| {
                        let mut codes = vec![0u8; runs.run_len];
                        for (r, run) in chunk.chunks_mut(runs.run_len).enumerate() {
                            let run_index = t * (per_task / runs.run_len) + r;
                            let g = runs.group(run_index);
                            let codes = &mut codes[..run.len()];
                            self.codes.unpack_into(run_index * runs.run_len, codes);
                            match levels {
                                Levels::Integers { min } => {
                                    dequantize_kernel(codes, scales[g], zero(g) - *min as f32, run)
                                }
                                Levels::Table(table) => {
                                    let (s, z) = (scales[g], zero(g));
                                    for (o, &c) in run.iter_mut().zip(codes.iter()) {
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
                    let c = codes[i] as usize;
                    let start = (j * codewords + c) * sub_dim;
                    chunk.copy_from_slice(&codebooks[start..start + sub_dim]);
                }
            }
        }
    }
}
