//! The int8 Linear product on weights packed once into panels.
//!
//! `y[i, j] = Σ_b xs[i, b]·ws[j, b]·Σ_{t ∈ b} xq[i, t]·wq[j, t]`: int8 codes within
//! `−127..=127` on both sides, one f32 scale per block of `block` inputs of each
//! activation row (`xs`, quantized per call by [`Activations::quantize`]) and of each
//! weight row (`ws`).
//!
//! **Layout** ([`Packed`], built once when the layer is made): panels of [`PANEL`] = 16
//! weight rows, the 16 int32 lanes of a 512-bit register (two 256-bit ones). Within a
//! panel, block by block, groups of 4 consecutive inputs: 16 rows × 4 bytes, so one
//! `vpdpbusd` multiplies 4 activations (broadcast) with 16 weight rows and adds 16
//! sums, and the sums of a register tile never need a horizontal reduction. Blocks are
//! padded to a multiple of 4 inputs and the last panel to 16 rows with zero codes. The
//! codes are stored offset to unsigned (`w + 128`, the sign bit flipped), the operand
//! `vpdpbusd` takes unsigned; each block sum starts from `−128·Σ_{t ∈ b} xq[i, t]`, so
//! the offset cancels exactly (int32 arithmetic wraps, and the true sum fits: at most
//! `127²·2¹⁷ < 2³¹` for blocks of up to 131072 inputs).
//!
//! **Tiers**, chosen at run time ([`Tier::in_use`]):
//! - AVX-512 VNNI: tiles of 4 activation rows × 4 panels (64 outputs), 16 zmm sums;
//! - AVX-VNNI: 4 rows × 1 panel in ymm halves;
//! - AVX2: no unsigned × signed multiply-add into int32, so `vpmaddubsw` on `|x|` and
//!   `sign(w, x)` (int16 pairs of at most `2·127² = 32258`, which never saturate), then
//!   `vpmaddwd` by ones into int32. Exact, at the price of one `vpsignb` per multiply;
//!   fbgemm instead quantizes activations to 7 bits on AVX2 (saturation-free without
//!   the sign step), which doubles their rounding error;
//! - scalar, the reference twin.
//!
//! After each block the exact int32 sums become `y + f32(dot)·(ws·xs)`, the same
//! operations in the same order in every tier: all tiers give the scalar twin's bits.

use std::ops::Range;

use rayon::prelude::*;

/// Weight rows per panel (int32 lanes of a 512-bit register).
pub(crate) const PANEL: usize = 16;
/// Inputs per 32-bit lane (one `vpdpbusd` group).
const GROUP: usize = 4;
/// Bytes of one group across a panel.
const GROUP_BYTES: usize = PANEL * GROUP;
/// Panels per parallel task (64 outputs).
const PANELS_PER_TASK: usize = 4;
/// Inputs per k-tile: a task's panels over one k-tile (32 KB) stay in L1 while every
/// row tile passes over them.
const TILE_INPUTS: usize = 512;

/// An int8 weight `[outputs, inputs]` packed into panels (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Packed {
    outputs: usize,
    inputs: usize,
    block: usize,
    /// `block` rounded up to a multiple of [`GROUP`].
    stride: usize,
    blocks: usize,
    panels: usize,
    /// `[panels][blocks][stride / 4][PANEL][4]`, each code `w + 128`.
    codes: Vec<u8>,
    /// `[panels][blocks][PANEL]`.
    scales: Vec<f32>,
}

impl Packed {
    /// Packs row-major codes `[outputs, inputs]` (within `−127..=127`) with scales
    /// `[outputs, inputs / block]`; `block` divides `inputs`.
    pub(crate) fn new(
        [outputs, inputs]: [usize; 2],
        block: usize,
        codes: &[i8],
        scales: &[f32],
    ) -> Self {
        debug_assert!(block > 0 && inputs.is_multiple_of(block));
        debug_assert_eq!(codes.len(), outputs * inputs);
        let blocks = inputs / block;
        debug_assert_eq!(scales.len(), outputs * blocks);
        let stride = block.div_ceil(GROUP) * GROUP;
        let panels = outputs.div_ceil(PANEL);
        let panel_codes = blocks * stride * PANEL;
        let mut packed = vec![0x80u8; panels * panel_codes];
        let mut packed_scales = vec![0f32; panels * blocks * PANEL];
        packed
            .par_chunks_mut(panel_codes)
            .zip(packed_scales.par_chunks_mut(blocks * PANEL))
            .enumerate()
            .for_each(|(p, (dst, dst_scales))| {
                let rows = p * PANEL..((p + 1) * PANEL).min(outputs);
                for (c, j) in rows.enumerate() {
                    let row = &codes[j * inputs..(j + 1) * inputs];
                    for (b, src) in row.chunks_exact(block).enumerate() {
                        dst_scales[b * PANEL + c] = scales[j * blocks + b];
                        let at = b * stride * PANEL;
                        for (t, &w) in src.iter().enumerate() {
                            let (g, u) = (t / GROUP, t % GROUP);
                            dst[at + g * GROUP_BYTES + c * GROUP + u] = (w as u8) ^ 0x80;
                        }
                    }
                }
            });
        Packed {
            outputs,
            inputs,
            block,
            stride,
            blocks,
            panels,
            codes: packed,
            scales: packed_scales,
        }
    }

    /// Output features.
    pub(crate) fn outputs(&self) -> usize {
        self.outputs
    }

    /// Input features.
    pub(crate) fn inputs(&self) -> usize {
        self.inputs
    }

    /// Inputs per quantization block.
    pub(crate) fn block(&self) -> usize {
        self.block
    }

    /// `y = x Wᵀ (+ bias)` for a finite row-major batch `x` `[batch, inputs]` into `y`
    /// `[batch, outputs]`: quantizes `x` per block, then the product on the tier in use.
    pub(crate) fn forward(&self, x: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
        let x = Activations::quantize(x, self.inputs, self.block);
        matmul(Tier::in_use(), self, &x, bias, y);
    }
}

/// Activation rows quantized per block to `−127..=127`, laid out as [`Packed`] blocks
/// (`[rows][blocks][stride]`, padded with zeros).
pub(crate) struct Activations {
    rows: usize,
    q: Vec<i8>,
    /// `[rows][blocks]`.
    scales: Vec<f32>,
    /// `Σ` of the codes of each block, `[rows][blocks]`.
    sums: Vec<i32>,
}

impl Activations {
    /// Quantizes each block of `block` inputs of each row of `x` symmetrically from its
    /// own largest magnitude (an all-zero block gets scale 1).
    pub(crate) fn quantize(x: &[f32], inputs: usize, block: usize) -> Self {
        let rows = x.len() / inputs;
        let blocks = inputs / block;
        let stride = block.div_ceil(GROUP) * GROUP;
        let mut q = vec![0i8; rows * blocks * stride];
        let mut scales = vec![0f32; rows * blocks];
        let mut sums = vec![0i32; rows * blocks];
        q.par_chunks_mut(stride)
            .zip(scales.par_iter_mut().zip(sums.par_iter_mut()))
            .zip(x.par_chunks(block))
            .for_each_init(
                || vec![0u8; block],
                |codes, ((q, (scale, sum)), v)| {
                    let amax = v.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let s = if (127.0 / amax).is_finite() {
                        amax / 127.0
                    } else {
                        1.0
                    };
                    super::quant::quantize(v, 1.0 / s, 127.0, 254.0, codes);
                    let mut total = 0;
                    for (q, &c) in q.iter_mut().zip(codes.iter()) {
                        *q = (c as i32 - 127) as i8;
                        total += *q as i32;
                    }
                    (*scale, *sum) = (s, total);
                },
            );
        Activations {
            rows,
            q,
            scales,
            sums,
        }
    }
}

/// The kernel family of a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tier {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Tier {
    /// The best tier [`super::level`] and [`super::extensions`] allow.
    pub(crate) fn in_use() -> Tier {
        #[cfg(target_arch = "x86_64")]
        {
            let e = super::extensions();
            if e.avx512_vnni {
                return Tier::Avx512Vnni;
            }
            if e.avx_vnni {
                return Tier::AvxVnni;
            }
            if super::level() >= super::Level::Avx2 {
                return Tier::Avx2;
            }
        }
        Tier::Scalar
    }

    /// Whether the CPU has the instructions of this tier (whatever the environment says).
    fn runs_here(self) -> bool {
        match self {
            Tier::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => super::detected() >= super::Level::Avx2,
            #[cfg(target_arch = "x86_64")]
            Tier::AvxVnni => super::detected_extensions().avx_vnni,
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512Vnni => {
                super::detected() >= super::Level::Avx512
                    && super::detected_extensions().avx512_vnni
            }
        }
    }

    /// Register tile: activation rows × panels.
    fn tile(self) -> (usize, usize) {
        match self {
            Tier::Scalar => (1, 1),
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 | Tier::AvxVnni => (4, 1),
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512Vnni => (4, 4),
        }
    }
}

/// Where a register tile goes: its first activation row and panel, its blocks
/// `first..end` (a k-tile), and its first column in a task's output buffer of `width`
/// columns.
#[derive(Clone, Copy)]
struct At {
    row: usize,
    panel: usize,
    first: usize,
    end: usize,
    col: usize,
    width: usize,
}

/// `y = x Wᵀ (+ bias)` on `tier`, in parallel tasks of [`PANELS_PER_TASK`] panels
/// (each output is computed whole by one task: the result does not depend on threads).
pub(crate) fn matmul(tier: Tier, w: &Packed, x: &Activations, bias: Option<&[f32]>, y: &mut [f32]) {
    assert!(
        tier.runs_here(),
        "{tier:?} needs instructions this CPU lacks"
    );
    let rows = x.rows;
    debug_assert_eq!(y.len(), rows * w.outputs);
    debug_assert_eq!(x.q.len(), rows * w.blocks * w.stride);
    let tasks = w.panels.div_ceil(PANELS_PER_TASK);
    let parts: Vec<Vec<f32>> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let panels = t * PANELS_PER_TASK..((t + 1) * PANELS_PER_TASK).min(w.panels);
            let width = panels.len() * PANEL;
            let mut out = vec![0f32; rows * width];
            run_task(tier, w, x, panels, &mut out, width);
            out
        })
        .collect();
    y.par_chunks_mut(w.outputs).enumerate().for_each(|(i, y)| {
        for (t, part) in parts.iter().enumerate() {
            let first = t * PANELS_PER_TASK * PANEL;
            let width = part.len() / rows;
            let cols = width.min(w.outputs - first);
            let dst = &mut y[first..first + cols];
            dst.copy_from_slice(&part[i * width..i * width + cols]);
            if let Some(bias) = bias {
                dst.iter_mut()
                    .zip(&bias[first..first + cols])
                    .for_each(|(y, b)| *y += b);
            }
        }
    });
}

/// All activation rows × `panels` into `out` (`[rows][width]`, zeroed), k-tile by
/// k-tile (so each output still adds its blocks in order), in register tiles of the
/// tier's size; edge rows and panels one at a time.
fn run_task(
    tier: Tier,
    w: &Packed,
    x: &Activations,
    panels: Range<usize>,
    out: &mut [f32],
    width: usize,
) {
    let (tr, tc) = tier.tile();
    let per_tile = (TILE_INPUTS / w.stride).max(1);
    for first in (0..w.blocks).step_by(per_tile) {
        let end = (first + per_tile).min(w.blocks);
        let mut row = 0;
        while row < x.rows {
            let r = if x.rows - row >= tr { tr } else { 1 };
            let mut panel = panels.start;
            while panel < panels.end {
                let c = if panels.end - panel >= tc { tc } else { 1 };
                let col = (panel - panels.start) * PANEL;
                let at = At {
                    row,
                    panel,
                    first,
                    end,
                    col,
                    width,
                };
                tile(tier, (r, c), w, x, at, out);
                panel += c;
            }
            row += r;
        }
    }
}

/// One register tile of `r` rows × `c` panels on `tier`.
fn tile(tier: Tier, (r, c): (usize, usize), w: &Packed, x: &Activations, at: At, out: &mut [f32]) {
    check_tile(w, x, at, (r, c), out);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `matmul` asserted `tier.runs_here()`, so the CPU has the tile's target
    // features; `check_tile` asserted that the tile lies within `w`, `x` and `out`.
    unsafe {
        match (tier, r, c) {
            (Tier::Avx512Vnni, 4, 4) => return x86::tile_avx512::<4, 4>(w, x, at, out),
            (Tier::Avx512Vnni, 1, 4) => return x86::tile_avx512::<1, 4>(w, x, at, out),
            (Tier::Avx512Vnni, 4, 1) => return x86::tile_avx512::<4, 1>(w, x, at, out),
            (Tier::Avx512Vnni, _, _) => return x86::tile_avx512::<1, 1>(w, x, at, out),
            (Tier::AvxVnni, 4, _) => return x86::tile_avx_vnni::<4>(w, x, at, out),
            (Tier::AvxVnni, _, _) => return x86::tile_avx_vnni::<1>(w, x, at, out),
            (Tier::Avx2, 4, _) => return x86::tile_avx2::<4>(w, x, at, out),
            (Tier::Avx2, _, _) => return x86::tile_avx2::<1>(w, x, at, out),
            (Tier::Scalar, _, _) => {}
        }
    }
    tile_scalar(w, x, at, out)
}

/// Asserts that a tile of `r` rows × `c` panels at `at` lies within the buffers.
fn check_tile(w: &Packed, x: &Activations, at: At, (r, c): (usize, usize), out: &[f32]) {
    assert!(at.row + r <= x.rows && at.panel + c <= w.panels && at.end <= w.blocks);
    assert!(at.col + c * PANEL <= at.width && (at.row + r) * at.width <= out.len());
    assert_eq!(w.codes.len(), w.panels * w.blocks * w.stride * PANEL);
    assert_eq!(w.scales.len(), w.panels * w.blocks * PANEL);
    assert_eq!(x.q.len(), x.rows * w.blocks * w.stride);
    assert!(x.scales.len() == x.rows * w.blocks && x.sums.len() == x.scales.len());
}

/// The scalar twin: one activation row × one panel.
fn tile_scalar(w: &Packed, x: &Activations, at: At, out: &mut [f32]) {
    let (blocks, stride) = (w.blocks, w.stride);
    let o = &mut out[at.row * at.width + at.col..][..PANEL];
    for b in at.first..at.end {
        let xq = &x.q[(at.row * blocks + b) * stride..][..stride];
        let wq = &w.codes[(at.panel * blocks + b) * stride * PANEL..][..stride * PANEL];
        let mut acc = [0i32; PANEL];
        for (xg, wg) in xq.chunks_exact(GROUP).zip(wq.chunks_exact(GROUP_BYTES)) {
            for (a, wl) in acc.iter_mut().zip(wg.chunks_exact(GROUP)) {
                for (&xv, &wv) in xg.iter().zip(wl) {
                    *a += xv as i32 * ((wv ^ 0x80) as i8 as i32);
                }
            }
        }
        let xs = x.scales[at.row * blocks + b];
        let ws = &w.scales[(at.panel * blocks + b) * PANEL..][..PANEL];
        for ((o, &a), &s) in o.iter_mut().zip(&acc).zip(ws) {
            *o += a as f32 * (s * xs);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The SIMD tiles. Each takes a tile that `check_tile` has bounded; pointers below
    //! stay within the slices it checked.
    use super::{Activations, At, GROUP, GROUP_BYTES, PANEL, Packed};
    use std::arch::x86_64::*;

    /// `R` rows × `C` panels with 512-bit `vpdpbusd`.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[allow(clippy::needless_range_loop)] // register tiles read clearest as acc[r][c]
    pub(super) fn tile_avx512<const R: usize, const C: usize>(
        w: &Packed,
        x: &Activations,
        at: At,
        out: &mut [f32],
    ) {
        let (blocks, stride) = (w.blocks, w.stride);
        let groups = stride / GROUP;
        for b in at.first..at.end {
            let mut acc: [[__m512i; C]; R] = std::array::from_fn(|r| {
                [_mm512_set1_epi32(-128 * x.sums[(at.row + r) * blocks + b]); C]
            });
            let wp: [*const u8; C] = std::array::from_fn(|c| {
                w.codes[((at.panel + c) * blocks + b) * stride * PANEL..].as_ptr()
            });
            let xp: [*const i8; R] =
                std::array::from_fn(|r| x.q[((at.row + r) * blocks + b) * stride..].as_ptr());
            for g in 0..groups {
                // SAFETY: group `g` of block `b` lies within the panel's codes and the
                // row's activations (`check_tile`).
                let wv: [__m512i; C] = std::array::from_fn(|c| unsafe {
                    _mm512_loadu_si512(wp[c].add(g * GROUP_BYTES) as *const __m512i)
                });
                for r in 0..R {
                    // SAFETY: as above; four bytes of the group, read unaligned.
                    let xg = unsafe { (xp[r].add(g * GROUP) as *const i32).read_unaligned() };
                    let xb = _mm512_set1_epi32(xg);
                    for c in 0..C {
                        acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], wv[c], xb);
                    }
                }
            }
            for r in 0..R {
                let xs = _mm512_set1_ps(x.scales[(at.row + r) * blocks + b]);
                for c in 0..C {
                    let ws = &w.scales[((at.panel + c) * blocks + b) * PANEL..][..PANEL];
                    let o = &mut out[(at.row + r) * at.width + at.col + c * PANEL..][..PANEL];
                    // SAFETY: `ws` and `o` have 16 floats.
                    unsafe {
                        let s = _mm512_mul_ps(_mm512_loadu_ps(ws.as_ptr()), xs);
                        let d = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][c]), s);
                        _mm512_storeu_ps(
                            o.as_mut_ptr(),
                            _mm512_add_ps(_mm512_loadu_ps(o.as_ptr()), d),
                        );
                    }
                }
            }
        }
    }

    /// Adds `f32(acc)·(ws·xs)` to the 16 outputs `o` of one row and panel (two ymm halves).
    #[target_feature(enable = "avx2,fma")]
    fn finish_256(acc: [__m256i; 2], ws: &[f32], xs: f32, o: &mut [f32]) {
        let (ws, o) = (&ws[..PANEL], &mut o[..PANEL]);
        let xs = _mm256_set1_ps(xs);
        for (h, acc) in acc.into_iter().enumerate() {
            // SAFETY: `ws` and `o` have 16 floats; half `h` reads and writes 8 of them.
            unsafe {
                let s = _mm256_mul_ps(_mm256_loadu_ps(ws.as_ptr().add(8 * h)), xs);
                let d = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), s);
                let p = o.as_mut_ptr().add(8 * h);
                _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), d));
            }
        }
    }

    /// `R` rows × 1 panel with 256-bit `vpdpbusd` (AVX-VNNI).
    #[target_feature(enable = "avx2,fma,avxvnni")]
    pub(super) fn tile_avx_vnni<const R: usize>(
        w: &Packed,
        x: &Activations,
        at: At,
        out: &mut [f32],
    ) {
        let (blocks, stride) = (w.blocks, w.stride);
        let groups = stride / GROUP;
        for b in at.first..at.end {
            let mut acc: [[__m256i; 2]; R] = std::array::from_fn(|r| {
                [_mm256_set1_epi32(-128 * x.sums[(at.row + r) * blocks + b]); 2]
            });
            let wp = w.codes[(at.panel * blocks + b) * stride * PANEL..].as_ptr();
            let xp: [*const i8; R] =
                std::array::from_fn(|r| x.q[((at.row + r) * blocks + b) * stride..].as_ptr());
            for g in 0..groups {
                // SAFETY: group `g` of block `b` lies within the panel's codes and the
                // row's activations (`check_tile`).
                let wv: [__m256i; 2] = std::array::from_fn(|h| unsafe {
                    _mm256_loadu_si256(wp.add(g * GROUP_BYTES + 32 * h) as *const __m256i)
                });
                for r in 0..R {
                    // SAFETY: as above; four bytes of the group, read unaligned.
                    let xg = unsafe { (xp[r].add(g * GROUP) as *const i32).read_unaligned() };
                    let xb = _mm256_set1_epi32(xg);
                    for h in 0..2 {
                        acc[r][h] = _mm256_dpbusd_avx_epi32(acc[r][h], wv[h], xb);
                    }
                }
            }
            for (r, acc) in acc.into_iter().enumerate() {
                let ws = &w.scales[(at.panel * blocks + b) * PANEL..];
                let o = &mut out[(at.row + r) * at.width + at.col..];
                finish_256(acc, ws, x.scales[(at.row + r) * blocks + b], o);
            }
        }
    }

    /// `R` rows × 1 panel with `vpmaddubsw` on `|x|` and `sign(w, x)`, then `vpmaddwd`
    /// by ones (AVX2).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tile_avx2<const R: usize>(w: &Packed, x: &Activations, at: At, out: &mut [f32]) {
        let (blocks, stride) = (w.blocks, w.stride);
        let groups = stride / GROUP;
        let (flip, ones) = (_mm256_set1_epi8(i8::MIN), _mm256_set1_epi16(1));
        for b in at.first..at.end {
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            let wp = w.codes[(at.panel * blocks + b) * stride * PANEL..].as_ptr();
            let xp: [*const i8; R] =
                std::array::from_fn(|r| x.q[((at.row + r) * blocks + b) * stride..].as_ptr());
            for g in 0..groups {
                // SAFETY: group `g` of block `b` lies within the panel's codes and the
                // row's activations (`check_tile`).
                let wv: [__m256i; 2] = std::array::from_fn(|h| unsafe {
                    let v = _mm256_loadu_si256(wp.add(g * GROUP_BYTES + 32 * h) as *const __m256i);
                    _mm256_xor_si256(v, flip)
                });
                for r in 0..R {
                    // SAFETY: as above; four bytes of the group, read unaligned.
                    let xg = unsafe { (xp[r].add(g * GROUP) as *const i32).read_unaligned() };
                    let xb = _mm256_set1_epi32(xg);
                    let ax = _mm256_abs_epi8(xb);
                    for h in 0..2 {
                        // Σ x·w as |x|·sign(w, x): pairs of at most 2·127², exact in i16.
                        let p = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv[h], xb));
                        acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(p, ones));
                    }
                }
            }
            for (r, acc) in acc.into_iter().enumerate() {
                let ws = &w.scales[(at.panel * blocks + b) * PANEL..];
                let o = &mut out[(at.row + r) * at.width + at.col..];
                finish_256(acc, ws, x.scales[(at.row + r) * blocks + b], o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every tier this CPU has (ignoring the environment), the scalar one first.
    fn tiers() -> Vec<Tier> {
        #[cfg(target_arch = "x86_64")]
        let all = [Tier::Scalar, Tier::Avx2, Tier::AvxVnni, Tier::Avx512Vnni];
        #[cfg(not(target_arch = "x86_64"))]
        let all = [Tier::Scalar];
        all.into_iter().filter(|t| t.runs_here()).collect()
    }

    /// The definition, on row-major codes: per block an exact i64 dot product, then the
    /// kernels' `y + f32(dot)·(ws·xs)`.
    fn reference(
        [outputs, inputs]: [usize; 2],
        block: usize,
        codes: &[i8],
        scales: &[f32],
        x: &[f32],
    ) -> Vec<f32> {
        let a = Activations::quantize(x, inputs, block);
        let (blocks, stride) = (inputs / block, block.div_ceil(GROUP) * GROUP);
        let mut y = vec![0f32; a.rows * outputs];
        for i in 0..a.rows {
            for j in 0..outputs {
                let mut acc = 0f32;
                for b in 0..blocks {
                    let xq = &a.q[(i * blocks + b) * stride..][..block];
                    let wq = &codes[j * inputs + b * block..][..block];
                    let dot: i64 = xq.iter().zip(wq).map(|(&p, &q)| p as i64 * q as i64).sum();
                    let dot = i32::try_from(dot).expect("block sums fit in i32");
                    acc += dot as f32 * (scales[j * blocks + b] * a.scales[i * blocks + b]);
                }
                y[i * outputs + j] = acc;
            }
        }
        y
    }

    fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    proptest! {
        /// Every tier gives the bits of the definition: tiles and edges (rows 1..9,
        /// up to 7 panels), several k-tiles, blocks that are not a multiple of 4, per-row
        /// blocks.
        #[test]
        fn tiers_give_the_definitions_bits(
            (rows, outputs) in (1usize..10, 1usize..110),
            (blocks, block) in (1usize..12, 1usize..70),
            seed in any::<u64>(),
        ) {
            let inputs = blocks * block;
            let mut next = lcg(seed);
            let codes: Vec<i8> = (0..outputs * inputs).map(|_| ((next() % 255) as i32 - 127) as i8).collect();
            let scales: Vec<f32> = (0..outputs * blocks).map(|_| (next() % 1000) as f32 * 1e-4).collect();
            let x: Vec<f32> = (0..rows * inputs).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let want = reference([outputs, inputs], block, &codes, &scales, &x);
            let w = Packed::new([outputs, inputs], block, &codes, &scales);
            let a = Activations::quantize(&x, inputs, block);
            let bias: Vec<f32> = (0..outputs).map(|j| j as f32 * 0.5).collect();
            for tier in tiers() {
                let mut y = vec![f32::NAN; rows * outputs];
                matmul(tier, &w, &a, None, &mut y);
                prop_assert!(y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{:?}", tier);
                matmul(tier, &w, &a, Some(&bias), &mut y);
                for (r, row) in y.chunks(outputs).enumerate() {
                    for (j, v) in row.iter().enumerate() {
                        prop_assert_eq!(v.to_bits(), (want[r * outputs + j] + bias[j]).to_bits());
                    }
                }
            }
        }
    }

    /// The largest sums: all codes ±127 over a block of 2¹⁷ inputs (`127²·2¹⁷` is just
    /// below 2³¹), where a saturating or offset sum would show.
    #[test]
    fn extreme_codes_are_exact() {
        let inputs = 1 << 17;
        for sign in [1i8, -1] {
            let codes: Vec<i8> = (0..2 * inputs)
                .map(|t| if t < inputs { 127 } else { -127 * sign })
                .collect();
            let x: Vec<f32> = (0..2 * inputs)
                .map(|t| if t < inputs { 1.0 } else { -1.0 })
                .collect();
            let want = reference([2, inputs], inputs, &codes, &[1.0, 1.0], &x);
            let w = Packed::new([2, inputs], inputs, &codes, &[1.0, 1.0]);
            let a = Activations::quantize(&x, inputs, inputs);
            for tier in tiers() {
                let mut y = vec![0f32; 4];
                matmul(tier, &w, &a, None, &mut y);
                assert_eq!(y, want, "{tier:?}");
            }
            let full = (127i64 * 127 * inputs as i64) as f32 * (1.0 / 127.0);
            assert_eq!(want[0], full);
            assert_eq!(want[1], -(sign as f32) * full);
        }
    }
}
