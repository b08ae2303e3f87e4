use ndarray::{Array2, Array4, ArrayD, IxDyn};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

use super::*;
use crate::error::Error;
use crate::lowrank::{Factorization, Factors, LowRank, LowRankContext};
use crate::model::{LayerKind, Model, Selector};
use crate::nn::{ConvSpec, Layer, Network, conv2d};

fn uniform(rng: &mut Xoshiro256PlusPlus) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
}

fn random4(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    Array4::from_shape_simple_fn(shape, || uniform(&mut rng))
}

fn sq_dist(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum()
}

/// The discarded singular values of each channel's `[out, kh·kw]` slice, squared and
/// summed, by faer directly (not through the crate's SVD wrapper).
fn tail_energy(w: &Array4<f32>) -> f64 {
    let (o, c, kh, kw) = w.dim();
    (0..c)
        .map(|ci| {
            let m = faer::Mat::<f64>::from_fn(o, kh * kw, |i, j| w[[i, ci, j / kw, j % kw]] as f64);
            let s = m.as_ref().singular_values().unwrap();
            s[1..].iter().map(|v| v * v).sum::<f64>()
        })
        .sum()
}

#[test]
fn depthwise_separable_error_is_the_tail_of_each_channels_svd() {
    for (shape, seed) in [((6, 4, 3, 3), 1), ((12, 3, 5, 5), 2), ((3, 5, 2, 3), 3)] {
        let w = random4(shape, seed);
        let f = DepthwiseSeparable::new()
            .factorize(&w.clone().into_dyn(), &LowRankContext::new())
            .unwrap();
        let err = sq_dist(&f.reconstruct(), &w.clone().into_dyn());
        let tail = tail_energy(&w);
        assert!(
            (err - tail).abs() <= 1e-5 * (1.0 + tail),
            "{shape:?}: {err} vs {tail}"
        );
        let total: f64 = w.iter().map(|&v| (v as f64).powi(2)).sum();
        let rel = f.relative_error().unwrap();
        assert!((rel - (tail / total).sqrt()).abs() < 1e-6, "{rel}");
        let (o, c, kh, kw) = shape;
        assert_eq!(f.params(), c * kh * kw + o * c);
        assert_eq!(f.flops(), c * kh * kw + o * c);
        assert_eq!(f.ranks(), vec![1]);
    }
}

#[test]
fn no_other_depthwise_separable_pair_is_closer() {
    let w = random4((8, 3, 3, 3), 7).into_dyn();
    let f = DepthwiseSeparable::new()
        .factorize(&w, &LowRankContext::new())
        .unwrap();
    let best = sq_dist(&f.reconstruct(), &w);
    let Factors::DepthwiseSeparable {
        depthwise,
        pointwise,
    } = f.factors().clone()
    else {
        panic!("depthwise-separable factors");
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    for trial in 0..200 {
        // Random pairs, and the optimum perturbed (least squares fits of one factor
        // given the other cannot beat it either).
        let (d, p) = if trial % 2 == 0 {
            (
                random4((3, 1, 3, 3), trial),
                random4((8, 3, 1, 1), trial + 1000),
            )
        } else {
            let eps = 0.05 * (trial as f32 / 200.0);
            (
                depthwise.mapv(|v| v + eps * uniform(&mut rng)),
                pointwise.mapv(|v| v + eps * uniform(&mut rng)),
            )
        };
        let other = Factorization::new(
            &[8, 3, 3, 3],
            Factors::DepthwiseSeparable {
                depthwise: d,
                pointwise: p,
            },
        )
        .unwrap();
        let err = sq_dist(&other.reconstruct(), &w);
        assert!(err >= best - 1e-5, "trial {trial}: {err} < {best}");
    }
}

#[test]
fn depthwise_separable_forward_is_two_convolutions_with_the_layers_spec() {
    let w = random4((6, 4, 3, 3), 5);
    let x = random4((2, 4, 9, 8), 6);
    for spec in [
        ConvSpec::new(),
        ConvSpec::new().with_stride(2, 1).with_padding(1, 2),
    ] {
        let ctx = LowRankContext::new().with_conv(spec);
        let f = DepthwiseSeparable::new()
            .factorize(&w.clone().into_dyn(), &ctx)
            .unwrap();
        assert_eq!(f.conv_spec(), spec);
        let y = f.forward(&x.clone().into_dyn()).unwrap();
        let r = f.reconstruct().into_dimensionality().unwrap();
        let want = conv2d(&x, &r, None, spec).unwrap().into_dyn();
        assert_eq!(y.shape(), want.shape());
        for (a, b) in y.iter().zip(want.iter()) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}

#[test]
fn depthwise_separable_conversion_rejects_what_is_not_a_conv() {
    let method = DepthwiseSeparable::new();
    let linear = ArrayD::<f32>::ones(IxDyn(&[4, 6]));
    let ctx = LowRankContext {
        name: Some("fc.weight"),
        kind: Some(LayerKind::Linear),
        ..LowRankContext::default()
    };
    assert!(matches!(
        method.factorize(&linear, &ctx),
        Err(Error::WrongKind { .. })
    ));
    assert!(matches!(
        method.factorize(&linear, &LowRankContext::new()),
        Err(Error::BadShape { .. })
    ));
    let conv = random4((4, 2, 3, 3), 1).into_dyn();
    let grouped = LowRankContext::new().with_conv(ConvSpec::new().with_groups(2));
    assert!(matches!(
        method.factorize(&conv, &grouped),
        Err(Error::InvalidParameter { name: "groups", .. })
    ));
    let mut nan = conv.clone();
    nan[[0, 0, 0, 0]] = f32::NAN;
    assert!(method.factorize(&nan, &LowRankContext::new()).is_err());
    let empty = ArrayD::<f32>::zeros(IxDyn(&[0, 2, 3, 3]));
    assert!(method.factorize(&empty, &LowRankContext::new()).is_err());
    // Bad hand-made factors.
    assert!(
        Factorization::new(
            &[4, 2, 3, 3],
            Factors::DepthwiseSeparable {
                depthwise: Array4::zeros((2, 1, 3, 2)),
                pointwise: Array4::zeros((4, 2, 1, 1)),
            },
        )
        .is_err()
    );
}

/// conv(3 → 6, 3×3, pad 1, stride 2, bias) → ReLU → conv(6 → 4, 3×3) → flatten → fc.
fn small_net(model: &mut Model) -> Network {
    model
        .add_param(
            "c1.weight",
            LayerKind::Conv2d,
            crate::model::DType::F32,
            random4((6, 3, 3, 3), 1).into_dyn(),
        )
        .unwrap();
    model
        .add_param(
            "c1.bias",
            LayerKind::Bias,
            crate::model::DType::F32,
            ArrayD::from_elem(IxDyn(&[6]), 0.1),
        )
        .unwrap();
    model
        .add_param(
            "c2.weight",
            LayerKind::Conv2d,
            crate::model::DType::F32,
            random4((4, 6, 3, 3), 2).into_dyn(),
        )
        .unwrap();
    let fc = Array2::from_shape_fn((5, 4 * 2 * 2), |(i, j)| ((i * 7 + j) as f32).sin() * 0.1);
    model.add("fc.weight", fc.into_dyn()).unwrap();
    Network::new(vec![
        Layer::Conv2d {
            weight: "c1.weight".into(),
            bias: Some("c1.bias".into()),
            spec: ConvSpec::new().with_stride(2, 2).with_padding(1, 1),
        },
        Layer::Relu,
        Layer::Conv2d {
            weight: "c2.weight".into(),
            bias: None,
            spec: ConvSpec::new(),
        },
        Layer::Flatten,
        Layer::Linear {
            weight: "fc.weight".into(),
            bias: None,
        },
    ])
    .with_input_shape(&[3, 8, 8])
}

fn snapshot(model: &Model) -> Vec<(String, ArrayD<f32>)> {
    model
        .params()
        .iter()
        .map(|p| (p.name().to_string(), p.effective()))
        .collect()
}

fn batch() -> Array2<f32> {
    Array2::from_shape_fn((3, 3 * 64), |(i, j)| {
        ((i * 131 + j * 17) as f32 * 0.13).sin()
    })
}

#[test]
fn converted_network_runs_separable_layers_with_the_factorized_outputs() {
    let mut model = Model::new();
    let net = small_net(&mut model);
    let x = batch();
    // Reference: the factorized weights as dense values, through the original layers.
    let mut reference = model.clone();
    for (name, spec) in [
        (
            "c1.weight",
            ConvSpec::new().with_stride(2, 2).with_padding(1, 1),
        ),
        ("c2.weight", ConvSpec::new()),
    ] {
        let ctx = LowRankContext::new().with_conv(spec);
        let f = DepthwiseSeparable::new()
            .factorize(&reference.get(name).unwrap().effective(), &ctx)
            .unwrap();
        reference
            .get_mut(name)
            .unwrap()
            .set_factorization(f)
            .unwrap();
    }
    let want = net.forward(&reference, x.view()).unwrap();

    let (sep, report) = net
        .convert_depthwise_separable(&mut model, &Selector::glob("c*.weight"))
        .unwrap();
    assert_eq!(report.layers.len(), 2);
    assert_eq!(sep.layers().len(), net.layers().len() + 2);
    assert!(!model.contains("c1.weight") && !model.contains("c2.weight"));
    assert_eq!(
        model.get("c1.depthwise.weight").unwrap().shape(),
        [3, 1, 3, 3]
    );
    assert_eq!(
        model.get("c2.pointwise.weight").unwrap().shape(),
        [4, 6, 1, 1]
    );
    let Layer::Conv2d { spec, .. } = &sep.layers()[0] else {
        panic!("depthwise first");
    };
    assert_eq!(
        *spec,
        ConvSpec::new()
            .with_stride(2, 2)
            .with_padding(1, 1)
            .with_groups(3)
    );
    let got = sep.forward(&model, x.view()).unwrap();
    for (a, b) in got.iter().zip(want.iter()) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    // It trains: gradients for the new parameters.
    let labels = ndarray::Array1::from(vec![0u8, 1, 2]);
    let (_, grads) = sep
        .loss_and_gradients(&model, x.view(), labels.view())
        .unwrap();
    for name in [
        "c1.depthwise.weight",
        "c1.pointwise.weight",
        "c2.depthwise.weight",
        "c2.pointwise.weight",
        "c1.bias",
    ] {
        assert!(grads.contains_key(name), "{name}");
    }
}

#[test]
fn a_pipeline_step_then_the_split_gives_the_same_network() {
    let mut model = Model::new();
    let net = small_net(&mut model);
    let mut stepped = model.clone();
    // The pipeline's `dwsep` step records no stride or padding: the split takes the
    // layers' own.
    let step = crate::pipeline::spec::lowrank_step("dwsep@c2.weight").unwrap();
    let report = crate::pipeline::Pipeline::new()
        .then(step)
        .run(&mut stepped)
        .unwrap();
    let row = report
        .params
        .iter()
        .find(|p| p.name == "c2.weight")
        .unwrap();
    assert_eq!((row.dense_flops, row.effective_flops), (216, 6 * 9 + 4 * 6));
    let split = net.split_depthwise_separable(&mut stepped).unwrap();
    let (converted, _) = net
        .convert_depthwise_separable(&mut model, &Selector::glob("c2.weight"))
        .unwrap();
    assert_eq!(split, converted);
    let x = batch();
    assert_eq!(
        split.forward(&stepped, x.view()).unwrap(),
        converted.forward(&model, x.view()).unwrap()
    );
    // Stored and read back.
    let bytes = crate::store::to_bytes(&stepped).unwrap();
    assert!(crate::store::from_bytes(&bytes).is_ok());
}

#[test]
fn conversion_of_a_non_conv_or_grouped_layer_changes_nothing() {
    let mut model = Model::new();
    let net = small_net(&mut model);
    let before = model.clone();
    for sel in ["fc.weight", "c1.bias", "c*.weight,fc.weight"] {
        let e = net
            .convert_depthwise_separable(&mut model, &Selector::parse(sel).unwrap())
            .unwrap_err();
        assert!(matches!(e, Error::WrongKind { .. }), "{sel}: {e}");
        assert_eq!(snapshot(&model), snapshot(&before));
    }
    let mut model = Model::new();
    model
        .add("g.weight", random4((4, 2, 3, 3), 3).into_dyn())
        .unwrap();
    model
        .add("fc.weight", ArrayD::from_elem(IxDyn(&[2, 4 * 4 * 4]), 0.1))
        .unwrap();
    let grouped = Network::new(vec![
        Layer::Conv2d {
            weight: "g.weight".into(),
            bias: None,
            spec: ConvSpec::new().with_groups(2),
        },
        Layer::Flatten,
        Layer::Linear {
            weight: "fc.weight".into(),
            bias: None,
        },
    ])
    .with_input_shape(&[4, 6, 6]);
    grouped.check(&model).unwrap();
    let before = model.clone();
    let e = grouped
        .convert_depthwise_separable(&mut model, &Selector::glob("g.weight"))
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidParameter { name: "groups", .. }),
        "{e}"
    );
    assert_eq!(snapshot(&model), snapshot(&before));
}

/// Central finite differences of `loss_at(i, δ)` for every entry `i`, against `analytic`.
/// (Steps of 10⁻³: a bias moves every position of its channel, and a larger step
/// crosses ReLU and max-pooling kinks.)
fn check_numeric(what: &str, analytic: &[f32], loss_at: impl Fn(usize, f32) -> f32) {
    let eps = 1e-3f32;
    for (i, &a) in analytic.iter().enumerate() {
        let numeric = (loss_at(i, eps) - loss_at(i, -eps)) / (2.0 * eps);
        assert!(
            (numeric - a).abs() < 2e-3 + 1e-2 * a.abs(),
            "{what}[{i}]: numeric {numeric} vs analytic {a}"
        );
    }
}

#[test]
fn crelu_gives_both_signs_on_the_channel_axis() {
    let x = Array4::from_shape_fn((2, 3, 2, 2), |(a, b, c, d)| {
        ((a * 12 + b * 4 + c * 2 + d) as f32 * 0.9).sin()
    })
    .into_dyn();
    let y = crelu(&x).unwrap();
    assert_eq!(y.shape(), [2, 6, 2, 2]);
    for ((a, b, c, d), &v) in x
        .view()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap()
        .indexed_iter()
    {
        assert_eq!(y[[a, b, c, d]], v.max(0.0));
        assert_eq!(y[[a, b + 3, c, d]], (-v).max(0.0));
    }
    assert!(matches!(
        crelu(&ArrayD::<f32>::zeros(IxDyn(&[4]))),
        Err(Error::BadShape { .. })
    ));
    assert!(crelu_backward(&x, &ArrayD::zeros(IxDyn(&[2, 3, 2, 2]))).is_err());
}

#[test]
fn crelu_backward_matches_finite_differences() {
    // No entry near the kink at 0.
    let x = Array2::from_shape_fn((3, 4), |(i, j)| {
        let v = ((i * 4 + j) as f32 * 1.3).sin();
        if v.abs() < 0.1 { 0.5 } else { v }
    })
    .into_dyn();
    let g = Array2::from_shape_fn((3, 8), |(i, j)| ((i * 8 + j) as f32 * 0.7).cos()).into_dyn();
    let loss =
        |x: &ArrayD<f32>| -> f32 { crelu(x).unwrap().iter().zip(&g).map(|(a, b)| a * b).sum() };
    let dx = crelu_backward(&x, &g).unwrap();
    check_numeric("x", dx.as_slice().unwrap(), |i, delta| {
        let mut x2 = x.clone();
        x2.as_slice_mut().unwrap()[i] += delta;
        loss(&x2)
    });
}

#[test]
fn tied_bank_backward_is_the_adjoint_of_the_bank() {
    let chosen = Transforms::new(vec![
        Transform::FlipVertical,
        Transform::Rotate180,
        Transform::Identity,
    ])
    .unwrap();
    for (transforms, (kh, kw)) in [
        (Transforms::flips(), (3, 2)),
        (Transforms::rotations(), (3, 3)),
        (chosen, (2, 3)),
    ] {
        let base = random4((3, 2, kh, kw), 4);
        let g = random4((3 * transforms.len(), 2, kh, kw), 5);
        let bank = tied_bank(&base, &transforms).unwrap();
        let back = tied_bank_backward(&g, &transforms).unwrap();
        assert_eq!(back.dim(), base.dim());
        let lhs: f64 = bank.iter().zip(&g).map(|(a, b)| (a * b) as f64).sum();
        let rhs: f64 = base.iter().zip(&back).map(|(a, b)| (a * b) as f64).sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
        // The identity's channels are the base filters themselves.
        if let Some(j) = transforms
            .as_slice()
            .iter()
            .position(|&t| t == Transform::Identity)
        {
            assert_eq!(
                bank.slice(ndarray::s![j * 3..(j + 1) * 3, .., .., ..]),
                base
            );
        }
    }
    // Four quarter turns are the identity; a flip twice too.
    let base = random4((1, 1, 3, 3), 9);
    let mut r = base.clone();
    let quarter = Transforms::new(vec![Transform::Rotate90]).unwrap();
    for _ in 0..4 {
        r = tied_bank(&r, &quarter).unwrap();
    }
    assert_eq!(r, base);
    let flip = Transforms::new(vec![Transform::FlipHorizontal]).unwrap();
    assert_eq!(
        tied_bank(&tied_bank(&base, &flip).unwrap(), &flip).unwrap(),
        base
    );
}

/// [2, 6, 6] → tied bank (2 base filters 3×3, 4 rotations, pad 1, bias) → CReLU →
/// max-pool → flatten → Linear 3.
fn tied_net(model: &mut Model) -> Network {
    model
        .add_param(
            "t.weight",
            LayerKind::Conv2d,
            crate::model::DType::F32,
            random4((2, 2, 3, 3), 21).mapv(|v| v * 0.5).into_dyn(),
        )
        .unwrap();
    model
        .add(
            "t.bias",
            ArrayD::from_shape_fn(IxDyn(&[8]), |i| i[0] as f32 * 0.01),
        )
        .unwrap();
    model
        .add(
            "fc.weight",
            Array2::from_shape_fn((3, 16 * 9), |(i, j)| {
                ((i * 144 + j) as f32 * 0.3).sin() * 0.2
            })
            .into_dyn(),
        )
        .unwrap();
    Network::new(vec![
        Layer::TiedConv2d {
            weight: "t.weight".into(),
            bias: Some("t.bias".into()),
            spec: ConvSpec::new().with_padding(1, 1),
            transforms: Transforms::rotations(),
        },
        Layer::CRelu,
        Layer::MaxPool2d {
            kernel: (2, 2),
            stride: (2, 2),
        },
        Layer::Flatten,
        Layer::Linear {
            weight: "fc.weight".into(),
            bias: None,
        },
    ])
    .with_input_shape(&[2, 6, 6])
}

#[test]
fn tied_bank_and_crelu_gradients_match_finite_differences() {
    let mut model = Model::new();
    let net = tied_net(&mut model);
    assert_eq!(
        net.shapes(&model).unwrap(),
        vec![
            vec![2, 6, 6],
            vec![8, 6, 6],
            vec![16, 6, 6],
            vec![16, 3, 3],
            vec![144],
            vec![3]
        ]
    );
    let x = Array2::from_shape_fn((4, 72), |(i, j)| ((i * 72 + j) as f32 * 0.37).sin());
    let y = ndarray::Array1::from(vec![0u8, 2, 1, 1]);
    let (_, grads) = net.loss_and_gradients(&model, x.view(), y.view()).unwrap();
    assert_eq!(grads["t.weight"].shape(), [2, 2, 3, 3]);
    for (name, g) in &grads {
        check_numeric(name, g.as_slice().unwrap(), |i, delta| {
            let mut m = model.clone();
            m.get_mut(name).unwrap().value_mut().as_slice_mut().unwrap()[i] += delta;
            net.loss_and_gradients(&m, x.view(), y.view()).unwrap().0
        });
    }
    // The forward pass is the dense convolution with the full bank.
    let bank = tied_bank(
        &model
            .get("t.weight")
            .unwrap()
            .value()
            .view()
            .into_dimensionality()
            .unwrap(),
        &Transforms::rotations(),
    )
    .unwrap();
    let mut dense = model.clone();
    dense.remove("t.weight").unwrap();
    dense.add("t.weight", bank.into_dyn()).unwrap();
    let mut layers = net.layers().to_vec();
    layers[0] = Layer::Conv2d {
        weight: "t.weight".into(),
        bias: Some("t.bias".into()),
        spec: ConvSpec::new().with_padding(1, 1),
    };
    let dense_net = Network::new(layers).with_input_shape(&[2, 6, 6]);
    let (a, b) = (
        net.forward(&model, x.view()).unwrap(),
        dense_net.forward(&dense, x.view()).unwrap(),
    );
    for (a, b) in a.iter().zip(&b) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn tied_bank_bad_input_is_a_typed_error() {
    assert!(Transforms::new(vec![]).is_err());
    assert!(Transforms::new(vec![Transform::Rotate90, Transform::Rotate90]).is_err());
    let rect = random4((2, 1, 3, 2), 1);
    assert!(matches!(
        tied_bank(&rect, &Transforms::rotations()),
        Err(Error::BadShape { .. })
    ));
    assert!(tied_bank(&rect, &Transforms::flips()).is_ok());
    assert!(tied_bank_backward(&random4((3, 1, 3, 3), 1), &Transforms::flips()).is_err());
    // In a network: non-square kernel with rotations, groups, bias and channel mismatches.
    let mut model = Model::new();
    let net = tied_net(&mut model);
    let with = |f: &dyn Fn(&mut Layer)| {
        let mut layers = net.layers().to_vec();
        f(&mut layers[0]);
        Network::new(layers).with_input_shape(&[2, 6, 6])
    };
    let grouped = with(&|l| {
        if let Layer::TiedConv2d { spec, .. } = l {
            *spec = spec.with_groups(2);
        }
    });
    assert!(matches!(
        grouped.check(&model),
        Err(Error::InvalidParameter { name: "groups", .. })
    ));
    let flips = with(&|l| {
        if let Layer::TiedConv2d { transforms, .. } = l {
            *transforms = Transforms::flips();
        }
    });
    assert!(flips.check(&model).is_err(), "bias [8] for 4 outputs");
    let mut rect_model = model.clone();
    rect_model.remove("t.weight").unwrap();
    rect_model
        .add("t.weight", random4((2, 2, 3, 1), 2).into_dyn())
        .unwrap();
    assert!(matches!(
        net.check(&rect_model),
        Err(Error::BadShape { .. })
    ));
    let x = Array2::<f32>::zeros((1, 72));
    assert!(net.forward(&rect_model, x.view()).is_err());
    let wide = Network::new(net.layers().to_vec()).with_input_shape(&[3, 6, 6]);
    assert!(matches!(
        wide.check(&model),
        Err(Error::ShapeMismatch { .. })
    ));
    let tiny = Network::new(net.layers().to_vec()).with_input_shape(&[2, 1, 1]);
    assert!(
        tiny.check(&model).is_err(),
        "a 3×3 kernel on 1×1 (+ padding 1 fits; pooling does not)"
    );
}

#[test]
fn costs_count_factorized_split_and_tied_layers() {
    let mut model = Model::new();
    let net = Network::lenet5(&mut model, 3).unwrap();
    let dense = net.costs(&model).unwrap();
    assert_eq!(dense.layers.len(), net.layers().len());
    assert_eq!(dense.conv_macs(), 24 * 24 * 500 + 8 * 8 * 25_000);
    // Factorized in place (a pipeline step) and split into real layers: the same counts.
    let mut factorized = model.clone();
    factorized
        .factorize(&Selector::glob("conv2.weight"), &DepthwiseSeparable::new())
        .unwrap();
    let in_place = net.costs(&factorized).unwrap();
    let (split, _) = net
        .convert_depthwise_separable(&mut model, &Selector::glob("conv2.weight"))
        .unwrap();
    let split = split.costs(&model).unwrap();
    for cost in [&in_place, &split] {
        assert_eq!(cost.conv_params(), 520 + 500 + 1_000 + 50);
        assert_eq!(cost.conv_macs(), 24 * 24 * 500 + 8 * 8 * 1_500);
        assert_eq!(cost.params(), dense.params() - 25_000 + 1_500);
    }
    // A tied bank stores its base filters and runs the whole bank.
    let mut model = Model::new();
    let tied = tied_net(&mut model).costs(&model).unwrap();
    assert_eq!(
        tied.layers[0],
        LayerCost {
            params: 36 + 8,
            macs: 8 * 18 * 36,
            conv_params: 36 + 8,
            conv_macs: 8 * 18 * 36,
        }
    );
    assert_eq!(tied.layers[1], LayerCost::default(), "CReLU");
    // A parameter used twice is counted once.
    let twice = Network::new(vec![
        Layer::Linear {
            weight: "w".into(),
            bias: None,
        },
        Layer::Linear {
            weight: "w".into(),
            bias: None,
        },
    ]);
    let mut model = Model::new();
    model
        .add("w", ArrayD::from_elem(IxDyn(&[4, 4]), 0.5))
        .unwrap();
    let cost = twice.costs(&model).unwrap();
    assert_eq!(
        (cost.params(), cost.macs(), cost.conv_params()),
        (16, 32, 0)
    );
    // A network that does not fit its model is an error.
    model.remove("w").unwrap();
    assert!(twice.costs(&model).is_err());
}

#[test]
fn separable_block_builds_named_layers_or_nothing() {
    let mut model = Model::new();
    let block = SeparableBlock::new(4, 6, 3).with_stride(2).with_padding(1);
    let mut layers = block.build(&mut model, "b", 1).unwrap();
    assert_eq!(layers.len(), 3);
    let names: Vec<&str> = model.params().iter().map(|p| p.name()).collect();
    assert_eq!(
        names,
        [
            "b.depthwise.weight",
            "b.depthwise.bias",
            "b.pointwise.weight",
            "b.pointwise.bias"
        ]
    );
    layers.push(Layer::Flatten);
    let net = Network::new(layers).with_input_shape(&[4, 8, 8]);
    assert_eq!(
        net.shapes(&model).unwrap(),
        vec![
            vec![4, 8, 8],
            vec![4, 4, 4],
            vec![4, 4, 4],
            vec![6, 4, 4],
            vec![96]
        ]
    );
    let cost = net.costs(&model).unwrap();
    assert_eq!(cost.conv_params(), 36 + 4 + 24 + 6);
    assert_eq!(cost.conv_macs(), 16 * 36 + 16 * 24);
    // Reproducible from the seed.
    let mut again = Model::new();
    block.build(&mut again, "b", 1).unwrap();
    assert_eq!(snapshot(&again), snapshot(&model));
    // Bad input: nothing added.
    let before = snapshot(&model);
    for bad in [
        SeparableBlock::new(0, 6, 3),
        SeparableBlock::new(4, 0, 3),
        SeparableBlock::new(4, 6, 0),
        SeparableBlock::new(4, 6, 3).with_stride(0),
    ] {
        assert!(matches!(
            bad.build(&mut model, "c", 1),
            Err(Error::InvalidParameter { .. })
        ));
    }
    assert!(block.build(&mut model, "b", 2).is_err(), "names taken");
    assert_eq!(snapshot(&model), before);
    // A kernel that does not fit the input: the network check says so.
    let mut model = Model::new();
    let mut layers = SeparableBlock::new(2, 2, 5)
        .build(&mut model, "k", 1)
        .unwrap();
    layers.push(Layer::Flatten);
    let net = Network::new(layers).with_input_shape(&[2, 3, 3]);
    assert!(matches!(net.check(&model), Err(Error::BadShape { .. })));
    // Channels that do not divide the groups.
    let wrong = Network::new(net.layers().to_vec()).with_input_shape(&[3, 8, 8]);
    assert!(wrong.check(&model).is_err());
}

/// [3, 5, 5] → fire (squeeze 2, expand 3 + 2) → flatten → Linear 3.
fn fire_net(model: &mut Model) -> Network {
    let mut layers = FireModule::new(3, 2, 3, 2).build(model, "fire", 4).unwrap();
    model
        .add(
            "fc.weight",
            Array2::from_shape_fn((3, 5 * 25), |(i, j)| {
                ((i * 125 + j) as f32 * 0.41).sin() * 0.3
            })
            .into_dyn(),
        )
        .unwrap();
    layers.extend([
        Layer::Flatten,
        Layer::Linear {
            weight: "fc.weight".into(),
            bias: None,
        },
    ]);
    Network::new(layers).with_input_shape(&[3, 5, 5])
}

#[test]
fn fire_module_shapes_costs_and_gradients() {
    let mut model = Model::new();
    let net = fire_net(&mut model);
    assert_eq!(
        net.shapes(&model).unwrap(),
        vec![
            vec![3, 5, 5],
            vec![2, 5, 5],
            vec![2, 5, 5],
            vec![5, 5, 5],
            vec![5, 5, 5],
            vec![125],
            vec![3]
        ]
    );
    let names: Vec<&str> = model.params().iter().map(|p| p.name()).collect();
    assert_eq!(
        names,
        [
            "fire.squeeze.weight",
            "fire.squeeze.bias",
            "fire.expand1x1.weight",
            "fire.expand1x1.bias",
            "fire.expand3x3.weight",
            "fire.expand3x3.bias",
            "fc.weight"
        ]
    );
    let cost = net.costs(&model).unwrap();
    assert_eq!(cost.conv_params(), (6 + 2) + (6 + 3) + (36 + 2));
    assert_eq!(cost.conv_macs(), 25 * (6 + 6 + 36));
    assert_eq!(cost.macs(), cost.conv_macs() + 375);
    let x = Array2::from_shape_fn((3, 75), |(i, j)| ((i * 75 + j) as f32 * 0.29).sin());
    let y = ndarray::Array1::from(vec![2u8, 0, 1]);
    let (_, grads) = net.loss_and_gradients(&model, x.view(), y.view()).unwrap();
    assert_eq!(grads.len(), 7);
    for (name, g) in &grads {
        check_numeric(name, g.as_slice().unwrap(), |i, delta| {
            let mut m = model.clone();
            m.get_mut(name).unwrap().value_mut().as_slice_mut().unwrap()[i] += delta;
            net.loss_and_gradients(&m, x.view(), y.view()).unwrap().0
        });
    }
    // Bad input: nothing added.
    let before = snapshot(&model);
    assert!(
        FireModule::new(3, 0, 3, 2)
            .build(&mut model, "f2", 1)
            .is_err()
    );
    assert!(
        FireModule::new(3, 2, 3, 2)
            .build(&mut model, "fire", 1)
            .is_err()
    );
    assert_eq!(snapshot(&model), before);
}

#[test]
fn conversion_reaches_convolutions_inside_blocks() {
    let mut model = Model::new();
    let net = fire_net(&mut model);
    let x = Array2::from_shape_fn((2, 75), |(i, j)| ((i * 75 + j) as f32 * 0.23).cos());
    let mut reference = model.clone();
    let ctx = LowRankContext::new().with_conv(ConvSpec::new().with_padding(1, 1));
    let f = DepthwiseSeparable::new()
        .factorize(
            &reference.get("fire.expand3x3.weight").unwrap().effective(),
            &ctx,
        )
        .unwrap();
    reference
        .get_mut("fire.expand3x3.weight")
        .unwrap()
        .set_factorization(f)
        .unwrap();
    let want = net.forward(&reference, x.view()).unwrap();
    let (sep, report) = net
        .convert_depthwise_separable(&mut model, &Selector::glob("fire.expand3x3.weight"))
        .unwrap();
    assert_eq!(report.layers.len(), 1);
    let Layer::Concat { branches } = &sep.layers()[2] else {
        panic!("the fire module's concat");
    };
    assert_eq!(branches[1].len(), 2, "depthwise + pointwise");
    let got = sep.forward(&model, x.view()).unwrap();
    for (a, b) in got.iter().zip(want.iter()) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    assert_eq!(
        sep.costs(&model).unwrap().conv_params(),
        (6 + 2) + (6 + 3) + (2 * 9 + 2 * 2 + 2)
    );
}
