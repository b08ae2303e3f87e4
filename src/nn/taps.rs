//! Intermediate outputs: the forward pass that also returns chosen layers' outputs,
//! and backpropagation that accepts a gradient at them (for losses on hidden layers:
//! hints, attention transfer).

use ndarray::{Array2, ArrayD, ArrayView2, Ix2, IxDyn};

use super::graph::{Mode, backward, forward};
use super::{Gradients, Network};
use crate::error::{Error, Result};
use crate::model::Model;

/// What a loss on the logits and on the tapped layers' outputs returns: the loss, its
/// gradient with respect to the logits, and for each tapped layer (in the order asked
/// for) the gradient with respect to its output, or `None` where the loss does not
/// depend on it.
pub type TappedLoss = (f32, Array2<f32>, Vec<Option<ArrayD<f32>>>);

/// The logits, the tapped outputs, and what backpropagation needs.
type Tapped = (Array2<f32>, Vec<ArrayD<f32>>, Vec<super::graph::Saved>);

impl Network {
    /// Logits `[n, classes]` and the outputs of the layers at `layers` (indices into
    /// [`layers`](Network::layers): the activation just after that layer, batch first),
    /// in evaluation mode. An index past the last layer is an error.
    pub fn forward_with_outputs(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
        layers: &[usize],
    ) -> Result<(Array2<f32>, Vec<ArrayD<f32>>)> {
        let (logits, outputs, _) = self.run_tapped(model, x, Mode::Eval, false, layers)?;
        Ok((logits, outputs))
    }

    /// Backpropagation of a loss on the logits and on the outputs of the layers at
    /// `layers`: `loss` gets the logits and those outputs and returns a [`TappedLoss`];
    /// the gradients at the tapped outputs are added to what flows back from the
    /// logits. In training mode with dropout masks from `seed` when given, evaluation
    /// mode otherwise. Returns the loss and every parameter's gradient (zero where a
    /// mask prunes).
    ///
    /// ```
    /// use slimnn::Model;
    /// use slimnn::nn::Network;
    ///
    /// let mut model = Model::new();
    /// let net = Network::mlp(&mut model, &[4, 3, 2], 1)?;
    /// let x = ndarray::Array2::from_elem((2, 4), 0.5f32);
    /// // A loss on the hidden layer only (output of layer 0, [2, 3]): ½‖h‖².
    /// let (loss, grads) = net.gradients_with(&model, x.view(), None, &[0], |logits, taps| {
    ///     let h = &taps[0];
    ///     let loss = 0.5 * h.iter().map(|v| v * v).sum::<f32>();
    ///     Ok((loss, ndarray::Array2::zeros(logits.raw_dim()), vec![Some(h.clone())]))
    /// })?;
    /// assert!(loss > 0.0);
    /// assert!(grads["fc2.weight"].iter().all(|&g| g == 0.0));
    /// assert!(grads["fc1.weight"].iter().any(|&g| g != 0.0));
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn gradients_with(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
        seed: Option<u64>,
        layers: &[usize],
        loss: impl FnOnce(ArrayView2<'_, f32>, &[ArrayD<f32>]) -> Result<TappedLoss>,
    ) -> Result<(f32, Gradients)> {
        let mode = seed.map_or(Mode::Eval, |seed| Mode::Train { seed });
        let (logits, outputs, saved) = self.run_tapped(model, x, mode, true, layers)?;
        let (value, logit_grad, tap_grads) = loss(logits.view(), &outputs)?;
        if logit_grad.dim() != logits.dim() {
            return Err(Error::ShapeMismatch {
                what: "gradient at the logits".into(),
                expected: logits.shape().to_vec(),
                got: logit_grad.shape().to_vec(),
            });
        }
        if tap_grads.len() != layers.len() {
            return Err(Error::ShapeMismatch {
                what: "gradients at the tapped layers (one per layer asked for)".into(),
                expected: vec![layers.len()],
                got: vec![tap_grads.len()],
            });
        }
        let mut extra: Vec<Option<ArrayD<f32>>> = vec![None; self.layers.len()];
        for ((&l, g), out) in layers.iter().zip(tap_grads).zip(&outputs) {
            let Some(g) = g else { continue };
            if g.shape() != out.shape() {
                return Err(Error::ShapeMismatch {
                    what: format!("gradient at the output of layer {l}"),
                    expected: out.shape().to_vec(),
                    got: g.shape().to_vec(),
                });
            }
            crate::tensor::check_finite(&g.iter().copied().collect::<Vec<_>>(), || {
                format!("gradient at the output of layer {l}")
            })?;
            extra[l] = Some(match extra[l].take() {
                Some(prev) => prev + &g,
                None => g,
            });
        }
        let mut grad = logit_grad.into_dyn();
        let mut grads = Gradients::new();
        for (i, (layer, saved)) in self.layers.iter().zip(saved).enumerate().rev() {
            if let Some(g) = extra[i].take() {
                grad += &g;
            }
            grad = backward(layer, model, saved, grad, i > 0, &mut grads)?;
        }
        Ok((value, grads))
    }

    /// [`run`](Network::run), also returning the outputs of the layers at `taps`.
    fn run_tapped(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
        mode: Mode,
        keep: bool,
        taps: &[usize],
    ) -> Result<Tapped> {
        if let Some(&bad) = taps.iter().find(|&&t| t >= self.layers.len()) {
            return Err(Error::invalid(
                "layer",
                bad,
                format!(
                    "the index of one of the network's {} layers",
                    self.layers.len()
                ),
            ));
        }
        let shape = self.check_input(model, x)?;
        let mut h = x
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&shape))
            .expect("the element count is checked");
        let mut outputs = vec![ArrayD::zeros(IxDyn(&[0])); taps.len()];
        let mut saved = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let (next, s) = forward(layer, model, h, mode, i, keep)?;
            h = next;
            for (o, _) in outputs.iter_mut().zip(taps).filter(|(_, t)| **t == i) {
                *o = h.clone();
            }
            if keep {
                saved.push(s);
            }
        }
        let out = h
            .into_dimensionality::<Ix2>()
            .expect("checked [n, classes]");
        Ok((out, outputs, saved))
    }
}
