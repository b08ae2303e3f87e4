//! Joint training of an early-exit network: the weighted sum of the exits' softmax
//! cross-entropies, its gradient (branches' and trunk's summed), and an epoch of SGD.

use ndarray::{ArrayD, ArrayView1, ArrayView2, Ix2};

use super::exits::EarlyExitNetwork;
use crate::error::Result;
use crate::io::idx::Dataset;
use crate::model::Model;
use crate::nn::{
    Gradients, PartState, Sgd, backward_part, for_each_batch, forward_part, input_batch,
    seed_stream, softmax_cross_entropy,
};

/// The joint loss of a batch: `total = Σₖ wₖ·lossₖ` over the exits (side exits in
/// order, the final exit last), each `lossₖ` the mean softmax cross-entropy of exit `k`.
#[derive(Clone, Debug, PartialEq)]
pub struct JointLoss {
    /// The weighted sum.
    pub total: f32,
    /// Each exit's mean cross-entropy (unweighted); NaN for a side exit of weight 0,
    /// which is not computed.
    pub per_exit: Vec<f32>,
}

/// The stream of side branch `k`'s dropout draws (apart from the trunk's layers).
const BRANCH_STREAM: u64 = 0xB2A4_C000;

impl EarlyExitNetwork {
    /// The joint loss of a batch and its gradient with respect to every parameter of the
    /// trunk and the branches (a parameter's gradient sums the contributions of every
    /// exit whose loss depends on it). Every sample goes through every exit. In training
    /// mode with dropout (and stochastic-depth) draws from `seed` if given, else in
    /// evaluation mode (deterministic; for gradient checks). An exit of weight 0 is not
    /// computed.
    ///
    /// ```
    /// use slimnn::Model;
    /// use slimnn::dynamic::EarlyExitNetwork;
    /// use slimnn::nn::{Layer, Network};
    ///
    /// let mut model = Model::new();
    /// let trunk = Network::mlp(&mut model, &[4, 5, 3], 1)?;
    /// model.add("exit.weight", ndarray::ArrayD::from_elem(ndarray::IxDyn(&[3, 5]), 0.1))?;
    /// let net = EarlyExitNetwork::new(trunk)
    ///     .with_exit(0, vec![Layer::Linear { weight: "exit.weight".into(), bias: None }])?
    ///     .with_weights(&[0.5, 1.0])?;
    /// let x = ndarray::Array2::from_elem((2, 4), 0.3f32);
    /// let y = ndarray::array![0u8, 2];
    /// let (loss, grads) = net.loss_and_gradients(&model, x.view(), y.view(), None)?;
    /// assert!((loss.total - (0.5 * loss.per_exit[0] + loss.per_exit[1])).abs() < 1e-6);
    /// assert!(grads.contains_key("exit.weight") && grads.contains_key("fc1.weight"));
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn loss_and_gradients(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
        labels: ArrayView1<'_, u8>,
        seed: Option<u64>,
    ) -> Result<(JointLoss, Gradients)> {
        self.check(model)?;
        let mut h = input_batch(&self.trunk, model, x)?;
        let layers = self.trunk.layers();
        let mut grads = Gradients::new();
        let mut per_exit = Vec::with_capacity(self.exits.len() + 1);
        let mut total = 0.0f32;
        let mut segments: Vec<(usize, usize, PartState)> = Vec::with_capacity(self.exits.len() + 1);
        // The gradient each side exit sends back into the trunk, at its position.
        let mut taps: Vec<Option<ArrayD<f32>>> = Vec::with_capacity(self.exits.len());
        let mut start = 0;
        for (k, e) in self.exits.iter().enumerate() {
            let (next, state) =
                forward_part(&layers[start..=e.after], model, h, seed, start, true)?;
            h = next;
            segments.push((start, e.after + 1, state));
            start = e.after + 1;
            let w = self.weights[k];
            if w == 0.0 {
                per_exit.push(f32::NAN);
                taps.push(None);
                continue;
            }
            let branch_seed = seed.map(|s| seed_stream(s, BRANCH_STREAM + k as u64));
            let (out, state) = forward_part(&e.layers, model, h.clone(), branch_seed, 0, true)?;
            let out = out
                .into_dimensionality::<Ix2>()
                .expect("checked [n, classes]");
            let (loss, g) = softmax_cross_entropy(out.view(), labels)?;
            per_exit.push(loss);
            total += w * loss;
            let g = (g * w).into_dyn();
            taps.push(Some(backward_part(
                &e.layers, model, state, g, true, &mut grads,
            )?));
        }
        let (out, state) = forward_part(&layers[start..], model, h, seed, start, true)?;
        segments.push((start, layers.len(), state));
        let out = out
            .into_dimensionality::<Ix2>()
            .expect("checked [n, classes]");
        let w = *self.weights.last().expect("the final exit's weight");
        let (loss, g) = softmax_cross_entropy(out.view(), labels)?;
        per_exit.push(loss);
        total += w * loss;
        let mut grad = (g * w).into_dyn();
        for (s, (from, to, state)) in segments.into_iter().enumerate().rev() {
            if s < taps.len()
                && let Some(t) = taps[s].take()
            {
                grad += &t;
            }
            grad = backward_part(&layers[from..to], model, state, grad, s > 0, &mut grads)?;
        }
        Ok((JointLoss { total, per_exit }, grads))
    }

    /// One pass over `data` in shuffled mini-batches of `batch` (the order from `seed`),
    /// in training mode, minimising the joint loss with `sgd`. Returns the mean joint
    /// loss. The same seed gives the same model.
    pub fn train_epoch(
        &self,
        model: &mut Model,
        sgd: &mut Sgd,
        data: &Dataset,
        batch: usize,
        seed: u64,
    ) -> Result<f64> {
        for_each_batch(data, batch, seed, |x, y, batch_seed| {
            let (loss, grads) = self.loss_and_gradients(model, x, y, Some(batch_seed))?;
            sgd.step(model, &grads)?;
            Ok(loss.total)
        })
    }
}
