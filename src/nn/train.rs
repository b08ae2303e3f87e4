//! Stochastic gradient descent that respects masks.

use std::collections::HashMap;

use ndarray::{ArrayD, Axis};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;

use super::{Gradients, Network};
use crate::error::{Error, Result};
use crate::io::idx::Dataset;
use crate::model::Model;
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

    /// Applies one update from `grads`.
    pub fn step(&mut self, model: &mut Model, grads: &Gradients) -> Result<()> {
        for (name, g) in grads {
            let p = model.get_mut(name)?;
            check_same_shape(p.shape(), g.shape(), || format!("gradient of `{name}`"))?;
            let v = self
                .velocity
                .entry(name.clone())
                .or_insert_with(|| ArrayD::zeros(g.raw_dim()));
            if v.shape() != g.shape() {
                // The layer changed shape (channels removed, neurons merged): restart.
                *v = ArrayD::zeros(g.raw_dim());
            }
            let (mu, wd) = (self.momentum, self.weight_decay);
            ndarray::Zip::from(&mut *v)
                .and(g)
                .and(p.value())
                .for_each(|v, &g, &w| *v = mu * *v + g + wd * w);
            if let Some(m) = p.mask() {
                m.apply(v)?;
            }
            let lr = self.lr;
            p.value_mut().zip_mut_with(v, |w, &v| *w -= lr * v);
        }
        Ok(())
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
        let batch_seed = super::dropout::mix(seed, b as u64);
        let (loss, grads) = network.train_gradients(model, x.view(), y.view(), batch_seed)?;
        sgd.step(model, &grads)?;
        total += loss as f64 * idx.len() as f64;
    }
    Ok(total / data.len() as f64)
}
