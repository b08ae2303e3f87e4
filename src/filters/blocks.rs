//! Constructors of compact blocks, with their parameters added to a model under names.

use ndarray::{ArrayD, IxDyn};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::model::{DType, LayerKind, Model};
use crate::nn::{ConvSpec, Layer};

/// PyTorch's default initialisation, reproducible from a seed: uniform in `±1/√fan_in`.
pub(super) struct Init(Xoshiro256PlusPlus);

impl Init {
    /// The initialisation drawn from `seed`.
    pub(super) fn new(seed: u64) -> Init {
        Init(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// Adds `name` (`shape`, kind `kind`), uniform in `±1/√fan_in`.
    fn add(
        &mut self,
        model: &mut Model,
        name: String,
        kind: LayerKind,
        shape: &[usize],
        fan_in: usize,
    ) -> Result<String> {
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let rng = &mut self.0;
        let value = ArrayD::from_shape_simple_fn(IxDyn(shape), || {
            ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
        });
        model.add_param(name.clone(), kind, DType::F32, value)?;
        Ok(name)
    }

    /// A convolution `PREFIX.weight` `[out, in / groups, k, k]` and `PREFIX.bias`
    /// `[out]`.
    pub(super) fn conv(
        &mut self,
        model: &mut Model,
        prefix: &str,
        shape: (usize, usize, usize, usize),
        spec: ConvSpec,
    ) -> Result<Layer> {
        self.conv_with(model, prefix, shape, spec, true)
    }

    /// A convolution `PREFIX.weight` `[out, in / groups, k, k]`, and `PREFIX.bias`
    /// `[out]` if `bias` (none before a BatchNorm, whose β is the shift).
    pub(super) fn conv_with(
        &mut self,
        model: &mut Model,
        prefix: &str,
        (out, cg, kh, kw): (usize, usize, usize, usize),
        spec: ConvSpec,
        bias: bool,
    ) -> Result<Layer> {
        let fan_in = cg * kh * kw;
        let weight = self.add(
            model,
            format!("{prefix}.weight"),
            LayerKind::Conv2d,
            &[out, cg, kh, kw],
            fan_in,
        )?;
        let bias = if bias {
            Some(self.add(
                model,
                format!("{prefix}.bias"),
                LayerKind::Bias,
                &[out],
                fan_in,
            )?)
        } else {
            None
        };
        Ok(Layer::Conv2d { weight, bias, spec })
    }
}

/// Adds a BatchNorm's parameters `PREFIX.weight` (γ = 1, kind Norm), `PREFIX.bias`
/// (β = 0, kind Bias), `PREFIX.running_mean` (0) and `PREFIX.running_var` (1, both kind
/// Other), PyTorch's initial values, and returns [`Layer::batch_norm`]`(prefix)`.
pub(super) fn batch_norm(model: &mut Model, prefix: &str, channels: usize) -> Result<Layer> {
    let fill = |v: f32| ArrayD::from_elem(IxDyn(&[channels]), v);
    for (suffix, kind, value) in [
        ("weight", LayerKind::Norm, 1.0),
        ("bias", LayerKind::Bias, 0.0),
        ("running_mean", LayerKind::Other, 0.0),
        ("running_var", LayerKind::Other, 1.0),
    ] {
        model.add_param(format!("{prefix}.{suffix}"), kind, DType::F32, fill(value))?;
    }
    Ok(Layer::batch_norm(prefix))
}

pub(super) fn positive(name: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::invalid(name, value, "at least 1"));
    }
    Ok(())
}

/// Builds the layers on a copy of `model` and keeps it only if all succeed.
pub(super) fn all_or_nothing(
    model: &mut Model,
    build: impl FnOnce(&mut Model) -> Result<Vec<Layer>>,
) -> Result<Vec<Layer>> {
    let mut work = model.clone();
    let layers = build(&mut work)?;
    *model = work;
    Ok(layers)
}

/// A depthwise-separable block (MobileNet, Howard et al. 2017): a depthwise `k×k`
/// convolution (`groups = in`, with the block's stride and padding), ReLU, and a
/// pointwise 1×1 convolution `in → out`. Parameters `PREFIX.depthwise.weight`
/// `[in, 1, k, k]`, `PREFIX.depthwise.bias` `[in]`, `PREFIX.pointwise.weight`
/// `[out, in, 1, 1]` and `PREFIX.pointwise.bias` `[out]`, initialised as PyTorch does.
///
/// With [`with_batch_norm`](SeparableBlock::with_batch_norm) it is MobileNet's layout:
/// depthwise → BatchNorm → ReLU → pointwise → BatchNorm → ReLU, the convolutions
/// without biases (β shifts), the BatchNorms `PREFIX.depthwise_bn.*` and
/// `PREFIX.pointwise_bn.*` (see [`Layer::batch_norm`]; γ = 1, β = 0, running mean 0,
/// running variance 1).
///
/// It has `in·k² + out·in` weights where a dense `k×k` convolution has `out·in·k²`.
///
/// ```
/// use slimnn::Model;
/// use slimnn::filters::SeparableBlock;
/// use slimnn::nn::{Layer, Network};
///
/// let mut model = Model::new();
/// let mut layers = SeparableBlock::new(8, 16, 3).with_padding(1).build(&mut model, "b1", 7)?;
/// layers.push(Layer::Flatten);
/// let net = Network::new(layers).with_input_shape(&[8, 10, 10]);
/// assert_eq!(net.shapes(&model)?.last().unwrap(), &[16 * 10 * 10]);
/// assert_eq!(model.numel(), 8 * 9 + 8 + 16 * 8 + 16);
///
/// // MobileNet's layout: 6 layers, no conv biases, two BatchNorms of 4 vectors each.
/// let mut model = Model::new();
/// let block = SeparableBlock::new(8, 16, 3).with_padding(1).with_batch_norm(true);
/// let layers = block.build(&mut model, "b1", 7)?;
/// assert_eq!(layers.len(), 6);
/// assert_eq!(model.numel(), 8 * 9 + 16 * 8 + 4 * (8 + 16));
/// assert!(model.contains("b1.pointwise_bn.running_var"));
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeparableBlock {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// The depthwise kernel's side `k`.
    pub kernel: usize,
    /// The depthwise convolution's stride (both directions).
    pub stride: usize,
    /// The depthwise convolution's zero padding (both sides, both directions).
    pub padding: usize,
    /// A BatchNorm after each convolution (and a ReLU after the pointwise one).
    pub batch_norm: bool,
}

impl SeparableBlock {
    /// `in → out` channels with a `k×k` depthwise kernel, stride 1, no padding, no
    /// BatchNorm.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> SeparableBlock {
        SeparableBlock {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            batch_norm: false,
        }
    }

    /// Sets the stride.
    pub fn with_stride(mut self, stride: usize) -> SeparableBlock {
        self.stride = stride;
        self
    }

    /// Sets the padding.
    pub fn with_padding(mut self, padding: usize) -> SeparableBlock {
        self.padding = padding;
        self
    }

    /// MobileNet's layout, with a BatchNorm after each convolution, or not.
    pub fn with_batch_norm(mut self, batch_norm: bool) -> SeparableBlock {
        self.batch_norm = batch_norm;
        self
    }

    /// Adds the block's parameters to `model` under `prefix` (initialised reproducibly
    /// from `seed`) and returns its layers. Zero channels, kernel or stride, or a name
    /// already in the model, are errors, and then the model is unchanged.
    pub fn build(&self, model: &mut Model, prefix: &str, seed: u64) -> Result<Vec<Layer>> {
        positive("in_channels", self.in_channels)?;
        positive("out_channels", self.out_channels)?;
        positive("kernel", self.kernel)?;
        positive("stride", self.stride)?;
        let (c, o, k, bn) = (
            self.in_channels,
            self.out_channels,
            self.kernel,
            self.batch_norm,
        );
        all_or_nothing(model, |model| {
            let mut init = Init::new(seed);
            let depthwise = ConvSpec::new()
                .with_stride(self.stride, self.stride)
                .with_padding(self.padding, self.padding)
                .with_groups(c);
            let dw = init.conv_with(
                model,
                &format!("{prefix}.depthwise"),
                (c, 1, k, k),
                depthwise,
                !bn,
            )?;
            let pw = init.conv_with(
                model,
                &format!("{prefix}.pointwise"),
                (o, c, 1, 1),
                ConvSpec::new(),
                !bn,
            )?;
            if !bn {
                return Ok(vec![dw, Layer::Relu, pw]);
            }
            Ok(vec![
                dw,
                batch_norm(model, &format!("{prefix}.depthwise_bn"), c)?,
                Layer::Relu,
                pw,
                batch_norm(model, &format!("{prefix}.pointwise_bn"), o)?,
                Layer::Relu,
            ])
        })
    }
}

/// A fire module (SqueezeNet, Iandola et al. 2016): a 1×1 *squeeze* convolution
/// `in → s`, ReLU, then two *expand* convolutions on its output, 1×1 `s → e₁` and 3×3
/// (padding 1) `s → e₃`, concatenated on the channels ([`Layer::Concat`]), and ReLU:
/// `[n, in, h, w]` → `[n, e₁ + e₃, h, w]`. Parameters `PREFIX.squeeze.*`,
/// `PREFIX.expand1x1.*` and `PREFIX.expand3x3.*` (weight and bias each), initialised
/// as PyTorch does.
///
/// With `s` small, it has `in·s + s·e₁ + 9·s·e₃` weights where a 3×3 convolution
/// `in → e₁ + e₃` has `9·in·(e₁ + e₃)`.
///
/// ```
/// use slimnn::Model;
/// use slimnn::filters::FireModule;
/// use slimnn::nn::{Layer, Network};
///
/// let mut model = Model::new();
/// let mut layers = FireModule::new(32, 8, 16, 16).build(&mut model, "fire1", 3)?;
/// layers.push(Layer::Flatten);
/// let net = Network::new(layers).with_input_shape(&[32, 7, 7]);
/// assert_eq!(net.shapes(&model)?.last().unwrap(), &[32 * 7 * 7]);
/// assert_eq!(net.costs(&model)?.conv_params(), (32 * 8 + 8) + (8 * 16 + 16) + (8 * 9 * 16 + 16));
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FireModule {
    /// Input channels.
    pub in_channels: usize,
    /// The squeeze convolution's output channels `s`.
    pub squeeze: usize,
    /// The 1×1 expand convolution's output channels `e₁`.
    pub expand1x1: usize,
    /// The 3×3 expand convolution's output channels `e₃`.
    pub expand3x3: usize,
}

impl FireModule {
    /// `in → s → e₁ + e₃` channels.
    pub fn new(in_channels: usize, squeeze: usize, expand1x1: usize, expand3x3: usize) -> Self {
        FireModule {
            in_channels,
            squeeze,
            expand1x1,
            expand3x3,
        }
    }

    /// Adds the module's parameters to `model` under `prefix` (initialised reproducibly
    /// from `seed`) and returns its layers. Zero channels, or a name already in the
    /// model, are errors, and then the model is unchanged.
    pub fn build(&self, model: &mut Model, prefix: &str, seed: u64) -> Result<Vec<Layer>> {
        positive("in_channels", self.in_channels)?;
        positive("squeeze", self.squeeze)?;
        positive("expand1x1", self.expand1x1)?;
        positive("expand3x3", self.expand3x3)?;
        let (c, s) = (self.in_channels, self.squeeze);
        all_or_nothing(model, |model| {
            let mut init = Init::new(seed);
            let squeeze = init.conv(
                model,
                &format!("{prefix}.squeeze"),
                (s, c, 1, 1),
                ConvSpec::new(),
            )?;
            let e1 = init.conv(
                model,
                &format!("{prefix}.expand1x1"),
                (self.expand1x1, s, 1, 1),
                ConvSpec::new(),
            )?;
            let e3 = init.conv(
                model,
                &format!("{prefix}.expand3x3"),
                (self.expand3x3, s, 3, 3),
                ConvSpec::new().with_padding(1, 1),
            )?;
            Ok(vec![
                squeeze,
                Layer::Relu,
                Layer::concat(vec![vec![e1], vec![e3]]),
                Layer::Relu,
            ])
        })
    }
}
