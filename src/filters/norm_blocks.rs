//! Constructors of BatchNorm blocks: convolution → BatchNorm → ReLU, and ResNet's basic
//! residual block.

use super::blocks::{Init, all_or_nothing, batch_norm, positive};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::nn::{ConvSpec, Layer};

/// A convolution followed by a BatchNorm and a ReLU, the unit of VGG-style and ResNet
/// networks: a `k×k` convolution `in → out` (stride, padding, groups; **no bias**, the
/// BatchNorm's β is the shift) `PREFIX.conv.weight` `[out, in / groups, k, k]`,
/// initialised as PyTorch does (uniform in `±1/√fan_in`) from a seed, then
/// [`Layer::batch_norm`]`("PREFIX.bn")` with PyTorch's initial values (γ = 1, β = 0,
/// running mean 0, running variance 1), then ReLU unless [`relu`](ConvBnRelu::relu) is
/// off.
///
/// ```
/// use slimnn::Model;
/// use slimnn::filters::ConvBnRelu;
/// use slimnn::nn::{Layer, Network};
///
/// let mut model = Model::new();
/// let layers = ConvBnRelu::new(1, 32, 3).with_padding(1).build(&mut model, "conv1", 1)?;
/// assert_eq!(layers.len(), 3); // conv, BatchNorm, ReLU
/// assert_eq!(model.get("conv1.conv.weight")?.shape(), &[32, 1, 3, 3]);
/// assert!(model.contains("conv1.bn.running_mean") && !model.contains("conv1.conv.bias"));
/// let net = Network::new(layers).with_input_shape(&[1, 28, 28]);
/// assert_eq!(net.shapes(&model)?.last().unwrap(), &[32, 28, 28]);
///
/// // Bad settings are typed errors, and the model is unchanged.
/// assert!(ConvBnRelu::new(3, 8, 3).with_groups(2).build(&mut model, "conv2", 1).is_err());
/// assert!(!model.contains("conv2.conv.weight"));
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvBnRelu {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (the convolution's filters, the BatchNorm's channels).
    pub out_channels: usize,
    /// The kernel's side `k`.
    pub kernel: usize,
    /// The convolution's stride (both directions).
    pub stride: usize,
    /// The convolution's zero padding (both sides, both directions).
    pub padding: usize,
    /// The convolution's groups (dividing both channel counts).
    pub groups: usize,
    /// A ReLU after the BatchNorm (on by default).
    pub relu: bool,
}

impl ConvBnRelu {
    /// `in → out` channels with a `k×k` kernel, stride 1, no padding, one group, ReLU.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> ConvBnRelu {
        ConvBnRelu {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            groups: 1,
            relu: true,
        }
    }

    /// Sets the stride.
    pub fn with_stride(mut self, stride: usize) -> ConvBnRelu {
        self.stride = stride;
        self
    }

    /// Sets the padding.
    pub fn with_padding(mut self, padding: usize) -> ConvBnRelu {
        self.padding = padding;
        self
    }

    /// Sets the groups.
    pub fn with_groups(mut self, groups: usize) -> ConvBnRelu {
        self.groups = groups;
        self
    }

    /// With the final ReLU, or without (a residual block's last BatchNorm).
    pub fn with_relu(mut self, relu: bool) -> ConvBnRelu {
        self.relu = relu;
        self
    }

    fn check(&self) -> Result<()> {
        positive("in_channels", self.in_channels)?;
        positive("out_channels", self.out_channels)?;
        positive("kernel", self.kernel)?;
        positive("stride", self.stride)?;
        positive("groups", self.groups)?;
        if !self.in_channels.is_multiple_of(self.groups)
            || !self.out_channels.is_multiple_of(self.groups)
        {
            return Err(Error::invalid(
                "groups",
                self.groups,
                format!(
                    "a divisor of both in_channels ({}) and out_channels ({})",
                    self.in_channels, self.out_channels
                ),
            ));
        }
        Ok(())
    }

    /// Adds the layers to a model being built (no checks, no rollback), the convolution
    /// at `conv.weight`, the BatchNorm at `bn.*`.
    fn add(&self, model: &mut Model, conv: &str, bn: &str, init: &mut Init) -> Result<Vec<Layer>> {
        let spec = ConvSpec::new()
            .with_stride(self.stride, self.stride)
            .with_padding(self.padding, self.padding)
            .with_groups(self.groups);
        let (o, k) = (self.out_channels, self.kernel);
        let conv = init.conv_with(
            model,
            conv,
            (o, self.in_channels / self.groups, k, k),
            spec,
            false,
        )?;
        let mut layers = vec![conv, batch_norm(model, bn, o)?];
        if self.relu {
            layers.push(Layer::Relu);
        }
        Ok(layers)
    }

    /// Adds the block's parameters to `model` under `prefix` (initialised reproducibly
    /// from `seed`) and returns its layers. Zero channels, kernel, stride or groups,
    /// groups that do not divide the channels, or a name already in the model, are
    /// errors, and then the model is unchanged. Whether the kernel fits the input is
    /// [`Network::check`](crate::nn::Network::check)'s to say.
    pub fn build(&self, model: &mut Model, prefix: &str, seed: u64) -> Result<Vec<Layer>> {
        self.check()?;
        all_or_nothing(model, |model| {
            let (conv, bn) = (format!("{prefix}.conv"), format!("{prefix}.bn"));
            self.add(model, &conv, &bn, &mut Init::new(seed))
        })
    }
}

/// ResNet's basic residual block (He et al. 2016): `ReLU(body(x) + shortcut(x))`, the
/// body a 3×3 [`ConvBnRelu`] `in → out` (the block's stride, padding 1) `PREFIX.conv1` /
/// `PREFIX.bn1`, and a 3×3 convolution `out → out` with BatchNorm and no ReLU
/// `PREFIX.conv2` / `PREFIX.bn2`. The shortcut is the identity when the shape is kept
/// (stride 1 and `in == out`), otherwise a 1×1 convolution with the block's stride and
/// a BatchNorm, `PREFIX.shortcut.conv` / `PREFIX.shortcut.bn` (ResNet's option B).
/// Convolutions have no biases; names as [`ConvBnRelu`]'s (`PREFIX.conv1.weight`,
/// `PREFIX.bn1.running_var`, …). Returns `[Layer::residual(body, shortcut), ReLU]`.
///
/// ```
/// use slimnn::Model;
/// use slimnn::filters::ResidualBlock;
/// use slimnn::nn::{Layer, Network};
///
/// let mut model = Model::new();
/// let mut layers = ResidualBlock::new(8, 8).build(&mut model, "layer1", 1)?;
/// assert!(!model.contains("layer1.shortcut.conv.weight")); // identity shortcut
/// layers.extend(ResidualBlock::new(8, 16).with_stride(2).build(&mut model, "layer2", 2)?);
/// assert_eq!(model.get("layer2.shortcut.conv.weight")?.shape(), &[16, 8, 1, 1]);
/// let net = Network::new(layers).with_input_shape(&[8, 8, 8]);
/// assert_eq!(net.shapes(&model)?.last().unwrap(), &[16, 4, 4]);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidualBlock {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// The first convolution's and the shortcut's stride.
    pub stride: usize,
}

impl ResidualBlock {
    /// `in → out` channels, stride 1.
    pub fn new(in_channels: usize, out_channels: usize) -> ResidualBlock {
        ResidualBlock {
            in_channels,
            out_channels,
            stride: 1,
        }
    }

    /// Sets the stride (2 halves the height and width).
    pub fn with_stride(mut self, stride: usize) -> ResidualBlock {
        self.stride = stride;
        self
    }

    /// Whether the shortcut is a 1×1 convolution (the shape changes) or the identity.
    pub fn projects(&self) -> bool {
        self.stride != 1 || self.in_channels != self.out_channels
    }

    /// Adds the block's parameters to `model` under `prefix` (initialised reproducibly
    /// from `seed`) and returns its layers. Zero channels or stride, or a name already
    /// in the model, are errors, and then the model is unchanged.
    pub fn build(&self, model: &mut Model, prefix: &str, seed: u64) -> Result<Vec<Layer>> {
        positive("in_channels", self.in_channels)?;
        positive("out_channels", self.out_channels)?;
        positive("stride", self.stride)?;
        let (c, o, s) = (self.in_channels, self.out_channels, self.stride);
        all_or_nothing(model, |model| {
            let mut init = Init::new(seed);
            let first = ConvBnRelu::new(c, o, 3).with_stride(s).with_padding(1);
            let second = ConvBnRelu::new(o, o, 3).with_padding(1).with_relu(false);
            let name = |part: &str| format!("{prefix}.{part}");
            let mut body = first.add(model, &name("conv1"), &name("bn1"), &mut init)?;
            body.extend(second.add(model, &name("conv2"), &name("bn2"), &mut init)?);
            let shortcut = if self.projects() {
                ConvBnRelu::new(c, o, 1)
                    .with_stride(s)
                    .with_relu(false)
                    .add(
                        model,
                        &name("shortcut.conv"),
                        &name("shortcut.bn"),
                        &mut init,
                    )?
            } else {
                Vec::new()
            };
            Ok(vec![Layer::residual(body, shortcut), Layer::Relu])
        })
    }
}
