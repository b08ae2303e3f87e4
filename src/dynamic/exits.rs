//! Early-exit networks (BranchyNet, Teerapittayanon et al. 2016): a trunk with side
//! classifiers after some of its layers. At inference a sample leaves at the first exit
//! whose policy admits it, and **stops computing**: the batch shrinks as it goes down
//! the trunk (rows gathered), and each sample's logits are scattered back to its row.

use ndarray::{Array2, ArrayView2, Axis, Ix2, s};

use super::calibrate::{Calibrated, ThresholdCalibration, argmax};
use super::policy::ExitPolicy;
use crate::error::{Error, Result};
use crate::io::idx::Dataset;
use crate::model::Model;
use crate::nn::{Layer, Network, forward_part, input_batch};

/// Where a side exit attaches: after a top-level layer of the trunk, named by its index
/// in [`Network::layers`] or by a parameter it reads (`"conv1.weight"`: the layer
/// holding it, a block included). Built from a `usize` or a `&str`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitPoint {
    /// After the trunk layer at this index.
    Index(usize),
    /// After the top-level trunk layer that reads this parameter.
    After(String),
}

impl From<usize> for ExitPoint {
    fn from(i: usize) -> ExitPoint {
        ExitPoint::Index(i)
    }
}

impl From<&str> for ExitPoint {
    fn from(name: &str) -> ExitPoint {
        ExitPoint::After(name.to_owned())
    }
}

/// A side exit: a branch of layers on the output of trunk layer `after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SideExit {
    pub(super) after: usize,
    pub(super) layers: Vec<Layer>,
}

/// A trunk [`Network`] with side exits (BranchyNet).
///
/// - **Building**: [`EarlyExitNetwork::new`] with the trunk, then
///   [`with_exit`](EarlyExitNetwork::with_exit) per side branch; a position that does
///   not exist (an index past the trunk, the trunk's last layer, a parameter no layer
///   reads, a position taken twice) is a typed error.
/// - **Training**: every sample goes through every exit, and the loss is the weighted
///   sum of the exits' softmax cross-entropies
///   ([`with_weights`](EarlyExitNetwork::with_weights); 1 each by default): see
///   [`loss_and_gradients`](EarlyExitNetwork::loss_and_gradients) and
///   [`train_epoch`](EarlyExitNetwork::train_epoch).
/// - **Inference**: [`forward`](EarlyExitNetwork::forward) with one [`ExitPolicy`] per
///   side exit; exited samples stop computing. A policy that lets nothing out
///   ([`ExitPolicy::never`]) skips its branch entirely, so the output is then the trunk's,
///   bit for bit. [`costs`](EarlyExitNetwork::costs) gives the multiply-adds of each
///   path, [`calibrate`](EarlyExitNetwork::calibrate) the thresholds on held-out data.
///
/// ```
/// use slimnn::Model;
/// use slimnn::dynamic::{EarlyExitNetwork, ExitPolicy};
/// use slimnn::nn::{Layer, Network};
///
/// let mut model = Model::new();
/// let trunk = Network::mlp(&mut model, &[6, 8, 8, 3], 1)?; // fc1 relu fc2 relu fc3
/// // A side exit after fc1: a Linear layer from its 8 features to the 3 classes.
/// model.add("exit0.weight", ndarray::ArrayD::from_elem(ndarray::IxDyn(&[3, 8]), 0.1))?;
/// let net = EarlyExitNetwork::new(trunk)
///     .with_exit("fc1.weight", vec![Layer::Linear { weight: "exit0.weight".into(), bias: None }])?;
/// assert!(EarlyExitNetwork::new(net.trunk().clone()).with_exit(9, vec![]).is_err());
///
/// let x = ndarray::Array2::from_elem((4, 6), 0.5f32);
/// let out = net.forward(&model, x.view(), &[ExitPolicy::MaxProb(0.0)])?;
/// assert_eq!(out.counts, vec![4, 0]); // everything leaves at the side exit
/// let plain = net.forward(&model, x.view(), &[ExitPolicy::MaxProb(1.0)])?;
/// assert_eq!(plain.logits, net.trunk().forward(&model, x.view())?);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyExitNetwork {
    pub(super) trunk: Network,
    /// Sorted by position.
    pub(super) exits: Vec<SideExit>,
    /// One per exit, the final one last.
    pub(super) weights: Vec<f32>,
}

/// What [`EarlyExitNetwork::forward`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct ExitOutput {
    /// Logits `[n, classes]`, each row from the exit its sample left at.
    pub logits: Array2<f32>,
    /// The exit each sample left at (the final exit is `exits()`).
    pub exit: Vec<usize>,
    /// How many samples left at each exit, the final one last.
    pub counts: Vec<usize>,
}

/// Multiply-adds of one sample along each path of an [`EarlyExitNetwork`]: from
/// [`EarlyExitNetwork::costs`], or built by hand with [`ExitCosts::new`] (one trunk
/// cost and one branch cost per side exit, checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitCosts {
    trunk_to_exit: Vec<usize>,
    branch: Vec<usize>,
    trunk: usize,
}

impl ExitCosts {
    /// The costs of a network with `trunk_to_exit.len()` side exits: the multiply-adds
    /// of the trunk up to and including each side exit's position, of each side branch,
    /// and of the whole trunk. Lengths that differ are [`Error::ShapeMismatch`].
    pub fn new(trunk_to_exit: Vec<usize>, branch: Vec<usize>, trunk: usize) -> Result<ExitCosts> {
        if branch.len() != trunk_to_exit.len() {
            return Err(Error::ShapeMismatch {
                what: "side branch costs (one per side exit)".into(),
                expected: vec![trunk_to_exit.len()],
                got: vec![branch.len()],
            });
        }
        Ok(ExitCosts {
            trunk_to_exit,
            branch,
            trunk,
        })
    }

    /// Multiply-adds of the trunk up to and including each side exit's position.
    pub fn trunk_to_exit(&self) -> &[usize] {
        &self.trunk_to_exit
    }

    /// Multiply-adds of each side branch.
    pub fn branch(&self) -> &[usize] {
        &self.branch
    }

    /// Multiply-adds of the whole trunk (the plain network).
    pub fn trunk(&self) -> usize {
        self.trunk
    }

    /// The multiply-adds of a sample leaving at `exit` (the final exit is the number of
    /// side exits; any larger value counts as the final exit too), with the side
    /// branches whose `ran` is false not computed (a policy that lets nothing out skips
    /// its branch; a missing entry counts as true).
    pub fn path(&self, exit: usize, ran: &[bool]) -> usize {
        let k = self.branch.len();
        let trunk = if exit < k {
            self.trunk_to_exit[exit]
        } else {
            self.trunk
        };
        let branches: usize = (0..k.min(exit.saturating_add(1)))
            .filter(|&j| ran.get(j).copied().unwrap_or(true))
            .map(|j| self.branch[j])
            .sum();
        trunk + branches
    }

    /// The mean multiply-adds per sample, given how many samples left at each exit
    /// ([`ExitOutput::counts`]) under `policies` (branches with a policy that lets
    /// nothing out are skipped).
    pub fn mean(&self, counts: &[usize], policies: &[ExitPolicy]) -> f64 {
        let ran: Vec<bool> = policies.iter().map(|p| !is_never(p)).collect();
        let total: usize = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let sum: f64 = counts
            .iter()
            .enumerate()
            .map(|(e, &c)| c as f64 * self.path(e, &ran) as f64)
            .sum();
        sum / total as f64
    }
}

/// Accuracy, exit counts and mean multiply-adds of an [`EarlyExitNetwork`] on a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct ExitEvaluation {
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Examples classified correctly.
    pub correct: usize,
    /// How many examples left at each exit, the final one last.
    pub counts: Vec<usize>,
    /// Mean multiply-adds per example.
    pub mean_macs: f64,
}

/// Checks an evaluation batch size: `0` is [`Error::InvalidParameter`] (as in
/// training and [`BlockDropping`](super::BlockDropping)), not silently 1.
pub(super) fn check_batch(batch: usize) -> Result<()> {
    if batch == 0 {
        return Err(Error::invalid("batch", batch, "at least 1"));
    }
    Ok(())
}

/// Whether a policy lets nothing out whatever the logits.
fn is_never(p: &ExitPolicy) -> bool {
    match *p {
        ExitPolicy::Entropy(t) => t <= 0.0,
        ExitPolicy::MaxProb(t) => t >= 1.0,
    }
}

impl EarlyExitNetwork {
    /// The trunk alone, with no side exits yet.
    pub fn new(trunk: Network) -> EarlyExitNetwork {
        EarlyExitNetwork {
            trunk,
            exits: Vec::new(),
            weights: vec![1.0],
        }
    }

    /// Adds a side exit: `layers` on the output of the trunk layer at `point`, ending
    /// in logits of the trunk's classes ([`check`](EarlyExitNetwork::check) verifies the
    /// shapes against a model). The new exit's loss weight is 1. The position must be a
    /// trunk layer other than the last, not already taken.
    pub fn with_exit(
        mut self,
        point: impl Into<ExitPoint>,
        layers: Vec<Layer>,
    ) -> Result<EarlyExitNetwork> {
        let after = self.resolve(&point.into())?;
        if self.exits.iter().any(|e| e.after == after) {
            return Err(Error::invalid(
                "exit position",
                after,
                "a trunk position without a side exit yet",
            ));
        }
        let at = self.exits.partition_point(|e| e.after < after);
        self.exits.insert(at, SideExit { after, layers });
        self.weights.insert(at, 1.0);
        Ok(self)
    }

    /// The same network with the exits' loss weights (side exits in trunk order, the
    /// final exit last): finite, `≥ 0`, not all zero.
    pub fn with_weights(mut self, weights: &[f32]) -> Result<EarlyExitNetwork> {
        if weights.len() != self.exits.len() + 1 {
            return Err(Error::ShapeMismatch {
                what: "exit loss weights (side exits, then the final exit)".into(),
                expected: vec![self.exits.len() + 1],
                got: vec![weights.len()],
            });
        }
        if let Some(&bad) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(Error::invalid("exit weight", bad, "a finite weight ≥ 0"));
        }
        if weights.iter().all(|&w| w == 0.0) {
            return Err(Error::invalid(
                "exit weights",
                format!("{weights:?}"),
                "at least one weight above 0",
            ));
        }
        self.weights = weights.to_vec();
        Ok(self)
    }

    /// The trunk: the plain network, whose output is the final exit.
    pub fn trunk(&self) -> &Network {
        &self.trunk
    }

    /// The number of side exits.
    pub fn exits(&self) -> usize {
        self.exits.len()
    }

    /// The trunk index each side exit follows, in order.
    pub fn positions(&self) -> Vec<usize> {
        self.exits.iter().map(|e| e.after).collect()
    }

    /// The layers of side exit `k`.
    pub fn branch(&self, k: usize) -> Option<&[Layer]> {
        self.exits.get(k).map(|e| e.layers.as_slice())
    }

    /// The loss weights (side exits, then the final exit).
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// Side exit `k` as a network of its own, taking the trunk activation it attaches
    /// to (the shape inferred from `model`).
    pub fn branch_network(&self, model: &Model, k: usize) -> Result<Network> {
        let e = self.exits.get(k).ok_or_else(|| {
            Error::invalid(
                "exit",
                k,
                format!("one of the {} side exits", self.exits.len()),
            )
        })?;
        let shapes = self.trunk.shapes(model)?;
        Ok(Network::new(e.layers.clone()).with_input_shape(&shapes[e.after + 1]))
    }

    /// Checks the trunk and every branch against `model`: each branch fits the
    /// activation it attaches to and gives logits of the trunk's classes. Returns the
    /// number of classes.
    pub fn check(&self, model: &Model) -> Result<usize> {
        let shapes = self.trunk.shapes(model)?;
        let out = shapes.last().expect("the input shape at least");
        if out.len() != 1 {
            // The trunk's own error (a classifier ends in [n, classes]).
            self.trunk.check(model)?;
        }
        let classes = out[0];
        for (k, e) in self.exits.iter().enumerate() {
            let mut shape = shapes[e.after + 1].clone();
            for layer in &e.layers {
                shape = crate::nn::layer_output(layer, model, &shape)?;
            }
            if shape != [classes] {
                return Err(Error::ShapeMismatch {
                    what: format!("logits of side exit {k} (the trunk's classes)"),
                    expected: vec![classes],
                    got: shape,
                });
            }
        }
        Ok(classes)
    }

    /// The trunk index named by `point`.
    fn resolve(&self, point: &ExitPoint) -> Result<usize> {
        let layers = self.trunk.layers();
        let index = match point {
            ExitPoint::Index(i) => *i,
            ExitPoint::After(name) => layers
                .iter()
                .position(|l| l.param_names().contains(&name.as_str()))
                .ok_or_else(|| {
                    Error::invalid(
                        "exit position",
                        format!("`{name}`"),
                        "a parameter read by a layer of the trunk",
                    )
                })?,
        };
        // `index + 1 >= len` without overflow (`usize::MAX` is an index like any other).
        if index >= layers.len().saturating_sub(1) {
            return Err(Error::invalid(
                "exit position",
                index,
                format!(
                    "a trunk layer before the last (the trunk has {} layers; its end is \
                     the final exit)",
                    layers.len()
                ),
            ));
        }
        Ok(index)
    }

    /// Multiply-adds of one sample along each path (see [`ExitCosts`]).
    pub fn costs(&self, model: &Model) -> Result<ExitCosts> {
        let trunk = self.trunk.costs(model)?;
        let mut trunk_to_exit = Vec::with_capacity(self.exits.len());
        let mut branch = Vec::with_capacity(self.exits.len());
        for (k, e) in self.exits.iter().enumerate() {
            trunk_to_exit.push(trunk.layers[..=e.after].iter().map(|l| l.macs).sum());
            branch.push(self.branch_network(model, k)?.costs(model)?.macs());
        }
        ExitCosts::new(trunk_to_exit, branch, trunk.macs())
    }

    /// Checks one policy per side exit.
    fn check_policies(&self, policies: &[ExitPolicy]) -> Result<()> {
        if policies.len() != self.exits.len() {
            return Err(Error::ShapeMismatch {
                what: "exit policies (one per side exit)".into(),
                expected: vec![self.exits.len()],
                got: vec![policies.len()],
            });
        }
        policies.iter().try_for_each(ExitPolicy::check)
    }

    /// Inference with early exits, in evaluation mode: each sample leaves at the first
    /// side exit whose policy admits it, else at the end of the trunk. Samples that
    /// leave stop computing (the batch going down the trunk shrinks); a branch whose
    /// policy lets nothing out is not computed. Each sample's output is what it gets
    /// when run alone.
    pub fn forward(
        &self,
        model: &Model,
        x: ArrayView2<'_, f32>,
        policies: &[ExitPolicy],
    ) -> Result<ExitOutput> {
        self.check_policies(policies)?;
        let classes = self.check(model)?;
        let n = x.nrows();
        let last = self.exits.len();
        let mut logits = Array2::zeros((n, classes));
        let mut exit = vec![last; n];
        let mut counts = vec![0usize; last + 1];
        let mut h = input_batch(&self.trunk, model, x)?;
        // The original row of each row of `h`.
        let mut rows: Vec<usize> = (0..n).collect();
        let layers = self.trunk.layers();
        let mut start = 0;
        for (k, (e, policy)) in self.exits.iter().zip(policies).enumerate() {
            if rows.is_empty() {
                break;
            }
            h = forward_part(&layers[start..=e.after], model, h, None, start, false)?.0;
            start = e.after + 1;
            if is_never(policy) {
                continue;
            }
            let (out, _) = forward_part(&e.layers, model, h.clone(), None, 0, false)?;
            let out = out
                .into_dimensionality::<Ix2>()
                .expect("checked [n, classes]");
            let out = out.as_standard_layout();
            let leave = policy.exits(out.as_slice().expect("standard layout"), classes)?;
            let stay: Vec<usize> = (0..rows.len()).filter(|&r| !leave[r]).collect();
            if stay.len() == rows.len() {
                continue;
            }
            for (r, _) in leave.iter().enumerate().filter(|(_, l)| **l) {
                logits.row_mut(rows[r]).assign(&out.row(r));
                exit[rows[r]] = k;
                counts[k] += 1;
            }
            if !stay.is_empty() {
                h = h.select(Axis(0), &stay);
            }
            rows = stay.iter().map(|&r| rows[r]).collect();
        }
        if !rows.is_empty() {
            let (out, _) = forward_part(&layers[start..], model, h, None, start, false)?;
            let out = out
                .into_dimensionality::<Ix2>()
                .expect("checked [n, classes]");
            if rows.len() == n {
                logits = out;
            } else {
                for (r, &row) in rows.iter().enumerate() {
                    logits.row_mut(row).assign(&out.row(r));
                }
            }
            counts[last] += rows.len();
        }
        Ok(ExitOutput {
            logits,
            exit,
            counts,
        })
    }

    /// Every exit's logits for every sample (evaluation mode, no sample leaves): the
    /// side exits in order, the final exit last. What calibration and the per-exit
    /// losses are computed from.
    pub fn exit_logits(&self, model: &Model, x: ArrayView2<'_, f32>) -> Result<Vec<Array2<f32>>> {
        self.check(model)?;
        let mut h = input_batch(&self.trunk, model, x)?;
        let layers = self.trunk.layers();
        let mut out = Vec::with_capacity(self.exits.len() + 1);
        let mut start = 0;
        for e in &self.exits {
            h = forward_part(&layers[start..=e.after], model, h, None, start, false)?.0;
            start = e.after + 1;
            let (y, _) = forward_part(&e.layers, model, h.clone(), None, 0, false)?;
            out.push(
                y.into_dimensionality::<Ix2>()
                    .expect("checked [n, classes]"),
            );
        }
        let (y, _) = forward_part(&layers[start..], model, h, None, start, false)?;
        out.push(
            y.into_dimensionality::<Ix2>()
                .expect("checked [n, classes]"),
        );
        Ok(out)
    }

    /// Thresholds for the side exits from held-out `data` (in batches of `batch ≥ 1`):
    /// every exit's logits are collected with [`exit_logits`](EarlyExitNetwork::exit_logits)
    /// and passed to [`ThresholdCalibration::calibrate`].
    pub fn calibrate(
        &self,
        model: &Model,
        data: &Dataset,
        batch: usize,
        calibration: &ThresholdCalibration,
    ) -> Result<Calibrated> {
        calibration.check()?;
        check_batch(batch)?;
        if data.is_empty() {
            return Err(Error::Empty {
                what: "calibration data set".into(),
            });
        }
        let classes = self.check(model)?;
        let mut all: Vec<Vec<f32>> =
            vec![Vec::with_capacity(data.len() * classes); self.exits.len() + 1];
        for start in (0..data.len()).step_by(batch) {
            let end = (start + batch).min(data.len());
            let logits = self.exit_logits(model, data.images.slice(s![start..end, ..]))?;
            for (acc, l) in all.iter_mut().zip(&logits) {
                acc.extend(l.iter());
            }
        }
        let views: Vec<&[f32]> = all.iter().map(Vec::as_slice).collect();
        let labels: Vec<u32> = data.labels.iter().map(|&y| y as u32).collect();
        calibration.calibrate(&views, classes, &labels)
    }

    /// Accuracy, exit counts and mean multiply-adds per example on `data` with
    /// `policies`, in batches of `batch ≥ 1`.
    pub fn evaluate(
        &self,
        model: &Model,
        data: &Dataset,
        batch: usize,
        policies: &[ExitPolicy],
    ) -> Result<ExitEvaluation> {
        check_batch(batch)?;
        if data.is_empty() {
            return Err(Error::Empty {
                what: "evaluation data set".into(),
            });
        }
        let costs = self.costs(model)?;
        let mut counts = vec![0usize; self.exits.len() + 1];
        let mut correct = 0usize;
        for start in (0..data.len()).step_by(batch) {
            let end = (start + batch).min(data.len());
            let out = self.forward(model, data.images.slice(s![start..end, ..]), policies)?;
            for (c, o) in counts.iter_mut().zip(&out.counts) {
                *c += o;
            }
            let labels = data.labels.slice(s![start..end]);
            crate::nn::check_labels(labels, end - start, out.logits.ncols())?;
            correct += out
                .logits
                .rows()
                .into_iter()
                .zip(labels)
                .filter(|(row, y)| argmax(&row.to_vec()) == **y as usize)
                .count();
        }
        Ok(ExitEvaluation {
            accuracy: correct as f64 / data.len() as f64,
            correct,
            mean_macs: costs.mean(&counts, policies),
            counts,
        })
    }
}
