//! The architectures the survey's MNIST results are measured on.

use ndarray::{ArrayD, IxDyn};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

use super::{ConvSpec, Layer, Network};
use crate::error::{Error, Result};
use crate::model::{DType, LayerKind, Model};

/// PyTorch's default initialisation, reproducible from a seed: weights and biases
/// uniform in `±1/√fan_in`.
struct Init(Xoshiro256PlusPlus);

impl Init {
    fn new(seed: u64) -> Init {
        Init(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// Adds `prefix.weight` (`shape`, kind `kind`) and `prefix.bias` (`[shape[0]]`),
    /// with `fan_in` the product of the weight's other dimensions.
    fn layer(
        &mut self,
        model: &mut Model,
        prefix: &str,
        kind: LayerKind,
        shape: &[usize],
    ) -> Result<(String, String)> {
        let fan_in: usize = shape[1..].iter().product();
        let bound = 1.0 / (fan_in as f32).sqrt();
        let (wn, bn) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        let mut uniform =
            || ((self.0.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound;
        let weight = ArrayD::from_shape_simple_fn(IxDyn(shape), &mut uniform);
        let bias = ArrayD::from_shape_simple_fn(IxDyn(&[shape[0]]), &mut uniform);
        model.add_param(wn.clone(), kind, DType::F32, weight)?;
        model.add_param(bn.clone(), LayerKind::Bias, DType::F32, bias)?;
        Ok((wn, bn))
    }
}

impl Network {
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
        let mut init = Init::new(seed);
        let mut layers = Vec::new();
        for (i, w) in sizes.windows(2).enumerate() {
            let (weight, bias) = init.layer(
                model,
                &format!("fc{}", i + 1),
                LayerKind::Linear,
                &[w[1], w[0]],
            )?;
            if i > 0 {
                layers.push(Layer::Relu);
            }
            layers.push(Layer::Linear {
                weight,
                bias: Some(bias),
            });
        }
        Ok(Network::new(layers))
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
            layers.push(linear(model, p));
        }
        let net = Network::new(layers);
        net.check(model)?;
        Ok(net)
    }

    /// LeNet-5 as Han et al. compress it (Deep Compression, Table 1: 431K parameters):
    /// Caffe's variant from `lenet_train_test.prototxt`, on `[1, 28, 28]` images.
    ///
    /// `conv1` (20 filters 5×5) → max-pool 2×2 stride 2 → `conv2` (50 filters 5×5) →
    /// max-pool 2×2 stride 2 → flatten (800) → `fc1` (500) → ReLU → `fc2` (10). As in
    /// Caffe, there is no ReLU after the convolutions. Adds `conv1.weight` `[20, 1, 5,
    /// 5]`, `conv2.weight` `[50, 20, 5, 5]` (kind Conv2d), `fc1.weight` `[500, 800]`,
    /// `fc2.weight` `[10, 500]` (Linear) and their biases to `model` (431,080 numbers),
    /// initialised as PyTorch does (uniform in `±1/√fan_in`, `fan_in = in·kh·kw` for a
    /// convolution), reproducibly from `seed`.
    ///
    /// ```
    /// use slimnn::Model;
    /// use slimnn::nn::Network;
    ///
    /// let mut model = Model::new();
    /// let net = Network::lenet5(&mut model, 1)?;
    /// assert_eq!(model.numel(), 431_080);
    /// assert_eq!(net.inputs(&model)?, 784);
    /// assert_eq!(Network::lenet5_from(&model)?, net);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn lenet5(model: &mut Model, seed: u64) -> Result<Network> {
        let mut init = Init::new(seed);
        init.layer(model, "conv1", LayerKind::Conv2d, &[20, 1, 5, 5])?;
        init.layer(model, "conv2", LayerKind::Conv2d, &[50, 20, 5, 5])?;
        init.layer(model, "fc1", LayerKind::Linear, &[500, 800])?;
        init.layer(model, "fc2", LayerKind::Linear, &[10, 500])?;
        Network::lenet5_from(model)
    }

    /// The [`lenet5`](Network::lenet5) layers over the parameters already in `model`
    /// (e.g. loaded from a checkpoint), checked against it. Biases are used where the
    /// model has them.
    pub fn lenet5_from(model: &Model) -> Result<Network> {
        let pool = Layer::MaxPool2d {
            kernel: (2, 2),
            stride: (2, 2),
        };
        let net = Network::new(vec![
            conv(model, "conv1"),
            pool.clone(),
            conv(model, "conv2"),
            pool,
            Layer::Flatten,
            linear(model, "fc1"),
            Layer::Relu,
            linear(model, "fc2"),
        ])
        .with_input_shape(&[1, 28, 28]);
        net.check(model)?;
        Ok(net)
    }
}

/// `prefix.weight` and, if the model has it, `prefix.bias`.
fn names(model: &Model, prefix: &str) -> (String, Option<String>) {
    let bias = format!("{prefix}.bias");
    (
        format!("{prefix}.weight"),
        model.contains(&bias).then_some(bias),
    )
}

fn linear(model: &Model, prefix: &str) -> Layer {
    let (weight, bias) = names(model, prefix);
    Layer::Linear { weight, bias }
}

fn conv(model: &Model, prefix: &str) -> Layer {
    let (weight, bias) = names(model, prefix);
    Layer::Conv2d {
        weight,
        bias,
        spec: ConvSpec::new(),
    }
}
