//! The teacher: a trained network (or an ensemble of them) run in evaluation mode.

use ndarray::{Array2, ArrayD, ArrayView2};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::nn::Network;

/// Every member's logits `[n, classes]`, and the first member's outputs at the layers
/// asked for.
pub type TeacherOutputs = (Vec<Array2<f32>>, Vec<ArrayD<f32>>);

/// A trained teacher network with its parameters, or an ensemble of them (Hinton et
/// al.'s soft targets from an ensemble are the mean of the members' softmax outputs).
/// Teachers always run in evaluation mode (no dropout), and their parameters are
/// never changed.
///
/// ```
/// use slimnn::Model;
/// use slimnn::distill::Teacher;
/// use slimnn::nn::Network;
///
/// let mut model = Model::new();
/// let net = Network::mlp(&mut model, &[4, 8, 3], 1)?;
/// let teacher = Teacher::new(net.clone(), model)?;
/// assert_eq!(teacher.members(), 1);
/// // A model that does not fit its network is refused.
/// let mut other = Model::new();
/// other.add("fc1.weight", ndarray::ArrayD::zeros(ndarray::IxDyn(&[8, 4])))?;
/// assert!(Teacher::new(net, other).is_err());
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Teacher {
    members: Vec<(Network, Model)>,
}

impl Teacher {
    /// One teacher; checks that `model` fits `network` ([`Network::check`]).
    pub fn new(network: Network, model: Model) -> Result<Teacher> {
        Teacher::ensemble(vec![(network, model)])
    }

    /// An ensemble: each member is checked against its network, and all must take
    /// the same inputs and give the same number of classes.
    pub fn ensemble(members: Vec<(Network, Model)>) -> Result<Teacher> {
        let Some((net, model)) = members.first() else {
            return Err(Error::Empty {
                what: "teacher ensemble".into(),
            });
        };
        let io = |net: &Network, model: &Model| -> Result<(usize, Vec<usize>)> {
            net.check(model)?;
            let out = net.shapes(model)?.last().cloned().unwrap_or_default();
            Ok((net.inputs(model)?, out))
        };
        let first = io(net, model)?;
        for (i, (net, model)) in members.iter().enumerate().skip(1) {
            let this = io(net, model)?;
            if this != first {
                return Err(Error::ShapeMismatch {
                    what: format!("inputs and classes of teacher {i}"),
                    expected: vec![first.0, first.1.iter().product()],
                    got: vec![this.0, this.1.iter().product()],
                });
            }
        }
        Ok(Teacher { members })
    }

    /// The number of networks (1 unless an ensemble).
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// The first (or only) member: the network and its parameters.
    pub fn network(&self) -> (&Network, &Model) {
        let (n, m) = &self.members[0];
        (n, m)
    }

    /// Input features.
    pub fn inputs(&self) -> Result<usize> {
        let (n, m) = self.network();
        n.inputs(m)
    }

    /// Classes (the logits' width).
    pub fn classes(&self) -> Result<usize> {
        let (n, m) = self.network();
        Ok(n.shapes(m)?.last().map_or(0, |s| s.iter().product()))
    }

    /// The shape of one example after layer `layer` of the first member.
    pub(crate) fn output_shape(&self, layer: usize) -> Result<Vec<usize>> {
        let (n, m) = self.network();
        let shapes = n.shapes(m)?;
        shapes.get(layer + 1).cloned().ok_or_else(|| {
            Error::invalid(
                "teacher layer",
                layer,
                format!(
                    "the index of one of the teacher's {} layers",
                    n.layers().len()
                ),
            )
        })
    }

    /// Every member's logits on `x`, and the first member's outputs at `layers`
    /// (evaluation mode): what the distillation loss needs of a batch, computed once.
    pub fn outputs(&self, x: ArrayView2<'_, f32>, layers: &[usize]) -> Result<TeacherOutputs> {
        let (net, model) = self.network();
        let (first, taps) = net.forward_with_outputs(model, x, layers)?;
        let mut logits = vec![first];
        for (net, model) in &self.members[1..] {
            logits.push(net.forward(model, x)?);
        }
        Ok((logits, taps))
    }
}
