//! Magnitude pruning read straight from 16-bit weights, without an f32 copy.
//!
//! For finite f16 and bf16 values, `|x|` orders exactly as the 15 magnitude bits
//! (`bits & 0x7FFF`) do, and widening to f32 is exact and monotone. So a histogram of
//! those bits (32,768 bins) finds the threshold of the `k` smallest in one read pass, and
//! a second pass marks them, ties at the threshold going by position (earlier first):
//! the very mask the f32 path gives the widened values, at 2 bytes read per weight.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::tensor::HalfFloat;

/// Elements per parallel task (a multiple of the mask's 64-bit words).
const TASK: usize = 1 << 16;
const BINS: usize = 1 << 15;

/// The mask pruning the `k` smallest-magnitude of `values` (row-major, of `shape`),
/// ties by position; fails with [`Error::NonFinite`] at the first NaN or infinity.
pub(crate) fn magnitude_mask<H: HalfFloat>(
    values: &[H],
    shape: &[usize],
    k: usize,
    what: impl FnOnce() -> String,
) -> Result<Mask> {
    let n = values.len();
    debug_assert!(k <= n);
    let key = |x: H| (x.to_bits() & 0x7FFF) as usize;
    // Pass 1: histogram of magnitude bits, and the first non-finite value.
    let hist = |c: &[H]| {
        let mut h = vec![0u32; BINS];
        for &x in c {
            h[key(x)] += 1;
        }
        h
    };
    // Few large tasks: each one zeroes and merges a 32,768-bin histogram.
    let hist_task = TASK.max(n.div_ceil(4 * rayon::current_num_threads()));
    let hist: Vec<u64> = if n > 2 * TASK {
        values
            .par_chunks(hist_task)
            .map(hist)
            .fold(
                || vec![0u64; BINS],
                |mut acc, h| {
                    acc.iter_mut().zip(&h).for_each(|(a, &b)| *a += b as u64);
                    acc
                },
            )
            .reduce(
                || vec![0u64; BINS],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, &b)| *a += b);
                    a
                },
            )
    } else {
        hist(values).into_iter().map(u64::from).collect()
    };
    let bad = H::NON_FINITE_BITS as usize;
    if hist[bad..].iter().any(|&c| c > 0) {
        let index = values.iter().position(|&x| key(x) >= bad).unwrap_or(0);
        return Err(Error::NonFinite {
            what: what(),
            index,
            value: values[index].to_f32() as f64,
        });
    }
    if k == 0 {
        return Ok(Mask::ones(shape));
    }
    if k == n {
        return Ok(Mask::zeros(shape));
    }
    // The threshold t: below(t) ≤ k < below(t + 1); `ties` of the keys equal to t go.
    let (mut below, mut t) = (0u64, 0usize);
    while below + hist[t] <= k as u64 {
        below += hist[t];
        t += 1;
    }
    let ties = k as u64 - below;
    // Pass 2: how many ties each task may prune (in position order), of how many.
    let (counts, allow): (Vec<u64>, Vec<u64>) = if ties == 0 {
        (vec![0; n.div_ceil(TASK)], vec![0; n.div_ceil(TASK)])
    } else {
        let counts: Vec<u64> = values
            .par_chunks(TASK)
            .map(|c| c.iter().filter(|&&x| key(x) == t).count() as u64)
            .collect();
        let mut left = ties;
        let allow = counts
            .iter()
            .map(|&c| {
                let a = c.min(left);
                left -= a;
                a
            })
            .collect();
        (counts, allow)
    };
    // Pass 3: the mask words. Every task but at most one prunes all of its ties or none
    // (a plain comparison); the one in between counts them.
    let mut mask = Mask::zeros(shape);
    mask.words_mut()
        .par_chunks_mut(TASK / 64)
        .zip(values.par_chunks(TASK))
        .zip(allow.par_iter().zip(counts.par_iter()))
        .for_each(|((words, c), (&allow, &count))| {
            let cut = match (allow, count) {
                (0, _) => Some(t),
                (a, c) if a == c => Some(t + 1),
                _ => None,
            };
            let mut left = allow;
            for (w, xs) in words.iter_mut().zip(c.chunks(64)) {
                let mut bits = 0u64;
                match cut {
                    Some(cut) => {
                        for (j, &x) in xs.iter().enumerate() {
                            bits |= ((key(x) >= cut) as u64) << j;
                        }
                    }
                    None => {
                        for (j, &x) in xs.iter().enumerate() {
                            let kx = key(x);
                            let keep = if kx == t && left > 0 {
                                left -= 1;
                                false
                            } else {
                                kx >= t
                            };
                            bits |= (keep as u64) << j;
                        }
                    }
                }
                *w = bits;
            }
        });
    Ok(mask)
}
