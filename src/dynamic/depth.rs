//! Stochastic depth (Huang et al. 2016): residual blocks dropped at random in training,
//! with survival probabilities decaying linearly with depth.

use crate::error::{Error, Result};
use crate::nn::{Layer, Network};

/// Stochastic depth's linear decay rule: the `l`-th of `L` residual blocks (counted
/// from 1, in network order) survives a training batch with probability
/// `p_l = 1 − l/L·(1 − p_L)`, where `p_L` is `last_survival` (Huang et al. use 0.5).
///
/// The probabilities live in the blocks themselves ([`Layer::Residual`]'s `survival`,
/// set by [`apply`](StochasticDepth::apply)), so every training path (`train_epoch`,
/// distillation, a loop of one's own) drops blocks, once per batch and reproducibly
/// from the batch's seed, and evaluation scales each block's body by its `p_l`.
///
/// ```
/// use slimnn::dynamic::StochasticDepth;
/// use slimnn::nn::{Layer, Network};
///
/// let sd = StochasticDepth::linear(0.5)?;
/// assert_eq!(sd.survivals(4), vec![0.875, 0.75, 0.625, 0.5]);
/// let block = || Layer::residual(vec![Layer::Relu], vec![]);
/// let net = Network::new(vec![block(), Layer::Relu, block()]);
/// let sd_net = sd.apply(&net)?;
/// assert_eq!(sd_net.layers()[0].survival(), Some(0.75));
/// assert_eq!(sd_net.layers()[2].survival(), Some(0.5));
/// assert!(StochasticDepth::linear(0.0).is_err());
/// assert!(sd.apply(&Network::new(vec![Layer::Relu])).is_err()); // no residual block
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StochasticDepth {
    /// `p_L`, the last block's survival probability, in `(0, 1]` (1: no block dropped).
    pub last_survival: f32,
}

impl StochasticDepth {
    /// The linear decay rule down to `last_survival` (checked).
    pub fn linear(last_survival: f32) -> Result<StochasticDepth> {
        let sd = StochasticDepth { last_survival };
        sd.check()?;
        Ok(sd)
    }

    /// Checks `0 < last_survival ≤ 1`.
    pub fn check(&self) -> Result<()> {
        let p = self.last_survival;
        if p > 0.0 && p <= 1.0 {
            Ok(())
        } else {
            Err(Error::invalid(
                "last_survival",
                p,
                "a survival probability in (0, 1]",
            ))
        }
    }

    /// `p_1, …, p_L` for `blocks` blocks.
    pub fn survivals(&self, blocks: usize) -> Vec<f32> {
        let (p_last, l_total) = (self.last_survival as f64, blocks as f64);
        (1..=blocks)
            .map(|l| (1.0 - l as f64 / l_total * (1.0 - p_last)) as f32)
            .collect()
    }

    /// `network` with the rule's survival probability on each of its top-level residual
    /// blocks (in order; blocks nested in other blocks keep theirs). A network without
    /// residual blocks is an error.
    pub fn apply(&self, network: &Network) -> Result<Network> {
        self.check()?;
        let blocks = residual_blocks(network);
        if blocks.is_empty() {
            return Err(Error::Empty {
                what: "residual blocks of the network (stochastic depth drops them)".into(),
            });
        }
        let mut layers = network.layers().to_vec();
        for (&i, p) in blocks.iter().zip(self.survivals(blocks.len())) {
            layers[i] = layers[i].clone().with_survival(p)?;
        }
        Ok(rebuild(network, layers))
    }
}

/// The indices of the top-level residual blocks of `network`.
pub(super) fn residual_blocks(network: &Network) -> Vec<usize> {
    network
        .layers()
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l, Layer::Residual { .. }))
        .map(|(i, _)| i)
        .collect()
}

/// A network of `layers` with `like`'s input shape.
pub(super) fn rebuild(like: &Network, layers: Vec<Layer>) -> Network {
    let net = Network::new(layers);
    match like.input_shape() {
        Some(shape) => net.with_input_shape(shape),
        None => net,
    }
}
