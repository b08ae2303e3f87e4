//! Parameters and multiply-adds of a [`Network`], layer by layer.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::model::Model;
use crate::nn::{Layer, Network};

/// The parameters and multiply-adds of one layer, for one example.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerCost {
    /// Numbers the layer stores (weights, biases); a factorized weight counts its
    /// factors, and a parameter shared with an earlier layer is not counted again.
    pub params: usize,
    /// Multiply-adds of one example through the layer: a Linear layer's weight size, a
    /// convolution's weight size (per group) times its output positions; a factorized
    /// weight counts its factor layers ([`Factorization::flops`](crate::lowrank::Factorization::flops)).
    /// Masks are not subtracted (a dense kernel runs them). Activations, pooling and
    /// reshapes count 0.
    pub macs: usize,
    /// The part of `params` in convolutions (Conv2d, depthwise or not, and tied banks):
    /// all of it for a convolution, the convolutions' share for a block.
    pub conv_params: usize,
    /// The part of `macs` in convolutions.
    pub conv_macs: usize,
}

impl std::ops::AddAssign for LayerCost {
    fn add_assign(&mut self, other: LayerCost) {
        self.params += other.params;
        self.macs += other.macs;
        self.conv_params += other.conv_params;
        self.conv_macs += other.conv_macs;
    }
}

/// The [`LayerCost`] of every layer of a network, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkCost {
    /// One entry per layer of [`Network::layers`] (a block's entry sums its layers').
    pub layers: Vec<LayerCost>,
}

impl NetworkCost {
    /// Parameters of all layers.
    pub fn params(&self) -> usize {
        self.layers.iter().map(|l| l.params).sum()
    }

    /// Multiply-adds of one example.
    pub fn macs(&self) -> usize {
        self.layers.iter().map(|l| l.macs).sum()
    }

    /// Parameters of the convolutions.
    pub fn conv_params(&self) -> usize {
        self.layers.iter().map(|l| l.conv_params).sum()
    }

    /// Multiply-adds of the convolutions, for one example.
    pub fn conv_macs(&self) -> usize {
        self.layers.iter().map(|l| l.conv_macs).sum()
    }
}

impl Network {
    /// Parameters and multiply-adds per layer, for one example (the shapes come from
    /// [`Network::shapes`], so the network is checked against `model` first).
    ///
    /// ```
    /// use slimnn::Model;
    /// use slimnn::nn::Network;
    ///
    /// let mut model = Model::new();
    /// let net = Network::lenet5(&mut model, 1)?;
    /// let cost = net.costs(&model)?;
    /// assert_eq!(cost.params(), 431_080);
    /// assert_eq!(cost.conv_params(), 500 + 20 + 25_000 + 50);
    /// // conv1: 24×24 positions × 500, conv2: 8×8 × 25,000, then 400,000 + 5,000.
    /// assert_eq!(cost.macs(), 288_000 + 1_600_000 + 405_000);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn costs(&self, model: &Model) -> Result<NetworkCost> {
        let shapes = self.shapes(model)?;
        let mut seen = BTreeSet::new();
        let mut layers = Vec::with_capacity(self.layers().len());
        for (i, layer) in self.layers().iter().enumerate() {
            layers.push(layer_cost(
                layer,
                model,
                &shapes[i],
                &shapes[i + 1],
                &mut seen,
            )?);
        }
        Ok(NetworkCost { layers })
    }
}

/// The summed cost of `layers` run in order on an example of shape `input`, and their
/// output shape.
fn seq_cost(
    layers: &[Layer],
    model: &Model,
    input: &[usize],
    seen: &mut BTreeSet<String>,
) -> Result<(LayerCost, Vec<usize>)> {
    let mut total = LayerCost::default();
    let mut shape = input.to_vec();
    for layer in layers {
        let out = crate::nn::layer_output(layer, model, &shape)?;
        total += layer_cost(layer, model, &shape, &out, seen)?;
        shape = out;
    }
    Ok((total, shape))
}

/// The cost of `layer` on an example of shape `input`, giving `out`.
fn layer_cost(
    layer: &Layer,
    model: &Model,
    input: &[usize],
    out: &[usize],
    seen: &mut BTreeSet<String>,
) -> Result<LayerCost> {
    // Parameters not counted yet, and the weight's multiply-adds per output position.
    let mut params = |names: &[Option<&String>]| -> Result<(usize, usize)> {
        let mut count = 0;
        let mut per_position = 0;
        for (k, name) in names.iter().enumerate() {
            let Some(name) = name else { continue };
            let p = model.get(name)?;
            let (stored, macs) = match p.factorization() {
                Some(f) => (f.params(), f.flops()),
                None => (p.numel(), p.numel()),
            };
            if k == 0 {
                per_position = macs;
            }
            if seen.insert(name.to_string()) {
                count += stored;
            }
        }
        Ok((count, per_position))
    };
    let positions = |out: &[usize]| out[1..].iter().product::<usize>();
    let conv = |params: usize, macs: usize| LayerCost {
        params,
        macs,
        conv_params: params,
        conv_macs: macs,
    };
    Ok(match layer {
        Layer::Linear { weight, bias } => {
            let (params, macs) = params(&[Some(weight), bias.as_ref()])?;
            LayerCost {
                params,
                macs,
                ..LayerCost::default()
            }
        }
        Layer::Conv2d { weight, bias, .. } => {
            let (params, per_position) = params(&[Some(weight), bias.as_ref()])?;
            conv(params, per_position * positions(out))
        }
        Layer::TiedConv2d {
            weight,
            bias,
            transforms,
            ..
        } => {
            let (params, per_position) = params(&[Some(weight), bias.as_ref()])?;
            conv(params, per_position * transforms.len() * positions(out))
        }
        Layer::Relu
        | Layer::CRelu
        | Layer::MaxPool2d { .. }
        | Layer::Flatten
        | Layer::Dropout { .. }
        | Layer::AvgPool2d { .. }
        | Layer::GlobalAvgPool => LayerCost::default(),
        // γ and β are parameters (the running statistics are buffers); in evaluation
        // mode one multiply-add per element.
        Layer::BatchNorm { weight, bias, .. } => LayerCost {
            params: params(&[Some(weight), Some(bias)])?.0,
            macs: out.iter().product(),
            ..LayerCost::default()
        },
        Layer::Residual { body, shortcut, .. } => {
            let mut cost = seq_cost(body, model, input, seen)?.0;
            cost += seq_cost(shortcut, model, input, seen)?.0;
            cost
        }
        Layer::Concat { branches } => {
            let mut cost = LayerCost::default();
            for b in branches {
                cost += seq_cost(b, model, input, seen)?.0;
            }
            cost
        }
    })
}
