//! Knowledge distillation through the public API, on the real 8×8 digits set (UCI,
//! bundled in `data/digits`): every fine-tuning path (pruned, weight-shared,
//! factorized, quantization-aware) takes the dense model as teacher and keeps its form.

mod common;

use common::digits;
use slimnn::distill::{DistillConfig, Distillation, Teacher};
use slimnn::io::idx::Dataset;
use slimnn::lowrank::{Rank, TruncatedSvd};
use slimnn::nn::{Network, QuantAwareTraining, Sgd, train_epoch};
use slimnn::prune::{GlobalPruner, Statistics};
use slimnn::quant::{Granularity, KMeansInit, KMeansQuantizer, Scheme, UniformQuantizer};
use slimnn::{Model, Selector};

fn trained(train: &Dataset, sizes: &[usize], epochs: u64, seed: u64) -> (Model, Network) {
    let mut model = Model::new();
    let net = Network::mlp(&mut model, sizes, seed).unwrap();
    let mut sgd = Sgd::new(0.1, 0.9, 0.0).unwrap();
    for epoch in 0..epochs {
        train_epoch(&net, &mut model, &mut sgd, train, 32, seed + epoch).unwrap();
    }
    (model, net)
}

fn recovery(dense: &Model, net: &Network, student: &Model) -> Distillation {
    let config = DistillConfig {
        temperature: 4.0,
        alpha: 0.7,
        ..Default::default()
    };
    let teacher = Teacher::new(net.clone(), dense.clone()).unwrap();
    Distillation::new(config, teacher, net, student).unwrap()
}

#[test]
fn every_fine_tuning_path_takes_the_dense_teacher_and_keeps_its_form() {
    let (train, test) = digits();
    let (dense, net) = trained(&train, &[64, 64, 10], 30, 3);
    let acc = |m: &Model| net.evaluate(m, &test, 360).unwrap().accuracy;

    // Pruned: the pruned weights stay zero.
    let mut pruned = dense.clone();
    pruned
        .prune_global(
            &Selector::prunable(),
            &GlobalPruner::magnitude(0.9).unwrap(),
            &Statistics::new(),
        )
        .unwrap();
    // Weight-shared: only the centroids move.
    let mut shared = dense.clone();
    shared
        .quantize(
            &Selector::prunable(),
            &KMeansQuantizer::lloyd(2, KMeansInit::Linear).unwrap(),
        )
        .unwrap();
    // Factorized: only the factors move.
    let mut low = dense.clone();
    low.factorize(
        &Selector::glob("fc1.weight"),
        &TruncatedSvd::new(Rank::Fixed(3)).unwrap(),
    )
    .unwrap();
    for (name, mut model, lr) in [
        ("pruned", pruned, 0.01),
        ("weight-shared", shared, 0.002),
        ("factorized", low, 0.02),
    ] {
        let before = acc(&model);
        let codes = model
            .get("fc1.weight")
            .unwrap()
            .quantized()
            .map(|q| q.codes().unpack());
        let zeros = model.get("fc1.weight").unwrap().masked_count();
        let mut kd = recovery(&dense, &net, &model);
        let mut sgd = Sgd::new(lr, 0.9, 0.0).unwrap();
        for epoch in 0..5 {
            kd.train_epoch(&net, &mut model, &mut sgd, &train, 32, epoch)
                .unwrap();
        }
        let after = acc(&model);
        let w = model.get("fc1.weight").unwrap();
        assert_eq!(w.quantized().map(|q| q.codes().unpack()), codes, "{name}");
        assert_eq!(w.masked_count(), zeros, "{name}");
        if name == "pruned" {
            assert_eq!(w.effective().iter().filter(|&&v| v == 0.0).count(), zeros);
        }
        if name == "factorized" {
            assert!(w.factorization().is_some());
        }
        assert!(after > before, "{name}: {before} → {after}");
    }

    // Quantization-aware: the latent weights stay float, the grid adapts.
    let quantizer = UniformQuantizer::new(2, Scheme::Symmetric, Granularity::PerTensor).unwrap();
    let qat = QuantAwareTraining::new(Selector::prunable(), quantizer);
    let post_training = acc(&qat.quantized(&dense).unwrap());
    let mut latent = dense.clone();
    let mut kd = recovery(&dense, &net, &latent);
    let mut sgd = Sgd::new(0.01, 0.9, 0.0).unwrap();
    for epoch in 0..5 {
        kd.train_epoch_quantized(&qat, &net, &mut latent, &mut sgd, &train, 32, epoch)
            .unwrap();
    }
    assert!(latent.get("fc1.weight").unwrap().quantized().is_none());
    let aware = acc(&qat.quantized(&latent).unwrap());
    assert!(aware > post_training, "2-bit: {post_training} → {aware}");
}

/// The student trained on `train` for `epochs`, alone or taught by `kd`.
fn student(
    train: &Dataset,
    sizes: &[usize],
    kd: Option<&mut Distillation>,
    epochs: u64,
    seed: u64,
) -> (Model, Network) {
    let mut model = Model::new();
    let net = Network::mlp(&mut model, sizes, seed).unwrap();
    let mut sgd = Sgd::new(0.05, 0.9, 0.0).unwrap();
    match kd {
        Some(kd) => {
            for epoch in 0..epochs {
                kd.train_epoch(&net, &mut model, &mut sgd, train, 32, seed + epoch)
                    .unwrap();
            }
        }
        None => {
            for epoch in 0..epochs {
                train_epoch(&net, &mut model, &mut sgd, train, 32, seed + epoch).unwrap();
            }
        }
    }
    (model, net)
}

#[test]
fn a_distilled_student_beats_the_same_student_trained_alone() {
    // Hinton et al.'s experiment in miniature: a wide teacher, a narrow student trained
    // with the same seed, batches and epochs on a small transfer set, alone and with
    // soft targets.
    let (train, test) = digits();
    let (tmodel, tnet) = trained(&train, &[64, 256, 10], 40, 11);
    let small = train.slice(0..300);
    let errors = |net: &Network, m: &Model| {
        let e = net.evaluate(m, &test, 360).unwrap();
        e.total - e.correct
    };
    let teacher_errors = errors(&tnet, &tmodel);
    let (mut alone, mut taught) = (0, 0);
    for seed in [1, 2, 3] {
        let sizes = [64, 12, 10];
        let (a, net) = student(&small, &sizes, None, 40, seed);
        let config = DistillConfig {
            temperature: 4.0,
            alpha: 0.9,
            ..Default::default()
        };
        let teacher = Teacher::new(tnet.clone(), tmodel.clone()).unwrap();
        let mut kd = Distillation::new(config, teacher, &net, &a).unwrap();
        let (b, _) = student(&small, &sizes, Some(&mut kd), 40, seed);
        let (ea, eb) = (errors(&net, &a), errors(&net, &b));
        eprintln!("seed {seed}: teacher {teacher_errors}, alone {ea}, distilled {eb}");
        alone += ea;
        taught += eb;
    }
    assert!(
        taught < alone,
        "test errors over 3 seeds: {alone} alone, {taught} distilled (teacher {teacher_errors})"
    );
}
