//! Stochastic gradient descent that respects masks.

use std::collections::HashMap;

use ndarray::{ArrayD, ArrayView1, ArrayView2, Axis, IxDyn};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;

use super::{Gradients, Network};
use crate::error::{Error, Result};
use crate::io::idx::Dataset;
use crate::lowrank::Factorization;
use crate::mask::Mask;
use crate::model::{Model, Param};
use crate::quant::{Decoding, Granularity, Levels, QuantizedTensor, centroid_gradients};
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
    forms: HashMap<String, Form>,
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
            forms: HashMap::new(),
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
    /// - **weight-shared** (a per-tensor codebook of the weights' own values, as k-means
    ///   makes): the codes stay and each shared value moves by the sum of the gradients
    ///   of the weights that share it (Deep Compression's centroid fine-tuning,
    ///   [`centroid_gradients`]), with its own velocity;
    /// - **factorized** (low-rank): each factor moves by its own gradient, obtained from
    ///   the dense one by the chain rule ([`Factorization::factor_gradients`]).
    ///
    /// Weight decay applies to what is stored and updated: the weights, the shared
    /// values, the factors.
    ///
    /// A parameter quantized to a grid (uniform, power-of-two, binary, ternary, product
    /// codes) has no float values left to move: that is an error; remove the quantized
    /// form ([`Param::take_quantized`]) and fine-tune it with
    /// [`QuantAwareTraining`](super::QuantAwareTraining) (fake quantization) instead. A
    /// non-finite gradient, or an update that overflows, is an error too. Either every
    /// parameter is updated or, on error, none (nor any velocity).
    ///
    /// Entries under keys ending in [`RUNNING_STAT_SUFFIX`](super::RUNNING_STAT_SUFFIX)
    /// are not gradients but the new running statistics of BatchNorm layers (from a
    /// training-mode pass): they are assigned as they are.
    ///
    /// A parameter that changes form (dense → shared → …) starts with zero velocity;
    /// after re-quantizing or re-factorizing it in the same form, call [`Sgd::reset`].
    ///
    /// [`Factorization::factor_gradients`]: crate::lowrank::Factorization::factor_gradients
    pub fn step(&mut self, model: &mut Model, grads: &Gradients) -> Result<()> {
        let mut planned = Vec::with_capacity(grads.len());
        let mut running = Vec::new();
        for (name, g) in grads {
            if let Some(target) = name.strip_suffix(super::RUNNING_STAT_SUFFIX) {
                running.push((target, check_running(model, target, g)?));
                continue;
            }
            let p = model.get(name)?;
            check_same_shape(p.shape(), g.shape(), || format!("gradient of `{name}`"))?;
            let what = || format!("gradient of `{name}`");
            match g.as_slice_memory_order() {
                Some(values) => crate::tensor::check_finite(values, what)?,
                None => crate::tensor::check_finite(&g.iter().copied().collect::<Vec<_>>(), what)?,
            }
            planned.push((name, self.plan(name, p, g)?));
        }
        for (name, (form, velocities, value)) in planned {
            if self.forms.get(name) != Some(&form) {
                let prefix = format!("{name}#");
                self.velocity
                    .retain(|k, _| k != name && !k.starts_with(&prefix));
                self.forms.insert(name.clone(), form);
            }
            self.velocity.extend(velocities);
            let p = model.get_mut(name)?;
            match value {
                NewValue::Dense(w) => p.value_mut().assign(&w),
                NewValue::Codebook(q) => p.set_quantized(q)?,
                NewValue::Factors(f) => p.set_factorization(f)?,
            }
        }
        for (name, value) in running {
            model.get_mut(name)?.value_mut().assign(value);
        }
        Ok(())
    }

    /// Forgets every velocity (the next step starts from zero momentum).
    pub fn reset(&mut self) {
        self.velocity.clear();
        self.forms.clear();
    }

    /// The new velocities and value of one parameter; changes nothing.
    fn plan(&self, name: &str, p: &Param, g: &ArrayD<f32>) -> Result<Planned> {
        if let Some(q) = p.quantized() {
            let table = shared_values(q).ok_or_else(|| {
                Error::invalid(
                    "parameter",
                    format!("`{name}`, quantized to a grid"),
                    "a dense, pruned, weight-shared or factorized parameter (take the \
                     quantized form off with Param::take_quantized and fine-tune it with \
                     QuantAwareTraining)",
                )
            })?;
            let sums = centroid_gradients(q, g, p.mask())?;
            let key = format!("{name}#codebook");
            let c = ArrayD::from_shape_vec(IxDyn(&[table.len()]), table.to_vec())
                .expect("one value per entry");
            let gc = ArrayD::from_shape_vec(IxDyn(&[sums.len()]), sums).expect("same length");
            let (v, c) = self.next(&key, &c, &gc, None, name)?;
            let mut q = q.clone();
            q.set_table(c.into_raw_vec_and_offset().0)?;
            return Ok((Form::Codebook, vec![(key, v)], NewValue::Codebook(q)));
        }
        if let Some(f) = p.factorization() {
            let grads = f.factor_gradients(g)?;
            let mut velocities = Vec::with_capacity(grads.len());
            let mut parts = Vec::with_capacity(grads.len());
            for (i, (part, g)) in f.factor_values().iter().zip(&grads).enumerate() {
                let key = format!("{name}#factor{i}");
                let (v, part) = self.next(&key, part, g, None, name)?;
                velocities.push((key, v));
                parts.push(part);
            }
            let mut f = f.clone();
            f.set_factor_values(parts)?;
            return Ok((Form::Factors, velocities, NewValue::Factors(f)));
        }
        let (v, w) = self.next(name, p.value(), g, p.mask(), name)?;
        Ok((Form::Dense, vec![(name.to_owned(), v)], NewValue::Dense(w)))
    }

    /// `v ← μ·v + g + λ·w`, zero where `mask` prunes; `w ← w − η·v`: the new velocity
    /// and values (checked finite), from the velocity stored under `key`.
    fn next(
        &self,
        key: &str,
        w: &ArrayD<f32>,
        g: &ArrayD<f32>,
        mask: Option<&Mask>,
        name: &str,
    ) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
        let mut v = match self.velocity.get(key) {
            // A velocity of another shape is from before the layer changed shape
            // (channels removed, neurons merged): restart.
            Some(v) if v.shape() == g.shape() => v.clone(),
            _ => ArrayD::zeros(g.raw_dim()),
        };
        let (mu, wd, lr) = (self.momentum, self.weight_decay, self.lr);
        ndarray::Zip::from(&mut v)
            .and(g)
            .and(w)
            .for_each(|v, &g, &w| *v = mu * *v + g + wd * w);
        if let Some(m) = mask {
            m.apply(&mut v)?;
        }
        let mut w = w.as_standard_layout().into_owned();
        w.zip_mut_with(&v, |w, &v| *w -= lr * v);
        crate::tensor::check_finite(w.as_slice().expect("standard layout"), || {
            format!("`{name}` after the update")
        })?;
        Ok((v, w))
    }
}

/// The form a parameter was updated in (a change resets its velocities).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Dense,
    Codebook,
    Factors,
}

/// What a parameter becomes.
enum NewValue {
    Dense(ArrayD<f32>),
    Codebook(QuantizedTensor),
    Factors(Factorization),
}

/// The form, the new velocities by key, and the new value of one parameter.
type Planned = (Form, Vec<(String, ArrayD<f32>)>, NewValue);

/// The codebook of a weight-shared tensor: a per-tensor table whose entries are the
/// weights' values themselves (scale 1, no zero point), as k-means makes. Grids that
/// only look like tables (binary, ternary, power-of-two levels times a scale) are not.
fn shared_values(q: &QuantizedTensor) -> Option<&[f32]> {
    match q.decoding() {
        Decoding::Scalar {
            levels: Levels::Table(t),
            granularity: Granularity::PerTensor,
            scales,
            zero_points,
            ..
        } if scales.as_slice() == [1.0] && zero_points.iter().all(|&z| z == 0.0) => Some(t),
        _ => None,
    }
}

/// Checks a new running statistic for the dense parameter `name`: same shape, finite.
fn check_running<'a>(model: &Model, name: &str, value: &'a ArrayD<f32>) -> Result<&'a ArrayD<f32>> {
    let p = model.get(name)?;
    check_same_shape(p.shape(), value.shape(), || {
        format!("new running statistic of `{name}`")
    })?;
    if p.quantized().is_some() || p.factorization().is_some() {
        return Err(Error::invalid(
            "parameter",
            format!("`{name}`, compressed"),
            "a dense running statistic",
        ));
    }
    crate::tensor::check_finite(&value.iter().copied().collect::<Vec<_>>(), || {
        format!("new running statistic of `{name}`")
    })?;
    Ok(value)
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
pub(crate) fn for_each_batch(
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
