//! The dense product `y = x·Wᵀ` of `nn`'s Linear layer, each entry a dot product
//! summed in one fixed order (eight lanes along the inputs, then the lanes in order,
//! then the tail), so that a sample's output is the same bits whatever batch it runs
//! in, however the work is split, and at every tier.
//!
//! The work is blocked for the registers (two samples × four outputs share their
//! loads; four samples on the AVX-512 tier) and for the cache (a tile of weight rows
//! stays in L2 while the samples pass). The AVX-512 tier holds two of the eight-lane
//! accumulators in each 512-bit register (two samples against one weight row, or one
//! sample against two rows), so each instruction does the work of two AVX2 ones in the
//! same order.

/// Lanes per accumulator.
const L: usize = 8;

/// Weight rows per cache tile.
const TILE: usize = 64;

/// `y[s][o] = Σ_c x[s][c]·w[o][c]` for `S` samples and `O` weight rows of length `k`,
/// in the fixed order; the tiers differ only in how the lanes are held.
trait Block {
    fn run<const S: usize, const O: usize>(
        xs: [&[f32]; S],
        ws: [&[f32]; O],
        k: usize,
    ) -> [[f32; O]; S];
}

/// The lanes summed in order, then the tail's products in order.
#[inline(always)]
fn finish(lanes: [f32; L], x: &[f32], w: &[f32]) -> f32 {
    let tail: f32 = x.iter().zip(w).map(|(a, b)| a * b).sum();
    lanes.iter().sum::<f32>() + tail
}

/// The inputs covered by whole lane sets, after checking that every row holds `k`
/// values (what the SIMD blocks' unchecked loads rely on).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn full_lanes(xs: &[&[f32]], ws: &[&[f32]], k: usize) -> usize {
    for row in xs.iter().chain(ws) {
        assert!(row.len() >= k, "rows hold k values");
    }
    k - k % L
}

/// The scalar twin.
struct Scalar;

impl Block for Scalar {
    #[inline(always)]
    fn run<const S: usize, const O: usize>(
        xs: [&[f32]; S],
        ws: [&[f32]; O],
        k: usize,
    ) -> [[f32; O]; S] {
        let full = k - k % L;
        let mut acc = [[[0.0f32; L]; O]; S];
        for c in (0..full).step_by(L) {
            for (acc_s, x) in acc.iter_mut().zip(xs) {
                for (a, w) in acc_s.iter_mut().zip(ws) {
                    for l in 0..L {
                        a[l] += x[c + l] * w[c + l];
                    }
                }
            }
        }
        std::array::from_fn(|s| {
            std::array::from_fn(|o| finish(acc[s][o], &xs[s][full..k], &ws[o][full..k]))
        })
    }
}

/// AVX2: one 256-bit register per lane set (multiply, then add: the same two roundings
/// as the scalar twin, so the tiers agree to the bit).
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Block for Avx2 {
    #[inline(always)]
    fn run<const S: usize, const O: usize>(
        xs: [&[f32]; S],
        ws: [&[f32]; O],
        k: usize,
    ) -> [[f32; O]; S] {
        // SAFETY: only reached from `linear_avx2`, which runs where the CPU has AVX2.
        unsafe { block_avx2(xs, ws, k) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn block_avx2<const S: usize, const O: usize>(
    xs: [&[f32]; S],
    ws: [&[f32]; O],
    k: usize,
) -> [[f32; O]; S] {
    use std::arch::x86_64::*;
    let full = full_lanes(&xs, &ws, k);
    let mut acc = [[_mm256_setzero_ps(); O]; S];
    for c in (0..full).step_by(L) {
        // SAFETY: c + L <= full <= k <= every row's length (asserted above).
        let xv: [__m256; S] =
            std::array::from_fn(|s| unsafe { _mm256_loadu_ps(xs[s].as_ptr().add(c)) });
        for (o, w) in ws.iter().enumerate() {
            // SAFETY: as above.
            let wv = unsafe { _mm256_loadu_ps(w.as_ptr().add(c)) };
            for s in 0..S {
                acc[s][o] = _mm256_add_ps(acc[s][o], _mm256_mul_ps(xv[s], wv));
            }
        }
    }
    std::array::from_fn(|s| {
        std::array::from_fn(|o| {
            let mut lanes = [0.0f32; L];
            // SAFETY: `lanes` holds L = 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[s][o]) };
            finish(lanes, &xs[s][full..k], &ws[o][full..k])
        })
    })
}

/// AVX-512: two eight-lane accumulators per 512-bit register, multiply then add as in
/// the scalar twin; a lone sample against a lone row runs the AVX2 block.
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Block for Avx512 {
    #[inline(always)]
    fn run<const S: usize, const O: usize>(
        xs: [&[f32]; S],
        ws: [&[f32]; O],
        k: usize,
    ) -> [[f32; O]; S] {
        if !S.is_multiple_of(2) && !O.is_multiple_of(2) {
            // SAFETY: only reached from `linear_avx512`, which runs where the CPU has
            // AVX-512 F, BW, VL and AVX2.
            return unsafe { block_avx2(xs, ws, k) };
        }
        // SAFETY: as above.
        unsafe { block_avx512(xs, ws, k) }
    }
}

/// Eight floats at `a` in the low half and eight at `b` in the high half.
///
/// # Safety
/// `a` and `b` point to eight readable floats each; the CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn load_halves(a: *const f32, b: *const f32) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees eight floats at `a` and at `b`.
    let (lo, hi) = unsafe { (_mm256_loadu_ps(a), _mm256_loadu_pd(b.cast())) };
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        _mm512_castps_pd(_mm512_castps256_ps512(lo)),
        hi,
    ))
}

/// The block with pairs of accumulators in 512-bit registers: samples `2p` and `2p + 1`
/// against each row when `S` is even, else each sample against rows `2q` and `2q + 1`
/// (`O` even).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
#[inline]
fn block_avx512<const S: usize, const O: usize>(
    xs: [&[f32]; S],
    ws: [&[f32]; O],
    k: usize,
) -> [[f32; O]; S] {
    use std::arch::x86_64::*;
    let full = full_lanes(&xs, &ws, k);
    let by_samples = S.is_multiple_of(2);
    // Accumulator (a, b) holds the pairs: (samples 2a, 2a + 1; row b) when pairing
    // samples, (sample a; rows 2b, 2b + 1) when pairing rows. Unused entries stay zero.
    let mut acc = [[_mm512_setzero_ps(); O]; S];
    for c in (0..full).step_by(L) {
        // SAFETY (every load below): c + L <= full <= k <= every row's length.
        if by_samples {
            for p in 0..S / 2 {
                let xv = unsafe {
                    load_halves(xs[2 * p].as_ptr().add(c), xs[2 * p + 1].as_ptr().add(c))
                };
                for (o, w) in ws.iter().enumerate() {
                    let wv = unsafe {
                        _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(
                            w.as_ptr().add(c).cast(),
                        )))
                    };
                    acc[p][o] = _mm512_add_ps(acc[p][o], _mm512_mul_ps(xv, wv));
                }
            }
        } else {
            for (s, x) in xs.iter().enumerate() {
                let xv = unsafe {
                    _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(
                        x.as_ptr().add(c).cast(),
                    )))
                };
                for q in 0..O / 2 {
                    let wv = unsafe {
                        load_halves(ws[2 * q].as_ptr().add(c), ws[2 * q + 1].as_ptr().add(c))
                    };
                    acc[s][q] = _mm512_add_ps(acc[s][q], _mm512_mul_ps(xv, wv));
                }
            }
        }
    }
    let mut out = [[0.0f32; O]; S];
    let mut place = |s: usize, o: usize, lanes: &[f32]| {
        let lanes: [f32; L] = lanes.try_into().expect("eight lanes");
        out[s][o] = finish(lanes, &xs[s][full..k], &ws[o][full..k]);
    };
    let mut both = [0.0f32; 2 * L];
    for (a, row) in acc.iter().enumerate() {
        for (b, &v) in row.iter().enumerate() {
            let pair = if by_samples {
                (a < S / 2).then_some([(2 * a, b), (2 * a + 1, b)])
            } else {
                (b < O / 2).then_some([(a, 2 * b), (a, 2 * b + 1)])
            };
            if let Some([(s0, o0), (s1, o1)]) = pair {
                // SAFETY: `both` holds 16 floats.
                unsafe { _mm512_storeu_ps(both.as_mut_ptr(), v) };
                place(s0, o0, &both[..L]);
                place(s1, o1, &both[L..]);
            }
        }
    }
    out
}

/// Samples `S` at once against every weight row of `w` (`[r, k]`), into `y` rows of
/// stride `ys`, four rows at a time.
#[inline(always)]
fn samples<B: Block, const S: usize>(
    xs: [&[f32]; S],
    w: &[f32],
    k: usize,
    y: &mut [f32],
    ys: usize,
) {
    let r = w.len() / k;
    let row = |o: usize| &w[o * k..(o + 1) * k];
    let mut o = 0;
    while o + 4 <= r {
        let out = B::run(xs, [row(o), row(o + 1), row(o + 2), row(o + 3)], k);
        for (s, v) in out.iter().enumerate() {
            y[s * ys + o..s * ys + o + 4].copy_from_slice(v);
        }
        o += 4;
    }
    for o in o..r {
        let out = B::run(xs, [row(o)], k);
        for (s, v) in out.iter().enumerate() {
            y[s * ys + o] = v[0];
        }
    }
}

/// `y = x·wᵀ` for `x` `[m, k]`, `w` `[r, k]` and `y` `[m, r]`, row-major: weight
/// tiles outermost, `S` samples at a time (then pairs, then one).
#[inline(always)]
fn drive<B: Block, const S: usize>(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    let (m, r) = (x.len() / k, w.len() / k);
    let rows = |s: usize| &x[s * k..(s + 1) * k];
    for o0 in (0..r).step_by(TILE) {
        let o1 = (o0 + TILE).min(r);
        let tile = &w[o0 * k..o1 * k];
        let mut s = 0;
        while s + S <= m {
            let xs: [&[f32]; S] = std::array::from_fn(|i| rows(s + i));
            samples::<B, S>(xs, tile, k, &mut y[s * r + o0..], r);
            s += S;
        }
        while s + 2 <= m {
            samples::<B, 2>([rows(s), rows(s + 1)], tile, k, &mut y[s * r + o0..], r);
            s += 2;
        }
        if s < m {
            samples::<B, 1>([rows(s)], tile, k, &mut y[s * r + o0..], r);
        }
    }
}

/// `y = x·wᵀ` for `x` `[m, k]`, `w` `[r, k]`, `y` `[m, r]` (row-major, `k > 0`,
/// lengths multiples of `k` and `y.len() = m·r`): each entry summed in the fixed order
/// of this module, on the best tier.
pub(crate) fn linear(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match super::level() {
        // SAFETY: `level()` returns Avx512 only if the CPU reports AVX2, FMA and
        // AVX-512 F, BW and VL.
        super::Level::Avx512 => return unsafe { linear_avx512(x, w, k, y) },
        // SAFETY: `level()` returns Avx2 only if the CPU reports AVX2 and FMA.
        super::Level::Avx2 => return unsafe { linear_avx2(x, w, k, y) },
        super::Level::Scalar => {}
    }
    linear_scalar(x, w, k, y)
}

/// [`linear`]'s scalar twin.
fn linear_scalar(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    drive::<Scalar, 2>(x, w, k, y)
}

/// [`linear`] with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn linear_avx2(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    drive::<Avx2, 2>(x, w, k, y)
}

/// [`linear`] with AVX-512: four samples × four rows per block (eight registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
fn linear_avx512(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    drive::<Avx512, 4>(x, w, k, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn case() -> impl Strategy<Value = (Vec<f32>, Vec<f32>, usize)> {
        (1usize..7, 1usize..11, 1usize..40).prop_flat_map(|(m, r, k)| {
            (
                proptest::collection::vec(-2.0f32..2.0, m * k),
                proptest::collection::vec(-2.0f32..2.0, r * k),
                Just(k),
            )
        })
    }

    proptest! {
        /// Close to the exact product, and each sample's row the same bits when it
        /// runs alone.
        #[test]
        fn products_are_batch_invariant((x, w, k) in case()) {
            let (m, r) = (x.len() / k, w.len() / k);
            let mut y = vec![f32::NAN; m * r];
            linear(&x, &w, k, &mut y);
            for s in 0..m {
                let mut alone = vec![f32::NAN; r];
                linear(&x[s * k..(s + 1) * k], &w, k, &mut alone);
                prop_assert_eq!(&y[s * r..(s + 1) * r], &alone[..]);
                for o in 0..r {
                    let exact: f64 = (0..k)
                        .map(|c| x[s * k + c] as f64 * w[o * k + c] as f64)
                        .sum();
                    prop_assert!((y[s * r + o] as f64 - exact).abs() < 1e-4 * (k as f64));
                }
            }
        }

        /// The tier in use (AVX-512 or AVX2; CI forces each) gives the scalar twin's
        /// bits; where AVX-512 runs, the AVX2 copy is compared as well.
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn simd_twins_agree((x, w, k) in case()) {
            if !crate::kernels::simd_in_use() {
                return Ok(());
            }
            let n = x.len() / k * (w.len() / k);
            let (mut a, mut b) = (vec![0.0f32; n], vec![1.0f32; n]);
            linear(&x, &w, k, &mut a);
            linear_scalar(&x, &w, k, &mut b);
            prop_assert_eq!(&a, &b);
            if crate::kernels::level() == crate::kernels::Level::Avx512 {
                let mut c = vec![2.0f32; n];
                // SAFETY: the AVX-512 tier implies AVX2 and FMA.
                unsafe { linear_avx2(&x, &w, k, &mut c) };
                prop_assert_eq!(&c, &b);
            }
        }
    }
}
