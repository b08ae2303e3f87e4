//! Quantizing LeNet-300-100 on MNIST: every quantizer of slimnn on one trained network,
//! measured by bits per weight, compression and test accuracy, then weight sharing with
//! centroid fine-tuning (Deep Compression's second stage) and quantization-aware
//! fine-tuning of 2- and 3-bit grids.
//!
//! ```text
//! cargo run --release --example quantize_mnist [-- --epochs 10 --seed 1]
//! ```
//!
//! Reuses the network `prune_mnist` trains (`target/slimnn-examples/lenet300.safetensors`).

#[path = "common/mnist.rs"]
#[macro_use]
mod mnist;

use slimnn::nn::{QuantAwareTraining, Sgd};
use slimnn::quant::{
    BinaryQuantizer, Granularity, KMeansInit, KMeansQuantizer, PowerOfTwoQuantizer,
    ProductQuantizer, Quantizer, Scheme, TernaryQuantizer, UniformQuantizer,
};
use slimnn::{Result, Selector};

fn main() -> Result<()> {
    let mnist::Args {
        epochs,
        seed,
        fresh,
    } = mnist::parse_args("quantize_mnist");
    let (train, test) = mnist::load()?;
    let (model, net) = mnist::trained_lenet300(&train, &test, epochs, seed, fresh)?;
    let dense = net.evaluate(&model, &test, 1000)?.accuracy;
    let weights = Selector::prunable();
    say!(
        "dense: 32 bits per weight, test accuracy {:.2}%\n",
        100.0 * dense
    );

    let per_row = Granularity::PerChannel { axis: 0 };
    // LeNet-300-100's rows (784, 300, 100 inputs) are not multiples of 32, so llama.cpp's
    // block formats and 32-element groups do not apply here.
    let quantizers: Vec<(&str, Box<dyn Quantizer>)> = vec![
        (
            "int8 symmetric, per row",
            Box::new(UniformQuantizer::new(8, Scheme::Symmetric, per_row)?),
        ),
        (
            "int8 affine, per tensor",
            Box::new(UniformQuantizer::new(
                8,
                Scheme::Affine,
                Granularity::PerTensor,
            )?),
        ),
        (
            "int4 symmetric, per row",
            Box::new(UniformQuantizer::new(4, Scheme::Symmetric, per_row)?),
        ),
        (
            "int4 affine, per row",
            Box::new(UniformQuantizer::new(4, Scheme::Affine, per_row)?),
        ),
        (
            "int2 affine, per row",
            Box::new(UniformQuantizer::new(2, Scheme::Affine, per_row)?),
        ),
        (
            "power of two, 4 bits, per row",
            Box::new(PowerOfTwoQuantizer::new(4, per_row)?),
        ),
        (
            "k-means 16 (4 bits), Lloyd linear init",
            Box::new(KMeansQuantizer::lloyd(16, KMeansInit::Linear)?),
        ),
        (
            "k-means 16 (4 bits), density init",
            Box::new(KMeansQuantizer::lloyd(16, KMeansInit::Density)?),
        ),
        (
            "k-means 16 (4 bits), random init",
            Box::new(KMeansQuantizer::lloyd(16, KMeansInit::Random { seed })?),
        ),
        (
            "k-means 16 (4 bits), optimal",
            Box::new(KMeansQuantizer::optimal(16)?),
        ),
        (
            "k-means 4 (2 bits), optimal",
            Box::new(KMeansQuantizer::optimal(4)?),
        ),
        (
            "ternary (TWN), per row",
            Box::new(TernaryQuantizer::new(per_row)),
        ),
        (
            "binary (XNOR), per row",
            Box::new(BinaryQuantizer::new(per_row)),
        ),
    ];
    say!(
        "{:<44} {:>7} {:>12} {:>10} {:>9}",
        "quantizer (all three Linear weights)",
        "bits/w",
        "compression",
        "rel. error",
        "accuracy"
    );
    for (name, q) in &quantizers {
        let mut m = model.clone();
        match m.quantize(&weights, q.as_ref()) {
            Ok(report) => {
                let err = report
                    .rows
                    .iter()
                    .map(|r| r.relative_error * r.numel as f64)
                    .sum::<f64>()
                    / report.total_numel() as f64;
                let bits = report.total_storage_bits() as f64 / report.total_numel() as f64;
                say!(
                    "{:<44} {:>7.3} {:>11.1}x {:>10.4} {:>8.2}%",
                    name,
                    bits,
                    report.compression(),
                    err,
                    100.0 * net.evaluate(&m, &test, 1000)?.accuracy
                );
            }
            Err(e) => say!("{name:<44} skipped: {e}"),
        }
    }

    // Product quantization needs at least as many rows as codewords: fc1 and fc2 only.
    let mut m = model.clone();
    let hidden = Selector::glob("fc1.weight").include("fc2.weight");
    let report = m.quantize(&hidden, &ProductQuantizer::new(4, 16, seed)?)?;
    let err = report
        .rows
        .iter()
        .map(|r| r.relative_error * r.numel as f64)
        .sum::<f64>()
        / report.total_numel() as f64;
    say!(
        "{:<44} {:>7.3} {:>11.1}x {:>10.4} {:>8.2}%",
        "product, 4-d subvectors, 16 words (fc1, fc2)",
        report.total_storage_bits() as f64 / report.total_numel() as f64,
        report.compression(),
        err,
        100.0 * net.evaluate(&m, &test, 1000)?.accuracy
    );

    say!("\nWeight sharing with centroid fine-tuning (Deep Compression §3.3), 2-bit codebooks:");
    let mut shared = model.clone();
    shared.quantize(&weights, &KMeansQuantizer::lloyd(4, KMeansInit::Linear)?)?;
    say!(
        "  after 2-bit weight sharing: {:.2}%",
        100.0 * net.evaluate(&shared, &test, 1000)?.accuracy
    );
    mnist::fine_tune_centroids(&net, &mut shared, &train, 2, 1e-3, None)?;
    say!(
        "  after fine-tuning the centroids for 2 epochs: {:.2}%",
        100.0 * net.evaluate(&shared, &test, 1000)?.accuracy
    );

    say!("\nQuantization-aware fine-tuning (fake quantization, straight-through gradients):");
    for bits in [2, 3] {
        let qat = QuantAwareTraining::new(
            weights.clone(),
            UniformQuantizer::new(bits, Scheme::Symmetric, per_row)?,
        );
        let post = net.evaluate(&qat.quantized(&model)?, &test, 1000)?.accuracy;
        let mut latent = model.clone();
        let mut sgd = Sgd::new(0.005, 0.9, 0.0)?;
        for epoch in 0..2 {
            qat.train_epoch(&net, &mut latent, &mut sgd, &train, 128, 700 + epoch)?;
        }
        let aware = net
            .evaluate(&qat.quantized(&latent)?, &test, 1000)?
            .accuracy;
        say!(
            "  int{bits} symmetric, per row: {:.2}% after post-training quantization, \
             {:.2}% after 2 epochs of quantization-aware training",
            100.0 * post,
            100.0 * aware
        );
    }
    Ok(())
}
