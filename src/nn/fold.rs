//! Folding a BatchNorm (evaluation mode) into the Conv2d or Linear layer before it, for
//! inference: with `s = γ/√(σ² + ε)` per output channel, `W' = W·s` and
//! `b' = (b − μ)·s + β`, so that `layer'(x) = BN(layer(x))` exactly (up to rounding) and
//! the BatchNorm and its four parameter vectors go.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Axis, IxDyn};

use super::{Layer, Network};
use crate::error::{Error, Result};
use crate::model::{LayerKind, Model};
use crate::tensor::{check_finite, check_same_shape};

/// One BatchNorm layer's parameters by name, and its ε: what
/// [`Model::fold_batch_norm`] folds.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormNames {
    /// γ, the scale.
    pub weight: String,
    /// β, the shift.
    pub bias: String,
    /// The running mean μ.
    pub running_mean: String,
    /// The running variance σ².
    pub running_var: String,
    /// ε, added to the variance (finite, above 0).
    pub eps: f32,
}

impl BatchNormNames {
    /// PyTorch's names under `prefix` (`prefix.weight`, `prefix.bias`,
    /// `prefix.running_mean`, `prefix.running_var`) and its default `ε = 1e-5`, as
    /// [`Layer::batch_norm`].
    pub fn new(prefix: &str) -> BatchNormNames {
        BatchNormNames {
            weight: format!("{prefix}.weight"),
            bias: format!("{prefix}.bias"),
            running_mean: format!("{prefix}.running_mean"),
            running_var: format!("{prefix}.running_var"),
            eps: 1e-5,
        }
    }

    /// The same names with another ε.
    pub fn with_eps(mut self, eps: f32) -> BatchNormNames {
        self.eps = eps;
        self
    }

    /// The names and ε of a [`Layer::BatchNorm`]; `None` for any other layer.
    pub fn of_layer(layer: &Layer) -> Option<BatchNormNames> {
        match layer {
            Layer::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
                eps,
                ..
            } => Some(BatchNormNames {
                weight: weight.clone(),
                bias: bias.clone(),
                running_mean: running_mean.clone(),
                running_var: running_var.clone(),
                eps: *eps,
            }),
            _ => None,
        }
    }

    /// The four names: γ, β, running mean, running variance.
    pub fn names(&self) -> [&str; 4] {
        [
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
        ]
        .map(String::as_str)
    }
}

/// One BatchNorm folded into the layer before it.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormFold {
    /// The Conv2d or Linear weight, scaled per output channel.
    pub weight: String,
    /// Its bias, shifted; created if the layer had none.
    pub bias: String,
    /// Whether the bias was created (kind Bias, the weight's dtype).
    pub bias_created: bool,
    /// The BatchNorm folded; its four parameters left the model.
    pub batch_norm: BatchNormNames,
    /// Output channels (the length of each BatchNorm parameter).
    pub channels: usize,
}

impl BatchNormFold {
    /// Parameter elements the model lost: the BatchNorm's four vectors, less a created
    /// bias.
    pub fn params_removed(&self) -> usize {
        4 * self.channels - if self.bias_created { self.channels } else { 0 }
    }
}

/// The folds [`Network::fold_batch_norm`] made, in network order (blocks' layers
/// after the block's place).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FoldReport {
    /// One entry per BatchNorm folded.
    pub folds: Vec<BatchNormFold>,
}

impl FoldReport {
    /// Parameter elements the model lost over all folds.
    pub fn params_removed(&self) -> usize {
        self.folds.iter().map(BatchNormFold::params_removed).sum()
    }
}

/// The name of the bias created for a layer without one: `PREFIX.bias` for a weight
/// `PREFIX.weight`, else the weight's name followed by `.bias`.
pub fn created_bias_name(weight: &str) -> String {
    match weight.strip_suffix(".weight") {
        Some(prefix) => format!("{prefix}.bias"),
        None => format!("{weight}.bias"),
    }
}

/// A 1-D parameter's effective values in f64, checked finite.
fn vector(model: &Model, name: &str, channels: usize, of: &str) -> Result<Vec<f64>> {
    let p = model.get(name)?;
    check_same_shape(&[channels], p.shape(), || {
        format!("`{name}` (one value per output channel of `{of}`)")
    })?;
    let v = p.effective();
    let v = v.as_slice().expect("a fresh 1-D array is contiguous");
    check_finite(v, || format!("`{name}`"))?;
    Ok(v.iter().map(|&x| x as f64).collect())
}

/// Fails unless the parameter is held as plain (possibly masked) values.
fn check_plain(model: &Model, name: &str) -> Result<()> {
    let p = model.get(name)?;
    let form = if p.quantized().is_some() {
        "quantized"
    } else if p.factorization().is_some() {
        "factorized"
    } else {
        return Ok(());
    };
    Err(Error::invalid(
        "weight",
        format!("`{name}` ({form})"),
        "plain or pruned values: fold BatchNorm before quantizing or factorizing",
    ))
}

/// The checked result of a fold, before the model changes.
struct Planned {
    weight: ArrayD<f32>,
    bias: Vec<f32>,
    fold: BatchNormFold,
}

/// Everything [`Model::fold_batch_norm`] checks and computes, the model untouched.
fn plan(model: &Model, weight: &str, bias: Option<&str>, bn: &BatchNormNames) -> Result<Planned> {
    if !(bn.eps > 0.0 && bn.eps.is_finite()) {
        return Err(Error::invalid("eps", bn.eps, "a finite value above 0"));
    }
    let w = model.get(weight)?;
    if !matches!(w.kind(), LayerKind::Linear | LayerKind::Conv2d) {
        return Err(Error::WrongKind {
            name: weight.into(),
            kind: w.kind().to_string(),
            operation: "folding a BatchNorm",
            expected: "a Linear or Conv2d weight",
        });
    }
    check_plain(model, weight)?;
    let Some(&channels) = w.shape().first() else {
        return Err(Error::bad_shape(
            format!("`{weight}`"),
            w.shape(),
            "output channels first",
        ));
    };
    let values = w.value();
    check_finite(&values.iter().copied().collect::<Vec<_>>(), || {
        format!("`{weight}`")
    })?;
    let gamma = vector(model, &bn.weight, channels, weight)?;
    let beta = vector(model, &bn.bias, channels, weight)?;
    let mean = vector(model, &bn.running_mean, channels, weight)?;
    let var = vector(model, &bn.running_var, channels, weight)?;
    if let Some(v) = var.iter().find(|v| **v < 0.0) {
        return Err(Error::invalid(
            "running_var",
            format!("{v} in `{}`", bn.running_var),
            "running variances ≥ 0",
        ));
    }
    let (bias_name, b, bias_created) = match bias {
        Some(name) => {
            check_plain(model, name)?;
            (
                name.to_string(),
                vector(model, name, channels, weight)?,
                false,
            )
        }
        None => {
            let name = created_bias_name(weight);
            if model.contains(&name) {
                return Err(Error::invalid(
                    "bias",
                    &name,
                    "a name not already in the model (for the bias the fold creates)",
                ));
            }
            (name, vec![0.0; channels], true)
        }
    };
    let scale: Vec<f64> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + bn.eps as f64).sqrt())
        .collect();
    let mut folded = values.clone();
    for (c, mut row) in folded.axis_iter_mut(Axis(0)).enumerate() {
        row.mapv_inplace(|x| (x as f64 * scale[c]) as f32);
    }
    let new_bias: Vec<f32> = (0..channels)
        .map(|c| ((b[c] - mean[c]) * scale[c] + beta[c]) as f32)
        .collect();
    check_finite(&folded.iter().copied().collect::<Vec<_>>(), || {
        format!("`{weight}` folded with `{}`", bn.weight)
    })?;
    check_finite(&new_bias, || {
        format!("`{bias_name}` folded with `{}`", bn.bias)
    })?;
    Ok(Planned {
        weight: folded,
        bias: new_bias,
        fold: BatchNormFold {
            weight: weight.into(),
            bias: bias_name,
            bias_created,
            batch_norm: bn.clone(),
            channels,
        },
    })
}

impl Model {
    /// Folds the BatchNorm `bn` (in evaluation mode: its running statistics) into the
    /// Conv2d or Linear weight `weight` before it (any groups: the output channel is
    /// axis 0) and its `bias`: with `s = γ/√(σ² + ε)` per output channel,
    /// `W' = W·s` and `b' = (b − μ)·s + β`. Without a bias (`None`) one is created, named
    /// by [`created_bias_name`] (`conv1.weight` → `conv1.bias`, kind Bias, the weight's
    /// dtype). The BatchNorm's four parameters leave the model, and so does PyTorch's
    /// `PREFIX.num_batches_tracked` (a raw tensor) for a γ named `PREFIX.weight`. A
    /// pruned weight keeps its mask (scaling keeps zeros zero).
    ///
    /// Errors, with the model unchanged: an unknown name; a weight that is not a Linear
    /// or Conv2d weight ([`Error::WrongKind`]), or is quantized or factorized (fold
    /// first); BatchNorm parameters or a bias that are not `[out channels]`
    /// ([`Error::ShapeMismatch`]); `eps` not finite and above 0, a negative running
    /// variance ([`Error::InvalidParameter`]); NaN or infinity in any value, or in the
    /// folded result ([`Error::NonFinite`]); a created bias's name already taken.
    ///
    /// ```
    /// use ndarray::{ArrayD, IxDyn};
    /// use slimnn::Model;
    /// use slimnn::nn::BatchNormNames;
    ///
    /// let mut model = Model::new();
    /// model.add("fc.weight", ArrayD::from_elem(IxDyn(&[2, 3]), 1.0))?;
    /// for (name, v) in [("weight", 2.0), ("bias", 0.5), ("running_mean", 1.0), ("running_var", 3.0)] {
    ///     model.add(format!("bn.{name}"), ArrayD::from_elem(IxDyn(&[2]), v))?;
    /// }
    /// let fold = model.fold_batch_norm("fc.weight", None, &BatchNormNames::new("bn").with_eps(1.0))?;
    /// assert!(fold.bias_created && !model.contains("bn.weight"));
    /// // s = 2/√(3 + 1) = 1: W unchanged, b = (0 − 1)·1 + 0.5.
    /// assert_eq!(model.get("fc.weight")?.value()[[0, 0]], 1.0);
    /// assert_eq!(model.get("fc.bias")?.value()[[1]], -0.5);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn fold_batch_norm(
        &mut self,
        weight: &str,
        bias: Option<&str>,
        bn: &BatchNormNames,
    ) -> Result<BatchNormFold> {
        let planned = plan(self, weight, bias, bn)?;
        apply(self, planned)
    }
}

/// Writes a checked fold into the model (nothing here fails for a planned fold of this
/// model, but errors still propagate).
fn apply(model: &mut Model, planned: Planned) -> Result<BatchNormFold> {
    let Planned { weight, bias, fold } = planned;
    // The scaled values under the same mask: zeros stay zeros.
    model.get_mut(&fold.weight)?.value_mut().assign(&weight);
    let bias = ArrayD::from_shape_vec(IxDyn(&[fold.channels]), bias)?;
    if fold.bias_created {
        let dtype = model.get(&fold.weight)?.dtype();
        model.add_param(fold.bias.clone(), LayerKind::Bias, dtype, bias)?;
    } else {
        model.get_mut(&fold.bias)?.replace_value(bias)?;
    }
    for name in fold.batch_norm.names() {
        model.remove(name)?;
    }
    // PyTorch's counter of the batches seen goes with its BatchNorm.
    if let Some(prefix) = fold.batch_norm.weight.strip_suffix(".weight") {
        model.remove_raw(&format!("{prefix}.num_batches_tracked"));
    }
    Ok(fold)
}

/// A fold the network rewrite found: a layer's weight and bias, and the BatchNorm after
/// it.
pub(crate) struct FoldSite {
    pub weight: String,
    pub bias: Option<String>,
    pub batch_norm: BatchNormNames,
}

impl Network {
    /// Folds every BatchNorm that directly follows a Conv2d or Linear layer (in the
    /// same sequence: the top level, a residual block's body or shortcut, a
    /// concatenation's branch) into that layer ([`Model::fold_batch_norm`]), and returns
    /// the network without those BatchNorm layers (a layer that had no bias now reads
    /// the created one), and the folds made. In evaluation mode the new network on the
    /// new model computes what this one computes on the old (up to rounding).
    ///
    /// A BatchNorm after anything else (first in a sequence, after a pooling, a ReLU,
    /// a block or a tied filter bank) stays. A weight or bias that another layer also
    /// reads is an [`Error::InvalidParameter`] (folding would change that layer); on any
    /// error the model is unchanged.
    ///
    /// ```
    /// use ndarray::{Array2, ArrayD, IxDyn};
    /// use slimnn::Model;
    /// use slimnn::nn::{ConvSpec, Layer, Network};
    ///
    /// let mut model = Model::new();
    /// model.add("conv.weight", ArrayD::from_shape_fn(IxDyn(&[4, 1, 3, 3]), |i| (i[0] + i[2]) as f32 * 0.1 - 0.2))?;
    /// for (name, v) in [("weight", 1.5), ("bias", 0.1), ("running_mean", 0.2), ("running_var", 0.8)] {
    ///     model.add(format!("bn.{name}"), ArrayD::from_elem(IxDyn(&[4]), v))?;
    /// }
    /// model.add("fc.weight", ArrayD::from_elem(IxDyn(&[10, 144]), 0.01))?;
    /// let net = Network::new(vec![
    ///     Layer::Conv2d { weight: "conv.weight".into(), bias: None, spec: ConvSpec::new() },
    ///     Layer::batch_norm("bn"),
    ///     Layer::Relu,
    ///     Layer::Flatten,
    ///     Layer::Linear { weight: "fc.weight".into(), bias: None },
    /// ])
    /// .with_input_shape(&[1, 8, 8]);
    /// let x = Array2::from_shape_fn((2, 64), |(i, j)| ((i * 64 + j) as f32).sin());
    /// let before = net.forward(&model, x.view())?;
    ///
    /// let mut folded_model = model.clone();
    /// let (folded, report) = net.fold_batch_norm(&mut folded_model)?;
    /// assert_eq!(folded.layers().len(), 4);
    /// assert_eq!(report.params_removed(), 4 * 4 - 4); // γ, β, μ, σ² less the new bias
    /// assert!(folded_model.contains("conv.bias") && !folded_model.contains("bn.weight"));
    /// let after = folded.forward(&folded_model, x.view())?;
    /// assert!(before.iter().zip(&after).all(|(a, b)| (a - b).abs() < 1e-5));
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn fold_batch_norm(&self, model: &mut Model) -> Result<(Network, FoldReport)> {
        let (net, sites) = self.fold_plan()?;
        let mut work = model.clone();
        let mut folds = Vec::with_capacity(sites.len());
        for site in &sites {
            folds.push(work.fold_batch_norm(
                &site.weight,
                site.bias.as_deref(),
                &site.batch_norm,
            )?);
        }
        net.shapes(&work)?;
        *model = work;
        Ok((net, FoldReport { folds }))
    }

    /// The network [`Network::fold_batch_norm`] returns, without folding anything: every
    /// BatchNorm directly after a Conv2d or Linear layer removed, and such a layer
    /// without bias reading the bias the fold creates ([`created_bias_name`]). Run it on
    /// a model folded by a pipeline's
    /// [`FoldBatchNorm::for_network`](crate::pipeline::FoldBatchNorm::for_network) step.
    /// The same errors as [`Network::fold_batch_norm`] for shared weights.
    pub fn batch_norm_folded(&self) -> Result<Network> {
        Ok(self.fold_plan()?.0)
    }

    /// The rewritten network and the folds to make, in order; shared weights refused.
    pub(crate) fn fold_plan(&self) -> Result<(Network, Vec<FoldSite>)> {
        let mut sites = Vec::new();
        let layers = rewrite(self.layers(), &mut sites);
        let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
        for name in self.layers().iter().flat_map(Layer::param_names) {
            *uses.entry(name).or_default() += 1;
        }
        for site in &sites {
            for name in std::iter::once(&site.weight).chain(&site.bias) {
                if uses.get(name.as_str()).copied().unwrap_or(0) > 1 {
                    return Err(Error::invalid(
                        "weight",
                        format!("`{name}` (read by several layers)"),
                        "a parameter read by one layer only: folding a BatchNorm into it \
                         would change the other layers",
                    ));
                }
            }
        }
        let mut net = Network::new(layers);
        if let Some(shape) = self.input_shape() {
            net = net.with_input_shape(shape);
        }
        Ok((net, sites))
    }
}

/// `layers` without the BatchNorm layers that directly follow a Conv2d or Linear layer,
/// those layers given a bias where they had none; the folds pushed to `sites` in order.
fn rewrite(layers: &[Layer], sites: &mut Vec<FoldSite>) -> Vec<Layer> {
    let mut out: Vec<Layer> = Vec::with_capacity(layers.len());
    for layer in layers {
        if let Some(bn) = BatchNormNames::of_layer(layer) {
            let previous = out.last_mut().and_then(|l| match l {
                Layer::Conv2d { weight, bias, .. } | Layer::Linear { weight, bias, .. } => {
                    Some((weight, bias))
                }
                _ => None,
            });
            if let Some((weight, bias)) = previous {
                sites.push(FoldSite {
                    weight: weight.clone(),
                    bias: bias.clone(),
                    batch_norm: bn,
                });
                if bias.is_none() {
                    *bias = Some(created_bias_name(weight));
                }
                continue;
            }
        }
        // Blocks are cloned and their sequences rewritten, so that fields they may
        // grow are kept.
        let mut layer = layer.clone();
        match &mut layer {
            Layer::Residual { body, shortcut, .. } => {
                *body = rewrite(body, sites);
                *shortcut = rewrite(shortcut, sites);
            }
            Layer::Concat { branches, .. } => {
                for branch in branches.iter_mut() {
                    *branch = rewrite(branch, sites);
                }
            }
            _ => {}
        }
        out.push(layer);
    }
    out
}
