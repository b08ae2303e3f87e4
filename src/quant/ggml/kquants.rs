//! llama.cpp's k-quants Q4_K and Q6_K: super-blocks of [`QK_K`] = 256 values, quantized
//! with ggml's reference algorithm (`quantize_row_q4_K_ref` / `quantize_row_q6_K_ref`
//! in `ggml/src/ggml-quants.c`, i.e. `make_qkx2_quants` / `make_qx_quants` without an
//! importance matrix) and dequantized as the Python `gguf` package does
//! (`gguf/quants.py`, classes `Q4_K` and `Q6_K`).
//!
//! | format | block bytes | bits/weight | layout | restored |
//! |--------|-------------|-------------|--------|----------|
//! | Q4_K | 2 + 2 + 12 + 128 = 144 | 4.5 | f16 `d`, f16 `dmin`, 8 × 6-bit scales and mins, 256 nibbles | `(d·sc)·q − (dmin·m)`, per 32 values |
//! | Q6_K | 128 + 64 + 16 + 2 = 210 | 6.5625 | 256 low nibbles `ql`, 256 2-bit highs `qh`, 16 `i8` scales, f16 `d` | `(d·sc)·(q − 32)`, per 16 values |
//!
//! All arithmetic is f32 in the C reference's order, with no fused multiply-add (the
//! reference's behaviour when compiled without FMA contraction); `nearest_int` is
//! ggml's round-half-even magic-number trick. The tests compare with the committed
//! fixture of `scripts/make_ggml_fixture.py`, whose NumPy port of the same C code is
//! written independently of this one, and whose dequantized values come from `gguf`.

use half::f16;

/// Values per super-block (ggml's `QK_K`).
pub(crate) const QK_K: usize = 256;

/// Bytes per Q4_K super-block (`sizeof(block_q4_K)`).
pub(crate) const Q4_K_BLOCK_BYTES: usize = 2 + 2 + K_SCALE_SIZE + QK_K / 2;

/// Bytes per Q6_K super-block (`sizeof(block_q6_K)`).
pub(crate) const Q6_K_BLOCK_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;

/// Bytes of Q4_K's packed 6-bit scales and mins (ggml's `K_SCALE_SIZE`).
const K_SCALE_SIZE: usize = 12;

/// ggml's `GROUP_MAX_EPS`.
const GROUP_MAX_EPS: f32 = 1e-15;

const _: () = assert!(Q4_K_BLOCK_BYTES == 144);
const _: () = assert!(Q6_K_BLOCK_BYTES == 210);

/// ggml's `nearest_int`: round half to even through the f32 sum with 1.5·2^23, exact
/// for `|f| ≤ 4194303`; anything else (out of the reference's contract) gives some
/// value without panicking.
#[inline]
fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// ggml's `make_qkx2_quants` (`weights` given, `use_mad` false): an affine fit
/// `x ≈ scale·L + min` with `L` in `0..=nmax`, searched over `nstep + 1` trial scales.
/// Returns `(scale, -min)`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let (w, lf) = (weights[i], l as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants` with `rmse_type` 1 and no importance weights: a symmetric
/// fit `x ≈ scale·(L − nmax)`, `L` in `0..2·nmax`, weighted by `x²`, over 19 trial
/// scales. Returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let mut iscale = -nmax_f / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let (w, lf) = (v * v, l as f32);
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax_f + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            let (w, lf) = (v * v, l as f32);
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &v) in x.iter().enumerate() {
                let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
                l_out[i] = (nmax + l) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8).
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn f16_bits(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Quantizes `x` (len a multiple of 256) into Q4_K super-blocks appended to `out`, as
/// ggml's `quantize_row_q4_K_ref`.
///
/// # Panics
/// If `x.len()` is not a multiple of [`QK_K`].
pub(crate) fn quantize_q4_k(x: &[f32], out: &mut Vec<u8>) {
    assert!(
        x.len().is_multiple_of(QK_K),
        "Q4_K: input length {} is not a multiple of {QK_K}",
        x.len()
    );
    out.reserve(x.len() / QK_K * Q4_K_BLOCK_BYTES);
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; QK_K / 32];
    let mut scales = [0f32; QK_K / 32];
    for xb in x.chunks_exact(QK_K) {
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..QK_K / 32 {
            let xs = &xb[32 * j..32 * j + 32];
            let mut sum_x2 = 0.0f32;
            for &v in xs {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = av_x + v.abs();
            }
            let (s, m) = make_qkx2_quants(
                15,
                xs,
                &weights,
                &mut l[32 * j..32 * j + 32],
                &mut laux,
                -1.0,
                0.1,
                20,
            );
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let mut sc = [0u8; K_SCALE_SIZE];
        for j in 0..QK_K / 32 {
            let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
            if j < 4 {
                sc[j] = ls;
                sc[j + 4] = lm;
            } else {
                sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                sc[j - 4] |= (ls >> 4) << 6;
                sc[j] |= (lm >> 4) << 6;
            }
        }
        let d16 = f16_bits(max_scale / 63.0);
        let dmin16 = f16_bits(max_min / 63.0);
        let d_all = f16::from_le_bytes(d16).to_f32();
        let dmin_all = f16::from_le_bytes(dmin16).to_f32();
        for j in 0..QK_K / 32 {
            let (s, m) = scale_min_k4(j, &sc);
            let d = d_all * s as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin_all * m as f32;
            for ii in 0..32 {
                l[32 * j + ii] = nearest_int((xb[32 * j + ii] + dm) / d).clamp(0, 15) as u8;
            }
        }
        out.extend_from_slice(&d16);
        out.extend_from_slice(&dmin16);
        out.extend_from_slice(&sc);
        for j in (0..QK_K).step_by(64) {
            out.extend((0..32).map(|k| l[j + k] | (l[j + k + 32] << 4)));
        }
    }
}

/// Quantizes `x` (len a multiple of 256) into Q6_K super-blocks appended to `out`, as
/// ggml's `quantize_row_q6_K_ref`.
///
/// # Panics
/// If `x.len()` is not a multiple of [`QK_K`].
pub(crate) fn quantize_q6_k(x: &[f32], out: &mut Vec<u8>) {
    assert!(
        x.len().is_multiple_of(QK_K),
        "Q6_K: input length {} is not a multiple of {QK_K}",
        x.len()
    );
    out.reserve(x.len() / QK_K * Q6_K_BLOCK_BYTES);
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    for xb in x.chunks_exact(QK_K) {
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..QK_K / 16 {
            let s = make_qx_quants(
                32,
                &xb[16 * ib..16 * ib + 16],
                &mut l[16 * ib..16 * ib + 16],
            );
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            out.extend(std::iter::repeat_n(0u8, Q6_K_BLOCK_BYTES));
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d16 = f16_bits(1.0 / iscale);
        let d_all = f16::from_le_bytes(d16).to_f32();
        let mut sc = [0i8; QK_K / 16];
        for (s, &v) in sc.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v).min(127) as i8;
        }
        for j in 0..QK_K / 16 {
            let d = d_all * sc[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(xb[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        let l: [u8; QK_K] = l.map(|v| v as u8);
        let mut ql = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 4];
        for (h, j) in (0..QK_K).step_by(128).enumerate() {
            for k in 0..32 {
                let (q1, q2, q3, q4) = (l[j + k], l[j + k + 32], l[j + k + 64], l[j + k + 96]);
                ql[64 * h + k] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                ql[64 * h + k + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                qh[32 * h + k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend_from_slice(&d16);
    }
}

/// The 16-value scales `d·sc` (f32, as `gguf` computes them) and the codes `q + 32`
/// (0..64) of Q6_K super-blocks.
pub(crate) fn q6_k_parts(blocks: &[u8]) -> (Vec<f32>, Vec<u8>) {
    let n = blocks.len() / Q6_K_BLOCK_BYTES;
    let mut scales = Vec::with_capacity(n * QK_K / 16);
    let mut codes = Vec::with_capacity(n * QK_K);
    for b in blocks.chunks_exact(Q6_K_BLOCK_BYTES) {
        let (ql, rest) = b.split_at(QK_K / 2);
        let (qh, rest) = rest.split_at(QK_K / 4);
        let (sc, d) = rest.split_at(QK_K / 16);
        let d = f16_at(d, 0);
        scales.extend(sc.iter().map(|&s| d * (s as i8) as f32));
        for h in 0..2 {
            let (ql, qh) = (&ql[64 * h..64 * h + 64], &qh[32 * h..32 * h + 32]);
            codes.extend((0..32).map(|k| (ql[k] & 0xF) | ((qh[k] & 3) << 4)));
            codes.extend((0..32).map(|k| (ql[k + 32] & 0xF) | (((qh[k] >> 2) & 3) << 4)));
            codes.extend((0..32).map(|k| (ql[k] >> 4) | (((qh[k] >> 4) & 3) << 4)));
            codes.extend((0..32).map(|k| (ql[k + 32] >> 4) | (((qh[k] >> 6) & 3) << 4)));
        }
    }
    (scales, codes)
}

/// Q6_K super-blocks from 16-value scales `d·sc` and codes `q + 32`, if every scale is
/// an f16 `d` times an `i8`: `d` is recovered from the scale of largest magnitude
/// (ggml's quantizer gives it `sc = −128`; other multipliers are tried after it). A
/// super-block whose scales are all zero is written with `d = 0` and zero multipliers
/// (the reference may keep multipliers beside a `d` that underflowed f16 to ±0: the
/// values are the same but for the sign of zero).
pub(crate) fn q6_k_from_parts(scales: &[f32], codes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(scales.len() / 16 * Q6_K_BLOCK_BYTES);
    for (s, c) in scales.chunks_exact(QK_K / 16).zip(codes.chunks_exact(QK_K)) {
        let top = s
            .iter()
            .fold(0.0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
        let sc: [i8; 16] = if top == 0.0 {
            [0; 16]
        } else {
            (1..=128)
                .rev()
                .flat_map(|k| [-(k as f32), k as f32])
                .find_map(|k| {
                    let d = f16::from_f32(top / k).to_f32();
                    if d == 0.0 || !d.is_finite() {
                        return None;
                    }
                    let mut sc = [0i8; 16];
                    for (o, &v) in sc.iter_mut().zip(s) {
                        let q = (v / d).round();
                        if !(-128.0..=127.0).contains(&q) || d * q != v {
                            return None;
                        }
                        *o = q as i8;
                    }
                    Some(sc)
                })?
        };
        let d = if top == 0.0 {
            0.0
        } else {
            let k = sc
                .iter()
                .zip(s)
                .find(|(_, v)| **v == top)
                .map(|(q, _)| *q as f32)?;
            top / k
        };
        let mut ql = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 4];
        for h in 0..2 {
            let c = &c[128 * h..128 * h + 128];
            for k in 0..32 {
                let (q1, q2, q3, q4) = (c[k], c[k + 32], c[k + 64], c[k + 96]);
                ql[64 * h + k] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                ql[64 * h + k + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                qh[32 * h + k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend_from_slice(&f16_bits(d));
    }
    Some(out)
}

/// Dequantizes Q4_K super-blocks into `out` as `gguf`'s `Q4_K.dequantize_blocks`:
/// `(d·sc)·q − (dmin·m)` in f32.
///
/// # Panics
/// If the lengths disagree (`blocks.len() / 144 · 256 != out.len()`).
pub(crate) fn dequantize_q4_k(blocks: &[u8], out: &mut [f32]) {
    assert_eq!(
        blocks.len() / Q4_K_BLOCK_BYTES * QK_K,
        out.len(),
        "Q4_K lengths"
    );
    assert!(
        blocks.len().is_multiple_of(Q4_K_BLOCK_BYTES),
        "Q4_K lengths"
    );
    for (b, y) in blocks
        .chunks_exact(Q4_K_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK_K))
    {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let sc = &b[4..4 + K_SCALE_SIZE];
        let qs = &b[4 + K_SCALE_SIZE..];
        for j in 0..QK_K / 32 {
            let (s, m) = scale_min_k4(j, sc);
            let (dl, ml) = (d * s as f32, dmin * m as f32);
            let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            let shift = 4 * (j % 2);
            for (o, &q) in y[32 * j..32 * j + 32].iter_mut().zip(q) {
                *o = dl * ((q >> shift) & 0xF) as f32 - ml;
            }
        }
    }
}

/// Dequantizes Q6_K super-blocks into `out` as `gguf`'s `Q6_K.dequantize_blocks`:
/// `(d·sc)·(q − 32)` in f32.
///
/// # Panics
/// If the lengths disagree (`blocks.len() / 210 · 256 != out.len()`).
pub(crate) fn dequantize_q6_k(blocks: &[u8], out: &mut [f32]) {
    assert_eq!(
        blocks.len() / Q6_K_BLOCK_BYTES * QK_K,
        out.len(),
        "Q6_K lengths"
    );
    assert!(
        blocks.len().is_multiple_of(Q6_K_BLOCK_BYTES),
        "Q6_K lengths"
    );
    let (scales, codes) = q6_k_parts(blocks);
    for ((o, &c), i) in out.iter_mut().zip(&codes).zip(0..) {
        *o = scales[i / 16] * (c as i32 - 32) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/fixtures/ggml_kquants.bin`, written by `scripts/make_ggml_fixture.py`.
    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ggml_kquants.bin"
    );

    struct Case {
        name: String,
        input: Vec<f32>,
        q4_k: Vec<u8>,
        q6_k: Vec<u8>,
        q4_k_dequant: Vec<f32>,
        q6_k_dequant: Vec<f32>,
    }

    fn read_fixture() -> Vec<Case> {
        let data = std::fs::read(FIXTURE).expect("read tests/fixtures/ggml_kquants.bin");
        let mut at = 0usize;
        let mut take = |n: usize| {
            let s = &data[at..at + n];
            at += n;
            s.to_vec()
        };
        let u32_of = |b: Vec<u8>| u32::from_le_bytes(b.try_into().unwrap()) as usize;
        let f32s = |b: Vec<u8>| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        assert_eq!(take(8), b"GGMLKQX1");
        assert_eq!(u32_of(take(4)), 1);
        let cases = u32_of(take(4));
        (0..cases)
            .map(|_| {
                let len = u32_of(take(4));
                let name = String::from_utf8(take(len)).unwrap();
                let n = u32_of(take(4));
                Case {
                    input: f32s(take(4 * n)),
                    q4_k: take(n / QK_K * Q4_K_BLOCK_BYTES),
                    q6_k: take(n / QK_K * Q6_K_BLOCK_BYTES),
                    q4_k_dequant: f32s(take(4 * n)),
                    q6_k_dequant: f32s(take(4 * n)),
                    name,
                }
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn matches_fixture_byte_for_byte() {
        let cases = read_fixture();
        assert_eq!(cases.len(), 5);
        for c in &cases {
            let mut q4 = Vec::new();
            quantize_q4_k(&c.input, &mut q4);
            let bad = q4
                .chunks(Q4_K_BLOCK_BYTES)
                .zip(c.q4_k.chunks(Q4_K_BLOCK_BYTES))
                .position(|(a, b)| a != b);
            assert_eq!(bad, None, "{}: Q4_K block differs", c.name);
            let mut q6 = Vec::new();
            quantize_q6_k(&c.input, &mut q6);
            let bad = q6
                .chunks(Q6_K_BLOCK_BYTES)
                .zip(c.q6_k.chunks(Q6_K_BLOCK_BYTES))
                .position(|(a, b)| a != b);
            assert_eq!(bad, None, "{}: Q6_K block differs", c.name);
            let mut y = vec![f32::NAN; c.input.len()];
            dequantize_q4_k(&c.q4_k, &mut y);
            assert!(bits(&y) == bits(&c.q4_k_dequant), "{}: Q4_K values", c.name);
            dequantize_q6_k(&c.q6_k, &mut y);
            assert!(bits(&y) == bits(&c.q6_k_dequant), "{}: Q6_K values", c.name);
        }
    }

    /// The public API agrees with the fixture too, and Q6_K's QuantizedTensor form
    /// decodes to the same values and writes the same blocks back.
    #[test]
    fn public_api_matches_fixture() {
        use crate::quant::{
            GgmlFormat, GgmlQuantizer, QuantContext, Quantizer, dequantize_ggml, from_ggml_blocks,
            quantize_ggml, to_ggml_blocks,
        };
        for c in read_fixture() {
            let shape = [c.input.len() / QK_K, QK_K];
            assert_eq!(
                quantize_ggml(&c.input, &shape, GgmlFormat::Q4_K).unwrap(),
                c.q4_k
            );
            assert_eq!(
                quantize_ggml(&c.input, &shape, GgmlFormat::Q6_K).unwrap(),
                c.q6_k
            );
            let y = dequantize_ggml(&c.q4_k, &shape, GgmlFormat::Q4_K).unwrap();
            assert!(bits(&y) == bits(&c.q4_k_dequant));
            let y = dequantize_ggml(&c.q6_k, &shape, GgmlFormat::Q6_K).unwrap();
            assert!(bits(&y) == bits(&c.q6_k_dequant));
            let x =
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), c.input.clone()).unwrap();
            let q = GgmlQuantizer::new(GgmlFormat::Q6_K)
                .quantize(&x, &QuantContext::new())
                .unwrap();
            assert!(bits(q.dequantize::<f32>().as_slice().unwrap()) == bits(&c.q6_k_dequant));
            let blocks = to_ggml_blocks(&q, GgmlFormat::Q6_K).unwrap();
            if c.name == "tiny_large" {
                // A super-block whose f16 `d` underflowed to -0.0 keeps its multipliers in
                // the reference's bytes but not in the scales `d·sc`: same values.
                let back = dequantize_ggml(&blocks, &shape, GgmlFormat::Q6_K).unwrap();
                assert_eq!(back, c.q6_k_dequant);
            } else {
                assert_eq!(blocks, c.q6_k, "{}", c.name);
            }
            let loaded = from_ggml_blocks(&c.q6_k, &shape, GgmlFormat::Q6_K).unwrap();
            assert_eq!(loaded, q);
        }
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-7.4), -7);
        assert_eq!(nearest_int(63.6), 64);
    }

    #[test]
    fn q6_k_parts_round_trip() {
        let x: Vec<f32> = (0..2 * QK_K)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013 * (1.0 + (i / 16) as f32))
            .collect();
        let mut b = Vec::new();
        quantize_q6_k(&x, &mut b);
        let (s, c) = q6_k_parts(&b);
        assert_eq!(q6_k_from_parts(&s, &c).unwrap(), b);
    }

    #[test]
    fn zero_blocks() {
        let mut b = Vec::new();
        quantize_q4_k(&[0.0; QK_K], &mut b);
        quantize_q6_k(&[0.0; QK_K], &mut b);
        assert_eq!(b.len(), Q4_K_BLOCK_BYTES + Q6_K_BLOCK_BYTES);
        let mut y = [1.0f32; QK_K];
        dequantize_q4_k(&b[..Q4_K_BLOCK_BYTES], &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
        dequantize_q6_k(&b[Q4_K_BLOCK_BYTES..], &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
    }
}
