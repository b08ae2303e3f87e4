//! [`NmSparse`]: N:M semi-structured sparsity, the layout of 2:4 sparse matmul kernels.

use super::wire::{Reader, put_f32s, put_packed};
use super::{SHAPE_BITS, SparseFormat, read_shape, stored_positions, write_shape};
use ndarray::{Array2, ArrayRef, Ix2};

use crate::error::{Error, Result};
use crate::mask::Mask;

/// N:M semi-structured sparsity along rows: each row is cut into groups of `m`
/// consecutive columns, and each group stores exactly `n` values with their in-group
/// indices (`0..m`, strictly increasing), so `values` and `indices` are `[rows, cols/m·n]`
/// row-major — the operands of an N:M matmul kernel.
///
/// **Free slots.** A group with fewer than `n` kept weights fills its free slots with
/// zeros at the lowest in-group indices it does not keep. The storage cannot tell such a
/// zero from a kept one, so [`SparseFormat::mask`] returns every stored slot (exactly `n`
/// per group): the input mask plus the free slots. [`SparseFormat::to_dense`] is exact.
/// A group with more than `n` kept weights is an error.
///
/// Storage: `[rows, cols]` as two u32, `n` and `m` as a byte each, the values (f32), then
/// the indices packed at `ceil(log2 m)` bits each: `80 + (32 + ceil(log2 m))·nnz` bits,
/// with `nnz = rows·cols/m·n` (2:4 costs 34 bits per stored value, 17 per weight).
///
/// ```
/// use slimnn::encode::{NmSparse, SparseFormat};
///
/// let dense = [0.0, 3.0, 0.0, -1.0, /* */ 2.0, 0.0, 0.0, 0.0];
/// let s = NmSparse::from_dense(&dense, [1, 8], None, 2, 4)?;
/// assert_eq!(s.values(), &[3.0, -1.0, 2.0, 0.0]); // the second group has a free slot
/// assert_eq!(s.indices(), &[1, 3, 0, 1]);
/// assert_eq!(s.storage_bits(), 80 + 4 * (32 + 2));
/// assert_eq!(s.to_dense(), dense);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NmSparse {
    shape: [usize; 2],
    n: usize,
    m: usize,
    values: Vec<f32>,
    indices: Vec<u8>,
}

/// The largest group size: in-group indices are bytes, and `m` is stored as one.
const MAX_M: usize = u8::MAX as usize;

impl NmSparse {
    /// Stores the kept positions of `mask` (the non-zeros of `values` without one) of the
    /// dense row-major `values` of a `[rows, cols]` matrix, `n` per group of `m`.
    ///
    /// Fails if `m` is not in `1..=255` or `n` not in `1..=m`
    /// ([`Error::InvalidParameter`]), `m` does not divide `cols` ([`Error::BadShape`]), a
    /// group keeps more than `n` weights ([`Error::InvalidParameter`] naming the group),
    /// or as [`super::Csr::from_dense`].
    pub fn from_dense(
        values: &[f32],
        shape: [usize; 2],
        mask: Option<&Mask>,
        n: usize,
        m: usize,
    ) -> Result<NmSparse> {
        if !(1..=MAX_M).contains(&m) {
            return Err(Error::invalid(
                "m",
                m,
                format!("a group size in 1..={MAX_M}"),
            ));
        }
        if !(1..=m).contains(&n) {
            return Err(Error::invalid("n", n, format!("1..={m} values per group")));
        }
        let [rows, cols] = shape;
        if cols % m != 0 {
            return Err(Error::bad_shape(
                "N:M sparse matrix",
                &shape,
                format!("groups of {m} do not divide {cols} columns"),
            ));
        }
        let stored = stored_positions(values, shape, mask)?;
        let slots = rows * cols / m * n;
        let (mut vals, mut indices) = (Vec::with_capacity(slots), Vec::with_capacity(slots));
        for g in 0..rows * cols / m {
            let start = g * m;
            let kept = (start..start + m).filter(|&i| stored.get(i)).count();
            if kept > n {
                return Err(Error::invalid(
                    if mask.is_some() { "mask" } else { "values" },
                    format!(
                        "{kept} kept in row {}, columns {}..{}",
                        start / cols,
                        start % cols,
                        start % cols + m
                    ),
                    format!("at most {n} kept per group of {m}"),
                ));
            }
            // Kept positions, and the lowest free ones as zeros, in increasing order.
            let mut free = n - kept;
            for j in 0..m {
                let keep = stored.get(start + j);
                if keep || free > 0 {
                    free -= usize::from(!keep);
                    vals.push(if keep { values[start + j] } else { 0.0 });
                    indices.push(j as u8);
                }
            }
        }
        Ok(NmSparse {
            shape,
            n,
            m,
            values: vals,
            indices,
        })
    }

    /// Values stored per group.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The group size.
    pub fn m(&self) -> usize {
        self.m
    }

    /// The stored values, `[rows, cols/m·n]` row-major (free slots hold 0).
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The in-group index (`0..m`) of every stored value, unpacked, one per byte.
    pub fn indices(&self) -> &[u8] {
        &self.indices
    }

    /// Bits per stored in-group index: `ceil(log2 m)`.
    pub fn index_bits(&self) -> u8 {
        index_bits(self.m)
    }

    /// `x·Wᵀ` for activations `x` `[batch, cols]`, from the N values of each group
    /// ([`sparse_ops::nm_matmul`](crate::sparse_ops::nm_matmul)).
    pub fn matmul(&self, x: &ArrayRef<f32, Ix2>) -> Result<Array2<f32>> {
        let [rows, cols] = self.shape();
        crate::sparse_ops::nm_matmul([rows, cols], self.n, self.m, &self.values, &self.indices, x)
    }

    /// The flat row-major position of every stored slot.
    fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        let (n, m) = (self.n, self.m);
        self.indices
            .iter()
            .enumerate()
            .map(move |(k, &j)| k / n * m + j as usize)
    }
}

/// `ceil(log2 m)`.
fn index_bits(m: usize) -> u8 {
    (usize::BITS - m.saturating_sub(1).leading_zeros()) as u8
}

impl SparseFormat for NmSparse {
    fn shape(&self) -> [usize; 2] {
        self.shape
    }

    fn nnz(&self) -> usize {
        self.values.len()
    }

    fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0f32; self.shape[0] * self.shape[1]];
        for (i, &v) in self.positions().zip(&self.values) {
            dense[i] = v;
        }
        dense
    }

    fn mask(&self) -> Mask {
        let mut mask = Mask::zeros(&self.shape);
        for i in self.positions() {
            mask.set(i, true);
        }
        mask
    }

    fn storage_bits(&self) -> usize {
        SHAPE_BITS + 16 + (32 + self.index_bits() as usize) * self.values.len()
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        write_shape(out, self.shape);
        out.extend([self.n as u8, self.m as u8]);
        put_f32s(out, &self.values);
        put_packed(out, &self.indices, self.index_bits());
    }

    fn read_from(bytes: &mut &[u8]) -> Result<NmSparse> {
        let mut r = Reader::new(bytes, "N:M sparse");
        let shape = read_shape(&mut r)?;
        let n = r.u8()? as usize;
        let m = r.u8()? as usize;
        if m == 0 || !(1..=m).contains(&n) {
            return Err(r.error(format!("{n}:{m} is not a valid N:M pattern")));
        }
        if shape[1] % m != 0 {
            return Err(r.error(format!("groups of {m} do not divide {} columns", shape[1])));
        }
        let slots = shape[0] * shape[1] / m * n;
        let bits = index_bits(m);
        let values = r.finite_f32s(slots, "values")?;
        let indices = r.packed(slots, bits, "indices")?;
        for (g, group) in indices.chunks_exact(n).enumerate() {
            let valid =
                group.iter().all(|&j| (j as usize) < m) && group.windows(2).all(|p| p[0] < p[1]);
            if !valid {
                return Err(r.error(format!(
                    "group {g}: in-group indices {group:?} are not increasing below {m}"
                )));
            }
        }
        *bytes = r.rest();
        Ok(NmSparse {
            shape,
            n,
            m,
            values,
            indices,
        })
    }
}
