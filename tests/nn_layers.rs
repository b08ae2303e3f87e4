//! Convolutional networks through the public API: LeNet-5's shapes, dropout's two
//! modes, typed errors for networks that do not fit, a short training run on MNIST, and
//! the BatchNorm constructors (conv-BN-ReLU, residual blocks) on the 8×8 digits.

mod common;

use std::path::Path;

use ndarray::{Array1, Array2, ArrayD, IxDyn, s};
use slimnn::filters::{ConvBnRelu, ResidualBlock, SeparableBlock};
use slimnn::io::idx::Dataset;
use slimnn::nn::{ConvSpec, Layer, Network, Sgd, train_epoch};
use slimnn::{Error, Model};

fn conv(weight: &str, spec: ConvSpec) -> Layer {
    Layer::Conv2d {
        weight: weight.into(),
        bias: None,
        spec,
    }
}

fn linear(weight: &str) -> Layer {
    Layer::Linear {
        weight: weight.into(),
        bias: None,
    }
}

fn filled(shape: &[usize], v: f32) -> ArrayD<f32> {
    ArrayD::from_elem(IxDyn(shape), v)
}

#[test]
fn lenet5_shapes() {
    let mut model = Model::new();
    let net = Network::lenet5(&mut model, 3).unwrap();
    assert_eq!(model.numel(), 431_080);
    let expected = [
        ("conv1.weight", vec![20, 1, 5, 5]),
        ("conv1.bias", vec![20]),
        ("conv2.weight", vec![50, 20, 5, 5]),
        ("conv2.bias", vec![50]),
        ("fc1.weight", vec![500, 800]),
        ("fc1.bias", vec![500]),
        ("fc2.weight", vec![10, 500]),
        ("fc2.bias", vec![10]),
    ];
    for (name, shape) in &expected {
        assert_eq!(model.get(name).unwrap().shape(), &shape[..], "{name}");
    }
    assert_eq!(
        model.get("conv1.weight").unwrap().kind(),
        slimnn::LayerKind::Conv2d
    );
    assert_eq!(
        model.get("fc1.weight").unwrap().kind(),
        slimnn::LayerKind::Linear
    );
    // PyTorch's bound: 1/√(in·kh·kw).
    let bound = 1.0 / 25f32.sqrt();
    let c1 = model.get("conv1.weight").unwrap().value();
    assert!(c1.iter().all(|v| v.abs() <= bound) && c1.iter().any(|v| v.abs() > bound * 0.9));

    assert_eq!(net.input_shape(), Some(&[1, 28, 28][..]));
    assert_eq!(net.inputs(&model).unwrap(), 784);
    let shapes = net.shapes(&model).unwrap();
    assert_eq!(shapes[1], vec![20, 24, 24]);
    assert_eq!(shapes[4], vec![50, 4, 4]);
    assert_eq!(shapes.last().unwrap(), &vec![10]);

    let x = Array2::from_shape_fn((3, 784), |(i, j)| ((i * 784 + j) as f32 * 0.01).sin());
    assert_eq!(net.forward(&model, x.view()).unwrap().dim(), (3, 10));

    let from = Network::lenet5_from(&model).unwrap();
    assert_eq!(from, net);
    // The same seed, the same network.
    let mut again = Model::new();
    Network::lenet5(&mut again, 3).unwrap();
    assert_eq!(
        again.get("fc2.weight").unwrap().value(),
        model.get("fc2.weight").unwrap().value()
    );
    // A model that is not LeNet-5.
    let mut mlp = Model::new();
    Network::lenet_300_100(&mut mlp, 1).unwrap();
    assert!(Network::lenet5_from(&mlp).is_err());
}

/// With a zero Linear weight and one example of ones, `∂loss/∂W[0, j]` is
/// `−½ · factor_j`: the dropout factors, read through the public API.
#[test]
fn dropout_modes() {
    let features = 20_000;
    let p = 0.4f32;
    let mut model = Model::new();
    model.add("fc.weight", filled(&[2, features], 0.0)).unwrap();
    let net = Network::new(vec![Layer::Dropout { p }, linear("fc.weight")]);
    let x = Array2::from_elem((1, features), 1.0f32);
    let y = Array1::from(vec![0u8]);

    // Evaluation mode: the identity.
    let plain = Network::new(vec![linear("fc.weight")]);
    let (l_eval, g_eval) = net.loss_and_gradients(&model, x.view(), y.view()).unwrap();
    let (l_plain, g_plain) = plain
        .loss_and_gradients(&model, x.view(), y.view())
        .unwrap();
    assert_eq!((l_eval, &g_eval), (l_plain, &g_plain));

    let factors = |seed| {
        let (_, g) = net
            .train_gradients(&model, x.view(), y.view(), seed)
            .unwrap();
        g["fc.weight"]
            .slice(s![0, ..])
            .iter()
            .map(|v| v / -0.5)
            .collect::<Vec<f32>>()
    };
    let f = factors(7);
    let dropped = f.iter().filter(|&&v| v == 0.0).count() as f64 / features as f64;
    assert!((dropped - p as f64).abs() < 0.02, "dropped {dropped}");
    assert!(
        f.iter()
            .all(|&v| v == 0.0 || (v - 1.0 / (1.0 - p)).abs() < 1e-5)
    );
    assert_eq!(f, factors(7), "the same seed, the same masks");
    assert_ne!(f, factors(8));
}

#[test]
fn networks_that_do_not_fit_are_typed_errors() {
    let mut m = Model::new();
    m.add("c.weight", filled(&[4, 2, 3, 3], 0.1)).unwrap();
    m.add("g.weight", filled(&[4, 1, 3, 3], 0.1)).unwrap();
    m.add("fc.weight", filled(&[3, 32], 0.1)).unwrap();
    m.add("fc.bias", filled(&[4], 0.0)).unwrap();
    m.add("c.bias", filled(&[5], 0.0)).unwrap();
    let pool = |k| Layer::MaxPool2d {
        kernel: (k, k),
        stride: (2, 2),
    };
    let flat_fc = [Layer::Flatten, linear("fc.weight")];
    let with = |layers: Vec<Layer>, shape: &[usize]| {
        Network::new(layers.into_iter().chain(flat_fc.clone()).collect()).with_input_shape(shape)
    };
    // It fits: [2, 6, 6] → [4, 4, 4] → [4, 2, 2] → 16 ≠ 32, so use [2, 10, 6].
    let ok = with(
        vec![conv("c.weight", ConvSpec::new()), pool(2)],
        &[2, 10, 6],
    );
    ok.check(&m).unwrap();

    let cases: Vec<(&str, Network)> = vec![
        (
            "Linear on a 4-D activation",
            Network::new(vec![linear("fc.weight")]).with_input_shape(&[2, 4, 4]),
        ),
        (
            "conv in-channels",
            with(
                vec![conv("c.weight", ConvSpec::new()), pool(2)],
                &[3, 10, 6],
            ),
        ),
        (
            "groups that do not divide",
            with(
                vec![conv("g.weight", ConvSpec::new().with_groups(3)), pool(2)],
                &[2, 10, 6],
            ),
        ),
        (
            "pool window larger than the input",
            with(
                vec![conv("c.weight", ConvSpec::new()), pool(9)],
                &[2, 10, 6],
            ),
        ),
        (
            "kernel larger than the input",
            with(vec![conv("c.weight", ConvSpec::new())], &[2, 2, 8]),
        ),
        (
            "missing parameter",
            with(
                vec![conv("nope.weight", ConvSpec::new()), pool(2)],
                &[2, 10, 6],
            ),
        ),
        (
            "Linear inputs",
            with(vec![conv("c.weight", ConvSpec::new())], &[2, 10, 6]),
        ),
        (
            "conv on a 2-D activation (no input shape)",
            Network::new(vec![
                conv("c.weight", ConvSpec::new()),
                Layer::Flatten,
                linear("fc.weight"),
            ]),
        ),
        (
            "conv weight of the wrong rank",
            with(vec![conv("fc.weight", ConvSpec::new())], &[2, 10, 6]),
        ),
        (
            "bias of the wrong shape",
            with(
                vec![
                    Layer::Conv2d {
                        weight: "c.weight".into(),
                        bias: Some("c.bias".into()),
                        spec: ConvSpec::new(),
                    },
                    pool(2),
                ],
                &[2, 10, 6],
            ),
        ),
        (
            "output is not [n, classes]",
            Network::new(vec![conv("c.weight", ConvSpec::new())]).with_input_shape(&[2, 10, 6]),
        ),
        (
            "zero stride",
            with(
                vec![conv("c.weight", ConvSpec::new().with_stride(0, 1)), pool(2)],
                &[2, 10, 6],
            ),
        ),
        ("empty input shape", with(vec![], &[])),
        (
            "dropout p = 1",
            with(
                vec![
                    conv("c.weight", ConvSpec::new()),
                    pool(2),
                    Layer::Dropout { p: 1.0 },
                ],
                &[2, 10, 6],
            ),
        ),
        (
            "dropout p < 0",
            with(
                vec![
                    conv("c.weight", ConvSpec::new()),
                    Layer::Dropout { p: -0.5 },
                    pool(2),
                ],
                &[2, 10, 6],
            ),
        ),
        (
            "dropout p NaN",
            with(
                vec![
                    Layer::Dropout { p: f32::NAN },
                    conv("c.weight", ConvSpec::new()),
                    pool(2),
                ],
                &[2, 10, 6],
            ),
        ),
    ];
    let x = Array2::from_elem((2, 120), 0.5f32);
    let y = Array1::from(vec![0u8, 1]);
    for (what, net) in &cases {
        let err = net.check(&m).expect_err(what);
        assert!(
            matches!(
                err,
                Error::ShapeMismatch { .. }
                    | Error::BadShape { .. }
                    | Error::UnknownParameter(_)
                    | Error::InvalidParameter { .. }
            ),
            "{what}: {err}"
        );
        // Every entry point reports it, none panics.
        assert!(net.forward(&m, x.view()).is_err(), "{what}");
        assert!(
            net.loss_and_gradients(&m, x.view(), y.view()).is_err(),
            "{what}"
        );
        assert!(
            net.train_gradients(&m, x.view(), y.view(), 1).is_err(),
            "{what}"
        );
        assert!(net.activation_norms(&m, x.view()).is_err(), "{what}");
    }
    let kind = |i: usize| cases[i].1.check(&m).unwrap_err();
    assert!(matches!(kind(0), Error::BadShape { .. }));
    assert!(matches!(kind(1), Error::ShapeMismatch { .. }));
    assert!(matches!(kind(3), Error::BadShape { .. }));
    assert!(matches!(kind(5), Error::UnknownParameter(_)));
    assert!(matches!(
        kind(13),
        Error::InvalidParameter { name: "p", .. }
    ));

    // A batch of the wrong width, and labels out of range.
    let wrong = Array2::from_elem((2, 119), 0.5f32);
    assert!(matches!(
        ok.forward(&m, wrong.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    let bad_labels = Array1::from(vec![0u8, 3]);
    assert!(
        ok.train_gradients(&m, x.view(), bad_labels.view(), 0)
            .is_err()
    );
    let nan = Array2::from_elem((2, 120), f32::NAN);
    assert!(matches!(
        ok.forward(&m, nan.view()),
        Err(Error::NonFinite { .. })
    ));
}

fn mnist(images: &str, labels: &str, n: usize) -> Dataset {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let full = Dataset::from_idx(dir.join(images), dir.join(labels), 255.0).unwrap();
    Dataset {
        images: full.images.slice(s![..n, ..]).to_owned(),
        labels: full.labels.slice(s![..n]).to_owned(),
        image_shape: full.image_shape.clone(),
    }
}

/// LeNet-5 learns MNIST from 2,000 images in two epochs, deterministically.
#[test]
fn lenet5_trains_on_mnist() {
    let train = mnist(
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        2000,
    );
    let test = mnist(
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        1000,
    );
    let run = || {
        let mut model = Model::new();
        let net = Network::lenet5(&mut model, 1).unwrap();
        let mut sgd = Sgd::new(0.05, 0.9, 1e-4).unwrap();
        for epoch in 0..2 {
            train_epoch(&net, &mut model, &mut sgd, &train, 64, 10 + epoch).unwrap();
        }
        let eval = net.evaluate(&model, &test, 500).unwrap();
        (model, eval)
    };
    let (model, eval) = run();
    assert!(eval.accuracy > 0.85, "test accuracy {}", eval.accuracy);
    let (again, eval_again) = run();
    assert_eq!(eval, eval_again);
    for p in model.params() {
        assert_eq!(
            p.value(),
            again.get(p.name()).unwrap().value(),
            "{}",
            p.name()
        );
    }
}

/// A small residual network with BatchNorm for the 8×8 digits: a conv-BN-ReLU stem (8
/// maps), a residual block with an identity shortcut, one that halves the maps and
/// doubles the channels (projection shortcut), then flatten → fc (16·4·4 → 10).
fn residual_net(model: &mut Model, seed: u64) -> Network {
    let mut layers = ConvBnRelu::new(1, 8, 3)
        .with_padding(1)
        .build(model, "stem", seed)
        .unwrap();
    layers.extend(
        ResidualBlock::new(8, 8)
            .build(model, "layer1", seed + 1)
            .unwrap(),
    );
    layers.extend(
        ResidualBlock::new(8, 16)
            .with_stride(2)
            .build(model, "layer2", seed + 2)
            .unwrap(),
    );
    model
        .add("fc.weight", common::normal(&[10, 256], seed) * 0.06)
        .unwrap();
    model.add("fc.bias", filled(&[10], 0.0)).unwrap();
    layers.extend([
        Layer::Flatten,
        Layer::Linear {
            weight: "fc.weight".into(),
            bias: Some("fc.bias".into()),
        },
    ]);
    let net = Network::new(layers).with_input_shape(&[1, 8, 8]);
    net.check(model).unwrap();
    net
}

/// The constructors' residual + BatchNorm network learns the real 8×8 digits (from 10%
/// chance to over 90%), reproducibly from a seed, and evaluates with the running
/// statistics: an example's output does not depend on the batch it comes in.
#[test]
fn residual_batch_norm_net_trains_on_digits() {
    let (train, test) = common::digits();
    let run = || {
        let mut model = Model::new();
        let net = residual_net(&mut model, 3);
        let before = net.evaluate(&model, &test, 360).unwrap();
        let mut sgd = Sgd::new(0.05, 0.9, 1e-4).unwrap();
        for epoch in 0..4 {
            train_epoch(&net, &mut model, &mut sgd, &train, 32, 20 + epoch).unwrap();
        }
        let after = net.evaluate(&model, &test, 360).unwrap();
        (net, model, before, after)
    };
    let (net, model, before, after) = run();
    assert!(
        before.accuracy < 0.3,
        "untrained accuracy {}",
        before.accuracy
    );
    assert!(after.accuracy > 0.9, "test accuracy {}", after.accuracy);
    let (_, again, _, after_again) = run();
    assert_eq!(after, after_again);
    for p in model.params() {
        assert_eq!(
            p.value(),
            again.get(p.name()).unwrap().value(),
            "{}",
            p.name()
        );
    }

    // Training moved the running statistics away from PyTorch's initial 0 and 1.
    let mean = model
        .get("layer2.shortcut.bn.running_mean")
        .unwrap()
        .value();
    let var = model.get("stem.bn.running_var").unwrap().value();
    assert!(mean.iter().any(|v| v.abs() > 1e-3), "{mean:?}");
    assert!(var.iter().any(|v| (v - 1.0).abs() > 1e-2), "{var:?}");

    // Evaluation mode normalises with them: one example alone or in a batch of 50
    // gives the same logits, batch size 1 and 360 the same accuracy...
    let x = test.images.slice(s![..50, ..]);
    let batch = net.forward(&model, x).unwrap();
    let alone = net.forward(&model, x.slice(s![..1, ..])).unwrap();
    for (a, b) in alone.row(0).iter().zip(batch.row(0)) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    let one_by_one = net.evaluate(&model, &test, 1).unwrap();
    assert_eq!(one_by_one.correct, after.correct);
    assert!((one_by_one.loss - after.loss).abs() < 1e-6);
    // ...and other running statistics give other outputs.
    let mut shifted = model.clone();
    shifted
        .get_mut("stem.bn.running_mean")
        .unwrap()
        .value_mut()
        .mapv_inplace(|v| v + 0.5);
    let moved = net.forward(&shifted, x.slice(s![..1, ..])).unwrap();
    assert!(
        moved
            .iter()
            .zip(alone.iter())
            .any(|(a, b)| (a - b).abs() > 1e-3)
    );
}

/// Bad settings of the BatchNorm constructors are typed errors naming the field, and a
/// failed build leaves the model as it was.
#[test]
fn batch_norm_constructors_reject_bad_input() {
    let invalid = |r: Result<Vec<Layer>, Error>, field: &str| match r {
        Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, field),
        other => panic!("expected an invalid `{field}`, got {other:?}"),
    };
    let mut model = Model::new();
    invalid(
        ConvBnRelu::new(0, 8, 3).build(&mut model, "a", 1),
        "in_channels",
    );
    invalid(
        ConvBnRelu::new(1, 0, 3).build(&mut model, "a", 1),
        "out_channels",
    );
    invalid(ConvBnRelu::new(1, 8, 0).build(&mut model, "a", 1), "kernel");
    invalid(
        ConvBnRelu::new(1, 8, 3)
            .with_stride(0)
            .build(&mut model, "a", 1),
        "stride",
    );
    invalid(
        ConvBnRelu::new(6, 8, 3)
            .with_groups(4)
            .build(&mut model, "a", 1),
        "groups",
    );
    invalid(
        ResidualBlock::new(8, 0).build(&mut model, "r", 1),
        "out_channels",
    );
    invalid(
        ResidualBlock::new(8, 8)
            .with_stride(0)
            .build(&mut model, "r", 1),
        "stride",
    );
    invalid(
        SeparableBlock::new(8, 8, 3)
            .with_batch_norm(true)
            .with_stride(0)
            .build(&mut model, "s", 1),
        "stride",
    );
    assert_eq!(model.len(), 0);

    // A name already in the model: an error, and nothing added (all or nothing, even
    // when the clash is the block's last parameter).
    model
        .add("r.shortcut.bn.running_var", filled(&[16], 1.0))
        .unwrap();
    model
        .add("s.pointwise_bn.running_var", filled(&[8], 1.0))
        .unwrap();
    let names = |m: &Model| {
        m.params()
            .iter()
            .map(|p| p.name().to_string())
            .collect::<Vec<_>>()
    };
    let before = names(&model);
    assert!(
        ResidualBlock::new(8, 16)
            .with_stride(2)
            .build(&mut model, "r", 1)
            .is_err()
    );
    assert!(
        SeparableBlock::new(8, 8, 3)
            .with_batch_norm(true)
            .build(&mut model, "s", 1)
            .is_err()
    );
    assert_eq!(names(&model), before);

    // A kernel larger than the input: the network's check says so.
    let mut model = Model::new();
    let layers = ConvBnRelu::new(1, 4, 9)
        .build(&mut model, "big", 1)
        .unwrap();
    let net = Network::new(layers).with_input_shape(&[1, 8, 8]);
    assert!(net.check(&model).is_err());
}
