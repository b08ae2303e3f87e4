//! Running a depthwise-separable factorization as real layers: the network rewrite.

use std::collections::BTreeMap;

use ndarray::Array4;

use super::DepthwiseSeparable;
use crate::error::{Error, Result};
use crate::lowrank::{FactorizedLayer, Factors, LowRank, LowRankContext, LowRankReport};
use crate::model::{LayerKind, Model, Selector};
use crate::nn::{ConvSpec, Layer, Network};

/// The two parameters a converted convolution becomes.
struct Split {
    depthwise: (String, Array4<f32>),
    pointwise: (String, Array4<f32>),
}

impl Network {
    /// Converts the selected Conv2d weights of this network into optimal
    /// depthwise-separable pairs ([`DepthwiseSeparable`], with each layer's own stride
    /// and padding) and rewrites the network to run them as real layers
    /// ([`split_depthwise_separable`](Network::split_depthwise_separable)). Returns the
    /// new network and the factorizations made (their errors and counts).
    ///
    /// A selected parameter that is not the weight of a Conv2d layer of this network
    /// (a Linear weight, a bias, a weight no layer uses) is an [`Error::WrongKind`], a
    /// grouped convolution an [`Error::InvalidParameter`] on `groups`; on error the
    /// model is unchanged.
    ///
    /// ```
    /// use slimnn::{Model, Selector};
    /// use slimnn::nn::Network;
    ///
    /// let mut model = Model::new();
    /// let net = Network::lenet5(&mut model, 1)?;
    /// let (separable, report) = net.convert_depthwise_separable(&mut model, &Selector::parse("conv2.weight")?)?;
    /// assert_eq!(separable.layers().len(), net.layers().len() + 1);
    /// assert_eq!(report.params(), 20 * 25 + 50 * 20); // instead of 25,000
    /// assert!(model.contains("conv2.depthwise.weight") && !model.contains("conv2.weight"));
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn convert_depthwise_separable(
        &self,
        model: &mut Model,
        selector: &Selector,
    ) -> Result<(Network, LowRankReport)> {
        let specs = self.conv_specs();
        let names: Vec<String> = model
            .select(selector)?
            .into_iter()
            .map(String::from)
            .collect();
        let mut layers = Vec::with_capacity(names.len());
        for name in names {
            let p = model.get(&name)?;
            let Some(&spec) = specs.get(name.as_str()) else {
                return Err(Error::WrongKind {
                    name,
                    kind: p.kind().to_string(),
                    operation: "a depthwise-separable conversion",
                    expected: "the weight of a Conv2d layer of the network",
                });
            };
            let ctx = LowRankContext {
                name: Some(&name),
                kind: Some(p.kind()),
                seed: 0,
                conv: spec,
            };
            let factorization = DepthwiseSeparable.factorize(&p.effective(), &ctx)?;
            layers.push(FactorizedLayer {
                kind: p.kind(),
                name,
                factorization,
            });
        }
        // Everything is checked before the model changes.
        let mut work = model.clone();
        for l in &layers {
            work.get_mut(&l.name)?
                .set_factorization(l.factorization.clone())?;
        }
        let net = self.split_depthwise_separable(&mut work)?;
        *model = work;
        Ok((net, LowRankReport { layers }))
    }

    /// Rewrites every Conv2d layer whose weight holds a depthwise-separable
    /// factorization ([`Factors::DepthwiseSeparable`], e.g. from a pipeline's
    /// `dwsep` step) into its two real layers: a depthwise Conv2d (`groups = in`, the
    /// layer's stride and padding) with weight `PREFIX.depthwise.weight` `[in, 1, kh, kw]`,
    /// then a pointwise 1×1 Conv2d with weight `PREFIX.pointwise.weight` `[out, in, 1, 1]`
    /// and the layer's bias (`PREFIX` is the weight's name without `.weight`). The
    /// factorized weight leaves the model and the two new ones are added (kind Conv2d),
    /// so the network runs, and trains, as separable convolutions.
    ///
    /// The outputs equal those of the network on the factorized model up to rounding.
    /// A factorized weight used by a grouped convolution, or a new name already in the
    /// model, is an error before anything changes.
    pub fn split_depthwise_separable(&self, model: &mut Model) -> Result<Network> {
        let mut splits: BTreeMap<String, Split> = BTreeMap::new();
        let mut convs = Vec::new();
        visit(self.layers(), &mut |l| convs.push(l));
        for layer in convs {
            let Layer::Conv2d { weight, spec, .. } = layer else {
                continue;
            };
            let Some(f) = model.get(weight)?.factorization() else {
                continue;
            };
            let Factors::DepthwiseSeparable {
                depthwise,
                pointwise,
            } = f.factors()
            else {
                continue;
            };
            if spec.groups != 1 {
                return Err(Error::invalid(
                    "groups",
                    spec.groups,
                    "1 (a grouped convolution has no depthwise-separable form)",
                ));
            }
            let prefix = weight.strip_suffix(".weight").unwrap_or(weight);
            let split = Split {
                depthwise: (format!("{prefix}.depthwise.weight"), depthwise.clone()),
                pointwise: (format!("{prefix}.pointwise.weight"), pointwise.clone()),
            };
            for new in [&split.depthwise.0, &split.pointwise.0] {
                if model.contains(new) {
                    return Err(Error::invalid(
                        "name",
                        new,
                        "a name not already in the model (for the separable layers)",
                    ));
                }
            }
            splits.insert(weight.clone(), split);
        }
        let mut net = Network::new(rewrite(self.layers(), &splits));
        if let Some(shape) = self.input_shape() {
            net = net.with_input_shape(shape);
        }
        let mut work = model.clone();
        for (weight, split) in splits {
            let dtype = work.remove(&weight)?.dtype();
            for (name, value) in [split.depthwise, split.pointwise] {
                work.add_param(name, LayerKind::Conv2d, dtype, value.into_dyn())?;
            }
        }
        net.check(&work)?;
        *model = work;
        Ok(net)
    }

    /// Records in `model` the stride, padding and groups of each Conv2d layer of this
    /// network ([`Model::set_conv_spec`]), so that [`Model::factorize`] factorizes the
    /// convolutions for their geometry and the stored factors run with each layer's
    /// output shape. Returns the number of weights recorded; a layer whose weight the
    /// model lacks is an [`Error::UnknownParameter`], before any change.
    pub fn record_conv_specs(&self, model: &mut Model) -> Result<usize> {
        let specs = self.conv_specs();
        for name in specs.keys() {
            model.get(name)?;
        }
        for (name, spec) in &specs {
            model.set_conv_spec(name, *spec)?;
        }
        Ok(specs.len())
    }

    /// Each Conv2d weight's spec, by weight name (blocks' layers included).
    fn conv_specs(&self) -> BTreeMap<&str, ConvSpec> {
        let mut specs = BTreeMap::new();
        visit(self.layers(), &mut |l| {
            if let Layer::Conv2d { weight, spec, .. } = l {
                specs.insert(weight.as_str(), *spec);
            }
        });
        specs
    }
}

/// Calls `f` on every layer, blocks' sub-layers included (after the block).
fn visit<'a>(layers: &'a [Layer], f: &mut impl FnMut(&'a Layer)) {
    for layer in layers {
        f(layer);
        match layer {
            Layer::Residual { body, shortcut, .. } => {
                visit(body, f);
                visit(shortcut, f);
            }
            Layer::Concat { branches } => branches.iter().for_each(|b| visit(b, f)),
            _ => {}
        }
    }
}

/// `layers` with each split convolution replaced by its two layers, in blocks too.
fn rewrite(layers: &[Layer], splits: &BTreeMap<String, Split>) -> Vec<Layer> {
    let mut out = Vec::with_capacity(layers.len() + splits.len());
    for layer in layers {
        match layer {
            Layer::Conv2d { weight, bias, spec } if splits.contains_key(weight) => {
                let split = &splits[weight];
                let channels = split.depthwise.1.dim().0;
                out.push(Layer::Conv2d {
                    weight: split.depthwise.0.clone(),
                    bias: None,
                    spec: ConvSpec {
                        groups: channels,
                        ..*spec
                    },
                });
                out.push(Layer::Conv2d {
                    weight: split.pointwise.0.clone(),
                    bias: bias.clone(),
                    spec: ConvSpec::new(),
                });
            }
            Layer::Residual {
                body,
                shortcut,
                survival,
            } => out.push(Layer::Residual {
                body: rewrite(body, splits),
                shortcut: rewrite(shortcut, splits),
                survival: *survival,
            }),
            Layer::Concat { branches } => out.push(Layer::concat(
                branches.iter().map(|b| rewrite(b, splits)).collect(),
            )),
            other => out.push(other.clone()),
        }
    }
    out
}
