//! The [`Decoding`] of a quantized tensor and the [`Factorization`] of a low-rank one,
//! as bytes.

use half::f16;
use ndarray::{Array2, Array4, ArrayD, IxDyn};

use crate::encode::wire::{Reader, Writer};
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

/// The head of a factorized record: stride, padding, relative error, the factors' tag
/// (and a tensor train's core count). The factors follow, in the order of
/// [`Factorization::factor_values`].
pub(crate) fn write_factors_head(w: &mut Writer, f: &Factorization) {
    let spec = f.conv_spec();
    w.usize(spec.stride.0);
    w.usize(spec.stride.1);
    w.usize(spec.padding.0);
    w.usize(spec.padding.1);
    w.f64(f.relative_error().unwrap_or(f64::NAN));
    w.u8(factors_tag(f.factors()));
    if let Factors::TensorTrain { cores } = f.factors() {
        w.usize(cores.len());
    }
}

fn factors_tag(f: &Factors) -> u8 {
    match f {
        Factors::Linear { .. } => 0,
        Factors::Tucker2 { .. } => 1,
        Factors::Cp { .. } => 2,
        Factors::Separable { .. } => 3,
        Factors::TensorTrain { .. } => 4,
        Factors::DepthwiseSeparable { .. } => 5,
    }
}

/// What [`write_factors_head`] wrote, and the dimensions of each factor in order (a
/// tensor train's core count bounded by the record's bytes).
pub(crate) struct FactorsHead {
    spec: ConvSpec,
    error: f64,
    tag: u8,
    /// The number of dimensions of each factor, in order.
    pub(crate) ndims: Vec<usize>,
}

pub(crate) fn read_factors_head(r: &mut Reader<'_>) -> Result<FactorsHead> {
    let spec = ConvSpec::new()
        .with_stride(r.usize()?, r.usize()?)
        .with_padding(r.usize()?, r.usize()?);
    let error = r.f64()?;
    let tag = r.u8()?;
    let ndims = match tag {
        0 => vec![2, 2],
        1 => vec![2, 4, 2],
        2 => vec![2; 4],
        3 | 5 => vec![4, 4],
        // Each core needs at least its 1-byte dims count: bounds the count.
        4 => vec![4; r.count(1)?],
        t => return Err(r.error(format!("unknown factors tag {t}"))),
    };
    Ok(FactorsHead {
        spec,
        error,
        tag,
        ndims,
    })
}

/// The factorization of `shape` from its head and its factors' values (in order, of
/// the dimensions the head gives), checked as [`Factorization::new`] checks.
pub(crate) fn factorization_from(
    r: &Reader<'_>,
    head: &FactorsHead,
    shape: &[usize],
    values: Vec<ArrayD<f32>>,
) -> Result<Factorization> {
    let mut it = values.into_iter();
    let mut next = || it.next().ok_or_else(|| r.error("a factor is missing"));
    let d2 = |a: ArrayD<f32>| -> Result<Array2<f32>> {
        a.into_dimensionality().map_err(|e| r.error(e.to_string()))
    };
    let d4 = |a: ArrayD<f32>| -> Result<Array4<f32>> {
        a.into_dimensionality().map_err(|e| r.error(e.to_string()))
    };
    let factors = match head.tag {
        0 => Factors::Linear {
            a: d2(next()?)?,
            b: d2(next()?)?,
        },
        1 => Factors::Tucker2 {
            u_out: d2(next()?)?,
            core: d4(next()?)?,
            u_in: d2(next()?)?,
        },
        2 => Factors::Cp {
            out: d2(next()?)?,
            input: d2(next()?)?,
            rows: d2(next()?)?,
            cols: d2(next()?)?,
        },
        3 => Factors::Separable {
            vertical: d4(next()?)?,
            horizontal: d4(next()?)?,
        },
        5 => Factors::DepthwiseSeparable {
            depthwise: d4(next()?)?,
            pointwise: d4(next()?)?,
        },
        _ => Factors::TensorTrain {
            cores: (0..head.ndims.len())
                .map(|_| d4(next()?))
                .collect::<Result<_>>()?,
        },
    };
    let mut f = Factorization::new(shape, factors)
        .map_err(|e| r.error(format!("inconsistent factors: {e}")))?;
    if shape.len() == 4 {
        f = f
            .with_conv_spec(head.spec)
            .map_err(|e| r.error(format!("bad convolution: {e}")))?;
    }
    Ok(if head.error.is_nan() {
        f
    } else {
        f.with_error(head.error)
    })
}

/// Writes `f32` factors: the head, then each factor's dimensions and values.
pub(crate) fn write_factorization(w: &mut Writer, f: &Factorization) {
    write_factors_head(w, f);
    for a in f.factor_values() {
        write_array(w, a.shape(), a.iter().copied());
    }
}

pub(crate) fn read_factorization(r: &mut Reader<'_>, shape: &[usize]) -> Result<Factorization> {
    let head = read_factors_head(r)?;
    let mut values = Vec::with_capacity(head.ndims.len());
    for &ndim in &head.ndims {
        let dims = r.dims()?;
        if dims.len() != ndim {
            return Err(r.error(format!("a {ndim}-D factor has shape {dims:?}")));
        }
        let v = read_values(r, &dims)?;
        values.push(ArrayD::from_shape_vec(IxDyn(&dims), v).map_err(|e| r.error(e.to_string()))?);
    }
    factorization_from(r, &head, shape, values)
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
