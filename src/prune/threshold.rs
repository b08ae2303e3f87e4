//! Exact selection of the `k` lowest-scoring elements across many slices, in O(n).
//!
//! Global magnitude pruning must remove exactly `k` of `n` weights spread over many
//! tensors. Sorting costs O(n log n) and copying the scores costs memory traffic, so this
//! module follows Floyd & Rivest's selection: a small random sample brackets the k-th
//! score in a narrow window `[lo, hi]`; one streaming pass counts the elements below the
//! window and at its two ends, and collects the few strictly inside it; the k-th score
//! is selected among those. Ties at the threshold are broken by position (slice, then
//! row-major index): the earlier ones are pruned, so the result is deterministic and
//! the count exact. If the window missed (rare), the pass is repeated on the side where
//! the k-th score lies, with the whole side as the window.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::kernels::select::{Window, keep_words, prune_words, window};
use crate::kernels::{Abs, Identity, Key};
use crate::mask::Mask;
use crate::tensor::Scalar;

/// Elements per parallel task in a pass.
const TASK: usize = 1 << 16;
/// Below this many elements the window is everything: collect and select directly.
const SMALL: usize = 1 << 16;
/// Sample size for bracketing the k-th score.
const SAMPLE: usize = 1 << 14;

/// Which elements to prune: those whose key is below `threshold`, and those whose key
/// equals it and whose position (slice, index) is before `tie_end`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Cut<T> {
    pub threshold: T,
    pub tie_end: (usize, usize),
}

impl<T: Scalar> Cut<T> {
    /// Within slice `s`, ties at the threshold are pruned at indices below the returned one.
    #[inline]
    pub fn tie_cut(&self, s: usize) -> usize {
        match s.cmp(&self.tie_end.0) {
            Ordering::Less => usize::MAX,
            Ordering::Equal => self.tie_end.1,
            Ordering::Greater => 0,
        }
    }
}

/// The first non-finite key found: (slice, index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NonFiniteAt(pub usize, pub usize);

/// Finds the cut that prunes exactly `k` elements: the `k` smallest by
/// (`K::key(x)`, slice, index). Every key must be finite.
pub(crate) fn select<T: Scalar, K: Key>(slices: &[&[T]], k: usize) -> Result<Cut<T>, NonFiniteAt> {
    let n: usize = slices.iter().map(|s| s.len()).sum();
    assert!(k <= n, "select: k = {k} exceeds n = {n}");
    if k == 0 || k == n {
        first_non_finite::<T, K>(slices).map_or(Ok(()), Err)?;
        let threshold = if k == 0 {
            T::neg_infinity()
        } else {
            T::infinity()
        };
        return Ok(Cut {
            threshold,
            tie_end: (0, 0),
        });
    }
    let (mut lo, mut hi) = if n <= SMALL {
        (T::neg_infinity(), T::infinity())
    } else {
        bracket::<T, K>(slices, k, n)
    };
    loop {
        let p = pass::<T, K>(slices, lo, hi);
        if let Some(bad) = p.first_bad {
            return Err(bad);
        }
        // `k` is a count; the k-th smallest has rank k (1-based).
        let (below, eq_lo, mid, eq_hi) = (p.below, p.eq_lo, p.mid.len(), p.eq_hi);
        if k <= below {
            (lo, hi) = (T::neg_infinity(), lo);
            continue;
        }
        if k > below + eq_lo + mid + eq_hi {
            (lo, hi) = (hi, T::infinity());
            continue;
        }
        let (threshold, less, equal) = if k <= below + eq_lo {
            (lo, below, eq_lo)
        } else if k <= below + eq_lo + mid {
            let mut keys = p.mid;
            let r = k - below - eq_lo - 1;
            let (_, &mut t, _) = keys.select_nth_unstable_by(r, cmp);
            let less_in_mid = keys.iter().filter(|&&x| x < t).count();
            let eq_in_mid = keys.iter().filter(|&&x| x == t).count();
            (t, below + eq_lo + less_in_mid, eq_in_mid)
        } else {
            (hi, below + eq_lo + mid, eq_hi)
        };
        let need = k - less;
        let tie_end = if need == equal {
            (slices.len(), 0)
        } else {
            nth_tie::<T, K>(slices, threshold, need)
        };
        return Ok(Cut { threshold, tie_end });
    }
}

#[inline]
fn cmp<T: Scalar>(a: &T, b: &T) -> Ordering {
    a.partial_cmp(b).unwrap_or(Ordering::Equal)
}

/// A window `[lo, hi]` that holds the k-th smallest key with high probability, from a
/// fixed-seed random sample (reproducible: the same input gives the same window).
fn bracket<T: Scalar, K: Key>(slices: &[&[T]], k: usize, n: usize) -> (T, T) {
    let starts: Vec<usize> = slices
        .iter()
        .scan(0, |acc, s| {
            let st = *acc;
            *acc += s.len();
            Some(st)
        })
        .collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut sample: Vec<T> = (0..SAMPLE)
        .filter_map(|_| {
            let pos = ((splitmix64(&mut state) as u128 * n as u128) >> 64) as usize;
            let s = starts.partition_point(|&st| st <= pos) - 1;
            let x = K::key(slices[s][pos - starts[s]]);
            x.is_finite().then_some(x)
        })
        .collect();
    if sample.is_empty() {
        return (T::neg_infinity(), T::infinity());
    }
    sample.sort_unstable_by(cmp);
    let m = sample.len() as f64;
    let p = k as f64 / n as f64;
    let center = p * m;
    let spread = 4.0 * (m * p * (1.0 - p)).sqrt() + 8.0;
    let lo_rank = center - spread;
    let hi_rank = center + spread;
    let lo = if lo_rank < 0.0 {
        T::neg_infinity()
    } else {
        sample[lo_rank as usize]
    };
    let hi = if hi_rank >= m - 1.0 {
        T::infinity()
    } else {
        sample[hi_rank.ceil() as usize]
    };
    (lo, hi)
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One streaming pass's result over all slices (see [`Window`]),
/// with the first non-finite key located by (slice, index).
#[derive(Default)]
struct Pass<T> {
    below: usize,
    eq_lo: usize,
    eq_hi: usize,
    mid: Vec<T>,
    first_bad: Option<NonFiniteAt>,
}

/// The chunks of a pass, (slice, range), in global order.
fn tasks<'s, T>(slices: &[&'s [T]]) -> Vec<(usize, usize, &'s [T])> {
    slices
        .iter()
        .enumerate()
        .flat_map(|(s, sl)| {
            sl.chunks(TASK)
                .enumerate()
                .map(move |(c, ch)| (s, c * TASK, ch))
        })
        .collect()
}

fn pass<T: Scalar, K: Key>(slices: &[&[T]], lo: T, hi: T) -> Pass<T> {
    let parts: Vec<(usize, usize, Window<T>)> = tasks(slices)
        .into_par_iter()
        .map(|(s, start, chunk)| (s, start, window::<T, K>(chunk, lo, hi)))
        .collect();
    let mut out = Pass {
        mid: Vec::with_capacity(parts.iter().map(|p| p.2.mid.len()).sum()),
        ..Pass::default()
    };
    for (s, start, w) in parts {
        out.below += w.below;
        out.eq_lo += w.eq_lo;
        out.eq_hi += w.eq_hi;
        out.mid.extend_from_slice(&w.mid);
        // Tasks are in global order, so the first one reported is the first overall.
        out.first_bad = out
            .first_bad
            .or(w.first_bad.map(|i| NonFiniteAt(s, start + i)));
    }
    out
}

fn first_non_finite<T: Scalar, K: Key>(slices: &[&[T]]) -> Option<NonFiniteAt> {
    pass::<T, K>(slices, T::neg_infinity(), T::neg_infinity()).first_bad
}

/// The position just after the `need`-th (1-based) element whose key equals `t`.
fn nth_tie<T: Scalar, K: Key>(slices: &[&[T]], t: T, need: usize) -> (usize, usize) {
    let tasks = tasks(slices);
    let counts: Vec<usize> = tasks
        .par_iter()
        .map(|(_, _, chunk)| chunk.iter().filter(|&&x| K::key(x) == t).count())
        .collect();
    let mut remaining = need;
    for (&(s, start, chunk), &c) in tasks.iter().zip(&counts) {
        if remaining > c {
            remaining -= c;
            continue;
        }
        let i = chunk
            .iter()
            .enumerate()
            .filter(|&(_, &x)| K::key(x) == t)
            .nth(remaining - 1)
            .map(|(i, _)| i)
            .expect("the chunk holds `remaining` ties");
        return (s, start + i + 1);
    }
    unreachable!("fewer than `need` ties at the threshold")
}

/// [`select`] ranking by magnitude (`abs`) or by value.
pub(crate) fn select_by<T: Scalar>(
    slices: &[&[T]],
    k: usize,
    abs: bool,
) -> Result<Cut<T>, NonFiniteAt> {
    if abs {
        select::<T, Abs>(slices, k)
    } else {
        select::<T, Identity>(slices, k)
    }
}

/// [`mask_of`] ranking by magnitude (`abs`) or by value.
pub(crate) fn mask_by<T: Scalar>(
    values: &[T],
    shape: &[usize],
    s: usize,
    cut: &Cut<T>,
    abs: bool,
) -> Mask {
    if abs {
        mask_of::<T, Abs>(values, shape, s, cut)
    } else {
        mask_of::<T, Identity>(values, shape, s, cut)
    }
}

/// The mask that `cut` gives slice number `s` (of shape `shape`).
pub(crate) fn mask_of<T: Scalar, K: Key>(
    values: &[T],
    shape: &[usize],
    s: usize,
    cut: &Cut<T>,
) -> Mask {
    let mut mask = Mask::zeros(shape);
    let (t, tc) = (cut.threshold, cut.tie_cut(s));
    mask.words_mut()
        .par_chunks_mut(TASK / 64)
        .zip(values.par_chunks(TASK))
        .enumerate()
        .for_each(|(task, (words, chunk))| keep_words::<T, K>(chunk, words, task * TASK, t, tc));
    mask
}

/// Like [`mask_of`], and zeroes the pruned elements of `values` in the same pass.
pub(crate) fn prune_in_place<T: Scalar, K: Key>(
    values: &mut [T],
    shape: &[usize],
    s: usize,
    cut: &Cut<T>,
) -> Mask {
    let mut mask = Mask::zeros(shape);
    let (t, tc) = (cut.threshold, cut.tie_cut(s));
    mask.words_mut()
        .par_chunks_mut(TASK / 64)
        .zip(values.par_chunks_mut(TASK))
        .enumerate()
        .for_each(|(task, (words, chunk))| prune_words::<T, K>(chunk, words, task * TASK, t, tc));
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: sort all (key, slice, index) and take the first k.
    fn reference(slices: &[Vec<f32>], k: usize) -> Vec<Vec<bool>> {
        let mut all: Vec<(f32, usize, usize)> = slices
            .iter()
            .enumerate()
            .flat_map(|(s, v)| v.iter().enumerate().map(move |(i, &x)| (x.abs(), s, i)))
            .collect();
        all.sort_by(|a, b| {
            a.0.partial_cmp(&b.0)
                .unwrap()
                .then((a.1, a.2).cmp(&(b.1, b.2)))
        });
        let mut keep: Vec<Vec<bool>> = slices.iter().map(|v| vec![true; v.len()]).collect();
        for &(_, s, i) in &all[..k] {
            keep[s][i] = false;
        }
        keep
    }

    fn check(slices: Vec<Vec<f32>>, frac: f64) {
        let n: usize = slices.iter().map(Vec::len).sum();
        let k = ((n as f64) * frac).round_ties_even() as usize;
        let refs: Vec<&[f32]> = slices.iter().map(|v| v.as_slice()).collect();
        let cut = select::<f32, Abs>(&refs, k).unwrap();
        let want = reference(&slices, k);
        for (s, v) in slices.iter().enumerate() {
            let m = mask_of::<f32, Abs>(v, &[v.len()], s, &cut);
            let mut pruned = v.clone();
            let m2 = prune_in_place::<f32, Abs>(&mut pruned, &[v.len()], s, &cut);
            assert_eq!(m, m2);
            for (i, (&a, &b)) in v.iter().zip(&pruned).enumerate() {
                assert_eq!(if m.get(i) { a } else { 0.0 }, b);
            }
            let got: Vec<bool> = (0..v.len()).map(|i| m.get(i)).collect();
            assert_eq!(got, want[s], "slice {s}");
        }
    }

    proptest! {
        #[test]
        fn matches_sorting_reference(
            slices in prop::collection::vec(prop::collection::vec(-4i8..4, 0..300), 1..5),
            frac in 0.0f64..=1.0,
        ) {
            // Small integers: many ties, the hard case.
            let slices: Vec<Vec<f32>> =
                slices.into_iter().map(|v| v.into_iter().map(|x| x as f32 * 0.5).collect()).collect();
            check(slices, frac);
        }
    }

    #[test]
    fn large_inputs_take_the_sampled_path() {
        let mut state = 7u64;
        let mk = |len: usize, state: &mut u64| -> Vec<f32> {
            (0..len)
                .map(|_| (splitmix64(state) >> 40) as f32 / 16777216.0 - 0.5)
                .collect()
        };
        let slices = vec![
            mk(150_000, &mut state),
            mk(70_001, &mut state),
            mk(3, &mut state),
        ];
        for frac in [0.0, 0.001, 0.3, 0.9, 0.999, 1.0] {
            check(slices.clone(), frac);
        }
        // Massive ties: a third of the elements are zero.
        let mut tied = slices.clone();
        tied[0][..80_000].fill(0.0);
        for frac in [0.1, 0.36, 0.5] {
            check(tied.clone(), frac);
        }
    }

    #[test]
    fn reports_the_first_non_finite_key() {
        let a = vec![1.0f32; 10];
        let mut b = vec![1.0f32; 100_000];
        b[77_777] = f32::NAN;
        b[90_000] = f32::INFINITY;
        let err = select::<f32, Abs>(&[&a, &b], 50).unwrap_err();
        assert_eq!(err, NonFiniteAt(1, 77_777));
        let err = select::<f32, Abs>(&[&a, &b], 0).unwrap_err();
        assert_eq!(err, NonFiniteAt(1, 77_777));
    }
}
