//! The dense linear algebra of the low-rank family, done by faer (SVD, QR, symmetric
//! eigendecomposition, matrix products) on ndarray views without copies. faer types stay
//! in this module; everything else sees ndarray.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::svd::ComputeSvdVectors;
use faer::traits::RealField;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use ndarray::{Array1, Array2, ArrayView2, ShapeBuilder};

use crate::error::{Error, Result};
use crate::kernels::matmul::with_view;

/// Element types faer decomposes: f32 and f64.
pub(crate) trait Real: RealField + Copy + crate::Scalar {}
impl Real for f32 {}
impl Real for f64 {}

/// The parallelism of every faer call: two tasks, whatever the size of the rayon pool
/// they run in. faer and its matrix products split work by the number of tasks they
/// are given, and a different split sums in a different order; with `Par::rayon(0)`
/// (one task per thread of the pool) results changed with `RAYON_NUM_THREADS`. A fixed
/// count keeps them bit-identical on any pool (on one thread the two tasks run in turn).
fn par() -> Par {
    Par::rayon(2)
}

/// A faer matrix copied into a row-major ndarray.
fn owned<T: Copy>(m: MatRef<'_, T>) -> Array2<T> {
    Array2::from_shape_fn((m.nrows(), m.ncols()).f(), |(i, j)| m[(i, j)])
        .as_standard_layout()
        .into_owned()
}

fn no_convergence(what: &'static str) -> Error {
    Error::NotConverged {
        method: what,
        iterations: 0,
        error: f64::NAN,
    }
}

/// A power of two that brings the largest magnitude in `a` near 1, if it is so large
/// (above `√T::MAX`) that an SVD's intermediate squares and norms would overflow; scaling
/// by a power of two changes no bit of the mantissas, and the singular values scale
/// back exactly.
pub(crate) fn overflow_scale<T: Real>(a: ArrayView2<'_, T>) -> Option<T> {
    let largest = a.iter().fold(T::zero(), |m, &v| {
        let v = num_traits::Float::abs(v);
        if v > m { v } else { m }
    });
    let largest = num_traits::ToPrimitive::to_f64(&largest)?;
    let limit = num_traits::ToPrimitive::to_f64(&<T as num_traits::Float>::max_value())?.sqrt();
    if !largest.is_finite() || largest < limit {
        return None;
    }
    num_traits::NumCast::from(2f64.powi(-(largest.log2().floor() as i32)))
}

/// Undoes [`overflow_scale`] on singular values: fails if the largest does not fit `T`.
pub(crate) fn unscale<T: Real>(s: &mut [T], scale: T, shape: (usize, usize)) -> Result<()> {
    for v in s.iter_mut() {
        *v /= scale;
    }
    match s.iter().find(|v| !num_traits::Float::is_finite(**v)) {
        None => Ok(()),
        Some(_) => Err(Error::Overflow {
            what: format!(
                "singular value decomposition of a {}×{} matrix",
                shape.0, shape.1
            ),
            reason: format!(
                "its largest singular value exceeds {:e}, the largest {}; scale the weights down",
                num_traits::ToPrimitive::to_f64(&<T as num_traits::Float>::max_value())
                    .unwrap_or(f64::INFINITY),
                std::any::type_name::<T>()
            ),
        }),
    }
}

/// Runs `f` on `a`, scaled by [`overflow_scale`] if needed, with the scale.
fn scaled<T: Real, R>(
    a: ArrayView2<'_, T>,
    f: impl FnOnce(ArrayView2<'_, T>) -> R,
) -> (R, Option<T>) {
    match overflow_scale(a) {
        Some(scale) => (f(a.mapv(|v| v * scale).view()), Some(scale)),
        None => (f(a), None),
    }
}

/// Thin SVD `A = U·diag(s)·Vᵀ`, singular values descending: `(U [m, k], s [k], Vᵀ [k, n])`.
/// Values near the largest of `T` are scaled first; singular values that do not fit `T`
/// are an [`Error::Overflow`].
pub(crate) fn svd<T: Real>(a: ArrayView2<'_, T>) -> Result<(Array2<T>, Array1<T>, Array2<T>)> {
    let (d, scale) = scaled(a, |a| with_view(a, |a| faer_svd(a, true)));
    let (u, mut s, v) = d?;
    if let Some(scale) = scale {
        unscale(&mut s, scale, a.dim())?;
    }
    let v = v.expect("vectors computed");
    Ok((
        owned(u.expect("vectors computed").as_ref()),
        s.into(),
        owned(v.as_ref().transpose()),
    ))
}

/// faer's thin SVD with [`par`]: `U`, the singular values (descending) and `V`, the
/// vectors if asked for.
#[allow(clippy::type_complexity)]
fn faer_svd<T: Real>(
    a: MatRef<'_, T>,
    vectors: bool,
) -> Result<(Option<Mat<T>>, Vec<T>, Option<Mat<T>>)> {
    let (m, n) = a.shape();
    let k = m.min(n);
    let (mut u, mut v) = match vectors {
        true => (Some(Mat::<T>::zeros(m, k)), Some(Mat::<T>::zeros(n, k))),
        false => (None, None),
    };
    let mut s = Diag::<T>::zeros(k);
    let compute = match vectors {
        true => ComputeSvdVectors::Thin,
        false => ComputeSvdVectors::No,
    };
    let mut mem = MemBuffer::new(faer::linalg::svd::svd_scratch::<T>(
        m,
        n,
        compute,
        compute,
        par(),
        Default::default(),
    ));
    faer::linalg::svd::svd(
        a,
        s.as_mut(),
        u.as_mut().map(|u| u.as_mut()),
        v.as_mut().map(|v| v.as_mut()),
        par(),
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|_| no_convergence("singular value decomposition"))?;
    Ok((u, s.column_vector().iter().copied().collect(), v))
}

/// Singular values only, descending (scaled as in [`svd`]).
pub(crate) fn singular_values<T: Real>(a: ArrayView2<'_, T>) -> Result<Vec<T>> {
    let (s, scale) = scaled(a, |a| with_view(a, |a| faer_svd(a, false)));
    let mut s = s?.1;
    if let Some(scale) = scale {
        unscale(&mut s, scale, a.dim())?;
    }
    Ok(s)
}

/// The thin `Q` of a QR decomposition of `a` `[m, n]`, `m ≥ n`: orthonormal columns
/// spanning `a`'s.
pub(crate) fn thin_q<T: Real>(a: ArrayView2<'_, T>) -> Array2<T> {
    use faer::linalg::{householder, qr::no_pivoting::factor};
    with_view(a, |a| {
        let (m, n) = a.shape();
        let k = m.min(n);
        let block = factor::recommended_block_size::<T>(m, n);
        let mut qr = a.to_owned();
        let mut coeff = Mat::<T>::zeros(block, k);
        let mut mem = MemBuffer::new(factor::qr_in_place_scratch::<T>(
            m,
            n,
            block,
            par(),
            Default::default(),
        ));
        factor::qr_in_place(
            qr.as_mut(),
            coeff.as_mut(),
            par(),
            MemStack::new(&mut mem),
            Default::default(),
        );
        // The Householder basis: the first k columns, unit lower trapezoidal.
        let mut basis = qr.as_ref().subcols(0, k).to_owned();
        for j in 0..k {
            for i in 0..=j {
                basis[(i, j)] = if i == j { T::one() } else { T::zero() };
            }
        }
        let mut q = Mat::<T>::identity(m, k);
        let mut mem = MemBuffer::new(
            householder::apply_block_householder_sequence_on_the_left_in_place_scratch::<T>(
                m, block, k,
            ),
        );
        householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(
            basis.as_ref(),
            coeff.as_ref(),
            faer::Conj::No,
            q.as_mut(),
            par(),
            MemStack::new(&mut mem),
        );
        owned(q.as_ref())
    })
}

/// Eigenvalues (descending) and eigenvectors (columns) of the symmetric `a`.
pub(crate) fn sym_eig<T: Real>(a: ArrayView2<'_, T>) -> Result<(Array1<T>, Array2<T>)> {
    let (vals, vecs) = with_view(a, |a| {
        use faer::linalg::evd;
        let n = a.nrows();
        let mut u = Mat::<T>::zeros(n, n);
        let mut s = Diag::<T>::zeros(n);
        let mut mem = MemBuffer::new(evd::self_adjoint_evd_scratch::<T>(
            n,
            evd::ComputeEigenvectors::Yes,
            par(),
            Default::default(),
        ));
        // faer reads the lower triangle.
        evd::self_adjoint_evd(
            a,
            s.as_mut(),
            Some(u.as_mut()),
            par(),
            MemStack::new(&mut mem),
            Default::default(),
        )
        .map_err(|_| no_convergence("symmetric eigendecomposition"))?;
        let vals: Vec<T> = s.column_vector().iter().copied().collect();
        Ok::<_, Error>((vals, owned(u.as_ref())))
    })?;
    // faer gives them ascending.
    let n = vals.len();
    let order: Vec<usize> = (0..n).rev().collect();
    Ok((
        order.iter().map(|&i| vals[i]).collect(),
        vecs.select(ndarray::Axis(1), &order),
    ))
}

/// `a·b` in two tasks (faer's SIMD kernels).
pub(crate) fn matmul<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Array2<T> {
    let (m, n) = (a.nrows(), b.ncols());
    let mut c = Array2::<T>::zeros((m, n));
    let par = if m * a.ncols() * n > 1 << 20 {
        par()
    } else {
        Par::Seq
    };
    let dst = MatMut::from_row_major_slice_mut(c.as_slice_mut().expect("fresh array"), m, n);
    with_view(a, |a| {
        with_view(b, |b| {
            faer::linalg::matmul::matmul(dst, Accum::Replace, a, b, T::one(), par)
        })
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        (a - b).iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    #[test]
    fn faer_glue_matches_ndarray_for_every_layout() {
        let a = Array2::from_shape_fn((9, 4), |(i, j)| ((i * 5 + j * j) as f64 * 0.37).sin());
        let wide = a.t().as_standard_layout().into_owned();
        let strided = Array2::from_shape_fn((9, 8), |(i, j)| a[[i, j / 2]]);
        let strided = strided.slice(ndarray::s![.., ..;2]);
        for m in [a.view(), a.t(), wide.view(), wide.t(), strided] {
            let q = thin_q(if m.nrows() >= m.ncols() { m } else { m.t() });
            assert!(max_abs(&q.t().dot(&q), &Array2::eye(q.ncols())) < 1e-12);
            assert!(max_abs(&matmul(m, m.t()), &m.dot(&m.t())) < 1e-12);
            let (u, s, vt) = svd(m).unwrap();
            assert!(s.windows(2).into_iter().all(|w| w[0] >= w[1]));
            assert!(max_abs(&u.dot(&Array2::from_diag(&s)).dot(&vt), &m.to_owned()) < 1e-12);
            let (vals, vecs) = sym_eig(matmul(m.t(), m).view()).unwrap();
            assert!(vals.windows(2).into_iter().all(|w| w[0] >= w[1]));
            let back = vecs.dot(&Array2::from_diag(&vals)).dot(&vecs.t());
            assert!(max_abs(&back, &m.t().dot(&m)) < 1e-12);
            let sv = singular_values(m).unwrap();
            assert!(sv.iter().zip(&s).all(|(a, b)| (a - b).abs() < 1e-12));
        }
    }
}
