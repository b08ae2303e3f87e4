//! Stochastic gradient descent that respects masks.

use std::collections::HashMap;

use ndarray::{ArrayD, ArrayView1, ArrayView2, ArrayViewMutD, Axis, IxDyn};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;

use super::{Gradients, Network};
use crate::error::{Error, Result};
use crate::io::idx::Dataset;
use crate::lowrank::Factorization;
use crate::mask::Mask;
use crate::model::{Model, Param};
use crate::quant::{QuantizedTensor, centroid_gradients};
use crate::tensor::check_same_shape;

/// SGD with momentum and weight decay (PyTorch's update rule:
/// `v ← μ·v + g + λ·w`, `w ← w − η·v`).
///
/// Pruned weights stay pruned: where a parameter's mask prunes, neither the velocity nor
/// the stored value changes (Han et al. 2015's retraining with the mask fixed).
#[derive(Clone, Debug)]
pub struct Sgd {
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    velocity: HashMap<String, ArrayD<f32>>,
}

impl Sgd {
    /// Checks `lr > 0`, `0 ≤ momentum < 1` and `weight_decay ≥ 0`.
    pub fn new(lr: f32, momentum: f32, weight_decay: f32) -> Result<Sgd> {
        check_lr(lr)?;
        if !(0.0..1.0).contains(&momentum) {
            return Err(Error::invalid("momentum", momentum, "a value in [0, 1)"));
        }
        if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
            return Err(Error::invalid(
                "weight_decay",
                weight_decay,
                "a finite value ≥ 0",
            ));
        }
        Ok(Sgd {
            lr,
            momentum,
            weight_decay,
            velocity: HashMap::new(),
        })
    }

    /// The learning rate η.
    pub fn lr(&self) -> f32 {
        self.lr
    }

    /// Sets the learning rate (for schedules); it must stay finite and above 0.
    pub fn set_lr(&mut self, lr: f32) -> Result<()> {
        self.lr = check_lr(lr)?;
        Ok(())
    }

    /// The momentum μ.
    pub fn momentum(&self) -> f32 {
        self.momentum
    }

    /// The weight decay λ.
    pub fn weight_decay(&self) -> f32 {
        self.weight_decay
    }

    /// Applies one update from `grads` (each in its parameter's dense shape), respecting
    /// how each parameter is compressed:
    ///
    /// - **dense or pruned**: the update above; where a mask prunes, neither the velocity
    ///   nor the value changes (Han et al. 2015's retraining with the mask fixed);
    /// - **weight-shared** (quantized to a codebook, e.g. by k-means): the codes stay and
    ///   each shared value moves by the sum of the gradients of the weights that share
    ///   it (Deep Compression's centroid fine-tuning, [`centroid_gradients`]), with its
    ///   own velocity;
    /// - **factorized** (low-rank): each factor moves by its own gradient, obtained from
    ///   the dense one by the chain rule ([`Factorization::factor_gradients`]).
    ///
    /// A parameter quantized to a uniform grid has no float values left to update: that
    /// is an error; fine-tune it with [`QuantAwareTraining`](super::QuantAwareTraining)
    /// (fake quantization) instead. Either every parameter is updated or, on error, none.
    ///
    /// [`Factorization::factor_gradients`]: crate::lowrank::Factorization::factor_gradients
    pub fn step(&mut self, model: &mut Model, grads: &Gradients) -> Result<()> {
        let mut updates = Vec::with_capacity(grads.len());
        for (name, g) in grads {
            let p = model.get(name)?;
            check_same_shape(p.shape(), g.shape(), || format!("gradient of `{name}`"))?;
            updates.push((name, Update::plan(name, p, g)?));
        }
        for (name, update) in updates {
            let p = model.get_mut(name)?;
            match update {
                Update::Dense(g) => {
                    let mask = p.mask().cloned();
                    self.update(name, p.value_mut(), g, mask.as_ref())?;
                }
                Update::Codebook(mut q, g) => {
                    let mut table = ArrayD::from_shape_vec(
                        IxDyn(&[g.len()]),
                        q.table().expect("planned for a codebook").to_vec(),
                    )
                    .expect("one value per centroid");
                    let g = ArrayD::from_shape_vec(IxDyn(&[g.len()]), g).expect("same length");
                    self.update(&format!("{name}#codebook"), table.view_mut(), &g, None)?;
                    q.set_table(table.into_raw_vec_and_offset().0)?;
                    p.set_quantized(q)?;
                }
                Update::Factors(mut f, gs) => {
                    let mut parts = f.factor_values();
                    for (i, (part, g)) in parts.iter_mut().zip(&gs).enumerate() {
                        self.update(&format!("{name}#factor{i}"), part.view_mut(), g, None)?;
                    }
                    f.set_factor_values(parts)?;
                    p.set_factorization(f)?;
                }
            }
        }
        Ok(())
    }

    /// `v ← μ·v + g + λ·w`, zero where `mask` prunes; `w ← w − η·v`.
    fn update(
        &mut self,
        key: &str,
        mut w: ArrayViewMutD<'_, f32>,
        g: &ArrayD<f32>,
        mask: Option<&Mask>,
    ) -> Result<()> {
        let v = self
            .velocity
            .entry(key.to_owned())
            .or_insert_with(|| ArrayD::zeros(g.raw_dim()));
        if v.shape() != g.shape() {
            // The layer changed shape (channels removed, neurons merged): restart.
            *v = ArrayD::zeros(g.raw_dim());
        }
        let (mu, wd, lr) = (self.momentum, self.weight_decay, self.lr);
        ndarray::Zip::from(&mut *v)
            .and(g)
            .and(&w)
            .for_each(|v, &g, &w| *v = mu * *v + g + wd * w);
        if let Some(m) = mask {
            m.apply(v)?;
        }
        w.zip_mut_with(v, |w, &v| *w -= lr * v);
        Ok(())
    }
}

/// What [`Sgd::step`] does to one parameter, decided before anything changes.
enum Update<'a> {
    Dense(&'a ArrayD<f32>),
    Codebook(QuantizedTensor, Vec<f32>),
    Factors(Factorization, Vec<ArrayD<f32>>),
}

impl<'a> Update<'a> {
    fn plan(name: &str, p: &Param, g: &'a ArrayD<f32>) -> Result<Update<'a>> {
        if let Some(q) = p.quantized() {
            if q.table().is_none() {
                return Err(Error::invalid(
                    "parameter",
                    format!("`{name}`, quantized to a uniform grid"),
                    "a dense, pruned, weight-shared or factorized parameter (fine-tune \
                     uniform quantization with QuantAwareTraining)",
                ));
            }
            let sums = centroid_gradients(q, g, p.mask())?;
            return Ok(Update::Codebook(q.clone(), sums));
        }
        if let Some(f) = p.factorization() {
            let grads = f.factor_gradients(g)?;
            return Ok(Update::Factors(f.clone(), grads));
        }
        Ok(Update::Dense(g))
    }
}

fn check_lr(lr: f32) -> Result<f32> {
    if lr > 0.0 && lr.is_finite() {
        Ok(lr)
    } else {
        Err(Error::invalid("lr", lr, "a finite learning rate above 0"))
    }
}

/// One pass over `data` in shuffled mini-batches of `batch` (the order from `seed`), in
/// training mode (each batch's dropout masks from `seed` and the batch's index).
/// Returns the mean training loss.
pub fn train_epoch(
    network: &Network,
    model: &mut Model,
    sgd: &mut Sgd,
    data: &Dataset,
    batch: usize,
    seed: u64,
) -> Result<f64> {
    for_each_batch(data, batch, seed, |x, y, batch_seed| {
        let (loss, grads) = network.train_gradients(model, x, y, batch_seed)?;
        sgd.step(model, &grads)?;
        Ok(loss)
    })
}

/// Runs `step(images, labels, batch_seed)` on each shuffled mini-batch of `data` (the
/// order from `seed`; `batch_seed` differs per batch, for dropout) and returns the mean
/// of the losses it gives, weighted by batch size.
pub(super) fn for_each_batch(
    data: &Dataset,
    batch: usize,
    seed: u64,
    mut step: impl FnMut(ArrayView2<'_, f32>, ArrayView1<'_, u8>, u64) -> Result<f32>,
) -> Result<f64> {
    if data.is_empty() {
        return Err(Error::Empty {
            what: "training data set".into(),
        });
    }
    if batch == 0 {
        return Err(Error::invalid("batch", batch, "at least 1"));
    }
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed));
    let mut total = 0.0f64;
    for (b, idx) in order.chunks(batch).enumerate() {
        let x = data.images.select(Axis(0), idx);
        let y = data.labels.select(Axis(0), idx);
        let loss = step(x.view(), y.view(), super::dropout::mix(seed, b as u64))?;
        total += loss as f64 * idx.len() as f64;
    }
    Ok(total / data.len() as f64)
}
