//! Kernels of exact selection ([`crate::prune`]'s threshold search): counting against a
//! window, and turning a threshold into mask words.

use super::{Key, kernel};
use crate::Scalar;

/// Lanes per block in [`window`]; a block with an in-window value is revisited.
const LANES: usize = 16;

/// What one chunk holds relative to a window `[lo, hi]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Window<T> {
    /// Keys below `lo`.
    pub below: usize,
    /// Keys equal to `lo`.
    pub eq_lo: usize,
    /// Keys equal to `hi` (0 when `hi == lo`).
    pub eq_hi: usize,
    /// Keys strictly between `lo` and `hi`, in order.
    pub mid: Vec<T>,
    /// Index of the first non-finite key.
    pub first_bad: Option<usize>,
}

/// Elements per sub-chunk of [`window`], whose in-window keys gather in a stack buffer.
const SUB: usize = 4096;

#[inline(always)]
fn window_body<T: Scalar, K: Key>(chunk: &[T], lo: T, hi: T) -> Window<T> {
    // Per-lane u32 counters vectorize (a chunk never exceeds 2^32 blocks). In-window keys
    // are gathered branch-free: every key is written, the cursor only advances past the
    // ones inside. A branch or a `Vec::push` per block costs several times more.
    let (mut below, mut eq_lo, mut eq_hi, mut bad) =
        ([0u32; LANES], [0u32; LANES], [0u32; LANES], [0u32; LANES]);
    let count_hi = (hi != lo) as u32;
    let mut mid = Vec::new();
    let mut buf = [T::zero(); SUB];
    let whole = chunk.len() - chunk.len() % LANES;
    let (body, tail) = chunk.split_at(whole);
    for sub in body.chunks(SUB) {
        let mut n = 0;
        for block in sub.chunks_exact(LANES) {
            let mut inside = [0u32; LANES];
            for j in 0..LANES {
                let v = K::key(block[j]);
                below[j] += (v < lo) as u32;
                eq_lo[j] += (v == lo) as u32;
                eq_hi[j] += (v == hi) as u32 & count_hi;
                inside[j] = ((v > lo) & (v < hi)) as u32;
                bad[j] |= (!v.is_finite()) as u32;
            }
            for j in 0..LANES {
                // `n < SUB` always; the mask lets the compiler drop the bounds check.
                buf[n & (SUB - 1)] = K::key(block[j]);
                n += inside[j] as usize;
            }
        }
        mid.extend_from_slice(&buf[..n]);
    }
    let sum = |a: [u32; LANES]| a.iter().map(|&x| x as usize).sum::<usize>();
    let mut out = Window {
        below: sum(below),
        eq_lo: sum(eq_lo),
        eq_hi: sum(eq_hi),
        mid,
        first_bad: None,
    };
    for &x in tail {
        let v = K::key(x);
        out.below += (v < lo) as usize;
        out.eq_lo += (v == lo) as usize;
        out.eq_hi += ((v == hi) as u32 & count_hi) as usize;
        if v > lo && v < hi {
            out.mid.push(v);
        }
    }
    let any_bad = bad.iter().any(|&x| x != 0) || tail.iter().any(|&x| !K::key(x).is_finite());
    if any_bad {
        out.first_bad = chunk.iter().position(|&x| !K::key(x).is_finite());
    }
    out
}

kernel! {
    /// Counts the keys of `chunk` below, at and within `[lo, hi]`, collecting those
    /// strictly inside.
    fn window<T: Scalar, K: Key>(chunk: &[T], lo: T, hi: T) -> Window<T> => window_body
}

/// The keep bits of one 64-element block: key above `t`, or equal to `t` at an index
/// (`base + j`) at or past `tie_cut`.
#[inline(always)]
fn block_bits<T: Scalar, K: Key>(block: &[T], base: usize, t: T, tie_cut: usize) -> u64 {
    let mut bits = 0u64;
    let mut ties = false;
    for (j, &x) in block.iter().enumerate() {
        let v = K::key(x);
        bits |= ((v > t) as u64) << j;
        ties |= v == t;
    }
    if ties {
        for (j, &x) in block.iter().enumerate() {
            if K::key(x) == t && base + j >= tie_cut {
                bits |= 1 << j;
            }
        }
    }
    bits
}

#[inline(always)]
fn keep_words_body<T: Scalar, K: Key>(
    chunk: &[T],
    words: &mut [u64],
    base: usize,
    t: T,
    tie_cut: usize,
) {
    for (w, (word, block)) in words.iter_mut().zip(chunk.chunks(64)).enumerate() {
        *word = block_bits::<T, K>(block, base + w * 64, t, tie_cut);
    }
}

kernel! {
    /// Writes the keep bits of `chunk` (global index of its first element: `base`, a
    /// multiple of 64) into `words`.
    fn keep_words<T: Scalar, K: Key>(chunk: &[T], words: &mut [u64], base: usize, t: T, tie_cut: usize) => keep_words_body
}

#[inline(always)]
fn prune_words_body<T: Scalar, K: Key>(
    chunk: &mut [T],
    words: &mut [u64],
    base: usize,
    t: T,
    tie_cut: usize,
) {
    for (w, (word, block)) in words.iter_mut().zip(chunk.chunks_mut(64)).enumerate() {
        let bits = block_bits::<T, K>(block, base + w * 64, t, tie_cut);
        *word = bits;
        if bits != u64::MAX >> (64 - block.len()) {
            for (j, x) in block.iter_mut().enumerate() {
                *x = if bits >> j & 1 == 1 { *x } else { T::zero() };
            }
        }
    }
}

kernel! {
    /// [`keep_words`], also zeroing the elements it does not keep.
    fn prune_words<T: Scalar, K: Key>(chunk: &mut [T], words: &mut [u64], base: usize, t: T, tie_cut: usize) => prune_words_body
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "x86_64")]
    use crate::kernels::Abs;
    use crate::kernels::Identity;
    use proptest::prelude::*;

    fn values() -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(
            prop_oneof![(-8i8..8).prop_map(|x| x as f32 * 0.25), -2.0f32..2.0],
            0..700,
        )
    }

    proptest! {
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn simd_twins_agree(v in values(), lo in -1.0f32..1.0, width in 0.0f32..1.0, t in -1.0f32..2.0, tie_cut in 0usize..800) {
            if !crate::kernels::simd_in_use() {
                return Ok(());
            }
            let hi = lo + width;
            let simd = window::<f32, Abs>(&v, lo, hi);
            prop_assert_eq!(simd, window::scalar::<f32, Abs>(&v, lo, hi));
            let simd = window::<f32, Identity>(&v, lo, hi);
            prop_assert_eq!(simd, window::scalar::<f32, Identity>(&v, lo, hi));

            let n_words = v.len().div_ceil(64);
            let (mut a, mut b) = (vec![0u64; n_words], vec![0u64; n_words]);
            keep_words::<f32, Abs>(&v, &mut a, 0, t, tie_cut);
            keep_words::scalar::<f32, Abs>(&v, &mut b, 0, t, tie_cut);
            prop_assert_eq!(&a, &b);
            let (mut va, mut vb) = (v.clone(), v.clone());
            prune_words::<f32, Abs>(&mut va, &mut a, 0, t, tie_cut);
            prune_words::scalar::<f32, Abs>(&mut vb, &mut b, 0, t, tie_cut);
            prop_assert_eq!(a, b);
            prop_assert_eq!(va, vb);
        }

        #[test]
        fn window_counts_match_a_plain_count(v in values(), lo in -1.0f32..1.0, width in 0.0f32..1.0) {
            let hi = lo + width;
            let w = window::<f32, Identity>(&v, lo, hi);
            prop_assert_eq!(w.below, v.iter().filter(|&&x| x < lo).count());
            prop_assert_eq!(w.eq_lo, v.iter().filter(|&&x| x == lo).count());
            prop_assert_eq!(w.eq_hi, if hi == lo { 0 } else { v.iter().filter(|&&x| x == hi).count() });
            prop_assert_eq!(w.mid, v.iter().copied().filter(|&x| x > lo && x < hi).collect::<Vec<_>>());
        }
    }
}
