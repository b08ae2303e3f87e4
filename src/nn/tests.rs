//! Backpropagation against finite differences, and the layers' modes.

use ndarray::{Array1, Array2, ArrayD, IxDyn};

use super::graph::Mode;
use super::*;
use crate::model::Model;

/// Central finite differences of `loss_at(i, δ)` for every entry `i`, against `analytic`.
pub(super) fn check_numeric(
    what: &str,
    analytic: &[f32],
    skip: impl Fn(usize) -> bool,
    loss_at: impl Fn(usize, f32) -> f32,
) {
    let eps = 1e-2f32;
    for (i, &a) in analytic.iter().enumerate() {
        if skip(i) {
            assert_eq!(a, 0.0, "{what}[{i}]: masked weights get no gradient");
            continue;
        }
        let numeric = (loss_at(i, eps) - loss_at(i, -eps)) / (2.0 * eps);
        assert!(
            (numeric - a).abs() < 2e-3 + 1e-2 * a.abs(),
            "{what}[{i}]: numeric {numeric} vs analytic {a}"
        );
    }
}

/// Backpropagation against central finite differences, in a masked network.
#[test]
fn gradients_match_finite_differences() {
    let mut model = Model::new();
    let net = Network::mlp(&mut model, &[5, 4, 3], 11).unwrap();
    let mask = crate::Mask::from_fn(&[4, 5], |i| i % 3 != 0);
    model
        .get_mut("fc1.weight")
        .unwrap()
        .set_mask(mask.clone())
        .unwrap();
    let x = Array2::from_shape_fn((6, 5), |(i, j)| ((i * 5 + j) as f32 * 0.37).sin());
    let y = Array1::from_iter((0..6).map(|i| (i % 3) as u8));
    let (_, grads) = net.loss_and_gradients(&model, x.view(), y.view()).unwrap();
    for (name, g) in &grads {
        let skip = |i| name == "fc1.weight" && !mask.get(i);
        check_numeric(name, g.as_slice().unwrap(), skip, |i, delta| {
            let mut m = model.clone();
            m.get_mut(name).unwrap().value_mut().as_slice_mut().unwrap()[i] += delta;
            net.loss_and_gradients(&m, x.view(), y.view()).unwrap().0
        });
    }
}

pub(super) fn wave(shape: &[usize], s: f32) -> ArrayD<f32> {
    let mut i = 0;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        i += 1;
        (i as f32 * s).sin() * 0.8
    })
}

/// A small conv net with every layer kind: a grouped, strided, padded convolution,
/// ReLU, max pooling, a second convolution with bias, flatten, dropout, two Linears.
fn small_conv_net() -> (Model, Network) {
    let mut m = Model::new();
    m.add("c1.weight", wave(&[4, 1, 3, 3], 0.71)).unwrap();
    m.add("c2.weight", wave(&[3, 4, 2, 2], 0.53)).unwrap();
    m.add("c2.bias", wave(&[3], 0.3)).unwrap();
    m.add("f1.weight", wave(&[5, 12], 0.91)).unwrap();
    m.add("f1.bias", wave(&[5], 0.2)).unwrap();
    m.add("f2.weight", wave(&[3, 5], 0.61)).unwrap();
    let net = Network::new(vec![
        Layer::Conv2d {
            weight: "c1.weight".into(),
            bias: None,
            spec: ConvSpec::new()
                .with_stride(2, 2)
                .with_padding(1, 1)
                .with_groups(2),
        },
        Layer::Relu,
        Layer::MaxPool2d {
            kernel: (2, 2),
            stride: (1, 1),
        },
        Layer::Conv2d {
            weight: "c2.weight".into(),
            bias: Some("c2.bias".into()),
            spec: ConvSpec::new(),
        },
        Layer::Flatten,
        Layer::Dropout { p: 0.3 },
        Layer::Linear {
            weight: "f1.weight".into(),
            bias: Some("f1.bias".into()),
        },
        Layer::Relu,
        Layer::Linear {
            weight: "f2.weight".into(),
            bias: None,
        },
    ])
    .with_input_shape(&[2, 7, 7]);
    (m, net)
}

/// Every parameter's gradient and the input's, in training mode with a fixed seed (the
/// same dropout masks at every evaluation), with a mask on a convolution's weight.
#[test]
fn conv_gradients_match_finite_differences() {
    let (mut model, net) = small_conv_net();
    assert_eq!(
        net.shapes(&model).unwrap(),
        vec![
            vec![2, 7, 7],
            vec![4, 4, 4],
            vec![4, 4, 4],
            vec![4, 3, 3],
            vec![3, 2, 2],
            vec![12],
            vec![12],
            vec![5],
            vec![5],
            vec![3]
        ]
    );
    let mask = crate::Mask::from_fn(&[3, 4, 2, 2], |i| i % 4 != 1);
    model
        .get_mut("c2.weight")
        .unwrap()
        .set_mask(mask.clone())
        .unwrap();
    let x = Array2::from_shape_fn((3, 98), |(i, j)| ((i * 98 + j) as f32 * 0.37).sin());
    let y = Array1::from(vec![0u8, 2, 1]);
    let mode = Mode::Train { seed: 5 };
    let (loss, grads, dx) = net
        .backprop(&model, x.view(), y.view(), mode, true)
        .unwrap();
    let (train_loss, train_grads) = net.train_gradients(&model, x.view(), y.view(), 5).unwrap();
    assert_eq!((loss, &grads), (train_loss, &train_grads));
    assert_eq!(grads.len(), 6, "every parameter has a gradient");
    // Dropout is active: evaluation mode differs.
    assert_ne!(
        net.loss_and_gradients(&model, x.view(), y.view())
            .unwrap()
            .0,
        loss
    );
    for (name, g) in &grads {
        let skip = |i| name == "c2.weight" && !mask.get(i);
        check_numeric(name, g.as_slice().unwrap(), skip, |i, delta| {
            let mut m = model.clone();
            m.get_mut(name).unwrap().value_mut().as_slice_mut().unwrap()[i] += delta;
            net.train_gradients(&m, x.view(), y.view(), 5).unwrap().0
        });
    }
    let dx = dx.unwrap();
    check_numeric(
        "input",
        dx.as_slice().unwrap(),
        |_| false,
        |i, delta| {
            let mut x = x.clone();
            x.as_slice_mut().unwrap()[i] += delta;
            net.train_gradients(&model, x.view(), y.view(), 5)
                .unwrap()
                .0
        },
    );
}

#[test]
fn dropout_is_the_identity_in_evaluation_and_inverted_in_training() {
    let net = Network::new(vec![Layer::Dropout { p: 0.25 }]).with_input_shape(&[1000]);
    let model = Model::new();
    let x = Array2::from_elem((20, 1000), 2.0f32);
    assert_eq!(net.forward(&model, x.view()).unwrap(), x);
    let train = |seed| {
        net.run(&model, x.view(), Mode::Train { seed }, false)
            .unwrap()
            .0
    };
    let y = train(9);
    let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
    assert!((dropped - 0.25).abs() < 0.02, "dropped {dropped}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 2.0 / 0.75).abs() < 1e-6));
    assert_eq!(y, train(9));
    assert_ne!(y, train(10));
}

/// Wanda's statistic for a convolution: the norms of the im2col rows.
#[test]
fn activation_norms_of_convolutions_are_im2col_row_norms() {
    let (model, net) = small_conv_net();
    let x = Array2::from_shape_fn((3, 98), |(i, j)| ((i * 98 + j) as f32 * 0.37).sin());
    let norms = net.activation_norms(&model, x.view()).unwrap();
    assert_eq!(norms["c1.weight"].len(), 9);
    assert_eq!(norms["c2.weight"].len(), 16);
    assert_eq!(norms["f1.weight"].len(), 12);
    // c1 has stride 2, padding 1, two groups of one channel: row (ki, kj) holds the
    // pixels (2·oi + ki − 1, 2·oj + kj − 1) of both channels.
    let img = x.to_shape((3, 2, 7, 7)).unwrap();
    for (ki, kj) in [(0, 0), (1, 1), (2, 0)] {
        let mut s = 0.0f32;
        for n in 0..3 {
            for c in 0..2 {
                for oi in 0..4 {
                    for oj in 0..4 {
                        let (r, q) = ((2 * oi + ki) as isize - 1, (2 * oj + kj) as isize - 1);
                        if (0..7).contains(&r) && (0..7).contains(&q) {
                            s += img[[n, c, r as usize, q as usize]].powi(2);
                        }
                    }
                }
            }
        }
        let got = norms["c1.weight"][ki * 3 + kj];
        assert!(
            (got - s.sqrt()).abs() < 1e-4,
            "({ki}, {kj}): {got} vs {}",
            s.sqrt()
        );
    }
}

/// The calibration statistics of a network agree with Wanda's norms (the square root of
/// their diagonal), count every im2col column as a row, and are `XᵀX` of a Linear input.
#[test]
fn calibration_stats_agree_with_activation_norms() {
    let (model, net) = small_conv_net();
    let x = Array2::from_shape_fn((3, 98), |(i, j)| ((i * 98 + j) as f32 * 0.37).sin());
    let norms = net.activation_norms(&model, x.view()).unwrap();
    let stats = net.calibration_stats(&model, x.view()).unwrap();
    assert_eq!(stats.len(), norms.len());
    for (name, n) in &norms {
        let s = stats.get(name).unwrap();
        for (a, b) in s.activation_norms().iter().zip(n) {
            assert!((a - b).abs() <= 1e-4 * b.max(1.0), "{name}: {a} vs {b}");
        }
    }
    // c1: stride 2, padding 1 on 7×7 → 4×4 positions, two groups, three images.
    assert_eq!(stats.get("c1.weight").unwrap().rows(), 3 * 2 * 16);
    // Batch by batch is the same as at once.
    let mut parts = crate::calib::CalibrationStats::new();
    net.observe_calibration(&model, x.slice(ndarray::s![..1, ..]), &mut parts)
        .unwrap();
    net.observe_calibration(&model, x.slice(ndarray::s![1.., ..]), &mut parts)
        .unwrap();
    for (name, s) in stats.iter() {
        let p = parts.get(name).unwrap();
        assert_eq!(p.rows(), s.rows());
        for (a, b) in p.xtx().iter().zip(s.xtx().iter()) {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{name}");
        }
    }
}
