//! Knowledge distillation: training a small *student* from a large *teacher* (the
//! survey's fourth family).
//!
//! - [`soft`](self::soft_target_loss): soft targets at temperature `T` (Hinton, Vinyals &
//!   Dean 2015), also from an ensemble of teachers ([`ensemble_soft_targets`]);
//! - [`logit_matching`]: L2 between the logits (Ba & Caruana 2014);
//! - [`hint_loss`] with a trained [`Regressor`]: hints (FitNets, Romero et al. 2015);
//! - [`attention_transfer`]: spatial attention maps of paired conv layers (Zagoruyko &
//!   Komodakis 2017);
//! - [`Distillation`]: all of them as one training loss against a [`Teacher`] (one
//!   network or an ensemble), for [`nn`](crate::nn)'s training loop and every
//!   fine-tuning path.
//!
//! Each loss is a plain function returning the loss and its gradient with respect to
//! the student's logits or feature maps, with a `_slice` twin on row-major buffers, so
//! an engine with its own training loop needs nothing of [`nn`](crate::nn). Bad input
//! (a temperature `T ≤ 0`, `α` outside `[0, 1]`, shapes that differ, NaN) is a typed
//! error.
//!
//! ```
//! use ndarray::array;
//! use slimnn::distill::{SoftTargets, distillation_loss, softmax_t};
//!
//! let teacher = array![[4.0f32, 1.0, -2.0]];
//! let soft = softmax_t(teacher.view(), 20.0)?; // the soft targets: close to uniform
//! assert!(soft[[0, 0]] > soft[[0, 1]] && soft[[0, 1]] > soft[[0, 2]]);
//! let kd = SoftTargets::new(20.0, 0.9)?;
//! let (loss, grad) = distillation_loss(teacher.view(), teacher.view(), array![0u8].view(), &kd)?;
//! // the student equals the teacher: only the label term is left
//! assert!(loss > 0.0 && grad.dim() == (1, 3));
//! # Ok::<(), slimnn::Error>(())
//! ```

mod attention;
mod hint;
mod logits;
mod loss;
mod soft;
mod teacher;

use ndarray::{ArrayView2, ArrayViewD};

pub use attention::{Attention, attention_map, attention_transfer, attention_transfer_slice};
pub use hint::{Regressor, RegressorGradients, RegressorKind, hint_loss, hint_loss_slice};
pub use logits::{logit_matching, logit_matching_slice};
pub use loss::{DistillConfig, DistillStep, Distillation, HintPair, LayerPair};
pub use soft::{
    SoftTargets, distillation_loss, distillation_loss_slice, ensemble_soft_targets,
    soft_target_loss, softmax_t,
};
pub use teacher::{Teacher, TeacherOutputs};

use crate::error::{Error, Result};

/// A row-major buffer as `[n, classes]`.
fn rows<'a>(data: &'a [f32], classes: usize, what: &str) -> Result<ArrayView2<'a, f32>> {
    if classes == 0 || !data.len().is_multiple_of(classes) {
        return Err(Error::bad_shape(
            what,
            &[data.len()],
            format!("a whole number of rows of {classes} classes"),
        ));
    }
    Ok(ArrayView2::from_shape((data.len() / classes, classes), data).expect("checked length"))
}

/// Checks that `got` equals `expected` (teacher against student).
fn check_same(expected: &[usize], got: &[usize], what: impl FnOnce() -> String) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what: what(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}

/// Checks two `[n, classes]` shapes agree, and that they hold something.
fn check_batch(expected: &[usize], got: &[usize], what: impl FnOnce() -> String) -> Result<()> {
    check_same(expected, got, what)?;
    if expected.iter().product::<usize>() == 0 {
        return Err(Error::Empty {
            what: "batch of logits".into(),
        });
    }
    Ok(())
}

fn check_finite2(a: ArrayView2<'_, f32>, what: &str) -> Result<()> {
    check_finite_d(a.into_dyn(), what)
}

fn check_finite_d(a: ArrayViewD<'_, f32>, what: &str) -> Result<()> {
    match a.as_slice_memory_order() {
        Some(s) => crate::tensor::check_finite(s, || what.into()),
        None => crate::tensor::check_finite(&a.iter().copied().collect::<Vec<_>>(), || what.into()),
    }
}

#[cfg(test)]
mod tests;
