//! The forward pass (keeping what backpropagation needs) and backpropagation through
//! every layer.

use std::collections::HashMap;

use ndarray::{
    Array1, Array2, ArrayD, ArrayView1, ArrayView2, Axis, CowArray, Ix1, Ix2, Ix4, IxDyn,
};

use super::conv::{conv2d, conv2d_backward, im2col_observe, im2col_row_norms};
use super::eval::softmax_cross_entropy;
use super::{Gradients, Layer, Network, avgpool, block, dropout, norm, pool};
use crate::calib::{CalibrationStats, LayerStats};
use crate::error::{Error, Result};
use crate::kernels::matmul::matmul;
use crate::model::Model;

/// Evaluation (dropout off) or training (dropout masks from `seed`).
#[derive(Clone, Copy, Debug)]
pub(super) enum Mode {
    Eval,
    Train { seed: u64 },
}

/// What one layer keeps from the forward pass for the backward pass.
pub(super) enum Saved {
    /// Nothing: the layer is the identity (dropout in evaluation mode).
    Nothing,
    /// The layer's input (ReLU).
    Input(ArrayD<f32>),
    /// The layer's input and effective weight (Linear, Conv2d).
    Weighted(ArrayD<f32>, ArrayD<f32>),
    /// The input shape and each output's maximum position (MaxPool2d).
    Pool([usize; 4], Vec<u32>),
    /// The input shape (Flatten).
    Shape(Vec<usize>),
    /// The factors the activations were multiplied by (Dropout in training mode).
    Factors(Vec<f32>),
    /// Each branch's states, and each branch's width on axis 1 (Concat).
    Branches(Vec<Vec<Saved>>, Vec<usize>),
    /// A residual block's states: the body's (`None` if stochastic depth dropped it in
    /// this pass), the shortcut's, and the scale the body's output was multiplied by.
    Residual(Option<Vec<Saved>>, Vec<Saved>, f32),
    /// What BatchNorm's backward pass needs.
    Norm(Box<norm::Saved>),
}

impl Network {
    /// Logits `[n, classes]` for a batch `[n, features]` (evaluation mode).
    pub fn forward(&self, model: &Model, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let (out, _) = self.run(model, x, Mode::Eval, false)?;
        Ok(out)
    }

    /// Mean softmax cross-entropy of a batch and its gradient with respect to every
    /// parameter (zero where a mask prunes), in evaluation mode: dropout is off, and
    /// the result is deterministic.
    pub fn loss_and_gradients(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
        labels: ArrayView1<'_, u8>,
    ) -> Result<(f32, Gradients)> {
        let (loss, grads, _) = self.backprop(model, x, labels, Mode::Eval, false)?;
        Ok((loss, grads))
    }

    /// As [`loss_and_gradients`](Network::loss_and_gradients), in training mode:
    /// dropout layers draw their masks from `seed` (the same seed, the same masks).
    pub fn train_gradients(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
        labels: ArrayView1<'_, u8>,
        seed: u64,
    ) -> Result<(f32, Gradients)> {
        let (loss, grads, _) = self.backprop(model, x, labels, Mode::Train { seed }, false)?;
        Ok((loss, grads))
    }

    /// `‖X_j‖₂` over the batch for every input feature of every Linear layer, and for
    /// every row of the im2col columns of every Conv2d layer (`[in / groups · kh · kw]`,
    /// the flattened input dimension of its weight, over all output positions; with
    /// several groups, the groups' rows are pooled). The statistic Wanda weighs
    /// magnitudes with, keyed by weight name; evaluation mode.
    pub fn activation_norms(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
    ) -> Result<HashMap<String, Array1<f32>>> {
        let (_, saved) = self.run(model, x, Mode::Eval, true)?;
        let mut norms = HashMap::new();
        collect_norms(model, &self.layers, saved, &mut norms)?;
        Ok(norms)
    }

    /// The calibration statistics of a batch `[n, features]`: for every Linear layer,
    /// `Σ x xᵀ` and the magnitudes of its inputs; for every Conv2d layer, the same over
    /// its im2col columns (`[in / groups · kh · kw]` values at every output position of
    /// every image; with several groups, the groups' columns are pooled). Keyed by
    /// weight name; evaluation mode. For a calibration set larger than one batch, call
    /// [`observe_calibration`](Network::observe_calibration) batch by batch.
    ///
    /// ```
    /// use ndarray::{Array2, ArrayD, IxDyn};
    /// use slimnn::nn::{Layer, Network};
    /// use slimnn::Model;
    ///
    /// let mut model = Model::new();
    /// model.add("fc.weight", ArrayD::from_elem(IxDyn(&[2, 3]), 0.5f32))?;
    /// let net = Network::new(vec![Layer::Linear { weight: "fc.weight".into(), bias: None }]);
    /// let x = Array2::from_shape_vec((2, 3), vec![1.0f32, 2.0, 0.0, -1.0, 0.0, 3.0]).unwrap();
    /// let stats = net.calibration_stats(&model, x.view())?;
    /// let fc = stats.get("fc.weight").unwrap();
    /// assert_eq!(fc.rows(), 2);
    /// assert_eq!(fc.xtx()[[0, 2]], -3.0);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn calibration_stats(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
    ) -> Result<CalibrationStats> {
        let mut stats = CalibrationStats::new();
        self.observe_calibration(model, x, &mut stats)?;
        Ok(stats)
    }

    /// Adds the calibration statistics of the batch `x` to `stats` (see
    /// [`calibration_stats`](Network::calibration_stats)). On error (a batch of the wrong
    /// width, a non-finite input), `stats` may hold part of the batch.
    pub fn observe_calibration(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
        stats: &mut CalibrationStats,
    ) -> Result<()> {
        let (_, saved) = self.run(model, x, Mode::Eval, true)?;
        collect_stats(model, &self.layers, saved, stats)
    }

    /// The loss, the parameters' gradients and (with `input_grad`) the gradient with
    /// respect to the input batch `[n, features]`.
    pub(super) fn backprop(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
        labels: ArrayView1<'_, u8>,
        mode: Mode,
        input_grad: bool,
    ) -> Result<(f32, Gradients, Option<Array2<f32>>)> {
        let (logits, saved) = self.run(model, x, mode, true)?;
        let (loss, grad) = softmax_cross_entropy(logits.view(), labels)?;
        let mut grad = grad.into_dyn();
        let mut grads = Gradients::new();
        for (i, (layer, saved)) in self.layers.iter().zip(saved).enumerate().rev() {
            let need = i > 0 || input_grad;
            grad = backward(layer, model, saved, grad, need, &mut grads)?;
        }
        let dx = input_grad.then(|| {
            grad.into_shape_with_order(x.dim())
                .expect("the input's element count")
        });
        Ok((loss, grads, dx))
    }

    /// Runs the layers; with `keep`, also returns what backpropagation needs.
    pub(super) fn run(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
        mode: Mode,
        keep: bool,
    ) -> Result<(Array2<f32>, Vec<Saved>)> {
        let shape = self.check_input(model, x)?;
        let mut h = x
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&shape))
            .expect("the element count is checked");
        let mut saved = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let (next, s) = forward(layer, model, h, mode, i, keep)?;
            h = next;
            if keep {
                saved.push(s);
            }
        }
        let out = h
            .into_dimensionality::<Ix2>()
            .expect("checked [n, classes]");
        Ok((out, saved))
    }

    /// Checks the network and the batch; returns the batch's shape `[n, ..input shape]`.
    pub(super) fn check_input(&self, model: &Model, x: ArrayView2<'_, f32>) -> Result<Vec<usize>> {
        self.check(model)?;
        let example = self.example_shape(model)?;
        let features: usize = example.iter().product();
        if x.ncols() != features {
            return Err(Error::ShapeMismatch {
                what: "input batch [n, features]".into(),
                expected: vec![x.nrows(), features],
                got: x.shape().to_vec(),
            });
        }
        match x.as_slice() {
            Some(s) => crate::tensor::check_finite(s, || "input batch".into())?,
            None => crate::tensor::check_finite(&x.iter().copied().collect::<Vec<_>>(), || {
                "input batch".into()
            })?,
        }
        Ok(std::iter::once(x.nrows()).chain(example).collect())
    }
}

/// One layer forward; `index` separates the dropout streams of different layers.
pub(super) fn forward(
    layer: &Layer,
    model: &Model,
    h: ArrayD<f32>,
    mode: Mode,
    index: usize,
    keep: bool,
) -> Result<(ArrayD<f32>, Saved)> {
    let keep_weighted = |h: ArrayD<f32>, w: CowArray<'_, f32, IxDyn>| {
        if keep {
            Saved::Weighted(h, w.into_owned())
        } else {
            Saved::Nothing
        }
    };
    let keep_input = |h: ArrayD<f32>| {
        if keep {
            Saved::Input(h)
        } else {
            Saved::Nothing
        }
    };
    Ok(match layer {
        Layer::Linear { weight, bias } => {
            let w = param::<Ix2>(model, weight)?;
            let x = h.view().into_dimensionality::<Ix2>().expect("checked 2-D");
            let mut y = super::linear::forward(x, &w);
            if let Some(b) = bias {
                y += &param::<Ix1>(model, b)?;
            }
            (y.into_dyn(), keep_weighted(h, w.into_dyn()))
        }
        Layer::Conv2d { weight, bias, spec } => {
            let w = param::<Ix4>(model, weight)?;
            let b = bias
                .as_deref()
                .map(|b| param::<Ix1>(model, b))
                .transpose()?;
            let x = h.view().into_dimensionality::<Ix4>().expect("checked 4-D");
            let y = conv2d(&x, &w, b.as_deref(), *spec)?;
            (y.into_dyn(), keep_weighted(h, w.into_dyn()))
        }
        Layer::TiedConv2d {
            weight,
            bias,
            spec,
            transforms,
        } => {
            let w = CowArray::from(crate::filters::tied_bank(
                &param::<Ix4>(model, weight)?,
                transforms,
            )?);
            let b = bias
                .as_deref()
                .map(|b| param::<Ix1>(model, b))
                .transpose()?;
            let x = h.view().into_dimensionality::<Ix4>().expect("checked 4-D");
            let y = conv2d(&x, &w, b.as_deref(), *spec)?;
            (y.into_dyn(), keep_weighted(h, w.into_dyn()))
        }
        Layer::CRelu => (crate::filters::crelu(&h)?, keep_input(h)),
        Layer::MaxPool2d { kernel, stride } => {
            let x = h.view().into_dimensionality::<Ix4>().expect("checked 4-D");
            if keep {
                let (y, arg) = pool::forward(&x, *kernel, *stride)?;
                let (n, c, hh, ww) = x.dim();
                (y.into_dyn(), Saved::Pool([n, c, hh, ww], arg))
            } else {
                (
                    pool::infer(&x, *kernel, *stride)?.into_dyn(),
                    Saved::Nothing,
                )
            }
        }
        Layer::Flatten => {
            let shape = h.shape().to_vec();
            let rest: usize = shape[1..].iter().product();
            let h = standard(h);
            let y = h
                .into_shape_with_order(IxDyn(&[shape[0], rest]))
                .expect("same element count");
            (y, Saved::Shape(shape))
        }
        Layer::Relu if !keep => {
            let mut y = standard(h);
            y.mapv_inplace(|v| v.max(0.0));
            (y, Saved::Nothing)
        }
        Layer::Relu => (h.mapv(|v| v.max(0.0)), keep_input(h)),
        Layer::Dropout { p } => match mode {
            Mode::Eval => (h, Saved::Nothing),
            Mode::Train { seed } => {
                let factors = dropout::mask(h.len(), *p, dropout::mix(seed, index as u64));
                let mut y = standard(h);
                let ys = y.as_slice_mut().expect("standard layout");
                ys.iter_mut().zip(&factors).for_each(|(v, f)| *v *= f);
                (y, Saved::Factors(factors))
            }
        },
        Layer::AvgPool2d {
            kernel,
            stride,
            padding,
        } => {
            let x = h.view().into_dimensionality::<Ix4>().expect("checked 4-D");
            let win = avgpool::Window::new(*kernel, *stride, *padding)?;
            let y = avgpool::forward(&x, win)?;
            (y.into_dyn(), Saved::Shape(h.shape().to_vec()))
        }
        Layer::GlobalAvgPool => {
            let x = h.view().into_dimensionality::<Ix4>().expect("checked 4-D");
            let y = avgpool::global_forward(&x);
            (y.into_dyn(), Saved::Shape(h.shape().to_vec()))
        }
        Layer::BatchNorm { .. } if !keep && matches!(mode, Mode::Eval) => {
            let bn = batch_norm(layer).expect("a BatchNorm layer");
            (bn.infer(model, h)?, Saved::Nothing)
        }
        Layer::BatchNorm { .. } => {
            let bn = batch_norm(layer).expect("a BatchNorm layer");
            let (y, s) = bn.forward(model, h, matches!(mode, Mode::Train { .. }))?;
            (y, Saved::Norm(Box::new(s)))
        }
        Layer::Residual {
            body,
            shortcut,
            survival,
        } => block::residual_forward(body, shortcut, *survival, model, h, mode, index, keep)?,
        Layer::Concat { branches } => block::concat_forward(branches, model, h, mode, index, keep)?,
    })
}

/// One layer backward: stores the parameters' gradients (masked) in `grads` and returns
/// the gradient with respect to the layer's input (empty unless `need`).
pub(super) fn backward(
    layer: &Layer,
    model: &Model,
    saved: Saved,
    grad: ArrayD<f32>,
    need: bool,
    grads: &mut Gradients,
) -> Result<ArrayD<f32>> {
    let empty = || ArrayD::zeros(IxDyn(&[0]));
    Ok(match (layer, saved) {
        (Layer::Linear { weight, bias }, Saved::Weighted(input, w)) => {
            let g = grad.into_dimensionality::<Ix2>().expect("2-D");
            let x = input.into_dimensionality::<Ix2>().expect("2-D");
            store(grads, model, weight, matmul(g.t(), x.view()).into_dyn())?;
            if let Some(b) = bias {
                store(grads, model, b, g.sum_axis(Axis(0)).into_dyn())?;
            }
            if need {
                let w = w.into_dimensionality::<Ix2>().expect("2-D");
                matmul(g.view(), w.view()).into_dyn()
            } else {
                empty()
            }
        }
        (Layer::Conv2d { weight, bias, spec }, Saved::Weighted(input, w)) => {
            let w = w.into_dimensionality::<Ix4>().expect("4-D");
            let x = input.into_dimensionality::<Ix4>().expect("4-D");
            let dy = grad.into_dimensionality::<Ix4>().expect("4-D");
            let g = conv2d_backward(&x, &w, &dy, *spec, need)?;
            store(grads, model, weight, g.weight.into_dyn())?;
            if let Some(b) = bias {
                store(grads, model, b, g.bias.into_dyn())?;
            }
            g.input.map(|dx| dx.into_dyn()).unwrap_or_else(empty)
        }
        (
            Layer::TiedConv2d {
                weight,
                bias,
                spec,
                transforms,
            },
            Saved::Weighted(input, w),
        ) => {
            let w = w.into_dimensionality::<Ix4>().expect("4-D");
            let x = input.into_dimensionality::<Ix4>().expect("4-D");
            let dy = grad.into_dimensionality::<Ix4>().expect("4-D");
            let g = conv2d_backward(&x, &w, &dy, *spec, need)?;
            let base = crate::filters::tied_bank_backward(&g.weight, transforms)?;
            store(grads, model, weight, base.into_dyn())?;
            if let Some(b) = bias {
                store(grads, model, b, g.bias.into_dyn())?;
            }
            g.input.map(|dx| dx.into_dyn()).unwrap_or_else(empty)
        }
        (Layer::CRelu, Saved::Input(input)) => crate::filters::crelu_backward(&input, &grad)?,
        (Layer::MaxPool2d { .. }, Saved::Pool([n, c, h, w], arg)) => {
            let dy = grad.into_dimensionality::<Ix4>().expect("4-D");
            pool::backward(&dy, &arg, (n, c, h, w)).into_dyn()
        }
        (Layer::Flatten, Saved::Shape(shape)) => standard(grad)
            .into_shape_with_order(IxDyn(&shape))
            .expect("same element count"),
        (Layer::Relu, Saved::Input(input)) => {
            let mut grad = grad;
            ndarray::Zip::from(&mut grad).and(&input).for_each(|g, &x| {
                if x <= 0.0 {
                    *g = 0.0;
                }
            });
            grad
        }
        (Layer::Dropout { .. }, Saved::Factors(factors)) => {
            let mut grad = standard(grad);
            let gs = grad.as_slice_mut().expect("standard layout");
            gs.iter_mut().zip(&factors).for_each(|(g, f)| *g *= f);
            grad
        }
        (Layer::Dropout { .. }, Saved::Nothing) => grad,
        (
            Layer::AvgPool2d {
                kernel,
                stride,
                padding,
            },
            Saved::Shape(shape),
        ) => {
            let dy = grad.into_dimensionality::<Ix4>().expect("4-D");
            let win = avgpool::Window::new(*kernel, *stride, *padding)?;
            let shape = (shape[0], shape[1], shape[2], shape[3]);
            avgpool::backward(&dy, win, shape).into_dyn()
        }
        (Layer::GlobalAvgPool, Saved::Shape(shape)) => {
            let dy = grad.into_dimensionality::<Ix2>().expect("2-D");
            let shape = (shape[0], shape[1], shape[2], shape[3]);
            avgpool::global_backward(&dy, shape).into_dyn()
        }
        (Layer::BatchNorm { .. }, Saved::Norm(saved)) => {
            let bn = batch_norm(layer).expect("a BatchNorm layer");
            let g = bn.backward(*saved, grad);
            store(grads, model, bn.weight, g.weight)?;
            store(grads, model, bn.bias, g.bias)?;
            if let Some((mean, var)) = g.running {
                for (name, v) in [(bn.running_mean, mean), (bn.running_var, var)] {
                    grads.insert(format!("{name}{}", norm::RUNNING_STAT_SUFFIX), v);
                }
            }
            g.input
        }
        (Layer::Residual { body, shortcut, .. }, Saved::Residual(s_body, s_short, scale)) => {
            let saved = block::ResidualSaved {
                body: s_body,
                shortcut: s_short,
                scale,
            };
            block::residual_backward(body, shortcut, model, saved, grad, need, grads)?
        }
        (Layer::Concat { branches }, Saved::Branches(saved, widths)) => {
            block::concat_backward(branches, model, saved, &widths, grad, need, grads)?
        }
        (layer, _) => unreachable!("the forward pass saves what {layer:?} needs"),
    })
}

/// Stores a parameter's gradient, zero where its mask prunes; a parameter read by
/// several layers gets the sum of their gradients.
fn store(grads: &mut Gradients, model: &Model, name: &str, g: ArrayD<f32>) -> Result<()> {
    let mut g = standard(g);
    if let Some(m) = model.get(name)?.mask() {
        m.apply(&mut g)?;
    }
    match grads.get_mut(name) {
        Some(prev) => *prev += &g,
        None => {
            grads.insert(name.to_string(), g);
        }
    }
    Ok(())
}

/// A parameter's effective values (mask applied) in dimension `D`.
/// The effective values of parameter `name`, borrowed unless a mask must be applied (an
/// inference pass then copies nothing).
fn param<'a, D: ndarray::Dimension>(model: &'a Model, name: &str) -> Result<CowArray<'a, f32, D>> {
    let p = model.get(name)?;
    let value = match p.mask() {
        None => CowArray::from(p.value().view()),
        Some(_) => CowArray::from(p.effective()),
    };
    value.into_dimensionality::<D>().map_err(|_| {
        Error::bad_shape(
            format!("`{name}`"),
            p.shape(),
            format!("expected {}-D", D::NDIM.unwrap_or(0)),
        )
    })
}

/// The names and settings of a [`Layer::BatchNorm`].
pub(super) fn batch_norm(layer: &Layer) -> Option<norm::BatchNorm<'_>> {
    match layer {
        Layer::BatchNorm {
            weight,
            bias,
            running_mean,
            running_var,
            eps,
            momentum,
        } => Some(norm::BatchNorm {
            weight,
            bias,
            running_mean,
            running_var,
            eps: *eps,
            momentum: *momentum,
        }),
        _ => None,
    }
}

/// `a` in standard (row-major) layout, copied only if it is not.
pub(super) fn standard(a: ArrayD<f32>) -> ArrayD<f32> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// Wanda's statistics of the Linear and Conv2d layers among `layers` (recursing into
/// blocks), from their saved inputs.
fn collect_norms(
    model: &Model,
    layers: &[Layer],
    saved: Vec<Saved>,
    norms: &mut HashMap<String, Array1<f32>>,
) -> Result<()> {
    for (layer, saved) in layers.iter().zip(saved) {
        match (layer, saved) {
            (Layer::Linear { weight, .. }, Saved::Weighted(input, _)) => {
                let n = input.map_axis(Axis(0), |c| c.iter().map(|v| v * v).sum::<f32>().sqrt());
                norms.insert(weight.clone(), n.into_dimensionality::<Ix1>().expect("1-D"));
            }
            (Layer::Conv2d { weight, spec, .. }, Saved::Weighted(input, _)) => {
                let w = model.get(weight)?.shape();
                let x = input.into_dimensionality::<Ix4>().expect("checked 4-D");
                let n = im2col_row_norms(&x, (w[0], w[1], w[2], w[3]), *spec)?;
                norms.insert(weight.clone(), n);
            }
            (Layer::Residual { body, shortcut, .. }, Saved::Residual(s_body, s_short, _)) => {
                if let Some(s_body) = s_body {
                    collect_norms(model, body, s_body, norms)?;
                }
                collect_norms(model, shortcut, s_short, norms)?;
            }
            (Layer::Concat { branches }, Saved::Branches(saved, _)) => {
                for (branch, saved) in branches.iter().zip(saved) {
                    collect_norms(model, branch, saved, norms)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The calibration statistics of the Linear and Conv2d layers among `layers`
/// (recursing into blocks), from their saved inputs, added to `stats`.
fn collect_stats(
    model: &Model,
    layers: &[Layer],
    saved: Vec<Saved>,
    stats: &mut CalibrationStats,
) -> Result<()> {
    fn entry<'s>(stats: &'s mut CalibrationStats, name: &str, inputs: usize) -> &'s mut LayerStats {
        if stats.get(name).is_none() {
            stats.insert(name, LayerStats::new(inputs));
        }
        stats.get_mut(name).expect("inserted")
    }
    for (layer, saved) in layers.iter().zip(saved) {
        match (layer, saved) {
            (Layer::Linear { weight, .. }, Saved::Weighted(input, _)) => {
                let x = input.into_dimensionality::<Ix2>().expect("checked 2-D");
                entry(stats, weight, x.ncols()).observe_view(x.view())?;
            }
            (Layer::Conv2d { weight, spec, .. }, Saved::Weighted(input, _)) => {
                let w = model.get(weight)?.shape();
                let x = input.into_dimensionality::<Ix4>().expect("checked 4-D");
                let s = entry(stats, weight, w[1] * w[2] * w[3]);
                im2col_observe(&x, (w[0], w[1], w[2], w[3]), *spec, s)?;
            }
            (Layer::Residual { body, shortcut, .. }, Saved::Residual(s_body, s_short, _)) => {
                if let Some(s_body) = s_body {
                    collect_stats(model, body, s_body, stats)?;
                }
                collect_stats(model, shortcut, s_short, stats)?;
            }
            (Layer::Concat { branches }, Saved::Branches(saved, _)) => {
                for (branch, saved) in branches.iter().zip(saved) {
                    collect_stats(model, branch, saved, stats)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}
