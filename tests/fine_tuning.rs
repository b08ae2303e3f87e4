//! Fine-tuning that respects compression, on the real 8×8 digits set (UCI, bundled in
//! `data/digits`): weight-shared training moves only the centroids, factorized training
//! moves only the factors, quantization-aware training beats post-training quantization,
//! and a uniformly quantized weight refuses plain SGD. Public API only.

mod common;

use common::digits;
use slimnn::io::idx::Dataset;
use slimnn::lowrank::{Rank, TruncatedSvd};
use slimnn::nn::{Network, QuantAwareTraining, Sgd, train_epoch};
use slimnn::prune::{GlobalPruner, Statistics};
use slimnn::quant::{Granularity, KMeansInit, KMeansQuantizer, Scheme, UniformQuantizer};
use slimnn::{Error, Model, Selector};

fn trained(train: &Dataset) -> (Model, Network) {
    let mut model = Model::new();
    let net = Network::mlp(&mut model, &[64, 64, 10], 3).unwrap();
    let mut sgd = Sgd::new(0.1, 0.9, 0.0).unwrap();
    for epoch in 0..30 {
        train_epoch(&net, &mut model, &mut sgd, train, 32, epoch).unwrap();
    }
    (model, net)
}

#[test]
fn weight_shared_training_moves_only_the_centroids() {
    let (train, test) = digits();
    let (dense, net) = trained(&train);
    let acc = |m: &Model| net.evaluate(m, &test, 360).unwrap().accuracy;
    let mut shared = dense.clone();
    shared
        .prune_global(
            &Selector::prunable(),
            &GlobalPruner::magnitude(0.5).unwrap(),
            &Statistics::new(),
        )
        .unwrap();
    shared
        .quantize(
            &Selector::prunable(),
            &KMeansQuantizer::lloyd(2, KMeansInit::Linear).unwrap(),
        )
        .unwrap();
    let before = acc(&shared);
    let codes = |m: &Model| {
        m.get("fc1.weight")
            .unwrap()
            .quantized()
            .unwrap()
            .codes()
            .unpack()
    };
    let codes_before = codes(&shared);
    let mut sgd = Sgd::new(0.002, 0.9, 0.0).unwrap();
    for epoch in 0..5 {
        train_epoch(&net, &mut shared, &mut sgd, &train, 32, epoch).unwrap();
    }
    let after = acc(&shared);
    let w = shared.get("fc1.weight").unwrap();
    let q = w.quantized().expect("still weight-shared");
    assert_eq!(codes(&shared), codes_before, "codes are fixed");
    assert_eq!(q.table().unwrap().len(), 2);
    let mut distinct: Vec<f32> = w.effective().iter().copied().collect();
    distinct.sort_by(f32::total_cmp);
    distinct.dedup();
    assert!(distinct.len() <= 3, "2 shared values and the pruned zeros");
    assert_eq!(
        w.effective().iter().filter(|&&v| v == 0.0).count(),
        w.masked_count(),
        "pruned weights stay zero"
    );
    assert!(
        after > before + 0.05,
        "centroid fine-tuning recovers accuracy: {before} → {after}"
    );
}

#[test]
fn factorized_training_moves_only_the_factors() {
    let (train, test) = digits();
    let (dense, net) = trained(&train);
    let acc = |m: &Model| net.evaluate(m, &test, 360).unwrap().accuracy;
    let mut low = dense.clone();
    low.factorize(
        &Selector::glob("fc1.weight"),
        &TruncatedSvd::new(Rank::Fixed(3)).unwrap(),
    )
    .unwrap();
    let before = acc(&low);
    let mut sgd = Sgd::new(0.02, 0.9, 0.0).unwrap();
    for epoch in 0..5 {
        train_epoch(&net, &mut low, &mut sgd, &train, 32, epoch).unwrap();
    }
    let after = acc(&low);
    let w = low.get("fc1.weight").unwrap();
    let f = w.factorization().expect("still factorized");
    assert_eq!(f.ranks(), vec![3]);
    let rebuilt = f.reconstruct();
    assert!(
        w.value()
            .iter()
            .zip(rebuilt.iter())
            .all(|(a, b)| (a - b).abs() < 1e-5),
        "the weight is its factors' product"
    );
    assert!(
        after > before + 0.02,
        "fine-tuning the factors recovers accuracy: {before} → {after}"
    );
}

#[test]
fn quantization_aware_training_beats_post_training_quantization() {
    let (train, test) = digits();
    let (dense, net) = trained(&train);
    let acc = |m: &Model| net.evaluate(m, &test, 360).unwrap().accuracy;
    let quantizer = UniformQuantizer::new(2, Scheme::Symmetric, Granularity::PerTensor).unwrap();
    let qat = QuantAwareTraining::new(Selector::prunable(), quantizer);
    let post_training = acc(&qat.quantized(&dense).unwrap());
    let mut latent = dense.clone();
    let mut sgd = Sgd::new(0.01, 0.9, 0.0).unwrap();
    for epoch in 0..5 {
        qat.train_epoch(&net, &mut latent, &mut sgd, &train, 32, epoch)
            .unwrap();
    }
    let quantized = qat.quantized(&latent).unwrap();
    let aware = acc(&quantized);
    assert!(
        aware > post_training + 0.02,
        "2-bit: post-training {post_training}, quantization-aware {aware}"
    );
    assert!(
        latent.get("fc1.weight").unwrap().quantized().is_none(),
        "the latent weights stay float"
    );
    // Deterministic.
    let mut again = dense.clone();
    let mut sgd = Sgd::new(0.01, 0.9, 0.0).unwrap();
    for epoch in 0..5 {
        qat.train_epoch(&net, &mut again, &mut sgd, &train, 32, epoch)
            .unwrap();
    }
    assert_eq!(
        again.get("fc1.weight").unwrap().value(),
        latent.get("fc1.weight").unwrap().value()
    );
}

#[test]
fn a_uniform_grid_refuses_plain_sgd_and_nothing_changes() {
    let (train, _) = digits();
    let mut model = Model::new();
    let net = Network::mlp(&mut model, &[64, 16, 10], 1).unwrap();
    model
        .quantize(
            &Selector::glob("fc2.weight"),
            &UniformQuantizer::new(4, Scheme::Symmetric, Granularity::PerTensor).unwrap(),
        )
        .unwrap();
    let before = model.clone();
    let mut sgd = Sgd::new(0.1, 0.0, 0.0).unwrap();
    let err = train_epoch(&net, &mut model, &mut sgd, &train.slice(0..32), 32, 0).unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    assert!(err.to_string().contains("QuantAwareTraining"), "{err}");
    for name in ["fc1.weight", "fc1.bias", "fc2.weight"] {
        assert_eq!(
            model.get(name).unwrap().value(),
            before.get(name).unwrap().value()
        );
    }
}

/// A dense `a.weight` and a 2-value codebook `b.weight`, and gradients for both.
fn two_params() -> (Model, slimnn::nn::Gradients) {
    let mut model = Model::new();
    model
        .add(
            "a.weight",
            ndarray::Array2::from_elem((2, 2), 0.5f32).into_dyn(),
        )
        .unwrap();
    model
        .add(
            "b.weight",
            ndarray::array![[0.1f32, 0.2], [0.9, 1.0]].into_dyn(),
        )
        .unwrap();
    model
        .quantize(
            &Selector::glob("b.weight"),
            &KMeansQuantizer::lloyd(2, KMeansInit::Linear).unwrap(),
        )
        .unwrap();
    let mut grads = slimnn::nn::Gradients::new();
    grads.insert(
        "a.weight".into(),
        ndarray::ArrayD::ones(ndarray::IxDyn(&[2, 2])),
    );
    grads.insert(
        "b.weight".into(),
        ndarray::ArrayD::ones(ndarray::IxDyn(&[2, 2])),
    );
    (model, grads)
}

#[test]
fn a_refused_step_changes_nothing() {
    // An update that overflows one parameter, a NaN in another's gradient.
    let (model, mut grads) = two_params();
    grads.get_mut("b.weight").unwrap().fill(3e38);
    let mut sgd = Sgd::new(1.0, 0.0, 0.0).unwrap();
    let mut m = model.clone();
    assert!(sgd.step(&mut m, &grads).is_err());
    let (_, mut nan) = two_params();
    nan.get_mut("a.weight").unwrap()[[0, 1]] = f32::NAN;
    assert!(matches!(
        sgd.step(&mut m, &nan),
        Err(Error::NonFinite { .. })
    ));
    for name in ["a.weight", "b.weight"] {
        assert_eq!(
            m.get(name).unwrap().value(),
            model.get(name).unwrap().value()
        );
    }
    // And the velocities did not move either: a good step now equals a fresh one.
    let (_, good) = two_params();
    sgd.step(&mut m, &good).unwrap();
    let mut fresh = model.clone();
    Sgd::new(1.0, 0.0, 0.0)
        .unwrap()
        .step(&mut fresh, &good)
        .unwrap();
    assert_eq!(
        m.get("a.weight").unwrap().value(),
        fresh.get("a.weight").unwrap().value()
    );
}

#[test]
fn grids_that_look_like_tables_are_not_trained_as_codebooks() {
    let (mut model, grads) = two_params();
    model
        .quantize(
            &Selector::glob("b.weight"),
            &slimnn::quant::TernaryQuantizer::new(Granularity::PerTensor),
        )
        .unwrap();
    let err = Sgd::new(0.1, 0.0, 0.0)
        .unwrap()
        .step(&mut model, &grads)
        .unwrap_err();
    assert!(err.to_string().contains("QuantAwareTraining"), "{err}");
    // Quantization-aware training wants float latent weights.
    let qat = QuantAwareTraining::new(
        Selector::glob("b.weight"),
        UniformQuantizer::new(2, Scheme::Symmetric, Granularity::PerTensor).unwrap(),
    );
    let data = Dataset {
        images: ndarray::Array2::zeros((2, 2)),
        labels: ndarray::array![0u8, 1],
        image_shape: vec![2],
    };
    let net = Network::new(vec![slimnn::nn::Layer::Linear {
        weight: "b.weight".into(),
        bias: None,
    }]);
    let mut latent = model.clone();
    assert!(
        qat.train_epoch(
            &net,
            &mut latent,
            &mut Sgd::new(0.1, 0.0, 0.0).unwrap(),
            &data,
            2,
            0
        )
        .is_err()
    );
}

#[test]
fn batches_in_any_memory_order() {
    let (train, _) = digits();
    let mut model = Model::new();
    let net = Network::mlp(&mut model, &[64, 16, 10], 2).unwrap();
    let x = train.images.slice(ndarray::s![0..8, ..]).to_owned();
    let columns_first = x.t().as_standard_layout().into_owned(); // [64, 8]
    let y = net.forward(&model, x.view()).unwrap();
    assert_eq!(net.forward(&model, columns_first.t()).unwrap(), y);
}
