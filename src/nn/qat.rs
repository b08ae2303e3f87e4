//! Quantization-aware fine-tuning: the forward pass sees fake-quantized weights, the
//! gradient reaches the latent float weights through the straight-through estimator.

use ndarray::ArrayView1;
use ndarray::ArrayView2;

use super::train::for_each_batch;
use super::{Gradients, Network, Sgd};
use crate::error::{Error, Result};
use crate::io::idx::Dataset;
use crate::model::{Model, Selector};
use crate::quant::{Quantizer, straight_through};

/// Quantization-aware training (Jacob et al. 2018; Courbariaux et al.'s BinaryConnect
/// 2015 for the latent-weight scheme): the network keeps float *latent* weights; each
/// step quantizes the selected ones with `quantizer`, runs the forward and backward
/// pass on the quantized model, and passes the gradient to the latent weights by the
/// straight-through estimator ([`straight_through`]: unchanged inside the range the
/// quantizer represents, zero where it clipped). At the end, [`QuantAwareTraining::quantized`]
/// gives the quantized model, whose grid the training has adapted to.
///
/// Pruned weights stay pruned: the latent model's masks apply to its updates, and
/// the quantizer sees them. The selected latent parameters must hold float values: a
/// quantized one is an error.
///
/// ```
/// use ndarray::{Array2, array};
/// use slimnn::io::idx::Dataset;
/// use slimnn::nn::{Network, QuantAwareTraining, Sgd};
/// use slimnn::quant::{Granularity, Scheme, UniformQuantizer};
/// use slimnn::{Model, Selector};
///
/// let mut latent = Model::new();
/// let net = Network::mlp(&mut latent, &[4, 8, 2], 7)?;
/// let data = Dataset {
///     images: Array2::from_shape_fn((64, 4), |(i, j)| ((i * 4 + j) as f32 * 0.37).sin()),
///     labels: (0..64).map(|i| (i % 2) as u8).collect(),
///     image_shape: vec![4],
/// };
/// let qat = QuantAwareTraining::new(
///     Selector::prunable(),
///     UniformQuantizer::new(2, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })?,
/// );
/// let mut sgd = Sgd::new(0.05, 0.9, 0.0)?;
/// for epoch in 0..3 {
///     qat.train_epoch(&net, &mut latent, &mut sgd, &data, 16, epoch)?;
/// }
/// let quantized = qat.quantized(&latent)?;
/// assert!(quantized.get("fc1.weight")?.quantized().is_some());
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct QuantAwareTraining<Q> {
    selector: Selector,
    quantizer: Q,
}

impl<Q: Quantizer> QuantAwareTraining<Q> {
    /// Fake-quantizes the parameters `selector` picks with `quantizer`.
    pub fn new(selector: Selector, quantizer: Q) -> QuantAwareTraining<Q> {
        QuantAwareTraining {
            selector,
            quantizer,
        }
    }

    /// Checks that the selected parameters of `latent` hold float values (no quantized
    /// form), the weights training moves.
    pub(crate) fn check_latent(&self, latent: &Model) -> Result<()> {
        for name in latent.select(&self.selector)? {
            if latent.get(name)?.quantized().is_some() {
                return Err(Error::invalid(
                    "latent parameter",
                    format!("`{name}`, already quantized"),
                    "float latent weights (take the quantized form off with \
                     Param::take_quantized first)",
                ));
            }
        }
        Ok(())
    }

    /// The latent model with the selected parameters quantized: what the forward pass
    /// sees during training, and the result when it ends.
    pub fn quantized(&self, latent: &Model) -> Result<Model> {
        let mut model = latent.clone();
        model.quantize(&self.selector, &self.quantizer)?;
        Ok(model)
    }

    /// Maps gradients taken on `quantized` (= [`QuantAwareTraining::quantized`] of
    /// `latent`) to the latent weights by the straight-through estimator. Parameters
    /// that are not quantized keep their gradients.
    pub fn straight_through(
        &self,
        latent: &Model,
        quantized: &Model,
        mut grads: Gradients,
    ) -> Result<Gradients> {
        for name in quantized.select(&self.selector)? {
            let Some(g) = grads.get_mut(name) else {
                continue;
            };
            if let Some(q) = quantized.get(name)?.quantized() {
                *g = straight_through(g, &latent.get(name)?.effective(), q)?;
            }
        }
        Ok(grads)
    }

    /// The loss of the quantized model on a batch and the gradients for the latent
    /// weights (evaluation mode: no dropout).
    pub fn loss_and_gradients(
        &self,
        network: &Network,
        latent: &Model,
        x: ArrayView2<'_, f32>,
        labels: ArrayView1<'_, u8>,
    ) -> Result<(f32, Gradients)> {
        self.check_latent(latent)?;
        let quantized = self.quantized(latent)?;
        let (loss, grads) = network.loss_and_gradients(&quantized, x, labels)?;
        Ok((loss, self.straight_through(latent, &quantized, grads)?))
    }

    /// One pass over `data` in shuffled mini-batches, in training mode (as
    /// [`train_epoch`](super::train_epoch)), updating the latent weights. Returns the mean training loss of the quantized model.
    pub fn train_epoch(
        &self,
        network: &Network,
        latent: &mut Model,
        sgd: &mut Sgd,
        data: &Dataset,
        batch: usize,
        seed: u64,
    ) -> Result<f64> {
        self.check_latent(latent)?;
        for_each_batch(data, batch, seed, |x, y, batch_seed| {
            let quantized = self.quantized(latent)?;
            let (loss, grads) = network.train_gradients(&quantized, x, y, batch_seed)?;
            let grads = self.straight_through(latent, &quantized, grads)?;
            sgd.step(latent, &grads)?;
            Ok(loss)
        })
    }
}
