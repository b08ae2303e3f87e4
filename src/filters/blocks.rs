//! Constructors of compact blocks, with their parameters added to a model under names.

use ndarray::{ArrayD, IxDyn};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::model::{DType, LayerKind, Model};
use crate::nn::{ConvSpec, Layer};

/// PyTorch's default initialisation, reproducible from a seed: uniform in `±1/√fan_in`.
struct Init(Xoshiro256PlusPlus);

impl Init {
    /// Adds `name` (`shape`, kind `kind`), `fan_in` the product of the dimensions after
    /// the first, or the given one (a bias takes its layer's).
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
    fn conv(
        &mut self,
        model: &mut Model,
        prefix: &str,
        (out, cg, kh, kw): (usize, usize, usize, usize),
        spec: ConvSpec,
    ) -> Result<Layer> {
        let fan_in = cg * kh * kw;
        let weight = self.add(
            model,
            format!("{prefix}.weight"),
            LayerKind::Conv2d,
            &[out, cg, kh, kw],
            fan_in,
        )?;
        let bias = self.add(
            model,
            format!("{prefix}.bias"),
            LayerKind::Bias,
            &[out],
            fan_in,
        )?;
        Ok(Layer::Conv2d {
            weight,
            bias: Some(bias),
            spec,
        })
    }
}

fn positive(name: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::invalid(name, value, "at least 1"));
    }
    Ok(())
}

/// Builds the layers on a copy of `model` and keeps it only if all succeed.
fn all_or_nothing(
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
}

impl SeparableBlock {
    /// `in → out` channels with a `k×k` depthwise kernel, stride 1, no padding.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> SeparableBlock {
        SeparableBlock {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
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

    /// Adds the block's parameters to `model` under `prefix` (initialised reproducibly
    /// from `seed`) and returns its layers. Zero channels, kernel or stride, or a name
    /// already in the model, are errors, and then the model is unchanged.
    pub fn build(&self, model: &mut Model, prefix: &str, seed: u64) -> Result<Vec<Layer>> {
        positive("in_channels", self.in_channels)?;
        positive("out_channels", self.out_channels)?;
        positive("kernel", self.kernel)?;
        positive("stride", self.stride)?;
        let (c, o, k) = (self.in_channels, self.out_channels, self.kernel);
        all_or_nothing(model, |model| {
            let mut init = Init(Xoshiro256PlusPlus::seed_from_u64(seed));
            let depthwise = ConvSpec::new()
                .with_stride(self.stride, self.stride)
                .with_padding(self.padding, self.padding)
                .with_groups(c);
            Ok(vec![
                init.conv(
                    model,
                    &format!("{prefix}.depthwise"),
                    (c, 1, k, k),
                    depthwise,
                )?,
                Layer::Relu,
                init.conv(
                    model,
                    &format!("{prefix}.pointwise"),
                    (o, c, 1, 1),
                    ConvSpec::new(),
                )?,
            ])
        })
    }
}
