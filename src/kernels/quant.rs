//! Kernels of uniform quantization: float ↔ integer codes, and code packing.

use super::kernel;

/// Adding and subtracting 1.5·2²³ rounds an f32 of magnitude below 2²² to the nearest
/// integer, ties to even, with plain adds that vectorize on every x86-64 (the baseline
/// has no `roundps`).
const MAGIC: f32 = 12_582_912.0;

#[inline(always)]
fn quantize_body(x: &[f32], inv_scale: f32, offset: f32, cmax: f32, out: &mut [u8]) {
    // Round `x/s` itself (ties to even in level units, not in code units, which the
    // integer offset would shift), then add the offset.
    //
    // No float-to-integer conversion (Rust's saturating casts do not vectorize): after
    // adding 1.5·2²³ the rounded value sits in the low bits of the float's bit pattern,
    // whose low byte plus the offset is the code (mod 256, and codes are in 0..=255).
    // The comparisons also send NaN to `lo`, so nothing undefined can come out.
    let (lo, hi) = (-offset, cmax - offset);
    let add = offset as u8;
    for (o, &v) in out.iter_mut().zip(x) {
        let y = v * inv_scale;
        let y = if y > lo { y } else { lo };
        let y = if y < hi { y } else { hi };
        *o = ((y + MAGIC).to_bits() as u8).wrapping_add(add);
    }
}

kernel! {
    /// Codes `round_half_even(clamp(x·inv_scale, −offset, cmax − offset)) + offset`, for
    /// an integer `offset` and `cmax ≤ 255`.
    fn quantize(x: &[f32], inv_scale: f32, offset: f32, cmax: f32, out: &mut [u8]) => quantize_body
}

#[inline(always)]
fn dequantize_body(codes: &[u8], scale: f32, offset: f32, out: &mut [f32]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = (c as f32 - offset) * scale;
    }
}

kernel! {
    /// Values `(code − offset)·scale`.
    fn dequantize(codes: &[u8], scale: f32, offset: f32, out: &mut [f32]) => dequantize_body
}

#[inline(always)]
fn min_max_body(x: &[f32]) -> (f32, f32, bool) {
    // Lane arrays with plain comparisons vectorize (`f32::min` does not: NaN rules).
    const L: usize = 16;
    let (mut lo, mut hi, mut bad) = ([f32::INFINITY; L], [f32::NEG_INFINITY; L], [false; L]);
    let blocks = x.chunks_exact(L);
    let tail = blocks.remainder();
    for b in blocks {
        for j in 0..L {
            let v = b[j];
            lo[j] = if v < lo[j] { v } else { lo[j] };
            hi[j] = if v > hi[j] { v } else { hi[j] };
            bad[j] |= !v.is_finite();
        }
    }
    let (mut l, mut h, mut nf) = (f32::INFINITY, f32::NEG_INFINITY, false);
    for j in 0..L {
        l = l.min(lo[j]);
        h = h.max(hi[j]);
        nf |= bad[j];
    }
    for &v in tail {
        l = l.min(v);
        h = h.max(v);
        nf |= !v.is_finite();
    }
    (l, h, !nf)
}

kernel! {
    /// The minimum and maximum of `x`, and whether every element is finite.
    fn min_max(x: &[f32]) -> (f32, f32, bool) => min_max_body
}

/// `x[i]` rounded up with probability equal to its fractional part: `floor(y + u)` for
/// `u` uniform in `[0, 1)` drawn from (`seed`, `start + i`), so the result does not
/// depend on how the work is split.
pub(crate) fn quantize_stochastic(
    x: &[f32],
    inv_scale: f32,
    offset: f32,
    cmax: f32,
    seed: u64,
    start: usize,
    out: &mut [u8],
) {
    for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        let u = uniform(seed, (start + i) as u64);
        let y = (v * inv_scale + u).floor().clamp(-offset, cmax - offset);
        *o = (y + offset) as u8;
    }
}

/// A uniform number in `[0, 1)` from a seed and a counter (SplitMix64 finaliser).
#[inline]
pub(crate) fn uniform(seed: u64, counter: u64) -> f32 {
    let mut z = seed ^ counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// Packs codes of `bits` bits (each already below 2^bits) into `out` (zeroed, of
/// `ceil(len·bits/8)` bytes) as a little-endian bit stream.
pub(crate) fn pack_codes(codes: &[u8], bits: u8, out: &mut [u8]) {
    match bits {
        8 => out.copy_from_slice(codes),
        4 => {
            let pairs = codes.chunks_exact(2);
            let tail = pairs.remainder();
            for (o, p) in out.iter_mut().zip(pairs) {
                *o = p[0] | p[1] << 4;
            }
            if let [last] = tail {
                out[codes.len() / 2] = *last;
            }
        }
        2 | 1 => {
            let per = 8 / bits as usize;
            for (o, chunk) in out.iter_mut().zip(codes.chunks(per)) {
                *o = chunk
                    .iter()
                    .enumerate()
                    .fold(0u8, |b, (j, &c)| b | c << (j * bits as usize));
            }
        }
        _ => {
            // A 64-bit accumulator flushed a byte at a time.
            let (mut acc, mut n, mut k) = (0u64, 0u32, 0usize);
            for &c in codes {
                acc |= (c as u64) << n;
                n += bits as u32;
                while n >= 8 {
                    out[k] = acc as u8;
                    acc >>= 8;
                    n -= 8;
                    k += 1;
                }
            }
            if n > 0 {
                out[k] = acc as u8;
            }
        }
    }
}

/// Unpacks codes `start .. start + out.len()` of a bit stream of `bits`-bit codes.
pub(crate) fn unpack_codes(bytes: &[u8], bits: u8, start: usize, out: &mut [u8]) {
    match bits {
        8 => out.copy_from_slice(&bytes[start..start + out.len()]),
        4 if start.is_multiple_of(2) => {
            let src = &bytes[start / 2..];
            let last_byte = (out.len().max(1) - 1) / 2;
            let mut pairs = out.chunks_exact_mut(2);
            for (p, &b) in (&mut pairs).zip(src) {
                p[0] = b & 0x0F;
                p[1] = b >> 4;
            }
            if let [last] = pairs.into_remainder() {
                *last = src[last_byte] & 0x0F;
            }
        }
        _ => {
            let mask = (1u16 << bits) - 1;
            for (i, o) in out.iter_mut().enumerate() {
                let p = (start + i) * bits as usize;
                let (b, shift) = (p / 8, p % 8);
                let lo = bytes[b] as u16;
                let hi = bytes.get(b + 1).copied().unwrap_or(0) as u16;
                *o = ((lo | hi << 8) >> shift & mask) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn simd_twins_agree(x in prop::collection::vec(-1e3f32..1e3, 0..300), inv in 0.01f32..10.0,
                            offset in -10.0f32..300.0, cmax in 1u8..=255) {
            if !crate::kernels::simd_in_use() {
                return Ok(());
            }
            let (mut a, mut b) = (vec![0u8; x.len()], vec![0u8; x.len()]);
            quantize(&x, inv, offset, cmax as f32, &mut a);
            quantize::scalar(&x, inv, offset, cmax as f32, &mut b);
            prop_assert_eq!(&a, &b);
            let (mut fa, mut fb) = (vec![0f32; x.len()], vec![0f32; x.len()]);
            // SAFETY: as above.
            dequantize(&a, inv, offset, &mut fa);
            dequantize::scalar(&a, inv, offset, &mut fb);
            prop_assert_eq!(fa, fb);
        }

        #[test]
        fn magic_rounding_is_round_half_even(y in -1000.0f32..1000.0, k in -300i32..300, offset in 0u8..=255) {
            // Ties go to the even level, whatever the (integer) offset of the codes.
            let (cmax, offset) = (255.0, offset as f32);
            let mut out = [0u8; 2];
            let half = k as f32 + 0.5;
            quantize::scalar(&[y, half], 1.0, offset, cmax, &mut out);
            let level = |v: f32| v.clamp(-offset, cmax - offset).round_ties_even() + offset;
            prop_assert_eq!(out[0] as f32, level(y));
            prop_assert_eq!(out[1] as f32, level(half));
        }
    }
}
