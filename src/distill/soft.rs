//! Soft targets (Hinton, Vinyals & Dean 2015): the softmax at temperature `T`, the
//! average of an ensemble's soft targets, and the distillation loss
//! `α·T²·KL(p_teacher,T ‖ p_student,T) + (1 − α)·CE(labels, student)`.

use ndarray::{Array2, ArrayView1, ArrayView2};

use super::{check_batch, check_finite2};
use crate::error::{Error, Result};
use crate::nn::check_labels;

/// The soft-target loss's settings, checked: a temperature `T > 0` (finite) and the
/// weight `α ∈ [0, 1]` of the soft term (the hard, label term gets `1 − α`).
///
/// ```
/// use slimnn::distill::SoftTargets;
///
/// let kd = SoftTargets::new(20.0, 0.9)?;
/// assert_eq!((kd.temperature(), kd.alpha()), (20.0, 0.9));
/// assert!(SoftTargets::new(0.0, 0.5).is_err() && SoftTargets::new(2.0, 1.5).is_err());
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftTargets {
    temperature: f32,
    alpha: f32,
}

impl SoftTargets {
    /// Checks `T > 0` (finite) and `0 ≤ α ≤ 1`.
    pub fn new(temperature: f32, alpha: f32) -> Result<SoftTargets> {
        Ok(SoftTargets {
            temperature: check_temperature(temperature)?,
            alpha: check_unit("alpha", alpha)?,
        })
    }

    /// The temperature `T`.
    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    /// The weight `α` of the soft term.
    pub fn alpha(&self) -> f32 {
        self.alpha
    }
}

/// Checks a temperature: finite and above 0.
pub(crate) fn check_temperature(t: f32) -> Result<f32> {
    if t > 0.0 && t.is_finite() {
        Ok(t)
    } else {
        Err(Error::invalid(
            "temperature",
            t,
            "a finite temperature above 0",
        ))
    }
}

/// Checks a weight in `[0, 1]`.
pub(crate) fn check_unit(name: &'static str, v: f32) -> Result<f32> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(Error::invalid(name, v, "a weight in [0, 1]"))
    }
}

/// The softmax of each row of `logits` at temperature `t`: `exp(zᵢ/T) / Σⱼ exp(zⱼ/T)`.
pub fn softmax_t(logits: ArrayView2<'_, f32>, temperature: f32) -> Result<Array2<f32>> {
    let t = check_temperature(temperature)?;
    check_finite2(logits, "logits")?;
    Ok(softmax_rows(logits, t))
}

/// Row-wise softmax of `z / t`, computed in f64 and without overflow.
pub(crate) fn softmax_rows(logits: ArrayView2<'_, f32>, t: f32) -> Array2<f32> {
    let mut out = Array2::zeros(logits.raw_dim());
    for (row, mut o) in logits.rows().into_iter().zip(out.rows_mut()) {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let e: Vec<f64> = row
            .iter()
            .map(|&v| ((v as f64 - max) / t as f64).exp())
            .collect();
        let sum: f64 = e.iter().sum();
        for (o, e) in o.iter_mut().zip(e) {
            *o = (e / sum) as f32;
        }
    }
    out
}

/// The soft targets of an ensemble of teachers: the mean over `members` (each the
/// logits `[n, classes]` of one teacher on the same batch) of their softmax at
/// temperature `t` (Hinton et al. 2015, section 2: "the arithmetic mean of the
/// individual predictive distributions"). An ensemble of one gives its member's soft
/// targets.
pub fn ensemble_soft_targets(
    members: &[ArrayView2<'_, f32>],
    temperature: f32,
) -> Result<Array2<f32>> {
    let t = check_temperature(temperature)?;
    let first = members.first().ok_or_else(|| Error::Empty {
        what: "teacher ensemble".into(),
    })?;
    let mut sum = Array2::<f32>::zeros(first.raw_dim());
    for (i, m) in members.iter().enumerate() {
        check_batch(first.shape(), m.shape(), || {
            format!("logits of teacher {i}")
        })?;
        check_finite2(*m, "teacher logits")?;
        sum += &softmax_rows(*m, t);
    }
    sum /= members.len() as f32;
    Ok(sum)
}

/// The soft-target loss of `student` logits `[n, classes]` against the teacher's soft
/// targets `targets` (probabilities at temperature `T`, e.g. from [`softmax_t`] or
/// [`ensemble_soft_targets`]) and the true `labels`, averaged over the batch, and its
/// gradient with respect to the student's logits:
///
/// `L = α·T²·KL(p_T ‖ q_T) + (1 − α)·CE(y, q_1)`, `∂L/∂z = α·T·(q_T − p_T) + (1 − α)·(q_1 − y)`
/// (each divided by `n`), where `q_T` is the student's softmax at `T`. The `T²` keeps
/// the soft term's gradients the same size whatever `T` (the paper's section 2).
pub fn soft_target_loss(
    student: ArrayView2<'_, f32>,
    targets: ArrayView2<'_, f32>,
    labels: ArrayView1<'_, u8>,
    config: &SoftTargets,
) -> Result<(f32, Array2<f32>)> {
    check_batch(student.shape(), targets.shape(), || {
        "teacher soft targets [n, classes]".into()
    })?;
    check_finite2(student, "student logits")?;
    check_finite2(targets, "teacher soft targets")?;
    if targets.iter().any(|&p| !(0.0..=1.0 + 1e-5).contains(&p)) {
        return Err(Error::invalid(
            "targets",
            "a value outside [0, 1]",
            "probabilities (pass logits through softmax_t first)",
        ));
    }
    check_labels(labels, student.nrows(), student.ncols())?;
    let (t, alpha) = (config.temperature, config.alpha);
    let n = student.nrows().max(1) as f64;
    let q_t = softmax_rows(student, t);
    let q_1 = softmax_rows(student, 1.0);
    let mut grad = Array2::zeros(student.raw_dim());
    let (mut kl, mut ce) = (0.0f64, 0.0f64);
    for (r, mut g) in grad.rows_mut().into_iter().enumerate() {
        let z = student.row(r);
        let max = z.fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let log_sum_t = z
            .iter()
            .map(|&v| ((v as f64 - max) / t as f64).exp())
            .sum::<f64>()
            .ln();
        let log_sum_1 = z.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        let y = labels[r] as usize;
        ce += log_sum_1 - (z[y] as f64 - max);
        for c in 0..z.len() {
            let p = targets[[r, c]] as f64;
            if p > 0.0 {
                let log_q = (z[c] as f64 - max) / t as f64 - log_sum_t;
                kl += p * (p.ln() - log_q);
            }
            let hard = q_1[[r, c]] as f64 - if c == y { 1.0 } else { 0.0 };
            let soft = (q_t[[r, c]] as f64 - p) * t as f64;
            g[c] = ((alpha as f64 * soft + (1.0 - alpha as f64) * hard) / n) as f32;
        }
    }
    let loss = alpha as f64 * (t as f64) * (t as f64) * kl / n + (1.0 - alpha as f64) * ce / n;
    Ok((loss as f32, grad))
}

/// The soft-target loss with one teacher given by its logits: [`softmax_t`] of
/// `teacher` at the configured temperature, then [`soft_target_loss`].
pub fn distillation_loss(
    student: ArrayView2<'_, f32>,
    teacher: ArrayView2<'_, f32>,
    labels: ArrayView1<'_, u8>,
    config: &SoftTargets,
) -> Result<(f32, Array2<f32>)> {
    check_batch(student.shape(), teacher.shape(), || {
        "teacher logits [n, classes]".into()
    })?;
    let targets = softmax_t(teacher, config.temperature)?;
    soft_target_loss(student, targets.view(), labels, config)
}

/// [`distillation_loss`] on row-major buffers, for an engine that trains on its own:
/// `student` and `teacher` hold `[n, classes]` logits, `labels` the `n` classes. Returns
/// the loss and the gradient with respect to the student's logits, row-major.
///
/// ```
/// use slimnn::distill::{SoftTargets, distillation_loss_slice};
///
/// let student = [1.0f32, 0.0, -1.0, 0.5, 0.5, 0.0];
/// let teacher = [2.0f32, 0.0, -2.0, 0.0, 1.0, 0.0];
/// let kd = SoftTargets::new(4.0, 0.7)?;
/// let (loss, grad) = distillation_loss_slice(&student, &teacher, &[0, 1], 3, &kd)?;
/// assert!(loss > 0.0 && grad.len() == 6);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn distillation_loss_slice(
    student: &[f32],
    teacher: &[f32],
    labels: &[u8],
    classes: usize,
    config: &SoftTargets,
) -> Result<(f32, Vec<f32>)> {
    let s = super::rows(student, classes, "student logits")?;
    let t = super::rows(teacher, classes, "teacher logits")?;
    let (loss, g) = distillation_loss(s, t, ArrayView1::from(labels), config)?;
    Ok((loss, g.into_raw_vec_and_offset().0))
}
