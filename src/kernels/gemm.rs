//! Integer and dequantizing matrix products.
//!
//! [`gemm_i8`]: `C = A·Bᵀ` for int8 `A` `[m, k]` and `B` `[n, k]`, exact, with i32
//! accumulation. The AVX2 version sign-extends 16 int8 at a time to int16
//! (`vpmovsxbw`) and multiplies-and-adds pairs into int32 lanes (`vpmaddwd`), on
//! blocks of 2 rows of `A` by 4 rows of `B` held in 8 accumulators; the scalar version
//! is the reference it is tested against. `k ≤ 2^17` keeps every sum within i32.

use super::kernel;

/// Rows of `A` and of `B` per register block (of the AVX2 version).
#[cfg(target_arch = "x86_64")]
const MR: usize = 2;
#[cfg(target_arch = "x86_64")]
const NR: usize = 4;

/// Exact `Σ a·b` over int8 slices of equal length.
#[inline]
fn dot_scalar(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// The scalar reference: `c[i·n + j] = Σ_t a[i·k + t]·b[j·k + t]`.
pub(crate) fn gemm_i8_scalar(a: &[i8], b: &[i8], k: usize, c: &mut [i32]) {
    let n = b.len() / k.max(1);
    for (i, row) in c.chunks_mut(n.max(1)).enumerate() {
        let ai = &a[i * k..(i + 1) * k];
        for (j, out) in row.iter_mut().enumerate() {
            *out = dot_scalar(ai, &b[j * k..(j + 1) * k]);
        }
    }
}

/// `C = A·Bᵀ` (see the module docs), dispatched to AVX2 when available.
pub(crate) fn gemm_i8(a: &[i8], b: &[i8], k: usize, c: &mut [i32]) {
    debug_assert!(k > 0 && a.len().is_multiple_of(k) && b.len().is_multiple_of(k));
    debug_assert_eq!(c.len(), a.len() / k * (b.len() / k));
    #[cfg(target_arch = "x86_64")]
    if super::level() >= super::Level::Avx2 {
        // SAFETY: `level()` returns Avx2 only if the CPU reports AVX2 and FMA; slice
        // lengths are as `gemm_i8_avx2` requires (checked above in debug builds and by
        // the callers in `quant::linear`).
        unsafe { gemm_i8_avx2(a, b, k, c) };
        return;
    }
    gemm_i8_scalar(a, b, k, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gemm_i8_avx2(a: &[i8], b: &[i8], k: usize, c: &mut [i32]) {
    use std::arch::x86_64::*;
    let m = a.len() / k;
    let n = b.len() / k;
    let k16 = k - k % 16;
    // Sign-extends 16 int8 at `p` to 16 int16.
    let load = |p: &[i8]| -> __m256i {
        debug_assert!(p.len() >= 16);
        // SAFETY: `p` has at least 16 bytes (every call passes `row[t..t + 16]`).
        unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(p.as_ptr() as *const __m128i)) }
    };
    // Horizontal sum of 8 i32 lanes.
    let hsum = |v: __m256i| -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    };
    let mut i = 0;
    while i < m {
        let rows_a = (m - i).min(MR);
        let mut j = 0;
        while j < n {
            let rows_b = (n - j).min(NR);
            if rows_a == MR && rows_b == NR {
                let a0 = &a[i * k..(i + 1) * k];
                let a1 = &a[(i + 1) * k..(i + 2) * k];
                let bs: [&[i8]; NR] = std::array::from_fn(|r| &b[(j + r) * k..(j + r + 1) * k]);
                let mut acc = [[_mm256_setzero_si256(); NR]; MR];
                let mut t = 0;
                while t < k16 {
                    let x0 = load(&a0[t..t + 16]);
                    let x1 = load(&a1[t..t + 16]);
                    for r in 0..NR {
                        let w = load(&bs[r][t..t + 16]);
                        acc[0][r] = _mm256_add_epi32(acc[0][r], _mm256_madd_epi16(x0, w));
                        acc[1][r] = _mm256_add_epi32(acc[1][r], _mm256_madd_epi16(x1, w));
                    }
                    t += 16;
                }
                for (ri, ar) in [a0, a1].iter().enumerate() {
                    for r in 0..NR {
                        let tail = dot_scalar(&ar[k16..], &bs[r][k16..]);
                        c[(i + ri) * n + j + r] = hsum(acc[ri][r]) + tail;
                    }
                }
            } else {
                // Edge blocks: one dot product at a time, still vectorized along k.
                for ri in 0..rows_a {
                    let ar = &a[(i + ri) * k..(i + ri + 1) * k];
                    for r in 0..rows_b {
                        let br = &b[(j + r) * k..(j + r + 1) * k];
                        let mut acc = _mm256_setzero_si256();
                        let mut t = 0;
                        while t < k16 {
                            acc = _mm256_add_epi32(
                                acc,
                                _mm256_madd_epi16(load(&ar[t..t + 16]), load(&br[t..t + 16])),
                            );
                            t += 16;
                        }
                        c[(i + ri) * n + j + r] = hsum(acc) + dot_scalar(&ar[k16..], &br[k16..]);
                    }
                }
            }
            j += rows_b;
        }
        i += rows_a;
    }
}

/// Blocked int8 products with per-block f32 scales (llama.cpp's Q8_0 × Q8_0 scheme):
/// `y[i·n + j] = Σ_blocks xs[i, blk]·ws[j, blk]·Σ_{t ∈ blk} xq[i, t]·wq[j, t]`.
/// Codes must lie in `−127..=127`, so the AVX2 version can use `vpmaddubsw` on
/// `|x|` and `sign(w, x)` without saturating; every block sum is exact in i32.
pub(crate) struct Blocked<'a> {
    /// Activation codes `[m, k]`.
    pub xq: &'a [i8],
    /// Activation scales `[m, k / block]`.
    pub xs: &'a [f32],
    /// Weight codes `[n, k]`.
    pub wq: &'a [i8],
    /// Weight scales `[n, k / block]`.
    pub ws: &'a [f32],
    /// Weight code sums `Σ_{t ∈ blk} wq[j, t]`, `[n, k / block]` (for the VNNI version).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub wsum: &'a [i32],
    /// Row length.
    pub k: usize,
    /// Elements per block (divides `k`).
    pub block: usize,
}

/// The scalar reference of [`gemm_q8_blocked`].
pub(crate) fn gemm_q8_blocked_scalar(p: &Blocked<'_>, y: &mut [f32]) {
    let (k, block) = (p.k, p.block);
    let blocks = k / block;
    let n = p.wq.len() / k;
    for (i, row) in y.chunks_mut(n.max(1)).enumerate() {
        for (j, out) in row.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for b in 0..blocks {
                let r = b * block..(b + 1) * block;
                let dot = dot_scalar(&p.xq[i * k..][r.clone()], &p.wq[j * k..][r]);
                acc += dot as f32 * (p.xs[i * blocks + b] * p.ws[j * blocks + b]);
            }
            *out = acc;
        }
    }
}

/// [`Blocked`] products into `y` `[m, n]`, dispatched to AVX2 when available.
pub(crate) fn gemm_q8_blocked(p: &Blocked<'_>, y: &mut [f32]) {
    debug_assert!(p.block > 0 && p.k.is_multiple_of(p.block));
    debug_assert_eq!(y.len(), p.xq.len() / p.k * (p.wq.len() / p.k));
    #[cfg(target_arch = "x86_64")]
    if super::extensions().avx_vnni && p.block.is_multiple_of(32) {
        // SAFETY: `extensions()` reports AVX-VNNI only if the CPU has it besides AVX2
        // and FMA; the block length is a multiple of 32.
        unsafe { gemm_q8_blocked_vnni(p, y) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::level() >= super::Level::Avx2 && p.block.is_multiple_of(32) {
        y.fill(0.0);
        // SAFETY: `level()` returns Avx2 or above only if the CPU reports AVX2 and FMA;
        // the block length is a multiple of 32, as the tile kernels require.
        unsafe { tiled::<Avx2Tile>(p, y, 1024) };
        return;
    }
    gemm_q8_blocked_scalar(p, y)
}

/// A register tile of the blocked product: rows `i..i+R` of `x` by rows `j..j+C` of `w`
/// over the blocks `tile`, added to `y`.
#[cfg(target_arch = "x86_64")]
trait Tile {
    /// # Safety
    /// The CPU must have the target features of the implementation.
    unsafe fn add<const R: usize, const C: usize>(
        p: &Blocked<'_>,
        y: &mut [f32],
        at: (usize, usize, std::ops::Range<usize>),
    );
}

#[cfg(target_arch = "x86_64")]
struct Avx2Tile;

#[cfg(target_arch = "x86_64")]
impl Tile for Avx2Tile {
    unsafe fn add<const R: usize, const C: usize>(
        p: &Blocked<'_>,
        y: &mut [f32],
        at: (usize, usize, std::ops::Range<usize>),
    ) {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { q8_block::<R, C>(p, y, at) }
    }
}

#[cfg(target_arch = "x86_64")]
struct VnniTile;

#[cfg(target_arch = "x86_64")]
impl Tile for VnniTile {
    unsafe fn add<const R: usize, const C: usize>(
        p: &Blocked<'_>,
        y: &mut [f32],
        at: (usize, usize, std::ops::Range<usize>),
    ) {
        // SAFETY: the caller guarantees AVX2, FMA and AVX-VNNI.
        unsafe { q8_block_vnni::<R, C>(p, y, at) }
    }
}

/// Adds the blocked product to `y`, in tiles of whole blocks along k of about
/// `tile_inputs` inputs (so that the rows of one tile stay in L1 while every pair of
/// rows meets) and register tiles of 2 × 4 rows (edges: 1 × 4, then 1 × 1).
///
/// # Safety
/// The CPU must have the target features of `T`.
#[cfg(target_arch = "x86_64")]
unsafe fn tiled<T: Tile>(p: &Blocked<'_>, y: &mut [f32], tile_inputs: usize) {
    const MR: usize = 2;
    const NR: usize = 4;
    let (k, block) = (p.k, p.block);
    let blocks = k / block;
    let (m, n) = (p.xq.len() / k, p.wq.len() / k);
    let per_tile = (tile_inputs / block).max(1);
    for tile in (0..blocks).step_by(per_tile) {
        let tile = tile..(tile + per_tile).min(blocks);
        for i in (0..m).step_by(MR) {
            let mr = (m - i).min(MR);
            for j in (0..n).step_by(NR) {
                let nr = (n - j).min(NR);
                let at = (i, j, tile.clone());
                // SAFETY: the caller guarantees the target features of `T`.
                unsafe {
                    match (mr, nr) {
                        (MR, NR) => T::add::<MR, NR>(p, y, at),
                        (1, NR) => T::add::<1, NR>(p, y, at),
                        _ => {
                            for r in 0..mr {
                                for c in 0..nr {
                                    T::add::<1, 1>(p, y, (i + r, j + c, tile.clone()));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds the dot products of rows `i..i+R` of `x` with rows `j..j+C` of `w` over the
/// blocks `tile` to `y`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // register tiles read clearest as acc[r][c]
fn q8_block<const R: usize, const C: usize>(
    p: &Blocked<'_>,
    y: &mut [f32],
    (i, j, tile): (usize, usize, std::ops::Range<usize>),
) {
    use std::arch::x86_64::*;
    let (k, block) = (p.k, p.block);
    let blocks = k / block;
    let n = p.wq.len() / k;
    let load = |s: &[i8]| -> __m256i {
        assert!(s.len() >= 32);
        // SAFETY: `s` has at least 32 bytes (asserted; the caller passes `row[t..]`
        // with `t + 32 ≤` the row's end).
        unsafe { _mm256_loadu_si256(s.as_ptr() as *const __m256i) }
    };
    let hsum = |v: __m256| -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    };
    let ones = _mm256_set1_epi16(1);
    let mut accf = [[_mm256_setzero_ps(); C]; R];
    for b in tile {
        let mut acci = [[_mm256_setzero_si256(); C]; R];
        let mut t = b * block;
        while t < (b + 1) * block {
            let xs: [__m256i; R] =
                std::array::from_fn(|r| load(&p.xq[(i + r) * k + t..(i + r) * k + t + 32]));
            let ax: [__m256i; R] = std::array::from_fn(|r| _mm256_sign_epi8(xs[r], xs[r]));
            for c in 0..C {
                let w = load(&p.wq[(j + c) * k + t..(j + c) * k + t + 32]);
                for r in 0..R {
                    // Σ x·w as |x|·sign(w, x): exact for |x|, |w| ≤ 127.
                    let d = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(ax[r], _mm256_sign_epi8(w, xs[r])),
                        ones,
                    );
                    acci[r][c] = _mm256_add_epi32(acci[r][c], d);
                }
            }
            t += 32;
        }
        for r in 0..R {
            let sx = p.xs[(i + r) * blocks + b];
            for c in 0..C {
                let scale = _mm256_set1_ps(sx * p.ws[(j + c) * blocks + b]);
                accf[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acci[r][c]), scale, accf[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            y[(i + r) * n + j + c] += hsum(accf[r][c]);
        }
    }
}

/// The AVX-VNNI product: the unsigned offset's correction, then the tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avxvnni")]
fn gemm_q8_blocked_vnni(p: &Blocked<'_>, y: &mut [f32]) {
    let blocks = p.k / p.block;
    let n = p.wq.len() / p.k;
    // The unsigned offset adds 128·Σw per block; take it out up front:
    // y[i, j] = −Σ_blk xs[i, blk]·ws[j, blk]·128·wsum[j, blk].
    let cw: Vec<f32> =
        p.ws.iter()
            .zip(p.wsum)
            .map(|(&s, &w)| s * (128 * w) as f32)
            .collect();
    for (i, row) in y.chunks_mut(n).enumerate() {
        let xs = &p.xs[i * blocks..(i + 1) * blocks];
        for (j, out) in row.iter_mut().enumerate() {
            *out = -xs
                .iter()
                .zip(&cw[j * blocks..(j + 1) * blocks])
                .map(|(a, b)| a * b)
                .sum::<f32>();
        }
    }
    // SAFETY: this function runs only where the CPU has AVX2, FMA and AVX-VNNI.
    unsafe { tiled::<VnniTile>(p, y, 1024) };
}

/// [`q8_block`] with `vpdpbusd`: the activations are offset to unsigned (`x + 128`, a
/// flip of the sign bit), one instruction multiplies 32 pairs and adds them into eight
/// int32 lanes without saturating. The caller takes the offset (`128·Σw` per block)
/// back out.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avxvnni")]
#[allow(clippy::needless_range_loop)] // register tiles read clearest as acc[r][c]
fn q8_block_vnni<const R: usize, const C: usize>(
    p: &Blocked<'_>,
    y: &mut [f32],
    (i, j, tile): (usize, usize, std::ops::Range<usize>),
) {
    use std::arch::x86_64::*;
    let (k, block) = (p.k, p.block);
    let blocks = k / block;
    let n = p.wq.len() / k;
    let load = |s: &[i8]| -> __m256i {
        assert!(s.len() >= 32);
        // SAFETY: `s` has at least 32 bytes (asserted).
        unsafe { _mm256_loadu_si256(s.as_ptr() as *const __m256i) }
    };
    let hsum = |v: __m256| -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    };
    let flip = _mm256_set1_epi8(i8::MIN);
    let mut accf = [[_mm256_setzero_ps(); C]; R];
    for b in tile {
        let mut acci = [[_mm256_setzero_si256(); C]; R];
        let mut t = b * block;
        while t < (b + 1) * block {
            let xu: [__m256i; R] = std::array::from_fn(|r| {
                _mm256_xor_si256(load(&p.xq[(i + r) * k + t..(i + r) * k + t + 32]), flip)
            });
            for c in 0..C {
                let w = load(&p.wq[(j + c) * k + t..(j + c) * k + t + 32]);
                for r in 0..R {
                    acci[r][c] = _mm256_dpbusd_avx_epi32(acci[r][c], xu[r], w);
                }
            }
            t += 32;
        }
        let sx: [__m256; R] = std::array::from_fn(|r| _mm256_set1_ps(p.xs[(i + r) * blocks + b]));
        let sw: [__m256; C] = std::array::from_fn(|c| _mm256_set1_ps(p.ws[(j + c) * blocks + b]));
        for r in 0..R {
            for c in 0..C {
                let scale = _mm256_mul_ps(sx[r], sw[c]);
                accf[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acci[r][c]), scale, accf[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            y[(i + r) * n + j + c] += hsum(accf[r][c]);
        }
    }
}

#[inline(always)]
fn dot_codes_body(x: &[f32], codes: &[u8]) -> f32 {
    // Eight partial sums let the loop vectorize (float addition is not associative).
    let mut acc = [0.0f32; 8];
    let blocks = x.len() / 8 * 8;
    for (xs, cs) in x[..blocks]
        .chunks_exact(8)
        .zip(codes[..blocks].chunks_exact(8))
    {
        for l in 0..8 {
            acc[l] += xs[l] * cs[l] as f32;
        }
    }
    let tail: f32 = x[blocks..]
        .iter()
        .zip(&codes[blocks..])
        .map(|(&v, &c)| v * c as f32)
        .sum();
    acc.iter().sum::<f32>() + tail
}

kernel! {
    /// `Σ x[i]·codes[i]` in f32, over slices of equal length.
    fn dot_codes(x: &[f32], codes: &[u8]) -> f32 => dot_codes_body
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "x86_64")]
    use proptest::prelude::*;

    proptest! {
        /// The AVX2 product equals the exact integer reference, edge blocks and k tails included.
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn int8_gemm_is_exact((m, n, k) in (1usize..7, 1usize..10, 1usize..70), seed in any::<u64>()) {
            if !crate::kernels::simd_in_use() {
                return Ok(());
            }
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 24) as i8 };
            let a: Vec<i8> = (0..m * k).map(|_| next()).collect();
            let b: Vec<i8> = (0..n * k).map(|_| next()).collect();
            let (mut fast, mut slow) = (vec![0i32; m * n], vec![0i32; m * n]);
            // SAFETY: AVX2 and FMA checked above; lengths are m·k, n·k and m·n.
            unsafe { gemm_i8_avx2(&a, &b, k, &mut fast) };
            gemm_i8_scalar(&a, &b, k, &mut slow);
            prop_assert_eq!(fast, slow);
        }

        /// Blocked products: AVX2 against the scalar reference (same block sums, f32
        /// accumulation in a different order).
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn blocked_twins_agree((m, n, blocks) in (1usize..6, 1usize..6, 1usize..4), seed in any::<u64>(), wide in any::<bool>()) {
            if !crate::kernels::simd_in_use() {
                return Ok(());
            }
            let block = if wide { 64 } else { 32 };
            let k = blocks * block;
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; ((s >> 24) as u8 % 255) as i8 as i32 };
            let xq: Vec<i8> = (0..m * k).map(|_| next().clamp(-127, 127) as i8).collect();
            let wq: Vec<i8> = (0..n * k).map(|_| next().clamp(-127, 127) as i8).collect();
            let xs: Vec<f32> = (0..m * blocks).map(|i| 0.01 + i as f32 * 0.003).collect();
            let ws: Vec<f32> = (0..n * blocks).map(|i| 0.02 + i as f32 * 0.001).collect();
            let wsum: Vec<i32> = wq.chunks(block).map(|c| c.iter().map(|&v| v as i32).sum()).collect();
            let p = Blocked { xq: &xq, xs: &xs, wq: &wq, ws: &ws, wsum: &wsum, k, block };
            let (mut fast, mut slow) = (vec![0f32; m * n], vec![0f32; m * n]);
            fast.fill(0.0);
            // SAFETY: AVX2 and FMA checked above; the block is a multiple of 32.
            unsafe { tiled::<Avx2Tile>(&p, &mut fast, 512) };
            gemm_q8_blocked_scalar(&p, &mut slow);
            for (a, b) in fast.iter().zip(&slow) {
                prop_assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{} vs {}", a, b);
            }
            if crate::kernels::detected_extensions().avx_vnni {
                // SAFETY: the CPU reported AVX-VNNI as well.
                unsafe { gemm_q8_blocked_vnni(&p, &mut fast) };
                for (a, b) in fast.iter().zip(&slow) {
                    prop_assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{} vs {}", a, b);
                }
            }
        }

        #[test]
        fn extreme_values_do_not_overflow(k in 1usize..300) {
            let a = vec![-128i8; 2 * k];
            let b = vec![-128i8; 4 * k];
            let mut c = vec![0i32; 8];
            gemm_i8(&a, &b, k, &mut c);
            prop_assert!(c.iter().all(|&v| v == 16384 * k as i32));
        }

        #[cfg(target_arch = "x86_64")]
        #[test]
        fn dot_codes_twins_agree(x in prop::collection::vec(-1.0f32..1.0, 0..100), seed in any::<u8>()) {
            if !crate::kernels::simd_in_use() {
                return Ok(());
            }
            let codes: Vec<u8> = (0..x.len()).map(|i| (i as u8).wrapping_mul(seed) % 16).collect();
            let fast = dot_codes(&x, &codes);
            let slow = dot_codes::scalar(&x, &codes);
            prop_assert!((fast - slow).abs() <= 1e-4 * (1.0 + slow.abs()));
        }
    }
}
