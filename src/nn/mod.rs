//! A small reference network module: enough to train, evaluate and fine-tune the
//! networks the survey's results are measured on (LeNet-300-100, LeNet-5), with
//! parameters living in a [`Model`](crate::Model) so that every compressor applies to them directly.
//!
//! A [`Network`] is a list of [`Layer`]s applied in order:
//!
//! - [`Layer::Linear`]: `y = x Wᵀ + b` on `[n, features]`;
//! - [`Layer::Conv2d`]: 2-D convolution on `[n, c, h, w]` (PyTorch's `Conv2d`: stride,
//!   zero padding, groups; see [`conv2d`]);
//! - [`Layer::MaxPool2d`]: max pooling without padding, windows that do not fit dropped;
//! - [`Layer::AvgPool2d`] (PyTorch's, padding counted in the mean) and
//!   [`Layer::GlobalAvgPool`] (`[n, c, h, w]` → `[n, c]`);
//! - [`Layer::Flatten`]: `[n, c, h, w]` → `[n, c·h·w]`;
//! - [`Layer::Relu`] on any shape, and [`Layer::Dropout`] (inverted dropout);
//! - [`Layer::CRelu`] (`[ReLU(x), ReLU(−x)]`, twice the channels) and
//!   [`Layer::TiedConv2d`] (base filters plus their flips and rotations), from
//!   [`filters`](crate::filters);
//! - [`Layer::BatchNorm`] (1-d and 2-d; training and evaluation modes, running
//!   statistics updated through [`Sgd::step`], see [`RUNNING_STAT_SUFFIX`]), folded
//!   into the Conv2d or Linear layer before it for inference by
//!   [`Network::fold_batch_norm`] ([`Model::fold_batch_norm`](crate::Model::fold_batch_norm));
//! - block layers holding sub-sequences of layers, which make the network a graph
//!   (an output feeds several layers): [`Layer::Residual`] (`body(x) + shortcut(x)`)
//!   and [`Layer::Concat`] (branches concatenated on the channels).
//!
//! **The graph is nested blocks, not a general DAG**: `Vec<Layer>` stays the common
//! sequential form, forward and backward recurse into blocks, and a top-level index
//! still names one activation (for taps and early exits); dropping a residual block
//! removes one element of the list. The reasons and the limits are in
//! [the network guide](crate::guide::nn).
//!
//! Batches always arrive as `[n, features]` (as [`Dataset`](crate::io::idx::Dataset) stores images) and are
//! reshaped to `[n, ..input shape]`: set the shape of one example with
//! [`Network::with_input_shape`] (an MLP without one takes the first Linear's inputs).
//! [`Network::check`] infers the shapes through every layer, so a network that does not
//! fit its model is a typed error before any work is done.
//!
//! **Evaluation and training mode.** [`Network::forward`], [`Network::evaluate`],
//! [`Network::confusion`], [`Network::activation_norms`] and
//! [`Network::loss_and_gradients`] run in evaluation mode: dropout is the identity, and
//! the results are deterministic (use them for gradient checks and saliency
//! statistics). [`Network::train_gradients`] runs in training mode, with dropout masks
//! drawn reproducibly from a seed; [`train_epoch`] uses it, with one seed per batch.
//!
//! Layers read the *effective* weights (masks applied), so a pruned model is evaluated
//! as pruned; gradients are zero where a mask prunes, and [`Sgd`] keeps pruned weights
//! exactly zero while retraining.
//!
//! ```
//! use slimnn::Model;
//! use slimnn::nn::{ConvSpec, Layer, Network};
//!
//! // [1, 8, 8] → conv 4×3×3 → [4, 6, 6] → pool → [4, 3, 3] → flatten → 36 → 10.
//! let mut model = Model::new();
//! model.add("conv.weight", ndarray::ArrayD::from_elem(ndarray::IxDyn(&[4, 1, 3, 3]), 0.1))?;
//! model.add("fc.weight", ndarray::ArrayD::from_elem(ndarray::IxDyn(&[10, 36]), 0.01))?;
//! let net = Network::new(vec![
//!     Layer::Conv2d { weight: "conv.weight".into(), bias: None, spec: ConvSpec::new() },
//!     Layer::Relu,
//!     Layer::MaxPool2d { kernel: (2, 2), stride: (2, 2) },
//!     Layer::Flatten,
//!     Layer::Dropout { p: 0.5 },
//!     Layer::Linear { weight: "fc.weight".into(), bias: None },
//! ])
//! .with_input_shape(&[1, 8, 8]);
//! assert_eq!(net.inputs(&model)?, 64);
//! assert_eq!(net.shapes(&model)?.last().unwrap(), &[10]);
//!
//! let x = ndarray::Array2::from_elem((5, 64), 1.0f32);
//! assert_eq!(net.forward(&model, x.view())?.dim(), (5, 10));
//! let labels = ndarray::Array1::from(vec![0u8, 1, 2, 3, 4]);
//! let (loss, grads) = net.train_gradients(&model, x.view(), labels.view(), 42)?;
//! assert!(loss > 0.0 && grads["conv.weight"].shape() == [4, 1, 3, 3]);
//! # Ok::<(), slimnn::Error>(())
//! ```

mod arch;
mod avgpool;
mod block;
mod compiled;
mod conv;
mod dropout;
mod eval;
pub(crate) use eval::check_labels;
mod fold;
mod graph;
mod im2col;
mod linear;
mod norm;
mod part;
pub(crate) use part::{PartState, backward_part, forward_part, input_batch, seed_stream};
mod pool;
mod qat;
mod shape;
pub(crate) use shape::layer_output;
mod taps;
mod train;

use std::collections::BTreeMap;

use ndarray::ArrayD;

pub use compiled::{CompiledLinear, CompiledNetwork};
pub use conv::{ConvSpec, conv2d};
pub use eval::softmax_cross_entropy;
pub use fold::{BatchNormFold, BatchNormNames, FoldReport, created_bias_name};
pub use norm::RUNNING_STAT_SUFFIX;
pub use qat::QuantAwareTraining;
pub use taps::TappedLoss;
pub(crate) use train::for_each_batch;
pub use train::{Sgd, train_epoch};

/// Gradients by parameter name, each in its parameter's shape. A training-mode pass
/// through BatchNorm layers also holds their new running statistics, under keys ending
/// in [`RUNNING_STAT_SUFFIX`] ([`Sgd::step`] stores them).
pub type Gradients = BTreeMap<String, ArrayD<f32>>;

/// One layer of a [`Network`]. Parameters are named, and live in the
/// [`Model`](crate::Model).
///
/// Layers compare `Dropout` probabilities, BatchNorm's `eps` and `momentum` and
/// residual blocks' survival probabilities bit for bit, so that equality is an equivalence ([`Eq`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Layer {
    /// `y = x Wᵀ + b`, with `W` `[out, in]` (PyTorch's layout) and an optional bias, on
    /// `[n, in]`.
    Linear {
        /// The weight's parameter name.
        weight: String,
        /// The bias's parameter name, if the layer has one.
        bias: Option<String>,
    },
    /// `max(x, 0)`, on any shape.
    Relu,
    /// 2-D convolution of `[n, in, h, w]` (PyTorch's `Conv2d`: cross-correlation, weight
    /// `[out, in / groups, kh, kw]`, bias `[out]`), giving `[n, out, oh, ow]`.
    Conv2d {
        /// The weight's parameter name.
        weight: String,
        /// The bias's parameter name, if the layer has one.
        bias: Option<String>,
        /// Stride, zero padding and groups.
        spec: ConvSpec,
    },
    /// The maximum of each `kernel` window of `[n, c, h, w]`, windows moved by `stride`;
    /// no padding, and windows that do not fit are dropped (PyTorch's floor mode). The
    /// gradient goes to the first maximum of a window in row-major order.
    MaxPool2d {
        /// Window (rows, columns).
        kernel: (usize, usize),
        /// Step between windows (rows, columns).
        stride: (usize, usize),
    },
    /// `[n, d₁, …, d_k]` → `[n, d₁·…·d_k]`, row-major (as PyTorch's `Flatten`).
    Flatten,
    /// Inverted dropout: in training mode each activation is zeroed with probability
    /// `p` and the others scaled by `1 / (1 − p)`; the identity in evaluation mode.
    /// `0 ≤ p < 1`.
    Dropout {
        /// The probability of zeroing an activation.
        p: f32,
    },
    /// Concatenated ReLU (Shang et al. 2016): `[n, c, …]` → `[n, 2c, …]`,
    /// `[ReLU(x), ReLU(−x)]` on axis 1 ([`crelu`](crate::filters::crelu)).
    CRelu,
    /// A tied filter bank (Dieleman et al. 2016): base filters `[k, in, kh, kw]` and
    /// each of their `t` transforms (flips, rotations) as a convolution of
    /// `[n, in, h, w]` giving `[n, k·t, oh, ow]`, transform-major
    /// ([`tied_bank`](crate::filters::tied_bank)). Only the base filters are stored;
    /// their gradient sums the transformed filters' gradients. Bias `[k·t]`; groups 1.
    TiedConv2d {
        /// The base filters' parameter name.
        weight: String,
        /// The bias's parameter name (`[k·t]`), if the layer has one.
        bias: Option<String>,
        /// Stride and zero padding (groups must be 1).
        spec: ConvSpec,
        /// The transforms, in output channel order.
        transforms: crate::filters::Transforms,
    },
    /// A residual block: `y = body(x) + shortcut(x)`, each a sub-sequence of layers
    /// applied to the same input; an empty shortcut is the identity (He et al. 2016),
    /// a 1×1 strided convolution a down-sampling shortcut. The two outputs must have the
    /// same shape ([`Network::check`]). Build it with [`Layer::residual`].
    ///
    /// Stochastic depth (Huang et al. 2016) is the block's `survival` probability `p`
    /// (1 unless set by [`Layer::with_survival`]): in training mode the body runs with
    /// probability `p`, drawn once per batch from the pass's seed (a dropped block is
    /// `y = shortcut(x)`, and its body gets no gradient); in evaluation mode
    /// `y = p·body(x) + shortcut(x)`. With `p = 1` the block is the plain one, bit for
    /// bit. `0 < p ≤ 1` ([`Network::check`]).
    #[non_exhaustive]
    Residual {
        /// The residual branch F(x).
        body: Vec<Layer>,
        /// The shortcut; empty for the identity.
        shortcut: Vec<Layer>,
        /// The probability that the body runs in a training pass, and its scale in
        /// evaluation mode (stochastic depth); 1 for a plain residual block.
        survival: f32,
    },
    /// Parallel branches on the same input, their outputs concatenated on axis 1 (the
    /// channels of `[n, c, h, w]`, the features of `[n, f]`); the other dimensions must
    /// agree. An empty branch passes its input through (DenseNet). Build it with
    /// [`Layer::concat`] (fire modules, inception blocks).
    #[non_exhaustive]
    Concat {
        /// The branches, in the order their outputs are concatenated.
        branches: Vec<Vec<Layer>>,
    },
    /// The mean of each `kernel` window of `[n, c, h, w]`, windows moved by `stride`,
    /// over the input zero-padded by `padding` on each side; windows that do not fit are
    /// dropped (floor mode). As PyTorch's `AvgPool2d` with its default
    /// `count_include_pad=True`: the padding zeros count in the mean (every window
    /// divides by `kh·kw`). `padding` is at most half the kernel.
    AvgPool2d {
        /// Window (rows, columns).
        kernel: (usize, usize),
        /// Step between windows (rows, columns).
        stride: (usize, usize),
        /// Zeros added on each side (rows, columns).
        padding: (usize, usize),
    },
    /// `[n, c, h, w]` → `[n, c]`: the mean of each channel's plane.
    GlobalAvgPool,
    /// Batch normalisation (Ioffe & Szegedy 2015) per channel, on axis 1 of
    /// `[n, c, …]` (`[n, f]` as PyTorch's `BatchNorm1d`, `[n, c, h, w]` as
    /// `BatchNorm2d`): `y = γ·(x − μ)/√(σ² + ε) + β`.
    ///
    /// In training mode μ and σ² are the batch's statistics (over the batch and the
    /// spatial positions, σ² biased), and the layer's running estimates move by PyTorch's
    /// rule `running ← (1 − momentum)·running + momentum·batch` (σ² unbiased there); the
    /// new estimates travel with the gradients (see [`RUNNING_STAT_SUFFIX`]) and
    /// [`Sgd::step`] stores them. In evaluation mode μ and σ² are the running estimates.
    /// Parameters: `weight` γ and `bias` β (`[c]`, kinds Norm and Bias), and the buffers
    /// `running_mean`, `running_var` (`[c]`, kind Other, which no compressor selects by
    /// default). `eps > 0`, `0 ≤ momentum ≤ 1`, running variances `≥ 0`.
    BatchNorm {
        /// γ, the scale's parameter name.
        weight: String,
        /// β, the shift's parameter name.
        bias: String,
        /// The running mean's parameter name.
        running_mean: String,
        /// The running (unbiased) variance's parameter name.
        running_var: String,
        /// ε, added to the variance.
        eps: f32,
        /// The weight of the batch's statistics in the running estimates.
        momentum: f32,
    },
}

impl Layer {
    /// A residual block `y = body(x) + shortcut(x)` (an empty shortcut is the
    /// identity).
    pub fn residual(body: Vec<Layer>, shortcut: Vec<Layer>) -> Layer {
        Layer::Residual {
            body,
            shortcut,
            survival: 1.0,
        }
    }

    /// This residual block with survival probability `p` for stochastic depth (see
    /// [`Layer::Residual`]); [`dynamic::StochasticDepth`](crate::dynamic::StochasticDepth)
    /// sets it on every block of a network by the linear decay rule. `p` outside
    /// `(0, 1]`, or a layer that is not a residual block, is an error.
    ///
    /// ```
    /// use slimnn::nn::Layer;
    ///
    /// let block = Layer::residual(vec![Layer::Relu], vec![]).with_survival(0.8)?;
    /// assert_eq!(block.survival(), Some(0.8));
    /// assert!(Layer::residual(vec![], vec![]).with_survival(0.0).is_err());
    /// assert!(Layer::Relu.with_survival(0.5).is_err());
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn with_survival(self, p: f32) -> crate::Result<Layer> {
        check_survival(p)?;
        match self {
            Layer::Residual { body, shortcut, .. } => Ok(Layer::Residual {
                body,
                shortcut,
                survival: p,
            }),
            other => Err(crate::Error::invalid(
                "layer",
                format!("{other:?}"),
                "a residual block (only residual blocks have a survival probability)",
            )),
        }
    }

    /// A residual block's survival probability (stochastic depth); `None` for other
    /// layers.
    pub fn survival(&self) -> Option<f32> {
        match self {
            Layer::Residual { survival, .. } => Some(*survival),
            _ => None,
        }
    }

    /// Branches on the same input, concatenated on axis 1.
    pub fn concat(branches: Vec<Vec<Layer>>) -> Layer {
        Layer::Concat { branches }
    }

    /// A [`Layer::BatchNorm`] over `prefix.weight`, `prefix.bias`,
    /// `prefix.running_mean` and `prefix.running_var` (PyTorch's names), with PyTorch's
    /// defaults `eps = 1e-5`, `momentum = 0.1`.
    pub fn batch_norm(prefix: &str) -> Layer {
        Layer::BatchNorm {
            weight: format!("{prefix}.weight"),
            bias: format!("{prefix}.bias"),
            running_mean: format!("{prefix}.running_mean"),
            running_var: format!("{prefix}.running_var"),
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    /// The names of the parameters this layer reads, its sub-layers' included, in
    /// order (BatchNorm's running statistics too).
    pub fn param_names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.collect_names(&mut names);
        names
    }

    fn collect_names<'a>(&'a self, names: &mut Vec<&'a str>) {
        match self {
            Layer::Linear { weight, bias }
            | Layer::Conv2d { weight, bias, .. }
            | Layer::TiedConv2d { weight, bias, .. } => {
                names.push(weight);
                names.extend(bias.as_deref());
            }
            Layer::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
                ..
            } => names.extend([weight, bias, running_mean, running_var].map(String::as_str)),
            Layer::Residual { body, shortcut, .. } => body
                .iter()
                .chain(shortcut)
                .for_each(|l| l.collect_names(names)),
            Layer::Concat { branches } => branches
                .iter()
                .flatten()
                .for_each(|l| l.collect_names(names)),
            Layer::Relu
            | Layer::CRelu
            | Layer::MaxPool2d { .. }
            | Layer::Flatten
            | Layer::Dropout { .. }
            | Layer::AvgPool2d { .. }
            | Layer::GlobalAvgPool => {}
        }
    }
}

impl PartialEq for Layer {
    fn eq(&self, other: &Layer) -> bool {
        use Layer::*;
        match (self, other) {
            (Linear { weight: a, bias: b }, Linear { weight: c, bias: d }) => a == c && b == d,
            (Relu, Relu) | (Flatten, Flatten) | (CRelu, CRelu) => true,
            (
                TiedConv2d {
                    weight: a,
                    bias: b,
                    spec: s,
                    transforms: t,
                },
                TiedConv2d {
                    weight: c,
                    bias: d,
                    spec: u,
                    transforms: v,
                },
            ) => a == c && b == d && s == u && t == v,
            (
                Conv2d {
                    weight: a,
                    bias: b,
                    spec: s,
                },
                Conv2d {
                    weight: c,
                    bias: d,
                    spec: t,
                },
            ) => a == c && b == d && s == t,
            (
                MaxPool2d {
                    kernel: a,
                    stride: b,
                },
                MaxPool2d {
                    kernel: c,
                    stride: d,
                },
            ) => a == c && b == d,
            (Dropout { p }, Dropout { p: q }) => p.to_bits() == q.to_bits(),
            (
                Residual {
                    body: a,
                    shortcut: b,
                    survival: p,
                },
                Residual {
                    body: c,
                    shortcut: d,
                    survival: q,
                },
            ) => a == c && b == d && p.to_bits() == q.to_bits(),
            (Concat { branches: a }, Concat { branches: b }) => a == b,
            (
                AvgPool2d {
                    kernel: a,
                    stride: b,
                    padding: c,
                },
                AvgPool2d {
                    kernel: d,
                    stride: e,
                    padding: f,
                },
            ) => a == d && b == e && c == f,
            (GlobalAvgPool, GlobalAvgPool) => true,
            (
                BatchNorm {
                    weight: a,
                    bias: b,
                    running_mean: c,
                    running_var: d,
                    eps: e,
                    momentum: f,
                },
                BatchNorm {
                    weight: g,
                    bias: h,
                    running_mean: i,
                    running_var: j,
                    eps: k,
                    momentum: l,
                },
            ) => {
                (a, b, c, d) == (g, h, i, j)
                    && e.to_bits() == k.to_bits()
                    && f.to_bits() == l.to_bits()
            }
            _ => false,
        }
    }
}

impl Eq for Layer {}

/// Checks a survival probability: `0 < p ≤ 1`.
pub(crate) fn check_survival(p: f32) -> crate::Result<()> {
    if p > 0.0 && p <= 1.0 {
        Ok(())
    } else {
        Err(crate::Error::invalid(
            "survival",
            p,
            "a survival probability in (0, 1]",
        ))
    }
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

/// A feed-forward network: layers applied in order to a batch `[n, features]`,
/// reshaped to `[n, ..input shape]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    layers: Vec<Layer>,
    input_shape: Option<Vec<usize>>,
}

impl Network {
    /// A network of the given layers. Its input is the first Linear layer's
    /// in-features, unless set by [`with_input_shape`](Network::with_input_shape).
    pub fn new(layers: Vec<Layer>) -> Network {
        Network {
            layers,
            input_shape: None,
        }
    }

    /// The same network taking examples of `shape` (e.g. `[1, 28, 28]` for MNIST
    /// images): batches `[n, product(shape)]` are reshaped to `[n, ..shape]`.
    pub fn with_input_shape(mut self, shape: &[usize]) -> Network {
        self.input_shape = Some(shape.to_vec());
        self
    }

    /// The shape of one example, if set.
    pub fn input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_blocks;
#[cfg(test)]
mod tests_fold;
