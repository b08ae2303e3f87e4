//! Early-exit networks: exactness, per-sample equality, gradients, determinism, errors.

use ndarray::{Array1, Array2, s};

use super::tests_depth::{batch, wave};
use super::*;
use crate::error::Error;
use crate::io::idx::Dataset;
use crate::model::Model;
use crate::nn::{ConvSpec, Layer, Network, Sgd};

/// A conv trunk on `[1, 6, 6]` (layers: 0 conv1, 1 relu, 2 pool, 3 flatten, 4 fc1,
/// 5 relu, 6 dropout, 7 fc2) with side exits after layers 1 and 5.
fn branchy() -> (Model, EarlyExitNetwork) {
    let mut model = Model::new();
    for (i, (name, shape)) in [
        ("conv1.weight", &[3, 1, 3, 3][..]),
        ("conv1.bias", &[3]),
        ("fc1.weight", &[8, 12]),
        ("fc1.bias", &[8]),
        ("fc2.weight", &[4, 8]),
        ("fc2.bias", &[4]),
        ("exit0.weight", &[4, 12]),
        ("exit0.bias", &[4]),
        ("exit1.weight", &[4, 8]),
    ]
    .into_iter()
    .enumerate()
    {
        model.add(name, wave(shape, 0.7 + 0.31 * i as f32)).unwrap();
    }
    let linear = |w: &str, b: Option<&str>| Layer::Linear {
        weight: w.into(),
        bias: b.map(Into::into),
    };
    let pool = Layer::MaxPool2d {
        kernel: (2, 2),
        stride: (2, 2),
    };
    let trunk = Network::new(vec![
        Layer::Conv2d {
            weight: "conv1.weight".into(),
            bias: Some("conv1.bias".into()),
            spec: ConvSpec::new(),
        },
        Layer::Relu,
        pool.clone(),
        Layer::Flatten,
        linear("fc1.weight", Some("fc1.bias")),
        Layer::Relu,
        Layer::Dropout { p: 0.3 },
        linear("fc2.weight", Some("fc2.bias")),
    ])
    .with_input_shape(&[1, 6, 6]);
    let net = EarlyExitNetwork::new(trunk)
        .with_exit(5, vec![linear("exit1.weight", None)])
        .unwrap()
        .with_exit(
            1,
            vec![
                pool,
                Layer::Flatten,
                linear("exit0.weight", Some("exit0.bias")),
            ],
        )
        .unwrap();
    (model, net)
}

#[test]
fn exits_attach_where_asked_and_bad_positions_are_typed_errors() {
    let (model, net) = branchy();
    assert_eq!(net.positions(), vec![1, 5]);
    assert_eq!(net.check(&model).unwrap(), 4);
    let trunk = net.trunk().clone();
    let named = EarlyExitNetwork::new(trunk.clone())
        .with_exit("fc1.weight", vec![])
        .unwrap();
    assert_eq!(named.positions(), vec![4]);
    for bad in [
        EarlyExitNetwork::new(trunk.clone()).with_exit(7, vec![]),
        EarlyExitNetwork::new(trunk.clone()).with_exit(99, vec![]),
        EarlyExitNetwork::new(trunk.clone()).with_exit(usize::MAX, vec![]),
        EarlyExitNetwork::new(trunk.clone()).with_exit("fc9.weight", vec![]),
        EarlyExitNetwork::new(trunk.clone()).with_exit("fc2.weight", vec![]),
        net.clone().with_exit(1, vec![]),
    ] {
        assert!(
            matches!(bad, Err(Error::InvalidParameter { .. })),
            "{bad:?}"
        );
    }
    // A branch giving the wrong number of classes.
    let wrong = EarlyExitNetwork::new(trunk)
        .with_exit(4, vec![Layer::Relu])
        .unwrap();
    assert!(matches!(
        wrong.check(&model),
        Err(Error::ShapeMismatch { .. })
    ));
    // Policies: one per side exit, valid thresholds.
    let x = batch(3, 36, 0.3);
    assert!(matches!(
        net.forward(&model, x.view(), &[ExitPolicy::MaxProb(0.5)]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        net.forward(
            &model,
            x.view(),
            &[ExitPolicy::MaxProb(0.5), ExitPolicy::Entropy(-1.0)]
        ),
        Err(Error::InvalidParameter { .. })
    ));
    for w in [
        &[1.0, 1.0][..],
        &[1.0, -1.0, 1.0],
        &[0.0, 0.0, 0.0],
        &[f32::NAN, 1.0, 1.0],
    ] {
        assert!(net.clone().with_weights(w).is_err(), "{w:?}");
    }
}

#[test]
fn thresholds_that_let_nothing_out_give_the_plain_network_exactly() {
    let (model, net) = branchy();
    let x = batch(11, 36, 0.37);
    let plain = net.trunk().forward(&model, x.view()).unwrap();
    for kind in [PolicyKind::Entropy, PolicyKind::MaxProb] {
        let never = [ExitPolicy::never(kind); 2];
        let out = net.forward(&model, x.view(), &never).unwrap();
        assert_eq!(out.logits, plain);
        assert_eq!(out.counts, vec![0, 0, 11]);
        assert!(out.exit.iter().all(|&e| e == 2));
    }
    // The last exit's logits of `exit_logits` are the plain network's too.
    let all = net.exit_logits(&model, x.view()).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2], plain);
}

#[test]
fn a_batch_split_by_exits_gives_each_sample_its_output_alone() {
    let (model, net) = branchy();
    let x = batch(24, 36, 0.53);
    // Thresholds at the median score of each exit: some samples leave at every exit.
    let all = net.exit_logits(&model, x.view()).unwrap();
    let median = |l: &Array2<f32>| {
        let mut s = ExitPolicy::MaxProb(0.5)
            .scores(l.as_slice().unwrap(), 4)
            .unwrap();
        s.sort_by(f32::total_cmp);
        s[s.len() / 2]
    };
    let policies = [
        ExitPolicy::MaxProb(median(&all[0])),
        ExitPolicy::MaxProb(median(&all[1])),
    ];
    let out = net.forward(&model, x.view(), &policies).unwrap();
    assert!(out.counts.iter().all(|&c| c > 0), "{:?}", out.counts);
    assert_eq!(out.counts.iter().sum::<usize>(), 24);
    // The same routing as the slice API on the full logits.
    let views: Vec<&[f32]> = all.iter().map(|l| l.as_slice().unwrap()).collect();
    assert_eq!(route(&views, 4, &policies).unwrap(), out.exit);
    for i in 0..24 {
        let alone = net
            .forward(&model, x.slice(s![i..i + 1, ..]), &policies)
            .unwrap();
        assert_eq!(alone.exit, vec![out.exit[i]], "sample {i}");
        assert_eq!(alone.logits.row(0), out.logits.row(i), "sample {i}");
        // And the logits are those of its exit computed without early stopping.
        assert_eq!(out.logits.row(i), all[out.exit[i]].row(i), "sample {i}");
    }
}

#[test]
fn per_exit_counts_and_macs_per_sample() {
    let (model, net) = branchy();
    let costs = net.costs(&model).unwrap();
    // conv1: 4·4 positions × 27; fc1 96; fc2 32; exit0 48; exit1 32.
    assert_eq!(costs.trunk(), 432 + 96 + 32);
    assert_eq!(costs.trunk_to_exit(), &[432, 432 + 96]);
    assert_eq!(costs.branch(), &[48, 32]);
    let ran = [true, true];
    assert_eq!(costs.path(0, &ran), 480);
    assert_eq!(costs.path(1, &ran), 528 + 80);
    assert_eq!(costs.path(2, &ran), 560 + 80);
    assert_eq!(costs.path(2, &[false, false]), 560);
    // Past the final exit is the final exit; no overflow.
    assert_eq!(costs.path(usize::MAX, &ran), 560 + 80);
    // Built by hand: the same, and mismatched lengths are a typed error.
    assert_eq!(
        ExitCosts::new(vec![432, 528], vec![48, 32], 560).unwrap(),
        costs
    );
    for (to_exit, branch, trunk) in [
        (vec![432], vec![48, 32], 560),
        (vec![432, 528], vec![48], 560),
    ] {
        assert!(matches!(
            ExitCosts::new(to_exit, branch, trunk),
            Err(Error::ShapeMismatch { .. })
        ));
    }
    let data = Dataset {
        images: batch(10, 36, 0.21),
        labels: Array1::from_iter((0..10).map(|i| (i % 4) as u8)),
        image_shape: vec![6, 6],
    };
    let all_first = [
        ExitPolicy::MaxProb(0.0),
        ExitPolicy::never(PolicyKind::MaxProb),
    ];
    let eval = net.evaluate(&model, &data, 4, &all_first).unwrap();
    assert_eq!(eval.counts, vec![10, 0, 0]);
    assert_eq!(eval.mean_macs, 480.0);
    let never = [ExitPolicy::never(PolicyKind::Entropy); 2];
    let eval = net.evaluate(&model, &data, 3, &never).unwrap();
    assert_eq!(eval.counts, vec![0, 0, 10]);
    assert_eq!(eval.mean_macs, 560.0);
    let plain = net.trunk().evaluate(&model, &data, 3).unwrap();
    assert_eq!(eval.correct, plain.correct);
}

#[test]
fn a_batch_of_zero_is_a_typed_error_everywhere() {
    let (model, net) = branchy();
    let data = Dataset {
        images: batch(6, 36, 0.23),
        labels: Array1::from_iter((0..6).map(|i| (i % 4) as u8)),
        image_shape: vec![6, 6],
    };
    let zero =
        |r: &Result<_, Error>| matches!(r, Err(Error::InvalidParameter { name: "batch", .. }));
    let never = [ExitPolicy::never(PolicyKind::Entropy); 2];
    assert!(zero(&net.evaluate(&model, &data, 0, &never).map(drop)));
    let calibration = ThresholdCalibration::new(PolicyKind::MaxProb, 1.0).unwrap();
    assert!(zero(
        &net.calibrate(&model, &data, 0, &calibration).map(drop)
    ));
    let mut m = model.clone();
    let mut sgd = Sgd::new(0.1, 0.9, 0.0).unwrap();
    assert!(zero(
        &net.train_epoch(&mut m, &mut sgd, &data, 0, 1).map(drop)
    ));
    let (rmodel, rnet) = super::tests_depth::residual_mlp(2);
    let rdata = Dataset {
        images: batch(6, 6, 0.3),
        labels: Array1::from_iter((0..6).map(|i| (i % 3) as u8)),
        image_shape: vec![6],
    };
    assert!(zero(&drop_curve(&rnet, &rmodel, &[0], &rdata, 0).map(drop)));
}

/// Central finite differences against the analytic gradient of the joint loss.
#[test]
fn joint_loss_gradients_match_finite_differences() {
    let (model, net) = branchy();
    let net = net.with_weights(&[0.3, 0.6, 1.0]).unwrap();
    let x = batch(5, 36, 0.41);
    let y = Array1::from(vec![0u8, 1, 2, 3, 1]);
    let (loss, grads) = net
        .loss_and_gradients(&model, x.view(), y.view(), None)
        .unwrap();
    let sum = 0.3 * loss.per_exit[0] + 0.6 * loss.per_exit[1] + loss.per_exit[2];
    assert!((loss.total - sum).abs() < 1e-5);
    // Each exit's loss is its own network's cross-entropy.
    let all = net.exit_logits(&model, x.view()).unwrap();
    for (k, l) in all.iter().enumerate() {
        let (ce, _) = crate::nn::softmax_cross_entropy(l.view(), y.view()).unwrap();
        assert!((ce - loss.per_exit[k]).abs() < 1e-6, "exit {k}");
    }
    assert_eq!(grads.len(), 9);
    // Small steps: ReLU and max-pooling kinks lie within 1e-2 of some entries.
    let eps = 2e-3f32;
    for (name, g) in &grads {
        for (i, &a) in g.as_slice().unwrap().iter().enumerate() {
            let at = |d: f32| {
                let mut m = model.clone();
                m.get_mut(name).unwrap().value_mut().as_slice_mut().unwrap()[i] += d;
                net.loss_and_gradients(&m, x.view(), y.view(), None)
                    .unwrap()
                    .0
                    .total
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (numeric - a).abs() < 2e-3 + 1e-2 * a.abs(),
                "{name}[{i}]: numeric {numeric} vs analytic {a}"
            );
        }
    }
    // With only the first exit weighted, nothing after its position gets a gradient.
    let first = net.clone().with_weights(&[1.0, 0.0, 0.0]).unwrap();
    let (loss, grads) = first
        .loss_and_gradients(&model, x.view(), y.view(), None)
        .unwrap();
    assert!(loss.per_exit[1].is_nan());
    assert!(!grads.contains_key("exit1.weight"));
    for name in ["fc1.weight", "fc2.weight", "fc2.bias"] {
        assert!(grads[name].iter().all(|&g| g == 0.0), "{name}");
    }
    assert!(grads["conv1.weight"].iter().any(|&g| g != 0.0));
}

#[test]
fn joint_training_is_deterministic_with_a_seed_and_lowers_the_loss() {
    let (model, net) = branchy();
    let data = Dataset {
        images: batch(32, 36, 0.29),
        labels: Array1::from_iter((0..32).map(|i| (i % 4) as u8)),
        image_shape: vec![6, 6],
    };
    let x = data.images.view();
    let y = data.labels.view();
    let a = net.loss_and_gradients(&model, x, y, Some(3)).unwrap();
    assert_eq!(a, net.loss_and_gradients(&model, x, y, Some(3)).unwrap());
    assert_ne!(
        a.0,
        net.loss_and_gradients(&model, x, y, Some(4)).unwrap().0
    );
    let train = |seed: u64| {
        let mut m = model.clone();
        let mut sgd = Sgd::new(0.1, 0.9, 0.0).unwrap();
        let mut losses = Vec::new();
        for epoch in 0..5 {
            losses.push(
                net.train_epoch(&mut m, &mut sgd, &data, 8, seed + epoch)
                    .unwrap(),
            );
        }
        (m, losses)
    };
    let (m1, l1) = train(10);
    let (m2, l2) = train(10);
    assert_eq!(l1, l2);
    for (a, b) in m1.params().iter().zip(m2.params()) {
        assert_eq!(a.value(), b.value());
    }
    assert!(l1[4] < l1[0], "{l1:?}");
}
