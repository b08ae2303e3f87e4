//! Element types and the glue between borrowed buffers and ndarray views.
//!
//! Weights are plain ndarray arrays of any dimension; every method takes a view
//! (`&ArrayRef<T, IxDyn>`), so owned arrays, views and an engine's own `&mut [f32]`
//! (through [`view_mut`]) all work without a copy.

use std::borrow::Cow;
use std::fmt::{Debug, Display};

use ndarray::{ArrayRef, ArrayViewD, ArrayViewMutD, IxDyn, LinalgScalar, ScalarOperand};
use num_traits::{Float, FromPrimitive, NumAssign};
use rayon::prelude::*;

use crate::error::{Error, Result};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type slimnn computes with: `f32` or `f64`.
///
/// Sealed: the kernels and storage formats are written for exactly these two types.
/// Half-precision tensors (f16, bf16) are loaded into `f32` by [`crate::io`].
pub trait Scalar:
    Float
    + FromPrimitive
    + NumAssign
    + LinalgScalar
    + ScalarOperand
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
    + sealed::Sealed
{
    /// The type's name in messages, e.g. `"f32"`.
    const NAME: &'static str;

    /// Converts from `f64`, rounding to the nearest representable value.
    fn of(x: f64) -> Self;

    /// Converts to `f64` exactly.
    fn as_f64(self) -> f64;

    /// The slice itself when `Self` is `f32`: lets f32 paths borrow instead of convert.
    fn as_f32_slice(s: &[Self]) -> Option<&[f32]>;
}

impl Scalar for f32 {
    const NAME: &'static str = "f32";
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn as_f32_slice(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
}

impl Scalar for f64 {
    const NAME: &'static str = "f64";
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
    fn as_f32_slice(_: &[Self]) -> Option<&[f32]> {
        None
    }
}

/// A mutable n-dimensional view of an engine's buffer, checked against `shape`.
///
/// ```
/// let mut buf = vec![0.5f32; 6];
/// let view = slimnn::tensor::view_mut(&mut buf, &[2, 3])?;
/// assert_eq!(view.shape(), &[2, 3]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn view_mut<'a, T>(data: &'a mut [T], shape: &[usize]) -> Result<ArrayViewMutD<'a, T>> {
    let len = data.len();
    ArrayViewMutD::from_shape(IxDyn(shape), data).map_err(|_| shape_len_error(shape, len))
}

/// An n-dimensional view of an engine's buffer, checked against `shape`.
pub fn view<'a, T>(data: &'a [T], shape: &[usize]) -> Result<ArrayViewD<'a, T>> {
    let len = data.len();
    ArrayViewD::from_shape(IxDyn(shape), data).map_err(|_| shape_len_error(shape, len))
}

fn shape_len_error(shape: &[usize], len: usize) -> Error {
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    Error::bad_shape(
        "buffer",
        shape,
        match numel {
            Some(n) => format!("the shape holds {n} elements but the buffer has {len}"),
            None => "the element count overflows usize".into(),
        },
    )
}

/// `(‖a − b‖², ‖a‖²)` over paired elements (in iteration order), accumulated in f64;
/// sums over several tensors give one error over all of them. With [`relative_from`],
/// the crate's one relative error `‖a − b‖₂ / ‖a‖₂` (quantization rows, SVD residuals).
pub(crate) fn squared_errors<'a>(
    reference: impl IntoIterator<Item = &'a f32>,
    approx: impl IntoIterator<Item = &'a f32>,
) -> (f64, f64) {
    reference
        .into_iter()
        .zip(approx)
        .fold((0.0, 0.0), |(diff, norm), (&a, &b)| {
            (
                diff + (a as f64 - b as f64).powi(2),
                norm + (a as f64).powi(2),
            )
        })
}

/// The relative error from [`squared_errors`]' sums: `sqrt(diff / norm)`; 0 when
/// nothing differs, and the absolute error `sqrt(diff)` against a zero reference.
pub(crate) fn relative_from(diff: f64, norm: f64) -> f64 {
    if diff == 0.0 {
        0.0
    } else if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        diff.sqrt()
    }
}

/// The elements of `a` in row-major order: borrowed when `a` is already contiguous.
pub(crate) fn row_major<'a, T: Clone>(a: &'a ArrayRef<T, IxDyn>) -> Cow<'a, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().cloned().collect()),
    }
}

/// Fails with [`Error::NonFinite`] naming `what` if any element is NaN or infinite.
pub(crate) fn check_finite<T: Scalar>(data: &[T], what: impl FnOnce() -> String) -> Result<()> {
    const CHUNK: usize = 1 << 14;
    // A branch-free fold per chunk vectorizes; the slow search runs only on failure.
    let bad_chunk = |c: &[T]| c.iter().fold(false, |bad, x| bad | !x.is_finite());
    let bad = if data.len() >= 4 * CHUNK {
        data.par_chunks(CHUNK).any(bad_chunk)
    } else {
        bad_chunk(data)
    };
    if !bad {
        return Ok(());
    }
    let index = data.iter().position(|x| !x.is_finite()).unwrap_or(0);
    Err(Error::NonFinite {
        what: what(),
        index,
        value: data[index].as_f64(),
    })
}

/// Fails with [`Error::Empty`] if the tensor has no elements.
pub(crate) fn check_nonempty(shape: &[usize], what: impl FnOnce() -> String) -> Result<()> {
    if shape.contains(&0) {
        return Err(Error::Empty { what: what() });
    }
    Ok(())
}

/// Fails with [`Error::ShapeMismatch`] unless `got == expected`.
pub(crate) fn check_same_shape(
    expected: &[usize],
    got: &[usize],
    what: impl FnOnce() -> String,
) -> Result<()> {
    if expected != got {
        return Err(Error::ShapeMismatch {
            what: what(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        });
    }
    Ok(())
}

/// "`name`" when a name is known, else `fallback`: the subject of error messages.
pub(crate) fn subject(name: Option<&str>, fallback: &str) -> String {
    match name {
        Some(n) => format!("`{n}`"),
        None => fallback.to_string(),
    }
}

/// The last segment of a type's path, without generic arguments (`"KMeansQuantizer"`
/// for `slimnn::quant::KMeansQuantizer`, `"UnstructuredPruner"` for
/// `slimnn::prune::UnstructuredPruner<slimnn::prune::Magnitude>`): the default
/// description of a method.
pub(crate) fn short_type_name<T: ?Sized>() -> String {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}
