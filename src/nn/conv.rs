//! 2-D convolution by im2col and matrix products (PyTorch's `Conv2d` semantics:
//! cross-correlation, NCHW input, `[out, in / groups, kh, kw]` weights).

use ndarray::{Array2, Array4, ArrayRef, Ix1, Ix4, s};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Stride, zero padding and groups of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvSpec {
    /// Step between output positions, (rows, columns).
    pub stride: (usize, usize),
    /// Zeros added on each side, (rows, columns).
    pub padding: (usize, usize),
    /// Channel groups: input and output channels split into `groups` independent parts
    /// (`groups = channels`: depthwise).
    pub groups: usize,
}

impl Default for ConvSpec {
    fn default() -> Self {
        ConvSpec {
            stride: (1, 1),
            padding: (0, 0),
            groups: 1,
        }
    }
}

impl ConvSpec {
    /// Stride 1, no padding, one group.
    pub fn new() -> ConvSpec {
        ConvSpec::default()
    }

    /// Sets the stride.
    pub fn with_stride(mut self, rows: usize, cols: usize) -> ConvSpec {
        self.stride = (rows, cols);
        self
    }

    /// Sets the zero padding.
    pub fn with_padding(mut self, rows: usize, cols: usize) -> ConvSpec {
        self.padding = (rows, cols);
        self
    }

    /// Sets the number of groups.
    pub fn with_groups(mut self, groups: usize) -> ConvSpec {
        self.groups = groups;
        self
    }

    /// The output height and width for an input of `h × w` and a `kh × kw` kernel.
    pub fn output_size(
        &self,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
    ) -> Result<(usize, usize)> {
        if self.stride.0 == 0 || self.stride.1 == 0 {
            return Err(Error::invalid(
                "stride",
                format!("{:?}", self.stride),
                "at least 1",
            ));
        }
        let (ph, pw) = (h + 2 * self.padding.0, w + 2 * self.padding.1);
        if kh == 0 || kw == 0 || kh > ph || kw > pw {
            return Err(Error::bad_shape(
                "convolution input",
                &[h, w],
                format!("a {kh}×{kw} kernel does not fit the padded {ph}×{pw} input"),
            ));
        }
        Ok(((ph - kh) / self.stride.0 + 1, (pw - kw) / self.stride.1 + 1))
    }
}

/// `conv2d(x, weight) + bias` for a batch `x` `[n, in, h, w]` and `weight`
/// `[out, in / groups, kh, kw]`, giving `[n, out, oh, ow]`.
///
/// ```
/// use ndarray::{Array, Array4};
/// use slimnn::nn::{ConvSpec, conv2d};
///
/// let x = Array4::from_shape_fn((1, 1, 3, 3), |(_, _, i, j)| (i * 3 + j) as f32);
/// let w = Array4::from_elem((1, 1, 2, 2), 1.0f32);
/// let y = conv2d(&x, &w, None, ConvSpec::new())?;
/// assert_eq!(y.into_raw_vec_and_offset().0, vec![8.0, 12.0, 20.0, 24.0]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn conv2d(
    x: &ArrayRef<f32, Ix4>,
    weight: &ArrayRef<f32, Ix4>,
    bias: Option<&ArrayRef<f32, Ix1>>,
    spec: ConvSpec,
) -> Result<Array4<f32>> {
    let (n, c, h, w) = x.dim();
    let (o, cg, kh, kw) = weight.dim();
    let g = spec.groups;
    if g == 0 || c % g != 0 || o % g != 0 || c / g != cg {
        return Err(Error::ShapeMismatch {
            what: format!("convolution weight for {c} input channels in {g} groups"),
            expected: vec![o, c / g.max(1), kh, kw],
            got: weight.shape().to_vec(),
        });
    }
    if let Some(b) = bias {
        crate::tensor::check_same_shape(&[o], b.shape(), || "convolution bias".into())?;
    }
    let (oh, ow) = spec.output_size((h, w), (kh, kw))?;
    let og = o / g;
    let weights: Vec<Array2<f32>> = (0..g)
        .map(|gi| {
            weight
                .slice(s![gi * og..(gi + 1) * og, .., .., ..])
                .to_shape((og, cg * kh * kw))
                .expect("a slice along the outer axis reshapes")
                .to_owned()
        })
        .collect();
    let mut out = Array4::<f32>::zeros((n, o, oh, ow));
    out.outer_iter_mut()
        .into_par_iter()
        .zip(x.outer_iter())
        .for_each(|(mut y, xi)| {
            for (gi, wg) in weights.iter().enumerate() {
                let cols = im2col(
                    xi.slice(s![gi * cg..(gi + 1) * cg, .., ..]),
                    (kh, kw),
                    spec,
                    (oh, ow),
                );
                let yg = wg.dot(&cols);
                y.slice_mut(s![gi * og..(gi + 1) * og, .., ..])
                    .assign(&yg.into_shape_with_order((og, oh, ow)).expect("og × oh·ow"));
            }
            if let Some(b) = bias {
                for (mut plane, &bv) in y.outer_iter_mut().zip(b.iter()) {
                    plane += bv;
                }
            }
        });
    Ok(out)
}

/// The patches of one image `[c, h, w]` as columns `[c·kh·kw, oh·ow]`.
fn im2col(
    x: ndarray::ArrayView3<'_, f32>,
    (kh, kw): (usize, usize),
    spec: ConvSpec,
    (oh, ow): (usize, usize),
) -> Array2<f32> {
    let (c, h, w) = x.dim();
    let (sh, sw) = spec.stride;
    let (ph, pw) = spec.padding;
    let mut cols = Array2::<f32>::zeros((c * kh * kw, oh * ow));
    for ci in 0..c {
        for ki in 0..kh {
            for kj in 0..kw {
                let mut row = cols.row_mut((ci * kh + ki) * kw + kj);
                let row = row
                    .as_slice_mut()
                    .expect("rows of a standard array are contiguous");
                for oi in 0..oh {
                    let yi = (oi * sh + ki) as isize - ph as isize;
                    if yi < 0 || yi >= h as isize {
                        continue;
                    }
                    for oj in 0..ow {
                        let xj = (oj * sw + kj) as isize - pw as isize;
                        if xj >= 0 && xj < w as isize {
                            row[oi * ow + oj] = x[[ci, yi as usize, xj as usize]];
                        }
                    }
                }
            }
        }
    }
    cols
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct summation, the definition.
    fn reference(x: &Array4<f32>, w: &Array4<f32>, spec: ConvSpec) -> Array4<f32> {
        let (n, _, h, wd) = x.dim();
        let (o, cg, kh, kw) = w.dim();
        let (oh, ow) = spec.output_size((h, wd), (kh, kw)).unwrap();
        let og = o / spec.groups;
        Array4::from_shape_fn((n, o, oh, ow), |(b, f, i, j)| {
            let g = f / og;
            let mut s = 0.0;
            for ci in 0..cg {
                for ki in 0..kh {
                    for kj in 0..kw {
                        let yi = (i * spec.stride.0 + ki) as isize - spec.padding.0 as isize;
                        let xj = (j * spec.stride.1 + kj) as isize - spec.padding.1 as isize;
                        if yi >= 0 && xj >= 0 && (yi as usize) < h && (xj as usize) < wd {
                            s += x[[b, g * cg + ci, yi as usize, xj as usize]] * w[[f, ci, ki, kj]];
                        }
                    }
                }
            }
            s
        })
    }

    #[test]
    fn matches_direct_summation() {
        for (groups, stride, padding, k) in [
            (1, (1, 1), (0, 0), (3, 3)),
            (2, (2, 1), (1, 2), (3, 1)),
            (4, (1, 2), (1, 0), (1, 3)),
        ] {
            let spec = ConvSpec::new()
                .with_groups(groups)
                .with_stride(stride.0, stride.1)
                .with_padding(padding.0, padding.1);
            let x = Array4::from_shape_fn((2, 4, 7, 6), |(a, b, c, d)| {
                ((a * 97 + b * 31 + c * 7 + d) as f32 * 0.37).sin()
            });
            let w = Array4::from_shape_fn((8, 4 / groups, k.0, k.1), |(a, b, c, d)| {
                ((a * 13 + b * 5 + c * 3 + d) as f32 * 0.71).cos()
            });
            let got = conv2d(&x, &w, None, spec).unwrap();
            let want = reference(&x, &w, spec);
            assert_eq!(got.dim(), want.dim());
            for (a, b) in got.iter().zip(want.iter()) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }
}
