//! [`FoldBatchNorm`]: BatchNorm folding ([`Model::fold_batch_norm`]) as a pipeline step.

use super::Compressor;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::nn::{BatchNormNames, Network};

/// Where a folded layer's bias comes from.
#[derive(Clone, Debug, PartialEq)]
enum Bias {
    /// `LAYER.bias` if the model holds it, created otherwise (pairs by name).
    FromModel,
    /// As the network says (`None`: created).
    Known(Option<String>),
}

/// One fold to make.
#[derive(Clone, Debug, PartialEq)]
struct Pair {
    weight: String,
    bias: Bias,
    batch_norm: BatchNormNames,
}

/// Folds BatchNorm layers (evaluation mode) into the Conv2d or Linear layers before
/// them ([`Model::fold_batch_norm`]): exact for inference, and each BatchNorm's four
/// parameters leave the model (a layer without bias gains one). The report lists them
/// in [`Report::removed`](super::Report::removed) and the biases made in
/// [`Report::added`](super::Report::added).
///
/// A model file holds no graph, so the step is told which layer each BatchNorm follows:
/// by [`FoldBatchNorm::for_network`] from a [`Network`] (run the network
/// [`Network::batch_norm_folded`] on the result), or by pairs of name prefixes
/// ([`FoldBatchNorm::new`], [`FoldBatchNorm::parse`]; the command line's `--fold-bn`).
/// The folds run on a copy of the model, kept only if all succeed.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use slimnn::Model;
/// use slimnn::pipeline::{FoldBatchNorm, Pipeline};
///
/// let mut model = Model::new();
/// model.add("conv1.weight", ArrayD::from_elem(IxDyn(&[8, 3, 3, 3]), 0.1))?;
/// for name in ["weight", "bias", "running_mean", "running_var"] {
///     model.add(format!("bn1.{name}"), ArrayD::from_elem(IxDyn(&[8]), 0.5))?;
/// }
/// let report = Pipeline::new()
///     .then(FoldBatchNorm::parse("conv1=bn1")?)
///     .run(&mut model)?;
/// assert_eq!(report.original_params, 8 * 27 + 4 * 8);
/// assert_eq!(report.total_params(), 8 * 27 + 8); // the weight and its new bias
/// assert_eq!(report.removed.len(), 4);
/// assert_eq!(report.added, ["conv1.bias"]);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct FoldBatchNorm {
    pairs: Vec<Pair>,
}

impl FoldBatchNorm {
    /// Folds by PyTorch's names: for each `(layer, batch_norm)` prefix pair, the weight
    /// `LAYER.weight` and bias `LAYER.bias` (created if the model has none), the
    /// BatchNorm `BN.weight`, `BN.bias`, `BN.running_mean`, `BN.running_var`, with
    /// PyTorch's `ε = 1e-5` (see [`FoldBatchNorm::with_eps`]). Pairs fold in order (a
    /// layer may take two BatchNorms in a row). No pairs is an [`Error::Empty`].
    pub fn new<L: AsRef<str>, B: AsRef<str>>(pairs: &[(L, B)]) -> Result<FoldBatchNorm> {
        if pairs.is_empty() {
            return Err(Error::Empty {
                what: "the list of (layer, BatchNorm) pairs to fold".into(),
            });
        }
        let pairs = pairs
            .iter()
            .map(|(layer, bn)| Pair {
                weight: format!("{}.weight", layer.as_ref()),
                bias: Bias::FromModel,
                batch_norm: BatchNormNames::new(bn.as_ref()),
            })
            .collect();
        Ok(FoldBatchNorm { pairs })
    }

    /// Pairs from text, `LAYER=BN` separated by commas, e.g.
    /// `conv1=bn1,layer1.0.conv1=layer1.0.bn1` ([`FoldBatchNorm::new`]'s names), then
    /// optionally `@EPS`, e.g. `conv1=bn1@1e-3`.
    pub fn parse(text: &str) -> Result<FoldBatchNorm> {
        let bad = || {
            Error::invalid(
                "fold-bn",
                text,
                "LAYER=BN pairs separated by commas, optionally then @EPS, e.g. \
                 conv1=bn1,layer1.0.conv1=layer1.0.bn1",
            )
        };
        let (list, eps) = match text.split_once('@') {
            Some((list, eps)) => (list, Some(eps.parse::<f32>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let pairs = list
            .split(',')
            .map(|pair| match pair.split_once('=') {
                Some((l, b)) if !l.trim().is_empty() && !b.trim().is_empty() => {
                    Ok((l.trim(), b.trim()))
                }
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>>>()?;
        let step = FoldBatchNorm::new(&pairs)?;
        match eps {
            Some(eps) => step.with_eps(eps),
            None => Ok(step),
        }
    }

    /// Every BatchNorm of `net` that directly follows a Conv2d or Linear layer, with
    /// the layers' own names and each BatchNorm's ε: the folds
    /// [`Network::fold_batch_norm`] makes. Run [`Network::batch_norm_folded`] on the
    /// folded model. A weight another layer also reads is an error
    /// ([`Network::fold_batch_norm`]); a network with nothing to fold gives a step that
    /// changes nothing.
    pub fn for_network(net: &Network) -> Result<FoldBatchNorm> {
        let (_, sites) = net.fold_plan()?;
        Ok(FoldBatchNorm {
            pairs: sites
                .into_iter()
                .map(|s| Pair {
                    weight: s.weight,
                    bias: Bias::Known(s.bias),
                    batch_norm: s.batch_norm,
                })
                .collect(),
        })
    }

    /// The same step with ε for every BatchNorm (finite, above 0; else an
    /// [`Error::InvalidParameter`] on `eps`).
    pub fn with_eps(mut self, eps: f32) -> Result<FoldBatchNorm> {
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::invalid("eps", eps, "a finite value above 0"));
        }
        for p in &mut self.pairs {
            p.batch_norm.eps = eps;
        }
        Ok(self)
    }

    /// The number of folds the step makes.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the step folds nothing.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl Compressor for FoldBatchNorm {
    fn describe(&self) -> String {
        let prefix = |name: &str| name.strip_suffix(".weight").unwrap_or(name).to_string();
        let shown: Vec<String> = self
            .pairs
            .iter()
            .take(3)
            .map(|p| format!("{}←{}", prefix(&p.weight), prefix(&p.batch_norm.weight)))
            .collect();
        let more = match self.pairs.len() {
            n if n > 3 => format!(" and {} more", n - 3),
            _ => String::new(),
        };
        format!("fold BatchNorm: {}{more}", shown.join(", "))
    }

    fn compress(&self, model: &mut Model) -> Result<()> {
        let mut work = model.clone();
        for p in &self.pairs {
            let bias = match &p.bias {
                Bias::FromModel => work.bias_of(&p.weight).map(String::from),
                Bias::Known(bias) => bias.clone(),
            };
            work.fold_batch_norm(&p.weight, bias.as_deref(), &p.batch_norm)?;
        }
        *model = work;
        Ok(())
    }
}
