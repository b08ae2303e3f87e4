//! Tied filter banks (Dieleman et al. 2016; the survey's symmetric and cyclic filters):
//! base filters plus their flips and rotations, with the parameters stored once.

use std::fmt;

use ndarray::{Array4, ArrayRef, Ix4};

use crate::error::{Error, Result};
use crate::nn::ConvSpec;

/// A transform of a `kh × kw` filter. Rotations are counter-clockwise; rotations by 90°
/// and 270° need a square kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transform {
    /// The filter itself.
    Identity,
    /// Mirrored left–right (`x → kw − 1 − x`).
    FlipHorizontal,
    /// Mirrored top–bottom (`y → kh − 1 − y`).
    FlipVertical,
    /// Rotated by 90°.
    Rotate90,
    /// Rotated by 180°.
    Rotate180,
    /// Rotated by 270°.
    Rotate270,
}

impl Transform {
    /// Whether the transform needs `kh = kw`.
    pub fn needs_square(self) -> bool {
        matches!(self, Transform::Rotate90 | Transform::Rotate270)
    }

    /// The position `(y, x)` of the base filter that lands on `(i, j)` of the transformed
    /// filter `kh × kw` (square when [`needs_square`](Transform::needs_square)).
    fn source(self, (i, j): (usize, usize), (kh, kw): (usize, usize)) -> (usize, usize) {
        match self {
            Transform::Identity => (i, j),
            Transform::FlipHorizontal => (i, kw - 1 - j),
            Transform::FlipVertical => (kh - 1 - i, j),
            // Counter-clockwise by 90°: out[i][j] = in[j][n − 1 − i].
            Transform::Rotate90 => (j, kw - 1 - i),
            Transform::Rotate180 => (kh - 1 - i, kw - 1 - j),
            Transform::Rotate270 => (kh - 1 - j, i),
        }
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transform::Identity => "identity",
            Transform::FlipHorizontal => "flip-h",
            Transform::FlipVertical => "flip-v",
            Transform::Rotate90 => "rot90",
            Transform::Rotate180 => "rot180",
            Transform::Rotate270 => "rot270",
        })
    }
}

/// The transforms of a tied filter bank, in the order their output channels come:
/// a non-empty list without repeats.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Transforms(Vec<Transform>);

impl Transforms {
    /// The given transforms (non-empty, no transform twice).
    pub fn new(transforms: Vec<Transform>) -> Result<Transforms> {
        if transforms.is_empty() {
            return Err(Error::invalid("transforms", "[]", "at least one transform"));
        }
        for (i, t) in transforms.iter().enumerate() {
            if transforms[..i].contains(t) {
                return Err(Error::invalid(
                    "transforms",
                    format!("{transforms:?}"),
                    "each transform at most once",
                ));
            }
        }
        Ok(Transforms(transforms))
    }

    /// Each filter and its horizontal mirror image (2 channels per filter).
    pub fn flips() -> Transforms {
        Transforms(vec![Transform::Identity, Transform::FlipHorizontal])
    }

    /// Each filter rotated by 0°, 90°, 180° and 270° (4 channels per filter; square
    /// kernels only): Dieleman et al.'s cyclic pooling filters.
    pub fn rotations() -> Transforms {
        Transforms(vec![
            Transform::Identity,
            Transform::Rotate90,
            Transform::Rotate180,
            Transform::Rotate270,
        ])
    }

    /// The transforms, in channel order.
    pub fn as_slice(&self) -> &[Transform] {
        &self.0
    }

    /// The number of transforms `t`: a bank of `k` base filters has `k·t` outputs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false (a bank has at least one transform); for symmetry with [`len`](Transforms::len).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks that every transform applies to a `kh × kw` kernel (rotations by 90° and
    /// 270° need it square).
    pub fn check_kernel(&self, (kh, kw): (usize, usize)) -> Result<()> {
        if kh != kw
            && let Some(t) = self.0.iter().find(|t| t.needs_square())
        {
            return Err(Error::bad_shape(
                "tied filter bank kernel",
                &[kh, kw],
                format!("{t} needs a square kernel"),
            ));
        }
        Ok(())
    }
}

/// The full filter bank `[k·t, in, kh, kw]` of base filters `[k, in, kh, kw]`:
/// output channel `j·k + f` is transform `j` of base filter `f` (transform-major, so
/// each transform's channels are contiguous).
///
/// ```
/// use ndarray::Array4;
/// use slimnn::filters::{Transforms, tied_bank};
///
/// let base = Array4::from_shape_vec((1, 1, 2, 2), vec![1.0f32, 2.0, 3.0, 4.0])?;
/// let bank = tied_bank(&base, &Transforms::rotations())?;
/// assert_eq!(bank.into_raw_vec_and_offset().0, vec![
///     1.0, 2.0, 3.0, 4.0, // identity
///     2.0, 4.0, 1.0, 3.0, // rotated 90° counter-clockwise
///     4.0, 3.0, 2.0, 1.0, // 180°
///     3.0, 1.0, 4.0, 2.0, // 270°
/// ]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn tied_bank(base: &ArrayRef<f32, Ix4>, transforms: &Transforms) -> Result<Array4<f32>> {
    let (k, c, kh, kw) = base.dim();
    transforms.check_kernel((kh, kw))?;
    let t = transforms.len();
    Ok(Array4::from_shape_fn(
        (k * t, c, kh, kw),
        |(o, ci, i, j)| {
            let (y, x) = transforms.0[o / k].source((i, j), (kh, kw));
            base[[o % k, ci, y, x]]
        },
    ))
}

/// The gradient with respect to the base filters `[k, in, kh, kw]` from the gradient of
/// the full bank `[k·t, in, kh, kw]` ([`tied_bank`]'s adjoint): each transform's
/// gradient, transformed back, summed onto its base filter.
pub fn tied_bank_backward(
    bank_grad: &ArrayRef<f32, Ix4>,
    transforms: &Transforms,
) -> Result<Array4<f32>> {
    let (kt, c, kh, kw) = bank_grad.dim();
    transforms.check_kernel((kh, kw))?;
    let t = transforms.len();
    if kt % t != 0 {
        return Err(Error::bad_shape(
            "tied filter bank gradient",
            bank_grad.shape(),
            format!("a multiple of {t} output channels"),
        ));
    }
    let k = kt / t;
    let mut g = Array4::<f32>::zeros((k, c, kh, kw));
    for ((o, ci, i, j), &v) in bank_grad.indexed_iter() {
        let (y, x) = transforms.0[o / k].source((i, j), (kh, kw));
        g[[o % k, ci, y, x]] += v;
    }
    Ok(g)
}

/// The output shape `[k·t, oh, ow]` of a tied bank with base weight of `shape` on one
/// example `input` `[c, h, w]` (checks the weight, the input, groups 1 and the kernel).
pub(crate) fn tied_output(
    weight: &str,
    shape: &[usize],
    spec: ConvSpec,
    transforms: &Transforms,
    input: &[usize],
) -> Result<Vec<usize>> {
    let &[k, cin, kh, kw] = shape else {
        return Err(Error::bad_shape(
            format!("`{weight}`"),
            shape,
            "a tied filter bank's base weight is [filters, in, kh, kw]",
        ));
    };
    let &[c, h, w] = input else {
        return Err(Error::bad_shape(
            format!("input of `{weight}`"),
            input,
            "a tied filter bank takes [n, channels, height, width]",
        ));
    };
    if spec.groups != 1 {
        return Err(Error::invalid(
            "groups",
            spec.groups,
            "1 (tied filter banks are not grouped)",
        ));
    }
    if c != cin {
        return Err(Error::ShapeMismatch {
            what: format!("input channels of `{weight}`"),
            expected: vec![c],
            got: vec![cin],
        });
    }
    transforms.check_kernel((kh, kw))?;
    if k == 0 {
        return Err(Error::Empty {
            what: format!("`{weight}`"),
        });
    }
    let (oh, ow) = spec.output_size((h, w), (kh, kw))?;
    Ok(vec![k * transforms.len(), oh, ow])
}
