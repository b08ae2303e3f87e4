//! Deep Compression (Han, Mao & Dally, ICLR 2016) on MNIST with LeNet-300-100 (the
//! default) or LeNet-5 (`--arch lenet5`): pruning with retraining, k-means weight
//! sharing with centroid fine-tuning, and Huffman coding, with a table in the style of
//! the paper's Tables 1 and 2 (LeNet-300-100) and 3 (LeNet-5).
//!
//! ```text
//! cargo run --release --example deep_compression [-- --arch lenet5 --epochs 10 --seed 1
//!     --sparsity 0.92 --bits 5 --conv-bits 5 --retrain-epochs 6 --distill --json]
//! ```
//!
//! `--distill` retrains (pruning and centroid fine-tuning) with the dense network as
//! teacher (soft targets at T = 4, α = 0.7: knowledge distillation as recovery) instead
//! of cross-entropy on the labels alone.
//!
//! Reuses the trained network cached in `target/slimnn-examples/` (`lenet300.safetensors`,
//! which `prune_mnist` also writes, or `lenet5.safetensors`), or trains it, and writes
//! the compressed model to `target/slimnn-examples/<arch>-deep-compression.slim` and a
//! sweep of accuracy against compression (without retraining) to
//! `<arch>-sweep.csv` and `.svg` beside it.

#[path = "common/mnist.rs"]
#[macro_use]
mod mnist;
#[path = "common/plot.rs"]
mod plot;

use slimnn::distill::{DistillConfig, Distillation, Teacher};
use slimnn::pipeline::{Compressor, Encode, Quantize, Report};
use slimnn::prune::{GlobalPruner, Statistics};
use slimnn::quant::{KMeansInit, KMeansQuantizer};
use slimnn::store::{Encoding, Positions};
use slimnn::{LayerKind, Model, Result, Selector};

struct Args {
    arch: mnist::Arch,
    epochs: usize,
    retrain_epochs: usize,
    seed: u64,
    sparsity: f64,
    bits: u32,
    /// `None`: as `bits`.
    conv_bits: Option<u32>,
    fresh: bool,
    distill: bool,
    json: bool,
}

fn parse() -> Args {
    let mut a = Args {
        arch: mnist::Arch::Lenet300,
        epochs: 10,
        retrain_epochs: 6,
        seed: 1,
        sparsity: 0.92,
        bits: 5,
        conv_bits: None,
        fresh: false,
        distill: false,
        json: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next().cloned().unwrap_or_else(|| {
                eprintln!("{flag} needs a value");
                std::process::exit(2)
            })
        };
        let number = |v: String| -> f64 {
            v.parse().unwrap_or_else(|_| {
                eprintln!("{flag} needs a number, not `{v}`");
                std::process::exit(2)
            })
        };
        let count = |v: String| -> u64 {
            v.parse().unwrap_or_else(|_| {
                eprintln!("{flag} needs a whole number ≥ 0, not `{v}`");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--arch" => {
                let v = value();
                a.arch = mnist::Arch::parse(&v).unwrap_or_else(|| {
                    eprintln!("--arch is lenet300 or lenet5, not `{v}`");
                    std::process::exit(2)
                })
            }
            "--epochs" => a.epochs = count(value()) as usize,
            "--retrain-epochs" => a.retrain_epochs = count(value()) as usize,
            "--seed" => a.seed = count(value()),
            "--sparsity" => a.sparsity = number(value()),
            "--bits" => a.bits = count(value()).min(99) as u32,
            "--conv-bits" => a.conv_bits = Some(count(value()).min(99) as u32),
            "--retrain-from-scratch" => a.fresh = true,
            "--distill" => a.distill = true,
            "--json" => a.json = true,
            "-h" | "--help" => {
                say!(
                    "usage: deep_compression [--arch lenet300|lenet5] [--epochs N] \
                     [--retrain-epochs N] [--seed S] [--sparsity F] [--bits B] \
                     [--conv-bits B (default: --bits)] [--retrain-from-scratch] [--distill] [--json]"
                );
                std::process::exit(0)
            }
            other => {
                eprintln!("unknown argument `{other}` (try --help)");
                std::process::exit(2)
            }
        }
    }
    if a.epochs == 0 || a.retrain_epochs == 0 {
        eprintln!("--epochs and --retrain-epochs must be at least 1");
        std::process::exit(2)
    }
    if !(1..=8).contains(&a.bits)
        || a.conv_bits.is_some_and(|b| !(1..=8).contains(&b))
        || !(0.0..1.0).contains(&a.sparsity)
    {
        eprintln!("--bits and --conv-bits must be 1 to 8 and --sparsity in [0, 1)");
        std::process::exit(2)
    }
    a
}

fn main() -> Result<()> {
    let args = parse();
    let (train, test) = mnist::load()?;
    let (dense, net) =
        mnist::trained(args.arch, &train, &test, args.epochs, args.seed, args.fresh)?;
    let accuracy = |m: &Model| net.evaluate(m, &test, 1000).map(|e| e.accuracy);
    let dense_accuracy = accuracy(&dense)?;
    let mut rows = vec![Stage::of(
        "dense baseline (32-bit)",
        &dense,
        &dense,
        dense_accuracy,
    )?];

    say!(
        "\npruning to {:.0}% with retraining ({} epochs, AGP schedule)",
        100.0 * args.sparsity,
        args.retrain_epochs
    );
    // Knowledge distillation as recovery: the dense network teaches its compressed self.
    let mut distill = if args.distill {
        say!("  (with the dense network as teacher: soft targets at T = 4, α = 0.7)");
        let config = DistillConfig {
            temperature: 4.0,
            alpha: 0.7,
            ..Default::default()
        };
        let teacher = Teacher::new(net.clone(), dense.clone())?;
        Some(Distillation::new(config, teacher, &net, &dense)?)
    } else {
        None
    };
    let retraining = mnist::Retraining {
        target: args.sparsity,
        epochs: args.retrain_epochs,
        seed: args.seed,
        final_lr: Some(0.001),
        distill: distill.as_ref(),
    };
    let pruned = mnist::prune_and_retrain(&net, &dense, &train, &test, &retraining)?;
    rows.push(Stage::of(
        "pruning + retraining",
        &dense,
        &pruned,
        accuracy(&pruned)?,
    )?);

    let conv = match args.conv_bits {
        Some(b) if args.arch == mnist::Arch::Lenet5 => format!(", {b}-bit for convolutions"),
        _ => String::new(),
    };
    say!(
        "\nweight sharing: {}-bit k-means per layer{conv} (linear init), centroids fine-tuned",
        args.bits
    );
    let mut shared = pruned.clone();
    share(&mut shared, &args)?;
    let before = accuracy(&shared)?;
    mnist::fine_tune_centroids(&net, &mut shared, &train, 2, 1e-3, distill.as_mut())?;
    say!(
        "  accuracy {:.2}% after sharing, {:.2}% after fine-tuning the centroids",
        100.0 * before,
        100.0 * accuracy(&shared)?
    );
    rows.push(Stage::of(
        "+ weight sharing",
        &dense,
        &shared,
        accuracy(&shared)?,
    )?);

    let mut coded = shared.clone();
    Encode::new(
        Selector::all(),
        Encoding {
            positions: Positions::Auto,
            huffman: true,
        },
    )
    .compress(&mut coded)?;
    let final_accuracy = accuracy(&coded)?;
    rows.push(Stage::of(
        "+ Huffman coding",
        &dense,
        &coded,
        final_accuracy,
    )?);

    say!(
        "\n{:<26} {:>9} {:>8} {:>12} {:>12} {:>9} {:>10}",
        "stage",
        "weights",
        "bits/w",
        "bytes",
        "compression",
        "accuracy",
        "top-1 err"
    );
    for r in &rows {
        say!(
            "{:<26} {:>8.1}% {:>8.2} {:>12} {:>11.1}x {:>8.2}% {:>9.2}%",
            r.name,
            100.0 * r.kept,
            r.bits_per_weight,
            r.bytes,
            r.compression,
            100.0 * r.accuracy,
            100.0 * (1.0 - r.accuracy)
        );
    }

    let report = Report::compare(&dense, &coded, Vec::new())?;
    say!(
        "\nper layer (the paper's Table {}):\n{:<12} {:>9} {:>8} {:>10} {:>8} {:>12}",
        if args.arch == mnist::Arch::Lenet5 {
            3
        } else {
            2
        },
        "layer",
        "weights",
        "kept",
        "bytes",
        "bits/w",
        "compression"
    );
    for p in &report.params {
        say!(
            "{:<12} {:>9} {:>7.1}% {:>10} {:>8.2} {:>11.1}x",
            p.name,
            p.params,
            100.0 * p.nonzeros as f64 / p.params as f64,
            p.stored.total(),
            p.bits_per_weight(),
            p.compression_rate()
        );
    }
    say!(
        "\npruning sweep without retraining (each point: prune, {}-bit sharing, Huffman):",
        args.bits
    );
    let mut points = Vec::new();
    for sparsity in [0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.95, 0.97] {
        let mut m = dense.clone();
        let pruner = GlobalPruner::magnitude(sparsity)?;
        m.prune_global(&Selector::prunable(), &pruner, &Statistics::new())?;
        share(&mut m, &args)?;
        Encode::new(
            Selector::all(),
            Encoding {
                positions: Positions::Auto,
                huffman: true,
            },
        )
        .compress(&mut m)?;
        let r = Report::compare(&dense, &m, Vec::new())?;
        let acc = accuracy(&m)?;
        say!(
            "  {:>4.1}% pruned: {:>5.1}x, {:.2}%",
            100.0 * sparsity,
            r.compression_rate(),
            100.0 * acc
        );
        points.push((sparsity, r.compression_rate(), acc, false));
    }
    points.push((args.sparsity, rows[3].compression, final_accuracy, true));
    let stem = args.arch.file_stem();
    let dir = args.arch.checkpoint().with_file_name("");
    plot::write(&dir, stem, args.arch.title(), &points, dense_accuracy)?;
    say!(
        "wrote {} and {}",
        dir.join(format!("{stem}-sweep.csv")).display(),
        dir.join(format!("{stem}-sweep.svg")).display()
    );

    let speed = inference(&net, &dense, &coded, &test)?;
    say!(
        "\ninference on the {} test images (best of 3, batch {INFERENCE_BATCH}):\n  \
         dense {:.1} ms, {:.2}%\n  compressed, each Linear in its stored form ({}): {:.1} ms \
         ({:.2}x), {:.2}% (decoded to dense: {:.2}%)",
        test.len(),
        1e3 * speed.dense_seconds,
        100.0 * speed.dense_accuracy,
        speed.forms,
        1e3 * speed.compressed_seconds,
        speed.dense_seconds / speed.compressed_seconds,
        100.0 * speed.compressed_accuracy,
        100.0 * final_accuracy
    );

    let path = dir.join(format!("{stem}-deep-compression.slim"));
    coded.save_compressed(&path)?;
    say!(
        "\nwrote {} ({} bytes, as the report counts)",
        path.display(),
        report.file_bytes
    );
    if args.json {
        say!(
            "{{\"network\": \"{}\", \"distill\": {}, \"sparsity\": {}, \"bits\": {}, \"conv_bits\": {}, \"baseline_accuracy\": {dense_accuracy:.4}, \"final_accuracy\": {final_accuracy:.4}, \"compression\": {:.2}, \"original_bytes\": {}, \"compressed_bytes\": {}, \"dense_inference_s\": {:.4}, \"compressed_inference_s\": {:.4}, \"compiled_accuracy\": {:.4}}}",
            args.arch.title(),
            args.distill,
            args.sparsity,
            args.bits,
            args.conv_bits.unwrap_or(args.bits),
            report.compression_rate(),
            report.original_bytes,
            report.file_bytes,
            speed.dense_seconds,
            speed.compressed_seconds,
            speed.compressed_accuracy
        );
    }
    Ok(())
}

/// Images per forward pass when timing inference.
const INFERENCE_BATCH: usize = 1000;

/// Inference over a data set: the dense network, and the compressed one running each
/// Linear layer in its stored form ([`slimnn::nn::Network::compile`]).
struct Inference {
    dense_seconds: f64,
    dense_accuracy: f64,
    compressed_seconds: f64,
    compressed_accuracy: f64,
    /// The kernels, e.g. `"fc1 CSR, fc2 CSR, fc3 CSR"`.
    forms: String,
}

fn inference(
    net: &slimnn::nn::Network,
    dense: &Model,
    compressed: &Model,
    test: &slimnn::io::idx::Dataset,
) -> Result<Inference> {
    let best = |run: &dyn Fn() -> Result<f64>| -> Result<(f64, f64)> {
        let mut fastest = f64::INFINITY;
        let mut accuracy = 0.0;
        for _ in 0..3 {
            let t0 = std::time::Instant::now();
            accuracy = run()?;
            fastest = fastest.min(t0.elapsed().as_secs_f64());
        }
        Ok((fastest, accuracy))
    };
    let (dense_seconds, dense_accuracy) =
        best(&|| Ok(net.evaluate(dense, test, INFERENCE_BATCH)?.accuracy))?;
    let compiled = net.compile(compressed)?;
    let (compressed_seconds, compressed_accuracy) =
        best(&|| Ok(compiled.evaluate(test, INFERENCE_BATCH)?.accuracy))?;
    let mut forms: Vec<(String, &str)> = compiled
        .linear_layers()
        .iter()
        .map(|(name, l)| (name.trim_end_matches(".weight").to_string(), l.form()))
        .collect();
    forms.sort();
    let forms = forms
        .iter()
        .map(|(n, f)| format!("{n} {f}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Inference {
        dense_seconds,
        dense_accuracy,
        compressed_seconds,
        compressed_accuracy,
        forms,
    })
}

/// Weight sharing as the paper does it: one k-means codebook per layer (linear
/// initialisation), `--bits` for fully connected layers and `--conv-bits` (by default
/// the same) for convolutions. The paper gives convolutions 8 bits; on LeNet-5, 5 bits
/// keep the same accuracy, and conv1's 256-entry codebook alone would cost more than
/// its 442 codes.
fn share(model: &mut Model, args: &Args) -> Result<()> {
    for (kind, bits) in [
        (LayerKind::Linear, args.bits),
        (LayerKind::Conv2d, args.conv_bits.unwrap_or(args.bits)),
    ] {
        let layers = Selector::kinds(&[kind]);
        if model.select(&layers).is_err() {
            continue; // no layer of this kind (LeNet-300-100 has no convolutions)
        }
        Quantize::new(
            layers,
            KMeansQuantizer::lloyd(1 << bits, KMeansInit::Linear)?,
        )
        .compress(model)?;
    }
    Ok(())
}

/// One row of the summary table.
struct Stage {
    name: &'static str,
    kept: f64,
    bits_per_weight: f64,
    bytes: usize,
    compression: f64,
    accuracy: f64,
}

impl Stage {
    /// `model` measured against the dense one: every stored byte counts (values,
    /// indices, codebooks, biases, Huffman tables, headers).
    fn of(name: &'static str, dense: &Model, model: &Model, accuracy: f64) -> Result<Stage> {
        let report = Report::compare(dense, model, Vec::new())?;
        let weights = Selector::prunable();
        let names = model.select(&weights)?;
        let total: usize = names
            .iter()
            .map(|n| model.get(n).map(|p| p.numel()))
            .sum::<Result<_>>()?;
        let kept: usize = report
            .params
            .iter()
            .filter(|p| names.contains(&p.name.as_str()))
            .map(|p| p.nonzeros)
            .sum();
        Ok(Stage {
            name,
            kept: kept as f64 / total as f64,
            bits_per_weight: 8.0 * report.file_bytes as f64 / report.total_params() as f64,
            bytes: report.file_bytes,
            compression: report.compression_rate(),
            accuracy,
        })
    }
}
