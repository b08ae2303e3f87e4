//! Kernels of the direct depthwise convolution (`crate::nn::conv2d` with
//! `groups = channels`): a row of outputs as a sum of shifted source rows times scalar
//! weights ([`taps`], the forward pass and the input gradient), and the per-tap dot
//! products of the weight gradient ([`tap_dots`]).
//!
//! Products and sums are separate operations (no fused multiply–add), so the scalar
//! twin and the AVX2 versions give the same bits. [`taps`] has an explicit AVX2 version
//! (the compiled copy of the scalar body shuffled its sums between registers), one
//! generic block routine for blocks of 4, 2 or 1 rows by [`BLOCK`] or 8 columns;
//! [`tap_dots`] is the scalar body compiled twice, taking the taps four at a time so
//! that four independent sums are in flight. The register block is [`BLOCK`] output
//! columns (two AVX2 registers, one AVX-512 register).

use super::kernel;

/// Output columns per register block of [`taps`]: the length of its output is a
/// multiple of this.
pub(crate) const BLOCK: usize = 16;

/// Lanes of the partial sums of each tap in [`tap_dots`].
const LANES: usize = 8;

/// The rows of `out` (`[rows, cols]`), after checking that every read of [`taps`]
/// stays inside `src`.
fn checked_rows(
    src: &[f32],
    taps: &[(usize, f32)],
    step: usize,
    out: &[f32],
    cols: usize,
) -> usize {
    assert!(
        cols > 0 && out.len().is_multiple_of(cols),
        "out is rows × {cols}"
    );
    let rows = out.len() / cols;
    if rows > 0 {
        let reach = (rows - 1)
            .checked_mul(step)
            .and_then(|r| r.checked_add(cols.next_multiple_of(BLOCK)))
            .expect("reach fits in usize");
        assert!(
            taps.iter()
                .all(|&(s, _)| s <= src.len() && reach <= src.len() - s),
            "a tap reads past its source"
        );
    }
    rows
}

/// `dst[l] = init + acc[l]` for the first `dst.len()` lanes.
#[inline(always)]
fn store(dst: &mut [f32], init: f32, acc: &[f32; BLOCK]) {
    for (o, a) in dst.iter_mut().zip(acc) {
        *o = init + a;
    }
}

/// The scalar twin of [`taps`] (the reference).
fn taps_scalar(
    src: &[f32],
    taps: &[(usize, f32)],
    step: usize,
    init: f32,
    out: &mut [f32],
    cols: usize,
) {
    checked_rows(src, taps, step, out, cols);
    for (r, row) in out.chunks_exact_mut(cols).enumerate() {
        for b in (0..cols).step_by(BLOCK) {
            let mut acc = [0.0f32; BLOCK];
            for &(start, w) in taps {
                let s: &[f32; BLOCK] = src[start + r * step + b..][..BLOCK]
                    .try_into()
                    .expect("BLOCK elements");
                for l in 0..BLOCK {
                    acc[l] += w * s[l];
                }
            }
            let n = BLOCK.min(cols - b);
            store(&mut row[b..b + n], init, &acc);
        }
    }
}

/// [`taps`] with AVX2: blocks of four output rows at a time, then two, then one
/// ([`taps_block_avx2`]); a last block of at most 8 columns takes one register per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn taps_avx2(
    src: &[f32],
    taps: &[(usize, f32)],
    step: usize,
    init: f32,
    out: &mut [f32],
    cols: usize,
) {
    let rows = checked_rows(src, taps, step, out, cols);
    let mut r = 0;
    while r < rows {
        // Four rows at a time keep eight (or four) independent sums in flight.
        let n_rows = match rows - r {
            1 => 1,
            2 | 3 => 2,
            _ => 4,
        };
        for b in (0..cols).step_by(BLOCK) {
            macro_rules! block {
                ($r:literal, $h:literal) => {
                    // SAFETY: `checked_rows` passed, `r + R ≤ rows`, and `b` is a
                    // multiple of BLOCK below `cols`.
                    unsafe { taps_block_avx2::<$r, $h>(src, taps, step, init, out, cols, r, b) }
                };
            }
            match (n_rows, cols - b > 8) {
                (4, true) => block!(4, 2),
                (4, false) => block!(4, 1),
                (2, true) => block!(2, 2),
                (2, false) => block!(2, 1),
                (_, true) => block!(1, 2),
                (_, false) => block!(1, 1),
            }
        }
        r += n_rows;
    }
}

/// Columns `b..b + 8·H` (clipped to `cols`) of rows `r..r + R` of [`taps_avx2`], each
/// row's in `H` registers, the `R` rows sharing each tap's broadcast weight; products
/// and sums as separate instructions (the scalar twin's bits).
///
/// # Safety
///
/// The CPU has AVX2; `checked_rows(src, taps, step, out, cols)` returned `rows` without
/// panicking; `r + R ≤ rows`, `b` is a multiple of [`BLOCK`] below `cols`, and `H ≤ 2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn taps_block_avx2<const R: usize, const H: usize>(
    src: &[f32],
    taps: &[(usize, f32)],
    step: usize,
    init: f32,
    out: &mut [f32],
    cols: usize,
    r: usize,
    b: usize,
) {
    use std::arch::x86_64::*;
    const _: () = assert!(BLOCK == 16, "two registers of 8 lanes per row");
    let p = src.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); H]; R];
    for &(start, w) in taps {
        let wv = _mm256_set1_ps(w);
        for (i, a) in acc.iter_mut().enumerate() {
            let at = start + (r + i) * step + b;
            for (h, v) in a.iter_mut().enumerate() {
                // SAFETY: `checked_rows` showed `start + (rows − 1)·step + cols rounded
                // up to BLOCK ≤ src.len()` for every tap, and `r + i < rows`, `b + 8·h + 8
                // ≤ b + BLOCK ≤ cols` rounded up: the 8 floats are inside `src`.
                *v = _mm256_add_ps(
                    *v,
                    _mm256_mul_ps(wv, unsafe { _mm256_loadu_ps(p.add(at + 8 * h)) }),
                );
            }
        }
    }
    let n = BLOCK.min(cols - b);
    let vinit = _mm256_set1_ps(init);
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (i, a) in acc.into_iter().enumerate() {
        // `init + acc` into the `n ≤ BLOCK` floats of the row's block.
        let d = out[(r + i) * cols + b..][..n].as_mut_ptr();
        for (h, v) in a.into_iter().enumerate() {
            let v = _mm256_add_ps(vinit, v);
            let m = n.saturating_sub(8 * h).min(8);
            if m == 8 {
                // SAFETY: the block holds `n ≥ 8·h + 8` floats.
                unsafe { _mm256_storeu_ps(d.add(8 * h), v) };
            } else if m > 0 {
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(m as i32), lanes);
                // SAFETY: only the `m` lanes below `n − 8·h` are written, inside the
                // block.
                unsafe { _mm256_maskstore_ps(d.add(8 * h), mask, v) };
            }
        }
    }
}

/// `out[r·cols + t] = init + Σ_k w_k · src[start_k + r·step + t]` for `out`
/// `[rows, cols]` and the taps `(start_k, w_k)`, each sum taken in tap order from zero.
/// Reads up to `cols` rounded up to [`BLOCK`] past each row start; panics if that
/// passes the end of `src`.
pub(crate) fn taps(
    src: &[f32],
    taps: &[(usize, f32)],
    step: usize,
    init: f32,
    out: &mut [f32],
    cols: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if super::level() >= super::Level::Avx2 {
        // SAFETY: `level()` returns Avx2 or above only if the CPU reports AVX2 and FMA.
        unsafe { taps_avx2(src, taps, step, init, out, cols) };
        return;
    }
    taps_scalar(src, taps, step, init, out, cols)
}

/// Taps per group of [`tap_dots`]: each tap of a group has its own accumulators, so
/// the group's sums are independent dependency chains (a single accumulator waits on
/// the latency of every add) and each row of `dy` is loaded once per group.
const TAPS: usize = 4;
const _: () = assert!(TAPS == 4, "tap_dots_body handles remainders of 1 to 3 taps");

/// [`tap_dots`] for the `T` taps `starts`, added to `out`.
#[inline(always)]
fn tap_group<const T: usize>(
    dy: &[f32],
    cols: usize,
    src: &[f32],
    step: usize,
    starts: &[usize],
    out: &mut [f32],
) {
    let whole = cols - cols % LANES;
    let mut lanes = [[0.0f32; LANES]; T];
    let mut tail = [0.0f32; T];
    for (r, d) in dy.chunks_exact(cols).enumerate() {
        let s: [&[f32]; T] = std::array::from_fn(|t| &src[starts[t] + r * step..][..cols]);
        let (dh, dt) = d.split_at(whole);
        for (c, a) in dh.chunks_exact(LANES).enumerate() {
            for (acc, st) in lanes.iter_mut().zip(&s) {
                let b = &st[c * LANES..][..LANES];
                for l in 0..LANES {
                    acc[l] += a[l] * b[l];
                }
            }
        }
        for (acc, st) in tail.iter_mut().zip(&s) {
            for (a, b) in dt.iter().zip(&st[whole..]) {
                *acc += a * b;
            }
        }
    }
    for ((o, acc), t) in out.iter_mut().zip(&lanes).zip(tail) {
        *o += acc.iter().sum::<f32>() + t;
    }
}

#[inline(always)]
fn tap_dots_body(
    dy: &[f32],
    cols: usize,
    src: &[f32],
    step: usize,
    starts: &[usize],
    out: &mut [f32],
) {
    assert!(
        cols > 0 && dy.len().is_multiple_of(cols),
        "dy is rows × {cols}"
    );
    let rows = dy.len() / cols;
    assert_eq!(starts.len(), out.len(), "one output per tap");
    let last = rows.saturating_sub(1) * step;
    assert!(
        starts.iter().all(|&start| start <= src.len()
            && last <= src.len() - start
            && cols <= src.len() - start - last),
        "a tap reads past its source"
    );
    let mut groups = starts.chunks_exact(TAPS).zip(out.chunks_exact_mut(TAPS));
    for (s, o) in &mut groups {
        tap_group::<TAPS>(dy, cols, src, step, s, o);
    }
    let rest = starts.len() - starts.len() % TAPS;
    let (s, o) = (&starts[rest..], &mut out[rest..]);
    match s.len() {
        0 => {}
        1 => tap_group::<1>(dy, cols, src, step, s, o),
        2 => tap_group::<2>(dy, cols, src, step, s, o),
        _ => tap_group::<3>(dy, cols, src, step, s, o),
    }
}

kernel! {
    /// For each tap `k`: `out[k] += Σ_r Σ_{t < cols} dy[r·cols + t] · src[starts[k] + r·step + t]`
    /// over the rows `r` of `dy` (`[rows, cols]`). Panics if a tap reads past `src`.
    fn tap_dots(dy: &[f32], cols: usize, src: &[f32], step: usize, starts: &[usize], out: &mut [f32]) => tap_dots_body
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference_taps(
        src: &[f32],
        t: &[(usize, f32)],
        step: usize,
        init: f32,
        out: &mut [f32],
        cols: usize,
    ) {
        for (i, o) in out.iter_mut().enumerate() {
            let (r, c) = (i / cols, i % cols);
            let mut acc = 0.0f32;
            for &(s, w) in t {
                acc += w * src[s + r * step + c];
            }
            *o = init + acc;
        }
    }

    /// Source, taps, row step, initial value, rows, columns.
    type Case = (Vec<f32>, Vec<(usize, f32)>, usize, f32, usize, usize);

    fn case() -> impl Strategy<Value = Case> {
        (1usize..5, 1usize..50, 0usize..12, 0usize..40, 0usize..20).prop_flat_map(
            |(rows, cols, n_taps, extra, step_extra)| {
                let step = cols + step_extra;
                let len = (rows - 1) * step + cols.next_multiple_of(BLOCK) + extra;
                (
                    prop::collection::vec(-2.0f32..2.0, len),
                    prop::collection::vec((0..=extra, -2.0f32..2.0), n_taps),
                    Just(step),
                    -1.0f32..1.0,
                    Just(rows),
                    Just(cols),
                )
            },
        )
    }

    proptest! {
        #[test]
        fn taps_sum_shifted_rows((src, t, step, init, rows, cols) in case()) {
            let (mut got, mut want) = (vec![f32::NAN; rows * cols], vec![f32::NAN; rows * cols]);
            taps(&src, &t, step, init, &mut got, cols);
            reference_taps(&src, &t, step, init, &mut want, cols);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn tap_dots_are_dot_products(rows in 1usize..5, cols in 1usize..30, step_extra in 0usize..5,
                                     starts in prop::collection::vec(0usize..6, 0..10), seed in 0u32..1000) {
            let step = cols + step_extra;
            let src: Vec<f32> = (0..(rows - 1) * step + cols + 6).map(|i| ((i as u32 * 7 + seed) as f32 * 0.37).sin()).collect();
            let dy: Vec<f32> = (0..rows * cols).map(|i| ((i as u32 * 3 + seed) as f32 * 0.71).cos()).collect();
            let mut got = vec![0.5f32; starts.len()];
            tap_dots(&dy, cols, &src, step, &starts, &mut got);
            for (k, &s) in starts.iter().enumerate() {
                let want: f64 = (0..rows).flat_map(|r| (0..cols).map(move |t| (r, t)))
                    .map(|(r, t)| dy[r * cols + t] as f64 * src[s + r * step + t] as f64).sum::<f64>() + 0.5;
                prop_assert!((got[k] as f64 - want).abs() < 1e-3, "{} vs {}", got[k], want);
            }
        }

        #[cfg(target_arch = "x86_64")]
        #[test]
        fn simd_twins_agree((src, t, step, init, rows, tcols) in case(), cols in 1usize..40) {
            if !crate::kernels::simd_in_use() {
                return Ok(());
            }
            let (mut a, mut b) = (vec![0.0f32; rows * tcols], vec![1.0f32; rows * tcols]);
            // SAFETY: the CPU reported AVX2 and FMA (checked above).
            unsafe { taps_avx2(&src, &t, step, init, &mut a, tcols) };
            taps_scalar(&src, &t, step, init, &mut b, tcols);
            prop_assert_eq!(&a, &b);

            let cols = cols.min(src.len());
            let rows = src.len() / cols;
            let dy: Vec<f32> = src[..rows * cols].iter().rev().copied().collect();
            let starts: Vec<usize> = (0..src.len() - (rows - 1) * cols - cols + 1).collect();
            let (mut da, mut db) = (vec![0.0f32; starts.len()], vec![0.0f32; starts.len()]);
            // SAFETY: as above.
            tap_dots(&dy, cols, &src, cols, &starts, &mut da);
            tap_dots::scalar(&dy, cols, &src, cols, &starts, &mut db);
            prop_assert_eq!(da, db);
        }
    }
}
