//! Batch normalisation (Ioffe & Szegedy 2015) per channel (axis 1), in training mode
//! (batch statistics, running estimates updated) and evaluation mode (running
//! estimates), with its gradient.
//!
//! `forward` runs on a borrowed [`Model`], so the new running estimates cannot be
//! written there: the training-mode pass returns them with the gradients, under the
//! key `<running_mean>#running` ([`RUNNING_STAT_SUFFIX`]), and [`Sgd::step`](super::Sgd::step)
//! stores them. Every training path that ends in `Sgd::step` (`train_epoch`,
//! distillation, quantization-aware training, a user's loop) updates them, without a
//! second forward pass.

use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::tensor::check_same_shape;

/// The suffix of the keys under which a training-mode pass returns, beside the
/// gradients, the new values of BatchNorm's running statistics: `bn.running_mean#running`
/// holds the new running mean of `bn.running_mean`. [`Sgd::step`](super::Sgd::step)
/// assigns them (no learning rate, momentum or weight decay); an optimiser of your own
/// should do the same (or remove them) before treating the rest as gradients.
pub const RUNNING_STAT_SUFFIX: &str = "#running";

/// The names of one BatchNorm layer's parameters, and its settings.
pub(super) struct BatchNorm<'a> {
    pub weight: &'a str,
    pub bias: &'a str,
    pub running_mean: &'a str,
    pub running_var: &'a str,
    pub eps: f32,
    pub momentum: f32,
}

/// What the backward pass needs.
pub(super) struct Saved {
    /// The normalised input, standard layout.
    xhat: ArrayD<f32>,
    /// `1/√(σ² + ε)` per channel.
    inv_std: Vec<f32>,
    /// γ per channel.
    gamma: Vec<f32>,
    /// Whether the batch's statistics normalised (training mode).
    train: bool,
    /// The new running mean and variance (training mode).
    running: Option<(Vec<f32>, Vec<f32>)>,
}

/// A 1-D parameter's effective values.
fn values(model: &Model, name: &str) -> Result<Vec<f32>> {
    Ok(model.get(name)?.effective().iter().copied().collect())
}

impl BatchNorm<'_> {
    /// Checks `eps`, `momentum`, the four parameters' shapes `[c]` for an input of
    /// `shape` (one example, channels first), and the running statistics' values.
    pub(super) fn check(&self, model: &Model, shape: &[usize]) -> Result<()> {
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::invalid("eps", self.eps, "a finite value above 0"));
        }
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(Error::invalid(
                "momentum",
                self.momentum,
                "a value in [0, 1]",
            ));
        }
        let Some(&c) = shape.first() else {
            return Err(Error::bad_shape(
                "batch-norm input",
                shape,
                "[n, channels, …]",
            ));
        };
        for name in [self.weight, self.bias, self.running_mean, self.running_var] {
            check_same_shape(&[c], model.get(name)?.shape(), || format!("`{name}`"))?;
        }
        let mean = values(model, self.running_mean)?;
        if let Some(v) = mean.iter().find(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "running_mean",
                format!("{v} in `{}`", self.running_mean),
                "finite running means",
            ));
        }
        let var = values(model, self.running_var)?;
        if let Some(v) = var.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(Error::invalid(
                "running_var",
                format!("{v} in `{}`", self.running_var),
                "finite running variances ≥ 0",
            ));
        }
        Ok(())
    }

    /// Evaluation mode without what backward needs: `x·s + t` per channel, in place,
    /// with `s = γ/√(σ² + ε)` and `t = β − μ·s` from the running estimates.
    pub(super) fn infer(&self, model: &Model, x: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let (c, rest) = (x.shape()[1], x.shape()[2..].iter().product());
        let gamma = values(model, self.weight)?;
        let beta = values(model, self.bias)?;
        let mean = values(model, self.running_mean)?;
        let var = values(model, self.running_var)?;
        let scale: Vec<f32> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + self.eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..c).map(|ch| beta[ch] - mean[ch] * scale[ch]).collect();
        let mut x = super::graph::standard(x);
        affine(
            x.as_slice_mut().expect("standard layout"),
            c,
            rest,
            &scale,
            &shift,
        );
        Ok(x)
    }

    /// `γ·(x − μ)/√(σ² + ε) + β` per channel of `x` `[n, c, …]`, with the batch's
    /// statistics (`train`) or the running ones; also what backward needs.
    pub(super) fn forward(
        &self,
        model: &Model,
        x: ArrayD<f32>,
        train: bool,
    ) -> Result<(ArrayD<f32>, Saved)> {
        let shape = x.shape().to_vec();
        let (n, c) = (shape[0], shape[1]);
        let rest: usize = shape[2..].iter().product();
        let m = n * rest;
        let gamma = values(model, self.weight)?;
        let beta = values(model, self.bias)?;
        let mut x = super::graph::standard(x);
        let xs = x.as_slice_mut().expect("standard layout");
        let channel = |ch| positions(n, c, rest, ch);
        let (mean, var, running) = if train {
            if m < 2 {
                return Err(Error::invalid(
                    "batch",
                    format!("{n} example(s) of shape {:?}", &shape[1..]),
                    "more than one value per channel in training mode",
                ));
            }
            let mut mean = vec![0.0f32; c];
            let mut var = vec![0.0f32; c];
            for ch in 0..c {
                let mu = channel(ch).map(|k| xs[k] as f64).sum::<f64>() / m as f64;
                let v = channel(ch)
                    .map(|k| (xs[k] as f64 - mu).powi(2))
                    .sum::<f64>()
                    / m as f64;
                mean[ch] = mu as f32;
                var[ch] = v as f32;
            }
            let rm = values(model, self.running_mean)?;
            let rv = values(model, self.running_var)?;
            let mo = self.momentum;
            let unbias = m as f32 / (m - 1) as f32;
            let new_mean = rm
                .iter()
                .zip(&mean)
                .map(|(r, b)| (1.0 - mo) * r + mo * b)
                .collect();
            let new_var = rv
                .iter()
                .zip(&var)
                .map(|(r, b)| (1.0 - mo) * r + mo * b * unbias)
                .collect();
            (mean, var, Some((new_mean, new_var)))
        } else {
            let mean = values(model, self.running_mean)?;
            let var = values(model, self.running_var)?;
            (mean, var, None)
        };
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let shift: Vec<f32> = mean.iter().zip(&inv_std).map(|(m, s)| -m * s).collect();
        affine(xs, c, rest, &inv_std, &shift);
        let mut y = x.clone();
        let ys = y.as_slice_mut().expect("standard layout");
        affine(ys, c, rest, &gamma, &beta);
        Ok((
            y,
            Saved {
                xhat: x,
                inv_std,
                gamma,
                train,
                running,
            },
        ))
    }

    /// The gradient with respect to the input, γ's and β's, and the new running mean
    /// and variance (training mode).
    pub(super) fn backward(&self, saved: Saved, grad: ArrayD<f32>) -> Backward {
        let Saved {
            xhat,
            inv_std,
            gamma,
            train,
            running,
        } = saved;
        let shape = xhat.shape().to_vec();
        let (n, c) = (shape[0], shape[1]);
        let rest: usize = shape[2..].iter().product();
        let m = (n * rest) as f32;
        let mut dy = super::graph::standard(grad);
        let xh = xhat.as_slice().expect("standard layout");
        let ds = dy.as_slice_mut().expect("standard layout");
        let mut dgamma = vec![0.0f32; c];
        let mut dbeta = vec![0.0f32; c];
        for ch in 0..c {
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            for i in 0..n {
                let start = (i * c + ch) * rest;
                for k in start..start + rest {
                    sg += ds[k] as f64;
                    sgx += (ds[k] * xh[k]) as f64;
                }
            }
            dgamma[ch] = sgx as f32;
            dbeta[ch] = sg as f32;
            let scale = gamma[ch] * inv_std[ch];
            let (mean_g, mean_gx) = ((sg / m as f64) as f32, (sgx / m as f64) as f32);
            for i in 0..n {
                let start = (i * c + ch) * rest;
                for k in start..start + rest {
                    ds[k] = if train {
                        scale * (ds[k] - mean_g - xh[k] * mean_gx)
                    } else {
                        scale * ds[k]
                    };
                }
            }
        }
        let vec1 = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&[c]), v).expect("c values");
        Backward {
            input: dy,
            weight: vec1(dgamma),
            bias: vec1(dbeta),
            running: running.map(|(mean, var)| (vec1(mean), vec1(var))),
        }
    }
}

/// The gradients of a BatchNorm layer, and its new running statistics.
pub(super) struct Backward {
    /// With respect to the input.
    pub input: ArrayD<f32>,
    /// With respect to γ.
    pub weight: ArrayD<f32>,
    /// With respect to β.
    pub bias: ArrayD<f32>,
    /// The new running mean and variance (training mode).
    pub running: Option<(ArrayD<f32>, ArrayD<f32>)>,
}

/// `v ← v·scale[ch] + shift[ch]` over a standard-layout `[n, c, rest]` buffer.
fn affine(xs: &mut [f32], c: usize, rest: usize, scale: &[f32], shift: &[f32]) {
    if rest == 0 {
        return;
    }
    for (j, plane) in xs.chunks_exact_mut(rest).enumerate() {
        let (s, t) = (scale[j % c], shift[j % c]);
        plane.iter_mut().for_each(|v| *v = *v * s + t);
    }
}

/// The flat positions of channel `ch` in a standard-layout `[n, c, rest]` buffer.
fn positions(n: usize, c: usize, rest: usize, ch: usize) -> impl Iterator<Item = usize> {
    (0..n).flat_map(move |i| {
        let start = (i * c + ch) * rest;
        start..start + rest
    })
}
