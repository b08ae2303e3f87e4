//! Block dropping after training: whole residual blocks removed from a trained
//! network, greedily by the smallest increase of a calibration loss, and the accuracy
//! against the number of blocks removed (Veit et al. 2016 show residual networks
//! tolerate it; stochastic depth trains them to).

use std::collections::HashSet;

use super::depth::{rebuild, residual_blocks};
use crate::error::{Error, Result};
use crate::io::idx::Dataset;
use crate::model::Model;
use crate::nn::{Evaluation, Layer, Network};

/// `network` without the residual blocks `blocks` (numbered from 0 among its top-level
/// residual blocks, in order): a block with an identity shortcut disappears from the
/// list of layers, a block with a shortcut is replaced by the shortcut's layers. An
/// index past the last block, an index given twice, or removing every block is an
/// error ([`Error::InvalidParameter`]); a network without residual blocks is
/// [`Error::Empty`].
///
/// ```
/// use slimnn::dynamic::remove_blocks;
/// use slimnn::nn::{Layer, Network};
///
/// let block = |s: Vec<Layer>| Layer::residual(vec![Layer::Relu], s);
/// let net = Network::new(vec![block(vec![]), Layer::Flatten, block(vec![Layer::Relu])]);
/// let cut = remove_blocks(&net, &[1])?;
/// assert_eq!(cut.layers(), &[block(vec![]), Layer::Flatten, Layer::Relu]);
/// assert_eq!(remove_blocks(&net, &[0])?.layers().len(), 2);
/// assert!(remove_blocks(&net, &[0, 1]).is_err()); // every block
/// assert!(remove_blocks(&net, &[2]).is_err());
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn remove_blocks(network: &Network, blocks: &[usize]) -> Result<Network> {
    let positions = residual_blocks(network);
    if positions.is_empty() {
        return Err(Error::Empty {
            what: "residual blocks of the network".into(),
        });
    }
    let mut remove = vec![false; positions.len()];
    for &b in blocks {
        match remove.get_mut(b) {
            None => {
                return Err(Error::invalid(
                    "block",
                    b,
                    format!("one of the network's {} residual blocks", positions.len()),
                ));
            }
            Some(true) => return Err(Error::invalid("block", b, "a block named once")),
            Some(r) => *r = true,
        }
    }
    if remove.iter().all(|&r| r) {
        return Err(Error::invalid(
            "blocks",
            format!("{blocks:?}"),
            format!(
                "fewer than all {} residual blocks (at least one must stay)",
                positions.len()
            ),
        ));
    }
    let mut layers = Vec::with_capacity(network.layers().len());
    let mut b = 0;
    for (i, layer) in network.layers().iter().enumerate() {
        if positions.get(b) == Some(&i) {
            b += 1;
            if remove[b - 1] {
                if let Layer::Residual { shortcut, .. } = layer {
                    layers.extend(shortcut.iter().cloned());
                }
                continue;
            }
        }
        layers.push(layer.clone());
    }
    Ok(rebuild(network, layers))
}

/// [`remove_blocks`], and the parameters only the removed blocks read taken out of
/// `model` too (with a BatchNorm's `num_batches_tracked` counter), so that a saved model
/// is smaller. Parameters the remaining network still reads (a shortcut's, or one shared
/// with a kept block) stay, and so do those no layer of `network` reads. On an error
/// `model` is left as it was.
///
/// ```
/// use slimnn::Model;
/// use slimnn::dynamic::remove_blocks_from_model;
/// use slimnn::nn::{Layer, Network};
///
/// let mut model = Model::new();
/// for name in ["a.weight", "b.weight"] {
///     model.add(name, ndarray::ArrayD::zeros(ndarray::IxDyn(&[2, 2])))?;
/// }
/// let lin = |w: &str| Layer::Linear { weight: w.into(), bias: None };
/// let net = Network::new(vec![
///     Layer::residual(vec![lin("a.weight")], vec![]),
///     Layer::residual(vec![lin("b.weight")], vec![]),
/// ]);
/// let cut = remove_blocks_from_model(&net, &mut model, &[0])?;
/// assert_eq!(cut.layers().len(), 1);
/// assert!(!model.contains("a.weight") && model.contains("b.weight"));
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn remove_blocks_from_model(
    network: &Network,
    model: &mut Model,
    blocks: &[usize],
) -> Result<Network> {
    let cut = remove_blocks(network, blocks)?;
    let kept: HashSet<&str> = cut.layers().iter().flat_map(Layer::param_names).collect();
    let mut counters = Vec::new();
    let mut orphans: Vec<&str> = Vec::new();
    for layer in network.layers() {
        for name in layer.param_names() {
            if !kept.contains(name) && !orphans.contains(&name) && model.contains(name) {
                orphans.push(name);
            }
        }
        collect_batch_norm_counters(layer, &kept, &mut counters);
    }
    for name in orphans {
        model.remove(name)?;
    }
    for counter in counters {
        model.remove_raw(&counter);
    }
    Ok(cut)
}

/// The `num_batches_tracked` counters (PyTorch's) of the BatchNorm layers in `layer`
/// whose weight the remaining network no longer reads.
fn collect_batch_norm_counters(layer: &Layer, kept: &HashSet<&str>, out: &mut Vec<String>) {
    match layer {
        Layer::BatchNorm { weight, .. } if !kept.contains(weight.as_str()) => {
            if let Some(prefix) = weight.strip_suffix(".weight") {
                out.push(format!("{prefix}.num_batches_tracked"));
            }
        }
        Layer::Residual { body, shortcut, .. } => body
            .iter()
            .chain(shortcut)
            .for_each(|l| collect_batch_norm_counters(l, kept, out)),
        Layer::Concat { branches } => branches
            .iter()
            .flatten()
            .for_each(|l| collect_batch_norm_counters(l, kept, out)),
        _ => {}
    }
}

/// Greedy block dropping: `remove` residual blocks, one at a time, each time the block
/// whose removal raises the loss on a calibration set the least.
///
/// ```
/// use slimnn::Model;
/// use slimnn::dynamic::BlockDropping;
/// use slimnn::io::idx::Dataset;
/// use slimnn::nn::{Layer, Network};
///
/// let mut model = Model::new();
/// model.add("a.weight", ndarray::arr2(&[[1.0f32, 0.0], [0.0, 1.0]]).into_dyn())?;
/// model.add("b.weight", ndarray::ArrayD::zeros(ndarray::IxDyn(&[2, 2])))?;
/// model.add("head.weight", ndarray::arr2(&[[1.0f32, 0.0], [0.0, 1.0]]).into_dyn())?;
/// let lin = |w: &str| Layer::Linear { weight: w.into(), bias: None };
/// let net = Network::new(vec![
///     Layer::residual(vec![lin("a.weight")], vec![]),
///     Layer::residual(vec![lin("b.weight")], vec![]), // a zero body: free to remove
///     lin("head.weight"),
/// ]);
/// let data = Dataset {
///     images: ndarray::arr2(&[[1.0f32, 0.0], [0.0, 1.0]]),
///     labels: ndarray::arr1(&[0u8, 1]),
///     image_shape: vec![2],
/// };
/// let report = BlockDropping::new(1, 64)?.run(&net, &model, &data)?;
/// assert_eq!(report.order, vec![1]);
/// assert_eq!(report.steps[1].loss, report.steps[0].loss);
/// assert!(BlockDropping::new(2, 64)?.run(&net, &model, &data).is_err()); // every block
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockDropping {
    /// How many blocks to remove (fewer than the network has).
    pub remove: usize,
    /// The evaluation batch size (`≥ 1`).
    pub batch: usize,
}

/// What [`BlockDropping::run`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct DropReport {
    /// The blocks removed, in the order they were chosen (numbered among the network's
    /// residual blocks).
    pub order: Vec<usize>,
    /// The calibration loss and accuracy with the first `k` blocks of `order` removed,
    /// for `k = 0..=order.len()`.
    pub steps: Vec<Evaluation>,
}

impl BlockDropping {
    /// A greedy dropping of `remove` blocks, evaluated in batches of `batch` (checked).
    pub fn new(remove: usize, batch: usize) -> Result<BlockDropping> {
        let d = BlockDropping { remove, batch };
        d.check()?;
        Ok(d)
    }

    /// Checks `batch ≥ 1` (the block count is checked against the network).
    pub fn check(&self) -> Result<()> {
        super::exits::check_batch(self.batch)
    }

    /// Removes blocks from `network` greedily by the calibration loss on `data`
    /// (evaluation mode: stochastic-depth blocks keep their scale). `remove` must be
    /// below the number of residual blocks.
    pub fn run(&self, network: &Network, model: &Model, data: &Dataset) -> Result<DropReport> {
        self.check()?;
        let blocks = residual_blocks(network).len();
        if blocks == 0 {
            return Err(Error::Empty {
                what: "residual blocks of the network".into(),
            });
        }
        if self.remove >= blocks {
            return Err(Error::invalid(
                "remove",
                self.remove,
                format!(
                    "fewer than the network's {blocks} residual blocks (at least one must stay)"
                ),
            ));
        }
        let mut order = Vec::with_capacity(self.remove);
        let mut steps = vec![network.evaluate(model, data, self.batch)?];
        for _ in 0..self.remove {
            let mut best: Option<(usize, Evaluation)> = None;
            for b in (0..blocks).filter(|b| !order.contains(b)) {
                let mut trial = order.clone();
                trial.push(b);
                let e = remove_blocks(network, &trial)?.evaluate(model, data, self.batch)?;
                if best.as_ref().is_none_or(|(_, be)| e.loss < be.loss) {
                    best = Some((b, e));
                }
            }
            let (b, e) = best.expect("a block is left to try");
            order.push(b);
            steps.push(e);
        }
        Ok(DropReport { order, steps })
    }
}

/// Accuracy and loss on `data` with the first `k` blocks of `order` removed, for
/// `k = 0..=order.len()` (e.g. a [`DropReport::order`] found on a calibration set,
/// measured on a test set), in batches of `batch ≥ 1`.
pub fn drop_curve(
    network: &Network,
    model: &Model,
    order: &[usize],
    data: &Dataset,
    batch: usize,
) -> Result<Vec<Evaluation>> {
    super::exits::check_batch(batch)?;
    (0..=order.len())
        .map(|k| {
            if k == 0 {
                network.evaluate(model, data, batch)
            } else {
                remove_blocks(network, &order[..k])?.evaluate(model, data, batch)
            }
        })
        .collect()
}
