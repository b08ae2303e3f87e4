//! [`BitmaskSparse`]: a bit per position and the kept values.

use super::wire::{Reader, put_f32s};
use super::{SHAPE_BITS, SparseFormat, read_shape, stored_positions, write_shape};
use crate::error::Result;
use crate::mask::Mask;

/// A sparse matrix stored as its [`Mask`] (1 bit per position) and the kept values in
/// row-major order. Cheaper than [`super::Csr`] (64 bits per non-zero) when more than
/// about 1/32 of the weights are kept.
///
/// Storage: `[rows, cols]` as two u32, the mask as `ceil(rows·cols/8)` bytes (bit `i % 8`
/// of byte `i / 8` is position `i`), then the values (f32): `64 + rows·cols + 32·nnz` bits.
///
/// ```
/// use slimnn::encode::{BitmaskSparse, SparseFormat};
///
/// let dense = [0.0, 2.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0];
/// let b = BitmaskSparse::from_dense(&dense, [2, 4], None)?;
/// assert_eq!(b.values(), &[2.0, 5.0]);
/// assert_eq!(b.bitmask().iter_kept().collect::<Vec<_>>(), [1, 4]);
/// assert_eq!(b.storage_bits(), 64 + 8 + 2 * 32);
/// assert_eq!(b.to_dense(), dense);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BitmaskSparse {
    mask: Mask,
    values: Vec<f32>,
}

impl BitmaskSparse {
    /// Stores the kept positions of `mask` (the non-zeros of `values` without one) of the
    /// dense row-major `values` of a `[rows, cols]` matrix.
    ///
    /// Fails if `values` does not hold `rows·cols` elements, the mask does not fit the
    /// shape (see [`crate::encode`]), a stored value is not finite, or a dimension does
    /// not fit u32.
    pub fn from_dense(
        values: &[f32],
        shape: [usize; 2],
        mask: Option<&Mask>,
    ) -> Result<BitmaskSparse> {
        let mask = stored_positions(values, shape, mask)?;
        let values = mask.iter_kept().map(|i| values[i]).collect();
        Ok(BitmaskSparse { mask, values })
    }

    /// The stored positions (the same as [`SparseFormat::mask`], borrowed).
    pub fn bitmask(&self) -> &Mask {
        &self.mask
    }

    /// The kept values in row-major order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

impl SparseFormat for BitmaskSparse {
    fn shape(&self) -> [usize; 2] {
        [self.mask.shape()[0], self.mask.shape()[1]]
    }

    fn nnz(&self) -> usize {
        self.values.len()
    }

    fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0f32; self.mask.len()];
        for (i, &v) in self.mask.iter_kept().zip(&self.values) {
            dense[i] = v;
        }
        dense
    }

    fn mask(&self) -> Mask {
        self.mask.clone()
    }

    fn storage_bits(&self) -> usize {
        SHAPE_BITS + self.mask.len() + 32 * self.values.len()
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        write_shape(out, self.shape());
        let n_bytes = self.mask.len().div_ceil(8);
        let bytes = self.mask.words().iter().flat_map(|w| w.to_le_bytes());
        out.extend(bytes.take(n_bytes));
        put_f32s(out, &self.values);
    }

    fn read_from(bytes: &mut &[u8]) -> Result<BitmaskSparse> {
        let mut r = Reader::new(bytes, "bitmask sparse");
        let shape = read_shape(&mut r)?;
        let len = shape[0] * shape[1];
        let mask_bytes = r.take_items(len.div_ceil(8), 1, "mask")?;
        let words: Vec<u64> = mask_bytes
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        let mask =
            Mask::from_words(&shape, words).map_err(|_| r.error("mask padding bits are set"))?;
        let values = r.finite_f32s(mask.count_kept(), "values")?;
        *bytes = r.rest();
        Ok(BitmaskSparse { mask, values })
    }
}
