//! Stochastic depth: survival 1 is the plain network, blocks dropped per batch and
//! scaled in evaluation, typed errors; and the helpers of the module's tests.

use ndarray::{Array1, Array2, ArrayD, IxDyn};

use super::*;
use crate::error::Error;
use crate::model::Model;
use crate::nn::{Layer, Network};

pub(super) fn wave(shape: &[usize], s: f32) -> ArrayD<f32> {
    let mut i = 0;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        i += 1;
        (i as f32 * s).sin() * 0.8
    })
}

pub(super) fn batch(n: usize, features: usize, s: f32) -> Array2<f32> {
    Array2::from_shape_fn((n, features), |(i, j)| {
        ((i * features + j) as f32 * s).sin()
    })
}

/// A residual MLP on 6 features: stem, `blocks` residual blocks (Linear, ReLU, Linear),
/// head to 3 classes.
pub(super) fn residual_mlp(blocks: usize) -> (Model, Network) {
    let mut model = Model::new();
    let mut layers = Vec::new();
    model.add("stem.weight", wave(&[5, 6], 0.3)).unwrap();
    layers.push(Layer::Linear {
        weight: "stem.weight".into(),
        bias: None,
    });
    for b in 0..blocks {
        let (w1, w2) = (format!("b{b}.fc1.weight"), format!("b{b}.fc2.weight"));
        model
            .add(&w1, wave(&[5, 5], 0.5 + b as f32 * 0.13))
            .unwrap();
        model
            .add(&w2, wave(&[5, 5], 0.9 + b as f32 * 0.17))
            .unwrap();
        let lin = |w: &String| Layer::Linear {
            weight: w.clone(),
            bias: None,
        };
        layers.push(Layer::residual(
            vec![lin(&w1), Layer::Relu, lin(&w2)],
            vec![],
        ));
        layers.push(Layer::Relu);
    }
    model.add("head.weight", wave(&[3, 5], 1.1)).unwrap();
    layers.push(Layer::Linear {
        weight: "head.weight".into(),
        bias: None,
    });
    (model, Network::new(layers))
}

#[test]
fn stochastic_depth_with_survival_one_is_the_plain_network() {
    let (model, net) = residual_mlp(3);
    let sd = StochasticDepth::linear(1.0).unwrap().apply(&net).unwrap();
    assert_eq!(sd, net);
    let x = batch(7, 6, 0.7);
    let y = Array1::from_iter((0..7).map(|i| (i % 3) as u8));
    assert_eq!(
        sd.forward(&model, x.view()).unwrap(),
        net.forward(&model, x.view()).unwrap()
    );
    for seed in 0..5 {
        assert_eq!(
            sd.train_gradients(&model, x.view(), y.view(), seed)
                .unwrap(),
            net.train_gradients(&model, x.view(), y.view(), seed)
                .unwrap()
        );
    }
}

#[test]
fn stochastic_depth_drops_whole_blocks_per_batch_and_scales_them_in_evaluation() {
    let (model, net) = residual_mlp(1);
    let p = 0.6f32;
    let sd = Network::new(
        net.layers()
            .iter()
            .map(|l| match l {
                Layer::Residual { .. } => l.clone().with_survival(p).unwrap(),
                l => l.clone(),
            })
            .collect(),
    );
    // The block dropped: y = x (identity shortcut).
    let mut dropped_layers = net.layers().to_vec();
    dropped_layers.remove(1);
    let dropped = Network::new(dropped_layers);
    let x = batch(4, 6, 0.9);
    let y = Array1::from(vec![0u8, 1, 2, 0]);
    let (kept_g, dropped_g) = (
        net.train_gradients(&model, x.view(), y.view(), 0)
            .unwrap()
            .1,
        dropped
            .train_gradients(&model, x.view(), y.view(), 0)
            .unwrap()
            .1,
    );
    let mut kept = 0;
    for seed in 0..400 {
        let g = sd
            .train_gradients(&model, x.view(), y.view(), seed)
            .unwrap();
        let g = g.1;
        // Without dropout the pass is the same for every seed, but for the block's draw.
        if g.contains_key("b0.fc1.weight") {
            kept += 1;
            assert_eq!(g, kept_g);
        } else {
            assert_eq!(g, dropped_g);
        }
        assert_eq!(
            g,
            sd.train_gradients(&model, x.view(), y.view(), seed)
                .unwrap()
                .1
        );
    }
    assert!((200..=280).contains(&kept), "kept {kept} of 400 at p = 0.6");
    // Evaluation: p·body(x) + x, i.e. the body's last Linear scaled by p.
    let mut scaled = model.clone();
    scaled
        .get_mut("b0.fc2.weight")
        .unwrap()
        .value_mut()
        .mapv_inplace(|w| w * p);
    let want = net.forward(&scaled, x.view()).unwrap();
    let got = sd.forward(&model, x.view()).unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Backpropagation in evaluation mode goes through the scale.
    let (_, g) = sd.loss_and_gradients(&model, x.view(), y.view()).unwrap();
    let (_, g_scaled) = net.loss_and_gradients(&scaled, x.view(), y.view()).unwrap();
    for (a, b) in g["b0.fc1.weight"].iter().zip(&g_scaled["b0.fc1.weight"]) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn survival_probabilities_outside_zero_one_are_typed_errors() {
    for p in [0.0f32, -0.5, 1.01, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            StochasticDepth::linear(p),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            Layer::residual(vec![], vec![]).with_survival(p),
            Err(Error::InvalidParameter { .. })
        ));
    }
    // A block built with a bad survival inside the crate: `check` finds it.
    let (model, net) = residual_mlp(1);
    let mut layers = net.layers().to_vec();
    layers[1] = Layer::Residual {
        body: vec![],
        shortcut: vec![],
        survival: 0.0,
    };
    assert!(matches!(
        Network::new(layers).check(&model),
        Err(Error::InvalidParameter {
            name: "survival",
            ..
        })
    ));
    let rule = StochasticDepth::linear(0.5).unwrap();
    let sd = rule.apply(&net).unwrap();
    assert_eq!(sd.layers()[1].survival(), Some(0.5));
}

#[test]
fn removing_blocks_splices_their_shortcuts_and_every_block_is_an_error() {
    let (model, net) = residual_mlp(3);
    // Layers: 0 stem, 1 block, 2 relu, 3 block, 4 relu, 5 block, 6 relu, 7 head.
    let cut = remove_blocks(&net, &[1]).unwrap();
    let mut want = net.layers().to_vec();
    want.remove(3);
    assert_eq!(cut.layers(), &want[..]);
    cut.check(&model).unwrap();
    let short = Network::new(vec![
        Layer::residual(vec![Layer::Relu], vec![Layer::Flatten, Layer::Relu]),
        Layer::residual(vec![], vec![]),
    ]);
    assert_eq!(
        remove_blocks(&short, &[0]).unwrap().layers(),
        &[Layer::Flatten, Layer::Relu, Layer::residual(vec![], vec![])]
    );
    for bad in [&[0usize, 1, 2][..], &[3], &[0, 0]] {
        assert!(
            matches!(
                remove_blocks(&net, bad),
                Err(Error::InvalidParameter { .. })
            ),
            "{bad:?}"
        );
    }
    let plain = Network::new(vec![Layer::Relu]);
    assert!(matches!(
        remove_blocks(&plain, &[]),
        Err(Error::Empty { .. })
    ));
}

#[test]
fn greedy_dropping_removes_the_harmless_block_first_and_reports_each_step() {
    let (mut model, net) = residual_mlp(3);
    model
        .get_mut("b2.fc2.weight")
        .unwrap()
        .value_mut()
        .fill(0.0);
    let data = crate::io::idx::Dataset {
        images: batch(30, 6, 0.33),
        labels: Array1::from_iter((0..30).map(|i| (i % 3) as u8)),
        image_shape: vec![6],
    };
    let report = BlockDropping::new(2, 7)
        .unwrap()
        .run(&net, &model, &data)
        .unwrap();
    assert_eq!(report.order.len(), 2);
    // The first choice is the block whose removal alone gives the lowest loss.
    let alone: Vec<f64> = (0..3)
        .map(|b| {
            let cut = remove_blocks(&net, &[b]).unwrap();
            cut.evaluate(&model, &data, 7).unwrap().loss
        })
        .collect();
    let min = alone.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(alone[report.order[0]], min);
    assert_eq!(report.steps[1].loss, min);
    // Removing the block with a zero body changes nothing.
    assert_eq!(alone[2], report.steps[0].loss);
    assert!(min <= report.steps[0].loss);
    assert_eq!(report.steps.len(), 3);
    assert_eq!(report.steps[0], net.evaluate(&model, &data, 7).unwrap());
    let curve = drop_curve(&net, &model, &report.order, &data, 5).unwrap();
    assert_eq!(curve.len(), 3);
    for (c, s) in curve.iter().zip(&report.steps) {
        assert_eq!(c.correct, s.correct);
        assert!((c.loss - s.loss).abs() < 1e-6);
    }
    assert!(matches!(
        BlockDropping::new(3, 7).unwrap().run(&net, &model, &data),
        Err(Error::InvalidParameter { name: "remove", .. })
    ));
    assert!(matches!(
        BlockDropping::new(1, 0),
        Err(Error::InvalidParameter { .. })
    ));
    let plain = Network::mlp(&mut Model::new(), &[6, 3], 1).unwrap();
    assert!(matches!(
        BlockDropping::new(0, 4).unwrap().run(&plain, &model, &data),
        Err(Error::Empty { .. })
    ));
}

#[test]
fn removing_blocks_from_a_model_drops_their_orphaned_parameters() {
    let (mut model, net) = residual_mlp(3);
    let x = batch(4, 6, 0.61);
    let plain_cut = remove_blocks(&net, &[0, 2]).unwrap();
    let want = plain_cut.forward(&model, x.view()).unwrap();
    let before = model.len();
    // Errors leave the model as it was.
    assert!(matches!(
        remove_blocks_from_model(&net, &mut model, &[0, 1, 2]),
        Err(Error::InvalidParameter { .. })
    ));
    assert_eq!(model.len(), before);
    let cut = remove_blocks_from_model(&net, &mut model, &[2, 0]).unwrap();
    assert_eq!(cut, plain_cut);
    assert_eq!(model.len(), before - 4);
    for gone in [
        "b0.fc1.weight",
        "b0.fc2.weight",
        "b2.fc1.weight",
        "b2.fc2.weight",
    ] {
        assert!(!model.contains(gone), "{gone}");
    }
    assert!(model.contains("b1.fc1.weight") && model.contains("head.weight"));
    cut.check(&model).unwrap();
    assert_eq!(cut.forward(&model, x.view()).unwrap(), want);
    // A parameter the remaining network still reads (a shortcut's, or one shared with a
    // kept block) stays.
    let mut shared = Model::new();
    shared.add("s.weight", wave(&[6, 6], 0.4)).unwrap();
    shared.add("p.weight", wave(&[6, 6], 0.8)).unwrap();
    let lin = |w: &str| Layer::Linear {
        weight: w.into(),
        bias: None,
    };
    let two = Network::new(vec![
        Layer::residual(vec![lin("s.weight")], vec![lin("p.weight")]),
        Layer::residual(vec![lin("s.weight")], vec![]),
    ]);
    let cut = remove_blocks_from_model(&two, &mut shared, &[0]).unwrap();
    assert_eq!(cut.layers()[0], lin("p.weight"));
    assert_eq!(shared.len(), 2);
}
