//! Kernels of the direct depthwise convolution (`crate::nn::conv2d` with
//! `groups = channels`): a row of outputs as a sum of shifted source rows times scalar
//! weights ([`taps`], the forward pass and the input gradient), and the per-tap dot
//! products of the weight gradient ([`tap_dots`]).
//!
//! Products and sums are separate operations (no fused multiply–add), so the scalar
//! twin and the AVX2 copy give the same bits. The register block is [`BLOCK`] output
//! columns, which a wider tier can keep (two AVX-512 registers).

use super::kernel;

/// Output columns per register block of [`taps`]: the length of its output is a
/// multiple of this.
pub(crate) const BLOCK: usize = 16;

/// Lanes of the partial sums of [`tap_dots`].
const LANES: usize = 8;

#[inline(always)]
fn taps_body(src: &[f32], taps: &[(usize, f32)], out: &mut [f32]) {
    let n = out.len();
    assert!(
        n.is_multiple_of(BLOCK),
        "output length {n} not a multiple of {BLOCK}"
    );
    assert!(
        taps.iter()
            .all(|&(s, _)| s <= src.len() && n <= src.len() - s),
        "a tap reads past its source"
    );
    for (b, block) in out.chunks_exact_mut(BLOCK).enumerate() {
        let mut acc = [0.0f32; BLOCK];
        for &(start, w) in taps {
            let s: &[f32; BLOCK] = src[start + b * BLOCK..][..BLOCK]
                .try_into()
                .expect("BLOCK elements");
            for l in 0..BLOCK {
                acc[l] += w * s[l];
            }
        }
        for (o, a) in block.iter_mut().zip(acc) {
            *o += a;
        }
    }
}

kernel! {
    /// `out[t] += Σ_k w_k · src[start_k + t]` for the taps `(start_k, w_k)`, summed in
    /// tap order from zero and then added to `out` (whose length is a multiple of
    /// [`BLOCK`]). Panics if a tap reads past `src`.
    fn taps(src: &[f32], taps: &[(usize, f32)], out: &mut [f32]) => taps_body
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
    let whole = cols - cols % LANES;
    for (&start, o) in starts.iter().zip(out.iter_mut()) {
        let last = (rows - 1) * step;
        assert!(
            start <= src.len() && last <= src.len() - start && cols <= src.len() - start - last,
            "a tap reads past its source"
        );
        let mut lanes = [0.0f32; LANES];
        let mut tail = 0.0f32;
        for (r, d) in dy.chunks_exact(cols).enumerate() {
            let s = &src[start + r * step..][..cols];
            let (dh, dt) = d.split_at(whole);
            let (sh, st) = s.split_at(whole);
            for (a, b) in dh.chunks_exact(LANES).zip(sh.chunks_exact(LANES)) {
                for l in 0..LANES {
                    lanes[l] += a[l] * b[l];
                }
            }
            for (a, b) in dt.iter().zip(st) {
                tail += a * b;
            }
        }
        *o += lanes.iter().sum::<f32>() + tail;
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

    fn reference_taps(src: &[f32], t: &[(usize, f32)], out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for &(s, w) in t {
                acc += w * src[s + i];
            }
            *o += acc;
        }
    }

    /// Source, taps, output length, initial output.
    type Case = (Vec<f32>, Vec<(usize, f32)>, usize, Vec<f32>);

    fn case() -> impl Strategy<Value = Case> {
        (1usize..4, 0usize..12, 0usize..40).prop_flat_map(|(blocks, n_taps, extra)| {
            let n = blocks * BLOCK;
            let len = n + extra;
            (
                prop::collection::vec(-2.0f32..2.0, len),
                prop::collection::vec((0..=extra, -2.0f32..2.0), n_taps),
                Just(n),
                prop::collection::vec(-1.0f32..1.0, n),
            )
        })
    }

    proptest! {
        #[test]
        fn taps_sum_shifted_rows((src, t, _n, out) in case()) {
            let (mut got, mut want) = (out.clone(), out);
            taps(&src, &t, &mut got);
            reference_taps(&src, &t, &mut want);
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
        fn simd_twins_agree((src, t, _n, out) in case(), cols in 1usize..40) {
            if !crate::kernels::avx2_in_use() {
                return Ok(());
            }
            let (mut a, mut b) = (out.clone(), out);
            // SAFETY: the CPU reported AVX2 and FMA (checked above).
            unsafe { taps::avx2(&src, &t, &mut a) };
            taps::scalar(&src, &t, &mut b);
            prop_assert_eq!(&a, &b);

            let cols = cols.min(src.len());
            let rows = src.len() / cols;
            let dy: Vec<f32> = src[..rows * cols].iter().rev().copied().collect();
            let starts: Vec<usize> = (0..src.len() - (rows - 1) * cols - cols + 1).collect();
            let (mut da, mut db) = (vec![0.0f32; starts.len()], vec![0.0f32; starts.len()]);
            // SAFETY: as above.
            unsafe { tap_dots::avx2(&dy, cols, &src, cols, &starts, &mut da) };
            tap_dots::scalar(&dy, cols, &src, cols, &starts, &mut db);
            prop_assert_eq!(da, db);
        }
    }
}
