//! Parts of a network run on their own: a run of layers applied to an activation,
//! forward (keeping what backpropagation needs) and backward. For networks assembled
//! from parts, such as early-exit networks ([`crate::dynamic`]), which run a trunk in
//! segments and side branches on the activations between them.

use ndarray::{ArrayD, ArrayView2, IxDyn};

use super::graph::{Mode, Saved, backward, forward};
use super::{Gradients, Layer, Network};
use crate::error::Result;
use crate::model::Model;

/// What a part's forward pass keeps for its backward pass.
pub(crate) struct PartState(Vec<Saved>);

/// The batch `[n, features]` reshaped to `[n, ..input shape]` of `net`, after checking
/// its width and that it is finite. The caller has checked `net` against `model`
/// ([`Network::check`]), so that a pass pays for one shape inference, not two.
pub(crate) fn input_batch(
    net: &Network,
    model: &Model,
    x: ArrayView2<'_, f32>,
) -> Result<ArrayD<f32>> {
    let example = net.example_shape(model)?;
    let features: usize = example.iter().product();
    if x.ncols() != features {
        return Err(crate::Error::ShapeMismatch {
            what: "input batch [n, features]".into(),
            expected: vec![x.nrows(), features],
            got: x.shape().to_vec(),
        });
    }
    let x = x.as_standard_layout().into_owned();
    crate::tensor::check_finite(x.as_slice().expect("standard layout"), || {
        "input batch".into()
    })?;
    let shape: Vec<usize> = std::iter::once(x.nrows()).chain(example).collect();
    Ok(x.into_shape_with_order(IxDyn(&shape))
        .expect("the element count is checked"))
}

/// Applies `layers` to `h`, in training mode with dropout (and stochastic-depth) draws
/// from `seed` if given, else in evaluation mode. Layer `i` uses the stream of index
/// `first + i`, so the segments of a network run one after the other draw as the
/// whole network does. With `keep`, the state holds what [`backward_part`] needs.
pub(crate) fn forward_part(
    layers: &[Layer],
    model: &Model,
    mut h: ArrayD<f32>,
    seed: Option<u64>,
    first: usize,
    keep: bool,
) -> Result<(ArrayD<f32>, PartState)> {
    let mode = seed.map_or(Mode::Eval, |seed| Mode::Train { seed });
    let mut saved = Vec::with_capacity(if keep { layers.len() } else { 0 });
    for (i, layer) in layers.iter().enumerate() {
        let (next, s) = forward(layer, model, h, mode, first + i, keep)?;
        h = next;
        if keep {
            saved.push(s);
        }
    }
    Ok((h, PartState(saved)))
}

/// Backpropagation of `grad` (at the output of `layers`) through a part run with
/// `keep`: adds the parameters' gradients to `grads` and returns the gradient with
/// respect to the part's input (empty unless `need_input`).
pub(crate) fn backward_part(
    layers: &[Layer],
    model: &Model,
    state: PartState,
    mut grad: ArrayD<f32>,
    need_input: bool,
    grads: &mut Gradients,
) -> Result<ArrayD<f32>> {
    for (i, (layer, saved)) in layers.iter().zip(state.0).enumerate().rev() {
        grad = backward(layer, model, saved, grad, i > 0 || need_input, grads)?;
    }
    Ok(grad)
}

/// An independent seed for stream `index` of `seed`.
pub(crate) fn seed_stream(seed: u64, index: u64) -> u64 {
    super::dropout::mix(seed, index)
}
