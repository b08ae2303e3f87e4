//! Shape inference through a [`Network`]: every layer's parameters are checked against
//! the activation reaching it.

use super::{Layer, Network, avgpool, block, dropout, pool};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::tensor::check_same_shape;

impl Network {
    /// Checks that every parameter exists, that every layer fits the activation reaching
    /// it (inferring the shapes from the input), and that the output is one vector of
    /// logits per example.
    pub fn check(&self, model: &Model) -> Result<()> {
        let shapes = self.shapes(model)?;
        let out = shapes.last().expect("the input shape at least");
        if out.len() != 1 {
            return Err(Error::bad_shape(
                "network output",
                out,
                "a classifier ends in [n, classes]: add a Flatten",
            ));
        }
        Ok(())
    }

    /// The shape of one example before the first layer and after each layer
    /// (`layers().len() + 1` shapes, batch axis left out).
    pub fn shapes(&self, model: &Model) -> Result<Vec<Vec<usize>>> {
        let mut shape = self.example_shape(model)?;
        let mut shapes = vec![shape.clone()];
        for layer in &self.layers {
            shape = layer_output(layer, model, &shape)?;
            shapes.push(shape.clone());
        }
        Ok(shapes)
    }

    /// The number of input features: the product of the input shape.
    pub fn inputs(&self, model: &Model) -> Result<usize> {
        Ok(self.example_shape(model)?.iter().product())
    }

    /// The input shape, or the first Linear layer's `[in]` if none was set.
    pub(super) fn example_shape(&self, model: &Model) -> Result<Vec<usize>> {
        if let Some(shape) = &self.input_shape {
            if shape.is_empty() || shape.contains(&0) {
                return Err(Error::bad_shape(
                    "network input",
                    shape,
                    "one or more non-zero dimensions",
                ));
            }
            return Ok(shape.clone());
        }
        let weight = self
            .layers
            .iter()
            .find_map(|l| match l {
                Layer::Linear { weight, .. } => Some(weight.as_str()),
                _ => None,
            })
            .ok_or_else(|| Error::Empty {
                what: "network (no input shape and no Linear layer)".into(),
            })?;
        let w = model.get(weight)?;
        match w.shape() {
            [_, inputs] => Ok(vec![*inputs]),
            other => Err(Error::bad_shape(
                format!("`{weight}`"),
                other,
                "a Linear weight is [out, in]",
            )),
        }
    }
}

/// The shape after `layer` of an example of `shape`.
pub(crate) fn layer_output(layer: &Layer, model: &Model, shape: &[usize]) -> Result<Vec<usize>> {
    match layer {
        Layer::Linear { weight, bias } => {
            let w = model.get(weight)?;
            let &[out, inputs] = w.shape() else {
                return Err(Error::bad_shape(
                    format!("`{weight}`"),
                    w.shape(),
                    "a Linear weight is [out, in]",
                ));
            };
            if shape.len() != 1 {
                return Err(Error::bad_shape(
                    format!("input of `{weight}`"),
                    shape,
                    "a Linear layer takes [n, features]: add a Flatten before it",
                ));
            }
            if shape[0] != inputs {
                return Err(Error::ShapeMismatch {
                    what: format!("inputs of `{weight}`"),
                    expected: shape.to_vec(),
                    got: vec![inputs],
                });
            }
            check_bias(model, bias.as_deref(), out)?;
            Ok(vec![out])
        }
        Layer::Conv2d { weight, bias, spec } => {
            let w = model.get(weight)?;
            let &[o, cg, kh, kw] = w.shape() else {
                return Err(Error::bad_shape(
                    format!("`{weight}`"),
                    w.shape(),
                    "a Conv2d weight is [out, in / groups, kh, kw]",
                ));
            };
            let &[c, h, wd] = shape else {
                return Err(Error::bad_shape(
                    format!("input of `{weight}`"),
                    shape,
                    "a Conv2d layer takes [n, channels, height, width]",
                ));
            };
            let g =
                super::im2col::Geometry::new((c, h, wd), (o, cg, kh, kw), *spec).map_err(|e| {
                    match e {
                        Error::ShapeMismatch { expected, got, .. } => Error::ShapeMismatch {
                            what: format!(
                                "`{weight}` for {c} input channels in {} groups",
                                spec.groups
                            ),
                            expected,
                            got,
                        },
                        other => other,
                    }
                })?;
            check_bias(model, bias.as_deref(), o)?;
            Ok(vec![o, g.oh, g.ow])
        }
        Layer::TiedConv2d {
            weight,
            bias,
            spec,
            transforms,
        } => {
            let w = model.get(weight)?;
            let out = crate::filters::tied_output(weight, w.shape(), *spec, transforms, shape)?;
            check_bias(model, bias.as_deref(), out[0])?;
            Ok(out)
        }
        Layer::CRelu => crate::filters::crelu_example_shape(shape),
        Layer::MaxPool2d { kernel, stride } => {
            let &[c, h, w] = shape else {
                return Err(Error::bad_shape(
                    "max-pooling input",
                    shape,
                    "MaxPool2d takes [n, channels, height, width]",
                ));
            };
            let (oh, ow) = pool::output_size((h, w), *kernel, *stride)?;
            Ok(vec![c, oh, ow])
        }
        Layer::Flatten => Ok(vec![shape.iter().product()]),
        Layer::Relu => Ok(shape.to_vec()),
        Layer::Dropout { p } => {
            dropout::check_p(*p)?;
            Ok(shape.to_vec())
        }
        Layer::AvgPool2d {
            kernel,
            stride,
            padding,
        } => {
            let &[c, h, w] = shape else {
                return Err(Error::bad_shape(
                    "average-pooling input",
                    shape,
                    "AvgPool2d takes [n, channels, height, width]",
                ));
            };
            let (oh, ow) = avgpool::Window::new(*kernel, *stride, *padding)?.output_size((h, w))?;
            Ok(vec![c, oh, ow])
        }
        Layer::GlobalAvgPool => match shape {
            &[c, _, _] => Ok(vec![c]),
            _ => Err(Error::bad_shape(
                "global-average-pooling input",
                shape,
                "GlobalAvgPool takes [n, channels, height, width]",
            )),
        },
        Layer::BatchNorm { .. } => {
            let bn = super::graph::batch_norm(layer).expect("a BatchNorm layer");
            bn.check(model, shape)?;
            Ok(shape.to_vec())
        }
        Layer::Residual {
            body,
            shortcut,
            survival,
        } => {
            super::check_survival(*survival)?;
            block::residual_output(body, shortcut, model, shape)
        }
        Layer::Concat { branches } => block::concat_output(branches, model, shape),
    }
}

fn check_bias(model: &Model, bias: Option<&str>, out: usize) -> Result<()> {
    if let Some(b) = bias {
        check_same_shape(&[out], model.get(b)?.shape(), || format!("`{b}`"))?;
    }
    Ok(())
}
