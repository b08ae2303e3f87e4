//! Logit matching (Ba & Caruana 2014, "Do Deep Nets Really Need to be Deep?"): the
//! student regresses the teacher's logits, `L = 1/(2n)·Σ ‖z_student − z_teacher‖²`.

use ndarray::{Array2, ArrayView2};

use super::{check_batch, check_finite2};
use crate::error::Result;

/// The logit-matching loss of `student` against `teacher` logits (both `[n, classes]`),
/// `1/(2n)·Σ‖z_s − z_t‖²`, and its gradient with respect to the student's logits,
/// `(z_s − z_t)/n`.
///
/// This is the limit of the soft-target gradient at high temperature (Hinton et al.
/// 2015, section 2.1): with zero-mean logits, `T²·∂KL/∂z → (z_s − z_t)/classes`.
pub fn logit_matching(
    student: ArrayView2<'_, f32>,
    teacher: ArrayView2<'_, f32>,
) -> Result<(f32, Array2<f32>)> {
    check_batch(student.shape(), teacher.shape(), || {
        "teacher logits [n, classes]".into()
    })?;
    check_finite2(student, "student logits")?;
    check_finite2(teacher, "teacher logits")?;
    let n = student.nrows().max(1) as f32;
    let diff = &student - &teacher;
    let loss = diff.iter().map(|&d| d as f64 * d as f64).sum::<f64>() / (2.0 * n as f64);
    Ok((loss as f32, diff / n))
}

/// [`logit_matching`] on row-major `[n, classes]` buffers: the loss and the gradient
/// with respect to the student's logits, row-major.
pub fn logit_matching_slice(
    student: &[f32],
    teacher: &[f32],
    classes: usize,
) -> Result<(f32, Vec<f32>)> {
    let s = super::rows(student, classes, "student logits")?;
    let t = super::rows(teacher, classes, "teacher logits")?;
    let (loss, g) = logit_matching(s, t)?;
    Ok((loss, g.into_raw_vec_and_offset().0))
}
