//! Physical removal: shrink pruned layers so the model really gets smaller.

use ndarray::{ArrayD, Axis};

use super::structured::zero_channels;
use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::model::{LayerKind, Model, Param};

/// What [`Model::remove_pruned_channels`] removed between two layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedChannels {
    /// The layer whose output channels were removed.
    pub layer: String,
    /// The following layer whose input channels were removed with them.
    pub next: String,
    /// The removed channel indices (in the layer's numbering before removal).
    pub removed: Vec<usize>,
    /// Channels between the two layers before removal.
    pub channels_before: usize,
}

/// The result of [`Model::remove_pruned_channels`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemovalReport {
    /// One entry per consecutive pair of the chain.
    pub layers: Vec<RemovedChannels>,
    /// Parameter elements before removal (weights and biases of the chain).
    pub params_before: usize,
    /// Parameter elements after removal.
    pub params_after: usize,
}

impl Model {
    /// Removes, for a chain of sequential Linear/Conv2d layers, the channels between
    /// consecutive layers that carry nothing: a layer's output channel whose weights and
    /// bias are all zero (or masked), or whose matching input weights in the next layer
    /// are all zero. The layer's weight rows and bias entries and the next layer's input
    /// channels go, with their masks; the model then computes the same function with
    /// fewer parameters.
    ///
    /// `chain` names the weights in order (e.g. `["conv1.weight", "conv2.weight",
    /// "fc.weight"]`); biases are found by name (`x.weight` → `x.bias`). A Conv2d
    /// followed by a Linear is taken to be flattened channel-major (PyTorch's `Flatten`):
    /// each channel owns `in / channels` consecutive inputs.
    ///
    /// Equivalence assumes what lies between two layers maps 0 to 0 (ReLU, max-pool,
    /// dropout, GELU, tanh); fold batch-norm into the convolution first.
    ///
    /// ```
    /// use ndarray::{ArrayD, IxDyn};
    /// use slimnn::prune::{ChannelCriterion, Statistics, StructuredPruner};
    /// use slimnn::{Model, Selector};
    ///
    /// let mut model = Model::new();
    /// model.add("fc1.weight", ArrayD::from_shape_fn(IxDyn(&[4, 3]), |i| (i[0] + 1) as f32))?;
    /// model.add("fc2.weight", ArrayD::ones(IxDyn(&[2, 4])))?;
    /// let pruner = StructuredPruner::new(ChannelCriterion::L1, 2usize)?;
    /// model.prune(&Selector::glob("fc1.weight"), &pruner, &Statistics::new())?;
    /// let report = model.remove_pruned_channels(&["fc1.weight", "fc2.weight"])?;
    /// assert_eq!(report.layers[0].removed, vec![0, 1]);
    /// assert_eq!(model.get("fc1.weight")?.shape(), &[2, 3]);
    /// assert_eq!(model.get("fc2.weight")?.shape(), &[2, 2]);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn remove_pruned_channels(&mut self, chain: &[&str]) -> Result<RemovalReport> {
        if chain.len() < 2 {
            return Err(Error::invalid("chain", chain.len(), "at least two layers"));
        }
        let counted = |m: &Model| -> Result<usize> {
            let mut total = 0;
            for name in chain {
                total += m.get(name)?.numel();
                if let Some(b) = m.bias_of(name) {
                    total += m.get(b)?.numel();
                }
            }
            Ok(total)
        };
        for name in chain {
            check_layer(self.get(name)?)?;
        }
        let params_before = counted(self)?;
        let mut layers = Vec::new();
        for pair in chain.windows(2) {
            layers.push(self.remove_between(pair[0], pair[1])?);
        }
        Ok(RemovalReport {
            layers,
            params_before,
            params_after: counted(self)?,
        })
    }

    fn remove_between(&mut self, layer: &str, next: &str) -> Result<RemovedChannels> {
        let (lp, np) = (self.get(layer)?, self.get(next)?);
        let channels = lp.shape()[0];
        let inputs = np.shape()[1];
        let block = if inputs == channels {
            1
        } else if lp.kind() == LayerKind::Conv2d
            && np.kind() == LayerKind::Linear
            && channels > 0
            && inputs % channels == 0
        {
            inputs / channels
        } else {
            return Err(Error::ShapeMismatch {
                what: format!("input channels of `{next}` after `{layer}`"),
                expected: vec![channels],
                got: vec![inputs],
            });
        };
        let bias_name = self.bias_of(layer).map(str::to_string);
        let bias = match &bias_name {
            Some(b) => {
                let bp = self.get(b)?;
                crate::tensor::check_same_shape(&[channels], bp.shape(), || {
                    format!("bias `{b}` of `{layer}`")
                })?;
                Some(bp.effective())
            }
            None => None,
        };
        let dead_out = zero_channels(&lp.effective(), 0);
        let unused_in = zero_channels(&np.effective(), 1);
        let removed: Vec<usize> = (0..channels)
            .filter(|&c| {
                let out_dead = dead_out[c] && bias.as_ref().is_none_or(|b| b[[c]] == 0.0);
                let in_unused = unused_in[c * block..(c + 1) * block].iter().all(|&u| u);
                out_dead || in_unused
            })
            .collect();
        let mut keep = vec![true; channels];
        removed.iter().for_each(|&c| keep[c] = false);
        let kept: Vec<usize> = (0..channels).filter(|&c| keep[c]).collect();
        let kept_inputs: Vec<usize> = kept
            .iter()
            .flat_map(|&c| c * block..(c + 1) * block)
            .collect();
        if !removed.is_empty() {
            shrink(self.get_mut(layer)?, 0, &kept);
            if let Some(b) = &bias_name {
                shrink(self.get_mut(b)?, 0, &kept);
            }
            shrink(self.get_mut(next)?, 1, &kept_inputs);
        }
        Ok(RemovedChannels {
            layer: layer.to_string(),
            next: next.to_string(),
            removed,
            channels_before: channels,
        })
    }
}

fn check_layer(p: &Param) -> Result<()> {
    match p.kind() {
        LayerKind::Linear | LayerKind::Conv2d => Ok(()),
        k => Err(Error::WrongKind {
            name: p.name().to_string(),
            kind: k.to_string(),
            operation: "channel removal",
            expected: "Linear or Conv2d",
        }),
    }
}

/// Keeps only `indices` along `axis` of the parameter's values and mask.
fn shrink(p: &mut Param, axis: usize, indices: &[usize]) {
    let value: ArrayD<f32> = p.value().select(Axis(axis), indices);
    let mask = p
        .mask()
        .map(|m| Mask::from_bools(&m.to_bools().select(Axis(axis), indices)));
    p.replace_with_mask(value, mask);
}
