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
        if name.ends_with(RUNNING_STAT_SUFFIX) {
            continue;
        }
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

/// Average pooling with and without padding, and global average pooling.
#[test]
fn pooling_gradients_match_finite_differences() {
    let mut m = Model::new();
    m.add("c.weight", wave(&[3, 2, 3, 3], 0.71) * 0.5).unwrap();
    m.add("f.weight", wave(&[3, 3], 0.53)).unwrap();
    m.add("g.weight", wave(&[3, 12], 0.37)).unwrap();
    let pool = |kernel, stride, padding| Layer::AvgPool2d {
        kernel,
        stride,
        padding,
    };
    let global = Network::new(vec![
        conv("c.weight", None, ConvSpec::new()),
        pool((3, 3), (2, 2), (1, 1)),
        Layer::GlobalAvgPool,
        linear("f.weight", None),
    ])
    .with_input_shape(&[2, 7, 6]);
    assert_eq!(
        global.shapes(&m).unwrap(),
        vec![
            vec![2, 7, 6],
            vec![3, 5, 4],
            vec![3, 3, 2],
            vec![3],
            vec![3]
        ]
    );
    let plain = Network::new(vec![
        conv("c.weight", None, ConvSpec::new()),
        pool((2, 3), (1, 2), (0, 0)),
        Layer::Flatten,
        linear("g.weight", None),
    ])
    .with_input_shape(&[2, 7, 6]);
    assert_eq!(plain.shapes(&m).unwrap()[2], vec![3, 4, 1]);
    let x = Array2::from_shape_fn((3, 84), |(i, j)| ((i * 84 + j) as f32 * 0.37).sin());
    let y = Array1::from(vec![0u8, 2, 1]);
    check_gradients(&global, &m, &x, &y, Mode::Eval);
    check_gradients(&plain, &m, &x, &y, Mode::Eval);
    // Shapes that do not fit are typed errors.
    let bad = |layer: Layer, shape: &[usize]| {
        Network::new(vec![layer, Layer::Flatten])
            .with_input_shape(shape)
            .check(&m)
    };
    assert!(matches!(
        bad(pool((4, 4), (1, 1), (0, 0)), &[1, 3, 3]),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        bad(pool((2, 2), (1, 1), (2, 0)), &[1, 3, 3]),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        bad(pool((2, 2), (1, 1), (0, 0)), &[9]),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        bad(Layer::GlobalAvgPool, &[9]),
        Err(Error::BadShape { .. })
    ));
    assert_ne!(pool((2, 2), (1, 1), (0, 0)), pool((2, 2), (1, 1), (1, 1)));
}

/// A conv net with a 2-D BatchNorm (inside a residual block) and a 1-D one.
fn bn_net(model: &mut Model) -> Network {
    let positive = |shape: &[usize], s| wave(shape, s).mapv(|v| v.abs() + 0.3);
    model
        .add("c.weight", wave(&[3, 2, 3, 3], 0.71) * 0.5)
        .unwrap();
    model.add("bn1.weight", positive(&[3], 0.4)).unwrap();
    model.add("bn1.bias", wave(&[3], 0.9)).unwrap();
    model
        .add("bn1.running_mean", wave(&[3], 0.3) * 0.1)
        .unwrap();
    model.add("bn1.running_var", positive(&[3], 0.7)).unwrap();
    model.add("f.weight", wave(&[4, 12], 0.37) * 0.5).unwrap();
    model.add("bn2.weight", positive(&[4], 0.2)).unwrap();
    model.add("bn2.bias", wave(&[4], 0.5)).unwrap();
    model
        .add("bn2.running_mean", wave(&[4], 0.8) * 0.1)
        .unwrap();
    model.add("bn2.running_var", positive(&[4], 0.6)).unwrap();
    model.add("o.weight", wave(&[3, 4], 0.61)).unwrap();
    Network::new(vec![
        conv("c.weight", None, ConvSpec::new()),
        Layer::residual(vec![Layer::batch_norm("bn1")], vec![]),
        Layer::AvgPool2d {
            kernel: (2, 2),
            stride: (2, 2),
            padding: (0, 0),
        },
        Layer::Flatten,
        linear("f.weight", None),
        Layer::batch_norm("bn2"),
        linear("o.weight", None),
    ])
    .with_input_shape(&[2, 6, 6])
}

#[test]
fn batch_norm_gradients_match_finite_differences_in_both_modes() {
    let mut model = Model::new();
    let net = bn_net(&mut model);
    let x = Array2::from_shape_fn((5, 72), |(i, j)| ((i * 72 + j) as f32 * 0.37).sin());
    let y = Array1::from(vec![0u8, 2, 1, 1, 0]);
    check_gradients(&net, &model, &x, &y, Mode::Eval);
    check_gradients(&net, &model, &x, &y, Mode::Train { seed: 1 });
    // Evaluation mode reports no running statistics; training mode reports all four.
    let (_, eval) = net.loss_and_gradients(&model, x.view(), y.view()).unwrap();
    assert!(!eval.keys().any(|k| k.ends_with(RUNNING_STAT_SUFFIX)));
    let (_, train) = net.train_gradients(&model, x.view(), y.view(), 1).unwrap();
    let running: Vec<&str> = train
        .keys()
        .filter(|k| k.ends_with(RUNNING_STAT_SUFFIX))
        .map(String::as_str)
        .collect();
    assert_eq!(
        running,
        [
            "bn1.running_mean#running",
            "bn1.running_var#running",
            "bn2.running_mean#running",
            "bn2.running_var#running"
        ]
    );
}

/// PyTorch's rule on `[n, f]`: the batch normalised by its biased variance, the
/// running estimates moved towards the mean and the unbiased variance.
#[test]
fn batch_norm_follows_pytorch_in_both_modes() {
    let mut m = Model::new();
    m.add("bn.weight", Array1::from(vec![2.0f32, 0.5]).into_dyn())
        .unwrap();
    m.add("bn.bias", Array1::from(vec![1.0f32, -1.0]).into_dyn())
        .unwrap();
    m.add(
        "bn.running_mean",
        Array1::from(vec![0.0f32, 1.0]).into_dyn(),
    )
    .unwrap();
    m.add("bn.running_var", Array1::from(vec![1.0f32, 4.0]).into_dyn())
        .unwrap();
    let net = Network::new(vec![Layer::batch_norm("bn")]).with_input_shape(&[2]);
    assert_eq!(
        m.get("bn.running_var").unwrap().kind(),
        crate::LayerKind::Other
    );
    let x =
        Array2::from_shape_vec((4, 2), vec![1.0f32, 0.0, 2.0, 0.0, 3.0, 4.0, 6.0, 8.0]).unwrap();
    // Column 0: mean 3, biased variance 3.5, unbiased 14/3.
    let (y, _) = net
        .run(&m, x.view(), Mode::Train { seed: 0 }, false)
        .unwrap();
    let want0 = (1.0 - 3.0) / (3.5f32 + 1e-5).sqrt() * 2.0 + 1.0;
    assert!((y[[0, 0]] - want0).abs() < 1e-5);
    let (_, g, _) = net
        .backprop(
            &m,
            x.view(),
            Array1::from(vec![0u8, 1, 0, 1]).view(),
            Mode::Train { seed: 0 },
            false,
        )
        .unwrap();
    let rm = &g["bn.running_mean#running"];
    let rv = &g["bn.running_var#running"];
    assert!((rm[0] - 0.3).abs() < 1e-6 && (rm[1] - (0.9 + 0.1 * 3.0)).abs() < 1e-6);
    assert!((rv[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-5);
    // Column 1: mean 3, unbiased variance 44/3.
    assert!((rv[1] - (3.6 + 0.1 * 44.0 / 3.0)).abs() < 1e-5, "{rv}");
    // Evaluation mode: the running estimates.
    let y = net.forward(&m, x.view()).unwrap();
    let want = (0.0 - 1.0) / (4.0f32 + 1e-5).sqrt() * 0.5 - 1.0;
    assert!((y[[0, 1]] - want).abs() < 1e-6);
    // One value per channel cannot be normalised by its batch statistics.
    assert!(matches!(
        net.run(
            &m,
            x.slice(ndarray::s![..1, ..]),
            Mode::Train { seed: 0 },
            false
        ),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(net.forward(&m, x.slice(ndarray::s![..1, ..])).is_ok());
}

#[test]
fn batch_norm_settings_and_statistics_are_checked() {
    let mut m = Model::new();
    let net = bn_net(&mut m);
    assert!(net.check(&m).is_ok());
    let with = |eps: f32, momentum: f32| {
        let mut layers = net.layers().to_vec();
        if let Layer::BatchNorm {
            eps: e,
            momentum: mo,
            ..
        } = &mut layers[5]
        {
            *e = eps;
            *mo = momentum;
        }
        Network::new(layers).with_input_shape(&[2, 6, 6])
    };
    for (eps, momentum) in [
        (0.0, 0.1),
        (-1e-5, 0.1),
        (f32::NAN, 0.1),
        (f32::INFINITY, 0.1),
        (1e-5, 1.5),
        (1e-5, f32::NAN),
    ] {
        assert!(
            matches!(
                with(eps, momentum).check(&m),
                Err(Error::InvalidParameter { .. })
            ),
            "{eps} {momentum}"
        );
    }
    assert_ne!(with(1e-3, 0.1), net);
    for bad in [-1.0f32, f32::NAN, f32::INFINITY] {
        let mut m = m.clone();
        m.get_mut("bn1.running_var").unwrap().value_mut()[1] = bad;
        assert!(
            matches!(net.check(&m), Err(Error::InvalidParameter { .. })),
            "{bad}"
        );
    }
    let mut wrong = m.clone();
    wrong.remove("bn2.bias").unwrap();
    wrong.add("bn2.bias", wave(&[3], 0.5)).unwrap();
    assert!(matches!(
        net.check(&wrong),
        Err(Error::ShapeMismatch { .. })
    ));
}

/// The running statistics reach the data's mean and (unbiased) variance through the
/// training paths, with no pass of their own.
#[test]
fn running_statistics_converge_to_the_data_statistics() {
    let (mean, std) = ([2.0f32, -1.0, 0.5], [0.5f32, 3.0, 1.0]);
    let n = 512;
    let mut rng = 12345u64;
    let mut uniform = || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    };
    let mut images = Array2::zeros((n, 3));
    for mut row in images.rows_mut() {
        for j in 0..3 {
            // Uniform with the given mean and standard deviation.
            row[j] = mean[j] + std[j] * 3f32.sqrt() * (2.0 * uniform() - 1.0);
        }
    }
    let data = crate::io::idx::Dataset {
        labels: images.column(0).mapv(|v| (v > 2.0) as u8),
        images,
        image_shape: vec![3],
    };
    let sample_mean: Vec<f32> = (0..3)
        .map(|j| data.images.column(j).mean().unwrap())
        .collect();
    let sample_var: Vec<f32> = (0..3).map(|j| data.images.column(j).var(1.0)).collect();
    let mut model = Model::new();
    model
        .add("bn.weight", ndarray::ArrayD::ones(ndarray::IxDyn(&[3])))
        .unwrap();
    model
        .add("bn.bias", ndarray::ArrayD::zeros(ndarray::IxDyn(&[3])))
        .unwrap();
    model
        .add(
            "bn.running_mean",
            ndarray::ArrayD::zeros(ndarray::IxDyn(&[3])),
        )
        .unwrap();
    model
        .add(
            "bn.running_var",
            ndarray::ArrayD::ones(ndarray::IxDyn(&[3])),
        )
        .unwrap();
    model.add("fc.weight", wave(&[2, 3], 0.3)).unwrap();
    let net = Network::new(vec![Layer::batch_norm("bn"), linear("fc.weight", None)])
        .with_input_shape(&[3]);
    let check = |model: &Model, what: &str| {
        let rm = model.get("bn.running_mean").unwrap().value();
        let rv = model.get("bn.running_var").unwrap().value();
        for j in 0..3 {
            assert!(
                (rm[j] - sample_mean[j]).abs() < 0.15 * std[j],
                "{what}: mean {j}: {} vs {}",
                rm[j],
                sample_mean[j]
            );
            assert!(
                (rv[j] / sample_var[j] - 1.0).abs() < 0.15,
                "{what}: var {j}: {} vs {}",
                rv[j],
                sample_var[j]
            );
        }
    };
    let mut plain = model.clone();
    let mut sgd = Sgd::new(0.01, 0.9, 0.0).unwrap();
    for epoch in 0..4 {
        train_epoch(&net, &mut plain, &mut sgd, &data, 32, epoch).unwrap();
    }
    check(&plain, "train_epoch");
    // Quantization-aware training updates the latent model's statistics.
    let qat = QuantAwareTraining::new(
        crate::Selector::prunable(),
        crate::quant::UniformQuantizer::new(
            4,
            crate::quant::Scheme::Symmetric,
            crate::quant::Granularity::PerTensor,
        )
        .unwrap(),
    );
    let mut latent = model.clone();
    let mut sgd = Sgd::new(0.01, 0.9, 0.0).unwrap();
    for epoch in 0..4 {
        qat.train_epoch(&net, &mut latent, &mut sgd, &data, 32, epoch)
            .unwrap();
    }
    check(&latent, "quantization-aware training");
}
