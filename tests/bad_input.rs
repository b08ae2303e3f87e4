//! Bad input gets a typed error naming what was wrong, never a panic.

mod common;

use common::normal;
use ndarray::{Array1, ArrayD, IxDyn};
use slimnn::prune::{
    ChannelAxis, ChannelCriterion, GlobalPruner, MagnitudePruner, NmPruner, Obd, PruneContext,
    Pruner, Schedule, Statistics, StructuredPruner, Taylor, UnstructuredPruner, Wanda,
    merge_neurons,
};
use slimnn::{Error, LayerKind, Model, Selector};

fn ctx<'a>() -> PruneContext<'a, f32> {
    PruneContext::new().with_name("fc.weight")
}

#[test]
fn non_finite_weights() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut w = normal(&[300, 300], 1);
        w[[123, 45]] = bad;
        let pruners: Vec<Box<dyn Pruner>> = vec![
            Box::new(MagnitudePruner::magnitude(0.5).unwrap()),
            Box::new(UnstructuredPruner::new(Taylor, 0.5).unwrap()),
            Box::new(StructuredPruner::new(ChannelCriterion::L2, 0.5).unwrap()),
            Box::new(NmPruner::magnitude(2, 4).unwrap()),
        ];
        let g = normal(&[300, 300], 2);
        let c = ctx().with_gradient(g.view());
        for p in &pruners {
            match p.mask(&w, &c) {
                Err(Error::NonFinite { what, index, .. }) => {
                    assert!(what.contains("fc.weight"), "{what}");
                    assert_eq!(index, 123 * 300 + 45);
                }
                other => panic!("expected NonFinite, got {other:?}"),
            }
        }
        let mut copy = w.clone();
        let err = GlobalPruner::magnitude(0.5)
            .unwrap()
            .prune(&mut [copy.view_mut()], &[ctx()])
            .unwrap_err();
        assert!(
            matches!(err, Error::NonFinite { index, .. } if index == 123 * 300 + 45),
            "{err}"
        );
        assert_eq!(
            copy.iter().filter(|x| **x == 0.0).count(),
            0,
            "nothing is pruned on error"
        );
    }
}

#[test]
fn non_finite_statistics() {
    let w = normal(&[4, 4], 1);
    let mut g = normal(&[4, 4], 2);
    g[[1, 1]] = f32::NAN;
    let err = UnstructuredPruner::new(Taylor, 0.5)
        .unwrap()
        .mask(&w, &ctx().with_gradient(g.view()))
        .unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite { what, index: 5, .. } if what.contains("gradient")),
        "{err}"
    );
}

#[test]
fn out_of_range_configuration() {
    for s in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        let err = MagnitudePruner::magnitude(s).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidParameter {
                    name: "sparsity",
                    ..
                }
            ),
            "{err}"
        );
        assert!(GlobalPruner::magnitude(s).is_err());
        assert!(StructuredPruner::new(ChannelCriterion::L1, s).is_err());
        assert!(Schedule::constant(s).is_err());
    }
    let err = MagnitudePruner::magnitude(17usize)
        .unwrap()
        .mask(&normal(&[4, 4], 1), &ctx())
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { name: "amount", .. }),
        "{err}"
    );
    for (n, m) in [(4, 4), (5, 4), (0, 4), (1, 1)] {
        assert!(
            matches!(
                NmPruner::magnitude(n, m),
                Err(Error::InvalidParameter { .. })
            ),
            "{n}:{m}"
        );
    }
    assert!(Schedule::agp(0.9, 0.5, 0, 10, 1).is_err());
    assert!(Schedule::agp(0.0, 0.5, 0, 0, 1).is_err());
    assert!(Schedule::agp(0.0, 0.5, 0, 10, 0).is_err());
    assert!(Schedule::agp(0.0, 0.5, usize::MAX, 10, 10).is_err());
}

#[test]
fn shapes_that_do_not_fit() {
    // M does not divide the input dimension.
    let err = NmPruner::magnitude(2, 4)
        .unwrap()
        .mask(&normal(&[3, 6], 1), &ctx())
        .unwrap_err();
    assert!(
        matches!(&err, Error::BadShape { reason, .. } if reason.contains("does not divide")),
        "{err}"
    );
    // N:M needs an input axis.
    assert!(matches!(
        NmPruner::magnitude(2, 4)
            .unwrap()
            .mask(&normal(&[8], 1), &ctx()),
        Err(Error::BadShape { .. })
    ));
    // Statistics whose shape differs from the weights.
    let g = normal(&[4, 5], 2);
    let err = UnstructuredPruner::new(Obd, 0.5)
        .unwrap()
        .mask(&normal(&[4, 4], 1), &ctx().with_hessian_diag(g.view()))
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let norms = Array1::<f32>::ones(7);
    let err = UnstructuredPruner::wanda(0.5)
        .unwrap()
        .mask(
            &normal(&[4, 4], 1),
            &ctx().with_activation_norms(norms.view()),
        )
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // Input-channel pruning of a 1-D tensor.
    let err = StructuredPruner::new(ChannelCriterion::L1, 0.5)
        .unwrap()
        .with_axis(ChannelAxis::Input)
        .mask(
            &normal(&[8], 1),
            &PruneContext::new().with_kind(LayerKind::Bias),
        )
        .unwrap_err();
    assert!(matches!(err, Error::WrongKind { .. }), "{err}");
    // A buffer that does not hold the shape.
    let mut buf = vec![0.5f32; 10];
    let err = MagnitudePruner::magnitude(0.5)
        .unwrap()
        .prune_slice(&mut buf, &[3, 4], &PruneContext::new())
        .unwrap_err();
    assert!(matches!(err, Error::BadShape { .. }), "{err}");
    // Merging layers that do not chain.
    let err = merge_neurons(
        &ndarray::Array2::<f32>::ones((4, 3)),
        None,
        &ndarray::Array2::<f32>::ones((2, 5)),
        1usize,
    )
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

#[test]
fn missing_statistics() {
    let w = normal(&[4, 4], 1);
    for (p, stat) in [
        (
            Box::new(UnstructuredPruner::new(Taylor, 0.5).unwrap()) as Box<dyn Pruner>,
            "gradient",
        ),
        (
            Box::new(UnstructuredPruner::new(Obd, 0.5).unwrap()),
            "hessian_diag",
        ),
        (
            Box::new(UnstructuredPruner::new(Wanda, 0.5).unwrap()),
            "activation_norms (or layer_stats)",
        ),
    ] {
        match p.mask(&w, &ctx()) {
            Err(Error::MissingStatistic {
                statistic, what, ..
            }) => {
                assert_eq!(statistic, stat);
                assert!(what.contains("fc.weight"));
            }
            other => panic!("expected MissingStatistic, got {other:?}"),
        }
    }
}

#[test]
fn empty_tensors() {
    let w = ArrayD::<f32>::zeros(IxDyn(&[0, 4]));
    for p in [
        Box::new(MagnitudePruner::magnitude(0.5).unwrap()) as Box<dyn Pruner>,
        Box::new(StructuredPruner::new(ChannelCriterion::L1, 0.5).unwrap()),
    ] {
        assert!(matches!(p.mask(&w, &ctx()), Err(Error::Empty { .. })));
    }
    assert!(matches!(
        GlobalPruner::magnitude(0.5).unwrap().masks::<f32>(&[], &[]),
        Err(Error::Empty { .. })
    ));
}

#[test]
fn unknown_parameter_names() {
    let mut m = Model::new();
    m.add("fc.weight", normal(&[4, 4], 1)).unwrap();
    assert!(matches!(m.get("fc2.weight"), Err(Error::UnknownParameter(n)) if n == "fc2.weight"));
    let stats = Statistics::new().with_gradient("nope.weight", normal(&[4, 4], 2));
    let err = m
        .prune(
            &Selector::all(),
            &UnstructuredPruner::new(Taylor, 0.5).unwrap(),
            &stats,
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownParameter(ref n) if n == "nope.weight"),
        "{err}"
    );
    // A glob that matches nothing is almost always a typo.
    let err = m
        .prune(
            &Selector::glob("fc1.*"),
            &MagnitudePruner::magnitude(0.5).unwrap(),
            &Statistics::new(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Empty { .. }), "{err}");
    assert!(
        m.remove_pruned_channels(&["fc.weight", "missing.weight"])
            .is_err()
    );
    // A failed prune leaves every parameter as it was.
    assert!(m.get("fc.weight").unwrap().mask().is_none());
}

#[test]
fn duplicate_and_ill_shaped_parameters() {
    let mut m = Model::new();
    m.add("fc.weight", normal(&[4, 4], 1)).unwrap();
    assert!(matches!(
        m.add("fc.weight", normal(&[4, 4], 1)),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        m.add_param(
            "x",
            LayerKind::Conv2d,
            slimnn::DType::F32,
            normal(&[4, 4], 1)
        ),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        m.set_kind("fc.weight", LayerKind::Bias),
        Err(Error::BadShape { .. })
    ));
}

#[test]
fn corrupt_idx_files() {
    use slimnn::io::idx::parse_idx;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("bad magic", vec![0, 0, 9, 1, 0, 0, 0, 1, 5]),
        ("zero dims", vec![0, 0, 8, 0]),
        ("short data", vec![0, 0, 8, 1, 0, 0, 0, 4, 1, 2]),
        ("long data", vec![0, 0, 8, 1, 0, 0, 0, 1, 1, 2]),
        (
            "absurd size",
            vec![
                0, 0, 8, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1,
            ],
        ),
    ];
    for (what, bytes) in cases {
        assert!(
            matches!(
                parse_idx(&bytes[..], what),
                Err(Error::InvalidFormat { format: "IDX", .. })
            ),
            "{what}"
        );
    }
}

#[test]
fn merging_down_to_one_neuron() {
    let w1 = ndarray::array![[1.0f32, 2.0], [1.0, 2.0]];
    let w2 = ndarray::array![[1.0f32, 1.0]];
    let merged = merge_neurons(&w1, None, &w2, 1usize).unwrap();
    assert_eq!(merged.w2, ndarray::array![[2.0f32]]);
    assert!(matches!(
        merge_neurons(&w1, None, &w2, 2usize),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn pytorch_mask_names_that_collide() {
    use slimnn::io::safetensors::{MaskExport, SaveOptions};
    let mut m = Model::new();
    m.add("w", normal(&[4, 4], 1)).unwrap();
    m.add("w_mask", normal(&[4, 4], 2)).unwrap();
    m.prune(
        &Selector::glob("w"),
        &MagnitudePruner::magnitude(0.5).unwrap(),
        &Statistics::new(),
    )
    .unwrap();
    let opts = SaveOptions {
        masks: MaskExport::PyTorch,
        ..SaveOptions::default()
    };
    assert!(matches!(
        m.to_safetensors(&opts),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(m.to_safetensors(&SaveOptions::default()).is_ok());
}

#[test]
fn shapes_that_change_or_do_not_fit() {
    // Per-output pruning needs rows.
    let scalar = ArrayD::from_elem(IxDyn(&[]), 1.0f32);
    let per_row = MagnitudePruner::magnitude(0.5)
        .unwrap()
        .with_scope(slimnn::prune::Scope::PerOutput);
    assert!(matches!(
        per_row.mask(&scalar, &ctx()),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        per_row.mask(&normal(&[6], 1), &ctx()),
        Err(Error::BadShape { .. })
    ));
    // A bias of the wrong length.
    let mut m = Model::new();
    m.add("fc.weight", ArrayD::zeros(IxDyn(&[4, 3]))).unwrap();
    m.add("fc.bias", ArrayD::zeros(IxDyn(&[3]))).unwrap();
    m.add("fc2.weight", normal(&[2, 4], 1)).unwrap();
    assert!(matches!(
        m.remove_pruned_channels(&["fc.weight", "fc2.weight"]),
        Err(Error::ShapeMismatch { .. })
    ));
    // Replacing a Linear weight by a vector.
    assert!(
        m.get_mut("fc.weight")
            .unwrap()
            .replace_value(ArrayD::zeros(IxDyn(&[4])))
            .is_err()
    );
    // A user pruner returning a mask of the wrong shape leaves the model untouched.
    struct Wrong;
    impl Pruner for Wrong {
        fn mask(
            &self,
            w: &ndarray::ArrayRef<f32, IxDyn>,
            _: &PruneContext<'_, f32>,
        ) -> slimnn::Result<slimnn::Mask> {
            Ok(slimnn::Mask::ones(&[w.len() + 1]))
        }
    }
    assert!(matches!(
        m.prune(&Selector::prunable(), &Wrong, &Statistics::new()),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(m.params().iter().all(|p| p.mask().is_none()));
    // Negative activation norms.
    let norms = Array1::from(vec![1.0f32, -1.0, 1.0, 1.0]);
    let err = UnstructuredPruner::wanda(0.5).unwrap().mask(
        &normal(&[2, 4], 1),
        &ctx().with_activation_norms(norms.view()),
    );
    assert!(matches!(err, Err(Error::InvalidParameter { .. })));
    // Mask words for a shape whose element count overflows.
    assert!(slimnn::Mask::from_words(&[1 << 32, 1 << 32], vec![]).is_err());
}

#[test]
fn networks_that_do_not_chain() {
    use slimnn::nn::{Layer, Network};
    let mut m = Model::new();
    m.add("fc1.weight", normal(&[4, 5], 1)).unwrap();
    m.add("fc2.weight", normal(&[3, 7], 2)).unwrap();
    let net = Network::new(vec![
        Layer::Linear {
            weight: "fc1.weight".into(),
            bias: None,
        },
        Layer::Relu,
        Layer::Linear {
            weight: "fc2.weight".into(),
            bias: None,
        },
    ]);
    let x = ndarray::Array2::<f32>::zeros((2, 5));
    assert!(matches!(
        net.forward(&m, x.view()),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn training_continues_after_layers_shrink() {
    use slimnn::nn::{Network, Sgd, train_epoch};
    let mut m = Model::new();
    let net = Network::mlp(&mut m, &[5, 6, 3], 1).unwrap();
    let data = slimnn::io::idx::Dataset {
        images: normal(&[8, 5], 2).into_dimensionality().unwrap(),
        labels: Array1::from(vec![0u8, 1, 2, 0, 1, 2, 0, 1]),
        image_shape: vec![5],
    };
    let mut sgd = Sgd::new(0.1, 0.9, 0.0).unwrap();
    train_epoch(&net, &mut m, &mut sgd, &data, 4, 0).unwrap();
    m.merge_neurons("fc1.weight", "fc2.weight", 2usize).unwrap();
    train_epoch(&net, &mut m, &mut sgd, &data, 4, 1).unwrap();
    assert_eq!(m.get("fc1.weight").unwrap().shape(), &[4, 5]);
}

#[test]
fn idx_header_overflowing_to_the_last_u64() {
    // Seven dimensions whose product is exactly 2^64 − 1.
    let mut bytes = vec![0, 0, 8, 7];
    for d in [3u32, 5, 17, 257, 641, 65537, 6700417] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    assert!(matches!(
        slimnn::io::idx::parse_idx(&bytes[..], "hostile"),
        Err(Error::InvalidFormat { .. })
    ));
}
