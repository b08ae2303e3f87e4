//! Pruning measured where its effect is measurable: a network trained on the real 8×8
//! digits set (UCI, bundled in `data/digits`), first 1,437 images for training, last 360
//! for testing.

mod common;

use common::digits;
use slimnn::io::idx::Dataset;
use slimnn::nn::{Network, Sgd, train_epoch};
use slimnn::prune::{
    ChannelCriterion, GlobalPruner, Schedule, Statistics, StructuredPruner, UnstructuredPruner,
};
use slimnn::{Model, Selector};

fn trained(train: &Dataset, seed: u64) -> (Model, Network) {
    let mut model = Model::new();
    let net = Network::mlp(&mut model, &[64, 64, 10], seed).unwrap();
    let mut sgd = Sgd::new(0.1, 0.9, 0.0).unwrap();
    for epoch in 0..30 {
        train_epoch(&net, &mut model, &mut sgd, train, 32, seed + epoch).unwrap();
    }
    (model, net)
}

#[test]
fn pruning_a_trained_network_on_real_data() {
    let (train, test) = digits();
    let (model, net) = trained(&train, 7);
    let acc = |m: &Model| net.evaluate(m, &test, 360).unwrap().accuracy;
    let dense = acc(&model);
    assert!(dense > 0.88, "dense accuracy {dense}");

    // Magnitude keeps what matters; random pruning of as many weights does not.
    let mut magnitude = model.clone();
    magnitude
        .prune_global(
            &Selector::prunable(),
            &GlobalPruner::magnitude(0.7).unwrap(),
            &Statistics::new(),
        )
        .unwrap();
    let mut random = model.clone();
    random
        .prune(
            &Selector::prunable(),
            &UnstructuredPruner::random(3, 0.7).unwrap(),
            &Statistics::new(),
        )
        .unwrap();
    let (m, r) = (acc(&magnitude), acc(&random));
    assert!(m > dense - 0.05, "magnitude 70%: {m} vs dense {dense}");
    assert!(m > r + 0.05, "magnitude {m} should beat random {r}");

    // Prune and retrain with AGP to 90% recovers the dense accuracy (Han et al. 2015).
    let mut model90 = model.clone();
    let mut sgd = Sgd::new(0.05, 0.9, 0.0).unwrap();
    let schedule = Schedule::agp(0.3, 0.9, 0, 5, 1).unwrap();
    let one_shot = {
        let mut m = model.clone();
        m.prune_global(
            &Selector::prunable(),
            &GlobalPruner::magnitude(0.9).unwrap(),
            &Statistics::new(),
        )
        .unwrap();
        acc(&m)
    };
    for epoch in 0..15 {
        if schedule.is_pruning_step(epoch) {
            let pruner = GlobalPruner::magnitude(schedule.sparsity_at(epoch)).unwrap();
            model90
                .prune_global(&Selector::prunable(), &pruner, &Statistics::new())
                .unwrap();
        }
        train_epoch(&net, &mut model90, &mut sgd, &train, 32, 100 + epoch as u64).unwrap();
    }
    let report = model90.sparsity(&Selector::prunable()).unwrap();
    assert!((report.sparsity() - 0.9).abs() < 1e-3, "{report}");
    let retrained = acc(&model90);
    assert!(
        retrained > dense - 0.03,
        "retrained 90%: {retrained} vs dense {dense}"
    );
    assert!(
        retrained > one_shot,
        "retraining {retrained} should beat one-shot {one_shot}"
    );
    // Training does not touch pruned weights: another epoch leaves them as they were.
    let before = model90.clone();
    train_epoch(&net, &mut model90, &mut sgd, &train, 32, 999).unwrap();
    for (p, q) in before.params().iter().zip(model90.params()) {
        if let Some(mask) = p.mask() {
            assert_eq!(q.mask(), Some(mask));
            assert!(
                mask.iter_pruned()
                    .all(|i| p.value().as_slice().unwrap()[i] == q.value().as_slice().unwrap()[i])
            );
            assert!(
                mask.iter_pruned()
                    .all(|i| q.effective().as_slice().unwrap()[i] == 0.0)
            );
        }
    }
    let retrained = acc(&model90);
    let mut permanent = model90.clone();
    permanent.make_permanent(&Selector::all()).unwrap();
    assert_eq!(acc(&permanent), retrained);

    // Structured pruning + physical removal: fewer parameters, the same function.
    let mut slim = model.clone();
    slim.prune(
        &Selector::glob("fc1.weight"),
        &StructuredPruner::new(ChannelCriterion::L2, 0.25).unwrap(),
        &Statistics::new(),
    )
    .unwrap();
    slim.mask_biases_of_pruned_channels(&Selector::all())
        .unwrap();
    let masked = acc(&slim);
    let before = slim.numel();
    slim.remove_pruned_channels(&["fc1.weight", "fc2.weight"])
        .unwrap();
    assert_eq!(slim.get("fc1.weight").unwrap().shape(), &[48, 64]);
    assert_eq!(slim.numel(), before - 16 * (64 + 1 + 10));
    assert_eq!(acc(&slim), masked);
    assert!(masked > dense - 0.05, "structured 25%: {masked} vs {dense}");
}

#[test]
fn training_is_deterministic() {
    let (train, _) = digits();
    let small = train.slice(0..300);
    let run = || {
        let mut model = Model::new();
        let net = Network::mlp(&mut model, &[64, 16, 10], 5).unwrap();
        let mut sgd = Sgd::new(0.1, 0.9, 1e-4).unwrap();
        for e in 0..3 {
            train_epoch(&net, &mut model, &mut sgd, &small, 16, e).unwrap();
        }
        model
    };
    let (a, b) = (run(), run());
    for (p, q) in a.params().iter().zip(b.params()) {
        assert_eq!(p.value(), q.value(), "{}", p.name());
    }
}
