//! Low-rank factorization of LeNet-300-100 on MNIST: each Linear weight `W ≈ A·B` by
//! truncated SVD, with ranks chosen per layer (energy, VBMF, a uniform compression) or
//! by one global parameter budget, measured by parameters, FLOPs and test accuracy
//! without retraining.
//!
//! ```text
//! cargo run --release --example lowrank_mnist [-- --epochs 10 --seed 1]
//! ```
//!
//! Reuses the network `prune_mnist` trains (`target/slimnn-examples/lenet300.safetensors`).

#[path = "common/mnist.rs"]
#[macro_use]
mod mnist;

use slimnn::lowrank::{Budget, LowRankReport, Rank, TruncatedSvd};
use slimnn::{Result, Selector};

fn main() -> Result<()> {
    let mnist::Args {
        epochs,
        seed,
        fresh,
    } = mnist::parse_args("lowrank_mnist");
    let (train, test) = mnist::load()?;
    let (model, net) = mnist::trained_lenet300(&train, &test, epochs, seed, fresh)?;
    let weights = Selector::prunable();
    let dense_params: usize = model
        .select(&weights)?
        .iter()
        .map(|n| model.get(n).map(|p| p.numel()))
        .sum::<Result<usize>>()?;
    say!(
        "dense: {dense_params} weights in fc1, fc2, fc3, test accuracy {:.2}%\n",
        100.0 * net.evaluate(&model, &test, 1000)?.accuracy
    );
    say!(
        "{:<34} {:>15} {:>9} {:>8} {:>10} {:>9}",
        "ranks chosen by",
        "ranks",
        "params",
        "smaller",
        "rel. error",
        "accuracy"
    );

    let rules = [
        ("energy 99% per layer", Rank::Energy(0.99)),
        ("energy 95% per layer", Rank::Energy(0.95)),
        ("energy 90% per layer", Rank::Energy(0.90)),
        ("VBMF per layer", Rank::Vbmf),
    ];
    for (label, rank) in rules {
        let mut m = model.clone();
        let report = m.factorize(&weights, &TruncatedSvd::new(rank)?)?;
        row(label, &report, net.evaluate(&m, &test, 1000)?.accuracy);
    }
    // Kim et al. keep the classifier dense: VBMF on the hidden layers only.
    let mut m = model.clone();
    let hidden = Selector::glob("fc1.weight").include("fc2.weight");
    let mut report = m.factorize(&hidden, &TruncatedSvd::new(Rank::Vbmf)?)?;
    let fc3 = TruncatedSvd::new(Rank::Fixed(10))?;
    report
        .layers
        .extend(m.factorize(&Selector::glob("fc3.weight"), &fc3)?.layers);
    row(
        "VBMF on fc1, fc2; fc3 full rank",
        &report,
        net.evaluate(&m, &test, 1000)?.accuracy,
    );
    // The same number of parameters, spent two ways: each layer compressed by the same
    // ratio, or one budget over all layers with the least total relative error.
    for ratio in [2.0, 4.0, 8.0] {
        let mut uniform = model.clone();
        let report = uniform.factorize(&weights, &TruncatedSvd::new(Rank::Compression(ratio))?)?;
        row(
            &format!("{ratio}x smaller, every layer"),
            &report,
            net.evaluate(&uniform, &test, 1000)?.accuracy,
        );
        let mut global = model.clone();
        let total = report.params() + dense_params - report.dense_params();
        let report = global.factorize_within(&weights, Budget::Params(total))?;
        row(
            "  same total, global budget",
            &report,
            net.evaluate(&global, &test, 1000)?.accuracy,
        );
    }
    Ok(())
}

/// A table row over all three weights: a layer the step left dense (a global budget
/// keeps a layer at its break-even rank dense) counts its dense parameters, error 0.
fn row(label: &str, report: &LowRankReport, accuracy: f64) {
    const LAYERS: [(&str, usize); 3] = [
        ("fc1.weight", 784 * 300),
        ("fc2.weight", 300 * 100),
        ("fc3.weight", 100 * 10),
    ];
    let dense_total: usize = LAYERS.iter().map(|(_, n)| n).sum();
    let factorized = |name: &str| report.layers.iter().find(|l| l.name == name);
    let ranks: Vec<String> = LAYERS
        .iter()
        .map(|(name, _)| match factorized(name) {
            Some(l) => l.factorization.ranks()[0].to_string(),
            None => "–".into(),
        })
        .collect();
    let params = report.params() + dense_total - report.dense_params();
    // The layers' relative errors ‖W − Ŵ‖/‖W‖, averaged with their sizes as weights.
    let error = report
        .layers
        .iter()
        .map(|l| {
            l.factorization.relative_error().unwrap_or(f64::NAN)
                * l.factorization.dense_params() as f64
        })
        .sum::<f64>()
        / dense_total as f64;
    say!(
        "{:<34} {:>15} {:>9} {:>7.1}x {:>10.4} {:>8.2}%",
        label,
        ranks.join("/"),
        params,
        dense_total as f64 / params as f64,
        error,
        100.0 * accuracy
    );
}
