//! llama.cpp's block formats Q8_0 and Q4_0 ([`GgmlQuantizer`]), bit-exact with ggml's
//! reference quantizers, and conversion to and from their block bytes.

mod reference;

use half::f16;
use ndarray::{ArrayRef, IxDyn};
use rayon::prelude::*;

use self::reference::{Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, QK, quantize_q4_0, quantize_q8_0};
use super::binary::prepare;
use super::{Decoding, Granularity, Levels, PackedCodes, QuantContext, QuantizedTensor, Quantizer};
use crate::error::{Error, Result};
use crate::tensor::Scalar;

/// A ggml block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlFormat {
    /// Blocks of 32: an f16 scale `amax/127` and 32 signed bytes; 8.5 bits per weight.
    Q8_0,
    /// Blocks of 32: an f16 scale `max/−8` and 32 nibbles (`(q − 8)·d`); 4.5 bits per weight.
    Q4_0,
}

impl GgmlFormat {
    fn block_bytes(self) -> usize {
        match self {
            GgmlFormat::Q8_0 => Q8_0_BLOCK_BYTES,
            GgmlFormat::Q4_0 => Q4_0_BLOCK_BYTES,
        }
    }

    /// Code width and the levels of codes 0 and 2^bits − 1.
    fn grid(self) -> (u8, i32, i32) {
        match self {
            GgmlFormat::Q8_0 => (8, -128, 127),
            GgmlFormat::Q4_0 => (4, -8, 7),
        }
    }
}

/// Quantizes to llama.cpp's Q8_0 or Q4_0, giving exactly the bytes ggml's
/// `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref` give (checked against the Python
/// `gguf` package's implementation, committed as a fixture). Rows must be a multiple
/// of 32 long. The result is an ordinary [`QuantizedTensor`] (per-group scales of 16
/// bits); [`to_ggml_blocks`] writes it in ggml's layout for a GGUF file.
///
/// ```
/// use ndarray::Array;
/// use slimnn::quant::{GgmlFormat, GgmlQuantizer, QuantContext, Quantizer, to_ggml_blocks};
///
/// let w = Array::from_shape_fn(ndarray::IxDyn(&[4, 64]), |i| (i[0] as f32 - 1.5) * (i[1] as f32).cos());
/// let q = GgmlQuantizer::new(GgmlFormat::Q4_0).quantize(&w, &QuantContext::new())?;
/// assert_eq!(q.bits_per_weight(), 4.5);
/// assert_eq!(to_ggml_blocks(&q, GgmlFormat::Q4_0)?.len(), 8 * 18);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlQuantizer {
    format: GgmlFormat,
}

impl GgmlQuantizer {
    /// A quantizer to `format`.
    pub fn new(format: GgmlFormat) -> Self {
        GgmlQuantizer { format }
    }
}

impl<T: Scalar> Quantizer<T> for GgmlQuantizer {
    /// `"ggml Q8_0"` or `"ggml Q4_0"`.
    fn describe(&self) -> String {
        format!("ggml {:?}", self.format)
    }

    fn quantize(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        let (values, _) = prepare(weights, Granularity::PerGroup { size: QK }, ctx)?;
        let limit = match self.format {
            GgmlFormat::Q8_0 => 127.0 * 65504.0,
            GgmlFormat::Q4_0 => 8.0 * 65504.0,
        };
        if let Some(i) = values.iter().position(|v| v.abs() > limit) {
            return Err(Error::invalid(
                "weights",
                format!("{} at index {i}", values[i]),
                format!("|w| ≤ {limit} so the block scale fits in f16"),
            ));
        }
        let format = self.format;
        let blocks: Vec<u8> = values
            .par_chunks(QK * 1024)
            .flat_map_iter(|x| {
                let mut out = Vec::with_capacity(x.len() / QK * format.block_bytes());
                match format {
                    GgmlFormat::Q8_0 => quantize_q8_0(x, &mut out),
                    GgmlFormat::Q4_0 => quantize_q4_0(x, &mut out),
                }
                out
            })
            .collect();
        from_ggml_blocks(&blocks, weights.shape(), format)
    }
}

/// A quantized tensor from ggml block bytes (e.g. a GGUF tensor's data) of `shape`.
pub fn from_ggml_blocks(
    blocks: &[u8],
    shape: &[usize],
    format: GgmlFormat,
) -> Result<QuantizedTensor> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::bad_shape("ggml tensor", shape, "element count overflows"))?;
    super::scheme::Runs::new(shape, Granularity::PerGroup { size: QK })?;
    let per = format.block_bytes();
    if blocks.len() != n / QK * per {
        return Err(Error::invalid(
            "blocks",
            format!("{} bytes", blocks.len()),
            format!("{} bytes: {} blocks of {per}", n / QK * per, n / QK),
        ));
    }
    let (bits, min, max) = format.grid();
    let mut scales = Vec::with_capacity(n / QK);
    let mut codes = Vec::with_capacity(n);
    for block in blocks.chunks_exact(per) {
        scales.push(f16::from_le_bytes([block[0], block[1]]).to_f32());
        let qs = &block[2..];
        match format {
            GgmlFormat::Q8_0 => codes.extend(qs.iter().map(|&q| (q as i8 as i32 - min) as u8)),
            GgmlFormat::Q4_0 => {
                codes.extend(qs.iter().map(|q| q & 0x0F));
                codes.extend(qs.iter().map(|q| q >> 4));
            }
        }
    }
    QuantizedTensor::new(
        shape,
        PackedCodes::pack(&codes, bits)?,
        Decoding::Scalar {
            levels: Levels::Integers { min, max },
            granularity: Granularity::PerGroup { size: QK },
            scales,
            zero_points: Vec::new(),
            scale_bits: 16,
        },
    )
}

/// The tensor in ggml's block layout, if it is in `format`'s form: 32-element groups,
/// f16-exact scales, the format's code width and levels.
pub fn to_ggml_blocks(q: &QuantizedTensor, format: GgmlFormat) -> Result<Vec<u8>> {
    let (bits, min, max) = format.grid();
    let scales = match q.decoding() {
        Decoding::Scalar {
            levels: Levels::Integers { min: m, max: top },
            granularity: Granularity::PerGroup { size: QK },
            scales,
            zero_points,
            ..
        } if *m == min && *top == max && zero_points.is_empty() && q.codes().bits() == bits => {
            scales
        }
        _ => {
            return Err(Error::invalid(
                "quantized tensor",
                "another scheme",
                format!(
                    "{format:?}'s form (groups of 32, {bits}-bit codes from level {min}, no zero points)"
                ),
            ));
        }
    };
    if let Some(s) = scales.iter().find(|&&s| f16::from_f32(s).to_f32() != s) {
        return Err(Error::invalid(
            "scale",
            s,
            "a scale exactly representable in f16",
        ));
    }
    let codes = q.codes().unpack();
    let mut out = Vec::with_capacity(scales.len() * format.block_bytes());
    for (&s, c) in scales.iter().zip(codes.chunks_exact(QK)) {
        out.extend_from_slice(&f16::from_f32(s).to_le_bytes());
        match format {
            GgmlFormat::Q8_0 => out.extend(c.iter().map(|&c| (c as i32 + min) as i8 as u8)),
            GgmlFormat::Q4_0 => out.extend((0..QK / 2).map(|j| c[j] | c[j + QK / 2] << 4)),
        }
    }
    Ok(out)
}
