//! Products of a sparse or compressed Linear weight with dense activations, without
//! making the weight dense: `Y = X·Wᵀ` for a weight `W` `[out, in]`, activations `X`
//! `[batch, in]` and a result `Y` `[batch, out]`, all row-major.
//!
//! The weight formats, given as raw slices:
//! - CSR ([`csr_matmul`]): `row_ptr` `[out + 1]`, `col_idx` and `values` `[nnz]`, with
//!   16-bit column indices ([`csr16_matmul`]) where there are at most 65,536 inputs;
//! - N:M ([`nm_matmul`]): every group of `m` consecutive inputs of a row stores `n`
//!   values (2:4 is the common case), with their in-group positions;
//! - weight sharing ([`codebook_matmul`], [`packed_codebook_matmul`]): one code per
//!   weight, indexing a codebook of at most 256 values;
//! - 4-bit: llama.cpp's Q4_0 blocks ([`q4_0_matmul`]) and affine groups
//!   ([`int4_matmul`]), decoded in registers;
//! - int8 ([`int8_matmul`]): signed codes with one scale per row or per block of
//!   inputs, run in integer arithmetic.
//!
//! [`dense_matmul`] is the dense yardstick they are measured against: the same row
//! kernels at small batches (a dot product per row on both cores, several times faster
//! at batch 1 than a general matrix product), a tuned general matrix product (faer's
//! packed GEMM with AVX-512 or AVX2 micro-kernels, on both cores) at larger ones.
//!
//! Each function checks its inputs once (lengths, index ranges, shapes) and returns a
//! typed [`Error`] for bad ones, then runs the crate's kernels: AVX2 where the CPU has
//! it (AVX-512 for the 4-bit products), both cores for large products. The `_into` forms write into a caller's buffer
//! (`&mut [f32]` of `batch · out` values) and take `x` as a row-major slice.
//!
//! Zero-sized weights (`out` or `in` zero) are rejected; a batch of zero rows gives an
//! empty result. NaN and infinities are not rejected: like in a dense product they
//! propagate, through the stored weights (a non-finite `x[b, c]` reaches `y[b, r]` when
//! row `r` stores a weight in column `c`; for codebook weights every weight is stored).

use std::borrow::Cow;

use ndarray::{Array2, ArrayRef, Ix2};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::q4::{self, Q4};
use crate::kernels::sparse::{Codebook, Codes, ColIndex, Csr, Dense, NM, matmul};

/// `Y = X·Wᵀ` for a CSR weight `W` of `shape = [out, in]`.
///
/// Row `r` of `W` stores `values[k]` at column `col_idx[k]` for `k` in
/// `row_ptr[r]..row_ptr[r + 1]`. Columns need not be sorted; repeated columns add up.
///
/// # Errors
/// [`Error::Empty`] for a zero-sized shape; [`Error::InvalidParameter`] if `row_ptr`
/// does not have `out + 1` entries, does not start at 0, decreases, or does not end at
/// the length of `col_idx` and `values`, or if a column index is not below `in`;
/// [`Error::ShapeMismatch`] if `x` does not have `in` columns.
///
/// ```
/// use ndarray::array;
/// use slimnn::sparse_ops::csr_matmul;
///
/// // W = [[1, 0, 2],
/// //      [0, 0, 0],
/// //      [0, 3, 0]]
/// let (row_ptr, col_idx, values) = ([0u32, 2, 2, 3], [0u32, 2, 1], [1.0f32, 2.0, 3.0]);
/// let x = array![[1.0f32, 10.0, 100.0], [2.0, 20.0, 200.0]];
/// let y = csr_matmul([3, 3], &row_ptr, &col_idx, &values, &x)?;
/// assert_eq!(y, array![[201.0, 0.0, 30.0], [402.0, 0.0, 60.0]]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn csr_matmul(
    shape: [usize; 2],
    row_ptr: &[u32],
    col_idx: &[u32],
    values: &[f32],
    x: &ArrayRef<f32, Ix2>,
) -> Result<Array2<f32>> {
    let csr = check_csr(shape, row_ptr, col_idx, values)?;
    product(&csr, shape, x)
}

/// [`csr_matmul`] into `y` `[batch, out]`, for `x` `[batch, in]` given as a row-major
/// slice (`batch` is `x.len() / in`).
///
/// # Errors
/// As [`csr_matmul`], and [`Error::BadShape`] if `x.len()` is not a multiple of `in` or
/// `y.len()` is not `batch · out`.
///
/// ```
/// use slimnn::sparse_ops::csr_matmul_into;
///
/// // W = [[0, 2], [1, 0]] at batch 1.
/// let mut y = [0.0f32; 2];
/// csr_matmul_into([2, 2], &[0, 1, 2], &[1, 0], &[2.0, 1.0], &[3.0, 4.0], &mut y)?;
/// assert_eq!(y, [8.0, 3.0]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn csr_matmul_into(
    shape: [usize; 2],
    row_ptr: &[u32],
    col_idx: &[u32],
    values: &[f32],
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let csr = check_csr(shape, row_ptr, col_idx, values)?;
    product_into(&csr, shape, x, y)
}

/// [`csr_matmul`] with 16-bit column indices, for weights of at most 65,536 inputs: a
/// stored weight takes 6 bytes instead of 8, and the product streams them once.
///
/// # Errors
/// As [`csr_matmul`].
///
/// ```
/// use ndarray::array;
/// use slimnn::sparse_ops::csr16_matmul;
///
/// // W = [[1, 0, 2], [0, 3, 0]]
/// let (row_ptr, col_idx, values) = ([0u32, 2, 3], [0u16, 2, 1], [1.0f32, 2.0, 3.0]);
/// let y = csr16_matmul([2, 3], &row_ptr, &col_idx, &values, &array![[1.0f32, 10.0, 100.0]])?;
/// assert_eq!(y, array![[201.0, 30.0]]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn csr16_matmul(
    shape: [usize; 2],
    row_ptr: &[u32],
    col_idx: &[u16],
    values: &[f32],
    x: &ArrayRef<f32, Ix2>,
) -> Result<Array2<f32>> {
    let csr = check_csr(shape, row_ptr, col_idx, values)?;
    product(&csr, shape, x)
}

/// [`csr16_matmul`] into `y` `[batch, out]`, for `x` `[batch, in]` given as a row-major
/// slice (`batch` is `x.len() / in`).
///
/// # Errors
/// As [`csr_matmul_into`].
///
/// ```
/// use slimnn::sparse_ops::csr16_matmul_into;
///
/// // W = [[0, 2], [1, 0]] at batch 1.
/// let mut y = [0.0f32; 2];
/// csr16_matmul_into([2, 2], &[0, 1, 2], &[1, 0], &[2.0, 1.0], &[3.0, 4.0], &mut y)?;
/// assert_eq!(y, [8.0, 3.0]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn csr16_matmul_into(
    shape: [usize; 2],
    row_ptr: &[u32],
    col_idx: &[u16],
    values: &[f32],
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let csr = check_csr(shape, row_ptr, col_idx, values)?;
    product_into(&csr, shape, x, y)
}

/// `Y = X·Wᵀ` for an N:M sparse weight `W` of `shape = [out, in]`: every group of `m`
/// consecutive inputs of a row holds `n` stored values.
///
/// `values` and `idx` are `[out, in / m · n]`: the stored values of each group in
/// turn, and each value's position in its group (below `m`, one byte each, unpacked).
/// Repeated positions in a group add up.
///
/// # Errors
/// [`Error::Empty`] for a zero-sized shape; [`Error::InvalidParameter`] unless
/// `1 ≤ n ≤ m ≤ 256`, if `in` is not a multiple of `m`, if `values` or `idx` do not
/// have `out · in / m · n` entries, or if a position is not below `m`;
/// [`Error::ShapeMismatch`] if `x` does not have `in` columns.
///
/// ```
/// use ndarray::array;
/// use slimnn::sparse_ops::nm_matmul;
///
/// // 2:4, one row: W = [0, 5, 0, 7,  1, 0, 2, 0].
/// let (values, idx) = ([5.0f32, 7.0, 1.0, 2.0], [1u8, 3, 0, 2]);
/// let x = array![[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]];
/// let y = nm_matmul([1, 8], 2, 4, &values, &idx, &x)?;
/// assert_eq!(y, array![[5.0 * 2.0 + 7.0 * 4.0 + 5.0 + 2.0 * 7.0]]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn nm_matmul(
    shape: [usize; 2],
    n: usize,
    m: usize,
    values: &[f32],
    idx: &[u8],
    x: &ArrayRef<f32, Ix2>,
) -> Result<Array2<f32>> {
    let nm = check_nm(shape, n, m, values, idx)?;
    product(&nm, shape, x)
}

/// [`nm_matmul`] into `y` `[batch, out]`, for `x` `[batch, in]` given as a row-major
/// slice (`batch` is `x.len() / in`).
///
/// # Errors
/// As [`nm_matmul`], and [`Error::BadShape`] if `x.len()` is not a multiple of `in` or
/// `y.len()` is not `batch · out`.
///
/// ```
/// use slimnn::sparse_ops::nm_matmul_into;
///
/// // 1:2, two rows: W = [[3, 0], [0, 4]], batch 1.
/// let mut y = [0.0f32; 2];
/// nm_matmul_into([2, 2], 1, 2, &[3.0, 4.0], &[0, 1], &[1.0, 10.0], &mut y)?;
/// assert_eq!(y, [3.0, 40.0]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn nm_matmul_into(
    shape: [usize; 2],
    n: usize,
    m: usize,
    values: &[f32],
    idx: &[u8],
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let nm = check_nm(shape, n, m, values, idx)?;
    product_into(&nm, shape, x, y)
}

/// `Y = X·Wᵀ` for a weight-shared `W` of `shape = [out, in]`:
/// `W[r, c] = codebook[codes[r · in + c]]`, one code byte per weight.
///
/// The weight is never made dense: each worker decodes one row at a time.
///
/// # Errors
/// [`Error::Empty`] for a zero-sized shape; [`Error::InvalidParameter`] if the
/// codebook is empty or has more than 256 entries, if `codes` does not have
/// `out · in` entries, or if a code is not below the codebook's length;
/// [`Error::ShapeMismatch`] if `x` does not have `in` columns.
///
/// ```
/// use ndarray::array;
/// use slimnn::sparse_ops::codebook_matmul;
///
/// let codebook = [-0.5f32, 0.0, 2.0];
/// let codes = [0u8, 2, 1, 2]; // W = [[-0.5, 2], [0, 2]]
/// let y = codebook_matmul([2, 2], &codes, &codebook, &array![[2.0f32, 1.0]])?;
/// assert_eq!(y, array![[1.0, 2.0]]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn codebook_matmul(
    shape: [usize; 2],
    codes: &[u8],
    codebook: &[f32],
    x: &ArrayRef<f32, Ix2>,
) -> Result<Array2<f32>> {
    let w = check_codebook(shape, codes, codebook)?;
    product(&w, shape, x)
}

/// [`codebook_matmul`] into `y` `[batch, out]`, for `x` `[batch, in]` given as a
/// row-major slice (`batch` is `x.len() / in`).
///
/// # Errors
/// As [`codebook_matmul`], and [`Error::BadShape`] if `x.len()` is not a multiple of
/// `in` or `y.len()` is not `batch · out`.
///
/// ```
/// use slimnn::sparse_ops::codebook_matmul_into;
///
/// let mut y = [0.0f32; 1];
/// codebook_matmul_into([1, 3], &[1, 1, 0], &[10.0, 1.0], &[1.0, 2.0, 3.0], &mut y)?;
/// assert_eq!(y, [33.0]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn codebook_matmul_into(
    shape: [usize; 2],
    codes: &[u8],
    codebook: &[f32],
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let w = check_codebook(shape, codes, codebook)?;
    product_into(&w, shape, x, y)
}

/// [`codebook_matmul`] with the codes packed at `bits` per code (1 to 8), as
/// [`crate::quant::PackedCodes`] packs them: code `i` in bits `i·bits .. (i+1)·bits` of
/// a little-endian bit stream.
///
/// # Errors
/// As [`codebook_matmul`], and [`Error::InvalidParameter`] if `bits` is not in 1..=8 or
/// `bytes` does not have `ceil(out · in · bits / 8)` bytes.
///
/// ```
/// use ndarray::array;
/// use slimnn::quant::PackedCodes;
/// use slimnn::sparse_ops::packed_codebook_matmul;
///
/// let codebook = [0.0f32, 1.0, 2.0, 3.0];
/// let codes = PackedCodes::pack(&[3, 0, 1, 2, 2, 1], 2)?; // W = [[3, 0, 1], [2, 2, 1]]
/// let x = array![[1.0f32, 1.0, 1.0]];
/// let y = packed_codebook_matmul([2, 3], codes.bytes(), codes.bits(), &codebook, &x)?;
/// assert_eq!(y, array![[4.0, 5.0]]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn packed_codebook_matmul(
    shape: [usize; 2],
    bytes: &[u8],
    bits: u8,
    codebook: &[f32],
    x: &ArrayRef<f32, Ix2>,
) -> Result<Array2<f32>> {
    let w = check_packed_codebook(shape, bytes, bits, codebook)?;
    if let Some(q) = q4_codebook(shape, bytes, bits, codebook) {
        return product_with(shape, x, |x, y| q4::matmul(&q, x, y));
    }
    product(&w, shape, x)
}

/// [`packed_codebook_matmul`] into `y` `[batch, out]`, for `x` `[batch, in]` given as
/// a row-major slice (`batch` is `x.len() / in`).
///
/// # Errors
/// As [`packed_codebook_matmul`], and [`Error::BadShape`] if `x.len()` is not a
/// multiple of `in` or `y.len()` is not `batch · out`.
///
/// ```
/// use slimnn::sparse_ops::packed_codebook_matmul_into;
///
/// // 4-bit codes 1, 2 (one byte: low nibble first), codebook [0, 0.5, 4].
/// let mut y = [0.0f32; 1];
/// packed_codebook_matmul_into([1, 2], &[0x21], 4, &[0.0, 0.5, 4.0], &[2.0, 1.0], &mut y)?;
/// assert_eq!(y, [5.0]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn packed_codebook_matmul_into(
    shape: [usize; 2],
    bytes: &[u8],
    bits: u8,
    codebook: &[f32],
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let w = check_packed_codebook(shape, bytes, bits, codebook)?;
    if let Some(q) = q4_codebook(shape, bytes, bits, codebook) {
        check_batch(shape, x, y)?;
        q4::matmul(&q, x, y);
        return Ok(());
    }
    product_into(&w, shape, x, y)
}

/// The 4-bit kernel's form of a checked packed codebook weight, where it applies
/// (4-bit codes, rows a multiple of 32 codes).
fn q4_codebook<'a>(
    shape: [usize; 2],
    bytes: &'a [u8],
    bits: u8,
    codebook: &[f32],
) -> Option<Q4<'a>> {
    (bits == 4 && shape[1].is_multiple_of(q4::BLOCK))
        .then(|| Q4::codebook(bytes, codebook, shape[0], shape[1]))
}

/// `Y = X·Wᵀ` for a weight `W` of `shape = [out, in]` in llama.cpp's Q4_0 blocks, as
/// [`quantize_ggml`](crate::quant::quantize_ggml) gives them: for every 32 consecutive
/// inputs of a row, 18 bytes: an f16 scale `d` (little-endian), then 16 bytes whose low
/// nibbles are codes 0–15 and high nibbles codes 16–31; `W = d·(q − 8)`.
///
/// The blocks are read once and decoded in registers (AVX-512 or AVX2 where the CPU has
/// them); the activations stay f32 (they are not quantized to Q8_0 as llama.cpp does),
/// so the result is the f32 product of the decoded weights up to summation order.
///
/// # Errors
/// [`Error::Empty`] for a zero-sized shape; [`Error::InvalidParameter`] if `in` is not a
/// multiple of 32 or `blocks` does not have `out · in / 32 · 18` bytes;
/// [`Error::ShapeMismatch`] if `x` does not have `in` columns.
///
/// ```
/// use ndarray::{Array2, array};
/// use slimnn::quant::{GgmlFormat, dequantize_ggml, quantize_ggml};
/// use slimnn::sparse_ops::q4_0_matmul;
///
/// let w: Vec<f32> = (0..2 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
/// let blocks = quantize_ggml(&w, &[2, 64], GgmlFormat::Q4_0)?;
/// let x = Array2::from_shape_fn((1, 64), |(_, c)| c as f32 / 64.0);
/// let y = q4_0_matmul([2, 64], &blocks, &x)?;
/// let decoded = Array2::from_shape_vec((2, 64), dequantize_ggml(&blocks, &[2, 64], GgmlFormat::Q4_0)?).unwrap();
/// let expected = x.dot(&decoded.t());
/// assert!((&y - &expected).iter().all(|e| e.abs() < 1e-4));
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn q4_0_matmul(
    shape: [usize; 2],
    blocks: &[u8],
    x: &ArrayRef<f32, Ix2>,
) -> Result<Array2<f32>> {
    let w = check_q4_0(shape, blocks)?;
    product_with(shape, x, |x, y| q4::matmul(&w, x, y))
}

/// [`q4_0_matmul`] into `y` `[batch, out]`, for `x` `[batch, in]` given as a row-major
/// slice (`batch` is `x.len() / in`).
///
/// # Errors
/// As [`q4_0_matmul`], and [`Error::BadShape`] if `x.len()` is not a multiple of `in` or
/// `y.len()` is not `batch · out`.
///
/// ```
/// use slimnn::sparse_ops::q4_0_matmul_into;
///
/// // One row of 32 weights: d = 0.5 (f16 0x3800), codes 9 (low) and 7 (high): W = 0.5
/// // for inputs 0–15 and −0.5 for inputs 16–31.
/// let mut block = vec![0x00, 0x38];
/// block.extend([0x79u8; 16]);
/// let x: Vec<f32> = (0..32).map(|c| if c < 16 { 1.0 } else { 2.0 }).collect();
/// let mut y = [0.0f32; 1];
/// q4_0_matmul_into([1, 32], &block, &x, &mut y)?;
/// assert_eq!(y, [16.0 * 0.5 - 32.0 * 0.5]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn q4_0_matmul_into(shape: [usize; 2], blocks: &[u8], x: &[f32], y: &mut [f32]) -> Result<()> {
    let w = check_q4_0(shape, blocks)?;
    check_batch(shape, x, y)?;
    q4::matmul(&w, x, y);
    Ok(())
}

/// `Y = X·Wᵀ` for a weight `W` of `shape = [out, in]` quantized to 4-bit affine groups
/// (GPTQ/AWQ style): codes packed two per byte as [`crate::quant::PackedCodes`] packs
/// them (code `i` in the low nibble of byte `i / 2` when `i` is even, the high nibble
/// when odd, `i = r · in + c`), and one scale and zero point per group of `group`
/// consecutive inputs of a row: `W[r, c] = scales[g]·(q − zeros[g])` with
/// `g = (r · in + c) / group`; no zero points means zero.
///
/// The codes are read once and decoded in registers; the activations stay f32. A
/// [`QuantizedTensor`](crate::quant::QuantizedTensor) of 4-bit integer levels `min..`
/// with per-group scales gives the codes, the scales, and zero points `z − min`.
///
/// # Errors
/// [`Error::Empty`] for a zero-sized shape; [`Error::InvalidParameter`] if `group` is
/// not a multiple of 32 dividing `in`, if `codes` does not have `out · in / 2` bytes,
/// or if `scales` (or `zeros`) do not have `out · in / group` entries;
/// [`Error::ShapeMismatch`] if `x` does not have `in` columns.
///
/// ```
/// use ndarray::Array2;
/// use slimnn::sparse_ops::int4_matmul;
///
/// // One row of 32 weights, all code 3 (bytes 0x33), scale 0.5, zero point 1: W = 1.
/// let x = Array2::from_shape_fn((1, 32), |(_, c)| c as f32);
/// let y = int4_matmul([1, 32], &[0x33; 16], 32, &[0.5], Some(&[1.0]), &x)?;
/// assert_eq!(y[[0, 0]], (0..32).sum::<i32>() as f32);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn int4_matmul(
    shape: [usize; 2],
    codes: &[u8],
    group: usize,
    scales: &[f32],
    zeros: Option<&[f32]>,
    x: &ArrayRef<f32, Ix2>,
) -> Result<Array2<f32>> {
    let w = check_int4(shape, codes, group, scales, zeros)?;
    product_with(shape, x, |x, y| q4::matmul(&w, x, y))
}

/// [`int4_matmul`] into `y` `[batch, out]`, for `x` `[batch, in]` given as a row-major
/// slice (`batch` is `x.len() / in`).
///
/// # Errors
/// As [`int4_matmul`], and [`Error::BadShape`] if `x.len()` is not a multiple of `in` or
/// `y.len()` is not `batch · out`.
///
/// ```
/// use slimnn::sparse_ops::int4_matmul_into;
///
/// // Codes 0, 15 repeated (bytes 0xF0), scale 2, no zero point: W = [0, 30, 0, 30, …].
/// let x = [1.0f32; 32];
/// let mut y = [0.0f32; 1];
/// int4_matmul_into([1, 32], &[0xF0; 16], 32, &[2.0], None, &x, &mut y)?;
/// assert_eq!(y, [16.0 * 30.0]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn int4_matmul_into(
    shape: [usize; 2],
    codes: &[u8],
    group: usize,
    scales: &[f32],
    zeros: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let w = check_int4(shape, codes, group, scales, zeros)?;
    check_batch(shape, x, y)?;
    q4::matmul(&w, x, y);
    Ok(())
}

/// `Y = X·Wᵀ` for a dense row-major weight `W` of `shape = [out, in]`: the yardstick
/// for the compressed products. Below a batch of 8 it runs the same row kernels they
/// do (a dot product per row, on both cores: at batch 1 several times faster than a
/// general matrix product, which packs the whole weight first); from 8 on, a tuned
/// general matrix product (faer's packed GEMM, cut into output blocks on both cores, the
/// same bits on any number of threads).
///
/// # Errors
/// [`Error::Empty`] for a zero-sized shape; [`Error::BadShape`] if `values` does not
/// hold `out · in` weights; [`Error::ShapeMismatch`] if `x` does not have `in` columns.
///
/// ```
/// use ndarray::array;
/// use slimnn::sparse_ops::dense_matmul;
///
/// let w = [1.0f32, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let y = dense_matmul([2, 2], &w, &array![[1.0f32, 10.0]])?;
/// assert_eq!(y, array![[21.0, 43.0]]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn dense_matmul(
    shape: [usize; 2],
    values: &[f32],
    x: &ArrayRef<f32, Ix2>,
) -> Result<Array2<f32>> {
    let [out, inputs] = shape;
    if out == 0 || inputs == 0 {
        return Err(Error::Empty {
            what: format!("dense weight of shape {shape:?}"),
        });
    }
    if out.checked_mul(inputs) != Some(values.len()) {
        return Err(Error::bad_shape(
            "dense weight values",
            &[values.len()],
            format!("{out} · {inputs} weights"),
        ));
    }
    if x.nrows() >= DENSE_GEMM_BATCH {
        let w = ndarray::ArrayView2::from_shape((out, inputs), values).expect("length checked");
        if x.ncols() != inputs {
            return Err(Error::ShapeMismatch {
                what: "activations `x` [batch, in]".into(),
                expected: vec![x.nrows(), inputs],
                got: vec![x.nrows(), x.ncols()],
            });
        }
        return Ok(crate::kernels::matmul::matmul(x.view(), w.t()));
    }
    product(&Dense::new(values, inputs), shape, x)
}

/// `Y = X·Wᵀ` for an int8 weight `W` of `shape = [out, in]`, given as raw signed codes
/// and scales: `W[r, c] = scales[r · in / block + c / block] · codes[r · in + c]`, one
/// scale per block of `block` consecutive inputs of each row (`block = in`: one scale
/// per row). Runs in integer arithmetic as [`QuantizedLinear`](crate::quant::QuantizedLinear)
/// does: each activation row is quantized per block to
/// int8 from its own range, products are summed exactly in int32 and scaled back.
/// Codes and scales of a [`QuantizedTensor`](crate::quant::QuantizedTensor) come from
/// [`QuantizedTensor::int8_codes`](crate::quant::QuantizedTensor::int8_codes).
///
/// Each call checks the weight and packs it into the kernel's panels (one pass over the
/// codes, and a copy of them); to run the same weight many times, build a
/// `QuantizedLinear` once, which packs at construction.
///
/// # Errors
/// [`Error::Empty`] for a zero-sized shape or an empty batch; [`Error::InvalidParameter`]
/// if `block` is 0, above 131072 or does not divide `in`, if `codes` does not have
/// `out · in` entries or `scales` one per block of each row, or if a code is −128
/// (codes are symmetric, `−127..=127`); [`Error::NonFinite`] for a NaN or infinite
/// scale or activation; [`Error::ShapeMismatch`] if `x` does not have `in` columns.
///
/// ```
/// use ndarray::array;
/// use slimnn::sparse_ops::int8_matmul;
///
/// // W = [[0.5·2, 0.5·−4], [0.25·8, 0.25·1]], one scale per row.
/// let (codes, scales) = ([2i8, -4, 8, 1], [0.5f32, 0.25]);
/// let y = int8_matmul([2, 2], &codes, &scales, 2, &array![[1.0f32, 0.5]])?;
/// assert!((y[[0, 0]] - 0.0).abs() < 0.02 && (y[[0, 1]] - 2.125).abs() < 0.02);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn int8_matmul(
    shape: [usize; 2],
    codes: &[i8],
    scales: &[f32],
    block: usize,
    x: &ArrayRef<f32, Ix2>,
) -> Result<Array2<f32>> {
    let w = crate::quant::check_int8(shape, codes, scales, block)?;
    let batch = crate::quant::check_input(x, shape[1])?;
    let x = x.as_standard_layout();
    let mut y = Array2::zeros((batch, shape[0]));
    w.forward(
        x.as_slice().expect("standard layout"),
        None,
        y.as_slice_mut().expect("standard layout"),
    );
    Ok(y)
}

/// [`int8_matmul`] into `y` `[batch, out]`, for `x` `[batch, in]` given as a row-major
/// slice (`batch` is `x.len() / in`; a batch of zero rows gives an empty result).
///
/// # Errors
/// As [`int8_matmul`], and [`Error::BadShape`] if `x.len()` is not a multiple of `in` or
/// `y.len()` is not `batch · out`.
///
/// ```
/// use slimnn::sparse_ops::int8_matmul_into;
///
/// let mut y = [0.0f32; 2];
/// int8_matmul_into([2, 2], &[2, -4, 8, 1], &[0.5, 0.25], 2, &[1.0, 0.5], &mut y)?;
/// assert!((y[0] - 0.0).abs() < 0.02 && (y[1] - 2.125).abs() < 0.02);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn int8_matmul_into(
    shape: [usize; 2],
    codes: &[i8],
    scales: &[f32],
    block: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let w = crate::quant::check_int8(shape, codes, scales, block)?;
    let batch = crate::quant::check_input_slice(x, shape[1], shape[0], y.len())?;
    if batch > 0 {
        w.forward(x, None, y);
    }
    Ok(())
}

/// The batch from which [`dense_matmul`] runs a general matrix product (packed panels
/// pay off once each weight is used this many times); below it, a dot product per row.
const DENSE_GEMM_BATCH: usize = 8;

/// Runs the checked weight `w` on an ndarray batch.
fn product<R: crate::kernels::sparse::Rows>(
    w: &R,
    shape: [usize; 2],
    x: &ArrayRef<f32, Ix2>,
) -> Result<Array2<f32>> {
    product_with(shape, x, |x, y| matmul(w, shape[0], shape[1], x, y))
}

/// Runs `run(x, y)` (a checked weight's product into `y`) on an ndarray batch.
fn product_with(
    [out, inputs]: [usize; 2],
    x: &ArrayRef<f32, Ix2>,
    run: impl FnOnce(&[f32], &mut [f32]),
) -> Result<Array2<f32>> {
    let (batch, cols) = x.dim();
    if cols != inputs {
        return Err(Error::ShapeMismatch {
            what: "activations `x` [batch, in]".into(),
            expected: vec![batch, inputs],
            got: vec![batch, cols],
        });
    }
    let xs: Cow<'_, [f32]> = match x.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(x.iter().copied().collect()),
    };
    let mut y = vec![0.0f32; batch * out];
    run(&xs, &mut y);
    Ok(Array2::from_shape_vec((batch, out), y).expect("batch · out values"))
}

/// Runs the checked weight `w` on a row-major batch, into `y`.
fn product_into<R: crate::kernels::sparse::Rows>(
    w: &R,
    shape: [usize; 2],
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    check_batch(shape, x, y)?;
    matmul(w, shape[0], shape[1], x, y);
    Ok(())
}

/// Checks that `x` is `[batch, in]` and `y` `[batch, out]`, row-major.
fn check_batch([out, inputs]: [usize; 2], x: &[f32], y: &[f32]) -> Result<()> {
    if !x.len().is_multiple_of(inputs) {
        return Err(Error::bad_shape(
            "activations `x`",
            &[x.len()],
            format!("a row-major [batch, in] buffer needs a multiple of in = {inputs} values"),
        ));
    }
    let batch = x.len() / inputs;
    if y.len() != batch * out {
        return Err(Error::bad_shape(
            "output `y`",
            &[y.len()],
            format!("needs batch · out = {batch} · {out} values"),
        ));
    }
    Ok(())
}

/// The largest element: a vectorized scan, on both cores for long slices (the slow
/// search for the offending position runs only on failure).
fn max_of<T: Ord + Copy + Send + Sync>(s: &[T]) -> Option<T> {
    const CHUNK: usize = 1 << 16;
    if s.len() >= 4 * CHUNK {
        s.par_chunks(CHUNK)
            .filter_map(|c| c.iter().copied().max())
            .max()
    } else {
        s.iter().copied().max()
    }
}

fn check_shape(shape: [usize; 2]) -> Result<()> {
    let numel = shape[0]
        .checked_mul(shape[1])
        .ok_or_else(|| Error::bad_shape("weight", &shape, "the element count overflows usize"))?;
    if numel == 0 {
        return Err(Error::Empty {
            what: format!("weight of shape {shape:?}"),
        });
    }
    Ok(())
}

fn check_len(name: &'static str, len: usize, expected: usize, what: &str) -> Result<()> {
    if len != expected {
        return Err(Error::invalid(
            name,
            format!("{len} entries"),
            format!("{expected} entries ({what})"),
        ));
    }
    Ok(())
}

fn check_csr<'a, I: ColIndex>(
    shape: [usize; 2],
    row_ptr: &'a [u32],
    col_idx: &'a [I],
    values: &'a [f32],
) -> Result<Csr<'a, I>> {
    check_shape(shape)?;
    let [out, inputs] = shape;
    check_len("row_ptr", row_ptr.len(), out.saturating_add(1), "out + 1")?;
    check_len(
        "values",
        values.len(),
        col_idx.len(),
        "one per column index",
    )?;
    if row_ptr[0] != 0 {
        return Err(Error::invalid("row_ptr[0]", row_ptr[0], "0"));
    }
    if let Some(r) = row_ptr.windows(2).position(|p| p[1] < p[0]) {
        return Err(Error::invalid(
            "row_ptr",
            format!(
                "{} then {} at rows {r} and {}",
                row_ptr[r],
                row_ptr[r + 1],
                r + 1
            ),
            "non-decreasing offsets",
        ));
    }
    let nnz = row_ptr[out] as usize;
    if nnz != col_idx.len() {
        return Err(Error::invalid(
            "row_ptr",
            format!("last offset {nnz}"),
            format!("the number of stored values, {}", col_idx.len()),
        ));
    }
    if max_of(col_idx).is_some_and(|c| c.at() >= inputs) {
        let k = col_idx.iter().position(|&c| c.at() >= inputs).unwrap_or(0);
        return Err(Error::invalid(
            "col_idx",
            format!("{} at position {k}", col_idx[k]),
            format!("column indices below in = {inputs}"),
        ));
    }
    Ok(Csr {
        row_ptr,
        col_idx,
        values,
    })
}

fn check_nm<'a>(
    shape: [usize; 2],
    n: usize,
    m: usize,
    values: &'a [f32],
    idx: &'a [u8],
) -> Result<NM<'a>> {
    check_shape(shape)?;
    let [out, inputs] = shape;
    if !(1..=256).contains(&m) {
        return Err(Error::invalid("m", m, "a group size in 1..=256"));
    }
    if !(1..=m).contains(&n) {
        return Err(Error::invalid("n", n, format!("1 ≤ n ≤ m = {m}")));
    }
    if !inputs.is_multiple_of(m) {
        return Err(Error::invalid(
            "m",
            m,
            format!("a divisor of the input count {inputs}"),
        ));
    }
    let stored = out * (inputs / m) * n;
    check_len("values", values.len(), stored, "out · in / m · n")?;
    check_len("idx", idx.len(), stored, "out · in / m · n")?;
    if max_of(idx).is_some_and(|i| i as usize >= m) {
        let k = idx.iter().position(|&i| i as usize >= m).unwrap_or(0);
        return Err(Error::invalid(
            "idx",
            format!("{} at position {k}", idx[k]),
            format!("positions below m = {m}"),
        ));
    }
    Ok(NM {
        values,
        idx,
        n,
        m,
        cols: inputs,
    })
}

fn check_codebook_len(codebook: &[f32]) -> Result<()> {
    if !(1..=256).contains(&codebook.len()) {
        return Err(Error::invalid(
            "codebook",
            format!("{} entries", codebook.len()),
            "1 to 256 entries",
        ));
    }
    Ok(())
}

/// Fails unless every code (the `start`-th of the matrix first) is below the codebook's
/// length.
fn check_codes(codes: &[u8], start: usize, entries: usize) -> Result<()> {
    if max_of(codes).is_some_and(|c| c as usize >= entries) {
        let k = codes
            .iter()
            .position(|&c| c as usize >= entries)
            .unwrap_or(0);
        return Err(Error::invalid(
            "codes",
            format!("{} at position {}", codes[k], start + k),
            format!("codes below the codebook's length {entries}"),
        ));
    }
    Ok(())
}

fn check_codebook<'a>(
    shape: [usize; 2],
    codes: &'a [u8],
    codebook: &[f32],
) -> Result<Codebook<'a>> {
    check_shape(shape)?;
    check_codebook_len(codebook)?;
    check_len("codes", codes.len(), shape[0] * shape[1], "out · in")?;
    check_codes(codes, 0, codebook.len())?;
    Ok(Codebook::new(Codes::Bytes(codes), codebook, shape[1]))
}

fn check_packed_codebook<'a>(
    shape: [usize; 2],
    bytes: &'a [u8],
    bits: u8,
    codebook: &[f32],
) -> Result<Codebook<'a>> {
    check_shape(shape)?;
    check_codebook_len(codebook)?;
    if !(1..=8).contains(&bits) {
        return Err(Error::invalid("bits", bits, "1 to 8 bits per code"));
    }
    let len = shape[0] * shape[1];
    let need = len
        .checked_mul(bits as usize)
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| Error::bad_shape("weight", &shape, "the bit count overflows usize"))?;
    check_len("bytes", bytes.len(), need, "ceil(out · in · bits / 8)")?;
    // Codes of `bits` bits below the codebook's length need no check.
    if codebook.len() < 1 << bits {
        const CHUNK: usize = 1 << 14;
        let mut buf = vec![0u8; CHUNK.min(len)];
        for start in (0..len).step_by(CHUNK) {
            let part = &mut buf[..CHUNK.min(len - start)];
            crate::kernels::quant::unpack_codes(bytes, bits, start, part);
            check_codes(part, start, codebook.len())?;
        }
    }
    Ok(Codebook::new(
        Codes::Packed { bytes, bits },
        codebook,
        shape[1],
    ))
}

fn check_q4_0(shape: [usize; 2], blocks: &[u8]) -> Result<Q4<'_>> {
    check_shape(shape)?;
    let [out, inputs] = shape;
    if !inputs.is_multiple_of(q4::BLOCK) {
        return Err(Error::invalid(
            "in",
            inputs,
            "a multiple of Q4_0's block of 32",
        ));
    }
    check_len(
        "blocks",
        blocks.len(),
        out * inputs / q4::BLOCK * q4::Q4_0_BYTES,
        "18 bytes per 32 weights",
    )?;
    Ok(Q4::q4_0(blocks, out, inputs))
}

fn check_int4<'a>(
    shape: [usize; 2],
    codes: &'a [u8],
    group: usize,
    scales: &'a [f32],
    zeros: Option<&'a [f32]>,
) -> Result<Q4<'a>> {
    check_shape(shape)?;
    let [out, inputs] = shape;
    if group == 0 || !group.is_multiple_of(q4::BLOCK) || !inputs.is_multiple_of(group) {
        return Err(Error::invalid(
            "group",
            group,
            format!("a multiple of 32 dividing in = {inputs}"),
        ));
    }
    check_len("codes", codes.len(), out * inputs / 2, "out · in / 2 bytes")?;
    let groups = out * inputs / group;
    check_len("scales", scales.len(), groups, "out · in / group")?;
    if let Some(z) = zeros {
        check_len("zeros", z.len(), groups, "out · in / group")?;
    }
    Ok(Q4::groups(codes, group, scales, zeros, out, inputs))
}
