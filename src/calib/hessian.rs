//! The layer Hessian `H = Σ x xᵀ` of a Linear's inputs, made ready for the second-order
//! solvers ([`Gptq`](super::gptq::Gptq), [`SparseGpt`](super::sparsegpt::SparseGpt),
//! [`Obs`](super::obs::Obs)): checked, dead inputs fixed, dampened, inverted through
//! Cholesky, and the upper Cholesky factor of the inverse taken, as in the GPTQ
//! reference implementation (Frantar et al., ICLR 2023).
//!
//! The layer error `‖(W − Ŵ)X‖²` of a weight `W` `[out, in]` on calibration inputs `X`
//! `[in, rows]` is `Σ_r (w_r − ŵ_r)ᵀ H (w_r − ŵ_r)`, so `H` (up to the factor 2 and the
//! number of rows, which no solver needs) is all they see of the data.
//!
//! faer does the linear algebra here; the rest of the crate sees ndarray.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{
    LltRegularization, cholesky_in_place, cholesky_in_place_scratch,
};
use faer::linalg::cholesky::llt::inverse::{inverse as llt_inverse, inverse_scratch};
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};

/// The default dampening: 1% of the mean diagonal of `H` is added to the diagonal, as in
/// the GPTQ and SparseGPT reference implementations (`percdamp = 0.01`). With few
/// calibration rows per input, more (e.g. 0.1) over-fits less.
pub const DEFAULT_PERCDAMP: f64 = 0.01;

/// The column block of the lazy batched updates of GPTQ and SparseGPT (the papers' 128).
pub const DEFAULT_BLOCK_SIZE: usize = 128;

/// The parallelism of faer calls: two tasks, whatever the rayon pool, so results do not
/// depend on the number of threads.
fn par(work: usize) -> Par {
    if work > 1 << 20 {
        Par::rayon(2)
    } else {
        Par::Seq
    }
}

/// Checks statistics for a weight of shape `[out, inputs]`: `h` square `[inputs, inputs]`
/// and finite, at least one calibration row. `what` names the weight in errors.
///
/// ```
/// use slimnn::calib::hessian::check_statistics;
/// use slimnn::ndarray::Array2;
///
/// let h = Array2::<f64>::eye(4);
/// assert!(check_statistics("fc", [2, 4], h.view(), 10).is_ok());
/// assert!(check_statistics("fc", [2, 3], h.view(), 10).is_err()); // size ≠ in
/// assert!(check_statistics("fc", [2, 4], h.view(), 0).is_err()); // no rows
/// ```
pub fn check_statistics(
    what: &str,
    shape: [usize; 2],
    h: ArrayView2<'_, f64>,
    rows: u64,
) -> Result<()> {
    let [out, inputs] = shape;
    if out == 0 || inputs == 0 {
        return Err(Error::Empty {
            what: what.to_string(),
        });
    }
    let (a, b) = h.dim();
    if a != b {
        return Err(Error::bad_shape(
            format!("Hessian Σxxᵀ of {what}"),
            &[a, b],
            "it must be square",
        ));
    }
    if a != inputs {
        return Err(Error::ShapeMismatch {
            what: format!("Hessian Σxxᵀ of {what} (the weight's input size squared)"),
            expected: vec![inputs, inputs],
            got: vec![a, b],
        });
    }
    if let Some((index, &value)) = h.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("Hessian Σxxᵀ of {what}"),
            index,
            value,
        });
    }
    if rows == 0 {
        return Err(Error::invalid(
            "rows",
            0,
            format!("at least one calibration row for {what}"),
        ));
    }
    Ok(())
}

/// Checks a dampening fraction: finite and ≥ 0.
pub(crate) fn check_percdamp(percdamp: f64) -> Result<f64> {
    if !percdamp.is_finite() || percdamp < 0.0 {
        return Err(Error::invalid(
            "percdamp",
            percdamp,
            "a finite fraction ≥ 0 of the mean diagonal (default 0.01)",
        ));
    }
    Ok(percdamp)
}

/// Checks a lazy-update block size: ≥ 1.
pub(crate) fn check_block_size(block_size: usize) -> Result<usize> {
    if block_size == 0 {
        return Err(Error::invalid(
            "block_size",
            0,
            "at least 1 column (default 128)",
        ));
    }
    Ok(block_size)
}

/// `H` with its dead inputs fixed and dampening added: inputs that never fire
/// (`H_jj = 0`) get `H_jj = 1` (their weights are set to 0 by the solvers), then
/// `λ = percdamp · mean(diag H)` is added to the diagonal. Returns the matrix and which
/// inputs were dead.
///
/// ```
/// use slimnn::calib::hessian::dampen;
/// use slimnn::ndarray::array;
///
/// let (h, dead) = dampen(array![[4.0, 0.0], [0.0, 0.0]].view(), 0.1);
/// assert_eq!(dead, vec![false, true]);
/// assert_eq!(h, array![[4.25, 0.0], [0.0, 1.25]]); // λ = 0.1 · (4 + 1) / 2
/// ```
pub fn dampen(h: ArrayView2<'_, f64>, percdamp: f64) -> (Array2<f64>, Vec<bool>) {
    let mut h = h.to_owned();
    let n = h.nrows().min(h.ncols());
    let dead: Vec<bool> = (0..n).map(|j| h[[j, j]] == 0.0).collect();
    for (j, &d) in dead.iter().enumerate() {
        if d {
            h[[j, j]] = 1.0;
        }
    }
    let mean = if n == 0 {
        0.0
    } else {
        (0..n).map(|j| h[[j, j]]).sum::<f64>() / n as f64
    };
    let damp = percdamp * mean;
    for j in 0..n {
        h[[j, j]] += damp;
    }
    (h, dead)
}

fn singular(what: &str, reason: impl Into<String>) -> Error {
    Error::Singular {
        what: format!("Hessian Σxxᵀ of {what}"),
        reason: reason.into(),
    }
}

/// The lower Cholesky factor `L` (`a = L Lᵀ`) of a symmetric positive definite `a`, as a
/// row-major `[n, n]` array (upper triangle zero).
fn cholesky_lower(a: ArrayView2<'_, f64>, what: &str) -> Result<Array2<f64>> {
    let n = a.nrows();
    let mut l = a.as_standard_layout().into_owned();
    {
        let s = l.as_slice_mut().expect("standard layout");
        // Row-major storage of a symmetric matrix read as column-major is the same
        // matrix; faer reads the lower triangle.
        let m = MatMut::from_column_major_slice_mut(s, n, n);
        let p = par(n * n * n);
        let mut mem = MemBuffer::new(cholesky_in_place_scratch::<f64>(n, p, Default::default()));
        let stack = MemStack::new(&mut mem);
        cholesky_in_place(
            m,
            LltRegularization::default(),
            p,
            stack,
            Default::default(),
        )
        .map_err(|_| {
            singular(
                what,
                "not positive definite after dampening (raise percdamp)",
            )
        })?;
    }
    // The factor sits in the lower triangle of the column-major view, i.e. the upper
    // triangle of the row-major array: transpose into a row-major lower factor.
    let mut lower = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            lower[[i, j]] = l[[j, i]];
        }
    }
    if let Some((index, &value)) = lower.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("Cholesky factor of the Hessian of {what}"),
            index,
            value,
        });
    }
    Ok(lower)
}

/// The inverse of a symmetric positive definite `h` (already dampened, see [`dampen`]),
/// through its Cholesky factor. Fails with [`Error::Singular`] if `h` is not positive
/// definite.
///
/// ```
/// use slimnn::calib::hessian::inverse;
/// use slimnn::ndarray::array;
///
/// let inv = inverse(array![[4.0, 2.0], [2.0, 3.0]].view(), "fc")?;
/// assert!((inv[[0, 0]] - 0.375).abs() < 1e-12 && (inv[[0, 1]] + 0.25).abs() < 1e-12);
/// assert!(inverse(array![[1.0, 1.0], [1.0, 1.0]].view(), "fc").is_err());
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn inverse(h: ArrayView2<'_, f64>, what: &str) -> Result<Array2<f64>> {
    let n = h.nrows();
    let l = cholesky_lower(h, what)?;
    let mut out = Array2::<f64>::zeros((n, n));
    {
        let p = par(n * n * n);
        let lref = MatRef::from_row_major_slice(l.as_slice().expect("fresh array"), n, n);
        let dst = MatMut::from_row_major_slice_mut(out.as_slice_mut().expect("fresh array"), n, n);
        let mut mem = MemBuffer::new(inverse_scratch::<f64>(n, p));
        let stack = MemStack::new(&mut mem);
        llt_inverse(dst, lref, p, stack);
    }
    // faer fills the lower triangle: mirror it.
    for i in 0..n {
        for j in 0..i {
            out[[j, i]] = out[[i, j]];
        }
    }
    if let Some((index, &value)) = out.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("inverse Hessian of {what}"),
            index,
            value,
        });
    }
    Ok(out)
}

/// The upper Cholesky factor `U` of a symmetric positive definite `a` (`a = Uᵀ U`),
/// row-major. For `a = H⁻¹` this is the matrix GPTQ and SparseGPT read: row `q` of `U`,
/// divided by `U_qq`, is the update that compensates removing input `q` after inputs
/// `0..q` were removed.
pub fn cholesky_upper(a: ArrayView2<'_, f64>, what: &str) -> Result<Array2<f64>> {
    let l = cholesky_lower(a, what)?;
    Ok(l.t().as_standard_layout().into_owned())
}

/// `c[:, ..] -= a · b`, all row-major, in faer's kernels (the lazy batched update).
pub(crate) fn sub_matmul(c: MatMut<'_, f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>) {
    let work = a.nrows() * a.ncols() * b.ncols();
    faer::linalg::matmul::matmul(c, Accum::Add, a, b, -1.0, par(work));
}

/// `H` prepared for a solver: dampened, optionally permuted, and the upper Cholesky
/// factor of its inverse.
pub(crate) struct Prepared {
    /// Upper Cholesky factor of the (permuted) dampened inverse, row-major `[n, n]`.
    pub(crate) hinv_upper: Array2<f64>,
    /// Dead inputs, in the original order.
    pub(crate) dead: Vec<bool>,
}

/// Dampens `h`, permutes it (`perm[k]` = original input at position `k`), and returns the
/// upper Cholesky factor `U` of its inverse (`H⁻¹ = Uᵀ U`).
///
/// Without forming `H⁻¹`: with `J` the reversal permutation and `J H J = L Lᵀ`,
/// `H⁻¹ = (J L⁻¹ J)ᵀ (J L⁻¹ J)` and `J L⁻¹ J` is upper triangular with a positive
/// diagonal, so it is `U` — one Cholesky factorization and one triangular inverse instead
/// of the reference's Cholesky, inverse and second Cholesky (half the work).
pub(crate) fn prepare(
    h: ArrayView2<'_, f64>,
    percdamp: f64,
    perm: Option<&[usize]>,
    what: &str,
) -> Result<Prepared> {
    let (hd, dead) = dampen(h, percdamp);
    let n = hd.nrows();
    let idx = |k: usize| perm.map_or(n - 1 - k, |p| p[n - 1 - k]);
    let reversed = Array2::from_shape_fn((n, n), |(i, j)| hd[[idx(i), idx(j)]]);
    drop(hd);
    let l = cholesky_lower(reversed.view(), what)?;
    drop(reversed);
    let mut linv = Array2::<f64>::zeros((n, n));
    {
        let src = MatRef::from_row_major_slice(l.as_slice().expect("fresh array"), n, n);
        let dst = MatMut::from_row_major_slice_mut(linv.as_slice_mut().expect("fresh array"), n, n);
        invert_lower_triangular(dst, src, par(n * n * n));
    }
    let hinv_upper = Array2::from_shape_fn((n, n), |(i, j)| {
        if i > j {
            0.0
        } else {
            linv[[n - 1 - i, n - 1 - j]]
        }
    });
    if let Some((index, &value)) = hinv_upper.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("inverse Hessian of {what}"),
            index,
            value,
        });
    }
    Ok(Prepared { hinv_upper, dead })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn upper_factor_reconstructs_the_inverse() {
        let h = array![[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]];
        let inv = inverse(h.view(), "t").unwrap();
        let eye = h.dot(&inv);
        for i in 0..3 {
            for j in 0..3 {
                assert!((eye[[i, j]] - f64::from(u8::from(i == j))).abs() < 1e-12);
            }
        }
        let u = cholesky_upper(inv.view(), "t").unwrap();
        assert_eq!(u[[1, 0]], 0.0);
        let back = u.t().dot(&u);
        for (a, b) in back.iter().zip(inv.iter()) {
            assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn prepare_gives_the_upper_factor_of_the_inverse() {
        let h = array![
            [4.0, 1.0, 0.5, 0.0],
            [1.0, 3.0, 0.2, 0.1],
            [0.5, 0.2, 2.0, 0.3],
            [0.0, 0.1, 0.3, 0.0]
        ];
        let perm = [2usize, 0, 3, 1];
        let p = prepare(h.view(), 0.01, Some(&perm), "t").unwrap();
        assert_eq!(p.dead, vec![false, false, false, true]);
        let (d, _) = dampen(h.view(), 0.01);
        let dp = Array2::from_shape_fn((4, 4), |(i, j)| d[[perm[i], perm[j]]]);
        let u = cholesky_upper(inverse(dp.view(), "t").unwrap().view(), "t").unwrap();
        for (a, b) in p.hinv_upper.iter().zip(u.iter()) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn bad_statistics_are_typed_errors() {
        let h = Array2::<f64>::eye(3);
        let r = check_statistics("fc", [2, 3], Array2::<f64>::zeros((3, 2)).view(), 5);
        assert!(matches!(r, Err(Error::BadShape { .. })));
        let r = check_statistics("fc", [2, 4], h.view(), 5);
        assert!(matches!(r, Err(Error::ShapeMismatch { .. })));
        let mut nan = h.clone();
        nan[[1, 2]] = f64::NAN;
        let r = check_statistics("fc", [2, 3], nan.view(), 5);
        assert!(matches!(r, Err(Error::NonFinite { index: 5, .. })));
        let r = check_statistics("fc", [2, 3], h.view(), 0);
        assert!(matches!(
            r,
            Err(Error::InvalidParameter { name: "rows", .. })
        ));
        // Rank 1 without dampening stays singular.
        let (d, _) = dampen(array![[1.0, 1.0], [1.0, 1.0]].view(), 0.0);
        assert!(matches!(
            inverse(d.view(), "fc"),
            Err(Error::Singular { .. })
        ));
        assert!(check_percdamp(-0.1).is_err() && check_percdamp(f64::NAN).is_err());
    }
}
