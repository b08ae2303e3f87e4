//! The geometry of a convolution, and `im2col` / `col2im` (its adjoint) on contiguous
//! slices: shared by the forward pass, backpropagation and the activation statistics.

use crate::error::{Error, Result};

use super::conv::ConvSpec;

/// Everything the loops need to know about one convolution, validated once.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    /// Input channels, height, width.
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Input and output channels per group.
    pub cg: usize,
    pub og: usize,
    pub groups: usize,
    /// Kernel size.
    pub kh: usize,
    pub kw: usize,
    /// Output size.
    pub oh: usize,
    pub ow: usize,
    pub spec: ConvSpec,
}

impl Geometry {
    /// Checks a `[c, h, w]` input against a `[o, c / groups, kh, kw]` weight.
    pub fn new(
        (c, h, w): (usize, usize, usize),
        (o, cg, kh, kw): (usize, usize, usize, usize),
        spec: ConvSpec,
    ) -> Result<Geometry> {
        if c == 0 || h == 0 || w == 0 || o == 0 {
            return Err(Error::bad_shape(
                "convolution",
                &[o, c, h, w],
                "needs at least one input channel, output channel, row and column",
            ));
        }
        let g = spec.groups;
        if g == 0 || c % g != 0 || o % g != 0 || c / g != cg {
            return Err(Error::ShapeMismatch {
                what: format!("convolution weight for {c} input channels in {g} groups"),
                expected: vec![o, c / g.max(1), kh, kw],
                got: vec![o, cg, kh, kw],
            });
        }
        let (oh, ow) = spec.output_size((h, w), (kh, kw))?;
        Ok(Geometry {
            c,
            h,
            w,
            o,
            cg,
            og: o / g,
            groups: g,
            kh,
            kw,
            oh,
            ow,
            spec,
        })
    }

    /// Rows of one group's columns: `cg·kh·kw`.
    pub fn rows(&self) -> usize {
        self.cg * self.kh * self.kw
    }

    /// Whether the columns of a group are its input itself: a 1×1 kernel, stride 1, no
    /// padding (a pointwise convolution is a plain matrix product).
    pub fn is_pointwise(&self) -> bool {
        (self.kh, self.kw) == (1, 1) && self.spec.stride == (1, 1) && self.spec.padding == (0, 0)
    }

    /// Output positions of one image: `oh·ow`.
    pub fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// Elements of one input image.
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Elements of one group's input channels.
    pub fn group_len(&self) -> usize {
        self.cg * self.h * self.w
    }

    /// Elements of one output image.
    pub fn out_len(&self) -> usize {
        self.o * self.positions()
    }

    /// For kernel column `kj`: the output columns `lo..hi` that read inside the input
    /// row, and the input column read by output column `lo`.
    fn col_range(&self, kj: usize) -> (usize, usize) {
        let (sw, pw) = (self.spec.stride.1, self.spec.padding.1);
        // xj = oj·sw + kj − pw must lie in [0, w).
        let lo = pw.saturating_sub(kj).div_ceil(sw);
        let hi = if self.w + pw > kj {
            ((self.w + pw - kj - 1) / sw + 1).min(self.ow)
        } else {
            0
        };
        (lo.min(hi), hi)
    }

    /// The input row read by output row `oi` at kernel row `ki`, if inside the input.
    fn input_row(&self, oi: usize, ki: usize) -> Option<usize> {
        (oi * self.spec.stride.0 + ki)
            .checked_sub(self.spec.padding.0)
            .filter(|&y| y < self.h)
    }
}

/// The patches of one group's channels `x` (`[cg, h, w]`, row-major) as columns
/// `cols` (`[cg·kh·kw, oh·ow]`, row-major); every element of `cols` is written.
pub(super) fn im2col(x: &[f32], g: &Geometry, cols: &mut [f32]) {
    debug_assert_eq!(x.len(), g.group_len());
    debug_assert_eq!(cols.len(), g.rows() * g.positions());
    let (sw, pw) = (g.spec.stride.1, g.spec.padding.1);
    let mut rows = cols.chunks_exact_mut(g.positions());
    for ci in 0..g.cg {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = rows.next().expect("cg·kh·kw rows");
                let (lo, hi) = g.col_range(kj);
                for (oi, out) in row.chunks_exact_mut(g.ow).enumerate() {
                    let Some(yi) = g.input_row(oi, ki) else {
                        out.fill(0.0);
                        continue;
                    };
                    let src = &plane[yi * g.w..(yi + 1) * g.w];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    if lo < hi {
                        let x0 = lo * sw + kj - pw;
                        if sw == 1 {
                            out[lo..hi].copy_from_slice(&src[x0..x0 + hi - lo]);
                        } else {
                            for (o, s) in out[lo..hi].iter_mut().zip(src[x0..].iter().step_by(sw)) {
                                *o = *s;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The columns (`[cg·kh·kw, oh·ow]`) of one group's channels `x`: `x` itself when the
/// convolution [is pointwise](Geometry::is_pointwise) (no copy), else [`im2col`] of it
/// written into `cols`.
pub(super) fn columns<'a>(x: &'a [f32], g: &Geometry, cols: &'a mut [f32]) -> &'a [f32] {
    if g.is_pointwise() {
        debug_assert_eq!(x.len(), g.rows() * g.positions());
        x
    } else {
        im2col(x, g, cols);
        cols
    }
}

/// The adjoint of [`im2col`]: adds every column entry back to the input position it was
/// read from (`dx` is `[cg, h, w]` and is accumulated into).
pub(super) fn col2im(cols: &[f32], g: &Geometry, dx: &mut [f32]) {
    debug_assert_eq!(dx.len(), g.group_len());
    debug_assert_eq!(cols.len(), g.rows() * g.positions());
    let (sw, pw) = (g.spec.stride.1, g.spec.padding.1);
    let mut rows = cols.chunks_exact(g.positions());
    for ci in 0..g.cg {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = rows.next().expect("cg·kh·kw rows");
                let (lo, hi) = g.col_range(kj);
                if lo >= hi {
                    continue;
                }
                let x0 = lo * sw + kj - pw;
                for (oi, src) in row.chunks_exact(g.ow).enumerate() {
                    let Some(yi) = g.input_row(oi, ki) else {
                        continue;
                    };
                    let dst = &mut plane[yi * g.w..(yi + 1) * g.w];
                    if sw == 1 {
                        for (d, s) in dst[x0..x0 + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += *s;
                        }
                    } else {
                        for (d, s) in dst[x0..].iter_mut().step_by(sw).zip(&src[lo..hi]) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩` for every geometry: col2im is the adjoint.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for (stride, padding, k) in [
            ((1, 1), (0, 0), (3, 3)),
            ((2, 3), (1, 2), (3, 2)),
            ((3, 1), (2, 0), (1, 4)),
            ((1, 2), (3, 3), (2, 2)),
        ] {
            let spec = ConvSpec::new()
                .with_stride(stride.0, stride.1)
                .with_padding(padding.0, padding.1);
            let g = Geometry::new((2, 5, 6), (3, 2, k.0, k.1), spec).unwrap();
            let x: Vec<f32> = (0..g.group_len())
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let c: Vec<f32> = (0..g.rows() * g.positions())
                .map(|i| (i as f32 * 0.91).cos())
                .collect();
            let mut cols = vec![f32::NAN; c.len()];
            im2col(&x, &g, &mut cols);
            let mut dx = vec![0.0; x.len()];
            col2im(&c, &g, &mut dx);
            let lhs: f32 = cols.iter().zip(&c).map(|(a, b)| a * b).sum();
            let rhs: f32 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs} for {spec:?}");
        }
    }
}
