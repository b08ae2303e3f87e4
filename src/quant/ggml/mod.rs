//! llama.cpp's block formats Q8_0, Q4_0 and the k-quants Q4_K, Q6_K ([`GgmlQuantizer`],
//! [`quantize_ggml`], [`dequantize_ggml`]), bit-exact with ggml's reference quantizers,
//! and conversion to and from their block bytes.

mod kquants;
mod reference;

use half::f16;
use ndarray::{ArrayRef, IxDyn};
use rayon::prelude::*;

use self::kquants::{
    Q4_K_BLOCK_BYTES, Q6_K_BLOCK_BYTES, QK_K, dequantize_q4_k, dequantize_q6_k, q6_k_from_parts,
    q6_k_parts, quantize_q4_k, quantize_q6_k,
};
pub(crate) use self::reference::QK;
use self::reference::{
    Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, inverse_or_zero, q4_0_scale, q8_0_scale, quant4, quant8,
    quantize_q4_0, quantize_q8_0,
};
use super::binary::prepare;
use super::{Decoding, Granularity, Levels, PackedCodes, QuantContext, QuantizedTensor, Quantizer};
use crate::error::{Error, Result};
use crate::kernels::half::{AsF32Block, CHUNK, for_each_chunk};
use crate::tensor::{HalfFloat, HalfSlice, Scalar, check_nonempty};

/// A ggml block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlFormat {
    /// Blocks of 32: an f16 scale `amax/127` and 32 signed bytes; 8.5 bits per weight.
    Q8_0,
    /// Blocks of 32: an f16 scale `max/−8` and 32 nibbles (`(q − 8)·d`); 4.5 bits per weight.
    Q4_0,
    /// k-quant super-blocks of 256: f16 `d` and `dmin`, 6-bit scale and min per 32
    /// values, 4-bit quants (`(d·sc)·q − dmin·m`); 4.5 bits per weight.
    #[allow(non_camel_case_types)]
    Q4_K,
    /// k-quant super-blocks of 256: 6-bit quants, an `i8` scale per 16 values and an f16
    /// `d` (`(d·sc)·(q − 32)`); 6.5625 bits per weight.
    #[allow(non_camel_case_types)]
    Q6_K,
}

impl GgmlFormat {
    /// Bytes of one block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlFormat::Q8_0 => Q8_0_BLOCK_BYTES,
            GgmlFormat::Q4_0 => Q4_0_BLOCK_BYTES,
            GgmlFormat::Q4_K => Q4_K_BLOCK_BYTES,
            GgmlFormat::Q6_K => Q6_K_BLOCK_BYTES,
        }
    }

    /// Values per block: 32, or 256 for the k-quants. A GGUF tensor's rows (its
    /// innermost dimension) must be a multiple of it.
    pub fn block_len(self) -> usize {
        match self {
            GgmlFormat::Q8_0 | GgmlFormat::Q4_0 => QK,
            GgmlFormat::Q4_K | GgmlFormat::Q6_K => QK_K,
        }
    }

    /// The largest |w| [`GgmlQuantizer`] accepts: one whose block scale fits in f16.
    pub(crate) fn limit(self) -> f32 {
        match self {
            GgmlFormat::Q8_0 => 127.0 * 65504.0,
            GgmlFormat::Q4_0 => 8.0 * 65504.0,
            _ => 32.0 * 65504.0,
        }
    }

    /// The code width of its [`QuantizedTensor`] form (`None` for Q4_K, which has none).
    pub(crate) fn code_bits(self) -> Option<u8> {
        self.grid().map(|(bits, ..)| bits)
    }

    /// Code width, the levels of codes 0 and 2^bits − 1, and the scale group size of
    /// the [`QuantizedTensor`] form (`None`: no such form, Q4_K's offsets are not).
    pub(crate) fn grid(self) -> Option<(u8, i32, i32, usize)> {
        match self {
            GgmlFormat::Q8_0 => Some((8, -128, 127, QK)),
            GgmlFormat::Q4_0 => Some((4, -8, 7, QK)),
            GgmlFormat::Q6_K => Some((6, -32, 31, 16)),
            GgmlFormat::Q4_K => None,
        }
    }
}

/// Checks that `n` values of rows `row` long fill whole blocks of `format`.
fn check_blocks(shape: &[usize], format: GgmlFormat) -> Result<usize> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::bad_shape("ggml tensor", shape, "element count overflows"))?;
    let row = shape.last().copied().unwrap_or(1);
    if n > 0 && !row.is_multiple_of(format.block_len()) {
        return Err(Error::bad_shape(
            format!("{format:?} tensor"),
            shape,
            format!(
                "rows (the last dimension) must be a multiple of {} for {format:?}",
                format.block_len()
            ),
        ));
    }
    Ok(n)
}

/// Quantizes `values` (row-major, of `shape`) to `format`'s block bytes, exactly as
/// ggml's reference quantizer (`quantize_row_*_ref`) does. Rows (the last dimension)
/// must be a multiple of [`GgmlFormat::block_len`]; values must be finite.
///
/// ```
/// use slimnn::quant::{GgmlFormat, dequantize_ggml, quantize_ggml};
///
/// let w: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin()).collect();
/// let blocks = quantize_ggml(&w, &[2, 256], GgmlFormat::Q4_K)?;
/// assert_eq!(blocks.len(), 2 * 144);
/// let back = dequantize_ggml(&blocks, &[2, 256], GgmlFormat::Q4_K)?;
/// assert!(w.iter().zip(&back).all(|(a, b)| (a - b).abs() < 0.2));
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn quantize_ggml(values: &[f32], shape: &[usize], format: GgmlFormat) -> Result<Vec<u8>> {
    quantize_blocks(values, shape, format)
}

/// [`quantize_ggml`] reading 16-bit values (`half::f16` or `half::bf16`) directly, a
/// block of 4096 at a time (no f32 copy of the tensor): the same bytes as
/// `quantize_ggml` of the values widened to f32.
///
/// ```
/// use slimnn::half::bf16;
/// use slimnn::quant::{GgmlFormat, quantize_ggml, quantize_ggml_half};
///
/// let w: Vec<bf16> = (0..256).map(|i| bf16::from_f32((i as f32 * 0.37).sin())).collect();
/// let wide: Vec<f32> = w.iter().map(|x| x.to_f32()).collect();
/// assert_eq!(
///     quantize_ggml_half(&w, &[2, 128], GgmlFormat::Q4_0)?,
///     quantize_ggml(&wide, &[2, 128], GgmlFormat::Q4_0)?
/// );
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn quantize_ggml_half<H: HalfFloat>(
    values: &[H],
    shape: &[usize],
    format: GgmlFormat,
) -> Result<Vec<u8>> {
    quantize_blocks(values, shape, format)
}

fn quantize_blocks<E: AsF32Block>(
    values: &[E],
    shape: &[usize],
    format: GgmlFormat,
) -> Result<Vec<u8>> {
    let n = check_blocks(shape, format)?;
    if values.len() != n {
        return Err(Error::ShapeMismatch {
            what: "values (one per element)".into(),
            expected: vec![n],
            got: vec![values.len()],
        });
    }
    let per = format.block_len();
    let per_bytes = format.block_bytes();
    let mut blocks = vec![0u8; n / per * per_bytes];
    // Tasks of CHUNK values (a multiple of every block length) each widen into their own
    // stack buffer when the input is 16-bit.
    let finite = blocks
        .par_chunks_mut(CHUNK / per * per_bytes)
        .zip(values.par_chunks(CHUNK))
        .try_for_each(|(out, x)| {
            E::with_f32(x, |x| {
                if !x.iter().all(|v| v.is_finite()) {
                    return Err(());
                }
                let mut o = Vec::with_capacity(out.len());
                quantize_piece(x, format, &mut o);
                out.copy_from_slice(&o);
                Ok(())
            })
        });
    if finite.is_err() {
        let i = values
            .iter()
            .position(|v| !v.to_f32().is_finite())
            .unwrap_or(0);
        return Err(Error::NonFinite {
            what: format!("{format:?} input"),
            index: i,
            value: values[i].to_f32() as f64,
        });
    }
    if let Some(b) = blocks
        .chunks_exact(per_bytes)
        .position(|b| !scales_fit(b, format))
    {
        return Err(Error::Overflow {
            what: format!(
                "{format:?} quantization of values {}..{}",
                b * per,
                (b + 1) * per
            ),
            reason: "a block scale exceeds f16's range (65504); scale the weights down".into(),
        });
    }
    Ok(blocks)
}

/// Appends the blocks of `x` (whole blocks of `format`) to `out`: ggml's reference
/// quantizer, as [`quantize_ggml`] runs it on each piece.
pub(crate) fn quantize_piece(x: &[f32], format: GgmlFormat, out: &mut Vec<u8>) {
    match format {
        GgmlFormat::Q8_0 => quantize_q8_0(x, out),
        GgmlFormat::Q4_0 => quantize_q4_0(x, out),
        GgmlFormat::Q4_K => quantize_q4_k(x, out),
        GgmlFormat::Q6_K => quantize_q6_k(x, out),
    }
}

/// Whether the f16 scales of `block` (one block of `format`) are finite, as
/// [`quantize_ggml`] requires (Q6_K's is last; Q4_K has d and dmin first).
pub(crate) fn scales_fit(block: &[u8], format: GgmlFormat) -> bool {
    let scale_at: &[usize] = match format {
        GgmlFormat::Q8_0 | GgmlFormat::Q4_0 => &[0],
        GgmlFormat::Q4_K => &[0, 2],
        GgmlFormat::Q6_K => &[Q6_K_BLOCK_BYTES - 2],
    };
    scale_at
        .iter()
        .all(|&at| f16::from_le_bytes([block[at], block[at + 1]]).is_finite())
}

/// Decodes whole blocks of `format` into `out` (one value per element) exactly as the
/// [`QuantizedTensor`] form [`from_ggml_blocks`] gives decodes them: `(q − offset)·d`.
/// `None` for Q4_K, which has no such form.
pub(crate) fn decode_piece(blocks: &[u8], format: GgmlFormat, out: &mut [f32]) -> Option<()> {
    let (_, min, _, _) = format.grid()?;
    let offset = -(min as f32);
    match format {
        GgmlFormat::Q6_K => dequantize_q6_k(blocks, out),
        _ => {
            for (b, o) in blocks
                .chunks_exact(format.block_bytes())
                .zip(out.chunks_exact_mut(QK))
            {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let qs = &b[2..];
                if format == GgmlFormat::Q4_0 {
                    let (lo, hi) = o.split_at_mut(QK / 2);
                    for ((l, h), &q) in lo.iter_mut().zip(hi).zip(qs) {
                        *l = ((q & 0x0F) as f32 - offset) * d;
                        *h = ((q >> 4) as f32 - offset) * d;
                    }
                } else {
                    for (o, &q) in o.iter_mut().zip(qs) {
                        *o = ((q as i8 as i32 - min) as f32 - offset) * d;
                    }
                }
            }
        }
    }
    Some(())
}

/// Decodes `format`'s block bytes of a tensor of `shape` to f32, bit for bit as the
/// Python `gguf` package's `gguf.quants.dequantize` does.
pub fn dequantize_ggml(blocks: &[u8], shape: &[usize], format: GgmlFormat) -> Result<Vec<f32>> {
    let n = check_blocks(shape, format)?;
    let want = n / format.block_len() * format.block_bytes();
    if blocks.len() != want {
        return Err(Error::invalid(
            "blocks",
            format!("{} bytes", blocks.len()),
            format!("{want} bytes of {format:?} blocks for {n} values"),
        ));
    }
    let mut out = vec![0f32; n];
    match format {
        GgmlFormat::Q4_K => dequantize_q4_k(blocks, &mut out),
        GgmlFormat::Q6_K => dequantize_q6_k(blocks, &mut out),
        GgmlFormat::Q8_0 | GgmlFormat::Q4_0 => {
            let q = from_ggml_blocks(blocks, shape, format)?;
            q.dequantize_into(&mut out)?;
        }
    }
    Ok(out)
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

impl GgmlQuantizer {
    /// Fails for Q4_K, which has no [`QuantizedTensor`] form.
    fn check_format(&self) -> Result<()> {
        if self.format == GgmlFormat::Q4_K {
            return Err(Error::invalid(
                "ggml format",
                "Q4_K",
                "Q8_0, Q4_0 or Q6_K: Q4_K's per-32 offsets have no QuantizedTensor form; \
                 write Q4_K through quantize_ggml or GGUF output",
            ));
        }
        Ok(())
    }

    fn over_limit(&self, i: usize, v: f32) -> Error {
        Error::invalid(
            "weights",
            format!("{v} at index {i}"),
            format!(
                "|w| ≤ {} so the block scale fits in f16",
                self.format.limit()
            ),
        )
    }

    /// [`Quantizer::quantize`] reading 16-bit weights a block at a time: the same checks
    /// in the same order, and the same result, as for the widened values.
    fn quantize_half<H: HalfFloat>(
        &self,
        weights: &[H],
        shape: &[usize],
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        self.check_format()?;
        crate::tensor::view(weights, shape)?;
        check_blocks(shape, self.format)?;
        check_nonempty(shape, || ctx.what())?;
        let limit = self.format.limit();
        let mut over = None;
        for_each_chunk(weights, |off, c| {
            for (i, &v) in c.iter().enumerate() {
                if !v.is_finite() {
                    return Err(Error::NonFinite {
                        what: ctx.what(),
                        index: off + i,
                        value: v as f64,
                    });
                }
                if over.is_none() && v.abs() > limit {
                    over = Some((off + i, v));
                }
            }
            Ok(())
        })?;
        if let Some((i, v)) = over {
            return Err(self.over_limit(i, v));
        }
        let blocks = quantize_ggml_half(weights, shape, self.format)?;
        from_ggml_blocks(&blocks, shape, self.format)
    }
}

impl<T: Scalar> Quantizer<T> for GgmlQuantizer {
    /// `"ggml Q8_0"`, `"ggml Q4_0"` or `"ggml Q6_K"`.
    fn describe(&self) -> String {
        format!("ggml {:?}", self.format)
    }

    /// Blocks run along rows: always.
    fn rows_independent(&self) -> bool {
        true
    }

    /// Its format, but for Q4_K (which it refuses).
    fn ggml_format(&self) -> Option<GgmlFormat> {
        self.check_format().ok().map(|()| self.format)
    }

    fn quantize(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        let format = self.format;
        self.check_format()?;
        check_blocks(weights.shape(), format)?;
        let (values, _) = prepare(
            weights,
            Granularity::PerGroup {
                size: format.block_len(),
            },
            ctx,
        )?;
        let limit = self.format.limit();
        if let Some(i) = values.iter().position(|v| v.abs() > limit) {
            return Err(self.over_limit(i, values[i]));
        }
        let blocks = quantize_ggml(&values, weights.shape(), format)?;
        from_ggml_blocks(&blocks, weights.shape(), format)
    }

    /// Reads the 16-bit values a block at a time (no f32 copy of the tensor).
    fn quantize_half_hook(
        &self,
        weights: HalfSlice<'_>,
        shape: &[usize],
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        match weights {
            HalfSlice::F16(w) => self.quantize_half(w, shape, ctx),
            HalfSlice::Bf16(w) => self.quantize_half(w, shape, ctx),
        }
    }
}

/// A quantized tensor from ggml block bytes (e.g. a GGUF tensor's data) of `shape`.
/// Q8_0, Q4_0 and Q6_K have such a form (Q6_K: a scale `d·sc` per 16 values, 6-bit
/// codes); Q4_K does not (use [`dequantize_ggml`]).
pub fn from_ggml_blocks(
    blocks: &[u8],
    shape: &[usize],
    format: GgmlFormat,
) -> Result<QuantizedTensor> {
    let n = check_blocks(shape, format)?;
    let Some((_, min, _, group)) = format.grid() else {
        return Err(Error::invalid(
            "ggml format",
            "Q4_K",
            "Q8_0, Q4_0 or Q6_K (Q4_K has no QuantizedTensor form; use dequantize_ggml)",
        ));
    };
    super::scheme::Runs::new(shape, Granularity::PerGroup { size: group })?;
    let per = format.block_bytes();
    let count = n / format.block_len();
    if blocks.len() != count * per {
        return Err(Error::invalid(
            "blocks",
            format!("{} bytes", blocks.len()),
            format!("{} bytes: {count} blocks of {per}", count * per),
        ));
    }
    let (scales, codes) = if format == GgmlFormat::Q6_K {
        q6_k_parts(blocks)
    } else {
        let mut scales = Vec::with_capacity(count);
        let mut codes = Vec::with_capacity(n);
        for block in blocks.chunks_exact(per) {
            scales.push(f16::from_le_bytes([block[0], block[1]]).to_f32());
            let qs = &block[2..];
            match format {
                GgmlFormat::Q4_0 => {
                    codes.extend(qs.iter().map(|q| q & 0x0F));
                    codes.extend(qs.iter().map(|q| q >> 4));
                }
                _ => codes.extend(qs.iter().map(|&q| (q as i8 as i32 - min) as u8)),
            }
        }
        (scales, codes)
    };
    block_form(shape, &codes, scales, format)
}

/// The [`QuantizedTensor`] form of `format` (not Q4_K) from its codes (level − lowest
/// level, row-major) and one scale per group: what [`from_ggml_blocks`] gives.
pub(crate) fn block_form(
    shape: &[usize],
    codes: &[u8],
    scales: Vec<f32>,
    format: GgmlFormat,
) -> Result<QuantizedTensor> {
    let Some((bits, min, max, group)) = format.grid() else {
        return Err(Error::invalid(
            "ggml format",
            "Q4_K",
            "Q8_0, Q4_0 or Q6_K (Q4_K has no QuantizedTensor form)",
        ));
    };
    QuantizedTensor::new(
        shape,
        PackedCodes::pack(codes, bits)?,
        Decoding::Scalar {
            levels: Levels::Integers { min, max },
            granularity: Granularity::PerGroup { size: group },
            scales,
            zero_points: Vec::new(),
            scale_bits: if format == GgmlFormat::Q6_K { 32 } else { 16 },
        },
    )
}

/// The f32 scale ggml's reference quantizer takes for a block of Q8_0 (`amax/127`) or
/// Q4_0 (`max/−8`), before the block stores it as f16; `None` for the k-quants.
pub(crate) fn block_scale(format: GgmlFormat, block: &[f32; QK]) -> Option<f32> {
    match format {
        GgmlFormat::Q8_0 => Some(q8_0_scale(block)),
        GgmlFormat::Q4_0 => Some(q4_0_scale(block)),
        GgmlFormat::Q4_K | GgmlFormat::Q6_K => None,
    }
}

/// The code (level − lowest level, as in the [`QuantizedTensor`] form) of `x` in a Q8_0
/// (`roundf(x/d)` in −127..=127) or Q4_0 (`min(15, (x/d + 8.5) as int)`) block of scale
/// `d`, by ggml's reference rounding; Q8_0's for any other format.
pub(crate) fn block_code(format: GgmlFormat, x: f32, d: f32) -> u8 {
    let y = x * inverse_or_zero(d);
    match format {
        GgmlFormat::Q4_0 => quant4(y),
        _ => (quant8(y) as i32 + 128) as u8,
    }
}

/// The tensor in ggml's block layout, if it is in `format`'s form: 32-element groups,
/// f16-exact scales, the format's code width and levels.
pub fn to_ggml_blocks(q: &QuantizedTensor, format: GgmlFormat) -> Result<Vec<u8>> {
    let Some((bits, min, max, group)) = format.grid() else {
        return Err(Error::invalid(
            "ggml format",
            "Q4_K",
            "Q8_0, Q4_0 or Q6_K (Q4_K has no QuantizedTensor form)",
        ));
    };
    let wrong = || {
        Error::invalid(
            "quantized tensor",
            "another scheme",
            format!(
                "{format:?}'s form (groups of {group}, {bits}-bit codes from level {min}, no zero points)"
            ),
        )
    };
    let scales = match q.decoding() {
        Decoding::Scalar {
            levels: Levels::Integers { min: m, max: top },
            granularity: Granularity::PerGroup { size },
            scales,
            zero_points,
            ..
        } if *m == min
            && *top == max
            && *size == group
            && zero_points.is_empty()
            && q.codes().bits() == bits =>
        {
            scales
        }
        _ => return Err(wrong()),
    };
    check_blocks(q.shape(), format)?;
    if format == GgmlFormat::Q6_K {
        return q6_k_from_parts(scales, &q.codes().unpack()).ok_or_else(|| {
            Error::invalid(
                "scales",
                "not of the form d·sc",
                "per super-block an f16 d times i8 multipliers",
            )
        });
    }
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
            GgmlFormat::Q4_0 => out.extend((0..QK / 2).map(|j| c[j] | c[j + QK / 2] << 4)),
            _ => out.extend(c.iter().map(|&c| (c as i32 + min) as i8 as u8)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pieces_decode_as_the_quantized_form(
            x in prop::collection::vec(-3.0f32..3.0, 512),
            scale in -20i32..15,
        ) {
            let x: Vec<f32> = x.iter().map(|v| v * 2f32.powi(scale)).collect();
            for format in [GgmlFormat::Q8_0, GgmlFormat::Q4_0, GgmlFormat::Q6_K] {
                let mut blocks = Vec::new();
                quantize_piece(&x, format, &mut blocks);
                prop_assert_eq!(&blocks, &quantize_ggml(&x, &[2, 256], format).unwrap());
                let mut decoded = vec![0f32; x.len()];
                prop_assert!(decode_piece(&blocks, format, &mut decoded).is_some());
                let form = from_ggml_blocks(&blocks, &[2, 256], format).unwrap();
                let expected = form.dequantize::<f32>();
                let same = decoded
                    .iter()
                    .zip(expected.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                prop_assert!(same, "{:?}", format);
            }
            prop_assert!(decode_piece(&[], GgmlFormat::Q4_K, &mut []).is_none());
        }
    }
}
