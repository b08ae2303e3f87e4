//! The general f32 matrix product `C = A·B` (or `C += A·B`) of the dense yardstick and
//! of training: faer's packed, register-blocked GEMM (AVX-512 or AVX2 micro-kernels
//! chosen at run time by faer), on both cores.
//!
//! Results never depend on the number of threads: the output is cut into blocks whose
//! size depends only on the shape, each block is one sequential faer call (which sums
//! every entry over the inputs in a fixed order, in chunks of the reduction dimension
//! taken in turn), and rayon only decides which thread runs which block. The reduction
//! dimension is never split.

use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// Multiply-adds below which one call does the whole product.
const SERIAL_WORK: usize = 1 << 20;

/// Output blocks of the parallel product (at most; fewer when the side is short).
const BLOCKS: usize = 16;

/// Smallest side of an output block (a multiple of the micro-kernels' tiles).
const MIN_SIDE: usize = 64;

/// Runs `f` on a faer view of `a`: zero-copy when `a` is contiguous row- or
/// column-major (a transposed view), else on a row-major copy.
pub(crate) fn with_view<T: Copy, R>(a: ArrayView2<'_, T>, f: impl FnOnce(MatRef<'_, T>) -> R) -> R {
    let (m, n) = a.dim();
    if let Some(s) = a.as_slice() {
        return f(MatRef::from_row_major_slice(s, m, n));
    }
    if let Some(s) = a.t().as_slice() {
        return f(MatRef::from_column_major_slice(s, m, n));
    }
    let a = a.as_standard_layout();
    f(MatRef::from_row_major_slice(
        a.as_slice().expect("standard layout"),
        m,
        n,
    ))
}

/// `c = a·b`, or `c += a·b` when `accumulate`, for `a` `[m, k]`, `b` `[k, n]` and `c`
/// `[m, n]` (shapes checked by the caller), on both cores when the product is large.
pub(crate) fn matmul_into(
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    accumulate: bool,
    mut c: ArrayViewMut2<'_, f32>,
) {
    assert_eq!(a.ncols(), b.nrows(), "inner dimensions");
    assert_eq!(c.dim(), (a.nrows(), b.ncols()), "output shape");
    let (m, n) = c.dim();
    let Some(cs) = c.as_slice_mut() else {
        let mut own = Array2::zeros((m, n));
        matmul_into(a, b, false, own.view_mut());
        if accumulate {
            c += &own;
        } else {
            c.assign(&own);
        }
        return;
    };
    let beta = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    let dst = MatMut::from_row_major_slice_mut(cs, m, n);
    with_view(a, |a| with_view(b, |b| blocked(dst, a, b, beta)));
}

/// `a·b` into a new row-major array.
pub(crate) fn matmul(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    matmul_into(a, b, false, c.view_mut());
    c
}

/// The product cut along the longer side of `dst` into blocks of a size set by the
/// shape alone, one sequential faer call per block.
fn blocked(dst: MatMut<'_, f32>, a: MatRef<'_, f32>, b: MatRef<'_, f32>, beta: Accum) {
    let (m, n, k) = (dst.nrows(), dst.ncols(), a.ncols());
    let long = m.max(n);
    if m * n * k < SERIAL_WORK || long < 2 * MIN_SIDE {
        return faer::linalg::matmul::matmul(dst, beta, a, b, 1.0, Par::Seq);
    }
    let side = long.div_ceil(BLOCKS).next_multiple_of(MIN_SIDE);
    let mut blocks = Vec::with_capacity(long.div_ceil(side));
    let mut rest = dst;
    let mut start = 0;
    while start < long {
        let len = side.min(long - start);
        let (head, tail) = if n >= m {
            rest.split_at_col_mut(len)
        } else {
            rest.split_at_row_mut(len)
        };
        blocks.push((start, head));
        rest = tail;
        start += len;
    }
    blocks.into_par_iter().for_each(|(start, block)| {
        let (a, b) = if n >= m {
            (a, b.subcols(start, block.ncols()))
        } else {
            (a.subrows(start, block.nrows()), b)
        };
        faer::linalg::matmul::matmul(block, beta, a, b, 1.0, Par::Seq);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f64> {
        a.mapv(f64::from).dot(&b.mapv(f64::from))
    }

    fn filled(m: usize, n: usize, seed: f32) -> Array2<f32> {
        Array2::from_shape_fn((m, n), |(i, j)| ((i * 31 + j * 7) as f32 * seed).sin())
    }

    proptest! {
        /// Close to the exact product for any shape and layout (row-major, transposed,
        /// strided), replacing or adding to the output.
        #[test]
        fn products_match_f64(m in 1usize..40, k in 1usize..40, n in 1usize..40,
                              layout in 0usize..3, accumulate: bool) {
            let (a, b) = (filled(m, k, 0.37), filled(k, n, 0.11));
            let bt = b.t().as_standard_layout().into_owned();
            let wide = filled(k, 2 * n, 0.11);
            let bv = match layout {
                0 => b.view(),
                1 => bt.t(),
                _ => wide.slice(ndarray::s![.., ..;2]),
            };
            let start = filled(m, n, 0.5);
            let mut c = start.clone();
            matmul_into(a.view(), bv, accumulate, c.view_mut());
            let mut want = exact(&a, &bv.to_owned());
            if accumulate {
                want += &start.mapv(f64::from);
            }
            for (x, y) in c.iter().zip(&want) {
                prop_assert!((*x as f64 - y).abs() < 1e-5 * (k as f64 + 1.0));
            }
        }
    }

    /// Large enough to be cut into blocks: the same bits on one thread and on two, and
    /// the same as one sequential call of the whole product would give entry by entry.
    #[test]
    fn products_do_not_depend_on_the_thread_count() {
        for (m, k, n) in [(64, 300, 1000), (1000, 300, 64), (200, 700, 300)] {
            let (a, b) = (filled(m, k, 0.37), filled(k, n, 0.11));
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| matmul(a.view(), b.view()))
            };
            let one = on(1);
            assert_eq!(one, on(2), "{m}×{k}×{n}");
            assert_eq!(one, on(3), "{m}×{k}×{n}");
            let want = exact(&a, &b);
            assert!(
                one.iter()
                    .zip(&want)
                    .all(|(x, y)| (*x as f64 - y).abs() < 1e-5 * k as f64)
            );
        }
    }
}
