//! 4-bit weights times f32 activations, `Y = X·Wᵀ`, decoding the codes in registers.
//!
//! Three formats share one kernel: ggml's Q4_0 blocks (`W = d·(q − 8)`, an f16 `d` per
//! 32 codes stored before them), and 4-bit codes packed two per byte with either a
//! 16-entry codebook (`W = table[q]`) or affine groups (`W = s·(q − z)`, one scale and
//! zero point per group of a multiple of 32 codes). Every row is a sequence of blocks of
//! 32 codes in 16 bytes; a block's low nibbles are one half of its codes and its high
//! nibbles the other half (Q4_0: codes 0–15 and 16–31; packed: the even and the odd
//! codes). The activations are read in that order: for the packed form `x` is permuted
//! once per call within each block of 32 (evens, then odds), so one kernel serves both.
//!
//! A code becomes an f32 by a table lookup in registers (AVX-512 `vpermps` on 16 lanes
//! holds the whole table; AVX2 looks up 8 lanes in each half and blends on the code's
//! bit 3); no activation is quantized, so the product is the decoded weights' f32
//! product up to summation order.
//!
//! - Batch 1: each row's bytes are streamed once, a dot product per row, on both cores.
//! - Batch > 1: `X` is transposed into panels of up to 64 lanes (as the sparse driver
//!   does); for a tile of rows and a block of columns the codes are decoded once into a
//!   small f32 tile (in L1) and a register-blocked kernel adds `tile·panel` into the
//!   rows' accumulators: each decoded weight serves the whole panel.
//!
//! Rows are split into contiguous pieces over rayon; each output is summed in the same
//! order whatever the split, so results do not depend on the thread count.

use std::borrow::Cow;
use std::ops::Range;

use rayon::prelude::*;

use super::sparse::{Tuning, panels, transpose_out};
use super::{Level, level};

/// Codes per block.
pub(crate) const BLOCK: usize = 32;
/// Bytes of codes per block.
const CODE_BYTES: usize = 16;
/// Bytes of a ggml Q4_0 block: an f16 scale, then 16 bytes of codes.
pub(crate) const Q4_0_BYTES: usize = 18;
/// Q4_0's levels: code `q` stands for `q − 8`.
const Q4_0_TABLE: [f32; 16] = [
    -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0,
];
/// Affine groups' levels: code `q` stands for `q`.
const LINEAR_TABLE: [f32; 16] = [
    0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
];

/// How a row's blocks are scaled.
#[derive(Clone, Copy, Debug)]
enum Scale<'a> {
    /// No scale (a codebook).
    One,
    /// An f16 at the start of each block (Q4_0).
    F16,
    /// One scale (and zero point) per group of `blocks` blocks, row after row.
    Groups {
        blocks: usize,
        scales: &'a [f32],
        zeros: Option<&'a [f32]>,
    },
}

/// A 4-bit weight matrix `[rows, cols]`, `cols` a multiple of [`BLOCK`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Q4<'a> {
    bytes: &'a [u8],
    /// Bytes from one block to the next.
    stride: usize,
    /// Where a block's codes start in it.
    codes_at: usize,
    scale: Scale<'a>,
    table: [f32; 16],
    /// Whether the nibbles of a byte are neighbouring codes (packed) rather than codes
    /// 16 apart (Q4_0).
    pairs: bool,
    rows: usize,
    cols: usize,
}

/// One row of a [`Q4`] matrix.
#[derive(Clone, Copy)]
struct Row<'a> {
    bytes: &'a [u8],
    stride: usize,
    codes_at: usize,
    scale: Scale<'a>,
}

impl<'a> Q4<'a> {
    /// ggml Q4_0 blocks, `rows · cols / 32` of them, row after row (lengths checked by
    /// the caller).
    pub(crate) fn q4_0(blocks: &'a [u8], rows: usize, cols: usize) -> Q4<'a> {
        Q4 {
            bytes: blocks,
            stride: Q4_0_BYTES,
            codes_at: 2,
            scale: Scale::F16,
            table: Q4_0_TABLE,
            pairs: false,
            rows,
            cols,
        }
    }

    /// Codes packed two per byte (`rows · cols / 2` bytes) indexing `codebook` (entries past
    /// 16 are unreachable, missing ones read as 0).
    pub(crate) fn codebook(bytes: &'a [u8], codebook: &[f32], rows: usize, cols: usize) -> Q4<'a> {
        let mut table = [0.0f32; 16];
        let n = codebook.len().min(16);
        table[..n].copy_from_slice(&codebook[..n]);
        Q4 {
            bytes,
            stride: CODE_BYTES,
            codes_at: 0,
            scale: Scale::One,
            table,
            pairs: true,
            rows,
            cols,
        }
    }

    /// Codes packed two per byte with one scale (and zero point) per group of `group`
    /// consecutive codes of a row: `W = s·(q − z)`; `group` is a multiple of 32 dividing
    /// `cols`, `scales` (and `zeros`) have `rows · cols / group` entries.
    pub(crate) fn groups(
        bytes: &'a [u8],
        group: usize,
        scales: &'a [f32],
        zeros: Option<&'a [f32]>,
        rows: usize,
        cols: usize,
    ) -> Q4<'a> {
        Q4 {
            bytes,
            stride: CODE_BYTES,
            codes_at: 0,
            scale: Scale::Groups {
                blocks: group / BLOCK,
                scales,
                zeros,
            },
            table: LINEAR_TABLE,
            pairs: true,
            rows,
            cols,
        }
    }

    fn row(&self, r: usize) -> Row<'a> {
        let blocks = self.cols / BLOCK;
        let scale = match self.scale {
            Scale::Groups {
                blocks: per,
                scales,
                zeros,
            } => {
                let g = blocks / per;
                Scale::Groups {
                    blocks: per,
                    scales: &scales[r * g..][..g],
                    zeros: zeros.map(|z| &z[r * g..][..g]),
                }
            }
            s => s,
        };
        Row {
            bytes: &self.bytes[r * blocks * self.stride..][..blocks * self.stride],
            stride: self.stride,
            codes_at: self.codes_at,
            scale,
        }
    }

    /// `x` in the kernel's order: each block of 32 as its low-nibble codes' inputs,
    /// then its high-nibble codes' (a copy for the packed form).
    fn arrange<'x>(&self, x: &'x [f32]) -> Cow<'x, [f32]> {
        if !self.pairs {
            return Cow::Borrowed(x);
        }
        let mut out = vec![0.0f32; x.len()];
        for (o, i) in out.chunks_exact_mut(BLOCK).zip(x.chunks_exact(BLOCK)) {
            let (lo, hi) = o.split_at_mut(BLOCK / 2);
            for ((l, h), p) in lo.iter_mut().zip(hi).zip(i.chunks_exact(2)) {
                *l = p[0];
                *h = p[1];
            }
        }
        Cow::Owned(out)
    }

    /// `Σx` over each scale group of `x` (one row of activations), for zero points.
    fn group_sums(&self, x: &[f32]) -> Vec<f32> {
        match self.scale {
            Scale::Groups {
                blocks,
                zeros: Some(_),
                ..
            } => x
                .chunks_exact(blocks * BLOCK)
                .map(|g| g.iter().sum())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The bits of the f16 scale at `at` in `bytes`.
#[inline(always)]
fn f16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// An f16 in f32, in software (the scalar twin).
fn f16_scalar(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// The 16 code bytes of block `b`.
#[inline(always)]
fn codes_of<'a>(row: &Row<'a>, b: usize) -> &'a [u8; CODE_BYTES] {
    row.bytes[b * row.stride + row.codes_at..][..CODE_BYTES]
        .try_into()
        .expect("16 bytes")
}

/// The 32 inputs of block `b`.
#[inline(always)]
fn inputs_of(x: &[f32], b: usize) -> &[f32; BLOCK] {
    x[b * BLOCK..][..BLOCK].try_into().expect("32 inputs")
}

/// `Σ_c W[r, c]·x[c]` for one row, `x` arranged, `xsum` its group sums (zero points
/// only), given a tier's f16 conversion, accumulator `zero`, `block(acc, codes, x)`
/// adding a block's `Σ table[q]·x`, `scaled(total, sum, s)` adding `s·sum` and
/// `total(acc)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn row_dot_with<A: Copy>(
    row: &Row<'_>,
    x: &[f32],
    xsum: &[f32],
    f16: impl Fn(u16) -> f32,
    zero: A,
    block: impl Fn(A, &[u8; CODE_BYTES], &[f32; BLOCK]) -> A,
    scaled: impl Fn(A, A, f32) -> A,
    total: impl Fn(A) -> f32,
) -> f32 {
    let blocks = x.len() / BLOCK;
    match row.scale {
        Scale::One => {
            total((0..blocks).fold(zero, |a, b| block(a, codes_of(row, b), inputs_of(x, b))))
        }
        Scale::F16 => total((0..blocks).fold(zero, |t, b| {
            let sum = block(zero, codes_of(row, b), inputs_of(x, b));
            scaled(t, sum, f16(f16_at(row.bytes, b * row.stride)))
        })),
        Scale::Groups {
            blocks: per,
            scales,
            zeros,
        } => {
            let mut t = zero;
            for (g, &s) in scales.iter().enumerate() {
                let sum = (g * per..(g + 1) * per)
                    .fold(zero, |a, b| block(a, codes_of(row, b), inputs_of(x, b)));
                t = scaled(t, sum, s);
            }
            let shift: f32 = zeros.map_or(0.0, |z| {
                scales
                    .iter()
                    .zip(z)
                    .zip(xsum)
                    .map(|((s, z), x)| s * z * x)
                    .sum()
            });
            total(t) - shift
        }
    }
}

/// `out[(b − blocks.start)·32 + j] = s·table[q] − s·z` for the codes of `blocks`, in the
/// kernel's order, given a tier's f16 conversion and `block(codes, s, s·z, out)`.
#[inline(always)]
fn decode_with(
    row: &Row<'_>,
    blocks: Range<usize>,
    out: &mut [f32],
    f16: impl Fn(u16) -> f32,
    block: impl Fn(&[u8; CODE_BYTES], f32, f32, &mut [f32; BLOCK]),
) {
    for (b, o) in blocks.zip(out.chunks_exact_mut(BLOCK)) {
        let (s, sz) = match row.scale {
            Scale::One => (1.0, 0.0),
            Scale::F16 => (f16(f16_at(row.bytes, b * row.stride)), 0.0),
            Scale::Groups {
                blocks: per,
                scales,
                zeros,
            } => {
                let s = scales[b / per];
                (s, zeros.map_or(0.0, |z| s * z[b / per]))
            }
        };
        block(codes_of(row, b), s, sz, o.try_into().expect("32 outputs"));
    }
}

/// The scalar twin of the row dot product.
fn row_dot_scalar(row: &Row<'_>, table: &[f32; 16], x: &[f32], xsum: &[f32]) -> f32 {
    row_dot_with(
        row,
        x,
        xsum,
        f16_scalar,
        [0.0f32; 4],
        |mut a, codes, x| {
            for (j, &c) in codes.iter().enumerate() {
                a[j % 2] += table[(c & 15) as usize] * x[j];
                a[2 + j % 2] += table[(c >> 4) as usize] * x[16 + j];
            }
            a
        },
        |mut t, sum, s| {
            for (t, v) in t.iter_mut().zip(sum) {
                *t += s * v;
            }
            t
        },
        |a| a.iter().sum(),
    )
}

/// The scalar twin of the decoder.
fn decode_scalar(row: &Row<'_>, table: &[f32; 16], blocks: Range<usize>, out: &mut [f32]) {
    decode_with(row, blocks, out, f16_scalar, |codes, s, sz, o| {
        let (lo, hi) = o.split_at_mut(BLOCK / 2);
        for ((l, h), &c) in lo.iter_mut().zip(hi).zip(codes) {
            *l = s * table[(c & 15) as usize] - sz;
            *h = s * table[(c >> 4) as usize] - sz;
        }
    })
}

/// Row dot product on the tier in use.
fn row_dot(row: &Row<'_>, table: &[f32; 16], x: &[f32], xsum: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if f16c() {
        match level() {
            // SAFETY: the CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL (level and f16c).
            Level::Avx512 => return unsafe { x86::row_dot_avx512(row, table, x, xsum) },
            // SAFETY: the CPU has AVX2, FMA and F16C.
            Level::Avx2 => return unsafe { x86::row_dot_avx2(row, table, x, xsum) },
            Level::Scalar => {}
        }
    }
    row_dot_scalar(row, table, x, xsum)
}

/// Decoder on the tier in use.
fn decode(row: &Row<'_>, table: &[f32; 16], blocks: Range<usize>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if f16c() {
        match level() {
            // SAFETY: the CPU has AVX2, FMA, F16C and AVX-512 F/BW/VL.
            Level::Avx512 => return unsafe { x86::decode_avx512(row, table, blocks, out) },
            // SAFETY: the CPU has AVX2, FMA and F16C.
            Level::Avx2 => return unsafe { x86::decode_avx2(row, table, blocks, out) },
            Level::Scalar => {}
        }
    }
    decode_scalar(row, table, blocks, out)
}

/// Whether the CPU converts f16 in hardware (the SIMD tiers read Q4_0's scales so).
#[cfg(target_arch = "x86_64")]
fn f16c() -> bool {
    std::arch::is_x86_feature_detected!("f16c")
}

/// `out[r·stride + l] += Σ_k tile[r·kb + k]·panel[k·width + l]` for `R` rows and the
/// `W` lanes from `off`; `FUSED` rounds each multiply-add once (the SIMD tiers).
#[inline(always)]
fn tile_block<const R: usize, const W: usize, const FUSED: bool>(
    tile: &[f32],
    panel: &[f32],
    width: usize,
    off: usize,
    out: &mut [f32],
    stride: usize,
) {
    let kb = panel.len() / width;
    let rows: [&[f32]; R] = std::array::from_fn(|r| &tile[r * kb..][..kb]);
    let mut acc = [[0.0f32; W]; R];
    for (k, xk) in panel.chunks_exact(width).enumerate() {
        let xr: &[f32; W] = xk[off..off + W].try_into().expect("W lanes");
        for r in 0..R {
            let w = rows[r][k];
            for l in 0..W {
                acc[r][l] = if FUSED {
                    w.mul_add(xr[l], acc[r][l])
                } else {
                    acc[r][l] + w * xr[l]
                };
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (o, a) in out[r * stride + off..][..W].iter_mut().zip(acc) {
            *o += a;
        }
    }
}

/// [`tile_block`] over a panel's whole width (a multiple of 8): blocks of `W` lanes,
/// then of 8.
#[inline(always)]
fn tile_body<const R: usize, const W: usize, const FUSED: bool>(
    tile: &[f32],
    panel: &[f32],
    width: usize,
    out: &mut [f32],
    stride: usize,
) {
    let mut off = 0;
    while width - off >= W {
        tile_block::<R, W, FUSED>(tile, panel, width, off, out, stride);
        off += W;
    }
    while width - off >= 8 {
        tile_block::<R, 8, FUSED>(tile, panel, width, off, out, stride);
        off += 8;
    }
}

/// Rows per tile of the batched kernel on the tier in use.
fn tile_rows() -> usize {
    match level() {
        Level::Avx512 => 4,
        _ => 2,
    }
}

/// `out[r·stride + l] += Σ_k tile[r·kb + k]·panel[k·width + l]` for `rows` rows (the
/// tier's [`tile_rows`] or 1), on the tier in use.
fn tile_lanes(
    rows: usize,
    tile: &[f32],
    panel: &[f32],
    width: usize,
    out: &mut [f32],
    stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    match (level(), rows) {
        // SAFETY: the CPU has AVX2, FMA and AVX-512 F/BW/VL.
        (Level::Avx512, 4) => {
            return unsafe { x86::tile_avx512::<4>(tile, panel, width, out, stride) };
        }
        // SAFETY: as above.
        (Level::Avx512, _) => {
            return unsafe { x86::tile_avx512::<1>(tile, panel, width, out, stride) };
        }
        // SAFETY: the CPU has AVX2 and FMA.
        (Level::Avx2, 2) => return unsafe { x86::tile_avx2::<2>(tile, panel, width, out, stride) },
        // SAFETY: as above.
        (Level::Avx2, _) => return unsafe { x86::tile_avx2::<1>(tile, panel, width, out, stride) },
        (Level::Scalar, _) => {}
    }
    tile_scalar(rows, tile, panel, width, out, stride)
}

/// The scalar twin of [`tile_lanes`].
fn tile_scalar(
    rows: usize,
    tile: &[f32],
    panel: &[f32],
    width: usize,
    out: &mut [f32],
    stride: usize,
) {
    let kb = panel.len() / width;
    for r in 0..rows {
        tile_body::<1, 8, false>(
            &tile[r * kb..],
            panel,
            width,
            &mut out[r * stride..],
            stride,
        )
    }
}

/// `y = x·Wᵀ` for `x` `[batch, cols]` and `y` `[batch, rows]` (lengths checked by the
/// caller).
pub(crate) fn matmul(w: &Q4<'_>, x: &[f32], y: &mut [f32]) {
    matmul_tuned(w, x, y, Tuning::default())
}

/// [`matmul`] split as `tuning` says.
pub(crate) fn matmul_tuned(w: &Q4<'_>, x: &[f32], y: &mut [f32], tuning: Tuning) {
    let batch = x.len() / w.cols;
    if batch == 0 {
        return;
    }
    let xa = w.arrange(x);
    let parallel = w.rows * w.cols * batch >= tuning.parallel_work;
    if batch == 1 {
        let xsum = w.group_sums(x);
        let run = |(i, part): (usize, &mut [f32]), chunk: usize| {
            for (k, out) in part.iter_mut().enumerate() {
                *out = row_dot(&w.row(i * chunk + k), &w.table, &xa, &xsum);
            }
        };
        if parallel {
            let chunk = w.rows.div_ceil(4 * rayon::current_num_threads());
            y.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|p| run(p, chunk));
        } else {
            run((0, y), w.rows);
        }
        return;
    }
    let lanes = batch.next_multiple_of(8);
    let xt = panels(&xa, batch, w.cols);
    let mut yt = vec![0.0f32; w.rows * lanes];
    let tile = tile_rows();
    let run = |(i, part): (usize, &mut [f32]), chunk: usize| {
        batched(w, &xt, lanes, i * chunk, part, tile, tuning.block_bytes);
    };
    if parallel {
        let chunk = w
            .rows
            .div_ceil(4 * rayon::current_num_threads())
            .next_multiple_of(tile);
        yt.par_chunks_mut(chunk * lanes)
            .enumerate()
            .for_each(|p| run(p, chunk));
    } else {
        run((0, &mut yt), w.rows);
    }
    transpose_out(&yt, lanes, batch, y);
}

/// Rows `first..` of `Yᵀ` (`out`, `lanes` a row) from the panels `xt`, in tiles of
/// `tile` rows.
fn batched(
    w: &Q4<'_>,
    xt: &[f32],
    lanes: usize,
    first: usize,
    out: &mut [f32],
    tile: usize,
    block_bytes: usize,
) {
    let rows = out.len() / lanes;
    let mut buf = Vec::new();
    for (p, start) in (0..lanes).step_by(64).enumerate() {
        let width = (lanes - start).min(64);
        let panel = &xt[p * 64 * w.cols..][..width * w.cols];
        let kb = (block_bytes / (4 * width))
            .max(1)
            .next_multiple_of(BLOCK)
            .min(w.cols);
        for c0 in (0..w.cols).step_by(kb) {
            let c1 = (c0 + kb).min(w.cols);
            let block = &panel[c0 * width..c1 * width];
            let mut r = 0;
            while r < rows {
                let n = if rows - r >= tile { tile } else { 1 };
                buf.resize(n * (c1 - c0), 0.0);
                for (i, t) in buf.chunks_exact_mut(c1 - c0).enumerate() {
                    decode(&w.row(first + r + i), &w.table, c0 / BLOCK..c1 / BLOCK, t);
                }
                tile_lanes(n, &buf, block, width, &mut out[r * lanes + start..], lanes);
                r += n;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{CODE_BYTES, Row, decode_with, row_dot_with, tile_body};

    /// An f16 in f32 by F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16_to_f32(bits: u16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// `table[q]` for the low four bits of each lane of `idx`: `vpermps` within each
    /// half of the table, blended on bit 3.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn lookup8(idx: __m256i, lo: __m256, hi: __m256) -> __m256 {
        let a = _mm256_permutevar8x32_ps(lo, idx);
        let b = _mm256_permutevar8x32_ps(hi, idx);
        _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)))
    }

    /// A block's 32 decoded codes as four vectors of 8, in the kernel's order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn block8(codes: &[u8; CODE_BYTES], lo: __m256, hi: __m256) -> [__m256; 4] {
        // SAFETY: `codes` has 16 bytes.
        let v = unsafe { _mm_loadu_si128(codes.as_ptr().cast()) };
        let d0 = _mm256_cvtepu8_epi32(v);
        let d1 = _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(v, v));
        [
            lookup8(d0, lo, hi),
            lookup8(d1, lo, hi),
            lookup8(_mm256_srli_epi32::<4>(d0), lo, hi),
            lookup8(_mm256_srli_epi32::<4>(d1), lo, hi),
        ]
    }

    /// The table's two halves.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn halves(table: &[f32; 16]) -> (__m256, __m256) {
        // SAFETY: `table` has 16 values.
        unsafe {
            (
                _mm256_loadu_ps(table.as_ptr()),
                _mm256_loadu_ps(table.as_ptr().add(8)),
            )
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn row_dot_avx2(row: &Row<'_>, table: &[f32; 16], x: &[f32], xsum: &[f32]) -> f32 {
        let (lo, hi) = halves(table);
        row_dot_with(
            row,
            x,
            xsum,
            |b| f16_to_f32(b),
            [_mm256_setzero_ps(); 4],
            |a, codes, x| {
                let v = block8(codes, lo, hi);
                // SAFETY: `x` has 32 values.
                std::array::from_fn(|i| unsafe {
                    _mm256_fmadd_ps(v[i], _mm256_loadu_ps(x.as_ptr().add(8 * i)), a[i])
                })
            },
            |t, sum, s| {
                let s = _mm256_set1_ps(s);
                std::array::from_fn(|i| _mm256_fmadd_ps(sum[i], s, t[i]))
            },
            |a| {
                let s = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
                let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
            },
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn decode_avx2(
        row: &Row<'_>,
        table: &[f32; 16],
        blocks: Range<usize>,
        out: &mut [f32],
    ) {
        let (lo, hi) = halves(table);
        decode_with(
            row,
            blocks,
            out,
            |b| f16_to_f32(b),
            |codes, s, sz, o| {
                let v = block8(codes, lo, hi);
                let (s, sz) = (_mm256_set1_ps(s), _mm256_set1_ps(sz));
                for (i, v) in v.into_iter().enumerate() {
                    // SAFETY: `o` has 32 values.
                    unsafe {
                        _mm256_storeu_ps(o.as_mut_ptr().add(8 * i), _mm256_fmsub_ps(v, s, sz))
                    };
                }
            },
        )
    }

    /// A block's 32 decoded codes as two vectors of 16 (low nibbles, high nibbles).
    #[inline]
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
    fn block16(codes: &[u8; CODE_BYTES], t: __m512) -> [__m512; 2] {
        // SAFETY: `codes` has 16 bytes.
        let d = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(codes.as_ptr().cast()) });
        [
            _mm512_permutexvar_ps(d, t),
            _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(d), t),
        ]
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) fn row_dot_avx512(row: &Row<'_>, table: &[f32; 16], x: &[f32], xsum: &[f32]) -> f32 {
        // SAFETY: `table` has 16 values.
        let t = unsafe { _mm512_loadu_ps(table.as_ptr()) };
        row_dot_with(
            row,
            x,
            xsum,
            |b| f16_to_f32(b),
            [_mm512_setzero_ps(); 2],
            |a, codes, x| {
                let v = block16(codes, t);
                // SAFETY: `x` has 32 values.
                std::array::from_fn(|i| unsafe {
                    _mm512_fmadd_ps(v[i], _mm512_loadu_ps(x.as_ptr().add(16 * i)), a[i])
                })
            },
            |t, sum, s| {
                let s = _mm512_set1_ps(s);
                [
                    _mm512_fmadd_ps(sum[0], s, t[0]),
                    _mm512_fmadd_ps(sum[1], s, t[1]),
                ]
            },
            |a| _mm512_reduce_add_ps(_mm512_add_ps(a[0], a[1])),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub(super) fn decode_avx512(
        row: &Row<'_>,
        table: &[f32; 16],
        blocks: Range<usize>,
        out: &mut [f32],
    ) {
        // SAFETY: `table` has 16 values.
        let t = unsafe { _mm512_loadu_ps(table.as_ptr()) };
        decode_with(
            row,
            blocks,
            out,
            |b| f16_to_f32(b),
            |codes, s, sz, o| {
                let v = block16(codes, t);
                let (s, sz) = (_mm512_set1_ps(s), _mm512_set1_ps(sz));
                for (i, v) in v.into_iter().enumerate() {
                    // SAFETY: `o` has 32 values.
                    unsafe {
                        _mm512_storeu_ps(o.as_mut_ptr().add(16 * i), _mm512_fmsub_ps(v, s, sz))
                    };
                }
            },
        );
    }

    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
    pub(super) fn tile_avx512<const R: usize>(
        tile: &[f32],
        panel: &[f32],
        width: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        tile_body::<R, 64, true>(tile, panel, width, out, stride)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tile_avx2<const R: usize>(
        tile: &[f32],
        panel: &[f32],
        width: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        tile_body::<R, 32, true>(tile, panel, width, out, stride)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::kernels::sparse::tests::Gen;

    fn bytes(g: &mut Gen, n: usize) -> Vec<u8> {
        (0..n).map(|_| g.next() as u8).collect()
    }

    /// A random matrix of each form, its storage owned.
    struct Owned {
        bytes: Vec<u8>,
        scales: Vec<f32>,
        zeros: Vec<f32>,
        table: Vec<f32>,
        group: usize,
        rows: usize,
        cols: usize,
    }

    impl Owned {
        fn new(g: &mut Gen, rows: usize, blocks: usize, per: usize) -> Owned {
            let cols = blocks * per * BLOCK;
            let mut bytes = bytes(g, rows * cols / BLOCK * Q4_0_BYTES);
            // Finite Q4_0 scales in [−1, 1].
            for b in bytes.chunks_exact_mut(Q4_0_BYTES) {
                b[..2].copy_from_slice(&half::f16::from_f32(g.value()).to_le_bytes());
            }
            let groups = rows * cols / (per * BLOCK);
            let entries = 1 + (g.next() % 16) as usize;
            Owned {
                bytes,
                scales: g.values(groups),
                zeros: g.values(groups).iter().map(|z| 8.0 + 8.0 * z).collect(),
                table: g.values(entries),
                group: per * BLOCK,
                rows,
                cols,
            }
        }

        /// The three forms (affine groups with and without zero points).
        fn forms(&self) -> [Q4<'_>; 4] {
            let (rows, cols) = (self.rows, self.cols);
            let packed = &self.bytes[..rows * cols / 2];
            [
                Q4::q4_0(&self.bytes, rows, cols),
                Q4::codebook(packed, &self.table, rows, cols),
                Q4::groups(
                    packed,
                    self.group,
                    &self.scales,
                    Some(&self.zeros),
                    rows,
                    cols,
                ),
                Q4::groups(packed, self.group, &self.scales, None, rows, cols),
            ]
        }
    }

    /// `W[r, c]` from the formats' definitions (not the kernel's order), in f64.
    fn weight(w: &Q4<'_>, r: usize, c: usize) -> f64 {
        let nibble = |byte: u8, high: bool| if high { byte >> 4 } else { byte & 15 } as usize;
        if !w.pairs {
            let (b, j) = ((r * w.cols + c) / BLOCK, c % BLOCK);
            let block = &w.bytes[b * Q4_0_BYTES..][..Q4_0_BYTES];
            let d = f16_scalar(f16_at(block, 0)) as f64;
            return d * (nibble(block[2 + j % 16], j >= 16) as f64 - 8.0);
        }
        let i = r * w.cols + c;
        let q = w.table[nibble(w.bytes[i / 2], i % 2 == 1)] as f64;
        match w.scale {
            Scale::Groups {
                blocks,
                scales,
                zeros,
            } => {
                let g = i / (blocks * BLOCK);
                scales[g] as f64 * (q - zeros.map_or(0.0, |z| z[g] as f64))
            }
            _ => q,
        }
    }

    /// `|got − Σ w·x| ≤ 1e−5·Σ |w·x|` for row `r` of `W` and `x`.
    fn assert_row(got: f32, w: &Q4<'_>, r: usize, x: &[f32]) {
        let (mut exact, mut scale) = (0.0f64, 0.0f64);
        for (c, &xc) in x.iter().enumerate() {
            let t = weight(w, r, c) * xc as f64;
            exact += t;
            scale += t.abs();
        }
        assert!(
            (got as f64 - exact).abs() <= 1e-5 * scale + 1e-30,
            "row {r}: {got} vs {exact}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The row dot product, the decoder and the tile kernel of the tier in use
        /// against their scalar twins and the formats' definitions.
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn twins_agree_with_definitions(blocks in 1usize..6, per in 1usize..4, width8 in 1usize..=9, seed in any::<u64>()) {
            if !crate::kernels::simd_in_use() {
                return Ok(());
            }
            let mut g = Gen(seed | 1);
            let m = Owned::new(&mut g, 2, blocks, per);
            let x = g.values(m.cols);
            for w in m.forms() {
                let xa = w.arrange(&x);
                let xsum = w.group_sums(&x);
                for r in 0..2 {
                    let row = w.row(r);
                    assert_row(row_dot_scalar(&row, &w.table, &xa, &xsum), &w, r, &x);
                    assert_row(row_dot(&row, &w.table, &xa, &xsum), &w, r, &x);
                    let n = m.cols / BLOCK;
                    let (mut a, mut b) = (vec![0.0f32; m.cols], vec![0.0f32; m.cols]);
                    decode_scalar(&row, &w.table, 0..n, &mut a);
                    decode(&row, &w.table, 0..n, &mut b);
                    // The decoded weights in the kernel's order: dot them with `xa`.
                    let dot = |v: &[f32]| v.iter().zip(xa.iter()).map(|(a, b)| a * b).sum::<f32>();
                    assert_row(dot(&a), &w, r, &x);
                    assert_row(dot(&b), &w, r, &x);
                }
            }
            let width = 8 * width8;
            let kb = BLOCK * blocks;
            for rows in [1, tile_rows()] {
                let tile = g.values(rows * kb);
                let panel = g.values(kb * width);
                let (mut a, mut b) = (vec![0.0f32; rows * width], vec![0.0f32; rows * width]);
                tile_scalar(rows, &tile, &panel, width, &mut a, width);
                tile_lanes(rows, &tile, &panel, width, &mut b, width);
                for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                    let (r, l) = (i / width, i % width);
                    let terms = (0..kb).map(|k| tile[r * kb + k] as f64 * panel[k * width + l] as f64);
                    let (exact, scale) = terms.fold((0.0, 0.0), |(e, s), t| (e + t, s + t.abs()));
                    prop_assert!((*a as f64 - exact).abs() <= 1e-5 * scale);
                    prop_assert!((*b as f64 - exact).abs() <= 1e-5 * scale);
                }
            }
        }

        /// The driver on every form, at batch 1 and batched (one panel or more), in
        /// pieces and column blocks or not.
        #[test]
        fn driver_matches_definitions(rows in 1usize..12, blocks in 1usize..5, per in 1usize..3, batch in 1usize..=70, seed in any::<u64>()) {
            let mut g = Gen(seed | 1);
            let m = Owned::new(&mut g, rows, blocks, per);
            let x = g.values(batch * m.cols);
            for w in m.forms() {
                for tuning in [
                    Tuning::default(),
                    Tuning { parallel_work: 0, block_bytes: 4 * 8 * (1 + (g.next() % 40) as usize) },
                ] {
                    let mut y = vec![f32::NAN; batch * rows];
                    matmul_tuned(&w, &x, &mut y, tuning);
                    for (i, &v) in y.iter().enumerate() {
                        let (b, r) = (i / rows, i % rows);
                        assert_row(v, &w, r, &x[b * m.cols..][..m.cols]);
                    }
                }
            }
        }
    }
}
