//! Block layers: sub-sequences of layers inside one layer of a [`Network`](super::Network).
//!
//! The network stays a list of layers; a block holds lists of its own, all fed the
//! block's input: [`Layer::Residual`] adds its body's and shortcut's outputs,
//! [`Layer::Concat`] concatenates its branches' outputs on axis 1. Forward, backward
//! and shape inference recurse into them, so an output can feed several layers while
//! every pass stays a walk down a tree.

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use super::graph::{Mode, Saved, backward, forward};
use super::{Gradients, Layer, dropout};
use crate::error::{Error, Result};
use crate::model::Model;

/// The mode of branch `branch` of the block at `index`: its own dropout streams.
fn branch_mode(mode: Mode, index: usize, branch: usize) -> Mode {
    match mode {
        Mode::Eval => Mode::Eval,
        Mode::Train { seed } => Mode::Train {
            seed: dropout::mix(dropout::mix(seed, index as u64), branch as u64),
        },
    }
}

/// Runs `layers` in order on `h`; with `keep`, also returns what backpropagation
/// needs, one [`Saved`] per layer.
pub(super) fn forward_seq(
    layers: &[Layer],
    model: &Model,
    mut h: ArrayD<f32>,
    mode: Mode,
    keep: bool,
) -> Result<(ArrayD<f32>, Vec<Saved>)> {
    let mut saved = Vec::with_capacity(if keep { layers.len() } else { 0 });
    for (i, layer) in layers.iter().enumerate() {
        let (next, s) = forward(layer, model, h, mode, i, keep)?;
        h = next;
        if keep {
            saved.push(s);
        }
    }
    Ok((h, saved))
}

/// Backpropagation through `layers` (the reverse of [`forward_seq`]): the gradient
/// with respect to their input (empty unless `need`).
pub(super) fn backward_seq(
    layers: &[Layer],
    model: &Model,
    saved: Vec<Saved>,
    mut grad: ArrayD<f32>,
    need: bool,
    grads: &mut Gradients,
) -> Result<ArrayD<f32>> {
    for (i, (layer, saved)) in layers.iter().zip(saved).enumerate().rev() {
        grad = backward(layer, model, saved, grad, i > 0 || need, grads)?;
    }
    Ok(grad)
}

/// Whether stochastic depth keeps a residual block's body in a training pass: a draw
/// below `survival` from the pass's seed and the block's index (its own stream, apart
/// from the branches' dropout streams), so once per batch and reproducibly.
fn survives(survival: f32, mode: Mode, index: usize) -> bool {
    match mode {
        Mode::Eval => true,
        Mode::Train { .. } if survival >= 1.0 => true,
        Mode::Train { seed } => {
            let u = dropout::mix(dropout::mix(seed, index as u64), u64::MAX) >> 40;
            // A uniform draw on the 2²⁴ multiples of 2⁻²⁴: P(keep) = survival (to 2⁻²⁴).
            (u as f64) < survival as f64 * (1u64 << 24) as f64
        }
    }
}

/// What a residual block keeps for backpropagation.
pub(super) struct ResidualSaved {
    /// The body's states, `None` if stochastic depth dropped it in this pass.
    pub(super) body: Option<Vec<Saved>>,
    /// The shortcut's states.
    pub(super) shortcut: Vec<Saved>,
    /// The scale of the body's output (the survival probability in evaluation mode).
    pub(super) scale: f32,
}

/// `body(x) + shortcut(x)`, with stochastic depth: in training mode the body runs with
/// probability `survival` (else `y = shortcut(x)`), in evaluation mode its output is
/// scaled by `survival` (`survival = 1` is the plain block, bit for bit).
#[allow(clippy::too_many_arguments)]
pub(super) fn residual_forward(
    body: &[Layer],
    shortcut: &[Layer],
    survival: f32,
    model: &Model,
    h: ArrayD<f32>,
    mode: Mode,
    index: usize,
    keep: bool,
) -> Result<(ArrayD<f32>, Saved)> {
    let runs = survives(survival, mode, index);
    let scale = match mode {
        Mode::Eval => survival,
        Mode::Train { .. } => 1.0,
    };
    if !runs {
        let (y, s_short) = forward_seq(shortcut, model, h, branch_mode(mode, index, 1), keep)?;
        let saved = if keep {
            Saved::Residual(None, s_short, 0.0)
        } else {
            Saved::Nothing
        };
        return Ok((y, saved));
    }
    let (short, s_short) = forward_seq(
        shortcut,
        model,
        h.clone(),
        branch_mode(mode, index, 1),
        keep,
    )?;
    let (mut y, s_body) = forward_seq(body, model, h, branch_mode(mode, index, 0), keep)?;
    if scale != 1.0 {
        y.mapv_inplace(|v| v * scale);
    }
    y += &short;
    let saved = if keep {
        Saved::Residual(Some(s_body), s_short, scale)
    } else {
        Saved::Nothing
    };
    Ok((y, saved))
}

/// The gradient of a residual block with respect to its input (empty unless `need`).
pub(super) fn residual_backward(
    body: &[Layer],
    shortcut: &[Layer],
    model: &Model,
    saved: ResidualSaved,
    grad: ArrayD<f32>,
    need: bool,
    grads: &mut Gradients,
) -> Result<ArrayD<f32>> {
    let Some(s_body) = saved.body else {
        return backward_seq(shortcut, model, saved.shortcut, grad, need, grads);
    };
    let d_short = backward_seq(shortcut, model, saved.shortcut, grad.clone(), need, grads)?;
    let mut grad = grad;
    if saved.scale != 1.0 {
        grad.mapv_inplace(|g| g * saved.scale);
    }
    let mut dx = backward_seq(body, model, s_body, grad, need, grads)?;
    if need {
        dx += &d_short;
    }
    Ok(dx)
}

/// The branches' outputs concatenated on axis 1; saves each branch's state and width.
pub(super) fn concat_forward(
    branches: &[Vec<Layer>],
    model: &Model,
    h: ArrayD<f32>,
    mode: Mode,
    index: usize,
    keep: bool,
) -> Result<(ArrayD<f32>, Saved)> {
    let mut outputs = Vec::with_capacity(branches.len());
    let mut saved = Vec::with_capacity(branches.len());
    for (b, branch) in branches.iter().enumerate() {
        let (y, s) = forward_seq(branch, model, h.clone(), branch_mode(mode, index, b), keep)?;
        outputs.push(y);
        saved.push(s);
    }
    let widths: Vec<usize> = outputs.iter().map(|y| y.shape()[1]).collect();
    let views: Vec<_> = outputs.iter().map(|y| y.view()).collect();
    let y = ndarray::concatenate(Axis(1), &views)?;
    let saved = if keep {
        Saved::Branches(saved, widths)
    } else {
        Saved::Nothing
    };
    Ok((y, saved))
}

/// The gradient of a concatenation with respect to its input (empty unless `need`):
/// each branch gets its slice of `grad`, and the branches' input gradients add up.
pub(super) fn concat_backward(
    branches: &[Vec<Layer>],
    model: &Model,
    saved: Vec<Vec<Saved>>,
    widths: &[usize],
    grad: ArrayD<f32>,
    need: bool,
    grads: &mut Gradients,
) -> Result<ArrayD<f32>> {
    let mut dx: Option<ArrayD<f32>> = None;
    let mut start = 0;
    for ((branch, saved), &w) in branches.iter().zip(saved).zip(widths) {
        let g = grad
            .slice_axis(Axis(1), Slice::from(start..start + w))
            .as_standard_layout()
            .into_owned();
        start += w;
        let d = backward_seq(branch, model, saved, g, need, grads)?;
        if need {
            dx = Some(match dx {
                Some(mut acc) => {
                    acc += &d;
                    acc
                }
                None => d,
            });
        }
    }
    Ok(dx.unwrap_or_else(|| ArrayD::zeros(IxDyn(&[0]))))
}

/// The output shape of `layers` for an example of `shape`.
pub(super) fn seq_output(layers: &[Layer], model: &Model, shape: &[usize]) -> Result<Vec<usize>> {
    let mut shape = shape.to_vec();
    for layer in layers {
        shape = super::shape::layer_output(layer, model, &shape)?;
    }
    Ok(shape)
}

/// The output shape of a residual block: the body's and the shortcut's must agree.
pub(super) fn residual_output(
    body: &[Layer],
    shortcut: &[Layer],
    model: &Model,
    shape: &[usize],
) -> Result<Vec<usize>> {
    let b = seq_output(body, model, shape)?;
    let s = seq_output(shortcut, model, shape)?;
    if b != s {
        return Err(Error::ShapeMismatch {
            what: format!(
                "residual block: body output {b:?} vs shortcut output{} (add a \
                 strided 1×1 convolution shortcut to change the shape)",
                if shortcut.is_empty() {
                    " (the identity)"
                } else {
                    ""
                }
            ),
            expected: b,
            got: s,
        });
    }
    Ok(b)
}

/// The output shape of a concatenation: every branch's output agrees with the first's
/// except on the concatenated axis (the first of an example's shape).
pub(super) fn concat_output(
    branches: &[Vec<Layer>],
    model: &Model,
    shape: &[usize],
) -> Result<Vec<usize>> {
    if branches.is_empty() {
        return Err(Error::Empty {
            what: "concatenation (no branches)".into(),
        });
    }
    let mut out: Option<Vec<usize>> = None;
    for (b, branch) in branches.iter().enumerate() {
        let s = seq_output(branch, model, shape)?;
        match &mut out {
            None => out = Some(s),
            Some(o) => {
                if o.len() != s.len() || o[1..] != s[1..] {
                    let mut expected = o.clone();
                    expected[0] = s[0];
                    return Err(Error::ShapeMismatch {
                        what: format!(
                            "output of concatenated branch {b} (all but the channels \
                             must agree with branch 0's {o:?})"
                        ),
                        expected,
                        got: s,
                    });
                }
                o[0] += s[0];
            }
        }
    }
    Ok(out.expect("at least one branch"))
}
