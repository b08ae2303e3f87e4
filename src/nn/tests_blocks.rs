//! The block layers, pooling and batch normalisation against finite differences, and
//! their shapes and errors.

use ndarray::{Array1, Array2};

use super::graph::Mode;
use super::tests::{check_numeric, wave};
use super::*;
use crate::error::Error;
use crate::model::Model;

fn conv(weight: &str, bias: Option<&str>, spec: ConvSpec) -> Layer {
    Layer::Conv2d {
        weight: weight.into(),
        bias: bias.map(Into::into),
        spec,
    }
}

fn linear(weight: &str, bias: Option<&str>) -> Layer {
    Layer::Linear {
        weight: weight.into(),
        bias: bias.map(Into::into),
    }
}

/// Every parameter's gradient (running statistics left out) and the input's against
/// central finite differences, in `mode`.
pub(super) fn check_gradients(
    net: &Network,
    model: &Model,
    x: &Array2<f32>,
    y: &Array1<u8>,
    mode: Mode,
) {
    let loss =
        |m: &Model, x: &Array2<f32>| net.backprop(m, x.view(), y.view(), mode, false).unwrap().0;
    let (_, grads, dx) = net.backprop(model, x.view(), y.view(), mode, true).unwrap();
    let params: Vec<&str> = net.layers().iter().flat_map(|l| l.param_names()).collect();
    let mut checked = 0;
    for (name, g) in &grads {
        assert!(params.contains(&name.as_str()), "{name}");
        let skip = |_| false;
        check_numeric(name, g.as_slice().unwrap(), skip, |i, delta| {
            let mut m = model.clone();
            m.get_mut(name).unwrap().value_mut().as_slice_mut().unwrap()[i] += delta;
            loss(&m, x)
        });
        checked += 1;
    }
    assert!(checked > 0);
    check_numeric(
        "input",
        dx.unwrap().as_slice().unwrap(),
        |_| false,
        |i, delta| {
            let mut x = x.clone();
            x.as_slice_mut().unwrap()[i] += delta;
            loss(model, &x)
        },
    );
}

/// Residual blocks with and without a shortcut, and a concatenation with an empty
/// (identity) branch, on `[2, 5, 5]` images; dropout inside a block. No ReLU: finite
/// differences across its kink would not match.
fn block_net() -> (Model, Network) {
    let mut m = Model::new();
    let wave = |shape: &[usize], s| wave(shape, s) * 0.4;
    m.add("c1.weight", wave(&[3, 2, 3, 3], 0.71)).unwrap();
    m.add("r1a.weight", wave(&[3, 3, 3, 3], 0.53)).unwrap();
    m.add("r1b.weight", wave(&[3, 3, 1, 1], 0.37)).unwrap();
    m.add("r1b.bias", wave(&[3], 0.3)).unwrap();
    m.add("r2.weight", wave(&[4, 3, 3, 3], 0.29)).unwrap();
    m.add("r2s.weight", wave(&[4, 3, 1, 1], 0.83)).unwrap();
    m.add("b1.weight", wave(&[2, 4, 1, 1], 0.61)).unwrap();
    m.add("b2.weight", wave(&[3, 4, 3, 3], 0.47)).unwrap();
    m.add("b2.bias", wave(&[3], 0.9)).unwrap();
    m.add("fc.weight", wave(&[3, 81], 0.13) * 0.3).unwrap();
    let pad = ConvSpec::new().with_padding(1, 1);
    let net = Network::new(vec![
        conv("c1.weight", None, pad),
        Layer::residual(
            vec![
                conv("r1a.weight", None, pad),
                Layer::Dropout { p: 0.2 },
                conv("r1b.weight", Some("r1b.bias"), ConvSpec::new()),
            ],
            vec![],
        ),
        Layer::residual(
            vec![conv("r2.weight", None, pad.with_stride(2, 2))],
            vec![conv("r2s.weight", None, ConvSpec::new().with_stride(2, 2))],
        ),
        Layer::concat(vec![
            vec![conv("b1.weight", None, ConvSpec::new())],
            vec![conv("b2.weight", Some("b2.bias"), pad)],
            vec![],
        ]),
        Layer::Flatten,
        linear("fc.weight", None),
    ])
    .with_input_shape(&[2, 5, 5]);
    (m, net)
}

#[test]
fn blocks_infer_shapes() {
    let (model, net) = block_net();
    assert_eq!(
        net.shapes(&model).unwrap(),
        vec![
            vec![2, 5, 5],
            vec![3, 5, 5],
            vec![3, 5, 5],
            vec![4, 3, 3],
            vec![9, 3, 3],
            vec![81],
            vec![3],
        ]
    );
    assert_eq!(
        net.layers()[2].param_names(),
        vec!["r2.weight", "r2s.weight"]
    );
}

#[test]
fn block_gradients_match_finite_differences() {
    let (model, net) = block_net();
    let x = Array2::from_shape_fn((3, 50), |(i, j)| ((i * 50 + j) as f32 * 0.37).sin());
    let y = Array1::from(vec![0u8, 2, 1]);
    check_gradients(&net, &model, &x, &y, Mode::Eval);
    check_gradients(&net, &model, &x, &y, Mode::Train { seed: 3 });
    // Dropout inside the residual block is active in training mode.
    let eval = net
        .loss_and_gradients(&model, x.view(), y.view())
        .unwrap()
        .0;
    let train = net
        .train_gradients(&model, x.view(), y.view(), 3)
        .unwrap()
        .0;
    assert_ne!(eval, train);
}

/// Blocks on `[n, features]`: a residual MLP block and a concatenation of two Linears.
#[test]
fn feature_blocks_match_finite_differences() {
    let mut m = Model::new();
    m.add("a.weight", wave(&[4, 4], 0.7)).unwrap();
    m.add("a.bias", wave(&[4], 0.3)).unwrap();
    m.add("p.weight", wave(&[2, 4], 0.5)).unwrap();
    m.add("q.weight", wave(&[3, 4], 0.9)).unwrap();
    m.add("o.weight", wave(&[3, 9], 0.4)).unwrap();
    let net = Network::new(vec![
        Layer::residual(
            vec![linear("a.weight", Some("a.bias")), Layer::Relu],
            vec![],
        ),
        Layer::concat(vec![
            vec![linear("p.weight", None)],
            vec![linear("q.weight", None), Layer::Relu],
            vec![],
        ]),
        linear("o.weight", None),
    ])
    .with_input_shape(&[4]);
    assert_eq!(net.shapes(&m).unwrap().last().unwrap(), &vec![3]);
    let x = Array2::from_shape_fn((5, 4), |(i, j)| ((i * 4 + j) as f32 * 0.61).cos());
    let y = Array1::from(vec![0u8, 2, 1, 1, 0]);
    check_gradients(&net, &m, &x, &y, Mode::Eval);
    // The residual block is exactly a + relu(W a + b).
    let out = net.forward_with_outputs(&m, x.view(), &[0]).unwrap().1;
    let w: Array2<f32> = m
        .get("a.weight")
        .unwrap()
        .value()
        .clone()
        .into_dimensionality()
        .unwrap();
    let b: Array1<f32> = m
        .get("a.bias")
        .unwrap()
        .value()
        .clone()
        .into_dimensionality()
        .unwrap();
    let want = &x + &(x.dot(&w.t()) + &b).mapv(|v| v.max(0.0));
    let got = out[0]
        .clone()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6));
}

#[test]
fn a_parameter_shared_by_two_layers_gets_the_sum_of_gradients() {
    let mut m = Model::new();
    m.add("w.weight", wave(&[3, 3], 0.7)).unwrap();
    let net = Network::new(vec![Layer::residual(
        vec![linear("w.weight", None), Layer::Relu],
        vec![linear("w.weight", None)],
    )])
    .with_input_shape(&[3]);
    let x = Array2::from_shape_fn((4, 3), |(i, j)| ((i * 3 + j) as f32 * 0.61).cos());
    let y = Array1::from(vec![0u8, 2, 1, 1]);
    check_gradients(&net, &m, &x, &y, Mode::Eval);
}

#[test]
fn blocks_that_do_not_fit_are_typed_errors() {
    let (mut model, _) = block_net();
    let pad = ConvSpec::new().with_padding(1, 1);
    // The body changes the shape, the identity shortcut does not.
    let net = Network::new(vec![
        Layer::residual(vec![conv("r2.weight", None, pad.with_stride(2, 2))], vec![]),
        Layer::Flatten,
    ])
    .with_input_shape(&[3, 5, 5]);
    assert!(matches!(
        net.check(&model),
        Err(Error::ShapeMismatch { .. })
    ));
    // Branches whose spatial sizes differ.
    let net = Network::new(vec![
        Layer::concat(vec![
            vec![conv("b1.weight", None, ConvSpec::new())],
            vec![conv("b2.weight", None, ConvSpec::new())],
        ]),
        Layer::Flatten,
    ])
    .with_input_shape(&[4, 5, 5]);
    assert!(matches!(
        net.check(&model),
        Err(Error::ShapeMismatch { .. })
    ));
    let net =
        Network::new(vec![Layer::concat(vec![]), Layer::Flatten]).with_input_shape(&[4, 5, 5]);
    assert!(matches!(net.check(&model), Err(Error::Empty { .. })));
    // A missing parameter inside a block.
    model.remove("b1.weight").unwrap();
    let net = Network::new(vec![
        Layer::concat(vec![vec![conv("b1.weight", None, ConvSpec::new())]]),
        Layer::Flatten,
    ])
    .with_input_shape(&[4, 5, 5]);
    assert!(matches!(net.check(&model), Err(Error::UnknownParameter(_))));
}

#[test]
fn blocks_compare_by_content_and_taps_see_top_level_outputs() {
    let (model, net) = block_net();
    assert_eq!(net, block_net().1);
    let other = Layer::residual(vec![Layer::Relu], vec![]);
    assert_ne!(other, Layer::residual(vec![Layer::Relu], vec![Layer::Relu]));
    assert_ne!(other, Layer::concat(vec![vec![Layer::Relu]]));
    let x = Array2::from_shape_fn((2, 50), |(i, j)| ((i * 50 + j) as f32 * 0.37).sin());
    let (logits, taps) = net.forward_with_outputs(&model, x.view(), &[1, 3]).unwrap();
    assert_eq!(taps[0].shape(), &[2, 3, 5, 5]);
    assert_eq!(taps[1].shape(), &[2, 9, 3, 3]);
    assert_eq!(logits, net.forward(&model, x.view()).unwrap());
    // Wanda's statistics reach the layers inside blocks.
    let norms = net.activation_norms(&model, x.view()).unwrap();
    for name in ["r1a.weight", "r2s.weight", "b2.weight", "fc.weight"] {
        assert!(norms.contains_key(name), "{name}");
    }
}
