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
/// (`key(x)`, slice, index). Every key must be finite.
pub(crate) fn select<T, K>(slices: &[&[T]], k: usize, key: K) -> Result<Cut<T>, NonFiniteAt>
where
    T: Scalar,
    K: Fn(T) -> T + Sync + Copy,
{
    let n: usize = slices.iter().map(|s| s.len()).sum();
    assert!(k <= n, "select: k = {k} exceeds n = {n}");
    if k == 0 || k == n {
        first_non_finite(slices, key).map_or(Ok(()), Err)?;
        let threshold = if k == 0 { T::neg_infinity() } else { T::infinity() };
        return Ok(Cut {
            threshold,
            tie_end: (0, 0),
        });
    }
    let (mut lo, mut hi) = if n <= SMALL {
        (T::neg_infinity(), T::infinity())
    } else {
        bracket(slices, k, n, key)
    };
    loop {
        let p = pass(slices, lo, hi, key);
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
            nth_tie(slices, threshold, need, key)
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
fn bracket<T: Scalar, K: Fn(T) -> T + Copy>(slices: &[&[T]], k: usize, n: usize, key: K) -> (T, T) {
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
            let x = key(slices[s][pos - starts[s]]);
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

/// One streaming pass's counts: below `lo`, equal to `lo`, strictly inside (collected),
/// equal to `hi` (when `hi != lo`).
#[derive(Default)]
struct Pass<T> {
    below: usize,
    eq_lo: usize,
    eq_hi: usize,
    mid: Vec<T>,
    first_bad: Option<NonFiniteAt>,
}

impl<T> Pass<T> {
    fn merge(mut self, mut other: Pass<T>) -> Pass<T> {
        self.below += other.below;
        self.eq_lo += other.eq_lo;
        self.eq_hi += other.eq_hi;
        if self.mid.len() < other.mid.len() {
            std::mem::swap(&mut self.mid, &mut other.mid);
        }
        self.mid.extend(other.mid);
        self.first_bad = match (self.first_bad, other.first_bad) {
            (Some(a), Some(b)) => Some(if (a.0, a.1) <= (b.0, b.1) { a } else { b }),
            (a, b) => a.or(b),
        };
        self
    }
}

/// (slice, start) of every task of a pass, in global order.
fn tasks<T>(slices: &[&[T]]) -> Vec<(usize, usize)> {
    slices
        .iter()
        .enumerate()
        .flat_map(|(s, sl)| (0..sl.len()).step_by(TASK).map(move |st| (s, st)))
        .collect()
}

fn pass<T, K>(slices: &[&[T]], lo: T, hi: T, key: K) -> Pass<T>
where
    T: Scalar,
    K: Fn(T) -> T + Sync + Copy,
{
    tasks(slices)
        .into_par_iter()
        .map(|(s, st)| {
            let chunk = &slices[s][st..(st + TASK).min(slices[s].len())];
            let mut out = pass_chunk(chunk, lo, hi, key);
            if let Some(NonFiniteAt(_, i)) = out.first_bad {
                out.first_bad = Some(NonFiniteAt(s, st + i));
            }
            out
        })
        .reduce(Pass::default, Pass::merge)
}

fn pass_chunk<T: Scalar, K: Fn(T) -> T + Copy>(chunk: &[T], lo: T, hi: T, key: K) -> Pass<T> {
    const LANES: usize = 16;
    let mut out = Pass::default();
    let count_hi = hi != lo;
    let blocks = chunk.chunks_exact(LANES);
    let tail = blocks.remainder();
    let mut visit = |block: &[T]| {
        // Branch-free counting vectorizes; the rare in-window keys are collected after.
        let (mut below, mut eq_lo, mut eq_hi, mut inside, mut bad) = (0, 0, 0, 0, false);
        for &x in block {
            let v = key(x);
            below += (v < lo) as usize;
            eq_lo += (v == lo) as usize;
            eq_hi += (count_hi && v == hi) as usize;
            inside += (v > lo && v < hi) as usize;
            bad |= !v.is_finite();
        }
        out.below += below;
        out.eq_lo += eq_lo;
        out.eq_hi += eq_hi;
        if inside > 0 {
            out.mid.extend(block.iter().map(|&x| key(x)).filter(|&v| v > lo && v < hi));
        }
        bad
    };
    let mut first_bad_block = None;
    for (b, block) in blocks.enumerate() {
        if visit(block) && first_bad_block.is_none() {
            first_bad_block = Some(b * LANES);
        }
    }
    if visit(tail) && first_bad_block.is_none() {
        first_bad_block = Some(chunk.len() - tail.len());
    }
    out.first_bad = first_bad_block.map(|start| {
        let off = chunk[start..].iter().position(|&x| !key(x).is_finite()).unwrap_or(0);
        NonFiniteAt(0, start + off)
    });
    out
}

fn first_non_finite<T, K>(slices: &[&[T]], key: K) -> Option<NonFiniteAt>
where
    T: Scalar,
    K: Fn(T) -> T + Sync + Copy,
{
    pass(slices, T::neg_infinity(), T::neg_infinity(), key).first_bad
}

/// The position just after the `need`-th (1-based) element whose key equals `t`.
fn nth_tie<T, K>(slices: &[&[T]], t: T, need: usize, key: K) -> (usize, usize)
where
    T: Scalar,
    K: Fn(T) -> T + Sync + Copy,
{
    let tasks = tasks(slices);
    let counts: Vec<usize> = tasks
        .par_iter()
        .map(|&(s, st)| {
            let chunk = &slices[s][st..(st + TASK).min(slices[s].len())];
            chunk.iter().map(|&x| (key(x) == t) as usize).sum()
        })
        .collect();
    let mut remaining = need;
    for (&(s, st), &c) in tasks.iter().zip(&counts) {
        if remaining > c {
            remaining -= c;
            continue;
        }
        let chunk = &slices[s][st..(st + TASK).min(slices[s].len())];
        let i = chunk
            .iter()
            .enumerate()
            .filter(|&(_, &x)| key(x) == t)
            .nth(remaining - 1)
            .map(|(i, _)| i)
            .expect("the chunk holds `remaining` ties");
        return (s, st + i + 1);
    }
    unreachable!("fewer than `need` ties at the threshold")
}

/// Whether an element with this key at index `i` of a slice is kept under `cut`.
#[inline(always)]
fn keep<T: Scalar>(v: T, t: T, i: usize, tie_cut: usize) -> bool {
    v > t || (v == t && i >= tie_cut)
}

/// The mask that `cut` gives slice number `s` (of shape `shape`).
pub(crate) fn mask_of<T, K>(values: &[T], shape: &[usize], s: usize, cut: &Cut<T>, key: K) -> Mask
where
    T: Scalar,
    K: Fn(T) -> T + Sync + Copy,
{
    let mut mask = Mask::zeros(shape);
    let (t, tc) = (cut.threshold, cut.tie_cut(s));
    let words = mask.words_mut();
    let per_task = TASK / 64;
    words
        .par_chunks_mut(per_task)
        .zip(values.par_chunks(TASK))
        .enumerate()
        .for_each(|(task, (words, chunk))| {
            for (w, (word, block)) in words.iter_mut().zip(chunk.chunks(64)).enumerate() {
                let base = task * TASK + w * 64;
                let mut bits = 0u64;
                for (j, &x) in block.iter().enumerate() {
                    bits |= (keep(key(x), t, base + j, tc) as u64) << j;
                }
                *word = bits;
            }
        });
    mask
}

/// Like [`mask_of`], and zeroes the pruned elements of `values` in the same pass.
pub(crate) fn prune_in_place<T, K>(
    values: &mut [T],
    shape: &[usize],
    s: usize,
    cut: &Cut<T>,
    key: K,
) -> Mask
where
    T: Scalar,
    K: Fn(T) -> T + Sync + Copy,
{
    let mut mask = Mask::zeros(shape);
    let (t, tc) = (cut.threshold, cut.tie_cut(s));
    let words = mask.words_mut();
    let per_task = TASK / 64;
    words
        .par_chunks_mut(per_task)
        .zip(values.par_chunks_mut(TASK))
        .enumerate()
        .for_each(|(task, (words, chunk))| {
            for (w, (word, block)) in words.iter_mut().zip(chunk.chunks_mut(64)).enumerate() {
                let base = task * TASK + w * 64;
                let mut bits = 0u64;
                for (j, x) in block.iter_mut().enumerate() {
                    let k = keep(key(*x), t, base + j, tc);
                    bits |= (k as u64) << j;
                    *x = if k { *x } else { T::zero() };
                }
                *word = bits;
            }
        });
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
        all.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then((a.1, a.2).cmp(&(b.1, b.2))));
        let mut keep: Vec<Vec<bool>> = slices.iter().map(|v| vec![true; v.len()]).collect();
        for &(_, s, i) in &all[..k] {
            keep[s][i] = false;
        }
        keep
    }

    fn check(slices: Vec<Vec<f32>>, frac: f64) {
        let n: usize = slices.iter().map(Vec::len).sum();
        let k = ((n as f64) * frac).round() as usize;
        let refs: Vec<&[f32]> = slices.iter().map(|v| v.as_slice()).collect();
        let cut = select(&refs, k, |x: f32| x.abs()).unwrap();
        let want = reference(&slices, k);
        for (s, v) in slices.iter().enumerate() {
            let m = mask_of(v, &[v.len()], s, &cut, |x: f32| x.abs());
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
            (0..len).map(|_| (splitmix64(state) >> 40) as f32 / 16777216.0 - 0.5).collect()
        };
        let slices = vec![mk(150_000, &mut state), mk(70_001, &mut state), mk(3, &mut state)];
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
        let err = select(&[&a, &b], 50, |x: f32| x.abs()).unwrap_err();
        assert_eq!(err, NonFiniteAt(1, 77_777));
        let err = select(&[&a, &b], 0, |x: f32| x.abs()).unwrap_err();
        assert_eq!(err, NonFiniteAt(1, 77_777));
    }
}
