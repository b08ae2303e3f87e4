//! Hints (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets"): a student's
//! intermediate output (the *guided* layer), passed through a trained regressor, is
//! pulled to a teacher's intermediate output (the *hint* layer),
//! `L = 1/(2n)·‖r(v_student) − u_teacher‖²`. The regressor is a Linear layer for vectors
//! and a 1×1 convolution for feature maps (the paper uses a convolution, so that the
//! regressor stays small).

use ndarray::{Array1, Array2, ArrayD, ArrayViewD, Axis, Ix2, IxDyn};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

use super::{check_finite_d, check_same};
use crate::error::{Error, Result};

/// What a [`Regressor`] applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegressorKind {
    /// `y = x Wᵀ + b` on vectors `[n, in]`.
    Linear,
    /// A 1×1 convolution on feature maps `[n, in, h, w]` (the same Linear map at every
    /// position), giving `[n, out, h, w]`.
    Conv1x1,
}

/// A hint regressor: weight `[out, in]` and bias `[out]`, trained with the student
/// (Romero et al.'s `r(·; W_r)`).
#[derive(Clone, Debug, PartialEq)]
pub struct Regressor {
    kind: RegressorKind,
    weight: Array2<f32>,
    bias: Array1<f32>,
    velocity: Option<(Array2<f32>, Array1<f32>)>,
}

/// The gradients of a [`Regressor`]'s parameters and input.
#[derive(Clone, Debug, PartialEq)]
pub struct RegressorGradients {
    /// Gradient of the weight `[out, in]`.
    pub weight: Array2<f32>,
    /// Gradient of the bias `[out]`.
    pub bias: Array1<f32>,
    /// Gradient with respect to the regressor's input, in the input's shape.
    pub input: ArrayD<f32>,
}

impl Regressor {
    /// A regressor from `inputs` to `outputs` channels, initialised as PyTorch does
    /// (uniform in `±1/√inputs`), reproducibly from `seed`.
    pub fn new(kind: RegressorKind, inputs: usize, outputs: usize, seed: u64) -> Result<Regressor> {
        if inputs == 0 || outputs == 0 {
            return Err(Error::invalid(
                "regressor size",
                format!("{inputs} → {outputs}"),
                "non-zero input and output channels",
            ));
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let bound = 1.0 / (inputs as f32).sqrt();
        let mut u = || ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound;
        let weight = Array2::from_shape_simple_fn((outputs, inputs), &mut u);
        let bias = Array1::from_shape_simple_fn(outputs, &mut u);
        Regressor::from_parts(kind, weight, bias)
    }

    /// A regressor with the given weight `[out, in]` and bias `[out]` (checked finite and
    /// of matching sizes).
    pub fn from_parts(
        kind: RegressorKind,
        weight: Array2<f32>,
        bias: Array1<f32>,
    ) -> Result<Regressor> {
        if bias.len() != weight.nrows() {
            return Err(Error::ShapeMismatch {
                what: "regressor bias".into(),
                expected: vec![weight.nrows()],
                got: vec![bias.len()],
            });
        }
        check_finite_d(weight.view().into_dyn(), "regressor weight")?;
        check_finite_d(bias.view().into_dyn(), "regressor bias")?;
        Ok(Regressor {
            kind,
            weight,
            bias,
            velocity: None,
        })
    }

    /// Linear or 1×1 convolution.
    pub fn kind(&self) -> RegressorKind {
        self.kind
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Array2<f32> {
        &self.weight
    }

    /// The bias `[out]`.
    pub fn bias(&self) -> &Array1<f32> {
        &self.bias
    }

    /// The shape of the output for an input of `shape` (batch included), or a typed
    /// error if the regressor does not fit it.
    pub fn output_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        let (out, inp) = self.weight.dim();
        let fits = match self.kind {
            RegressorKind::Linear => shape.len() == 2 && shape[1] == inp,
            RegressorKind::Conv1x1 => shape.len() == 4 && shape[1] == inp,
        };
        if !fits {
            let mut expected = shape.to_vec();
            match self.kind {
                RegressorKind::Linear => expected = vec![shape.first().copied().unwrap_or(0), inp],
                RegressorKind::Conv1x1 if shape.len() == 4 => expected[1] = inp,
                RegressorKind::Conv1x1 => {
                    expected = vec![shape.first().copied().unwrap_or(0), inp, 0, 0]
                }
            }
            return Err(Error::ShapeMismatch {
                what: format!("input of a {:?} hint regressor", self.kind),
                expected,
                got: shape.to_vec(),
            });
        }
        let mut s = shape.to_vec();
        s[1] = out;
        Ok(s)
    }

    /// `x` as rows `[positions, in]` (positions = n, or n·h·w for feature maps).
    fn rows(&self, x: &ArrayViewD<'_, f32>) -> Array2<f32> {
        match self.kind {
            RegressorKind::Linear => x
                .view()
                .into_dimensionality::<Ix2>()
                .expect("checked")
                .to_owned(),
            RegressorKind::Conv1x1 => {
                let s = x.shape();
                let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
                x.view()
                    .permuted_axes(IxDyn(&[0, 2, 3, 1]))
                    .as_standard_layout()
                    .into_owned()
                    .into_shape_with_order((n * h * w, c))
                    .expect("same element count")
            }
        }
    }

    /// Rows `[positions, c]` back to the layout of `shape` (`[n, c]` or `[n, c, h, w]`).
    fn unrows(&self, y: Array2<f32>, shape: &[usize]) -> ArrayD<f32> {
        match self.kind {
            RegressorKind::Linear => y.into_dyn(),
            RegressorKind::Conv1x1 => {
                let (n, h, w) = (shape[0], shape[2], shape[3]);
                let c = y.ncols();
                y.into_shape_with_order(IxDyn(&[n, h, w, c]))
                    .expect("same element count")
                    .permuted_axes(IxDyn(&[0, 3, 1, 2]))
                    .as_standard_layout()
                    .into_owned()
            }
        }
    }

    /// The regressor applied to `x` (`[n, in]` for Linear, `[n, in, h, w]` for 1×1
    /// convolution).
    pub fn forward(&self, x: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>> {
        let out = self.output_shape(x.shape())?;
        check_finite_d(x.view(), "regressor input")?;
        let y = self.rows(&x).dot(&self.weight.t()) + &self.bias;
        Ok(self.unrows(y, &out))
    }

    /// The gradients of the weight, bias and input given `dy`, the gradient at the
    /// output, for input `x`.
    pub fn backward(
        &self,
        x: ArrayViewD<'_, f32>,
        dy: ArrayViewD<'_, f32>,
    ) -> Result<RegressorGradients> {
        let out = self.output_shape(x.shape())?;
        check_same(&out, dy.shape(), || {
            "gradient at the regressor's output".into()
        })?;
        let xr = self.rows(&x);
        let dyr = self.rows_of_output(&dy);
        Ok(RegressorGradients {
            weight: dyr.t().dot(&xr),
            bias: dyr.sum_axis(Axis(0)),
            input: self.unrows(dyr.dot(&self.weight), x.shape()),
        })
    }

    fn rows_of_output(&self, dy: &ArrayViewD<'_, f32>) -> Array2<f32> {
        self.rows(dy)
    }

    /// One SGD step with momentum on the regressor (`v ← μ·v + g`, `w ← w − η·v`), from
    /// gradients given by [`Regressor::backward`]; all or nothing (checked finite).
    pub fn step(&mut self, g: &RegressorGradients, lr: f32, momentum: f32) -> Result<()> {
        let (mut vw, mut vb) = self.velocity.take().unwrap_or_else(|| {
            (
                Array2::zeros(self.weight.raw_dim()),
                Array1::zeros(self.bias.raw_dim()),
            )
        });
        vw = vw * momentum + &g.weight;
        vb = vb * momentum + &g.bias;
        let w = &self.weight - &(&vw * lr);
        let b = &self.bias - &(&vb * lr);
        check_finite_d(w.view().into_dyn(), "regressor weight after the update")?;
        check_finite_d(b.view().into_dyn(), "regressor bias after the update")?;
        self.weight = w;
        self.bias = b;
        self.velocity = Some((vw, vb));
        Ok(())
    }
}

/// The hint loss of the regressor's output `guided` against the teacher's hint layer
/// output `hint` (same shape, batch first), `1/(2n)·‖guided − hint‖²`, and its gradient
/// with respect to `guided`, `(guided − hint)/n`.
pub fn hint_loss(
    guided: ArrayViewD<'_, f32>,
    hint: ArrayViewD<'_, f32>,
) -> Result<(f32, ArrayD<f32>)> {
    check_same(guided.shape(), hint.shape(), || {
        "teacher hint layer output (the regressor's output shape)".into()
    })?;
    check_finite_d(guided.view(), "regressor output")?;
    check_finite_d(hint.view(), "teacher hint")?;
    let n = guided.shape().first().copied().unwrap_or(1).max(1) as f32;
    let diff = &guided - &hint;
    let loss = diff.iter().map(|&d| d as f64 * d as f64).sum::<f64>() / (2.0 * n as f64);
    Ok((loss as f32, diff / n))
}

/// [`hint_loss`] on row-major buffers of shape `shape` (batch first): the loss and the
/// gradient with respect to `guided`, row-major.
pub fn hint_loss_slice(guided: &[f32], hint: &[f32], shape: &[usize]) -> Result<(f32, Vec<f32>)> {
    let g = crate::tensor::view(guided, shape)?;
    let h = crate::tensor::view(hint, shape)?;
    let (loss, grad) = hint_loss(g, h)?;
    Ok((loss, grad.as_standard_layout().iter().copied().collect()))
}
