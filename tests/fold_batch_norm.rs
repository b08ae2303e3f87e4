//! BatchNorm folding as a pipeline step (public API only): the folded network computes
//! what the network with BatchNorm computed, the report shows the BatchNorm parameters
//! gone and the created biases, and bad requests change nothing.

use ndarray::{Array2, ArrayD, IxDyn};
use slimnn::filters::{ConvBnRelu, ResidualBlock};
use slimnn::nn::{ConvSpec, Layer, Network};
use slimnn::pipeline::{FoldBatchNorm, Pipeline, Prune};
use slimnn::prune::MagnitudePruner;
use slimnn::{Error, Model, Selector};

fn wave(shape: &[usize], s: f32) -> ArrayD<f32> {
    let mut i = 0;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        i += 1;
        (i as f32 * s).sin() * 0.8
    })
}

fn add_bn(model: &mut Model, prefix: &str, c: usize, s: f32) {
    model
        .add(format!("{prefix}.weight"), wave(&[c], s) + 1.0)
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
            wave(&[c], s * 1.9).mapv(|v| v * v + 0.05),
        )
        .unwrap();
}

fn conv(name: &str, bias: bool, spec: ConvSpec) -> Layer {
    Layer::Conv2d {
        weight: format!("{name}.weight"),
        bias: bias.then(|| format!("{name}.bias")),
        spec,
    }
}

/// A small ResNet-like net with PyTorch's names: conv1 → bn1 → ReLU, a residual block
/// (layer1.0.conv1 → bn1 → ReLU → conv2 → bn2), a strided block with a 1×1
/// down-sampling shortcut (conv → bn), global pooling, fc.
fn resnet(model: &mut Model) -> Network {
    let pad = ConvSpec::new().with_padding(1, 1);
    model
        .add("conv1.weight", wave(&[4, 1, 3, 3], 0.71))
        .unwrap();
    add_bn(model, "bn1", 4, 0.4);
    model
        .add("layer1.0.conv1.weight", wave(&[4, 4, 3, 3], 0.37))
        .unwrap();
    add_bn(model, "layer1.0.bn1", 4, 0.9);
    model
        .add("layer1.0.conv2.weight", wave(&[4, 4, 3, 3], 0.23))
        .unwrap();
    add_bn(model, "layer1.0.bn2", 4, 1.1);
    model
        .add("layer2.0.conv1.weight", wave(&[8, 4, 3, 3], 0.53))
        .unwrap();
    add_bn(model, "layer2.0.bn1", 8, 1.3);
    model
        .add("layer2.0.downsample.0.weight", wave(&[8, 4, 1, 1], 0.29))
        .unwrap();
    add_bn(model, "layer2.0.downsample.1", 8, 0.6);
    model.add("fc.weight", wave(&[10, 8], 0.61)).unwrap();
    model.add("fc.bias", wave(&[10], 0.17)).unwrap();
    Network::new(vec![
        conv("conv1", false, pad),
        Layer::batch_norm("bn1"),
        Layer::Relu,
        Layer::residual(
            vec![
                conv("layer1.0.conv1", false, pad),
                Layer::batch_norm("layer1.0.bn1"),
                Layer::Relu,
                conv("layer1.0.conv2", false, pad),
                Layer::batch_norm("layer1.0.bn2"),
            ],
            vec![],
        ),
        Layer::Relu,
        Layer::residual(
            vec![
                conv("layer2.0.conv1", false, pad.with_stride(2, 2)),
                Layer::batch_norm("layer2.0.bn1"),
            ],
            vec![
                conv(
                    "layer2.0.downsample.0",
                    false,
                    ConvSpec::new().with_stride(2, 2),
                ),
                Layer::batch_norm("layer2.0.downsample.1"),
            ],
        ),
        Layer::Relu,
        Layer::GlobalAvgPool,
        Layer::Linear {
            weight: "fc.weight".into(),
            bias: Some("fc.bias".into()),
        },
    ])
    .with_input_shape(&[1, 8, 8])
}

fn input() -> Array2<f32> {
    Array2::from_shape_fn((6, 64), |(i, j)| ((i * 64 + j) as f32 * 0.37).sin())
}

fn assert_close(a: &Array2<f32>, b: &Array2<f32>) {
    assert_eq!(a.dim(), b.dim());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

fn snapshot(model: &Model) -> Vec<(String, ArrayD<f32>)> {
    model
        .params()
        .iter()
        .map(|p| (p.name().to_string(), p.value().clone()))
        .collect()
}

#[test]
fn the_pipeline_step_from_a_network_keeps_the_outputs_and_reports_the_batch_norms_gone() {
    let mut model = Model::new();
    let net = resnet(&mut model);
    let want = net.forward(&model, input().view()).unwrap();
    let before = model.numel();

    let report = Pipeline::new()
        .then(FoldBatchNorm::for_network(&net).unwrap())
        .run(&mut model)
        .unwrap();
    let folded = net.batch_norm_folded().unwrap();
    assert_close(&folded.forward(&model, input().view()).unwrap(), &want);
    assert!(
        !folded
            .layers()
            .iter()
            .flat_map(Layer::param_names)
            .any(|n| n.contains("bn") || n.contains("downsample.1"))
    );

    // Five BatchNorms of 4 parameters gone, five biases created.
    let bn_params = 4 * (4 + 4 + 4 + 8 + 8);
    let biases = 4 + 4 + 4 + 8 + 8;
    assert_eq!(report.original_params, before);
    assert_eq!(report.total_params(), before - bn_params + biases);
    assert_eq!(report.removed.len(), 20);
    assert!(
        report
            .removed
            .contains(&"layer2.0.downsample.1.running_var".to_string())
    );
    assert_eq!(
        report.added,
        [
            "conv1.bias",
            "layer1.0.conv1.bias",
            "layer1.0.conv2.bias",
            "layer2.0.conv1.bias",
            "layer2.0.downsample.0.bias"
        ]
    );
    assert!(report.params.iter().all(|p| !p.name.contains("bn")));
    let added = report
        .params
        .iter()
        .find(|p| p.name == "conv1.bias")
        .unwrap();
    assert_eq!((added.original_bytes, added.relative_error), (0, 0.0));
    // The removed BatchNorm's bytes count in the original size.
    assert_eq!(report.original_bytes, 4 * before);
    let text = report.to_string();
    assert!(
        text.contains("fold BatchNorm: conv1←bn1, layer1.0.conv1←layer1.0.bn1, "),
        "{text}"
    );
    assert!(text.contains("removed 20 (bn1.weight, bn1.bias,"), "{text}");
    assert!(text.contains("added 5 (conv1.bias,"), "{text}");
}

#[test]
fn pairs_by_name_fold_as_the_network_does_and_combine_with_other_steps() {
    let mut by_net = Model::new();
    let net = resnet(&mut by_net);
    let mut by_name = by_net.clone();
    let want = net.forward(&by_net, input().view()).unwrap();
    let (folded, _) = net.fold_batch_norm(&mut by_net).unwrap();

    let step = FoldBatchNorm::parse(
        "conv1=bn1, layer1.0.conv1=layer1.0.bn1,layer1.0.conv2=layer1.0.bn2,\
         layer2.0.conv1=layer2.0.bn1,layer2.0.downsample.0=layer2.0.downsample.1",
    )
    .unwrap();
    assert_eq!(step.len(), 5);
    Pipeline::new().then(step).run(&mut by_name).unwrap();
    let mut a = snapshot(&by_net);
    let mut b = snapshot(&by_name);
    a.sort_by(|x, y| x.0.cmp(&y.0));
    b.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(a, b);
    assert_close(&folded.forward(&by_name, input().view()).unwrap(), &want);

    // Fold, then prune the folded weights: one pipeline.
    let mut model = Model::new();
    let net = resnet(&mut model);
    let report = Pipeline::new()
        .then(FoldBatchNorm::for_network(&net).unwrap())
        .then(Prune::new(
            Selector::prunable(),
            MagnitudePruner::magnitude(0.5).unwrap(),
        ))
        .run(&mut model)
        .unwrap();
    assert_eq!(report.steps.len(), 2);
    let w = model.get("layer1.0.conv1.weight").unwrap();
    assert_eq!(w.zeros(), 72);
    assert_eq!(model.get("layer1.0.conv1.bias").unwrap().zeros(), 0);
}

#[test]
fn bad_requests_are_typed_errors_and_the_model_is_unchanged() {
    for text in ["", "conv1", "conv1=", "=bn1", "conv1=bn1,", "conv1=bn1@x"] {
        let err = FoldBatchNorm::parse(text).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidParameter {
                    name: "fold-bn",
                    ..
                }
            ),
            "{text}: {err}"
        );
    }
    for text in ["conv1=bn1@0", "conv1=bn1@-1", "conv1=bn1@inf"] {
        let err = FoldBatchNorm::parse(text).unwrap_err();
        assert!(
            matches!(err, Error::InvalidParameter { name: "eps", .. }),
            "{text}: {err}"
        );
    }
    let none: [(&str, &str); 0] = [];
    assert!(matches!(
        FoldBatchNorm::new(&none),
        Err(Error::Empty { .. })
    ));

    let mut model = Model::new();
    resnet(&mut model);
    let before = snapshot(&model);
    // The second pair names a BatchNorm of 4 channels for a conv of 8: nothing kept.
    let step = FoldBatchNorm::parse("conv1=bn1,layer2.0.conv1=layer1.0.bn1").unwrap();
    let err = Pipeline::new().then(step).run(&mut model).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // A pair whose BatchNorm is not in the model.
    let step = FoldBatchNorm::parse("conv1=bn9").unwrap();
    let err = Pipeline::new().then(step).run(&mut model).unwrap_err();
    assert!(matches!(err, Error::UnknownParameter(_)), "{err}");
    assert_eq!(snapshot(&model), before);
}

#[test]
fn networks_from_the_block_constructors_fold_exactly() {
    let mut model = Model::new();
    let mut layers = ConvBnRelu::new(1, 4, 3)
        .with_padding(1)
        .build(&mut model, "stem", 1)
        .unwrap();
    layers.extend(
        ResidualBlock::new(4, 4)
            .build(&mut model, "layer1", 2)
            .unwrap(),
    );
    layers.extend(
        ResidualBlock::new(4, 8)
            .with_stride(2)
            .build(&mut model, "layer2", 3)
            .unwrap(),
    );
    layers.push(Layer::GlobalAvgPool);
    model.add("fc.weight", wave(&[10, 8], 0.61)).unwrap();
    layers.push(Layer::Linear {
        weight: "fc.weight".into(),
        bias: None,
    });
    let net = Network::new(layers).with_input_shape(&[1, 8, 8]);
    // Statistics as after training, not PyTorch's initial identity.
    let bn_names: Vec<String> = model
        .params()
        .iter()
        .map(|p| p.name().to_string())
        .filter(|n| n.contains(".bn"))
        .collect();
    for (i, name) in bn_names.iter().enumerate() {
        let c = model.get(name).unwrap().numel();
        let s = 0.3 + 0.1 * i as f32;
        let value = if name.ends_with("running_var") {
            wave(&[c], s).mapv(|v| v * v + 0.05)
        } else if name.ends_with(".weight") {
            wave(&[c], s) + 1.0
        } else {
            wave(&[c], s) * 0.5
        };
        model.get_mut(name).unwrap().value_mut().assign(&value);
    }
    let want = net.forward(&model, input().view()).unwrap();
    let (folded, report) = net.fold_batch_norm(&mut model).unwrap();
    assert_eq!(report.folds.len(), 1 + 2 + 3);
    assert!(report.folds.iter().all(|f| f.bias_created));
    assert!(!model.params().iter().any(|p| p.name().contains(".bn")));
    assert_close(&folded.forward(&model, input().view()).unwrap(), &want);
}
