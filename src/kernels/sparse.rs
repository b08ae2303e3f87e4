//! Products `Y = X·Wᵀ` with a sparse or compressed weight `W` `[rows, cols]` and dense
//! activations `X` `[batch, cols]`, giving `Y` `[batch, rows]`, all row-major.
//!
//! Every format is read one weight row at a time ([`Rows`]): CSR rows are slices of its
//! arrays, N:M rows decode their in-group indices into column indices, codebook rows
//! decode their codes into values. One driver ([`matmul`]) runs the rows:
//!
//! - batch 1: a dot product of each row with `x` (a gather for sparse rows);
//! - batch > 1: `X` is transposed once into panels `[cols, ≤ 64 lanes]`, so each stored
//!   weight adds `w·Xᵀ[col, lanes]` into the row's accumulators, which stay in registers
//!   (a contiguous axpy of up to 64 lanes per weight instead of `batch` gathers); one
//!   panel (`cols · 64 · 4` bytes, 1 MiB for 4096 inputs) stays in L2 while the rows
//!   stream past it. The result comes out as `Yᵀ` and is transposed into `Y`.
//!
//! Rows are split into pieces of about equal work (stored weights, from CSR's `row_ptr`
//! when rows are uneven) run on rayon when the product is large.
//!
//! Non-finite activations propagate through the stored weights only: a NaN in
//! `x[col]` reaches `y[row]` iff row `row` stores a weight in column `col`.

use std::ops::Range;

use rayon::prelude::*;

use super::kernel;
use super::quant::unpack_codes;

/// Lanes of one panel of `Xᵀ`: the widest register accumulator of a row.
const PANEL: usize = 64;

/// Pieces of work per rayon thread, so uneven pieces still balance.
const PIECES_PER_THREAD: usize = 4;

/// Sizes that decide how the product is split (tests shrink them so small products take
/// every path).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    /// Multiply-adds below which the product runs on the calling thread.
    pub parallel_work: usize,
    /// Bytes of `Xᵀ` a column block may take.
    pub block_bytes: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            parallel_work: 1 << 18,
            // Most of L1d.
            block_bytes: 32 << 10,
        }
    }
}

/// A weight matrix read row by row.
pub(crate) trait Rows: Sync {
    /// Buffers one worker needs to decode rows.
    type Scratch: Send;

    /// Fresh buffers for one worker.
    fn scratch(&self) -> Self::Scratch;

    /// Stored weights in rows `0..r` (monotone in `r`): the work of the rows before `r`.
    fn work_before(&self, r: usize) -> usize;

    /// What column blocks must be a multiple of, for formats whose rows can be cut into
    /// blocks of columns (the batched product then reads one block of `Xᵀ`, kept in
    /// L1, for all rows before the next); `None` for one block of all columns.
    fn block_unit(&self) -> Option<usize>;

    /// `Σ_c W[r, c]·x[c]`.
    fn dot(&self, r: usize, x: &[f32], scratch: &mut Self::Scratch) -> f32;

    /// `out[l] += Σ_{c ∈ cols} W[r, c]·panel[(c − cols.start)·width + l]` for a panel of
    /// `width = out.len()` lanes starting at column `cols.start`, `cols` a block.
    fn add_lanes(
        &self,
        r: usize,
        cols: Range<usize>,
        panel: &[f32],
        out: &mut [f32],
        scratch: &mut Self::Scratch,
    );
}

/// `y = x·Wᵀ` for `x` `[batch, cols]` and `y` `[batch, rows]` (lengths must agree).
pub(crate) fn matmul<R: Rows>(w: &R, rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    matmul_tuned(w, rows, cols, x, y, Tuning::default())
}

/// [`matmul`] split as `tuning` says.
pub(crate) fn matmul_tuned<R: Rows>(
    w: &R,
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
    tuning: Tuning,
) {
    assert!(cols > 0 && x.len().is_multiple_of(cols));
    let batch = x.len() / cols;
    assert_eq!(y.len(), batch * rows);
    if batch == 0 || rows == 0 {
        return;
    }
    let pieces = pieces(w, rows, batch, tuning.parallel_work);
    if batch == 1 {
        run_pieces(y, &pieces, 1, |part, range| {
            let mut scratch = w.scratch();
            for (out, r) in part.iter_mut().zip(range) {
                *out = w.dot(r, x, &mut scratch);
            }
        });
        return;
    }
    let lanes = batch.next_multiple_of(8);
    let xt = panels(x, batch, cols);
    let mut yt = vec![0.0f32; rows * lanes];
    run_pieces(&mut yt, &pieces, lanes, |part, range| {
        let mut scratch = w.scratch();
        // Panels and column blocks outermost: one block of Xᵀ stays in cache while the
        // rows pass.
        for (p, start) in (0..lanes).step_by(PANEL).enumerate() {
            let width = (lanes - start).min(PANEL);
            let panel = &xt[p * PANEL * cols..][..width * cols];
            let block = match w.block_unit() {
                Some(unit) => (tuning.block_bytes / (4 * width))
                    .max(1)
                    .next_multiple_of(unit),
                None => cols,
            };
            for c0 in (0..cols).step_by(block) {
                let c1 = (c0 + block).min(cols);
                let panel = &panel[c0 * width..c1 * width];
                for (out, r) in part.chunks_exact_mut(lanes).zip(range.clone()) {
                    let out = &mut out[start..start + width];
                    w.add_lanes(r, c0..c1, panel, out, &mut scratch);
                }
            }
        }
    });
    transpose_out(&yt, lanes, batch, y);
}

/// Row ranges of about equal work; one range when the product is small.
fn pieces<R: Rows>(w: &R, rows: usize, batch: usize, parallel_work: usize) -> Vec<Range<usize>> {
    let total = w.work_before(rows);
    let count = if total.saturating_mul(batch) < parallel_work {
        1
    } else {
        (rayon::current_num_threads() * PIECES_PER_THREAD).min(rows)
    };
    let mut ends: Vec<usize> = (1..count)
        .map(|k| {
            let target = (total as u128 * k as u128 / count as u128) as usize;
            // The first row whose preceding work reaches the target.
            let (mut lo, mut hi) = (0, rows);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if w.work_before(mid) < target {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        })
        .collect();
    ends.push(rows);
    ends.dedup();
    let mut start = 0;
    ends.into_iter()
        .filter_map(|end| {
            let range = start..end;
            start = end;
            (!range.is_empty()).then_some(range)
        })
        .collect()
}

/// Runs `work(part, rows)` on each piece, where `part` is the piece's rows of `out`
/// (`stride` values a row), in parallel when there is more than one piece.
fn run_pieces(
    out: &mut [f32],
    pieces: &[Range<usize>],
    stride: usize,
    work: impl Fn(&mut [f32], Range<usize>) + Sync,
) {
    let mut parts = Vec::with_capacity(pieces.len());
    let mut rest = out;
    for range in pieces {
        let (part, tail) = rest.split_at_mut(range.len() * stride);
        parts.push((part, range.clone()));
        rest = tail;
    }
    if parts.len() == 1 {
        let (part, range) = parts.pop().expect("one piece");
        work(part, range);
    } else {
        parts
            .into_par_iter()
            .for_each(|(part, range)| work(part, range));
    }
}

/// `Xᵀ` in panels: panel `p` holds lanes `p·64 ..` of every column, `[cols, width]`,
/// with the lanes past `batch` zero (width a multiple of 8).
pub(crate) fn panels(x: &[f32], batch: usize, cols: usize) -> Vec<f32> {
    let lanes = batch.next_multiple_of(8);
    let mut xt = vec![0.0f32; lanes * cols];
    for (p, start) in (0..lanes).step_by(PANEL).enumerate() {
        let width = (lanes - start).min(PANEL);
        let panel = &mut xt[p * PANEL * cols..][..width * cols];
        for (lane, xr) in x.chunks_exact(cols).enumerate().skip(start).take(width) {
            for (dst, &v) in panel[lane - start..].iter_mut().step_by(width).zip(xr) {
                *dst = v;
            }
        }
    }
    xt
}

/// `y[b, r] = yt[r, b]` for `yt` `[rows, lanes]` and `y` `[batch, rows]`.
pub(crate) fn transpose_out(yt: &[f32], lanes: usize, batch: usize, y: &mut [f32]) {
    let rows = yt.len() / lanes;
    let copy = |(b, yr): (usize, &mut [f32])| {
        for (dst, src) in yr.iter_mut().zip(yt[b..].iter().step_by(lanes)) {
            *dst = *src;
        }
    };
    if rows * batch >= Tuning::default().parallel_work {
        y.par_chunks_exact_mut(rows).enumerate().for_each(copy);
    } else {
        y.chunks_exact_mut(rows).enumerate().for_each(copy);
    }
}

/// A CSR column index: `u32`, or `u16` for weights of at most 65,536 columns (6 bytes
/// a stored weight instead of 8).
pub(crate) trait ColIndex: Copy + Ord + Send + Sync + std::fmt::Display + 'static {
    /// The column.
    fn at(self) -> usize;
}

impl ColIndex for u32 {
    #[inline(always)]
    fn at(self) -> usize {
        self as usize
    }
}

impl ColIndex for u16 {
    #[inline(always)]
    fn at(self) -> usize {
        self as usize
    }
}

#[inline(always)]
fn sparse_dot_body<I: ColIndex>(cols: &[I], vals: &[f32], x: &[f32]) -> f32 {
    // Eight partial sums keep eight multiply-adds in flight.
    const L: usize = 8;
    let mut acc = [0.0f32; L];
    let (cb, vb) = (cols.chunks_exact(L), vals.chunks_exact(L));
    let tail: f32 = cb
        .remainder()
        .iter()
        .zip(vb.remainder())
        .map(|(&c, &v)| v * x[c.at()])
        .sum();
    for (c, v) in cb.zip(vb) {
        for l in 0..L {
            acc[l] += v[l] * x[c[l].at()];
        }
    }
    acc.iter().sum::<f32>() + tail
}

kernel! {
    /// `Σ vals[k]·x[cols[k]]`.
    fn sparse_dot<I: ColIndex>(cols: &[I], vals: &[f32], x: &[f32]) -> f32 => sparse_dot_body
}

#[inline(always)]
fn dense_dot_body(vals: &[f32], x: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0.0f32; L];
    let (vb, xb) = (vals.chunks_exact(L), x.chunks_exact(L));
    let tail: f32 = vb
        .remainder()
        .iter()
        .zip(xb.remainder())
        .map(|(&v, &x)| v * x)
        .sum();
    for (v, x) in vb.zip(xb) {
        for l in 0..L {
            acc[l] += v[l] * x[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

kernel! {
    /// `Σ vals[k]·x[k]` over slices of equal length.
    fn dense_dot(vals: &[f32], x: &[f32]) -> f32 => dense_dot_body
}

/// Adds `Σ_k vals[k]·panel[cols[k], off .. off + W]` to `out[off .. off + W]`, with the
/// accumulators in registers.
#[inline(always)]
fn lanes_block<const W: usize>(
    cols: impl Iterator<Item = usize>,
    vals: &[f32],
    panel: &[f32],
    width: usize,
    off: usize,
    out: &mut [f32],
) {
    let mut acc = [0.0f32; W];
    for (c, &v) in cols.zip(vals) {
        let start = c * width + off;
        let xr = &panel[start..start + W];
        for l in 0..W {
            acc[l] += v * xr[l];
        }
    }
    for (o, a) in out[off..off + W].iter_mut().zip(acc) {
        *o += a;
    }
}

/// `out[l] += Σ_k vals[k]·panel[cols(k), l]` for a panel `[·, out.len()]` and a width
/// that is a multiple of 8 and at most [`PANEL`]: blocks of 64, 32, 16 and 8 lanes.
#[inline(always)]
fn lanes_body<C: Iterator<Item = usize> + Clone>(
    cols: C,
    vals: &[f32],
    panel: &[f32],
    out: &mut [f32],
) {
    let width = out.len();
    let mut off = 0;
    if width - off >= 64 {
        lanes_block::<64>(cols.clone(), vals, panel, width, off, out);
        off += 64;
    }
    if width - off >= 32 {
        lanes_block::<32>(cols.clone(), vals, panel, width, off, out);
        off += 32;
    }
    if width - off >= 16 {
        lanes_block::<16>(cols.clone(), vals, panel, width, off, out);
        off += 16;
    }
    if width - off >= 8 {
        lanes_block::<8>(cols, vals, panel, width, off, out);
    }
}

#[inline(always)]
fn sparse_lanes_body<I: ColIndex>(cols: &[I], vals: &[f32], panel: &[f32], out: &mut [f32]) {
    lanes_body(cols.iter().map(|&c| c.at()), vals, panel, out)
}

kernel! {
    /// `out[l] += Σ_k vals[k]·panel[cols[k]·out.len() + l]` (see [`lanes_body`]).
    fn sparse_lanes<I: ColIndex>(cols: &[I], vals: &[f32], panel: &[f32], out: &mut [f32]) => sparse_lanes_body
}

#[inline(always)]
fn dense_lanes_body(vals: &[f32], panel: &[f32], out: &mut [f32]) {
    lanes_body(0..vals.len(), vals, panel, out)
}

kernel! {
    /// `out[l] += Σ_k vals[k]·panel[k·out.len() + l]` (see [`lanes_body`]).
    fn dense_lanes(vals: &[f32], panel: &[f32], out: &mut [f32]) => dense_lanes_body
}

/// CSR rows: `row_ptr` `[rows + 1]` (from 0, monotone, ending at the number of stored
/// values), `col_idx` and `values` of that length, every column below `cols`.
pub(crate) struct Csr<'a, I: ColIndex = u32> {
    pub row_ptr: &'a [u32],
    pub col_idx: &'a [I],
    pub values: &'a [f32],
}

impl<I: ColIndex> Csr<'_, I> {
    fn range(&self, r: usize) -> Range<usize> {
        self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize
    }
}

impl<I: ColIndex> Rows for Csr<'_, I> {
    type Scratch = ();

    fn scratch(&self) {}

    fn work_before(&self, r: usize) -> usize {
        self.row_ptr[r] as usize
    }

    /// No blocks: the columns of a row are in no known order.
    fn block_unit(&self) -> Option<usize> {
        None
    }

    fn dot(&self, r: usize, x: &[f32], _: &mut ()) -> f32 {
        let k = self.range(r);
        sparse_dot(&self.col_idx[k.clone()], &self.values[k], x)
    }

    fn add_lanes(&self, r: usize, _: Range<usize>, panel: &[f32], out: &mut [f32], _: &mut ()) {
        let k = self.range(r);
        sparse_lanes(&self.col_idx[k.clone()], &self.values[k], panel, out)
    }
}

#[inline(always)]
fn nm_cols_body(idx: &[u8], n: usize, m: usize, out: &mut [u32]) {
    for (g, (o, i)) in out.chunks_exact_mut(n).zip(idx.chunks_exact(n)).enumerate() {
        let base = (g * m) as u32;
        for (o, &i) in o.iter_mut().zip(i) {
            *o = base + i as u32;
        }
    }
}

kernel! {
    /// Column indices of N:M groups: `out[g·n + j] = g·m + idx[g·n + j]`.
    fn nm_cols(idx: &[u8], n: usize, m: usize, out: &mut [u32]) => nm_cols_body
}

/// `Σ vals[k]·x[(k / n)·m + idx[k]]`, group by group.
#[inline(always)]
fn nm_dot_general(vals: &[f32], idx: &[u8], n: usize, m: usize, x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 4];
    let groups = vals
        .chunks_exact(n)
        .zip(idx.chunks_exact(n))
        .zip(x.chunks_exact(m));
    for (g, ((v, i), xg)) in groups.enumerate() {
        let s: f32 = v.iter().zip(i).map(|(&v, &i)| v * xg[i as usize]).sum();
        acc[g % 4] += s;
    }
    acc.iter().sum()
}

/// [`nm_dot_general`] for a fixed `N:M`, four groups a step: no bounds checks, eight
/// independent sums for 2:4.
#[inline(always)]
fn nm_dot_fixed<const N: usize, const M: usize>(vals: &[f32], idx: &[u8], x: &[f32]) -> f32 {
    const G: usize = 4;
    let mut acc = [[0.0f32; N]; G];
    let (vb, ib, xb) = (
        vals.chunks_exact(N * G),
        idx.chunks_exact(N * G),
        x.chunks_exact(M * G),
    );
    let tail = nm_dot_general(vb.remainder(), ib.remainder(), N, M, xb.remainder());
    for ((v, i), xg) in vb.zip(ib).zip(xb) {
        for (g, acc) in acc.iter_mut().enumerate() {
            for (j, a) in acc.iter_mut().enumerate() {
                let k = g * N + j;
                // `% M` keeps the index in the group (positions are below M already).
                *a += v[k] * xg[g * M + i[k] as usize % M];
            }
        }
    }
    acc.iter().flatten().sum::<f32>() + tail
}

#[inline(always)]
fn nm_dot_body(vals: &[f32], idx: &[u8], n: usize, m: usize, x: &[f32]) -> f32 {
    match (n, m) {
        (2, 4) => nm_dot_fixed::<2, 4>(vals, idx, x),
        _ => nm_dot_general(vals, idx, n, m, x),
    }
}

kernel! {
    /// `Σ vals[k]·x[(k / n)·m + idx[k]]` for the `x.len() / m` groups of an N:M row.
    fn nm_dot(vals: &[f32], idx: &[u8], n: usize, m: usize, x: &[f32]) -> f32 => nm_dot_body
}

/// N:M rows: each group of `m` consecutive columns stores `n` values; `values` and
/// `idx` are `[rows, cols / m · n]`, `idx` holding each value's position in its group
/// (below `m`). `cols` is a multiple of `m`.
pub(crate) struct NM<'a> {
    pub values: &'a [f32],
    pub idx: &'a [u8],
    pub n: usize,
    pub m: usize,
    pub cols: usize,
}

impl NM<'_> {
    /// The stored values and positions of row `r`'s groups covering `cols`.
    fn groups(&self, r: usize, cols: Range<usize>) -> (&[f32], &[u8]) {
        let per_row = self.cols / self.m * self.n;
        let k =
            r * per_row + cols.start / self.m * self.n..r * per_row + cols.end / self.m * self.n;
        (&self.values[k.clone()], &self.idx[k])
    }
}

impl Rows for NM<'_> {
    /// Column indices of a block's stored values.
    type Scratch = Vec<u32>;

    fn scratch(&self) -> Vec<u32> {
        Vec::new()
    }

    fn work_before(&self, r: usize) -> usize {
        r * (self.cols / self.m * self.n)
    }

    fn block_unit(&self) -> Option<usize> {
        Some(self.m)
    }

    fn dot(&self, r: usize, x: &[f32], _: &mut Vec<u32>) -> f32 {
        let (vals, idx) = self.groups(r, 0..self.cols);
        nm_dot(vals, idx, self.n, self.m, x)
    }

    fn add_lanes(
        &self,
        r: usize,
        cols: Range<usize>,
        panel: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<u32>,
    ) {
        let (vals, idx) = self.groups(r, cols);
        scratch.resize(vals.len(), 0);
        nm_cols(idx, self.n, self.m, scratch);
        sparse_lanes(scratch, vals, panel, out)
    }
}

#[inline(always)]
fn decode_body(codes: &[u8], table: &[f32; 256], out: &mut [f32]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = table[c as usize];
    }
}

kernel! {
    /// `out[k] = table[codes[k]]`.
    fn decode(codes: &[u8], table: &[f32; 256], out: &mut [f32]) => decode_body
}

/// Where a codebook matrix's codes are: one byte each, or packed at `bits` per code
/// (see [`super::quant::pack_codes`]).
pub(crate) enum Codes<'a> {
    Bytes(&'a [u8]),
    Packed { bytes: &'a [u8], bits: u8 },
}

/// Weight-shared rows: `W[r, c] = codebook[code(r·cols + c)]`, each code below the
/// codebook's length (at most 256).
pub(crate) struct Codebook<'a> {
    codes: Codes<'a>,
    /// The codebook padded with zeros to 256 entries, so any byte is a valid index.
    table: [f32; 256],
    cols: usize,
}

impl<'a> Codebook<'a> {
    pub(crate) fn new(codes: Codes<'a>, codebook: &[f32], cols: usize) -> Codebook<'a> {
        let mut table = [0.0f32; 256];
        table[..codebook.len()].copy_from_slice(codebook);
        Codebook { codes, table, cols }
    }

    /// The values of row `r` at `cols`, decoded into `vals`.
    fn decode<'s>(
        &self,
        r: usize,
        cols: Range<usize>,
        (codes, vals): &'s mut (Vec<u8>, Vec<f32>),
    ) -> &'s [f32] {
        let (start, len) = (r * self.cols + cols.start, cols.len());
        let codes: &[u8] = match self.codes {
            Codes::Bytes(all) => &all[start..start + len],
            Codes::Packed { bytes, bits } => {
                codes.resize(len, 0);
                unpack_codes(bytes, bits, start, codes);
                codes
            }
        };
        vals.resize(len, 0.0);
        decode(codes, &self.table, vals);
        vals
    }
}

impl Rows for Codebook<'_> {
    /// A block of unpacked codes (for packed codes) and of decoded values.
    type Scratch = (Vec<u8>, Vec<f32>);

    fn scratch(&self) -> Self::Scratch {
        (Vec::new(), Vec::new())
    }

    fn work_before(&self, r: usize) -> usize {
        r * self.cols
    }

    fn block_unit(&self) -> Option<usize> {
        Some(1)
    }

    fn dot(&self, r: usize, x: &[f32], scratch: &mut Self::Scratch) -> f32 {
        dense_dot(self.decode(r, 0..self.cols, scratch), x)
    }

    fn add_lanes(
        &self,
        r: usize,
        cols: Range<usize>,
        panel: &[f32],
        out: &mut [f32],
        scratch: &mut Self::Scratch,
    ) {
        dense_lanes(self.decode(r, cols, scratch), panel, out)
    }
}

/// Dense rows: `W[r, c] = values[r·cols + c]`. The same driver as the compressed
/// formats, so it is their fair yardstick; at batch 1 it is a dot product per row at
/// memory (or cache) speed, where a general GEMM would pack the whole matrix first.
pub(crate) struct Dense<'a> {
    values: &'a [f32],
    cols: usize,
}

impl<'a> Dense<'a> {
    /// `values` holds `rows · cols` weights, row-major (checked by the caller).
    pub(crate) fn new(values: &'a [f32], cols: usize) -> Dense<'a> {
        Dense { values, cols }
    }

    fn row(&self, r: usize, cols: Range<usize>) -> &[f32] {
        &self.values[r * self.cols..][cols]
    }
}

impl Rows for Dense<'_> {
    type Scratch = ();

    fn scratch(&self) -> Self::Scratch {}

    fn work_before(&self, r: usize) -> usize {
        r * self.cols
    }

    fn block_unit(&self) -> Option<usize> {
        Some(1)
    }

    fn dot(&self, r: usize, x: &[f32], _: &mut ()) -> f32 {
        dense_dot(self.row(r, 0..self.cols), x)
    }

    fn add_lanes(&self, r: usize, cols: Range<usize>, panel: &[f32], out: &mut [f32], _: &mut ()) {
        dense_lanes(self.row(r, cols), panel, out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic data from a seed (xorshift64).
    pub(crate) struct Gen(pub(crate) u64);

    impl Gen {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        pub(crate) fn value(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
        pub(crate) fn values(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.value()).collect()
        }
    }

    /// `|got − Σ w·x| ≤ tol·Σ |w·x|` for every element, with the sums in f64.
    fn assert_close(got: &[f32], terms: impl Fn(usize) -> Vec<(f64, f64)>) {
        for (i, &g) in got.iter().enumerate() {
            let t = terms(i);
            let exact: f64 = t.iter().map(|(w, x)| w * x).sum();
            let scale: f64 = t.iter().map(|(w, x)| (w * x).abs()).sum();
            assert!(
                (g as f64 - exact).abs() <= 1e-5 * scale + 1e-30,
                "element {i}: {g} vs {exact}"
            );
        }
    }

    /// A random CSR matrix: each row empty, full or random.
    fn csr(g: &mut Gen, rows: usize, cols: usize) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
        let (mut row_ptr, mut col_idx) = (vec![0u32], vec![]);
        for _ in 0..rows {
            let keep = [0, 1000, 1 + g.below(999)][g.below(3)];
            col_idx.extend((0..cols as u32).filter(|_| g.below(1000) < keep));
            row_ptr.push(col_idx.len() as u32);
        }
        let values = g.values(col_idx.len());
        (row_ptr, col_idx, values)
    }

    /// The dense `[rows, cols]` matrix of a format, in f64.
    fn dense<R: Rows>(w: &R, rows: usize, cols: usize) -> Vec<f64> {
        let mut out = vec![0.0; rows * cols];
        let mut scratch = w.scratch();
        for r in 0..rows {
            for c in 0..cols {
                let mut e = vec![0.0f32; cols];
                e[c] = 1.0;
                out[r * cols + c] = w.dot(r, &e, &mut scratch) as f64;
            }
        }
        out
    }

    /// `matmul_tuned` against the f64 product, with tunings small enough to split small
    /// products into pieces and column blocks.
    fn check_driver<R: Rows>(w: &R, rows: usize, cols: usize, batch: usize, g: &mut Gen) {
        let wd = dense(w, rows, cols);
        let x = g.values(batch * cols);
        for tuning in [
            Tuning::default(),
            Tuning {
                parallel_work: 0,
                block_bytes: 4 * 8 * (1 + g.below(20)),
            },
        ] {
            let mut y = vec![f32::NAN; batch * rows];
            matmul_tuned(w, rows, cols, &x, &mut y, tuning);
            assert_close(&y, |i| {
                let (b, r) = (i / rows, i % rows);
                (0..cols)
                    .map(|c| (wd[r * cols + c], x[b * cols + c] as f64))
                    .collect()
            });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Both copies of every row kernel against f64 sums.
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn row_kernel_twins_agree_with_f64(cols in 1usize..200, w8 in 1usize..=8, seed in any::<u64>()) {
            if !crate::kernels::simd_in_use() {
                return Ok(());
            }
            let mut g = Gen(seed | 1);
            let width = 8 * w8;
            let (_, idx, vals) = csr(&mut g, 1, cols);
            let x = g.values(cols);
            let panel = g.values(cols * width);
            let dense_vals = g.values(cols);
            let dot_terms = |c: &[u32], v: &[f32]| -> Vec<(f64, f64)> {
                c.iter().zip(v).map(|(&c, &v)| (v as f64, x[c as usize] as f64)).collect()
            };
            let iota: Vec<u32> = (0..cols as u32).collect();
            let got = [sparse_dot::scalar(&idx, &vals, &x), sparse_dot(&idx, &vals, &x)];
            assert_close(&got, |_| dot_terms(&idx, &vals));
            let narrow: Vec<u16> = idx.iter().map(|&c| c as u16).collect();
            let got = [sparse_dot::scalar(&narrow, &vals, &x), sparse_dot(&narrow, &vals, &x)];
            assert_close(&got, |_| dot_terms(&idx, &vals));
            let got = [dense_dot::scalar(&dense_vals, &x), dense_dot(&dense_vals, &x)];
            assert_close(&got, |_| dot_terms(&iota, &dense_vals));
            let lanes_terms = |c: &[u32], v: &[f32], l: usize| -> Vec<(f64, f64)> {
                c.iter().zip(v).map(|(&c, &v)| (v as f64, panel[c as usize * width + l] as f64)).collect()
            };
            let (mut a, mut b) = (vec![0.0f32; width], vec![0.0f32; width]);
            sparse_lanes::scalar(&idx, &vals, &panel, &mut a);
            let mut narrow_lanes = vec![0.0f32; width];
            sparse_lanes(&narrow, &vals, &panel, &mut narrow_lanes);
            assert_close(&narrow_lanes, |l| lanes_terms(&idx, &vals, l));
            sparse_lanes(&idx, &vals, &panel, &mut b);
            assert_close(&a, |l| lanes_terms(&idx, &vals, l));
            assert_close(&b, |l| lanes_terms(&idx, &vals, l));
            let (mut a, mut b) = (vec![0.0f32; width], vec![0.0f32; width]);
            dense_lanes::scalar(&dense_vals, &panel, &mut a);
            dense_lanes(&dense_vals, &panel, &mut b);
            assert_close(&a, |l| lanes_terms(&iota, &dense_vals, l));
            assert_close(&b, |l| lanes_terms(&iota, &dense_vals, l));
        }

        /// N:M dots (the 2:4 fast path and the general one), column decoding and code
        /// decoding: both copies.
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn grouped_twins_agree_with_f64(groups in 0usize..40, nm in prop_oneof![Just((2usize, 4usize)), (1usize..=8, 1usize..=8)], seed in any::<u64>()) {
            if !crate::kernels::simd_in_use() {
                return Ok(());
            }
            let (n, m) = (nm.0.min(nm.1), nm.0.max(nm.1));
            let mut g = Gen(seed | 1);
            let idx: Vec<u8> = (0..groups * n).map(|_| g.below(m) as u8).collect();
            let vals = g.values(groups * n);
            let x = g.values(groups * m);
            let (mut ca, mut cb) = (vec![0u32; idx.len()], vec![0u32; idx.len()]);
            nm_cols::scalar(&idx, n, m, &mut ca);
            nm_cols(&idx, n, m, &mut cb);
            prop_assert_eq!(&ca, &cb);
            prop_assert!(ca.iter().enumerate().all(|(k, &c)| c as usize == k / n * m + idx[k] as usize));
            let got = [nm_dot::scalar(&vals, &idx, n, m, &x), nm_dot(&vals, &idx, n, m, &x)];
            assert_close(&got, |_| ca.iter().zip(&vals).map(|(&c, &v)| (v as f64, x[c as usize] as f64)).collect());
            let table: [f32; 256] = std::array::from_fn(|i| i as f32 * 0.5 - 3.0);
            let codes: Vec<u8> = (0..groups * m).map(|_| g.next() as u8).collect();
            let (mut da, mut db) = (vec![0.0f32; codes.len()], vec![0.0f32; codes.len()]);
            decode::scalar(&codes, &table, &mut da);
            decode(&codes, &table, &mut db);
            prop_assert_eq!(&da, &db);
            prop_assert!(codes.iter().zip(&da).all(|(&c, &v)| v == table[c as usize]));
        }

        /// The driver on every format, at batch 1 and batched (one panel or more), split
        /// into pieces and column blocks or not.
        #[test]
        fn driver_matches_f64(rows in 1usize..20, groups in 1usize..12, m in 1usize..=5, batch in 1usize..=70, seed in any::<u64>()) {
            let mut g = Gen(seed | 1);
            let cols = groups * m;
            let (row_ptr, col_idx, values) = csr(&mut g, rows, cols);
            check_driver(&Csr { row_ptr: &row_ptr, col_idx: &col_idx, values: &values }, rows, cols, batch, &mut g);
            let narrow: Vec<u16> = col_idx.iter().map(|&c| c as u16).collect();
            check_driver(&Csr { row_ptr: &row_ptr, col_idx: &narrow, values: &values }, rows, cols, batch, &mut g);
            let n = 1 + g.below(m);
            // n distinct positions in each group of m, as N:M storage holds them (a
            // repeated position could cancel below the f64 check's tolerance).
            let idx: Vec<u8> = (0..rows * groups)
                .flat_map(|_| {
                    let mut pos: Vec<u8> = (0..m as u8).collect();
                    for i in 0..n {
                        let j = i + g.below(m - i);
                        pos.swap(i, j);
                    }
                    pos.truncate(n);
                    pos
                })
                .collect();
            let vals = g.values(idx.len());
            check_driver(&NM { values: &vals, idx: &idx, n, m, cols }, rows, cols, batch, &mut g);
            let entries = 1 + g.below(256);
            let book = g.values(entries);
            let codes: Vec<u8> = (0..rows * cols).map(|_| g.below(book.len()) as u8).collect();
            check_driver(&Codebook::new(Codes::Bytes(&codes), &book, cols), rows, cols, batch, &mut g);
            let bits = 1 + g.below(8) as u8;
            let small: Vec<u8> = codes.iter().map(|&c| (c as usize % (1 << bits)) as u8).collect();
            let mut bytes = vec![0u8; (small.len() * bits as usize).div_ceil(8)];
            crate::kernels::quant::pack_codes(&small, bits, &mut bytes);
            check_driver(&Codebook::new(Codes::Packed { bytes: &bytes, bits }, &book, cols), rows, cols, batch, &mut g);
        }
    }
}
