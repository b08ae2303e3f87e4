//! 2-D max pooling (PyTorch's `MaxPool2d` without padding, floor mode) and its
//! gradient, which goes to the first maximum of each window in row-major order.

use ndarray::{Array4, ArrayRef, Ix4};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The output size of a `kernel` window moved by `stride` over an `h × w` plane;
/// windows that do not fit are dropped.
pub(super) fn output_size(
    (h, w): (usize, usize),
    kernel: (usize, usize),
    stride: (usize, usize),
) -> Result<(usize, usize)> {
    check_window(kernel, stride)?;
    if kernel.0 > h || kernel.1 > w {
        return Err(Error::bad_shape(
            "max-pooling input",
            &[h, w],
            format!(
                "a {}×{} window does not fit the {h}×{w} input",
                kernel.0, kernel.1
            ),
        ));
    }
    Ok(((h - kernel.0) / stride.0 + 1, (w - kernel.1) / stride.1 + 1))
}

/// The pooled batch `[n, c, oh, ow]` and, for each output, the flat index in its
/// `h × w` input plane of the maximum that produced it.
pub(super) fn forward(
    x: &ArrayRef<f32, Ix4>,
    kernel: (usize, usize),
    stride: (usize, usize),
) -> Result<(Array4<f32>, Vec<u32>)> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = output_size((h, w), kernel, stride)?;
    if h * w > u32::MAX as usize {
        return Err(Error::bad_shape(
            "max-pooling input",
            &[h, w],
            "planes up to 2³² elements",
        ));
    }
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let mut out = vec![0.0f32; n * c * oh * ow];
    let mut arg = vec![0u32; out.len()];
    out.par_chunks_mut(oh * ow)
        .zip(arg.par_chunks_mut(oh * ow))
        .zip(xs.par_chunks(h * w))
        .for_each(|((out, arg), plane)| {
            for oi in 0..oh {
                for oj in 0..ow {
                    let (y0, x0) = (oi * stride.0, oj * stride.1);
                    let mut best = (y0 * w + x0, plane[y0 * w + x0]);
                    for yi in y0..y0 + kernel.0 {
                        let row = &plane[yi * w..(yi + 1) * w];
                        for (xj, &v) in row.iter().enumerate().skip(x0).take(kernel.1) {
                            // A NaN wins and stays, as in PyTorch.
                            if v > best.1 || (v.is_nan() && !best.1.is_nan()) {
                                best = (yi * w + xj, v);
                            }
                        }
                    }
                    out[oi * ow + oj] = best.1;
                    arg[oi * ow + oj] = best.0 as u32;
                }
            }
        });
    Ok((
        Array4::from_shape_vec((n, c, oh, ow), out).expect("n·c·oh·ow"),
        arg,
    ))
}

/// The pooled batch `[n, c, oh, ow]` without the positions of the maxima (inference):
/// the same values as [`forward`], a 2×2 window moved by 2 on a fast path.
pub(super) fn infer(
    x: &ArrayRef<f32, Ix4>,
    kernel: (usize, usize),
    stride: (usize, usize),
) -> Result<Array4<f32>> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = output_size((h, w), kernel, stride)?;
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let mut out = vec![0.0f32; n * c * oh * ow];
    if !out.is_empty() {
        // Whole planes per task, enough of them to outweigh the scheduling.
        let planes_per_task = (1 << 14) / (h * w) + 1;
        out.par_chunks_mut(oh * ow)
            .zip(xs.par_chunks(h * w))
            .with_min_len(planes_per_task)
            .for_each(|(out, plane)| {
                if kernel == (2, 2) && stride == (2, 2) {
                    pool_2x2(plane, w, out, ow);
                } else {
                    pool_plane(plane, w, kernel, stride, out, ow);
                }
            });
    }
    Ok(Array4::from_shape_vec((n, c, oh, ow), out).expect("n·c·oh·ow"))
}

/// `a` or `b`, whichever is larger, `a` on a tie; a NaN wins and stays (as [`forward`]
/// scans a window).
#[inline]
fn max_first(a: f32, b: f32) -> f32 {
    if b > a || (b.is_nan() && !a.is_nan()) {
        b
    } else {
        a
    }
}

/// Max pooling of one `? × w` plane into `out` (`? × ow`), any window.
fn pool_plane(
    plane: &[f32],
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    out: &mut [f32],
    ow: usize,
) {
    for (oi, orow) in out.chunks_exact_mut(ow).enumerate() {
        let rows = &plane[oi * stride.0 * w..][..kernel.0 * w];
        for (oj, o) in orow.iter_mut().enumerate() {
            let x0 = oj * stride.1;
            *o = rows
                .chunks_exact(w)
                .flat_map(|row| &row[x0..x0 + kernel.1])
                .fold(rows[x0], |best, &v| max_first(best, v));
        }
    }
}

/// [`pool_plane`] for a 2×2 window moved by 2, in the same scan order.
fn pool_2x2(plane: &[f32], w: usize, out: &mut [f32], ow: usize) {
    for (oi, orow) in out.chunks_exact_mut(ow).enumerate() {
        let (r0, r1) = plane[2 * oi * w..][..2 * w].split_at(w);
        for ((o, a), b) in orow
            .iter_mut()
            .zip(r0.chunks_exact(2))
            .zip(r1.chunks_exact(2))
        {
            *o = max_first(max_first(max_first(a[0], a[1]), b[0]), b[1]);
        }
    }
}

/// The gradient with respect to the input `[n, c, h, w]` (`shape`): each output's
/// gradient added at the position of its maximum.
pub(super) fn backward(
    dy: &ArrayRef<f32, Ix4>,
    arg: &[u32],
    shape: (usize, usize, usize, usize),
) -> Array4<f32> {
    let (_, _, h, w) = shape;
    let (_, _, oh, ow) = dy.dim();
    let dy = dy.as_standard_layout();
    let dys = dy.as_slice().expect("standard layout");
    let mut dx = Array4::<f32>::zeros(shape);
    if let Some(dxs) = dx.as_slice_mut().filter(|_| oh * ow > 0) {
        dxs.par_chunks_mut(h * w)
            .zip(dys.par_chunks(oh * ow))
            .zip(arg.par_chunks(oh * ow))
            .for_each(|((plane, g), arg)| {
                for (&gi, &a) in g.iter().zip(arg) {
                    plane[a as usize] += gi;
                }
            });
    }
    dx
}

/// Checks a pooling window: kernel and stride at least 1×1 (max and average pooling).
pub(super) fn check_window(kernel: (usize, usize), stride: (usize, usize)) -> Result<()> {
    if kernel.0 == 0 || kernel.1 == 0 {
        return Err(Error::invalid(
            "kernel",
            format!("{kernel:?}"),
            "a pooling window of at least 1×1",
        ));
    }
    if stride.0 == 0 || stride.1 == 0 {
        return Err(Error::invalid(
            "stride",
            format!("{stride:?}"),
            "at least 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn nan_propagates_wherever_it_is_in_the_window() {
        for at in 0..4 {
            let mut v = vec![1.0f32, 2.0, 3.0, 4.0];
            v[at] = f32::NAN;
            let x = Array4::from_shape_vec((1, 1, 2, 2), v).unwrap();
            let (y, arg) = forward(&x, (2, 2), (2, 2)).unwrap();
            assert!(y[[0, 0, 0, 0]].is_nan(), "NaN at {at}");
            assert_eq!(arg, vec![at as u32]);
        }
    }

    #[test]
    fn pools_in_floor_mode_with_first_maximum_on_ties() {
        // 1 × 1 × 3 × 5, kernel 2×2, stride 2: one row of two windows (the last row and
        // column are dropped).
        let x = Array4::from_shape_vec(
            (1, 1, 3, 5),
            vec![
                1.0, 3.0, 2.0, 2.0, 9.0, //
                3.0, 0.0, 1.0, 2.0, 9.0, //
                9.0, 9.0, 9.0, 9.0, 9.0,
            ],
        )
        .unwrap();
        let (y, arg) = forward(&x, (2, 2), (2, 2)).unwrap();
        assert_eq!(y.shape(), &[1, 1, 1, 2]);
        assert_eq!(y.as_slice().unwrap(), &[3.0, 2.0]);
        assert_eq!(arg, vec![1, 2], "first maximum in row-major order");
        let dy = Array4::from_shape_vec((1, 1, 1, 2), vec![5.0, 7.0]).unwrap();
        let dx = backward(&dy, &arg, x.dim());
        let mut want = [0.0; 15];
        want[1] = 5.0;
        want[2] = 7.0;
        assert_eq!(dx.as_slice().unwrap(), &want[..]);
    }

    #[test]
    fn overlapping_windows_add_their_gradients() {
        let x = Array4::from_shape_vec((1, 1, 1, 3), vec![0.0, 5.0, 1.0]).unwrap();
        let (y, arg) = forward(&x, (1, 2), (1, 1)).unwrap();
        assert_eq!(y.as_slice().unwrap(), &[5.0, 5.0]);
        let dx = backward(&Array4::ones((1, 1, 1, 2)), &arg, x.dim());
        assert_eq!(dx.as_slice().unwrap(), &[0.0, 2.0, 0.0]);
    }

    #[test]
    fn bad_windows_are_errors() {
        let x = Array4::<f32>::zeros((1, 1, 3, 3));
        assert!(matches!(
            forward(&x, (4, 1), (1, 1)),
            Err(Error::BadShape { .. })
        ));
        assert!(matches!(
            forward(&x, (0, 1), (1, 1)),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            forward(&x, (1, 1), (1, 0)),
            Err(Error::InvalidParameter { .. })
        ));
    }

    /// A batch of small values with NaNs, zeros of both signs and many ties.
    fn batch() -> impl Strategy<Value = Array4<f32>> {
        (1usize..3, 1usize..4, 2usize..9, 2usize..9).prop_flat_map(|dims| {
            let value = prop_oneof![Just(f32::NAN), Just(-0.0f32), (-3i8..3).prop_map(f32::from)];
            proptest::collection::vec(value, dims.0 * dims.1 * dims.2 * dims.3)
                .prop_map(move |v| Array4::from_shape_vec(dims, v).unwrap())
        })
    }

    proptest! {
        /// Inference pools to the same values as the training pass, NaNs and ties
        /// included, for any window (the 2×2 fast path among them).
        #[test]
        fn inference_equals_the_training_pass(
            x in batch(),
            window in (1usize..3, 1usize..3, 1usize..3, 1usize..3),
            square in proptest::bool::ANY,
        ) {
            let (kh, kw, sh, sw) = window;
            let (kernel, stride) = if square { ((2, 2), (2, 2)) } else { ((kh, kw), (sh, sw)) };
            let (want, _) = forward(&x, kernel, stride).unwrap();
            let got = infer(&x, kernel, stride).unwrap();
            let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}
