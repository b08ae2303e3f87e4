//! Storage formats of compressed weights: sparse matrices and canonical Huffman coding.
//!
//! Every format here round-trips exactly, knows its exact storage size, and serializes
//! to bytes that [`SparseFormat::read_from`] (or the type's own `read_from`) parses back
//! with full validation, since the bytes come from untrusted files.
//!
//! - [`Csr`] and [`Csc`]: compressed sparse rows / columns (u32 pointers and indices,
//!   f32 values): 64 bits per non-zero plus 32 per row (column).
//! - [`BitmaskSparse`]: one bit per position plus the kept values: 1 bit per weight plus
//!   32 per non-zero.
//! - [`NmSparse`]: N:M semi-structured sparsity (e.g. 2:4), exactly N values per group of
//!   M consecutive columns, each with its in-group index in `ceil(log2 M)` bits.
//! - [`RelativeIndex`] and [`RelativeIndexSparse`]: Deep Compression's relative index
//!   (gaps of `index_bits` bits, with filler symbols for long gaps).
//! - [`huffman`]: length-limited canonical Huffman coding of quantization codes and
//!   index gaps, with table-driven decoding.
//!
//! Matrices are 2-D, `[rows, cols]`, row-major; a higher-order weight such as a
//! convolution `[out, in, kh, kw]` is viewed as `[out, in·kh·kw]`. The formats are built
//! from dense values and an optional [`Mask`] whose kept positions are stored (kept
//! zeros included); without a mask, the non-zeros are stored. A mask fits if its shape
//! is `[rows, cols]` or any shape `[rows, ...]` whose trailing dimensions multiply to
//! `cols` (so a convolution's mask is taken as it is).
//!
//! **Serialization.** `write_to` appends little-endian bytes to a `Vec<u8>`; `read_from`
//! parses them from the front of a `&mut &[u8]` and advances it past what it read (on
//! error the slice is left as it was). There is no tag or version: the container that
//! holds these bytes says which format follows. Each format has at most one bit-packed
//! section, so the bytes written are exactly `storage_bits().div_ceil(8)`, and the unused
//! bits of that section's last byte must be 0 on reading.

pub mod huffman;

mod bitmask;
pub(crate) mod compressed;
mod nm;
mod relative;
pub(crate) mod wire;

pub use bitmask::BitmaskSparse;
pub use compressed::{Csc, Csr};
pub use nm::NmSparse;
pub use relative::{RelativeIndex, RelativeIndexSparse};

use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::tensor::check_same_shape;

/// What every sparse matrix format offers: its shape, the dense values and the mask it
/// stores, its exact storage, and serialization.
///
/// **Stored values must be finite**: building a format from a NaN or infinite value that
/// would be stored is an [`Error::NonFinite`], and reading one is an
/// [`Error::InvalidFormat`] (a NaN weight poisons every product it enters, so in a model
/// file it can only mean corruption). Pruned positions may hold anything: they are not
/// stored.
///
/// **Untrusted input.** `read_from` bounds every allocation by the input's length. The
/// dense size `rows·cols` is *not* bounded by the encoded size (that is what a sparse
/// format is for), so a caller reading untrusted bytes checks [`SparseFormat::shape`]
/// against its own budget before [`SparseFormat::to_dense`] or [`SparseFormat::mask`].
///
/// ```
/// use slimnn::encode::{Csr, SparseFormat};
///
/// let dense = [0.0, 1.5, 0.0, -2.0, 0.0, 0.0];
/// let csr = Csr::from_dense(&dense, [2, 3], None)?;
/// let mut bytes = Vec::new();
/// csr.write_to(&mut bytes);
/// assert_eq!(bytes.len(), csr.storage_bits().div_ceil(8));
/// let back = Csr::read_from(&mut &bytes[..])?;
/// assert_eq!(back, csr);
/// assert_eq!(back.to_dense(), dense);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub trait SparseFormat {
    /// `[rows, cols]`.
    fn shape(&self) -> [usize; 2];

    /// The number of stored values.
    fn nnz(&self) -> usize;

    /// The dense row-major values: the stored ones in place, 0 elsewhere.
    fn to_dense(&self) -> Vec<f32>;

    /// The stored positions, as a mask of shape `[rows, cols]`.
    fn mask(&self) -> Mask;

    /// The exact bits of everything needed to decode: header fields, pointers, indices
    /// and values, with bit-packed fields at their packed width. [`SparseFormat::write_to`]
    /// writes `storage_bits().div_ceil(8)` bytes.
    fn storage_bits(&self) -> usize;

    /// Appends the little-endian serialization to `out`.
    fn write_to(&self, out: &mut Vec<u8>);

    /// Parses a value written by [`SparseFormat::write_to`] from the front of `bytes` and
    /// advances `bytes` past it. Any inconsistency is an [`Error::InvalidFormat`].
    fn read_from(bytes: &mut &[u8]) -> Result<Self>
    where
        Self: Sized;
}

/// The largest dimension the formats store (they write dimensions as u32).
const MAX_DIM: usize = u32::MAX as usize;

/// Checks `values` and `mask` against `shape` and returns the positions to store, as a
/// `[rows, cols]` mask: the mask's kept positions, or the non-zeros without a mask.
///
/// A mask fits if its shape is `[rows, cols]` or a reshape of it that keeps the first
/// axis (a convolution mask `[out, in, kh, kw]` for `[out, in·kh·kw]`).
fn stored_positions(values: &[f32], shape: [usize; 2], mask: Option<&Mask>) -> Result<Mask> {
    let [rows, cols] = shape;
    if rows > MAX_DIM || cols > MAX_DIM {
        return Err(Error::bad_shape(
            "sparse matrix",
            &shape,
            "dimensions are stored as u32",
        ));
    }
    let numel = rows
        .checked_mul(cols)
        .ok_or_else(|| Error::bad_shape("sparse matrix", &shape, "too many elements"))?;
    check_same_shape(&[numel], &[values.len()], || {
        format!("dense values of a {rows}×{cols} matrix")
    })?;
    let stored = match mask {
        Some(m) => {
            let fits = m.shape().first() == Some(&rows)
                && m.shape()[1..].iter().product::<usize>() == cols;
            if !fits {
                return Err(Error::ShapeMismatch {
                    what: "mask of a sparse matrix".into(),
                    expected: shape.to_vec(),
                    got: m.shape().to_vec(),
                });
            }
            Mask::from_words(&shape, m.words().to_vec())?
        }
        None => Mask::from_fn(&shape, |i| values[i] != 0.0),
    };
    if let Some(i) = stored.iter_kept().find(|&i| !values[i].is_finite()) {
        return Err(Error::NonFinite {
            what: "a stored value of a sparse matrix".into(),
            index: i,
            value: values[i] as f64,
        });
    }
    Ok(stored)
}

/// Reads a `[rows, cols]` header (two u32) whose dense f32 size is addressable.
fn read_shape(r: &mut wire::Reader<'_>) -> Result<[usize; 2]> {
    let rows = r.u32()? as usize;
    let cols = r.u32()? as usize;
    rows.checked_mul(cols)
        .and_then(|n| n.checked_mul(4))
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| r.error(format!("a {rows}×{cols} matrix is too large to address")))?;
    Ok([rows, cols])
}

/// Writes the `[rows, cols]` header.
fn write_shape(out: &mut Vec<u8>, [rows, cols]: [usize; 2]) {
    wire::put_u32(out, rows as u32);
    wire::put_u32(out, cols as u32);
}

/// Bits of the `[rows, cols]` header.
const SHAPE_BITS: usize = 64;
