//! Conditional computation: spend less computation on easy inputs, or remove whole
//! blocks (the survey's closing family).
//!
//! - [`ExitPolicy`]: when a sample may leave at an early exit (softmax entropy below a
//!   threshold, or top probability above one), on a slice of logits, for engines;
//!   [`route`] sends samples through a chain of exits, and [`ThresholdCalibration`]
//!   picks the thresholds on held-out logits to meet an accuracy target relative to
//!   the final exit (BranchyNet, Teerapittayanon et al. 2016).
//! - [`EarlyExitNetwork`]: a trunk [`Network`](crate::nn::Network) with side exits,
//!   trained jointly on the weighted exits' losses; at inference exited samples stop
//!   computing.
//! - [`StochasticDepth`]: residual blocks dropped at random in training, with survival
//!   probabilities decaying linearly with depth (Huang et al. 2016).
//! - [`BlockDropping`]: residual blocks removed after training, greedily by the
//!   smallest increase of a calibration loss; [`drop_curve`] gives the accuracy against
//!   the number of blocks removed; [`remove_blocks_from_model`] also takes the removed
//!   blocks' parameters out of the model.
//!
//! The guide is [`guide::dynamic`](crate::guide::dynamic).

mod calibrate;
mod depth;
mod drop;
mod exits;
mod joint;
mod policy;

pub use calibrate::{Calibrated, ThresholdCalibration, route};
pub use depth::StochasticDepth;
pub use drop::{BlockDropping, DropReport, drop_curve, remove_blocks, remove_blocks_from_model};
pub use exits::{EarlyExitNetwork, ExitCosts, ExitEvaluation, ExitOutput, ExitPoint};
pub use joint::JointLoss;
pub use policy::{ExitPolicy, PolicyKind};

#[cfg(test)]
mod tests_depth;
#[cfg(test)]
mod tests_exits;
