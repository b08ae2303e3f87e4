//! The dense product `y = x·Wᵀ` of `nn`'s Linear layer, each entry a dot product
//! summed in one fixed order (eight lanes along the inputs, then the lanes in order,
//! then the tail), so that a sample's output is the same bits whatever batch it runs
//! in, however the work is split, and at every tier.
//!
//! The work is blocked for the registers (two samples × four outputs share their
//! loads) and for the cache (a tile of weight rows stays in L2 while the samples pass).

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
    let full = k - k % L;
    for row in xs.iter().chain(&ws) {
        assert!(row.len() >= k, "rows hold k values");
    }
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
/// tiles outermost, two samples at a time.
#[inline(always)]
fn drive<B: Block>(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    let (m, r) = (x.len() / k, w.len() / k);
    for o0 in (0..r).step_by(TILE) {
        let o1 = (o0 + TILE).min(r);
        let tile = &w[o0 * k..o1 * k];
        let mut s = 0;
        while s + 2 <= m {
            let xs = [&x[s * k..(s + 1) * k], &x[(s + 1) * k..(s + 2) * k]];
            samples::<B, 2>(xs, tile, k, &mut y[s * r + o0..], r);
            s += 2;
        }
        if s < m {
            samples::<B, 1>([&x[s * k..(s + 1) * k]], tile, k, &mut y[s * r + o0..], r);
        }
    }
}

/// `y = x·wᵀ` for `x` `[m, k]`, `w` `[r, k]`, `y` `[m, r]` (row-major, `k > 0`,
/// lengths multiples of `k` and `y.len() = m·r`): each entry summed in the fixed order
/// of this module, on the best tier.
pub(crate) fn linear(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::level() >= super::Level::Avx2 {
        // SAFETY: `level()` returns Avx2 only if the CPU reports AVX2 and FMA.
        return unsafe { linear_avx2(x, w, k, y) };
    }
    linear_scalar(x, w, k, y)
}

/// [`linear`]'s scalar twin.
fn linear_scalar(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    drive::<Scalar>(x, w, k, y)
}

/// [`linear`] with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn linear_avx2(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    drive::<Avx2>(x, w, k, y)
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

        #[cfg(target_arch = "x86_64")]
        #[test]
        fn simd_twins_agree((x, w, k) in case()) {
            if !crate::kernels::simd_in_use() {
                return Ok(());
            }
            let r = w.len() / k;
            let (mut a, mut b) = (vec![0.0f32; x.len() / k * r], vec![1.0f32; x.len() / k * r]);
            // SAFETY: the CPU reported AVX2 and FMA (checked above).
            unsafe { linear_avx2(&x, &w, k, &mut a) };
            linear_scalar(&x, &w, k, &mut b);
            prop_assert_eq!(a, b);
        }
    }
}
