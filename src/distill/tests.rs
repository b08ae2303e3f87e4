use ndarray::{Array1, Array2, ArrayD, IxDyn, array};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

use super::*;

fn randn(shape: &[usize], seed: u64, scale: f32) -> ArrayD<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    })
}

fn rand2(n: usize, c: usize, seed: u64, scale: f32) -> Array2<f32> {
    randn(&[n, c], seed, scale).into_dimensionality().unwrap()
}

/// Checks `grad` against central differences of `f` at `x` (in f32, so a loose
/// relative tolerance).
fn check_gradient(x: &ArrayD<f32>, grad: &ArrayD<f32>, f: impl Fn(&ArrayD<f32>) -> f32, h: f32) {
    assert_eq!(x.shape(), grad.shape());
    let scale = grad.iter().fold(0.0f32, |m, g| m.max(g.abs())).max(1e-3);
    for i in 0..x.len() {
        let mut xp = x.clone();
        let mut xm = x.clone();
        xp.as_slice_mut().unwrap()[i] += h;
        xm.as_slice_mut().unwrap()[i] -= h;
        let numeric = (f(&xp) - f(&xm)) / (2.0 * h);
        let analytic = grad.as_slice().unwrap()[i];
        assert!(
            (numeric - analytic).abs() <= 2e-2 * scale,
            "element {i}: numeric {numeric}, analytic {analytic} (scale {scale})"
        );
    }
}

#[test]
fn soft_target_gradient_matches_finite_differences() {
    let labels = array![0u8, 2, 1, 3];
    let teacher = rand2(4, 5, 1, 3.0);
    for (t, alpha) in [(1.0, 0.5), (4.0, 0.9), (20.0, 1.0), (2.0, 0.0)] {
        let kd = SoftTargets::new(t, alpha).unwrap();
        let student = rand2(4, 5, 2, 3.0).into_dyn();
        let f = |s: &ArrayD<f32>| {
            let s = s.view().into_dimensionality().unwrap();
            distillation_loss(s, teacher.view(), labels.view(), &kd)
                .unwrap()
                .0
        };
        let s2 = student.view().into_dimensionality().unwrap();
        let (_, g) = distillation_loss(s2, teacher.view(), labels.view(), &kd).unwrap();
        check_gradient(&student, &g.into_dyn(), f, 1e-2);
    }
}

#[test]
fn kl_is_nonnegative_and_zero_when_student_equals_teacher() {
    let kd = SoftTargets::new(3.0, 1.0).unwrap();
    let labels = array![1u8, 0, 4];
    let teacher = rand2(3, 5, 3, 4.0);
    let (same, g) = distillation_loss(teacher.view(), teacher.view(), labels.view(), &kd).unwrap();
    assert!(same.abs() < 1e-5, "{same}");
    assert!(g.iter().all(|v| v.abs() < 1e-6));
    // Shifting every logit of a row leaves the softmax unchanged.
    let shifted = &teacher + 2.5;
    let (l, _) = distillation_loss(shifted.view(), teacher.view(), labels.view(), &kd).unwrap();
    assert!(l.abs() < 1e-4);
    for seed in 0..20 {
        let s = rand2(3, 5, 100 + seed, 5.0);
        let (l, _) = distillation_loss(s.view(), teacher.view(), labels.view(), &kd).unwrap();
        assert!(l >= 0.0, "{l}");
    }
}

#[test]
fn high_temperature_approaches_logit_matching_as_the_paper_derives() {
    // Hinton et al. 2015, eq. 3-4: with zero-mean logits, at high T,
    // ∂C/∂zᵢ ≈ (zᵢ − vᵢ)/(N T²); times the T² of the loss, (z − v)/N (N classes).
    let classes = 6;
    let center = |a: Array2<f32>| {
        let mean = a
            .mean_axis(ndarray::Axis(1))
            .unwrap()
            .insert_axis(ndarray::Axis(1));
        &a - &mean
    };
    let student = center(rand2(3, classes, 5, 2.0));
    let teacher = center(rand2(3, classes, 6, 2.0));
    let labels = array![0u8, 1, 2];
    let (_, lm) = logit_matching(student.view(), teacher.view()).unwrap();
    let mut last = f32::INFINITY;
    for t in [5.0f32, 50.0, 500.0] {
        let kd = SoftTargets::new(t, 1.0).unwrap();
        let (_, g) = distillation_loss(student.view(), teacher.view(), labels.view(), &kd).unwrap();
        let expected = &lm / classes as f32;
        let err = (&g - &expected).iter().fold(0.0f32, |m, v| m.max(v.abs()))
            / expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(err < last, "the error shrinks with T: {err} at T = {t}");
        last = err;
    }
    assert!(last < 1e-2, "relative error {last} at T = 500");
}

#[test]
fn an_ensemble_of_one_equals_its_member_and_averages_otherwise() {
    let a = rand2(4, 3, 7, 3.0);
    let b = rand2(4, 3, 8, 3.0);
    let one = ensemble_soft_targets(&[a.view()], 5.0).unwrap();
    assert_eq!(one, softmax_t(a.view(), 5.0).unwrap());
    let two = ensemble_soft_targets(&[a.view(), b.view()], 5.0).unwrap();
    let mean = (softmax_t(a.view(), 5.0).unwrap() + softmax_t(b.view(), 5.0).unwrap()) / 2.0;
    assert!((&two - &mean).iter().all(|v| v.abs() < 1e-6));
    assert!(two.rows().into_iter().all(|r| (r.sum() - 1.0).abs() < 1e-5));
    // The loss from an ensemble of one is the loss from its member.
    let kd = SoftTargets::new(5.0, 0.8).unwrap();
    let labels = array![0u8, 1, 2, 0];
    let s = rand2(4, 3, 9, 1.0);
    let direct = distillation_loss(s.view(), a.view(), labels.view(), &kd).unwrap();
    let via = soft_target_loss(s.view(), one.view(), labels.view(), &kd).unwrap();
    assert_eq!(direct, via);
    assert!(matches!(
        ensemble_soft_targets(&[], 1.0),
        Err(Error::Empty { .. })
    ));
}

#[test]
fn logit_matching_and_hint_gradients_match_finite_differences() {
    let t = rand2(3, 4, 10, 2.0);
    let s = rand2(3, 4, 11, 2.0).into_dyn();
    let (_, g) = logit_matching(s.view().into_dimensionality().unwrap(), t.view()).unwrap();
    check_gradient(
        &s,
        &g.into_dyn(),
        |x| {
            logit_matching(x.view().into_dimensionality().unwrap(), t.view())
                .unwrap()
                .0
        },
        1e-2,
    );
    let hint = randn(&[2, 3, 4, 4], 12, 1.0);
    let guided = randn(&[2, 3, 4, 4], 13, 1.0);
    let (_, g) = hint_loss(guided.view(), hint.view()).unwrap();
    check_gradient(
        &guided,
        &g,
        |x| hint_loss(x.view(), hint.view()).unwrap().0,
        1e-2,
    );
}

#[test]
fn regressor_gradients_match_finite_differences() {
    for (kind, shape, target) in [
        (RegressorKind::Linear, vec![3, 5], vec![3, 4]),
        (RegressorKind::Conv1x1, vec![2, 5, 3, 2], vec![2, 4, 3, 2]),
    ] {
        let r = Regressor::new(kind, 5, 4, 3).unwrap();
        let x = randn(&shape, 14, 1.0);
        let u = randn(&target, 15, 1.0);
        let loss = |r: &Regressor, x: &ArrayD<f32>| {
            hint_loss(r.forward(x.view()).unwrap().view(), u.view())
                .unwrap()
                .0
        };
        let y = r.forward(x.view()).unwrap();
        assert_eq!(y.shape(), &target[..]);
        let (_, dy) = hint_loss(y.view(), u.view()).unwrap();
        let g = r.backward(x.view(), dy.view()).unwrap();
        check_gradient(&x, &g.input, |x| loss(&r, x), 1e-2);
        let w = r.weight().clone().into_dyn();
        check_gradient(
            &w,
            &g.weight.clone().into_dyn(),
            |w| {
                let w = w.clone().into_dimensionality().unwrap();
                let r = Regressor::from_parts(kind, w, r.bias().clone()).unwrap();
                loss(&r, &x)
            },
            1e-2,
        );
        let b = r.bias().clone().into_dyn();
        check_gradient(
            &b,
            &g.bias.clone().into_dyn(),
            |b| {
                let b: Array1<f32> = b.clone().into_dimensionality().unwrap();
                let r = Regressor::from_parts(kind, r.weight().clone(), b).unwrap();
                loss(&r, &x)
            },
            1e-2,
        );
    }
}

#[test]
fn attention_transfer_gradient_matches_finite_differences() {
    let teacher = randn(&[2, 5, 3, 3], 16, 1.0);
    for p in [1.0f32, 2.0, 3.0] {
        let at = Attention::new(10.0, p).unwrap();
        let student = randn(&[2, 3, 3, 3], 17, 1.0);
        let (l, g) = attention_transfer(student.view(), teacher.view(), &at).unwrap();
        assert!(l > 0.0);
        check_gradient(
            &student,
            &g,
            |s| attention_transfer(s.view(), teacher.view(), &at).unwrap().0,
            1e-3,
        );
    }
    let at = Attention::new(1.0, 2.0).unwrap();
    let q = attention_map(teacher.view(), 2.0).unwrap();
    assert_eq!(q.dim(), (2, 9));
    assert!(q.rows().into_iter().all(|r| (r.dot(&r) - 1.0).abs() < 1e-5));
    let (same, _) = attention_transfer(teacher.view(), teacher.view(), &at).unwrap();
    assert!(same.abs() < 1e-9);
}

#[test]
fn bad_settings_and_shapes_are_typed_errors() {
    for t in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            SoftTargets::new(t, 0.5),
            Err(Error::InvalidParameter {
                name: "temperature",
                ..
            })
        ));
        assert!(matches!(
            softmax_t(array![[1.0f32]].view(), t),
            Err(Error::InvalidParameter { .. })
        ));
    }
    for a in [-0.1f32, 1.1, f32::NAN] {
        assert!(matches!(
            SoftTargets::new(2.0, a),
            Err(Error::InvalidParameter { name: "alpha", .. })
        ));
    }
    for b in [-1.0f32, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            Attention::new(b, 2.0),
            Err(Error::InvalidParameter { name: "beta", .. })
        ));
    }
    assert!(matches!(
        Attention::new(1.0, 0.5),
        Err(Error::InvalidParameter { name: "p", .. })
    ));
    let kd = SoftTargets::new(2.0, 0.5).unwrap();
    let s = rand2(2, 3, 1, 1.0);
    let t4 = rand2(2, 4, 1, 1.0);
    let t3 = rand2(3, 3, 1, 1.0);
    let y = array![0u8, 1];
    for t in [&t4, &t3] {
        assert!(matches!(
            distillation_loss(s.view(), t.view(), y.view(), &kd),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            logit_matching(s.view(), t.view()),
            Err(Error::ShapeMismatch { .. })
        ));
    }
    assert!(matches!(
        distillation_loss(s.view(), s.view(), array![0u8, 3].view(), &kd),
        Err(Error::InvalidParameter { .. })
    ));
    let mut nan = s.clone();
    nan[[1, 1]] = f32::NAN;
    assert!(matches!(
        distillation_loss(nan.view(), s.view(), y.view(), &kd),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        distillation_loss_slice(&[0.0; 6], &[0.0; 8], &[0, 1], 3, &kd),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        distillation_loss_slice(&[0.0; 6], &[0.0; 9], &[0, 1], 3, &kd),
        Err(Error::ShapeMismatch { .. })
    ));
    // Attention pairs of different spatial sizes.
    let at = Attention::new(1.0, 2.0).unwrap();
    let a = randn(&[2, 3, 4, 4], 1, 1.0);
    let b = randn(&[2, 3, 2, 2], 1, 1.0);
    assert!(matches!(
        attention_transfer(a.view(), b.view(), &at),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        attention_transfer(randn(&[2, 9], 1, 1.0).view(), b.view(), &at),
        Err(Error::BadShape { .. })
    ));
    // A regressor that does not fit the guided layer or the hint.
    let r = Regressor::new(RegressorKind::Conv1x1, 3, 5, 1).unwrap();
    assert!(matches!(
        r.forward(randn(&[2, 4, 3, 3], 1, 1.0).view()),
        Err(Error::ShapeMismatch { .. })
    ));
    let y = r.forward(a.view()).unwrap();
    assert!(matches!(
        hint_loss(y.view(), a.view()),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn slices_agree_with_arrays() {
    let kd = SoftTargets::new(3.0, 0.6).unwrap();
    let s = rand2(2, 3, 21, 2.0);
    let t = rand2(2, 3, 22, 2.0);
    let y = array![2u8, 0];
    let (l, g) = distillation_loss(s.view(), t.view(), y.view(), &kd).unwrap();
    let (ls, gs) = distillation_loss_slice(
        s.as_slice().unwrap(),
        t.as_slice().unwrap(),
        &[2, 0],
        3,
        &kd,
    )
    .unwrap();
    assert_eq!((l, g.as_slice().unwrap()), (ls, &gs[..]));
    let (l, g) = logit_matching(s.view(), t.view()).unwrap();
    let (ls, gs) = logit_matching_slice(s.as_slice().unwrap(), t.as_slice().unwrap(), 3).unwrap();
    assert_eq!((l, g.as_slice().unwrap()), (ls, &gs[..]));
    let a = randn(&[1, 2, 2, 2], 23, 1.0);
    let b = randn(&[1, 4, 2, 2], 24, 1.0);
    let at = Attention::new(2.0, 2.0).unwrap();
    let (l, g) = attention_transfer(a.view(), b.view(), &at).unwrap();
    let (ls, gs) = attention_transfer_slice(
        a.as_slice().unwrap(),
        &[1, 2, 2, 2],
        b.as_slice().unwrap(),
        &[1, 4, 2, 2],
        &at,
    )
    .unwrap();
    assert_eq!((l, g.as_slice().unwrap()), (ls, &gs[..]));
    let (l, g) = hint_loss(a.view(), a.view()).unwrap();
    let (ls, gs) =
        hint_loss_slice(a.as_slice().unwrap(), a.as_slice().unwrap(), &[1, 2, 2, 2]).unwrap();
    assert_eq!((l, g.as_slice().unwrap()), (ls, &gs[..]));
}

mod training {
    use super::*;
    use crate::io::idx::Dataset;
    use crate::model::Model;
    use crate::nn::{ConvSpec, Layer, Network, Sgd};

    /// conv (`c` filters 3×3) → ReLU → flatten → Linear to 3 classes, on `[1, 6, 6]`.
    fn convnet(prefix: &str, c: usize, seed: u64) -> (Network, Model) {
        let mut m = Model::new();
        m.add(
            format!("{prefix}conv.weight"),
            randn(&[c, 1, 3, 3], seed, 0.5),
        )
        .unwrap();
        m.add(format!("{prefix}conv.bias"), randn(&[c], seed + 1, 0.1))
            .unwrap();
        m.add(
            format!("{prefix}fc.weight"),
            randn(&[3, c * 16], seed + 2, 0.3),
        )
        .unwrap();
        let net = Network::new(vec![
            Layer::Conv2d {
                weight: format!("{prefix}conv.weight"),
                bias: Some(format!("{prefix}conv.bias")),
                spec: ConvSpec::new(),
            },
            Layer::Relu,
            Layer::Flatten,
            Layer::Linear {
                weight: format!("{prefix}fc.weight"),
                bias: None,
            },
        ])
        .with_input_shape(&[1, 6, 6]);
        (net, m)
    }

    fn full_config() -> DistillConfig {
        DistillConfig {
            temperature: 2.0,
            alpha: 0.5,
            logit_weight: 0.3,
            hints: vec![HintPair {
                student_layer: 0,
                teacher_layer: 0,
                weight: 0.7,
            }],
            attention: vec![LayerPair {
                student_layer: 1,
                teacher_layer: 1,
            }],
            beta: 5.0,
            attention_p: 2.0,
            hints_only: false,
            seed: 3,
        }
    }

    fn data(n: usize, seed: u64) -> Dataset {
        let images = rand2(n, 36, seed, 1.0).mapv(f32::abs);
        Dataset {
            images,
            labels: (0..n).map(|i| (i % 3) as u8).collect(),
            image_shape: vec![1, 6, 6],
        }
    }

    #[test]
    fn distillation_gradients_match_finite_differences_through_the_network() {
        let (tnet, tmodel) = convnet("t.", 3, 10);
        let (snet, smodel) = convnet("s.", 2, 20);
        let teacher = Teacher::new(tnet, tmodel).unwrap();
        let kd = Distillation::new(full_config(), teacher, &snet, &smodel).unwrap();
        let d = data(4, 30);
        let step = kd
            .loss_and_gradients(&snet, &smodel, d.images.view(), d.labels.view(), None)
            .unwrap();
        assert_eq!(step.regressor_gradients.len(), 1);
        for name in ["s.conv.weight", "s.conv.bias", "s.fc.weight"] {
            let x = smodel.get(name).unwrap().value().clone();
            let f = |v: &ArrayD<f32>| {
                let mut m = smodel.clone();
                m.get_mut(name).unwrap().value_mut().assign(v);
                kd.loss_and_gradients(&snet, &m, d.images.view(), d.labels.view(), None)
                    .unwrap()
                    .loss
            };
            check_gradient(&x, &step.gradients[name], f, 1e-3);
        }
    }

    #[test]
    fn precomputed_teacher_outputs_give_the_same_step() {
        let (tnet, tmodel) = convnet("t.", 3, 10);
        let (snet, smodel) = convnet("s.", 2, 20);
        let teacher = Teacher::new(tnet, tmodel).unwrap();
        let kd = Distillation::new(full_config(), teacher.clone(), &snet, &smodel).unwrap();
        let d = data(4, 34);
        let (x, y) = (d.images.view(), d.labels.view());
        let direct = kd.loss_and_gradients(&snet, &smodel, x, y, None).unwrap();
        let outputs = teacher.outputs(x, &kd.teacher_layers()).unwrap();
        let given = kd
            .loss_and_gradients_from(&snet, &smodel, x, y, None, &outputs)
            .unwrap();
        assert_eq!(direct.loss, given.loss);
        assert_eq!(direct.gradients, given.gradients);
        let missing = (outputs.0.clone(), Vec::new());
        assert!(matches!(
            kd.loss_and_gradients_from(&snet, &smodel, x, y, None, &missing),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn the_hint_stage_trains_only_up_to_the_guided_layer() {
        let (tnet, tmodel) = convnet("t.", 3, 10);
        let (snet, mut smodel) = convnet("s.", 2, 20);
        let config = DistillConfig {
            hints_only: true,
            attention: vec![],
            ..full_config()
        };
        let mut kd =
            Distillation::new(config, Teacher::new(tnet, tmodel).unwrap(), &snet, &smodel).unwrap();
        let d = data(32, 31);
        let fc = smodel.get("s.fc.weight").unwrap().value().clone();
        let conv = smodel.get("s.conv.weight").unwrap().value().clone();
        let r0 = kd.regressors().next().unwrap().clone();
        let mut sgd = Sgd::new(0.005, 0.9, 0.0).unwrap();
        let first = kd
            .train_epoch(&snet, &mut smodel, &mut sgd, &d, 8, 0)
            .unwrap();
        let mut last = first;
        for e in 1..10 {
            last = kd
                .train_epoch(&snet, &mut smodel, &mut sgd, &d, 8, e)
                .unwrap();
        }
        assert!(last < first, "the hint loss falls: {first} → {last}");
        assert_eq!(smodel.get("s.fc.weight").unwrap().value(), &fc);
        assert_ne!(smodel.get("s.conv.weight").unwrap().value(), &conv);
        assert_ne!(kd.regressors().next().unwrap(), &r0, "the regressor trains");
    }

    #[test]
    fn training_is_deterministic_with_a_seed() {
        let (tnet, tmodel) = convnet("t.", 3, 10);
        let teacher = Teacher::new(tnet, tmodel).unwrap();
        let run = || {
            let (snet, mut smodel) = convnet("s.", 2, 20);
            let mut kd = Distillation::new(full_config(), teacher.clone(), &snet, &smodel).unwrap();
            let mut sgd = Sgd::new(0.05, 0.9, 0.0).unwrap();
            let d = data(32, 32);
            for e in 0..2 {
                kd.train_epoch(&snet, &mut smodel, &mut sgd, &d, 8, e)
                    .unwrap();
            }
            (smodel, kd.regressors().next().unwrap().clone())
        };
        let (a, ra) = run();
        let (b, rb) = run();
        for name in ["s.conv.weight", "s.conv.bias", "s.fc.weight"] {
            assert_eq!(a.get(name).unwrap().value(), b.get(name).unwrap().value());
        }
        assert_eq!(ra, rb);
    }

    #[test]
    fn bad_teachers_layers_and_batches_are_typed_errors_before_any_change() {
        let (tnet, tmodel) = convnet("t.", 3, 10);
        let (snet, mut smodel) = convnet("s.", 2, 20);
        let teacher = Teacher::new(tnet.clone(), tmodel.clone()).unwrap();
        let new = |c: DistillConfig| Distillation::new(c, teacher.clone(), &snet, &smodel);
        // A teacher whose model does not fit its network.
        let mut wrong = Model::new();
        wrong
            .add("t.conv.weight", randn(&[3, 1, 3, 3], 1, 1.0))
            .unwrap();
        wrong.add("t.conv.bias", randn(&[3], 1, 1.0)).unwrap();
        wrong.add("t.fc.weight", randn(&[3, 40], 1, 1.0)).unwrap();
        assert!(matches!(
            Teacher::new(tnet.clone(), wrong),
            Err(Error::ShapeMismatch { .. } | Error::BadShape { .. })
        ));
        let mut partial = Model::new();
        partial
            .add("t.conv.weight", randn(&[3, 1, 3, 3], 1, 1.0))
            .unwrap();
        assert!(matches!(
            Teacher::new(tnet.clone(), partial),
            Err(Error::UnknownParameter(_))
        ));
        // Settings out of range.
        for c in [
            DistillConfig {
                temperature: 0.0,
                ..full_config()
            },
            DistillConfig {
                alpha: 2.0,
                ..full_config()
            },
            DistillConfig {
                beta: -1.0,
                ..full_config()
            },
            DistillConfig {
                logit_weight: f32::NAN,
                ..full_config()
            },
        ] {
            assert!(matches!(new(c), Err(Error::InvalidParameter { .. })));
        }
        // Hint or attention layers that do not exist.
        let missing = HintPair {
            student_layer: 9,
            teacher_layer: 0,
            weight: 1.0,
        };
        assert!(matches!(
            new(DistillConfig {
                hints: vec![missing],
                ..full_config()
            }),
            Err(Error::InvalidParameter {
                name: "student layer",
                ..
            })
        ));
        let missing = LayerPair {
            student_layer: 1,
            teacher_layer: 7,
        };
        assert!(matches!(
            new(DistillConfig {
                attention: vec![missing],
                ..full_config()
            }),
            Err(Error::InvalidParameter {
                name: "teacher layer",
                ..
            })
        ));
        // A hint from feature maps to a vector; attention on vectors.
        let hint = HintPair {
            student_layer: 0,
            teacher_layer: 2,
            weight: 1.0,
        };
        assert!(matches!(
            new(DistillConfig {
                hints: vec![hint],
                ..full_config()
            }),
            Err(Error::ShapeMismatch { .. })
        ));
        let pair = LayerPair {
            student_layer: 2,
            teacher_layer: 2,
        };
        assert!(matches!(
            new(DistillConfig {
                attention: vec![pair],
                ..full_config()
            }),
            Err(Error::BadShape { .. })
        ));
        // Attention pairs of different spatial sizes.
        let mut big = Model::new();
        big.add("b.conv.weight", randn(&[3, 1, 1, 1], 1, 1.0))
            .unwrap();
        big.add("b.fc.weight", randn(&[3, 108], 1, 1.0)).unwrap();
        let bnet = Network::new(vec![
            Layer::Conv2d {
                weight: "b.conv.weight".into(),
                bias: None,
                spec: ConvSpec::new(),
            },
            Layer::Flatten,
            Layer::Linear {
                weight: "b.fc.weight".into(),
                bias: None,
            },
        ])
        .with_input_shape(&[1, 6, 6]);
        let pair = LayerPair {
            student_layer: 0,
            teacher_layer: 0,
        };
        let c = DistillConfig {
            hints: vec![],
            attention: vec![pair],
            ..full_config()
        };
        assert!(matches!(
            Distillation::new(c, Teacher::new(bnet, big).unwrap(), &snet, &smodel),
            Err(Error::ShapeMismatch { .. })
        ));
        // A regressor that does not fit the hint.
        let mut kd = new(full_config()).unwrap();
        let r = Regressor::new(RegressorKind::Conv1x1, 2, 5, 0).unwrap();
        assert!(matches!(
            kd.set_regressor(0, r, &snet, &smodel),
            Err(Error::ShapeMismatch { .. })
        ));
        let r = Regressor::new(RegressorKind::Conv1x1, 2, 3, 0).unwrap();
        kd.set_regressor(0, r.clone(), &snet, &smodel).unwrap();
        assert_eq!(kd.regressors().next().unwrap(), &r);
        // A bad batch changes nothing.
        let mut d = data(8, 33);
        d.labels[3] = 7;
        let before = smodel.clone();
        let mut sgd = Sgd::new(0.05, 0.9, 0.0).unwrap();
        assert!(
            kd.train_epoch(&snet, &mut smodel, &mut sgd, &d, 8, 0)
                .is_err()
        );
        assert_eq!(kd.regressors().next().unwrap(), &r);
        for name in ["s.conv.weight", "s.conv.bias", "s.fc.weight"] {
            assert_eq!(
                smodel.get(name).unwrap().value(),
                before.get(name).unwrap().value()
            );
        }
    }
}
