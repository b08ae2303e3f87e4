//! The [`Decoding`] of a quantized tensor and the [`Factorization`] of a low-rank one,
//! as bytes.

use half::f16;
use ndarray::{Array2, Array4};

use super::bytes::{Reader, Writer};
use crate::error::Result;
use crate::lowrank::{Factorization, Factors};
use crate::nn::ConvSpec;
use crate::quant::{Decoding, Granularity, Levels};

pub(crate) fn write_decoding(w: &mut Writer, d: &Decoding) {
    match d {
        Decoding::Scalar {
            levels,
            granularity,
            scales,
            zero_points,
            scale_bits,
        } => {
            w.u8(0);
            match levels {
                Levels::Integers { min, max } => {
                    w.u8(0);
                    w.u32(*min as u32);
                    w.u32(*max as u32);
                }
                Levels::Table(t) => {
                    w.u8(1);
                    w.f32s(t);
                }
            }
            match granularity {
                Granularity::PerTensor => w.u8(0),
                Granularity::PerChannel { axis } => {
                    w.u8(1);
                    w.usize(*axis);
                }
                Granularity::PerGroup { size } => {
                    w.u8(2);
                    w.usize(*size);
                }
            }
            w.u8(*scale_bits);
            w.usize(scales.len());
            for &s in scales {
                if *scale_bits == 16 {
                    w.bytes.extend_from_slice(&f16::from_f32(s).to_le_bytes());
                } else {
                    w.bytes.extend_from_slice(&s.to_le_bytes());
                }
            }
            // Zero points are integers in level units for uniform grids: one byte each
            // when they fit, as their code-width storage count assumes.
            let small = zero_points
                .iter()
                .all(|&z| z.fract() == 0.0 && (0.0..=255.0).contains(&z));
            w.u8(small as u8);
            w.usize(zero_points.len());
            for &z in zero_points {
                if small {
                    w.u8(z as u8);
                } else {
                    w.bytes.extend_from_slice(&z.to_le_bytes());
                }
            }
        }
        Decoding::Product {
            sub_dim,
            codewords,
            codebooks,
        } => {
            w.u8(1);
            w.usize(*sub_dim);
            w.usize(*codewords);
            w.f32s(codebooks);
        }
    }
}

pub(crate) fn read_decoding(r: &mut Reader<'_>) -> Result<Decoding> {
    match r.u8()? {
        0 => {
            let levels = match r.u8()? {
                0 => Levels::Integers {
                    min: r.u32()? as i32,
                    max: r.u32()? as i32,
                },
                1 => Levels::Table(r.f32s()?),
                t => return Err(r.error(format!("unknown levels tag {t}"))),
            };
            let granularity = match r.u8()? {
                0 => Granularity::PerTensor,
                1 => Granularity::PerChannel { axis: r.usize()? },
                2 => Granularity::PerGroup { size: r.usize()? },
                t => return Err(r.error(format!("unknown granularity tag {t}"))),
            };
            let scale_bits = r.u8()?;
            let scales = match scale_bits {
                16 => {
                    let n = r.count(2)?;
                    let raw = r.take(2 * n)?;
                    raw.chunks_exact(2)
                        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect()
                }
                32 => {
                    let n = r.count(4)?;
                    let raw = r.take(4 * n)?;
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                }
                b => return Err(r.error(format!("scales of {b} bits"))),
            };
            let small = r.u8()? == 1;
            let zero_points = if small {
                let n = r.count(1)?;
                r.take(n)?.iter().map(|&z| z as f32).collect()
            } else {
                let n = r.count(4)?;
                r.take(4 * n)?
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            Ok(Decoding::Scalar {
                levels,
                granularity,
                scales,
                zero_points,
                scale_bits,
            })
        }
        1 => Ok(Decoding::Product {
            sub_dim: r.usize()?,
            codewords: r.usize()?,
            codebooks: r.f32s()?,
        }),
        t => Err(r.error(format!("unknown decoding tag {t}"))),
    }
}

fn write_array(w: &mut Writer, shape: &[usize], values: impl Iterator<Item = f32>) {
    w.dims(shape);
    for v in values {
        w.bytes.extend_from_slice(&v.to_le_bytes());
    }
}

fn read_values(r: &mut Reader<'_>, shape: &[usize]) -> Result<Vec<f32>> {
    let n: usize = shape.iter().product();
    if n.saturating_mul(4) > r.remaining() {
        return Err(r.error(format!("a factor of shape {shape:?} does not fit")));
    }
    Ok(r.take(4 * n)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn read_array2(r: &mut Reader<'_>) -> Result<Array2<f32>> {
    let shape = r.dims()?;
    let [a, b] = shape[..] else {
        return Err(r.error(format!("a 2-D factor has shape {shape:?}")));
    };
    let v = read_values(r, &shape)?;
    Array2::from_shape_vec((a, b), v).map_err(|e| r.error(e.to_string()))
}

fn read_array4(r: &mut Reader<'_>) -> Result<Array4<f32>> {
    let shape = r.dims()?;
    let [a, b, c, d] = shape[..] else {
        return Err(r.error(format!("a 4-D factor has shape {shape:?}")));
    };
    let v = read_values(r, &shape)?;
    Array4::from_shape_vec((a, b, c, d), v).map_err(|e| r.error(e.to_string()))
}

fn write2(w: &mut Writer, a: &Array2<f32>) {
    write_array(w, a.shape(), a.iter().copied());
}

fn write4(w: &mut Writer, a: &Array4<f32>) {
    write_array(w, a.shape(), a.iter().copied());
}

pub(crate) fn write_factorization(w: &mut Writer, f: &Factorization) {
    let spec = f.conv_spec();
    w.usize(spec.stride.0);
    w.usize(spec.stride.1);
    w.usize(spec.padding.0);
    w.usize(spec.padding.1);
    w.f64(f.relative_error().unwrap_or(f64::NAN));
    match f.factors() {
        Factors::Linear { a, b } => {
            w.u8(0);
            write2(w, a);
            write2(w, b);
        }
        Factors::Tucker2 { u_out, core, u_in } => {
            w.u8(1);
            write2(w, u_out);
            write4(w, core);
            write2(w, u_in);
        }
        Factors::Cp {
            out,
            input,
            rows,
            cols,
        } => {
            w.u8(2);
            for a in [out, input, rows, cols] {
                write2(w, a);
            }
        }
        Factors::Separable {
            vertical,
            horizontal,
        } => {
            w.u8(3);
            write4(w, vertical);
            write4(w, horizontal);
        }
        Factors::DepthwiseSeparable {
            depthwise,
            pointwise,
        } => {
            w.u8(5);
            write4(w, depthwise);
            write4(w, pointwise);
        }
        Factors::TensorTrain { cores } => {
            w.u8(4);
            w.usize(cores.len());
            for c in cores {
                write4(w, c);
            }
        }
    }
}

pub(crate) fn read_factorization(r: &mut Reader<'_>, shape: &[usize]) -> Result<Factorization> {
    let spec = ConvSpec::new()
        .with_stride(r.usize()?, r.usize()?)
        .with_padding(r.usize()?, r.usize()?);
    let error = r.f64()?;
    let factors = match r.u8()? {
        0 => Factors::Linear {
            a: read_array2(r)?,
            b: read_array2(r)?,
        },
        1 => Factors::Tucker2 {
            u_out: read_array2(r)?,
            core: read_array4(r)?,
            u_in: read_array2(r)?,
        },
        2 => Factors::Cp {
            out: read_array2(r)?,
            input: read_array2(r)?,
            rows: read_array2(r)?,
            cols: read_array2(r)?,
        },
        3 => Factors::Separable {
            vertical: read_array4(r)?,
            horizontal: read_array4(r)?,
        },
        4 => {
            // Each core needs at least its 1-byte rank field: bounds the count.
            let n = r.count(1)?;
            let cores = (0..n).map(|_| read_array4(r)).collect::<Result<Vec<_>>>()?;
            Factors::TensorTrain { cores }
        }
        5 => Factors::DepthwiseSeparable {
            depthwise: read_array4(r)?,
            pointwise: read_array4(r)?,
        },
        t => return Err(r.error(format!("unknown factors tag {t}"))),
    };
    let mut f = Factorization::new(shape, factors)
        .map_err(|e| r.error(format!("inconsistent factors: {e}")))?;
    if shape.len() == 4 {
        f = f
            .with_conv_spec(spec)
            .map_err(|e| r.error(format!("bad convolution: {e}")))?;
    }
    Ok(if error.is_nan() {
        f
    } else {
        f.with_error(error)
    })
}

/// An upper bound on the elements of the buffers [`Factorization::reconstruct`] allocates
/// besides its result, for factors already checked against `shape` (see
/// `Factorization::reconstruct_any_layout`).
pub(crate) fn reconstruction_elements(factors: &Factors, shape: &[usize]) -> usize {
    let n: usize = shape.iter().product();
    let product = |v: &[usize]| v.iter().fold(1usize, |a, &d| a.saturating_mul(d));
    // Tucker-2 and CP reshape a product of `n` elements into the result.
    match factors {
        Factors::Linear { .. } => 0,
        Factors::Tucker2 { core, u_in, .. } => {
            let (ro, _, kh, kw) = core.dim();
            let ck = product(&[u_in.nrows(), kh, kw]);
            product(&[ro, ck]).saturating_add(ck).saturating_add(n)
        }
        Factors::Cp {
            out,
            input,
            rows,
            cols,
        } => product(&[input.nrows(), rows.nrows(), cols.nrows(), out.ncols()]).saturating_add(n),
        Factors::Separable {
            vertical,
            horizontal,
        } => {
            let (r, c, kh, _) = vertical.dim();
            let o = horizontal.dim().0;
            product(&[r, c, kh]).saturating_add(product(&[o, c, kh]))
        }
        // Built element by element into the result.
        Factors::DepthwiseSeparable { .. } => 0,
        Factors::TensorTrain { cores } => {
            // The identity of the input width, then per core the state before it
            // (twice: it is permuted into a copy) and after it.
            let cols = shape.get(1).copied().unwrap_or(1);
            let ns: Vec<usize> = cores.iter().map(|g| g.dim().2).collect();
            let mut done_out = 1usize;
            let mut largest = 0usize;
            for (k, g) in cores.iter().enumerate() {
                let (r0, m, nk, r1) = g.dim();
                let rest = product(&ns[k + 1..]);
                let before = product(&[cols, done_out, nk, rest, r0]);
                done_out = done_out.saturating_mul(m);
                let after = product(&[cols, done_out, rest, r1]);
                largest = largest.max(before.saturating_mul(2).saturating_add(after));
            }
            product(&[cols, cols]).saturating_add(largest)
        }
    }
}
