//! BatchNorm folding: the folded layer computes what the layer and the BatchNorm
//! computed (property tests over shapes, groups, strides, padding, biases), the network
//! rewrite, and bad input leaving the model unchanged.

use ndarray::Array2;
use proptest::prelude::*;

use super::tests::wave;
use super::*;
use crate::Selector;
use crate::error::Error;
use crate::model::Model;
use crate::prune::MagnitudePruner;
use crate::quant::{KMeansInit, KMeansQuantizer};

/// Adds a BatchNorm's four parameters under `prefix`: γ of both signs, variances
/// spread over [0.01, 2.5).
fn add_bn(model: &mut Model, prefix: &str, c: usize, s: f32) {
    model
        .add(format!("{prefix}.weight"), wave(&[c], s) * 2.0 + 0.1)
        .unwrap();
    model
        .add(format!("{prefix}.bias"), wave(&[c], s * 1.3))
        .unwrap();
    model
        .add(format!("{prefix}.running_mean"), wave(&[c], s * 0.7) * 0.5)
        .unwrap();
    model
        .add(
            format!("{prefix}.running_var"),
            wave(&[c], s * 1.9).mapv(|v| v * v * 3.5 + 0.01),
        )
        .unwrap();
}

fn assert_close(a: &Array2<f32>, b: &Array2<f32>) -> std::result::Result<(), TestCaseError> {
    prop_assert_eq!(a.dim(), b.dim());
    for (x, y) in a.iter().zip(b) {
        prop_assert!(
            (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
            "{} vs {} (difference {})",
            x,
            y,
            (x - y).abs()
        );
    }
    Ok(())
}

/// A convolution case: shapes, geometry, whether the layer has a bias.
#[derive(Debug, Clone)]
struct ConvCase {
    n: usize,
    groups: usize,
    cin: usize,
    cout: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    size: (usize, usize),
    bias: bool,
    s: f32,
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..=3, 1usize..=3, 1usize..=3, 1usize..=3),
        (1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2),
        (0usize..=1, 0usize..=1, 0usize..=3, 0usize..=3),
        (any::<bool>(), 0.1f32..3.0),
    )
        .prop_map(
            |((n, groups, cin_g, cout_g), (kh, kw, sh, sw), (ph, pw, eh, ew), (bias, s))| {
                ConvCase {
                    n,
                    groups,
                    cin: groups * cin_g,
                    cout: groups * cout_g,
                    kernel: (kh, kw),
                    stride: (sh, sw),
                    padding: (ph.min(kh / 2), pw.min(kw / 2)),
                    size: (kh + eh, kw + ew),
                    bias,
                    s,
                }
            },
        )
}

/// The case's model, and its convolution layer.
fn conv_model(t: &ConvCase) -> (Model, Layer) {
    let mut model = Model::new();
    let (kh, kw) = t.kernel;
    model
        .add(
            "conv.weight",
            wave(&[t.cout, t.cin / t.groups, kh, kw], t.s * 0.61),
        )
        .unwrap();
    if t.bias {
        model.add("conv.bias", wave(&[t.cout], t.s * 0.29)).unwrap();
    }
    add_bn(&mut model, "bn", t.cout, t.s);
    let layer = Layer::Conv2d {
        weight: "conv.weight".into(),
        bias: t.bias.then(|| "conv.bias".into()),
        spec: ConvSpec {
            stride: t.stride,
            padding: t.padding,
            groups: t.groups,
        },
    };
    (model, layer)
}

proptest! {
    /// conv → BatchNorm (evaluation mode) equals the folded conv.
    #[test]
    fn a_folded_convolution_computes_conv_then_batch_norm(t in conv_case()) {
        let (mut model, conv) = conv_model(&t);
        let shape = [t.cin, t.size.0, t.size.1];
        let before = Network::new(vec![conv.clone(), Layer::batch_norm("bn"), Layer::Flatten])
            .with_input_shape(&shape);
        let features: usize = shape.iter().product();
        let x = Array2::from_shape_fn((t.n, features), |(i, j)| {
            ((i * features + j) as f32 * 0.37 * t.s).sin() * 2.0
        });
        let want = before.forward(&model, x.view()).unwrap();

        let bias = t.bias.then_some("conv.bias");
        let fold = model
            .fold_batch_norm("conv.weight", bias, &BatchNormNames::new("bn"))
            .unwrap();
        prop_assert_eq!(fold.bias_created, !t.bias);
        prop_assert_eq!(&fold.bias, "conv.bias");
        prop_assert_eq!(model.len(), 2);
        let Layer::Conv2d { weight, spec, .. } = conv else { unreachable!() };
        let after = Network::new(vec![
            Layer::Conv2d { weight, bias: Some("conv.bias".into()), spec },
            Layer::Flatten,
        ])
        .with_input_shape(&shape);
        assert_close(&after.forward(&model, x.view()).unwrap(), &want)?;
    }

    /// Linear → BatchNorm1d (evaluation mode) equals the folded Linear.
    #[test]
    fn a_folded_linear_layer_computes_linear_then_batch_norm(
        n in 1usize..=4, inputs in 1usize..=9, outputs in 1usize..=9,
        bias in any::<bool>(), s in 0.1f32..3.0, eps in 1e-6f32..1.0,
    ) {
        let mut model = Model::new();
        model.add("fc.weight", wave(&[outputs, inputs], s * 0.53)).unwrap();
        if bias {
            model.add("fc.bias", wave(&[outputs], s * 0.17)).unwrap();
        }
        add_bn(&mut model, "bn", outputs, s);
        let linear = |bias: Option<&str>| Layer::Linear {
            weight: "fc.weight".into(),
            bias: bias.map(Into::into),
        };
        let Layer::BatchNorm { weight, bias: beta, running_mean, running_var, momentum, .. } =
            Layer::batch_norm("bn") else { unreachable!() };
        let bn = Layer::BatchNorm { weight, bias: beta, running_mean, running_var, eps, momentum };
        let before = Network::new(vec![linear(bias.then_some("fc.bias")), bn]);
        let x = Array2::from_shape_fn((n, inputs), |(i, j)| ((i * inputs + j) as f32 * 0.71).cos());
        let want = before.forward(&model, x.view()).unwrap();
        model
            .fold_batch_norm("fc.weight", bias.then_some("fc.bias"), &BatchNormNames::new("bn").with_eps(eps))
            .unwrap();
        let after = Network::new(vec![linear(Some("fc.bias"))]);
        assert_close(&after.forward(&model, x.view()).unwrap(), &want)?;
    }
}

/// Names, shapes and values (bits, so that NaN equals itself), to see that a failed
/// fold changed nothing.
fn snapshot(model: &Model) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    model
        .params()
        .iter()
        .map(|p| {
            let bits = p.value().iter().map(|v| v.to_bits()).collect();
            (p.name().to_string(), p.shape().to_vec(), bits)
        })
        .collect()
}

fn linear_bn_model() -> Model {
    let mut model = Model::new();
    model.add("fc.weight", wave(&[3, 4], 0.3)).unwrap();
    add_bn(&mut model, "bn", 3, 0.8);
    model
}

#[test]
fn bad_folds_are_typed_errors_and_change_nothing() {
    let bn = BatchNormNames::new("bn");
    let fails = |model: &mut Model, weight: &str, bias: Option<&str>, bn: &BatchNormNames| {
        let before = snapshot(model);
        let err = model.fold_batch_norm(weight, bias, bn).unwrap_err();
        assert_eq!(snapshot(model), before, "{err}");
        err
    };
    // ε not above 0, or not finite.
    for eps in [0.0, -1e-5, f32::NAN, f32::INFINITY] {
        let mut m = linear_bn_model();
        let err = fails(&mut m, "fc.weight", None, &bn.clone().with_eps(eps));
        assert!(
            matches!(err, Error::InvalidParameter { name: "eps", .. }),
            "{err}"
        );
    }
    // A negative running variance.
    let mut m = linear_bn_model();
    m.get_mut("bn.running_var")
        .unwrap()
        .value_mut()
        .as_slice_mut()
        .unwrap()[1] = -0.5;
    let err = fails(&mut m, "fc.weight", None, &bn);
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                name: "running_var",
                ..
            }
        ),
        "{err}"
    );
    // NaN in a statistic, in γ, in the weight, in the bias.
    for name in ["bn.running_mean", "bn.weight", "fc.weight", "fc.bias"] {
        let mut m = linear_bn_model();
        m.add("fc.bias", wave(&[3], 0.2)).unwrap();
        *m.get_mut(name).unwrap().value_mut().first_mut().unwrap() = f32::NAN;
        let err = fails(&mut m, "fc.weight", Some("fc.bias"), &bn);
        assert!(matches!(err, Error::NonFinite { .. }), "{name}: {err}");
    }
    // A BatchNorm of another width than the layer's outputs; a bias too.
    let mut m = Model::new();
    m.add("fc.weight", wave(&[3, 4], 0.3)).unwrap();
    m.add("fc.bias", wave(&[4], 0.3)).unwrap();
    add_bn(&mut m, "bn", 4, 0.8);
    add_bn(&mut m, "bn3", 3, 0.8);
    let err = fails(&mut m, "fc.weight", None, &bn);
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = fails(
        &mut m,
        "fc.weight",
        Some("fc.bias"),
        &BatchNormNames::new("bn3"),
    );
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // Not a Linear or Conv2d weight; unknown names.
    let err = fails(&mut m, "bn.weight", None, &bn);
    assert!(matches!(err, Error::WrongKind { .. }), "{err}");
    let err = fails(&mut m, "nope.weight", None, &bn);
    assert!(matches!(err, Error::UnknownParameter(_)), "{err}");
    let err = fails(&mut m, "fc.weight", None, &BatchNormNames::new("nope"));
    assert!(matches!(err, Error::UnknownParameter(_)), "{err}");
    // The bias to create is already taken (by another layer's parameter).
    let err = fails(&mut m, "fc.weight", None, &BatchNormNames::new("bn3"));
    assert!(
        matches!(err, Error::InvalidParameter { name: "bias", .. }),
        "{err}"
    );
    // A quantized weight: fold first.
    let mut m = linear_bn_model();
    m.quantize(
        &Selector::prunable(),
        &KMeansQuantizer::lloyd(2, KMeansInit::Linear).unwrap(),
    )
    .unwrap();
    let err = fails(&mut m, "fc.weight", None, &bn);
    assert!(
        matches!(err, Error::InvalidParameter { name: "weight", .. }),
        "{err}"
    );
    // A result that overflows f32.
    let mut m = linear_bn_model();
    m.get_mut("bn.weight").unwrap().value_mut().fill(3e38);
    let err = fails(&mut m, "fc.weight", None, &bn.clone().with_eps(1e-30));
    assert!(matches!(err, Error::NonFinite { .. }), "{err}");
}

#[test]
fn a_pruned_weight_keeps_its_mask() {
    let mut m = linear_bn_model();
    m.prune(
        &Selector::prunable(),
        &MagnitudePruner::magnitude(0.5).unwrap(),
        &crate::prune::Statistics::new(),
    )
    .unwrap();
    let mask = m.get("fc.weight").unwrap().mask().cloned().unwrap();
    m.fold_batch_norm("fc.weight", None, &BatchNormNames::new("bn"))
        .unwrap();
    let w = m.get("fc.weight").unwrap();
    assert_eq!(w.mask(), Some(&mask));
    assert_eq!(w.zeros(), 6);
    assert_eq!(m.get("fc.bias").unwrap().kind(), crate::LayerKind::Bias);
}

fn conv(weight: &str, bias: Option<&str>, spec: ConvSpec) -> Layer {
    Layer::Conv2d {
        weight: weight.into(),
        bias: bias.map(Into::into),
        spec,
    }
}

/// A network with BatchNorms to fold (after convolutions, in a residual body, in a
/// concatenation's branch, after a Linear layer, two in a row) and BatchNorms to keep
/// (first, after a pooling, after a ReLU).
fn net_with_bns(model: &mut Model) -> Network {
    let pad = ConvSpec::new().with_padding(1, 1);
    add_bn(model, "bn_in", 2, 0.2);
    model.add("c1.weight", wave(&[4, 2, 3, 3], 0.71)).unwrap();
    model.add("c1.bias", wave(&[4], 0.13)).unwrap();
    add_bn(model, "bn1", 4, 0.4);
    model.add("c2.weight", wave(&[4, 1, 3, 3], 0.37)).unwrap();
    add_bn(model, "bn2", 4, 0.9);
    model.add("c3.weight", wave(&[4, 4, 3, 3], 0.23)).unwrap();
    add_bn(model, "bn3", 4, 1.1);
    add_bn(model, "bn3b", 4, 1.7);
    add_bn(model, "bn_pool", 4, 0.6);
    model.add("c4.weight", wave(&[2, 4, 1, 1], 0.53)).unwrap();
    add_bn(model, "bn4", 2, 1.3);
    add_bn(model, "bn_relu", 6, 0.5);
    model.add("f.weight", wave(&[5, 6 * 9], 0.19)).unwrap();
    add_bn(model, "bn5", 5, 0.33);
    model.add("o.weight", wave(&[3, 5], 0.61)).unwrap();
    Network::new(vec![
        Layer::batch_norm("bn_in"),
        conv("c1.weight", Some("c1.bias"), pad),
        Layer::batch_norm("bn1"),
        Layer::Relu,
        Layer::residual(
            vec![
                conv("c2.weight", None, pad.with_groups(4)),
                Layer::batch_norm("bn2"),
                Layer::Relu,
                conv("c3.weight", None, pad),
                Layer::batch_norm("bn3"),
                Layer::batch_norm("bn3b"),
            ],
            vec![],
        ),
        Layer::MaxPool2d {
            kernel: (2, 2),
            stride: (2, 2),
        },
        Layer::batch_norm("bn_pool"),
        Layer::concat(vec![
            vec![
                conv("c4.weight", None, ConvSpec::new()),
                Layer::batch_norm("bn4"),
            ],
            vec![],
        ]),
        Layer::Relu,
        Layer::batch_norm("bn_relu"),
        Layer::Flatten,
        Layer::Linear {
            weight: "f.weight".into(),
            bias: None,
        },
        Layer::batch_norm("bn5"),
        Layer::Linear {
            weight: "o.weight".into(),
            bias: None,
        },
    ])
    .with_input_shape(&[2, 6, 6])
}

#[test]
fn folding_a_network_keeps_its_outputs_and_the_batch_norms_it_cannot_fold() {
    let mut model = Model::new();
    let net = net_with_bns(&mut model);
    let x = Array2::from_shape_fn((4, 72), |(i, j)| ((i * 72 + j) as f32 * 0.37).sin());
    let want = net.forward(&model, x.view()).unwrap();
    let params_before = model.numel();

    let (folded, report) = net.fold_batch_norm(&mut model).unwrap();
    let got = folded.forward(&model, x.view()).unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
    let folded_bns: Vec<&str> = report
        .folds
        .iter()
        .map(|f| f.batch_norm.weight.as_str())
        .collect();
    assert_eq!(
        folded_bns,
        [
            "bn1.weight",
            "bn2.weight",
            "bn3.weight",
            "bn3b.weight",
            "bn4.weight",
            "bn5.weight"
        ]
    );
    assert_eq!(model.numel(), params_before - report.params_removed());
    // Kept: the first layer's, the one after the pooling, the one after a ReLU.
    let kept: Vec<String> = folded
        .layers()
        .iter()
        .flat_map(Layer::param_names)
        .filter(|n| n.starts_with("bn"))
        .map(String::from)
        .collect();
    assert_eq!(kept.len(), 12);
    assert!(
        ["bn_in", "bn_pool", "bn_relu"]
            .iter()
            .all(|p| kept.contains(&format!("{p}.running_var")))
    );
    // c2 and c3 got a bias; c3's folds twice into one; c1 keeps its own.
    let created: Vec<&str> = report
        .folds
        .iter()
        .filter(|f| f.bias_created)
        .map(|f| f.bias.as_str())
        .collect();
    assert_eq!(created, ["c2.bias", "c3.bias", "c4.bias", "f.bias"]);
    assert_eq!(folded.layers().len(), net.layers().len() - 2);
    assert_eq!(net.batch_norm_folded().unwrap(), folded);
    // Nothing left to fold: a second pass is the identity.
    let again = model.clone();
    let (same, none) = folded.fold_batch_norm(&mut model).unwrap();
    assert_eq!(same, folded);
    assert!(none.folds.is_empty());
    assert_eq!(snapshot(&model), snapshot(&again));
}

#[test]
fn a_shared_weight_or_a_bad_statistic_fails_the_whole_network_fold() {
    let mut model = Model::new();
    model.add("c.weight", wave(&[2, 2, 1, 1], 0.3)).unwrap();
    add_bn(&mut model, "bn", 2, 0.5);
    model.add("o.weight", wave(&[3, 2 * 16], 0.3)).unwrap();
    let c = conv("c.weight", None, ConvSpec::new());
    let net = Network::new(vec![
        c.clone(),
        Layer::batch_norm("bn"),
        c,
        Layer::Flatten,
        Layer::Linear {
            weight: "o.weight".into(),
            bias: None,
        },
    ])
    .with_input_shape(&[2, 4, 4]);
    let before = snapshot(&model);
    let err = net.fold_batch_norm(&mut model).unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { name: "weight", .. }),
        "{err}"
    );
    assert!(net.batch_norm_folded().is_err());
    assert_eq!(snapshot(&model), before);

    // The second of two folds fails: the first is not kept either.
    let mut model = Model::new();
    let net = net_with_bns(&mut model);
    model
        .get_mut("bn5.running_var")
        .unwrap()
        .value_mut()
        .as_slice_mut()
        .unwrap()[2] = -1.0;
    let before = snapshot(&model);
    let err = net.fold_batch_norm(&mut model).unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    assert_eq!(snapshot(&model), before);
}

#[test]
fn pytorchs_batch_counter_goes_with_its_batch_norm() {
    let mut m = linear_bn_model();
    for name in ["bn.num_batches_tracked", "other.num_batches_tracked"] {
        m.add_raw(crate::RawTensor {
            name: name.into(),
            dtype: "I64".into(),
            shape: vec![],
            bytes: vec![0; 8],
        })
        .unwrap();
    }
    m.fold_batch_norm("fc.weight", None, &BatchNormNames::new("bn"))
        .unwrap();
    let raw: Vec<&str> = m.raw_tensors().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(raw, ["other.num_batches_tracked"]);
}
