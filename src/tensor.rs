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
/// Engines holding 16-bit weights pass them as they are: see [`HalfFloat`].
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

    /// The slice itself when `Self` is `f32`, mutably.
    #[doc(hidden)]
    fn as_f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]>;
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
    fn as_f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]> {
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
    fn as_f32_slice_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
}

mod sealed_half {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// A 16-bit float an engine may keep its weights in: `half::f16` or `half::bf16`.
///
/// The engine entry points take such buffers as they are, convert them to f32 in
/// registers (F16C on AVX2 machines, AVX-512 BF16 where present) a block at a time, and
/// write results back in the same type:
/// [`HalfPruner::prune_half_slice`] (any pruner), [`HalfQuantizer::quantize_half_slice`]
/// and [`HalfQuantizer::fake_quantize_half_slice`] (any quantizer),
/// [`Mask::apply_half_slice`]. Conversions round to nearest even, exactly as
/// `half::f16::from_f32` / `half::bf16::from_f32` do; NaN keeps its sign and payload and
/// becomes quiet. Sealed: the kernels are written for exactly these two types.
///
/// [`HalfPruner::prune_half_slice`]: crate::prune::HalfPruner::prune_half_slice
/// [`HalfQuantizer::quantize_half_slice`]: crate::quant::HalfQuantizer::quantize_half_slice
/// [`HalfQuantizer::fake_quantize_half_slice`]: crate::quant::HalfQuantizer::fake_quantize_half_slice
/// [`Mask::apply_half_slice`]: crate::Mask::apply_half_slice
pub trait HalfFloat:
    Copy + Default + Debug + Display + PartialEq + Send + Sync + 'static + sealed_half::Sealed
{
    /// The type's name in messages: `"f16"` or `"bf16"`.
    const NAME: &'static str;
    /// Positive zero.
    const ZERO: Self;
    /// The value as f32 (exact).
    fn to_f32(self) -> f32;
    /// The nearest value to `x` (ties to even).
    fn from_f32(x: f32) -> Self;
    /// The raw bits.
    fn to_bits(self) -> u16;
    /// The magnitude bits (`to_bits() & 0x7FFF`) at and above which a value is infinite
    /// or NaN.
    #[doc(hidden)]
    const NON_FINITE_BITS: u16;
    #[doc(hidden)]
    fn wrap(s: &[Self]) -> HalfSlice<'_>;
    #[doc(hidden)]
    fn wrap_mut(s: &mut [Self]) -> HalfSliceMut<'_>;
    #[doc(hidden)]
    fn widen_kernel(src: &[Self], dst: &mut [f32]);
    #[doc(hidden)]
    fn narrow_kernel(src: &[f32], dst: &mut [Self]);
}

macro_rules! half_float {
    ($t:ty, $name:literal, $non_finite:literal, $widen:ident, $narrow:ident, $v:ident) => {
        impl HalfFloat for $t {
            const NAME: &'static str = $name;
            const NON_FINITE_BITS: u16 = $non_finite;
            const ZERO: Self = <$t>::ZERO;
            #[inline]
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            #[inline]
            fn from_f32(x: f32) -> Self {
                <$t>::from_f32(x)
            }
            #[inline]
            fn to_bits(self) -> u16 {
                <$t>::to_bits(self)
            }
            fn wrap(s: &[Self]) -> HalfSlice<'_> {
                HalfSlice::$v(s)
            }
            fn wrap_mut(s: &mut [Self]) -> HalfSliceMut<'_> {
                HalfSliceMut::$v(s)
            }
            fn widen_kernel(src: &[Self], dst: &mut [f32]) {
                crate::kernels::half::$widen(src, dst)
            }
            fn narrow_kernel(src: &[f32], dst: &mut [Self]) {
                crate::kernels::half::$narrow(src, dst)
            }
        }
    };
}
half_float!(half::f16, "f16", 0x7C00, f16_to_f32, f32_to_f16, F16);
half_float!(half::bf16, "bf16", 0x7F80, bf16_to_f32, f32_to_bf16, Bf16);

/// A 16-bit buffer of either type: plumbing between the 16-bit entry points and the
/// methods that read such buffers in place. Not part of the public API.
#[doc(hidden)]
pub enum HalfSlice<'a> {
    /// IEEE binary16.
    F16(&'a [half::f16]),
    /// bfloat16.
    Bf16(&'a [half::bf16]),
}

/// A mutable [`HalfSlice`]. Not part of the public API.
#[doc(hidden)]
pub enum HalfSliceMut<'a> {
    /// IEEE binary16.
    F16(&'a mut [half::f16]),
    /// bfloat16.
    Bf16(&'a mut [half::bf16]),
}

/// Widens a 16-bit buffer into an f32 buffer of the same length (exact), in registers.
///
/// Fails with [`Error::ShapeMismatch`] if the lengths differ.
///
/// ```
/// use half::bf16;
///
/// let src = [bf16::from_f32(1.5), bf16::from_f32(-0.25)];
/// let mut dst = [0f32; 2];
/// slimnn::tensor::widen(&src, &mut dst)?;
/// assert_eq!(dst, [1.5, -0.25]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn widen<H: HalfFloat>(src: &[H], dst: &mut [f32]) -> Result<()> {
    check_same_shape(&[src.len()], &[dst.len()], || {
        format!("f32 buffer for {} values", H::NAME)
    })?;
    H::widen_kernel(src, dst);
    Ok(())
}

/// Narrows an f32 buffer into a 16-bit buffer of the same length, rounding to nearest
/// even (as `half` does), in registers.
///
/// Fails with [`Error::ShapeMismatch`] if the lengths differ.
///
/// ```
/// use half::f16;
///
/// let mut dst = [f16::ZERO; 2];
/// slimnn::tensor::narrow(&[1.0f32 / 3.0, 70000.0], &mut dst)?;
/// assert_eq!(dst, [f16::from_f32(1.0 / 3.0), f16::INFINITY]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn narrow<H: HalfFloat>(src: &[f32], dst: &mut [H]) -> Result<()> {
    check_same_shape(&[src.len()], &[dst.len()], || {
        format!("{} buffer for f32 values", H::NAME)
    })?;
    H::narrow_kernel(src, dst);
    Ok(())
}

/// `src` widened to `T` as an array of `shape` (checked against the length): the
/// default path of the 16-bit engine entry points for methods that need the whole
/// tensor.
pub(crate) fn widen_array<H: HalfFloat, T: Scalar>(
    src: &[H],
    shape: &[usize],
) -> Result<ndarray::ArrayD<T>> {
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if numel != Some(src.len()) {
        return Err(shape_len_error(shape, src.len()));
    }
    let mut out = vec![T::zero(); src.len()];
    match T::as_f32_slice_mut(&mut out) {
        Some(o) => H::widen_kernel(src, o),
        None => {
            let mut buf = [0f32; crate::kernels::half::CHUNK];
            for (s, o) in src
                .chunks(crate::kernels::half::CHUNK)
                .zip(out.chunks_mut(crate::kernels::half::CHUNK))
            {
                let b = &mut buf[..s.len()];
                H::widen_kernel(s, b);
                for (o, &x) in o.iter_mut().zip(b.iter()) {
                    *o = T::of(x as f64);
                }
            }
        }
    }
    ndarray::ArrayD::from_shape_vec(IxDyn(shape), out)
        .map_err(|_| shape_len_error(shape, src.len()))
}

/// Narrows `values` (row-major, `T`) into `dst`, a block at a time.
pub(crate) fn narrow_from<H: HalfFloat, T: Scalar>(values: &[T], dst: &mut [H]) {
    match T::as_f32_slice(values) {
        Some(v) => H::narrow_kernel(v, dst),
        None => {
            let mut buf = [0f32; crate::kernels::half::CHUNK];
            for (v, d) in values
                .chunks(crate::kernels::half::CHUNK)
                .zip(dst.chunks_mut(crate::kernels::half::CHUNK))
            {
                let b = &mut buf[..v.len()];
                for (b, &x) in b.iter_mut().zip(v) {
                    *b = x.as_f64() as f32;
                }
                H::narrow_kernel(b, d);
            }
        }
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
