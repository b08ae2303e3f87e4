//! Average pooling (PyTorch's `AvgPool2d`, floor mode, `count_include_pad=True`) and
//! global average pooling, with their gradients.

use ndarray::{Array2, Array4, ArrayRef, Ix2, Ix4};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// A checked pooling window: kernel, stride and padding, each (rows, columns).
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
}

impl Window {
    /// Checks a window of at least 1×1, strides of at least 1, and padding at most half
    /// the kernel (as PyTorch).
    pub(super) fn new(
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Window> {
        super::pool::check_window(kernel, stride)?;
        if 2 * padding.0 > kernel.0 || 2 * padding.1 > kernel.1 {
            return Err(Error::invalid(
                "padding",
                format!("{padding:?}"),
                format!("at most half the {}×{} kernel", kernel.0, kernel.1),
            ));
        }
        Ok(Window {
            kernel,
            stride,
            padding,
        })
    }

    /// The output size over an `h × w` plane (floor mode).
    pub(super) fn output_size(&self, (h, w): (usize, usize)) -> Result<(usize, usize)> {
        let (ph, pw) = (h + 2 * self.padding.0, w + 2 * self.padding.1);
        if self.kernel.0 > ph || self.kernel.1 > pw {
            return Err(Error::bad_shape(
                "average-pooling input",
                &[h, w],
                format!(
                    "a {}×{} window does not fit the {h}×{w} input padded by {:?}",
                    self.kernel.0, self.kernel.1, self.padding
                ),
            ));
        }
        Ok((
            (ph - self.kernel.0) / self.stride.0 + 1,
            (pw - self.kernel.1) / self.stride.1 + 1,
        ))
    }

    /// For output position `o` along one axis, the input range the window covers
    /// (clipped to the input: the padding contributes zeros).
    fn range(o: usize, stride: usize, pad: usize, kernel: usize, len: usize) -> (usize, usize) {
        let start = (o * stride) as isize - pad as isize;
        let end = (start + kernel as isize).min(len as isize);
        (start.max(0) as usize, end.max(0) as usize)
    }
}

/// The average-pooled batch `[n, c, oh, ow]`.
pub(super) fn forward(x: &ArrayRef<f32, Ix4>, win: Window) -> Result<Array4<f32>> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = win.output_size((h, w))?;
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let scale = 1.0 / (win.kernel.0 * win.kernel.1) as f32;
    let mut out = vec![0.0f32; n * c * oh * ow];
    if oh * ow > 0 && h * w > 0 {
        out.par_chunks_mut(oh * ow)
            .zip(xs.par_chunks(h * w))
            .for_each(|(out, plane)| {
                for oi in 0..oh {
                    let (y0, y1) = Window::range(oi, win.stride.0, win.padding.0, win.kernel.0, h);
                    for oj in 0..ow {
                        let (x0, x1) =
                            Window::range(oj, win.stride.1, win.padding.1, win.kernel.1, w);
                        let mut s = 0.0f32;
                        for row in plane[y0 * w..y1 * w].chunks_exact(w) {
                            s += row[x0..x1].iter().sum::<f32>();
                        }
                        out[oi * ow + oj] = s * scale;
                    }
                }
            });
    }
    Ok(Array4::from_shape_vec((n, c, oh, ow), out).expect("n·c·oh·ow"))
}

/// The gradient with respect to the input `[n, c, h, w]` (`shape`): each output's
/// gradient spread evenly over its window (the padding's share is dropped).
pub(super) fn backward(
    dy: &ArrayRef<f32, Ix4>,
    win: Window,
    shape: (usize, usize, usize, usize),
) -> Array4<f32> {
    let (_, _, h, w) = shape;
    let (_, _, oh, ow) = dy.dim();
    let dy = dy.as_standard_layout();
    let dys = dy.as_slice().expect("standard layout");
    let scale = 1.0 / (win.kernel.0 * win.kernel.1) as f32;
    let mut dx = Array4::<f32>::zeros(shape);
    if let Some(dxs) = dx.as_slice_mut().filter(|_| oh * ow > 0 && h * w > 0) {
        dxs.par_chunks_mut(h * w)
            .zip(dys.par_chunks(oh * ow))
            .for_each(|(plane, g)| {
                for oi in 0..oh {
                    let (y0, y1) = Window::range(oi, win.stride.0, win.padding.0, win.kernel.0, h);
                    for oj in 0..ow {
                        let (x0, x1) =
                            Window::range(oj, win.stride.1, win.padding.1, win.kernel.1, w);
                        let gi = g[oi * ow + oj] * scale;
                        for row in plane[y0 * w..y1 * w].chunks_exact_mut(w) {
                            row[x0..x1].iter_mut().for_each(|v| *v += gi);
                        }
                    }
                }
            });
    }
    dx
}

/// The mean of each channel's plane: `[n, c, h, w]` → `[n, c]`.
pub(super) fn global_forward(x: &ArrayRef<f32, Ix4>) -> Array2<f32> {
    let (n, c, h, w) = x.dim();
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let scale = 1.0 / (h * w).max(1) as f32;
    let out: Vec<f32> = if h * w == 0 {
        vec![0.0; n * c]
    } else {
        xs.chunks_exact(h * w)
            .map(|p| p.iter().sum::<f32>() * scale)
            .collect()
    };
    Array2::from_shape_vec((n, c), out).expect("n·c")
}

/// The gradient of [`global_forward`] with respect to its input of `shape`.
pub(super) fn global_backward(
    dy: &ArrayRef<f32, Ix2>,
    shape: (usize, usize, usize, usize),
) -> Array4<f32> {
    let (_, _, h, w) = shape;
    let scale = 1.0 / (h * w).max(1) as f32;
    let mut dx = Array4::<f32>::zeros(shape);
    for ((i, ch), &g) in dy.indexed_iter() {
        dx.slice_mut(ndarray::s![i, ch, .., ..]).fill(g * scale);
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `F.avg_pool2d(torch.arange(1., 17.).view(1, 1, 4, 4), 3, 2, 1)`: the windows'
    /// sums 14, 30, 57, 99 (by hand), each divided by 9, padding zeros counted.
    #[test]
    fn matches_pytorch_with_padding_counted() {
        let x = Array4::from_shape_fn((1, 1, 4, 4), |(_, _, i, j)| (i * 4 + j + 1) as f32);
        let win = Window::new((3, 3), (2, 2), (1, 1)).unwrap();
        let y = forward(&x, win).unwrap();
        let want = [14.0 / 9.0, 30.0 / 9.0, 57.0 / 9.0, 99.0 / 9.0];
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // Without padding, floor mode drops the last row and column: one window.
        let y = forward(&x, Window::new((3, 3), (2, 2), (0, 0)).unwrap()).unwrap();
        assert_eq!(y.as_slice().unwrap(), &[6.0]);
    }

    /// `⟨forward(x), dy⟩ = ⟨x, backward(dy)⟩`: the backward pass is the adjoint.
    #[test]
    fn backward_is_the_adjoint_of_forward() {
        let x = Array4::from_shape_fn((2, 3, 5, 6), |(a, b, c, d)| {
            ((a * 97 + b * 31 + c * 7 + d) as f32 * 0.37).sin()
        });
        for (k, s, p) in [
            ((2, 2), (2, 2), (0, 0)),
            ((3, 2), (1, 2), (1, 1)),
            ((5, 6), (1, 1), (2, 3)),
        ] {
            let win = Window::new(k, s, p).unwrap();
            let y = forward(&x, win).unwrap();
            let dy = y.mapv(|v| (v * 3.1).cos());
            let dx = backward(&dy, win, x.dim());
            let lhs: f32 = (&y * &dy).sum();
            let rhs: f32 = (&x * &dx).sum();
            assert!(
                (lhs - rhs).abs() < 1e-4,
                "{k:?} {s:?} {p:?}: {lhs} vs {rhs}"
            );
        }
        let y = global_forward(&x);
        assert!((y[[1, 2]] - x.slice(ndarray::s![1, 2, .., ..]).mean().unwrap()).abs() < 1e-6);
        let dy = y.mapv(|v| v + 0.5);
        let dx = global_backward(&dy, x.dim());
        assert!(((&y * &dy).sum() - (&x * &dx).sum()).abs() < 1e-4);
    }

    #[test]
    fn bad_windows_are_errors() {
        let x = Array4::<f32>::zeros((1, 1, 3, 3));
        assert!(matches!(
            Window::new((3, 3), (1, 1), (2, 1)),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            Window::new((0, 1), (1, 1), (0, 0)),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            Window::new((1, 1), (0, 1), (0, 0)),
            Err(Error::InvalidParameter { .. })
        ));
        let win = Window::new((4, 4), (1, 1), (0, 0)).unwrap();
        assert!(matches!(forward(&x, win), Err(Error::BadShape { .. })));
        let win = Window::new((4, 4), (1, 1), (1, 1)).unwrap();
        assert_eq!(forward(&x, win).unwrap().shape(), &[1, 1, 2, 2]);
    }
}
