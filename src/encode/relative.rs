//! Deep Compression's relative index (Han, Mao & Dally, "Deep Compression", ICLR 2016,
//! §4 and Fig. 2): stored positions as small gaps, with filler entries for long gaps.

use super::wire::{Reader, put_f32s, put_packed, put_u64};
use super::{SHAPE_BITS, SparseFormat, read_shape, stored_positions, write_shape};
use crate::error::{Error, Result};
use crate::mask::Mask;

/// The positions of the stored entries of a flattened (row-major) weight, each as its
/// gap from the previous one in `index_bits` ∈ 1..=8 bits (the paper uses 4 for fully
/// connected and 8 for convolution layers). Positions only: the payload (f32 values,
/// quantization codes) is one entry per stored position, in order, kept beside it —
/// [`RelativeIndexSparse`] pairs it with f32 values.
///
/// **Symbols.** With `b = index_bits` and `F = 2^b − 1`: a symbol `s < F` means "the next
/// stored position is `s + 1` after the previous one" (the first is relative to position
/// −1, so a symbol `s` first means position `s`); the symbol `F` is a **filler**: "advance
/// `F` positions, store nothing". A gap larger than `F` takes as many fillers as needed.
/// The paper's filler is instead a stored zero weight; ours is a reserved symbol, so a
/// filler costs only its `b` index bits, and the payload has exactly one entry per
/// stored position (no value has to mean "filler"). A symbol sequence never ends with a
/// filler.
///
/// Storage: the length (u64), `index_bits` (a byte), the symbol count (u64), then the
/// symbols packed at `b` bits each (the crate's bit order, as
/// [`crate::quant::PackedCodes`]): `136 + b·symbols` bits.
///
/// ```
/// use slimnn::Mask;
/// use slimnn::encode::RelativeIndex;
///
/// // Kept positions 1, 4 and 20 of 24, with 3-bit gaps (F = 7).
/// let mask = Mask::from_fn(&[24], |i| [1, 4, 20].contains(&i));
/// let index = RelativeIndex::from_mask(&mask, 3)?;
/// // 1 = −1 + 1 + 1;  4 = 1 + 2 + 1;  20 = 4 + 7 (filler) + 7 (filler) + 1 + 1.
/// assert_eq!(index.symbols(), &[1, 2, 7, 7, 1]);
/// assert_eq!((index.nnz(), index.n_fillers()), (3, 2));
/// assert_eq!(index.positions().collect::<Vec<_>>(), [1, 4, 20]);
/// assert_eq!(index.to_mask(&[24])?, mask);
/// assert_eq!(index.storage_bits(), 136 + 3 * 5);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelativeIndex {
    len: usize,
    index_bits: u8,
    symbols: Vec<u8>,
    nnz: usize,
}

impl RelativeIndex {
    /// The index of the kept positions of `mask`, over its row-major flattening.
    ///
    /// Fails with [`Error::InvalidParameter`] unless `index_bits` is in 1..=8.
    pub fn from_mask(mask: &Mask, index_bits: u8) -> Result<RelativeIndex> {
        check_index_bits(index_bits)?;
        let filler = filler(index_bits);
        let mut symbols = Vec::with_capacity(mask.count_kept());
        let mut next = 0;
        for p in mask.iter_kept() {
            let mut gap = p - next;
            while gap >= filler as usize {
                symbols.push(filler);
                gap -= filler as usize;
            }
            symbols.push(gap as u8);
            next = p + 1;
        }
        Ok(RelativeIndex {
            len: mask.len(),
            index_bits,
            nnz: mask.count_kept(),
            symbols,
        })
    }

    /// An index from its symbols (e.g. after Huffman decoding), over `len` positions.
    ///
    /// Fails with [`Error::InvalidParameter`] unless `index_bits` is in 1..=8, and with
    /// [`Error::InvalidFormat`] if a symbol exceeds `2^index_bits − 1`, a position falls
    /// at or past `len`, or the symbols end with a filler.
    pub fn from_symbols(len: usize, index_bits: u8, symbols: Vec<u8>) -> Result<RelativeIndex> {
        check_index_bits(index_bits)?;
        let nnz =
            count_stored(len, index_bits, &symbols).map_err(|reason| Error::InvalidFormat {
                format: FORMAT,
                source_name: "<symbols>".into(),
                reason,
            })?;
        Ok(RelativeIndex {
            len,
            index_bits,
            symbols,
            nnz,
        })
    }

    /// The number of positions covered (kept and not).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index covers no positions.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bits per symbol.
    pub fn index_bits(&self) -> u8 {
        self.index_bits
    }

    /// The filler symbol, `2^index_bits − 1`.
    pub fn filler(&self) -> u8 {
        filler(self.index_bits)
    }

    /// One symbol per entry, fillers included (each below `2^index_bits`).
    pub fn symbols(&self) -> &[u8] {
        &self.symbols
    }

    /// The number of stored positions.
    pub fn nnz(&self) -> usize {
        self.nnz
    }

    /// The number of filler entries.
    pub fn n_fillers(&self) -> usize {
        self.symbols.len() - self.nnz
    }

    /// The stored positions, increasing.
    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        let filler = self.filler();
        let mut next = 0;
        self.symbols.iter().filter_map(move |&s| {
            if s == filler {
                next += filler as usize;
                return None;
            }
            let p = next + s as usize;
            next = p + 1;
            Some(p)
        })
    }

    /// The stored positions as a mask of `shape`, whose element count must be
    /// [`RelativeIndex::len`] (else [`Error::ShapeMismatch`]).
    pub fn to_mask(&self, shape: &[usize]) -> Result<Mask> {
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel != Some(self.len) {
            return Err(Error::ShapeMismatch {
                what: format!("mask of a relative index over {} positions", self.len),
                expected: vec![self.len],
                got: shape.to_vec(),
            });
        }
        let mut mask = Mask::zeros(shape);
        for p in self.positions() {
            mask.set(p, true);
        }
        Ok(mask)
    }

    /// The exact storage: `136 + index_bits·symbols` bits (see the type's docs).
    pub fn storage_bits(&self) -> usize {
        64 + self.body_bits()
    }

    /// Appends the serialization to `out` (`storage_bits().div_ceil(8)` bytes).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        put_u64(out, self.len as u64);
        self.write_body(out);
    }

    /// Parses an index written by [`RelativeIndex::write_to`] from the front of `bytes`
    /// and advances `bytes` past it. Any inconsistency is an [`Error::InvalidFormat`].
    ///
    /// The length is not bounded by the input (the positions after the last stored one
    /// cost nothing): check [`RelativeIndex::len`] against your budget before
    /// [`RelativeIndex::to_mask`].
    pub fn read_from(bytes: &mut &[u8]) -> Result<RelativeIndex> {
        let mut r = Reader::new(bytes, FORMAT);
        let len = r.usize()?;
        let index = RelativeIndex::read_body(&mut r, len)?;
        *bytes = r.rest();
        Ok(index)
    }

    /// Bits of everything but the length.
    fn body_bits(&self) -> usize {
        8 + 64 + self.index_bits as usize * self.symbols.len()
    }

    fn write_body(&self, out: &mut Vec<u8>) {
        out.push(self.index_bits);
        put_u64(out, self.symbols.len() as u64);
        put_packed(out, &self.symbols, self.index_bits);
    }

    fn read_body(r: &mut Reader<'_>, len: usize) -> Result<RelativeIndex> {
        let index_bits = r.u8()?;
        if check_index_bits(index_bits).is_err() {
            return Err(r.error(format!("index bits {index_bits} are not in 1..=8")));
        }
        let count = r.usize()?;
        let symbols = r.packed(count, index_bits, "symbols")?;
        let nnz = count_stored(len, index_bits, &symbols).map_err(|reason| r.error(reason))?;
        Ok(RelativeIndex {
            len,
            index_bits,
            symbols,
            nnz,
        })
    }
}

const FORMAT: &str = "relative index";

fn check_index_bits(index_bits: u8) -> Result<()> {
    if !(1..=8).contains(&index_bits) {
        return Err(Error::invalid(
            "index_bits",
            index_bits,
            "1..=8 bits per gap",
        ));
    }
    Ok(())
}

fn filler(index_bits: u8) -> u8 {
    ((1u16 << index_bits) - 1) as u8
}

/// The number of stored positions of a symbol sequence, or why it is invalid.
fn count_stored(len: usize, index_bits: u8, symbols: &[u8]) -> Result<usize, String> {
    let filler = filler(index_bits);
    let (mut next, mut nnz) = (0usize, 0usize);
    for (k, &s) in symbols.iter().enumerate() {
        if s > filler {
            return Err(format!("symbol {s} at {k} exceeds {filler}"));
        }
        // A filler must leave room for the entry that follows it.
        next += if s == filler {
            filler as usize
        } else {
            s as usize
        };
        if next >= len {
            return Err(format!("entry {k} runs past the {len} positions"));
        }
        if s != filler {
            next += 1;
            nnz += 1;
        }
    }
    if symbols.last() == Some(&filler) {
        return Err("the symbols end with a filler".into());
    }
    Ok(nnz)
}

/// A sparse matrix as a [`RelativeIndex`] over its row-major flattening and the stored
/// values in order: Deep Compression's format with f32 values.
///
/// Storage: `[rows, cols]` as two u32, the index without its length (which is
/// `rows·cols`), then the values (f32): `136 + index_bits·symbols + 32·nnz` bits.
///
/// ```
/// use slimnn::encode::{RelativeIndexSparse, SparseFormat};
///
/// let mut dense = vec![0.0f32; 40];
/// dense[2] = 1.0;
/// dense[30] = -0.5;
/// let s = RelativeIndexSparse::from_dense(&dense, [4, 10], None, 4)?;
/// assert_eq!(s.index().symbols(), &[2, 15, 12]); // 30 = 2 + 1 + 15 + 12
/// assert_eq!(s.values(), &[1.0, -0.5]);
/// assert_eq!(s.storage_bits(), 136 + 4 * 3 + 32 * 2);
/// assert_eq!(s.to_dense(), dense);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RelativeIndexSparse {
    shape: [usize; 2],
    index: RelativeIndex,
    values: Vec<f32>,
}

impl RelativeIndexSparse {
    /// Stores the kept positions of `mask` (the non-zeros of `values` without one) of the
    /// dense row-major `values` of a `[rows, cols]` matrix, with gaps of `index_bits` bits.
    ///
    /// Fails as [`super::Csr::from_dense`], or unless `index_bits` is in 1..=8.
    pub fn from_dense(
        values: &[f32],
        shape: [usize; 2],
        mask: Option<&Mask>,
        index_bits: u8,
    ) -> Result<RelativeIndexSparse> {
        check_index_bits(index_bits)?;
        let stored = stored_positions(values, shape, mask)?;
        let index = RelativeIndex::from_mask(&stored, index_bits)?;
        let values = stored.iter_kept().map(|i| values[i]).collect();
        Ok(RelativeIndexSparse {
            shape,
            index,
            values,
        })
    }

    /// The positions.
    pub fn index(&self) -> &RelativeIndex {
        &self.index
    }

    /// The stored values in row-major order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

impl SparseFormat for RelativeIndexSparse {
    fn shape(&self) -> [usize; 2] {
        self.shape
    }

    fn nnz(&self) -> usize {
        self.values.len()
    }

    fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0f32; self.index.len];
        for (p, &v) in self.index.positions().zip(&self.values) {
            dense[p] = v;
        }
        dense
    }

    fn mask(&self) -> Mask {
        let mut mask = Mask::zeros(&self.shape);
        for p in self.index.positions() {
            mask.set(p, true);
        }
        mask
    }

    fn storage_bits(&self) -> usize {
        SHAPE_BITS + self.index.body_bits() + 32 * self.values.len()
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        write_shape(out, self.shape);
        self.index.write_body(out);
        put_f32s(out, &self.values);
    }

    fn read_from(bytes: &mut &[u8]) -> Result<RelativeIndexSparse> {
        let mut r = Reader::new(bytes, "relative index sparse");
        let shape = read_shape(&mut r)?;
        let index = RelativeIndex::read_body(&mut r, shape[0] * shape[1])?;
        let values = r.finite_f32s(index.nnz, "values")?;
        *bytes = r.rest();
        Ok(RelativeIndexSparse {
            shape,
            index,
            values,
        })
    }
}
