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
            "activation_norms",
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
