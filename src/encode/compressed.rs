//! [`Csr`] and [`Csc`]: compressed sparse rows and columns, the layouts sparse kernels
//! run on.

use super::wire::{Reader, put_f32s, put_u32s};
use super::{SHAPE_BITS, SparseFormat, read_shape, stored_positions, write_shape};
use ndarray::{Array2, ArrayRef, Ix2};

use crate::error::Result;
use crate::mask::Mask;

/// The layout both formats share, along a major axis (rows for CSR, columns for CSC):
/// `ptr[i]..ptr[i+1]` are the entries of major line `i`, `idx` their minor coordinates
/// (strictly increasing within a line) and `values` their values.
#[derive(Clone, Debug, PartialEq)]
struct Compressed {
    shape: [usize; 2],
    ptr: Vec<u32>,
    idx: Vec<u32>,
    values: Vec<f32>,
}

/// The CSR (or, `by_col`, CSC) pattern of the kept positions of `stored`, a
/// `[rows, cols]` matrix: the pointers (one per major line, plus one), each entry's
/// minor index (increasing within a line), and each entry's flat row-major position.
/// The crate's one builder of compressed sparse layouts: [`Csr`], [`Csc`] and the
/// compressed file's CSR positions use it. At most `u32::MAX` entries (callers check).
pub(crate) fn pattern(
    stored: &Mask,
    shape: [usize; 2],
    by_col: bool,
) -> (Vec<u32>, Vec<u32>, Vec<usize>) {
    let [rows, cols] = shape;
    let cols = cols.max(1);
    // (major, minor) of a flat row-major index.
    let split: fn(usize, usize) -> (usize, usize) = if by_col {
        |i, cols| (i % cols, i / cols)
    } else {
        |i, cols| (i / cols, i % cols)
    };
    let major_len = if by_col { shape[1] } else { rows };
    // Counting sort by major line; row-major order keeps the minor indices sorted.
    let mut ptr = vec![0u32; major_len + 1];
    for i in stored.iter_kept() {
        ptr[split(i, cols).0 + 1] += 1;
    }
    for j in 0..major_len {
        ptr[j + 1] += ptr[j];
    }
    let nnz = ptr[major_len] as usize;
    let mut next: Vec<u32> = ptr[..major_len].to_vec();
    let (mut idx, mut flat) = (vec![0u32; nnz], vec![0usize; nnz]);
    for i in stored.iter_kept() {
        let (major, minor) = split(i, cols);
        let k = next[major] as usize;
        next[major] += 1;
        idx[k] = minor as u32;
        flat[k] = i;
    }
    (ptr, idx, flat)
}

/// Checks the pointers of a compressed sparse pattern read from untrusted bytes: from
/// 0, never decreasing. The reason, on failure.
pub(crate) fn check_pointers(ptr: &[u32]) -> std::result::Result<(), String> {
    if let Some(&first) = ptr.first()
        && first != 0
    {
        return Err(format!("the first pointer is {first}, not 0"));
    }
    if let Some(j) = ptr.windows(2).position(|w| w[0] > w[1]) {
        return Err(format!("pointers decrease after line {j}"));
    }
    Ok(())
}

/// Checks the minor indices of a pattern whose pointers [`check_pointers`] accepted:
/// as many as the last pointer says, below `minor_len`, strictly increasing within a
/// line. The reason, on failure.
pub(crate) fn check_indices(
    ptr: &[u32],
    idx: &[u32],
    minor_len: usize,
) -> std::result::Result<(), String> {
    if let Some(&last) = ptr.last()
        && last as usize != idx.len()
    {
        return Err(format!(
            "the last pointer is {last}, for {} indices",
            idx.len()
        ));
    }
    for (line, w) in ptr.windows(2).enumerate() {
        let run = &idx[w[0] as usize..w[1] as usize];
        if let Some(&i) = run.iter().find(|&&i| i as usize >= minor_len) {
            return Err(format!(
                "index {i} in line {line} is out of range for {minor_len}"
            ));
        }
        if run.windows(2).any(|p| p[0] >= p[1]) {
            return Err(format!(
                "indices of line {line} are not strictly increasing"
            ));
        }
    }
    Ok(())
}

impl Compressed {
    /// Builds from dense row-major values; `by_col` selects the CSC layout.
    fn build(values: &[f32], shape: [usize; 2], mask: Option<&Mask>, by_col: bool) -> Result<Self> {
        let stored = stored_positions(values, shape, mask)?;
        let nnz = stored.count_kept();
        if u32::try_from(nnz).is_err() {
            return Err(crate::Error::bad_shape(
                "sparse matrix",
                &shape,
                format!("{nnz} stored values do not fit u32 pointers"),
            ));
        }
        let (ptr, idx, flat) = pattern(&stored, shape, by_col);
        Ok(Compressed {
            shape,
            ptr,
            idx,
            values: flat.into_iter().map(|i| values[i]).collect(),
        })
    }

    /// The flat row-major index of every stored entry, with its value.
    fn entries(&self, by_col: bool) -> impl Iterator<Item = (usize, f32)> + '_ {
        let cols = self.shape[1];
        self.ptr.windows(2).enumerate().flat_map(move |(major, w)| {
            let range = w[0] as usize..w[1] as usize;
            self.idx[range.clone()]
                .iter()
                .zip(&self.values[range])
                .map(move |(&minor, &v)| {
                    let (r, c) = if by_col {
                        (minor as usize, major)
                    } else {
                        (major, minor as usize)
                    };
                    (r * cols + c, v)
                })
        })
    }

    fn to_dense(&self, by_col: bool) -> Vec<f32> {
        let mut dense = vec![0f32; self.shape[0] * self.shape[1]];
        for (i, v) in self.entries(by_col) {
            dense[i] = v;
        }
        dense
    }

    fn mask(&self, by_col: bool) -> Mask {
        let mut m = Mask::zeros(&self.shape);
        for (i, _) in self.entries(by_col) {
            m.set(i, true);
        }
        m
    }

    fn storage_bits(&self) -> usize {
        SHAPE_BITS + 32 * self.ptr.len() + 64 * self.values.len()
    }

    /// `[rows, cols]`, the pointers (major + 1), the minor indices, the values.
    fn write_to(&self, out: &mut Vec<u8>) {
        write_shape(out, self.shape);
        put_u32s(out, &self.ptr);
        put_u32s(out, &self.idx);
        put_f32s(out, &self.values);
    }

    fn read_from(bytes: &mut &[u8], by_col: bool) -> Result<Self> {
        let format = if by_col { "CSC" } else { "CSR" };
        let mut r = Reader::new(bytes, format);
        let shape = read_shape(&mut r)?;
        let (major_len, minor_len) = if by_col {
            (shape[1], shape[0])
        } else {
            (shape[0], shape[1])
        };
        let ptr = r.u32s(major_len.saturating_add(1), "pointers")?;
        check_pointers(&ptr).map_err(|e| r.error(e))?;
        let nnz = ptr[major_len] as usize;
        let idx = r.u32s(nnz, "indices")?;
        check_indices(&ptr, &idx, minor_len).map_err(|e| r.error(e))?;
        let values = r.finite_f32s(nnz, "values")?;
        *bytes = r.rest();
        Ok(Compressed {
            shape,
            ptr,
            idx,
            values,
        })
    }
}

/// Compressed sparse rows: `row_ptr[r]..row_ptr[r+1]` index the entries of row `r` in
/// `col_idx` (strictly increasing within a row) and `values`.
///
/// Storage: `[rows, cols]` as two u32, then `row_ptr` (`rows + 1` u32), `col_idx` (u32)
/// and `values` (f32): `64 + 32·(rows + 1) + 64·nnz` bits. Pointers are u32, so at most
/// 2³² − 1 values are stored.
///
/// ```
/// use slimnn::Mask;
/// use slimnn::encode::{Csr, SparseFormat};
///
/// let dense = [1.0, 0.0, 2.0, 0.0, 3.0, 4.0];
/// // Keep positions 0, 4 and 5 (the mask drops the 2.0).
/// let mask = Mask::from_fn(&[2, 3], |i| [0, 4, 5].contains(&i));
/// let csr = Csr::from_dense(&dense, [2, 3], Some(&mask))?;
/// assert_eq!(csr.row_ptr(), &[0, 1, 3]);
/// assert_eq!(csr.col_idx(), &[0, 1, 2]);
/// assert_eq!(csr.values(), &[1.0, 3.0, 4.0]);
/// assert_eq!(csr.to_dense(), [1.0, 0.0, 0.0, 0.0, 3.0, 4.0]);
/// assert_eq!(csr.storage_bits(), 64 + 32 * 3 + 64 * 3);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Csr(Compressed);

impl Csr {
    /// Stores the kept positions of `mask` (the non-zeros of `values` without one) of the
    /// dense row-major `values` of a `[rows, cols]` matrix.
    ///
    /// Fails if `values` does not hold `rows·cols` elements, the mask does not fit the
    /// shape (see [`crate::encode`]), a stored value is not finite, or a dimension or the
    /// number of stored values does not fit u32.
    pub fn from_dense(values: &[f32], shape: [usize; 2], mask: Option<&Mask>) -> Result<Csr> {
        Compressed::build(values, shape, mask, false).map(Csr)
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.0.shape[0]
    }

    /// The number of columns.
    pub fn cols(&self) -> usize {
        self.0.shape[1]
    }

    /// Row pointers, `rows + 1` of them, from 0 to `nnz`.
    pub fn row_ptr(&self) -> &[u32] {
        &self.0.ptr
    }

    /// The column of every stored value.
    pub fn col_idx(&self) -> &[u32] {
        &self.0.idx
    }

    /// The stored values, row by row.
    pub fn values(&self) -> &[f32] {
        &self.0.values
    }

    /// `x·Wᵀ` for activations `x` `[batch, cols]`, skipping the pruned weights
    /// ([`sparse_ops::csr_matmul`](crate::sparse_ops::csr_matmul), on both cores).
    ///
    /// ```
    /// use ndarray::array;
    /// use slimnn::encode::Csr;
    ///
    /// let w = Csr::from_dense(&[0.0, 2.0, 0.0, 1.0, 0.0, -1.0], [2, 3], None)?;
    /// let y = w.matmul(&array![[1.0f32, 1.0, 1.0]])?;
    /// assert_eq!(y, array![[2.0f32, 0.0]]);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn matmul(&self, x: &ArrayRef<f32, Ix2>) -> Result<Array2<f32>> {
        crate::sparse_ops::csr_matmul(
            [self.rows(), self.cols()],
            self.row_ptr(),
            self.col_idx(),
            self.values(),
            x,
        )
    }
}

impl SparseFormat for Csr {
    fn shape(&self) -> [usize; 2] {
        self.0.shape
    }
    fn nnz(&self) -> usize {
        self.0.values.len()
    }
    fn to_dense(&self) -> Vec<f32> {
        self.0.to_dense(false)
    }
    fn mask(&self) -> Mask {
        self.0.mask(false)
    }
    fn storage_bits(&self) -> usize {
        self.0.storage_bits()
    }
    fn write_to(&self, out: &mut Vec<u8>) {
        self.0.write_to(out)
    }
    fn read_from(bytes: &mut &[u8]) -> Result<Csr> {
        Compressed::read_from(bytes, false).map(Csr)
    }
}

/// Compressed sparse columns, the transpose layout of [`Csr`]: `col_ptr[c]..col_ptr[c+1]`
/// index the entries of column `c` in `row_idx` (strictly increasing within a column)
/// and `values`.
///
/// Storage: `[rows, cols]` as two u32, then `col_ptr` (`cols + 1` u32), `row_idx` (u32)
/// and `values` (f32): `64 + 32·(cols + 1) + 64·nnz` bits.
///
/// ```
/// use slimnn::encode::{Csc, SparseFormat};
///
/// let dense = [1.0, 0.0, 2.0, 0.0, 3.0, 4.0];
/// let csc = Csc::from_dense(&dense, [2, 3], None)?;
/// assert_eq!(csc.col_ptr(), &[0, 1, 2, 4]);
/// assert_eq!(csc.row_idx(), &[0, 1, 0, 1]);
/// assert_eq!(csc.values(), &[1.0, 3.0, 2.0, 4.0]);
/// assert_eq!(csc.to_dense(), dense);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Csc(Compressed);

impl Csc {
    /// Stores the kept positions of `mask` (the non-zeros of `values` without one) of the
    /// dense row-major `values` of a `[rows, cols]` matrix. Fails as [`Csr::from_dense`].
    pub fn from_dense(values: &[f32], shape: [usize; 2], mask: Option<&Mask>) -> Result<Csc> {
        Compressed::build(values, shape, mask, true).map(Csc)
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.0.shape[0]
    }

    /// The number of columns.
    pub fn cols(&self) -> usize {
        self.0.shape[1]
    }

    /// Column pointers, `cols + 1` of them, from 0 to `nnz`.
    pub fn col_ptr(&self) -> &[u32] {
        &self.0.ptr
    }

    /// The row of every stored value.
    pub fn row_idx(&self) -> &[u32] {
        &self.0.idx
    }

    /// The stored values, column by column.
    pub fn values(&self) -> &[f32] {
        &self.0.values
    }
}

impl SparseFormat for Csc {
    fn shape(&self) -> [usize; 2] {
        self.0.shape
    }
    fn nnz(&self) -> usize {
        self.0.values.len()
    }
    fn to_dense(&self) -> Vec<f32> {
        self.0.to_dense(true)
    }
    fn mask(&self) -> Mask {
        self.0.mask(true)
    }
    fn storage_bits(&self) -> usize {
        self.0.storage_bits()
    }
    fn write_to(&self, out: &mut Vec<u8>) {
        self.0.write_to(out)
    }
    fn read_from(bytes: &mut &[u8]) -> Result<Csc> {
        Compressed::read_from(bytes, true).map(Csc)
    }
}
