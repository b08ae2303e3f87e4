//! [`Mask`]: which weights a pruned tensor keeps, one bit per weight.

use std::fmt;

use ndarray::{ArrayD, ArrayRef, Dimension, IxDyn};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tensor::{HalfFloat, Scalar, check_same_shape};

const WORD: usize = 64;
/// Elements per parallel task when applying a mask (a multiple of 64).
const PAR_CHUNK: usize = 1 << 16;

/// A bit-packed, shape-aware pruning mask: bit `i` (row-major flat index) is 1 where the
/// weight is kept and 0 where it is pruned.
///
/// Bits are packed 64 to a `u64` word, least significant bit first, so a mask costs
/// 1/32 of an f32 tensor. Bits past the last element are always 0.
///
/// ```
/// use ndarray::array;
/// use slimnn::Mask;
///
/// let mask = Mask::from_bools(&array![[true, false], [false, true]]);
/// assert_eq!(mask.count_kept(), 2);
/// assert_eq!(mask.sparsity(), 0.5);
///
/// let mut w = array![[1.0f32, 2.0], [3.0, 4.0]];
/// mask.apply(&mut w)?;
/// assert_eq!(w, array![[1.0, 0.0], [0.0, 4.0]]);
/// assert_eq!(mask.iter_kept().collect::<Vec<_>>(), vec![0, 3]);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Mask {
    shape: Vec<usize>,
    len: usize,
    words: Vec<u64>,
}

impl Mask {
    /// A mask of `shape` that keeps every weight.
    ///
    /// # Panics
    /// If the element count of `shape` overflows `usize` (no tensor can have it).
    pub fn ones(shape: &[usize]) -> Mask {
        let mut m = Mask::zeros(shape);
        m.words.fill(!0);
        m.clear_tail();
        m
    }

    /// A mask of `shape` that prunes every weight.
    ///
    /// # Panics
    /// If the element count of `shape` overflows `usize` (no tensor can have it).
    pub fn zeros(shape: &[usize]) -> Mask {
        let len = numel(shape).expect("mask shape's element count overflows usize");
        Mask {
            shape: shape.to_vec(),
            len,
            words: vec![0; len.div_ceil(WORD)],
        }
    }

    /// A mask whose bit `i` is `keep(i)`, for every row-major flat index `i`.
    pub fn from_fn(shape: &[usize], mut keep: impl FnMut(usize) -> bool) -> Mask {
        let mut m = Mask::zeros(shape);
        for (w, word) in m.words.iter_mut().enumerate() {
            let start = w * WORD;
            let end = (start + WORD).min(m.len);
            for i in start..end {
                *word |= (keep(i) as u64) << (i - start);
            }
        }
        m
    }

    /// A mask from a boolean array of any dimension (`true` = kept).
    pub fn from_bools<D: Dimension>(keep: &ArrayRef<bool, D>) -> Mask {
        let mut bits = keep.iter();
        Mask::from_fn(keep.shape(), |_| *bits.next().unwrap_or(&false))
    }

    /// A mask that keeps the non-zero elements of `values` (e.g. a 0/1 float mask as
    /// PyTorch stores `weight_mask`).
    pub fn from_nonzero<T: Scalar, D: Dimension>(values: &ArrayRef<T, D>) -> Mask {
        let mut it = values.iter();
        Mask::from_fn(values.shape(), |_| it.next().is_some_and(|v| !v.is_zero()))
    }

    /// A mask from packed words as [`Mask::words`] returns them.
    ///
    /// Fails if the number of words does not fit the shape or bits past the end are set.
    pub fn from_words(shape: &[usize], words: Vec<u64>) -> Result<Mask> {
        let len = numel(shape).ok_or_else(|| {
            Error::bad_shape("mask words", shape, "the element count overflows usize")
        })?;
        let need = len.div_ceil(WORD);
        if words.len() != need {
            return Err(Error::bad_shape(
                "mask words",
                shape,
                format!("needs {need} words, got {}", words.len()),
            ));
        }
        let m = Mask {
            shape: shape.to_vec(),
            len,
            words,
        };
        let mut cleared = m.clone();
        cleared.clear_tail();
        if cleared.words != m.words {
            return Err(Error::bad_shape(
                "mask words",
                shape,
                "bits past the last element are set",
            ));
        }
        Ok(m)
    }

    /// The packed bits: bit `i % 64` of word `i / 64` is element `i`.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The shape of the tensor this mask belongs to.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements (kept and pruned).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mask covers no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether element `index` (row-major flat) is kept.
    ///
    /// # Panics
    /// If `index >= self.len()`, as slice indexing does.
    #[inline]
    pub fn get(&self, index: usize) -> bool {
        assert!(
            index < self.len,
            "mask index {index} out of range for length {}",
            self.len
        );
        self.words[index / WORD] >> (index % WORD) & 1 == 1
    }

    /// Sets whether element `index` (row-major flat) is kept.
    ///
    /// # Panics
    /// If `index >= self.len()`, as slice indexing does.
    #[inline]
    pub fn set(&mut self, index: usize, keep: bool) {
        assert!(
            index < self.len,
            "mask index {index} out of range for length {}",
            self.len
        );
        let bit = 1u64 << (index % WORD);
        let w = &mut self.words[index / WORD];
        *w = if keep { *w | bit } else { *w & !bit };
    }

    /// The number of kept elements.
    pub fn count_kept(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The number of pruned elements.
    pub fn count_pruned(&self) -> usize {
        self.len - self.count_kept()
    }

    /// Kept elements / all elements (1.0 for an empty mask).
    pub fn density(&self) -> f64 {
        if self.len == 0 {
            1.0
        } else {
            self.count_kept() as f64 / self.len as f64
        }
    }

    /// Pruned elements / all elements (0.0 for an empty mask).
    pub fn sparsity(&self) -> f64 {
        1.0 - self.density()
    }

    /// Keeps an element only where both masks keep it (pruned by either stays pruned).
    pub fn and(&self, other: &Mask) -> Result<Mask> {
        self.zip_words(other, |a, b| a & b)
    }

    /// Keeps an element where either mask keeps it.
    pub fn or(&self, other: &Mask) -> Result<Mask> {
        self.zip_words(other, |a, b| a | b)
    }

    /// Swaps kept and pruned.
    pub fn not(&self) -> Mask {
        let mut m = self.clone();
        m.words.iter_mut().for_each(|w| *w = !*w);
        m.clear_tail();
        m
    }

    fn zip_words(&self, other: &Mask, f: impl Fn(u64, u64) -> u64) -> Result<Mask> {
        check_same_shape(&self.shape, &other.shape, || "mask operand".into())?;
        let words = self
            .words
            .iter()
            .zip(&other.words)
            .map(|(&a, &b)| f(a, b))
            .collect();
        Ok(Mask {
            shape: self.shape.clone(),
            len: self.len,
            words,
        })
    }

    /// Row-major flat indices of the kept elements, in increasing order.
    pub fn iter_kept(&self) -> impl Iterator<Item = usize> + '_ {
        iter_ones(&self.words, false)
    }

    /// Row-major flat indices of the pruned elements, in increasing order.
    pub fn iter_pruned(&self) -> impl Iterator<Item = usize> + '_ {
        let len = self.len;
        iter_ones(&self.words, true).take_while(move |&i| i < len)
    }

    /// The mask as a boolean array (`true` = kept).
    pub fn to_bools(&self) -> ArrayD<bool> {
        let bits = (0..self.len).map(|i| self.get(i)).collect();
        ArrayD::from_shape_vec(IxDyn(&self.shape), bits)
            .expect("mask length equals its shape's element count")
    }

    /// The mask as a 0/1 array of `T` (the form PyTorch stores as `weight_mask`).
    pub fn to_array<T: Scalar>(&self) -> ArrayD<T> {
        self.to_bools()
            .mapv(|b| if b { T::one() } else { T::zero() })
    }

    /// Sets the pruned elements of `weights` to zero.
    ///
    /// Fails with [`Error::ShapeMismatch`] unless `weights` has the mask's shape.
    pub fn apply<T: Scalar, D: Dimension>(&self, weights: &mut ArrayRef<T, D>) -> Result<()> {
        check_same_shape(&self.shape, weights.shape(), || {
            "weights the mask is applied to".into()
        })?;
        match weights.as_slice_mut() {
            Some(s) => self.apply_unchecked(s),
            None => {
                for (i, w) in weights.iter_mut().enumerate() {
                    if !self.get(i) {
                        *w = T::zero();
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets the pruned elements of a row-major buffer to zero (the engine entry point).
    ///
    /// Fails with [`Error::ShapeMismatch`] unless the buffer has [`Mask::len`] elements.
    pub fn apply_slice<T: Scalar>(&self, weights: &mut [T]) -> Result<()> {
        check_same_shape(&[self.len], &[weights.len()], || {
            "buffer the mask is applied to".into()
        })?;
        self.apply_unchecked(weights);
        Ok(())
    }

    /// Sets the pruned elements of a row-major 16-bit buffer (`half::f16` or
    /// `half::bf16`) to +0; kept elements keep their bits.
    ///
    /// Fails with [`Error::ShapeMismatch`] unless the buffer has [`Mask::len`] elements.
    ///
    /// ```
    /// use slimnn::Mask;
    /// use slimnn::half::bf16;
    ///
    /// let mut w = [bf16::from_f32(1.0), bf16::from_f32(-2.0), bf16::from_f32(3.0)];
    /// Mask::from_fn(&[3], |i| i != 1).apply_half_slice(&mut w)?;
    /// assert_eq!(w, [bf16::from_f32(1.0), bf16::ZERO, bf16::from_f32(3.0)]);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn apply_half_slice<H: HalfFloat>(&self, weights: &mut [H]) -> Result<()> {
        check_same_shape(&[self.len], &[weights.len()], || {
            format!("{} buffer the mask is applied to", H::NAME)
        })?;
        for (w, &m) in weights.chunks_mut(WORD).zip(&self.words) {
            if m == !0 {
                continue;
            }
            for (j, x) in w.iter_mut().enumerate() {
                if m >> j & 1 == 0 {
                    *x = H::ZERO;
                }
            }
        }
        Ok(())
    }

    fn apply_unchecked<T: Scalar>(&self, weights: &mut [T]) {
        let per_task = PAR_CHUNK / WORD;
        if weights.len() > 2 * PAR_CHUNK {
            weights
                .par_chunks_mut(PAR_CHUNK)
                .zip(self.words.par_chunks(per_task))
                .for_each(|(w, m)| apply_words(w, m));
        } else {
            apply_words(weights, &self.words);
        }
    }

    fn clear_tail(&mut self) {
        let rem = self.len % WORD;
        if rem != 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1u64 << rem) - 1;
        }
    }

    /// Sets elements `start..end` (row-major flat) to `keep`, a word at a time.
    ///
    /// # Panics
    /// If `start > end` or `end > self.len()`.
    pub fn set_range(&mut self, start: usize, end: usize, keep: bool) {
        assert!(
            start <= end && end <= self.len,
            "mask range {start}..{end} out of bounds for length {}",
            self.len
        );
        let mut i = start;
        while i < end {
            let (w, b) = (i / WORD, i % WORD);
            let n = (WORD - b).min(end - i);
            let bits = if n == WORD {
                !0
            } else {
                ((1u64 << n) - 1) << b
            };
            if keep {
                self.words[w] |= bits;
            } else {
                self.words[w] &= !bits;
            }
            i += n;
        }
    }

    /// Mutable packed words for crate-internal builders; callers keep the tail clear.
    pub(crate) fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }
}

fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Zeroes `weights[i]` where bit `i` of `words` is 0.
fn apply_words<T: Scalar>(weights: &mut [T], words: &[u64]) {
    for (chunk, &word) in weights.chunks_mut(WORD).zip(words) {
        if word == !0 {
            continue;
        }
        if word == 0 {
            chunk.fill(T::zero());
            continue;
        }
        for (j, w) in chunk.iter_mut().enumerate() {
            if word >> j & 1 == 0 {
                *w = T::zero();
            }
        }
    }
}

fn iter_ones(words: &[u64], invert: bool) -> impl Iterator<Item = usize> + '_ {
    words.iter().enumerate().flat_map(move |(w, &word)| {
        let mut bits = if invert { !word } else { word };
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let j = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(w * WORD + j)
        })
    })
}

impl fmt::Debug for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Mask {{ shape: {:?}, kept: {}/{} }}",
            self.shape,
            self.count_kept(),
            self.len
        )
    }
}
