//! The straight path of a streamed GGUF output: a 16-bit tensor that one ggml quantizer
//! step selects, that the GGUF writer quantizes, or that is written as it is goes from
//! the bytes read to the bytes written, a piece of 4096 values at a time on every core:
//! no f32 copy of the tensor, no [`Model`](crate::Model), no quantized form and back.
//! The bytes, and the report rows with their squared errors summed in the same order,
//! are those of the general path (a test compares them); values the quantizer or the
//! writer refuses go the general path, which gives its error.

use std::io::{Seek, Write};

use half::{bf16, f16};
use rayon::prelude::*;

use super::sink::Sink;
use super::{Step, StreamFormat, Tensor};
use crate::error::Result;
use crate::io::gguf::GgufType;
use crate::kernels::half::{AsF32Block, CHUNK, halves};
use crate::model::DType;
use crate::pipeline::report::{ParamReport, written_row};
use crate::quant::GgmlFormat;
use crate::quant::ggml::{decode_piece, quantize_piece, scales_fit};
use crate::tensor::HalfFloat;

/// Values per task: the chunks `param_row` sums its squared errors over, so that the
/// sums are the same.
const TASK: usize = 1 << 16;

/// How a tensor goes straight to the output.
#[derive(Clone, Copy, Debug)]
pub(super) enum Straight {
    /// To `format`'s blocks; `by_step`: a step quantizes it (the report gives its
    /// error), else the GGUF writer does.
    Blocks { format: GgmlFormat, by_step: bool },
    /// As its 16-bit values (NaN made quiet, as the writer makes it).
    Copy,
}

/// How `t` goes straight to a `format` output, if it does: a GGUF output of a bf16 or
/// f16 tensor that one step selects, quantizing to a ggml format and nothing else, or
/// that no step selects.
pub(super) fn plan(t: &Tensor<'_>, steps: &[Step<'_>], format: StreamFormat) -> Option<Straight> {
    let StreamFormat::Gguf(options) = format else {
        return None;
    };
    if !matches!(t.dtype, DType::BF16 | DType::F16) {
        return None;
    }
    let shape = &t.entry.shape;
    let whole_blocks = |f: GgmlFormat| {
        shape
            .last()
            .is_some_and(|&row| row > 0 && row.is_multiple_of(f.block_len()))
            && shape.iter().all(|&d| d > 0)
    };
    let mut chosen = steps.iter().zip(&t.picked).filter(|(_, p)| **p);
    match (chosen.next(), chosen.next()) {
        (None, _) => match options.quantize {
            // As `Model::to_gguf` decides.
            Some(format) if shape.len() >= 2 && whole_blocks(format) => Some(Straight::Blocks {
                format,
                by_step: false,
            }),
            _ => Some(Straight::Copy),
        },
        (Some((s, _)), None) => {
            let format = s.step.ggml_format()?;
            whole_blocks(format).then_some(Straight::Blocks {
                format,
                by_step: true,
            })
        }
        _ => None,
    }
}

/// Writes a row chunk of `shape` of `t` (its bytes read in `bytes`) as `plan` says,
/// `out` a buffer for it: its report row with its squared error and norm, or `None` if
/// the general path must take it (values refused, or bytes not aligned for 16 bits).
pub(super) fn chunk<W: Write + Seek>(
    plan: Straight,
    t: &Tensor<'_>,
    shape: &[usize],
    bytes: &[u8],
    out: &mut Vec<u8>,
    sink: &mut Sink<'_, W>,
) -> Result<Option<(ParamReport, f64, f64)>> {
    let about = (t.entry.name.as_str(), t.kind, t.dtype);
    match plan {
        Straight::Blocks { format, by_step } => {
            let sums = match t.dtype {
                DType::BF16 => {
                    halves::<bf16>(bytes).and_then(|v| quantize(v, format, by_step, out))
                }
                DType::F16 => halves::<f16>(bytes).and_then(|v| quantize(v, format, by_step, out)),
                _ => None,
            };
            let Some((diff, norm, nonzeros)) = sums else {
                return Ok(None);
            };
            sink.gguf_data(t.entry, GgufType::Quant(format), out)?;
            let code_bits = format.code_bits().filter(|_| by_step);
            let mut row = written_row(about, shape, code_bits, out.len(), nonzeros);
            if !by_step {
                // As the sink says it for a tensor the writer quantized.
                row.form = format!("{format:?}, decoded from {}", row.form);
            }
            Ok(Some((row, diff, norm)))
        }
        Straight::Copy => {
            let (ty, quiet) = match t.dtype {
                DType::BF16 => (GgufType::BF16, 0x0040),
                DType::F16 => (GgufType::F16, 0x0200),
                _ => return Ok(None),
            };
            let nonzeros = copy_quieted(bytes, t.dtype, quiet, out);
            let data = if out.is_empty() { bytes } else { &out[..] };
            sink.gguf_data(t.entry, ty, data)?;
            let row = written_row(about, shape, None, bytes.len(), nonzeros);
            Ok(Some((row, 0.0, 0.0)))
        }
    }
}

/// Quantizes `values` (whole blocks) to `format`'s blocks in `out`: the squared error,
/// squared norm and non-zeros of the decoded values (`by_step`; only the values'
/// non-zeros else), or `None` for a value the quantizer refuses (non-finite, or with a
/// step over [`GgmlFormat::limit`]) or a block scale beyond f16.
fn quantize<H: HalfFloat>(
    values: &[H],
    format: GgmlFormat,
    by_step: bool,
    out: &mut Vec<u8>,
) -> Option<(f64, f64, usize)> {
    let (per, per_bytes) = (format.block_len(), format.block_bytes());
    out.clear();
    out.resize(values.len() / per * per_bytes, 0);
    let limit = if by_step {
        format.limit()
    } else {
        f32::INFINITY
    };
    let sums: Vec<Option<(f64, f64, usize)>> = values
        .par_chunks(TASK)
        .zip(out.par_chunks_mut(TASK / per * per_bytes))
        .map(|(x, out)| {
            let mut piece = Vec::with_capacity(CHUNK / per * per_bytes);
            let mut decoded = [0f32; CHUNK];
            let mut sums = (0f64, 0f64, 0usize);
            for (x, out) in x.chunks(CHUNK).zip(out.chunks_mut(CHUNK / per * per_bytes)) {
                H::with_f32(x, |x| {
                    if !x.iter().all(|v| v.is_finite() && v.abs() <= limit) {
                        return None;
                    }
                    piece.clear();
                    quantize_piece(x, format, &mut piece);
                    if !piece.chunks_exact(per_bytes).all(|b| scales_fit(b, format)) {
                        return None;
                    }
                    out.copy_from_slice(&piece);
                    if !by_step {
                        sums.2 += x.iter().filter(|&&v| v != 0.0).count();
                        return Some(());
                    }
                    let d = &mut decoded[..x.len()];
                    decode_piece(&piece, format, d)?;
                    // As `param_row` sums them: in order, in f64.
                    for (&a, &b) in x.iter().zip(d.iter()) {
                        sums.0 += (a as f64 - b as f64).powi(2);
                        sums.1 += (a as f64).powi(2);
                        sums.2 += (b != 0.0) as usize;
                    }
                    Some(())
                })?;
            }
            Some(sums)
        })
        .collect();
    sums.into_iter().try_fold((0.0, 0.0, 0), |a, s| {
        s.map(|s| (a.0 + s.0, a.1 + s.1, a.2 + s.2))
    })
}

/// The non-zeros of the 16-bit values in `bytes`; if any is a NaN, `out` holds them with
/// NaN made quiet (`quiet`: the type's quiet bit), as widening to f32 and narrowing back
/// makes it; else `out` is left empty.
fn copy_quieted(bytes: &[u8], dtype: DType, quiet: u16, out: &mut Vec<u8>) -> usize {
    let inf = match dtype {
        DType::BF16 => 0x7F80,
        _ => 0x7C00,
    };
    let value = |c: &[u8]| u16::from_le_bytes([c[0], c[1]]) & 0x7FFF;
    let (nonzeros, nan) = bytes
        .par_chunks(2 * TASK)
        .map(|c| {
            c.chunks_exact(2).fold((0usize, false), |(n, nan), c| {
                let v = value(c);
                (n + (v != 0) as usize, nan || v > inf)
            })
        })
        .reduce(|| (0, false), |a, b| (a.0 + b.0, a.1 || b.1));
    out.clear();
    if nan {
        out.extend(bytes.chunks_exact(2).flat_map(|c| {
            let bits = u16::from_le_bytes([c[0], c[1]]);
            let bits = if value(c) > inf { bits | quiet } else { bits };
            bits.to_le_bytes()
        }));
    }
    nonzeros
}
