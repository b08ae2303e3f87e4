//! Attention transfer (Zagoruyko & Komodakis 2017, "Paying More Attention to
//! Attention"): a conv layer's spatial attention map `Q = Σ_c |A_c|^p` over its
//! channels, flattened and L2-normalised; the student is pulled to the teacher's maps,
//! `β/2·‖Q_s/‖Q_s‖ − Q_t/‖Q_t‖‖²` for each pair of layers (averaged over the batch).

use ndarray::{Array2, ArrayD, ArrayViewD, Axis, Ix4};

use super::check_finite_d;
use crate::error::{Error, Result};

/// The attention-transfer settings, checked: the weight `β ≥ 0` (finite) and the
/// exponent `p ≥ 1` of the attention map (the paper uses `p = 2`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attention {
    beta: f32,
    p: f32,
}

impl Attention {
    /// Checks `β ≥ 0` (finite) and `p ≥ 1` (finite).
    pub fn new(beta: f32, p: f32) -> Result<Attention> {
        if !(beta >= 0.0 && beta.is_finite()) {
            return Err(Error::invalid("beta", beta, "a finite weight ≥ 0"));
        }
        if !(p >= 1.0 && p.is_finite()) {
            return Err(Error::invalid("p", p, "a finite exponent ≥ 1"));
        }
        Ok(Attention { beta, p })
    }

    /// The weight `β`.
    pub fn beta(&self) -> f32 {
        self.beta
    }

    /// The exponent `p`.
    pub fn p(&self) -> f32 {
        self.p
    }
}

/// Checks a feature map `[n, c, h, w]` and gives it as 4-D.
fn as4<'a>(a: &'a ArrayViewD<'_, f32>, what: &str) -> Result<ndarray::ArrayView4<'a, f32>> {
    a.view()
        .into_dimensionality::<Ix4>()
        .map_err(|_| Error::bad_shape(what, a.shape(), "a feature map is [n, c, h, w]"))
}

/// The attention map of feature maps `a` `[n, c, h, w]`: `Σ_c |a_c|^p`, flattened to
/// `[n, h·w]` and L2-normalised per example (an all-zero map stays zero).
pub fn attention_map(a: ArrayViewD<'_, f32>, p: f32) -> Result<Array2<f32>> {
    let a4 = as4(&a, "feature maps")?;
    check_finite_d(a.view(), "feature maps")?;
    Ok(maps(a4, p).0)
}

/// The normalised maps and the norms of the unnormalised ones.
fn maps(a: ndarray::ArrayView4<'_, f32>, p: f32) -> (Array2<f32>, Vec<f64>) {
    let (n, _, h, w) = a.dim();
    let mut q = Array2::<f32>::zeros((n, h * w));
    let mut norms = Vec::with_capacity(n);
    for (i, mut qi) in q.axis_iter_mut(Axis(0)).enumerate() {
        let ai = a.index_axis(Axis(0), i);
        let mut raw = vec![0.0f64; h * w];
        for ch in ai.axis_iter(Axis(0)) {
            for (r, &v) in raw.iter_mut().zip(ch.iter()) {
                *r += (v.abs() as f64).powf(p as f64);
            }
        }
        let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (q, r) in qi.iter_mut().zip(&raw) {
            *q = if norm > 0.0 { (r / norm) as f32 } else { 0.0 };
        }
        norms.push(norm);
    }
    (q, norms)
}

/// The attention-transfer loss of one pair of layers, `β/2·(1/n)·Σ‖q_s − q_t‖²` with
/// `q` the [`attention_map`]s of the `student` and `teacher` feature maps (`[n, c, h, w]`,
/// channel counts may differ, spatial sizes may not), and its gradient with respect to
/// the student's feature maps.
pub fn attention_transfer(
    student: ArrayViewD<'_, f32>,
    teacher: ArrayViewD<'_, f32>,
    config: &Attention,
) -> Result<(f32, ArrayD<f32>)> {
    let s = as4(&student, "student feature maps")?;
    let t = as4(&teacher, "teacher feature maps")?;
    let ((n, _, h, w), (tn, _, th, tw)) = (s.dim(), t.dim());
    if (n, h, w) != (tn, th, tw) {
        return Err(Error::ShapeMismatch {
            what: "teacher feature maps [n, ·, h, w] (attention transfer pairs layers of \
                   the same spatial size)"
                .into(),
            expected: vec![n, t.dim().1, h, w],
            got: teacher.shape().to_vec(),
        });
    }
    check_finite_d(student.view(), "student feature maps")?;
    check_finite_d(teacher.view(), "teacher feature maps")?;
    let (p, beta) = (config.p as f64, config.beta as f64);
    let (qs, norms) = maps(s, config.p);
    let (qt, _) = maps(t, config.p);
    let nn = n.max(1) as f64;
    let mut loss = 0.0f64;
    let mut grad = ArrayD::<f32>::zeros(student.raw_dim());
    for (i, &norm) in norms.iter().enumerate() {
        let (qs_i, qt_i) = (qs.row(i), qt.row(i));
        let d: Vec<f64> = qs_i
            .iter()
            .zip(qt_i)
            .map(|(&a, &b)| a as f64 - b as f64)
            .collect();
        loss += d.iter().map(|v| v * v).sum::<f64>();
        if norm == 0.0 {
            continue; // q is 0 whatever small change: no gradient through the norm
        }
        // dL/dq = β·d/n; dq/dQ = (I − q qᵀ)/‖Q‖.
        let dot: f64 = d.iter().zip(qs_i).map(|(a, &b)| a * b as f64).sum();
        let dq: Vec<f64> = d
            .iter()
            .zip(qs_i)
            .map(|(&di, &qi)| beta / nn * (di - dot * qi as f64) / norm)
            .collect();
        let si = s.index_axis(Axis(0), i);
        let mut gi = grad.index_axis_mut(Axis(0), i);
        for (ch, mut gch) in si.axis_iter(Axis(0)).zip(gi.axis_iter_mut(Axis(0))) {
            for ((g, &a), &dqk) in gch.iter_mut().zip(ch.iter()).zip(&dq) {
                let a = a as f64;
                // d|a|^p/da = p·|a|^(p−1)·sign(a)
                let da = if a == 0.0 {
                    0.0
                } else {
                    p * a.abs().powf(p - 1.0) * a.signum()
                };
                *g = (dqk * da) as f32;
            }
        }
    }
    Ok(((beta / 2.0 * loss / nn) as f32, grad))
}

/// [`attention_transfer`] on row-major buffers of shapes `student_shape` and
/// `teacher_shape` (each `[n, c, h, w]`): the loss and the gradient with respect to the
/// student's feature maps, row-major.
pub fn attention_transfer_slice(
    student: &[f32],
    student_shape: &[usize],
    teacher: &[f32],
    teacher_shape: &[usize],
    config: &Attention,
) -> Result<(f32, Vec<f32>)> {
    let s = crate::tensor::view(student, student_shape)?;
    let t = crate::tensor::view(teacher, teacher_shape)?;
    let (loss, g) = attention_transfer(s, t, config)?;
    Ok((loss, g.into_raw_vec_and_offset().0))
}
