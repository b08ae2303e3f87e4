//! The data-aware solvers on a trained network, on the real 8×8 digits set (UCI, bundled
//! in `data/digits`), measured on held-out images: with the statistics of the training
//! images, GPTQ moves the network's outputs less than round-to-nearest on the same grid,
//! and SparseGPT less than magnitude and Wanda at the same sparsity. Public API only.

mod common;

use std::sync::Arc;

use common::digits;
use slimnn::calib::{CalibrationStats, Gptq, SparseGpt, SparsityPattern};
use slimnn::io::idx::Dataset;
use slimnn::nn::{Network, Sgd, train_epoch};
use slimnn::prune::{NmPruner, Pruner, Statistics, UnstructuredPruner, Wanda};
use slimnn::quant::{Granularity, Quantizer, Scheme, UniformQuantizer};
use slimnn::{Model, Selector};

/// A 64-64-10 network trained on the training images, with their statistics.
fn calibrated() -> (Model, Network, CalibrationStats, Dataset) {
    let (train, test) = digits();
    let mut model = Model::new();
    let net = Network::mlp(&mut model, &[64, 64, 10], 3).unwrap();
    let mut sgd = Sgd::new(0.1, 0.9, 0.0).unwrap();
    for epoch in 0..30 {
        train_epoch(&net, &mut model, &mut sgd, &train, 32, epoch).unwrap();
    }
    let stats = net.calibration_stats(&model, train.images.view()).unwrap();
    (model, net, stats, test)
}

/// `‖f(x) − f_dense(x)‖² / ‖f_dense(x)‖²` of the logits over the held-out images.
fn output_error(net: &Network, dense: &Model, m: &Model, test: &Dataset) -> f64 {
    let reference = net.forward(dense, test.images.view()).unwrap();
    let got = net.forward(m, test.images.view()).unwrap();
    let sq = |a: f32| f64::from(a) * f64::from(a);
    let diff: f64 = (&got - &reference).iter().map(|&d| sq(d)).sum();
    diff / reference.iter().map(|&r| sq(r)).sum::<f64>()
}

#[test]
fn gptq_moves_the_outputs_less_than_round_to_nearest() {
    let (dense, net, stats, test) = calibrated();
    for bits in [2u8, 3, 4] {
        for group in [None, Some(16)] {
            let granularity = match group {
                Some(size) => Granularity::PerGroup { size },
                None => Granularity::PerChannel { axis: 0 },
            };
            let gptq = match group {
                Some(size) => Gptq::new(bits).unwrap().with_group(size).unwrap(),
                None => Gptq::new(bits).unwrap(),
            };
            let rtn = UniformQuantizer::new(bits, Scheme::Affine, granularity).unwrap();
            let error = |q: &dyn Quantizer<f32>| {
                let mut m = dense.clone();
                m.quantize_calibrated(&Selector::prunable(), q, &stats)
                    .unwrap();
                output_error(&net, &dense, &m, &test)
            };
            let (by_gptq, by_rtn) = (error(&gptq), error(&rtn));
            assert!(
                by_gptq < by_rtn,
                "{bits} bits, group {group:?}: GPTQ {by_gptq:.5}, round-to-nearest {by_rtn:.5}"
            );
        }
    }
}

#[test]
fn sparsegpt_moves_the_outputs_less_than_magnitude_and_wanda() {
    let (dense, net, stats, test) = calibrated();
    let stats = Statistics::new().with_calibration(Arc::new(stats));
    let error = |p: &dyn Pruner<f32>| {
        let mut m = dense.clone();
        m.prune(&Selector::prunable(), p, &stats).unwrap();
        output_error(&net, &dense, &m, &test)
    };
    for sparsity in [0.5, 0.7] {
        let by_sparsegpt = error(&SparseGpt::new(SparsityPattern::Unstructured(sparsity)).unwrap());
        let by_magnitude = error(&UnstructuredPruner::magnitude(sparsity).unwrap());
        let by_wanda = error(&UnstructuredPruner::wanda(sparsity).unwrap());
        assert!(
            by_sparsegpt < by_magnitude.min(by_wanda),
            "{sparsity}: SparseGPT {by_sparsegpt:.5}, magnitude {by_magnitude:.5}, Wanda {by_wanda:.5}"
        );
    }
    let by_sparsegpt = error(&SparseGpt::new(SparsityPattern::NM { n: 2, m: 4 }).unwrap());
    let by_magnitude = error(&NmPruner::magnitude(2, 4).unwrap());
    let by_wanda = error(&NmPruner::new(Wanda, 2, 4).unwrap());
    assert!(
        by_sparsegpt < by_magnitude.min(by_wanda),
        "2:4: SparseGPT {by_sparsegpt:.5}, magnitude {by_magnitude:.5}, Wanda {by_wanda:.5}"
    );
}
