//! 2-D convolution by im2col and matrix products (PyTorch's `Conv2d` semantics:
//! cross-correlation, NCHW input, `[out, in / groups, kh, kw]` weights), and by a direct
//! kernel when the convolution is depthwise (`groups = in`, see [`depthwise`]).

use ndarray::{
    Array1, Array2, Array4, ArrayRef, ArrayView2, ArrayViewMut2, CowArray, Ix1, Ix2, Ix4, s,
};
use rayon::prelude::*;

use super::im2col::{Geometry, col2im, columns};
use crate::error::{Error, Result};
use crate::kernels::matmul::matmul_into;

mod depthwise;

/// Images per parallel task in the backward pass: fixed, so that sums over a batch are
/// added in the same order whatever the number of threads.
pub(super) const CHUNK: usize = 8;

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
        let padded = |n: usize, p: usize| p.checked_mul(2).and_then(|p2| n.checked_add(p2));
        let (Some(ph), Some(pw)) = (padded(h, self.padding.0), padded(w, self.padding.1)) else {
            return Err(Error::invalid(
                "padding",
                format!("{:?}", self.padding),
                "a padding the input size can add without overflow",
            ));
        };
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
/// A depthwise convolution (`groups = in`, `out = m·in` for a channel multiplier
/// `1 ≤ m < 32`; this includes a convolution of one input channel into fewer than 32)
/// runs a direct kernel, forward and backward, without an im2col product; every other
/// convolution runs im2col and one matrix product per image and group, straight on the
/// input (no copy) for a pointwise 1×1 convolution with stride 1 and no padding.
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
    let geo = Geometry::new((c, h, w), weight.dim(), spec)?;
    if let Some(b) = bias {
        crate::tensor::check_same_shape(&[geo.o], b.shape(), || "convolution bias".into())?;
    }
    let bias: Option<Vec<f32>> = bias.map(|b| b.iter().copied().collect());
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let mut out = vec![0.0f32; n * geo.out_len()];
    if runs_direct(&geo) {
        let wt = weight.as_standard_layout();
        let ws = wt.as_slice().expect("standard layout");
        depthwise::forward(xs, ws, bias.as_deref(), &geo, &mut out);
    } else {
        forward_im2col(xs, weight, bias.as_deref(), &geo, &mut out);
    }
    Ok(Array4::from_shape_vec((n, geo.o, geo.oh, geo.ow), out).expect("n × out_len"))
}

/// Output channels per group from which a convolution with one input channel per group
/// runs im2col and a matrix product rather than the direct kernel: the product's rows
/// are the group's output channels, and from 32 of them it is as fast or faster
/// (measured for 1 → 32 channels, 3×3 on 28×28: 0.010 ms against 0.014 ms at batch 1,
/// 0.77 against 0.91 ms at batch 64; 1 → 20 channels 5×5, LeNet-5's first layer, ran
/// faster on the direct kernel at batch 1, 64 and 256).
const DIRECT_MAX_OUTPUTS: usize = 32;

/// Whether the direct depthwise kernel runs: one input channel per group (a depthwise
/// convolution, or one with a single input channel) and fewer than
/// [`DIRECT_MAX_OUTPUTS`] output channels per group.
fn runs_direct(geo: &Geometry) -> bool {
    geo.cg == 1 && geo.groups == geo.c && geo.og < DIRECT_MAX_OUTPUTS
}

/// [`conv2d`] by im2col and one matrix product per image and group, into `out`.
fn forward_im2col(
    xs: &[f32],
    weight: &ArrayRef<f32, Ix4>,
    bias: Option<&[f32]>,
    geo: &Geometry,
    out: &mut [f32],
) {
    let geo = *geo;
    let wm = weight_matrix(weight, &geo);
    let cols_len = if geo.is_pointwise() {
        0
    } else {
        geo.rows() * geo.positions()
    };
    out.par_chunks_mut(geo.out_len())
        .zip(xs.par_chunks(geo.image_len()))
        .for_each_init(
            || vec![0.0f32; cols_len],
            |cols, (y, xi)| {
                for gi in 0..geo.groups {
                    let xg = &xi[gi * geo.group_len()..][..geo.group_len()];
                    let b = columns(xg, &geo, cols);
                    let a = wm.slice(s![gi * geo.og..(gi + 1) * geo.og, ..]);
                    let b = ArrayView2::from_shape((geo.rows(), geo.positions()), b)
                        .expect("rows × positions");
                    let yg = &mut y[gi * geo.og * geo.positions()..][..geo.og * geo.positions()];
                    let mut yg = ArrayViewMut2::from_shape((geo.og, geo.positions()), yg)
                        .expect("og × positions");
                    matmul_into(a, b, false, yg.view_mut());
                }
                if let Some(b) = bias {
                    for (plane, &bv) in y.chunks_exact_mut(geo.positions()).zip(b) {
                        plane.iter_mut().for_each(|v| *v += bv);
                    }
                }
            },
        );
}

/// The weight `[o, cg, kh, kw]` as the matrix `[o, cg·kh·kw]` that multiplies columns.
fn weight_matrix<'a>(weight: &'a ArrayRef<f32, Ix4>, geo: &Geometry) -> CowArray<'a, f32, Ix2> {
    weight
        .to_shape((geo.o, geo.rows()))
        .expect("o × cg·kh·kw elements")
}

/// Gradients of a convolution (see [`conv2d_backward`]).
pub(crate) struct ConvGrads {
    /// `[o, cg, kh, kw]`.
    pub weight: Array4<f32>,
    /// `[o]`.
    pub bias: Array1<f32>,
    /// `[n, c, h, w]`, when asked for.
    pub input: Option<Array4<f32>>,
}

/// Backpropagation through [`conv2d`] by im2col: `dW = dY·colsᵀ`, `db = Σ dY` and (with
/// `need_input`) `dX = col2im(Wᵀ·dY)`.
///
/// The batch is cut into chunks of [`CHUNK`] images, each accumulating its own `dW` in
/// parallel; the chunks' sums are then added in order, so the result does not depend
/// on the number of threads.
pub(crate) fn conv2d_backward(
    x: &ArrayRef<f32, Ix4>,
    weight: &ArrayRef<f32, Ix4>,
    dy: &ArrayRef<f32, Ix4>,
    spec: ConvSpec,
    need_input: bool,
) -> Result<ConvGrads> {
    let (n, c, h, w) = x.dim();
    let geo = Geometry::new((c, h, w), weight.dim(), spec)?;
    crate::tensor::check_same_shape(&[n, geo.o, geo.oh, geo.ow], dy.shape(), || {
        "gradient of the convolution output".into()
    })?;
    let x = x.as_standard_layout();
    let dy = dy.as_standard_layout();
    let (xs, dys) = (
        x.as_slice().expect("standard"),
        dy.as_slice().expect("standard"),
    );
    if runs_direct(&geo) {
        let wt = weight.as_standard_layout();
        let ws = wt.as_slice().expect("standard layout");
        let mut dx = need_input.then(|| vec![0.0f32; n * geo.image_len()]);
        let (dw, db) = depthwise::backward(xs, ws, dys, &geo, dx.as_deref_mut());
        return Ok(ConvGrads {
            weight: Array4::from_shape_vec((geo.o, 1, geo.kh, geo.kw), dw).expect("o × kh·kw"),
            bias: Array1::from(db),
            input: dx.map(|dx| Array4::from_shape_vec((n, c, h, w), dx).expect("n × c·h·w")),
        });
    }
    Ok(backward_im2col(xs, dys, weight, &geo, need_input))
}

/// [`conv2d_backward`] by im2col and matrix products.
fn backward_im2col(
    xs: &[f32],
    dys: &[f32],
    weight: &ArrayRef<f32, Ix4>,
    geo: &Geometry,
    need_input: bool,
) -> ConvGrads {
    let geo = *geo;
    let n = xs.len() / geo.image_len();
    let wm = weight_matrix(weight, &geo);
    let work = |xc: &[f32], dyc: &[f32], mut dxc: Option<&mut [f32]>| {
        let (rows, positions) = (geo.rows(), geo.positions());
        let mut dw = Array2::<f32>::zeros((geo.o, rows));
        let mut db = vec![0.0f32; geo.o];
        let pointwise = geo.is_pointwise();
        let mut cols = vec![0.0f32; if pointwise { 0 } else { rows * positions }];
        let need_dcols = dxc.is_some() && !pointwise;
        let mut dcols = vec![0.0f32; if need_dcols { rows * positions } else { 0 }];
        let images = xc
            .chunks_exact(geo.image_len())
            .zip(dyc.chunks_exact(geo.out_len()));
        for (i, (xi, dyi)) in images.enumerate() {
            for gi in 0..geo.groups {
                let group = gi * geo.og..(gi + 1) * geo.og;
                let xg = &xi[gi * geo.group_len()..][..geo.group_len()];
                let cv = ArrayView2::from_shape((rows, positions), columns(xg, &geo, &mut cols))
                    .expect("cols");
                let dyg = &dyi[gi * geo.og * positions..][..geo.og * positions];
                let dyg = ArrayView2::from_shape((geo.og, positions), dyg).expect("dY");
                let mut dwg = dw.slice_mut(s![group.clone(), ..]);
                matmul_into(dyg, cv.t(), true, dwg.view_mut());
                if let Some(dx) = dxc.as_deref_mut() {
                    let start = i * geo.image_len() + gi * geo.group_len();
                    let dxg = &mut dx[start..start + geo.group_len()];
                    // Pointwise: the columns are the input, so `Wᵀ·dY` is its gradient.
                    let dst = if pointwise {
                        &mut dxg[..]
                    } else {
                        &mut dcols[..]
                    };
                    let mut dc = ArrayViewMut2::from_shape((rows, positions), dst).expect("dcols");
                    matmul_into(wm.slice(s![group, ..]).t(), dyg, false, dc.view_mut());
                    if !pointwise {
                        col2im(&dcols, &geo, dxg);
                    }
                }
            }
            for (b, plane) in db.iter_mut().zip(dyi.chunks_exact(positions)) {
                *b += plane.iter().sum::<f32>();
            }
        }
        (dw, db)
    };
    let (xl, yl) = (CHUNK * geo.image_len(), CHUNK * geo.out_len());
    let mut dx = need_input.then(|| vec![0.0f32; n * geo.image_len()]);
    let partials: Vec<(Array2<f32>, Vec<f32>)> = match dx.as_mut() {
        Some(dx) => xs
            .par_chunks(xl)
            .zip(dys.par_chunks(yl))
            .zip(dx.par_chunks_mut(xl))
            .map(|((xc, dyc), dxc)| work(xc, dyc, Some(dxc)))
            .collect(),
        None => xs
            .par_chunks(xl)
            .zip(dys.par_chunks(yl))
            .map(|(xc, dyc)| work(xc, dyc, None))
            .collect(),
    };
    let mut dw = Array2::<f32>::zeros((geo.o, geo.rows()));
    let mut db = Array1::<f32>::zeros(geo.o);
    for (pw, pb) in &partials {
        dw += pw;
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    ConvGrads {
        weight: dw
            .into_shape_with_order((geo.o, geo.cg, geo.kh, geo.kw))
            .expect("o × cg·kh·kw"),
        bias: db,
        input: dx
            .map(|dx| Array4::from_shape_vec((n, geo.c, geo.h, geo.w), dx).expect("n × c·h·w")),
    }
}

/// `‖X_j‖₂` over every image and output position for each row `j` of the im2col
/// columns (`[cg·kh·kw]`: the weight's flattened input dimension). With several
/// groups, the groups' rows are pooled: `‖X_j‖₂² = Σ_g ‖X_{g,j}‖₂²`.
pub(super) fn im2col_row_norms(
    x: &ArrayRef<f32, Ix4>,
    weight_dim: (usize, usize, usize, usize),
    spec: ConvSpec,
) -> Result<Array1<f32>> {
    let (_, c, h, w) = x.dim();
    let geo = Geometry::new((c, h, w), weight_dim, spec)?;
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard");
    let partials: Vec<Vec<f64>> = xs
        .par_chunks(CHUNK * geo.image_len())
        .map(|xc| {
            let mut sums = vec![0.0f64; geo.rows()];
            let mut cols = vec![0.0f32; geo.rows() * geo.positions()];
            for xg in xc.chunks_exact(geo.group_len()) {
                let cols = columns(xg, &geo, &mut cols);
                for (s, row) in sums.iter_mut().zip(cols.chunks_exact(geo.positions())) {
                    *s += row.iter().map(|v| v * v).sum::<f32>() as f64;
                }
            }
            sums
        })
        .collect();
    let mut total = vec![0.0f64; geo.rows()];
    for p in &partials {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    Ok(total.into_iter().map(|s| s.sqrt() as f32).collect())
}

/// Adds the im2col columns of every image and group of `x` to `stats` as rows
/// (`[cg·kh·kw]` values each: the weight's flattened input dimension). With several
/// groups, the groups' columns are pooled, as in [`im2col_row_norms`].
pub(super) fn im2col_observe(
    x: &ArrayRef<f32, Ix4>,
    weight_dim: (usize, usize, usize, usize),
    spec: ConvSpec,
    stats: &mut crate::calib::LayerStats,
) -> Result<()> {
    let (_, c, h, w) = x.dim();
    let geo = Geometry::new((c, h, w), weight_dim, spec)?;
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard");
    let mut cols = vec![0.0f32; geo.rows() * geo.positions()];
    for xg in xs.chunks_exact(geo.group_len()) {
        let cols = columns(xg, &geo, &mut cols);
        let view = ArrayView2::from_shape((geo.rows(), geo.positions()), cols)?;
        stats.observe_view(view.t())?;
    }
    Ok(())
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
            (1, (1, 1), (0, 0), (1, 1)),
            (2, (1, 1), (0, 0), (1, 1)),
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

    fn dot(a: &Array4<f32>, b: &Array4<f32>) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// The convolution is bilinear, so `⟨dW, ΔW⟩ = ⟨conv(x, ΔW), dY⟩` and
    /// `⟨dX, ΔX⟩ = ⟨conv(ΔX, W), dY⟩` exactly; the batch spans several chunks.
    #[test]
    fn backward_is_the_adjoint_of_forward() {
        for (groups, stride, padding, k) in [
            (1, (1, 1), (0, 0), (3, 3)),
            (2, (2, 2), (1, 1), (3, 3)),
            (4, (1, 2), (2, 0), (2, 3)),
            (1, (1, 1), (0, 0), (1, 1)),
        ] {
            let spec = ConvSpec::new()
                .with_groups(groups)
                .with_stride(stride.0, stride.1)
                .with_padding(padding.0, padding.1);
            let wave = |s: f32| {
                move |(a, b, c, d): (usize, usize, usize, usize)| {
                    ((a * 97 + b * 31 + c * 7 + d) as f32 * s).sin()
                }
            };
            let x = Array4::from_shape_fn((CHUNK + 3, 4, 7, 6), wave(0.37));
            let dx_dir = Array4::from_shape_fn(x.dim(), wave(0.53));
            let w = Array4::from_shape_fn((8, 4 / groups, k.0, k.1), wave(0.71));
            let dw_dir = Array4::from_shape_fn(w.dim(), wave(0.29));
            let y = conv2d(&x, &w, None, spec).unwrap();
            let dy = Array4::from_shape_fn(y.dim(), wave(0.43));
            let g = conv2d_backward(&x, &w, &dy, spec, true).unwrap();
            let dx = g.input.unwrap();
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-3 * (1.0 + a.abs().max(b.abs()));
            let (lhs, rhs) = (
                dot(&g.weight, &dw_dir),
                dot(&conv2d(&x, &dw_dir, None, spec).unwrap(), &dy),
            );
            assert!(close(lhs, rhs), "dW: {lhs} vs {rhs}");
            let (lhs, rhs) = (
                dot(&dx, &dx_dir),
                dot(&conv2d(&dx_dir, &w, None, spec).unwrap(), &dy),
            );
            assert!(close(lhs, rhs), "dX: {lhs} vs {rhs}");
            for (f, &b) in g.bias.iter().enumerate() {
                let want: f32 = dy.slice(s![.., f, .., ..]).sum();
                assert!(close(b, want), "db[{f}]: {b} vs {want}");
            }
            let without = conv2d_backward(&x, &w, &dy, spec, false).unwrap();
            assert!(without.input.is_none());
            assert_eq!(without.weight, g.weight);
        }
    }

    /// The direct kernel takes depthwise convolutions and LeNet-5's first layer (1 → 20,
    /// 5×5); from 32 output channels per group the matrix product is faster.
    #[test]
    fn the_direct_kernel_runs_below_32_outputs_per_group() {
        let direct = |c, o, k, groups| {
            let spec = ConvSpec::new().with_groups(groups);
            runs_direct(&Geometry::new((c, 28, 28), (o, c / groups, k, k), spec).unwrap())
        };
        assert!(direct(32, 32, 3, 32));
        assert!(direct(32, 64, 3, 32));
        assert!(direct(1, 20, 5, 1));
        assert!(!direct(1, 32, 3, 1));
        assert!(!direct(4, 128, 3, 4));
        assert!(!direct(32, 64, 3, 1));
    }

    /// A pointwise convolution's columns are its input itself, not a copy.
    #[test]
    fn pointwise_columns_are_the_input() {
        let geo = Geometry::new((8, 5, 7), (4, 8, 1, 1), ConvSpec::new()).unwrap();
        let x: Vec<f32> = (0..geo.group_len()).map(|i| i as f32).collect();
        let mut cols = Vec::new();
        assert!(std::ptr::eq(columns(&x, &geo, &mut cols), &x[..]));
        for spec in [
            ConvSpec::new().with_padding(1, 0),
            ConvSpec::new().with_stride(1, 2),
        ] {
            let geo = Geometry::new((8, 5, 7), (4, 8, 1, 1), spec).unwrap();
            assert!(!geo.is_pointwise());
        }
    }

    #[test]
    fn huge_padding_is_an_error() {
        let spec = ConvSpec::new().with_padding(usize::MAX / 2, 0);
        assert!(spec.output_size((3, 3), (1, 1)).is_err());
    }

    #[test]
    fn empty_dimensions_are_errors() {
        let w = Array4::<f32>::zeros((2, 1, 1, 1));
        for x in [
            Array4::<f32>::zeros((1, 0, 3, 3)),
            Array4::zeros((1, 1, 0, 3)),
        ] {
            let spec = ConvSpec::new().with_padding(1, 1);
            assert!(conv2d(&x, &w, None, spec).is_err());
        }
    }
}
