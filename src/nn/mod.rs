//! A small reference network module: enough to train, evaluate and fine-tune the
//! networks the survey's results are measured on, with parameters living in a
//! [`Model`] so that every compressor applies to them directly.
//!
//! Layers read the *effective* weights (masks applied), so a pruned model is evaluated
//! as pruned, and [`Sgd`] keeps pruned weights exactly zero while retraining.

mod conv;
mod qat;
mod train;

use std::collections::{BTreeMap, HashMap};

use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayView2, Axis, Ix1, Ix2, IxDyn, s};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::io::idx::Dataset;
use crate::model::{DType, LayerKind, Model};

pub use conv::{ConvSpec, conv2d};
pub use qat::QuantAwareTraining;
pub use train::{Sgd, train_epoch};

/// Gradients by parameter name, each in its parameter's shape.
pub type Gradients = BTreeMap<String, ArrayD<f32>>;

/// One layer of a [`Network`]. Parameters are named, and live in the [`Model`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layer {
    /// `y = x Wᵀ + b`, with `W` `[out, in]` (PyTorch's layout) and an optional bias.
    Linear {
        /// The weight's parameter name.
        weight: String,
        /// The bias's parameter name, if the layer has one.
        bias: Option<String>,
    },
    /// `max(x, 0)`.
    Relu,
}

/// Accuracy and mean loss on a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Fraction of examples classified correctly (top-1).
    pub accuracy: f64,
    /// Mean softmax cross-entropy.
    pub loss: f64,
    /// Examples classified correctly.
    pub correct: usize,
    /// Examples seen.
    pub total: usize,
}

/// A feed-forward network: layers applied in order to a batch `[n, features]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    layers: Vec<Layer>,
}

impl Network {
    /// A network of the given layers.
    pub fn new(layers: Vec<Layer>) -> Network {
        Network { layers }
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// A multilayer perceptron `sizes[0] → … → sizes[last]` with ReLU between layers,
    /// adding `fc1.weight`, `fc1.bias`, … to `model`, initialised as PyTorch's `Linear`
    /// does (uniform in `±1/√in`), reproducibly from `seed`.
    pub fn mlp(model: &mut Model, sizes: &[usize], seed: u64) -> Result<Network> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(Error::invalid(
                "sizes",
                format!("{sizes:?}"),
                "at least two non-zero layer widths",
            ));
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut uniform =
            |bound: f32| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound;
        let mut layers = Vec::new();
        for (i, w) in sizes.windows(2).enumerate() {
            let (fan_in, out) = (w[0], w[1]);
            let bound = 1.0 / (fan_in as f32).sqrt();
            let (wn, bn) = (format!("fc{}.weight", i + 1), format!("fc{}.bias", i + 1));
            let weight = ArrayD::from_shape_simple_fn(IxDyn(&[out, fan_in]), || uniform(bound));
            let bias = ArrayD::from_shape_simple_fn(IxDyn(&[out]), || uniform(bound));
            model.add_param(wn.clone(), LayerKind::Linear, DType::F32, weight)?;
            model.add_param(bn.clone(), LayerKind::Bias, DType::F32, bias)?;
            if i > 0 {
                layers.push(Layer::Relu);
            }
            layers.push(Layer::Linear {
                weight: wn,
                bias: Some(bn),
            });
        }
        Ok(Network { layers })
    }

    /// LeNet-300-100 (784-300-100-10), the fully connected network of Han et al.'s
    /// Deep Compression experiments on MNIST.
    pub fn lenet_300_100(model: &mut Model, seed: u64) -> Result<Network> {
        Network::mlp(model, &[784, 300, 100, 10], seed)
    }

    /// The MLP stored in `model` under `prefixes` (`["fc1", "fc2", "fc3"]` →
    /// `fc1.weight`, `fc1.bias`, …), with ReLU between layers; checked against the model.
    pub fn mlp_from(model: &Model, prefixes: &[&str]) -> Result<Network> {
        let mut layers = Vec::new();
        for (i, p) in prefixes.iter().enumerate() {
            if i > 0 {
                layers.push(Layer::Relu);
            }
            let weight = format!("{p}.weight");
            let bias = format!("{p}.bias");
            layers.push(Layer::Linear {
                bias: model.contains(&bias).then_some(bias),
                weight,
            });
        }
        let net = Network { layers };
        net.check(model)?;
        Ok(net)
    }

    /// Checks that every parameter exists and that consecutive shapes fit.
    pub fn check(&self, model: &Model) -> Result<()> {
        let mut width: Option<usize> = None;
        for layer in &self.layers {
            if let Layer::Linear { weight, bias } = layer {
                let w = model.get(weight)?;
                if w.shape().len() != 2 {
                    return Err(Error::bad_shape(
                        format!("`{weight}`"),
                        w.shape(),
                        "a Linear weight is [out, in]",
                    ));
                }
                if let Some(prev) = width
                    && prev != w.shape()[1]
                {
                    return Err(Error::ShapeMismatch {
                        what: format!("inputs of `{weight}`"),
                        expected: vec![prev],
                        got: vec![w.shape()[1]],
                    });
                }
                if let Some(b) = bias {
                    let bp = model.get(b)?;
                    crate::tensor::check_same_shape(&[w.shape()[0]], bp.shape(), || {
                        format!("`{b}`")
                    })?;
                }
                width = Some(w.shape()[0]);
            }
        }
        Ok(())
    }

    /// The number of input features.
    pub fn inputs(&self, model: &Model) -> Result<usize> {
        self.first_linear()
            .map(|w| Ok(model.get(w)?.shape()[1]))
            .unwrap_or_else(|| {
                Err(Error::Empty {
                    what: "network (no Linear layer)".into(),
                })
            })
    }

    fn first_linear(&self) -> Option<&str> {
        self.layers.iter().find_map(|l| match l {
            Layer::Linear { weight, .. } => Some(weight.as_str()),
            _ => None,
        })
    }

    /// Logits `[n, classes]` for a batch `[n, features]`.
    pub fn forward(&self, model: &Model, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let (out, _) = self.run(model, x, false)?;
        Ok(out)
    }

    /// Runs the layers; with `keep`, also returns every layer's input for backpropagation.
    fn run(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
        keep: bool,
    ) -> Result<(Array2<f32>, Vec<Array2<f32>>)> {
        self.check_input(model, x)?;
        let mut inputs = Vec::new();
        let mut h = x.to_owned();
        for layer in &self.layers {
            let next = match layer {
                Layer::Linear { weight, bias } => {
                    let w = matrix(model, weight)?;
                    let mut y = h.dot(&w.t());
                    if let Some(b) = bias {
                        y += &vector(model, b)?;
                    }
                    y
                }
                Layer::Relu => h.mapv(|v| v.max(0.0)),
            };
            if keep {
                inputs.push(std::mem::replace(&mut h, next));
            } else {
                h = next;
            }
        }
        Ok((h, inputs))
    }

    fn check_input(&self, model: &Model, x: ArrayView2<'_, f32>) -> Result<()> {
        self.check(model)?;
        let features = self.inputs(model)?;
        if x.ncols() != features {
            return Err(Error::ShapeMismatch {
                what: "input batch [n, features]".into(),
                expected: vec![x.nrows(), features],
                got: x.shape().to_vec(),
            });
        }
        crate::tensor::check_finite(&x.iter().copied().collect::<Vec<_>>(), || {
            "input batch".into()
        })
    }

    /// Mean softmax cross-entropy of a batch and its gradient with respect to every
    /// parameter (zero where a mask prunes).
    pub fn loss_and_gradients(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
        labels: ArrayView1<'_, u8>,
    ) -> Result<(f32, Gradients)> {
        let (logits, inputs) = self.run(model, x, true)?;
        let (loss, mut grad) = softmax_cross_entropy(logits.view(), labels)?;
        let mut grads = Gradients::new();
        for (layer, input) in self.layers.iter().zip(&inputs).rev() {
            match layer {
                Layer::Linear { weight, bias } => {
                    let w = matrix(model, weight)?;
                    let mut gw = grad.t().dot(input).into_dyn();
                    if let Some(m) = model.get(weight)?.mask() {
                        m.apply(&mut gw)?;
                    }
                    grads.insert(weight.clone(), gw);
                    if let Some(b) = bias {
                        let mut gb = grad.sum_axis(Axis(0)).into_dyn();
                        if let Some(m) = model.get(b)?.mask() {
                            m.apply(&mut gb)?;
                        }
                        grads.insert(b.clone(), gb);
                    }
                    grad = grad.dot(&w);
                }
                Layer::Relu => {
                    ndarray::Zip::from(&mut grad).and(input).for_each(|g, &x| {
                        if x <= 0.0 {
                            *g = 0.0;
                        }
                    });
                }
            }
        }
        Ok((loss, grads))
    }

    /// `‖X_j‖₂` over the batch for every input feature of every Linear layer: the
    /// statistic Wanda weighs magnitudes with, keyed by weight name.
    pub fn activation_norms(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
    ) -> Result<HashMap<String, Array1<f32>>> {
        let (_, inputs) = self.run(model, x, true)?;
        Ok(self
            .layers
            .iter()
            .zip(inputs)
            .filter_map(|(l, input)| match l {
                Layer::Linear { weight, .. } => Some((
                    weight.clone(),
                    input.map_axis(Axis(0), |c| c.iter().map(|v| v * v).sum::<f32>().sqrt()),
                )),
                _ => None,
            })
            .collect())
    }

    /// Accuracy and loss over a data set, in batches of `batch` examples.
    pub fn evaluate(&self, model: &Model, data: &Dataset, batch: usize) -> Result<Evaluation> {
        if data.is_empty() {
            return Err(Error::Empty {
                what: "evaluation data set".into(),
            });
        }
        let batch = batch.max(1);
        let (mut correct, mut loss) = (0usize, 0.0f64);
        for start in (0..data.len()).step_by(batch) {
            let end = (start + batch).min(data.len());
            let logits = self.forward(model, data.images.slice(s![start..end, ..]))?;
            let labels = data.labels.slice(s![start..end]);
            let (l, _) = softmax_cross_entropy(logits.view(), labels)?;
            loss += l as f64 * (end - start) as f64;
            correct += logits
                .rows()
                .into_iter()
                .zip(labels)
                .filter(|(row, y)| argmax(row) == **y as usize)
                .count();
        }
        Ok(Evaluation {
            accuracy: correct as f64 / data.len() as f64,
            loss: loss / data.len() as f64,
            correct,
            total: data.len(),
        })
    }
}

impl Network {
    /// Confusion counts on `data`: entry `[true class, predicted class]` counts the
    /// examples of that class given that prediction (classes are the output units).
    ///
    /// ```
    /// use slimnn::Model;
    /// use slimnn::io::idx::Dataset;
    /// use slimnn::nn::Network;
    ///
    /// let mut model = Model::new();
    /// let net = Network::mlp(&mut model, &[4, 3], 1)?;
    /// let data = Dataset {
    ///     images: ndarray::Array2::from_elem((5, 4), 0.5),
    ///     labels: ndarray::array![0u8, 1, 2, 1, 0],
    ///     image_shape: vec![2, 2],
    /// };
    /// let counts = net.confusion(&model, &data, 2)?;
    /// assert_eq!(counts.dim(), (3, 3));
    /// assert_eq!(counts.sum(), 5);
    /// assert_eq!(counts.diag().sum(), net.evaluate(&model, &data, 2)?.correct);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn confusion(&self, model: &Model, data: &Dataset, batch: usize) -> Result<Array2<usize>> {
        if data.is_empty() {
            return Err(Error::Empty {
                what: "evaluation data set".into(),
            });
        }
        let batch = batch.max(1);
        let mut counts: Option<Array2<usize>> = None;
        for start in (0..data.len()).step_by(batch) {
            let end = (start + batch).min(data.len());
            let logits = self.forward(model, data.images.slice(s![start..end, ..]))?;
            let classes = logits.ncols();
            let counts = counts.get_or_insert_with(|| Array2::zeros((classes, classes)));
            for (row, &y) in logits
                .rows()
                .into_iter()
                .zip(&data.labels.slice(s![start..end]))
            {
                let y = y as usize;
                if y >= classes {
                    return Err(Error::invalid(
                        "labels",
                        y,
                        format!("classes below the {classes} outputs"),
                    ));
                }
                counts[[y, argmax(&row)]] += 1;
            }
        }
        Ok(counts.unwrap_or_else(|| Array2::zeros((0, 0))))
    }
}

fn argmax(row: &ndarray::ArrayView1<'_, f32>) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// A 2-D parameter's effective values.
fn matrix(model: &Model, name: &str) -> Result<Array2<f32>> {
    let p = model.get(name)?;
    p.effective()
        .into_dimensionality::<Ix2>()
        .map_err(|_| Error::bad_shape(format!("`{name}`"), p.shape(), "expected 2-D"))
}

/// A 1-D parameter's effective values.
fn vector(model: &Model, name: &str) -> Result<Array1<f32>> {
    let p = model.get(name)?;
    p.effective()
        .into_dimensionality::<Ix1>()
        .map_err(|_| Error::bad_shape(format!("`{name}`"), p.shape(), "expected 1-D"))
}

/// Mean softmax cross-entropy over the rows of `logits`, and its gradient.
pub fn softmax_cross_entropy(
    logits: ArrayView2<'_, f32>,
    labels: ArrayView1<'_, u8>,
) -> Result<(f32, Array2<f32>)> {
    let (n, classes) = logits.dim();
    if labels.len() != n {
        return Err(Error::ShapeMismatch {
            what: "labels".into(),
            expected: vec![n],
            got: vec![labels.len()],
        });
    }
    if let Some(&bad) = labels.iter().find(|&&y| y as usize >= classes) {
        return Err(Error::invalid(
            "label",
            bad,
            format!("a class below {classes}"),
        ));
    }
    let mut grad = Array2::zeros((n, classes));
    let mut loss = 0.0f64;
    for ((row, mut g), &y) in logits.rows().into_iter().zip(grad.rows_mut()).zip(labels) {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        let log_sum = sum.ln() + max;
        loss += (log_sum - row[y as usize]) as f64;
        for (gi, &v) in g.iter_mut().zip(row) {
            *gi = (v - log_sum).exp() / n as f32;
        }
        g[y as usize] -= 1.0 / n as f32;
    }
    Ok(((loss / n.max(1) as f64) as f32, grad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array1;

    /// Backpropagation against central finite differences, in a masked network.
    #[test]
    fn gradients_match_finite_differences() {
        let mut model = Model::new();
        let net = Network::mlp(&mut model, &[5, 4, 3], 11).unwrap();
        let mask = crate::Mask::from_fn(&[4, 5], |i| i % 3 != 0);
        model
            .get_mut("fc1.weight")
            .unwrap()
            .set_mask(mask.clone())
            .unwrap();
        let x = Array2::from_shape_fn((6, 5), |(i, j)| ((i * 5 + j) as f32 * 0.37).sin());
        let y = Array1::from_iter((0..6).map(|i| (i % 3) as u8));
        let (_, grads) = net.loss_and_gradients(&model, x.view(), y.view()).unwrap();
        let eps = 1e-2f32;
        for (name, g) in &grads {
            for i in 0..g.len() {
                let loss_at = |delta: f32| {
                    let mut m = model.clone();
                    m.get_mut(name).unwrap().value_mut().as_slice_mut().unwrap()[i] += delta;
                    let (l, _) = net.loss_and_gradients(&m, x.view(), y.view()).unwrap();
                    l
                };
                let numeric = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps);
                let analytic = g.as_slice().unwrap()[i];
                if name == "fc1.weight" && !mask.get(i) {
                    assert_eq!(analytic, 0.0, "masked weights get no gradient");
                    continue;
                }
                assert!(
                    (numeric - analytic).abs() < 2e-3,
                    "{name}[{i}]: numeric {numeric} vs analytic {analytic}"
                );
            }
        }
    }
}
