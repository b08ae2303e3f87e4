//! Bad input to the low-rank family gets a typed error, never a panic or a silent wrong
//! answer.

mod common;

use common::normal;
use ndarray::{Array2, Array4, ArrayD, IxDyn};
use slimnn::lowrank::{
    Budget, CpAls, Factorization, Factors, LayerSpectrum, LowRank, LowRankContext, RandomizedSvd,
    Rank, SpatialSeparable, TruncatedSvd, TtSvd, Tucker2, allocate_ranks,
};
use slimnn::nn::ConvSpec;
use slimnn::{Error, Model, Selector};

fn ctx<'a>() -> LowRankContext<'a> {
    LowRankContext::new().with_name("fc.weight")
}

fn linear_methods() -> Vec<Box<dyn LowRank>> {
    vec![
        Box::new(TruncatedSvd::new(Rank::Fixed(2)).unwrap()),
        Box::new(RandomizedSvd::new(Rank::Fixed(2)).unwrap()),
        Box::new(TtSvd::new(vec![2, 2], vec![2, 3], Rank::Fixed(2)).unwrap()),
    ]
}

fn conv_methods() -> Vec<Box<dyn LowRank>> {
    vec![
        Box::new(Tucker2::new(Rank::Fixed(2), Rank::Fixed(2)).unwrap()),
        Box::new(CpAls::new(2).unwrap().best_effort(true)),
        Box::new(SpatialSeparable::new(Rank::Fixed(2)).unwrap()),
    ]
}

#[test]
fn ranks_out_of_range() {
    assert!(matches!(
        TruncatedSvd::new(Rank::Fixed(0)),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(CpAls::new(0), Err(Error::InvalidParameter { .. })));
    assert!(Tucker2::new(Rank::Fixed(0), Rank::Fixed(3)).is_err());
    for energy in [0.0, -0.5, 1.5, f64::NAN] {
        assert!(matches!(
            TruncatedSvd::new(Rank::Energy(energy)),
            Err(Error::InvalidParameter { .. })
        ));
    }
    for ratio in [1.0, 0.5, f64::INFINITY, f64::NAN] {
        assert!(TruncatedSvd::new(Rank::Compression(ratio)).is_err());
    }
    // Above min(m, n): an error naming the limit.
    let w = normal(&[4, 6], 1);
    match TruncatedSvd::new(Rank::Fixed(5))
        .unwrap()
        .factorize(&w, &ctx())
    {
        Err(Error::InvalidParameter { expected, .. }) => {
            assert!(expected.contains('4'), "{expected}")
        }
        other => panic!("expected InvalidParameter, got {other:?}"),
    }
    assert!(
        RandomizedSvd::new(Rank::Fixed(5))
            .unwrap()
            .factorize(&w, &ctx())
            .is_err()
    );
    let conv = normal(&[4, 3, 3, 3], 2);
    assert!(
        Tucker2::new(Rank::Fixed(5), Rank::Fixed(2))
            .unwrap()
            .factorize(&conv, &ctx())
            .is_err()
    );
    assert!(
        SpatialSeparable::new(Rank::Fixed(10))
            .unwrap()
            .factorize(&conv, &ctx())
            .is_err()
    );
    // A compression no rank reaches.
    assert!(
        TruncatedSvd::new(Rank::Compression(1000.0))
            .unwrap()
            .factorize(&w, &ctx())
            .is_err()
    );
    // Spectrum-based rules need the whole spectrum.
    assert!(RandomizedSvd::new(Rank::Energy(0.9)).is_err());
    assert!(RandomizedSvd::new(Rank::Vbmf).is_err());
    assert!(TtSvd::new(vec![2], vec![2], Rank::Vbmf).is_err());
}

#[test]
fn non_finite_weights() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut w = normal(&[4, 6], 3);
        w[[1, 2]] = bad;
        for m in linear_methods() {
            match m.factorize(&w, &ctx()) {
                Err(Error::NonFinite { what, index, .. }) => {
                    assert!(what.contains("fc.weight"), "{what}");
                    assert_eq!(index, 8);
                }
                other => panic!("expected NonFinite, got {other:?}"),
            }
        }
        let mut conv = normal(&[4, 3, 3, 3], 4);
        conv[[0, 0, 1, 1]] = bad;
        for m in conv_methods() {
            assert!(matches!(
                m.factorize(&conv, &ctx()),
                Err(Error::NonFinite { .. })
            ));
        }
        let spectrum = LayerSpectrum::linear(&w, &ctx());
        assert!(matches!(spectrum, Err(Error::NonFinite { .. })));
    }
}

#[test]
fn shapes_that_do_not_fit_the_method() {
    let three_d = normal(&[4, 3, 2], 5);
    let two_d = normal(&[4, 6], 6);
    let conv = normal(&[4, 3, 3, 3], 7);
    for m in linear_methods() {
        assert!(matches!(
            m.factorize(&three_d, &ctx()),
            Err(Error::BadShape { .. })
        ));
        assert!(matches!(
            m.factorize(&conv, &ctx()),
            Err(Error::BadShape { .. })
        ));
    }
    for m in conv_methods() {
        assert!(matches!(
            m.factorize(&two_d, &ctx()),
            Err(Error::BadShape { .. })
        ));
        assert!(matches!(
            m.factorize(&three_d, &ctx()),
            Err(Error::BadShape { .. })
        ));
    }
    for empty in [&[0usize, 6][..], &[4, 0], &[0, 3, 3, 3]] {
        let w = ArrayD::<f32>::zeros(IxDyn(empty));
        let methods = if empty.len() == 2 {
            linear_methods()
        } else {
            conv_methods()
        };
        for m in methods {
            assert!(m.factorize(&w, &ctx()).is_err(), "{empty:?}");
        }
    }
}

#[test]
fn tt_modes_must_multiply_to_the_dimensions() {
    assert!(TtSvd::new(vec![], vec![], Rank::Fixed(2)).is_err());
    assert!(TtSvd::new(vec![2, 2], vec![4], Rank::Fixed(2)).is_err());
    assert!(TtSvd::new(vec![2, 0], vec![2, 2], Rank::Fixed(2)).is_err());
    let w = normal(&[6, 8], 8);
    let tt = TtSvd::new(vec![2, 2], vec![2, 4], Rank::Fixed(2)).unwrap();
    match tt.factorize(&w, &ctx()) {
        Err(Error::ShapeMismatch { expected, got, .. }) => {
            assert_eq!(expected, vec![6, 8]);
            assert_eq!(got, vec![4, 8]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}

#[test]
fn als_that_does_not_converge_says_so() {
    let w = normal(&[8, 6, 3, 3], 9);
    match CpAls::new(12)
        .unwrap()
        .with_max_iter(3)
        .factorize(&w, &ctx())
    {
        Err(Error::NotConverged {
            iterations, error, ..
        }) => {
            assert_eq!(iterations, 3);
            assert!(error > 0.0 && error < 1.0, "{error}");
        }
        other => panic!("expected NotConverged, got {other:?}"),
    }
    // Best effort: the last iterate, with its error reported.
    let f = CpAls::new(12)
        .unwrap()
        .with_max_iter(3)
        .best_effort(true)
        .factorize(&w, &ctx())
        .unwrap();
    let e = f.relative_error().unwrap();
    let rec = f.reconstruct();
    let measured = ((&w - &rec).mapv(|v| v * v).sum() / w.mapv(|v| v * v).sum()).sqrt() as f64;
    assert!((e - measured).abs() < 1e-4, "{e} vs {measured}");
}

#[test]
fn factors_built_by_hand_are_checked() {
    let a = Array2::<f32>::ones((4, 2));
    let b = Array2::<f32>::ones((3, 6));
    assert!(matches!(
        Factorization::new(&[4, 6], Factors::Linear { a: a.clone(), b }),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut b = Array2::<f32>::ones((2, 6));
    assert!(
        Factorization::new(
            &[4, 5],
            Factors::Linear {
                a: a.clone(),
                b: b.clone()
            }
        )
        .is_err()
    );
    assert!(
        Factorization::new(
            &[4, 6, 1],
            Factors::Linear {
                a: a.clone(),
                b: b.clone()
            }
        )
        .is_err()
    );
    b[[1, 1]] = f32::NAN;
    assert!(Factorization::new(&[4, 6], Factors::Linear { a: a.clone(), b }).is_err());
    let tucker = Factors::Tucker2 {
        u_out: Array2::ones((4, 2)),
        core: Array4::ones((2, 2, 3, 3)),
        u_in: Array2::ones((5, 2)),
    };
    assert!(Factorization::new(&[4, 3, 3, 3], tucker).is_err());
    let cores = vec![
        Array4::<f32>::ones((1, 2, 2, 2)),
        Array4::ones((3, 2, 3, 1)),
    ];
    assert!(Factorization::new(&[4, 6], Factors::TensorTrain { cores }).is_err());
    assert!(Factorization::new(&[4, 6], Factors::TensorTrain { cores: vec![] }).is_err());

    // A forward pass on the wrong input, and grouped convolutions.
    let f = TruncatedSvd::new(Rank::Fixed(2))
        .unwrap()
        .factorize(&normal(&[4, 6], 10), &ctx())
        .unwrap();
    assert!(matches!(
        f.forward(&normal(&[3, 5], 11)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        f.forward(&normal(&[3, 6, 1], 11)),
        Err(Error::BadShape { .. })
    ));
    let conv = Tucker2::new(Rank::Fixed(2), Rank::Fixed(2))
        .unwrap()
        .factorize(&normal(&[4, 3, 3, 3], 12), &ctx())
        .unwrap();
    assert!(conv.forward(&normal(&[1, 2, 5, 5], 13)).is_err());
    assert!(conv.forward(&normal(&[1, 3, 2, 2], 13)).is_err()); // smaller than the kernel
    assert!(
        conv.clone()
            .with_conv_spec(ConvSpec::new().with_groups(3))
            .is_err()
    );
    assert!(
        conv.with_conv_spec(ConvSpec::new().with_stride(0, 1))
            .is_err()
    );
}

#[test]
fn budgets_that_cannot_be_met() {
    let layer = LayerSpectrum::linear(&normal(&[8, 8], 14), &ctx()).unwrap();
    assert!(matches!(
        allocate_ranks(&[], Budget::Params(100)),
        Err(Error::Empty { .. })
    ));
    // Rank 1 everywhere costs 16 per layer.
    assert!(matches!(
        allocate_ranks(&[layer.clone(), layer.clone()], Budget::Params(31)),
        Err(Error::InvalidParameter { .. })
    ));
    assert_eq!(
        allocate_ranks(&[layer.clone(), layer.clone()], Budget::Params(32)).unwrap(),
        vec![1, 1]
    );
    let mut zero = layer.clone();
    zero.energy = 0.0;
    assert!(allocate_ranks(&[zero], Budget::Params(100)).is_err());

    let mut model = Model::new();
    model.add("fc.weight", normal(&[8, 8], 15)).unwrap();
    model.add("conv.weight", normal(&[4, 3, 3, 3], 16)).unwrap();
    let values = |m: &Model| {
        m.params()
            .iter()
            .map(|p| p.value().clone())
            .collect::<Vec<_>>()
    };
    let before = values(&model);
    // A budget over a convolution: not a Linear weight. Nothing changes.
    assert!(
        model
            .factorize_within(&Selector::prunable(), Budget::Params(1000))
            .is_err()
    );
    assert_eq!(values(&model), before);
    // Too small a budget: nothing changes either.
    assert!(
        model
            .factorize_within(&Selector::glob("fc.weight"), Budget::Params(3))
            .is_err()
    );
    assert_eq!(values(&model), before);
    // One layer that fails leaves the others untouched.
    assert!(
        model
            .factorize(
                &Selector::prunable(),
                &TruncatedSvd::new(Rank::Fixed(2)).unwrap()
            )
            .is_err()
    );
    assert_eq!(values(&model), before);
}

#[test]
fn a_layer_that_reaches_its_break_even_rank_stays_dense() {
    // A square 64×64 weight with a flat spectrum: its break-even rank is 31 (31 · 128
    // = 3,968 < 4,096), which would save 128 parameters and lose half the energy.
    let flat = LayerSpectrum {
        singular_values: vec![1.0; 64],
        energy: 64.0,
        params_per_rank: 128,
        flops_per_rank: 128,
        dense_params: 64 * 64,
        dense_flops: 64 * 64,
    };
    for budget in [Budget::Params(4096), Budget::Flops(100_000)] {
        assert_eq!(
            allocate_ranks(std::slice::from_ref(&flat), budget).unwrap(),
            vec![0]
        );
    }
    // Not affordable: the largest rank that fits.
    assert_eq!(
        allocate_ranks(std::slice::from_ref(&flat), Budget::Params(4000)).unwrap(),
        vec![31]
    );
    // Beside a layer with a steep spectrum, the flat one is kept dense and the other gets
    // what is left.
    let steep = LayerSpectrum {
        singular_values: (0..64).map(|i| 0.5f64.powi(i)).collect(),
        energy: (0..64).map(|i| 0.25f64.powi(i)).sum(),
        ..flat.clone()
    };
    let ranks = allocate_ranks(&[flat.clone(), steep], Budget::Params(4096 + 10 * 128)).unwrap();
    assert_eq!(ranks, vec![0, 10]);

    // On a model: a square weight under a budget that affords it stays dense.
    let mut model = Model::new();
    model.add("attn.weight", normal(&[48, 48], 17)).unwrap();
    model.add("ffn.weight", normal(&[48, 192], 18)).unwrap();
    let report = model
        .factorize_within(&Selector::prunable(), Budget::Params(48 * 48 + 4 * 240))
        .unwrap();
    assert!(model.get("attn.weight").unwrap().factorization().is_none());
    assert_eq!(
        model
            .get("ffn.weight")
            .unwrap()
            .factorization()
            .unwrap()
            .ranks(),
        vec![4]
    );
    assert_eq!(report.layers.len(), 1);
}

/// Values near `f32::MAX`: the SVD works on them scaled by a power of two; singular
/// values that do not fit f32 are an overflow error, not a failure to converge.
#[test]
fn huge_values_are_scaled_or_overflow() {
    let w = ArrayD::from_elem(IxDyn(&[8, 12]), 3e38f32);
    for method in [
        Box::new(TruncatedSvd::new(Rank::Fixed(2)).unwrap()) as Box<dyn LowRank>,
        Box::new(RandomizedSvd::new(Rank::Fixed(2)).unwrap()),
    ] {
        match method.factorize(&w, &ctx()) {
            Err(e @ Error::Overflow { .. }) => {
                assert!(e.to_string().contains("overflow"), "{e}")
            }
            other => panic!("expected an overflow error, got {other:?}"),
        }
    }
    // A rank-1 matrix whose singular value fits: exact up to f32 rounding.
    let u = [1.0f32, -0.5, 0.25, 0.75];
    let v = [0.5f32, 0.25, -1.0, 0.125, 0.5];
    let big = ArrayD::from_shape_fn(IxDyn(&[4, 5]), |i| 1e37 * u[i[0]] * v[i[1]]);
    for method in [
        Box::new(TruncatedSvd::new(Rank::Fixed(1)).unwrap()) as Box<dyn LowRank>,
        Box::new(RandomizedSvd::new(Rank::Fixed(1)).unwrap()),
    ] {
        let f = method.factorize(&big, &ctx()).unwrap();
        assert!(f.relative_error().unwrap() < 1e-5);
        let back = f.reconstruct();
        for (x, y) in back.iter().zip(big.iter()) {
            assert!((x - y).abs() <= 1e-5 * 1e37, "{x} vs {y}");
        }
    }
}
