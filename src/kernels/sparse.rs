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

/// Multiply-adds below which the product runs on the calling thread.
const PARALLEL_WORK: usize = 1 << 18;

/// Pieces of work per rayon thread, so uneven pieces still balance.
const PIECES_PER_THREAD: usize = 4;

/// Bytes of `Xᵀ` a column block may take: most of L1d.
const BLOCK_BYTES: usize = 32 << 10;

/// A weight matrix read row by row.
pub(crate) trait Rows: Sync {
    /// Buffers one worker needs to decode rows.
    type Scratch: Send;

    /// Fresh buffers for one worker.
    fn scratch(&self) -> Self::Scratch;

    /// Stored weights in rows `0..r` (monotone in `r`): the work of the rows before `r`.
    fn work_before(&self, r: usize) -> usize;

    /// Columns per block of the batched product, for panels `width` lanes wide:
    /// formats whose rows can be cut at any column read one block of `Xᵀ` (kept in L1)
    /// for all rows before the next.
    fn block(&self, width: usize) -> usize;

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
    assert!(cols > 0 && x.len().is_multiple_of(cols));
    let batch = x.len() / cols;
    assert_eq!(y.len(), batch * rows);
    if batch == 0 || rows == 0 {
        return;
    }
    let pieces = pieces(w, rows, batch);
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
            let block = w.block(width);
            for c0 in (0..cols).step_by(block) {
                let c1 = c0.saturating_add(block).min(cols);
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
fn pieces<R: Rows>(w: &R, rows: usize, batch: usize) -> Vec<Range<usize>> {
    let total = w.work_before(rows);
    let count = if total.saturating_mul(batch) < PARALLEL_WORK {
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
fn panels(x: &[f32], batch: usize, cols: usize) -> Vec<f32> {
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
fn transpose_out(yt: &[f32], lanes: usize, batch: usize, y: &mut [f32]) {
    let rows = yt.len() / lanes;
    let copy = |(b, yr): (usize, &mut [f32])| {
        for (dst, src) in yr.iter_mut().zip(yt[b..].iter().step_by(lanes)) {
            *dst = *src;
        }
    };
    if rows * batch >= PARALLEL_WORK {
        y.par_chunks_exact_mut(rows).enumerate().for_each(copy);
    } else {
        y.chunks_exact_mut(rows).enumerate().for_each(copy);
    }
}

#[inline(always)]
fn sparse_dot_body(cols: &[u32], vals: &[f32], x: &[f32]) -> f32 {
    // Eight partial sums keep eight multiply-adds in flight.
    const L: usize = 8;
    let mut acc = [0.0f32; L];
    let (cb, vb) = (cols.chunks_exact(L), vals.chunks_exact(L));
    let tail: f32 = cb
        .remainder()
        .iter()
        .zip(vb.remainder())
        .map(|(&c, &v)| v * x[c as usize])
        .sum();
    for (c, v) in cb.zip(vb) {
        for l in 0..L {
            acc[l] += v[l] * x[c[l] as usize];
        }
    }
    acc.iter().sum::<f32>() + tail
}

kernel! {
    /// `Σ vals[k]·x[cols[k]]`.
    fn sparse_dot(cols: &[u32], vals: &[f32], x: &[f32]) -> f32 => sparse_dot_body
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
fn sparse_lanes_body(cols: &[u32], vals: &[f32], panel: &[f32], out: &mut [f32]) {
    lanes_body(cols.iter().map(|&c| c as usize), vals, panel, out)
}

kernel! {
    /// `out[l] += Σ_k vals[k]·panel[cols[k]·out.len() + l]` (see [`lanes_body`]).
    fn sparse_lanes(cols: &[u32], vals: &[f32], panel: &[f32], out: &mut [f32]) => sparse_lanes_body
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
pub(crate) struct Csr<'a> {
    pub row_ptr: &'a [u32],
    pub col_idx: &'a [u32],
    pub values: &'a [f32],
}

impl Csr<'_> {
    fn range(&self, r: usize) -> Range<usize> {
        self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize
    }
}

impl Rows for Csr<'_> {
    type Scratch = ();

    fn scratch(&self) {}

    fn work_before(&self, r: usize) -> usize {
        self.row_ptr[r] as usize
    }

    /// No blocks: the columns of a row are in no known order.
    fn block(&self, _: usize) -> usize {
        usize::MAX
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
    let groups = vals.chunks_exact(n).zip(idx.chunks_exact(n)).zip(x.chunks_exact(m));
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
        for g in 0..G {
            for j in 0..N {
                let k = g * N + j;
                // `% M` keeps the index in the group (positions are below M already).
                acc[g][j] += v[k] * xg[g * M + i[k] as usize % M];
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
        let k = r * per_row + cols.start / self.m * self.n..r * per_row + cols.end / self.m * self.n;
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

    fn block(&self, width: usize) -> usize {
        (BLOCK_BYTES / (4 * width)).next_multiple_of(self.m)
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

    fn block(&self, width: usize) -> usize {
        BLOCK_BYTES / (4 * width)
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
