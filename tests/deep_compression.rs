//! A shortened Deep Compression run on real MNIST, through the public API: a small
//! subset and few epochs, but every stage — prune with retraining, weight sharing,
//! Huffman coding — and the file it writes.

use std::path::Path;

use slimnn::io::idx::Dataset;
use slimnn::nn::{Network, Sgd, train_epoch};
use slimnn::pipeline::{Encode, Pipeline, Quantize};
use slimnn::prune::{GlobalPruner, Statistics};
use slimnn::quant::{KMeansInit, KMeansQuantizer};
use slimnn::store::{Encoding, Positions};
use slimnn::{Model, Selector};

fn mnist() -> (Dataset, Dataset) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let set = |i: &str, l: &str| Dataset::from_idx(dir.join(i), dir.join(l), 255.0).unwrap();
    let train = set("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz");
    let test = set("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz");
    (train.slice(0..8000), test.slice(0..2000))
}

fn trained(train: &Dataset, seed: u64) -> (Model, Network) {
    let mut model = Model::new();
    let net = Network::lenet_300_100(&mut model, seed).unwrap();
    let mut sgd = Sgd::new(0.05, 0.9, 1e-4).unwrap();
    for epoch in 0..3 {
        train_epoch(&net, &mut model, &mut sgd, train, 64, seed + epoch).unwrap();
    }
    (model, net)
}

#[test]
fn training_is_deterministic() {
    let (train, _) = mnist();
    let small = train.slice(0..1000);
    let (a, _) = trained(&small, 5);
    let (b, _) = trained(&small, 5);
    for p in a.params() {
        assert_eq!(p.value(), b.get(p.name()).unwrap().value(), "{}", p.name());
    }
}

/// Accuracy within 1.5 points of the dense model at ≥ 10x compression, all bytes of the
/// file counted.
#[test]
fn a_short_deep_compression_keeps_accuracy_at_over_10x() {
    let (train, test) = mnist();
    let (dense, net) = trained(&train, 1);
    let dense_acc = net.evaluate(&dense, &test, 500).unwrap().accuracy;
    assert!(dense_acc > 0.9, "dense accuracy {dense_acc}");

    // Prune 90% in two steps, retraining after each with the masks fixed.
    let mut model = dense.clone();
    let mut sgd = Sgd::new(0.01, 0.9, 1e-4).unwrap();
    for (i, sparsity) in [0.7, 0.9].into_iter().enumerate() {
        let pruner = GlobalPruner::magnitude(sparsity).unwrap();
        model
            .prune_global(&Selector::prunable(), &pruner, &Statistics::new())
            .unwrap();
        train_epoch(&net, &mut model, &mut sgd, &train, 64, 10 + i as u64).unwrap();
    }
    let report = Pipeline::new()
        .then(Quantize::new(
            Selector::prunable(),
            KMeansQuantizer::lloyd(32, KMeansInit::Linear).unwrap(),
        ))
        .then(Encode::new(
            Selector::all(),
            Encoding {
                positions: Positions::Auto,
                huffman: true,
            },
        ))
        .run(&mut model)
        .unwrap();
    let acc = net.evaluate(&model, &test, 500).unwrap().accuracy;
    println!(
        "dense {dense_acc:.4}, compressed {acc:.4} at {:.1}x",
        report.compression_rate()
    );
    assert!(report.compression_rate() >= 10.0, "{report}");
    assert!(acc >= dense_acc - 0.015, "{acc} against {dense_acc}");

    // The file holds what was evaluated, in the bytes the report counts.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lenet.slim");
    model.save_compressed(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len() as usize,
        report.file_bytes
    );
    let back = Model::load_compressed(&path).unwrap();
    assert_eq!(net.evaluate(&back, &test, 500).unwrap().accuracy, acc);
}
