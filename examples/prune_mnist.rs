//! Pruning LeNet-300-100 on MNIST: every pruning method of slimnn on one trained
//! network, measured by test accuracy, then Han et al.'s prune-and-retrain with an AGP
//! schedule.
//!
//! ```text
//! cargo run --release --example prune_mnist [-- --epochs 10 --seed 1 --retrain-epochs 4 --target 0.95]
//! ```
//!
//! The trained network is saved to `target/slimnn-examples/lenet300.safetensors` and
//! reused by later runs (delete it, or pass `--retrain-from-scratch`, to train anew).

#[path = "common/mnist.rs"]
#[macro_use]
mod mnist;

use ndarray::{ArrayD, s};
use slimnn::io::idx::Dataset;
use slimnn::nn::Network;
use slimnn::prune::{
    ChannelCriterion, GlobalPruner, NmPruner, Obd, Pruner, Statistics, StructuredPruner, Taylor,
    UnstructuredPruner, Wanda,
};
use slimnn::{LayerKind, Model, Result, Selector};

struct Args {
    epochs: usize,
    retrain_epochs: usize,
    seed: u64,
    target: f64,
    fresh: bool,
}

fn parse() -> Args {
    let mut a = Args {
        epochs: 10,
        retrain_epochs: 4,
        seed: 1,
        target: 0.95,
        fresh: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut val = |name: &str| -> String {
            it.next().cloned().unwrap_or_else(|| {
                eprintln!("{name} needs a value");
                std::process::exit(2)
            })
        };
        let bad = |name: &str| -> ! {
            eprintln!("invalid value for {name}");
            std::process::exit(2)
        };
        match k.as_str() {
            "--epochs" => a.epochs = val(k).parse().unwrap_or_else(|_| bad(k)),
            "--retrain-epochs" => a.retrain_epochs = val(k).parse().unwrap_or_else(|_| bad(k)),
            "--seed" => a.seed = val(k).parse().unwrap_or_else(|_| bad(k)),
            "--target" => a.target = val(k).parse().unwrap_or_else(|_| bad(k)),
            "--retrain-from-scratch" => a.fresh = true,
            "-h" | "--help" => {
                say!(
                    "usage: prune_mnist [--epochs N] [--retrain-epochs N] [--seed S] [--target SPARSITY] [--retrain-from-scratch]"
                );
                std::process::exit(0)
            }
            other => {
                eprintln!("unknown argument `{other}` (try --help)");
                std::process::exit(2)
            }
        }
    }
    a
}

fn main() -> Result<()> {
    let args = parse();
    let (train, test) = mnist::load()?;
    let (model, net) = mnist::trained_lenet300(&train, &test, args.epochs, args.seed, args.fresh)?;
    let dense = net.evaluate(&model, &test, 1000)?.accuracy;
    say!(
        "dense LeNet-300-100: {} parameters, test accuracy {:.2}%\n",
        model.numel(),
        100.0 * dense
    );

    // Statistics from 2,048 training images for the data-aware criteria.
    let calib = train.slice(0..2048);
    let stats = statistics(&net, &model, &calib)?;
    let weights = Selector::prunable();
    let eval = |m: &Model| -> Result<f64> { Ok(net.evaluate(m, &test, 1000)?.accuracy) };

    say!(
        "One-shot pruning, no retraining (test accuracy; dense {:.2}%):",
        100.0 * dense
    );
    say!("{:<44} {:>9} {:>9}", "method", "sparsity", "accuracy");
    let row = |name: &str, m: &Model| -> Result<()> {
        let sp = m.sparsity(&weights)?.sparsity();
        say!(
            "{:<44} {:>8.1}% {:>8.2}%",
            name,
            100.0 * sp,
            100.0 * eval(m)?
        );
        Ok(())
    };
    for s in [0.5, 0.8, 0.9, 0.95, 0.98] {
        let mut m = model.clone();
        m.prune_global(&weights, &GlobalPruner::magnitude(s)?, &Statistics::new())?;
        row(&format!("global magnitude {:.0}%", 100.0 * s), &m)?;
    }
    let at = 0.9;
    let per_layer: Vec<(&str, Box<dyn Pruner>)> = vec![
        (
            "random, per layer",
            Box::new(UnstructuredPruner::random(args.seed, at)?),
        ),
        (
            "magnitude, per layer (Han 2015)",
            Box::new(UnstructuredPruner::magnitude(at)?),
        ),
        (
            "Taylor |w·g|, g = mean |batch gradient|",
            Box::new(UnstructuredPruner::new(Taylor, at)?),
        ),
        (
            "OBD ½hw², h = Fisher diagonal",
            Box::new(UnstructuredPruner::new(Obd, at)?),
        ),
        (
            "Wanda |w|·‖x‖, per output row",
            Box::new(UnstructuredPruner::wanda(at)?),
        ),
    ];
    for (name, pruner) in &per_layer {
        let mut m = model.clone();
        m.prune(&weights, pruner.as_ref(), &stats)?;
        row(name, &m)?;
    }
    for (name, saliency) in [
        (
            "global Taylor",
            Box::new(Taylor) as Box<dyn slimnn::prune::Saliency>,
        ),
        ("global OBD", Box::new(Obd)),
    ] {
        let mut m = model.clone();
        m.prune_global(&weights, &GlobalPruner::new(saliency, at)?, &stats)?;
        row(&format!("{name} {:.0}%", 100.0 * at), &m)?;
    }
    for (name, nm) in [
        ("2:4 magnitude", NmPruner::magnitude(2, 4)?),
        ("1:4 magnitude", NmPruner::magnitude(1, 4)?),
    ] {
        let mut m = model.clone();
        m.prune(
            &Selector::glob("fc1.weight").include("fc2.weight"),
            &nm,
            &stats,
        )?;
        row(&format!("{name} (fc1, fc2)"), &m)?;
    }
    let mut m = model.clone();
    m.prune(
        &Selector::glob("fc1.weight").include("fc2.weight"),
        &NmPruner::new(Wanda, 2, 4)?,
        &stats,
    )?;
    row("2:4 Wanda (fc1, fc2)", &m)?;

    say!("\nStructured: remove half the hidden neurons, then shrink the layers:");
    say!("{:<44} {:>10} {:>9}", "method", "params", "accuracy");
    let hidden = Selector::glob("fc1.weight").include("fc2.weight");
    for (name, crit) in [
        ("L1 norm (Li 2017)", ChannelCriterion::L1),
        ("L2 norm", ChannelCriterion::L2),
        ("geometric median (FPGM)", ChannelCriterion::GeometricMedian),
    ] {
        let mut m = model.clone();
        m.prune(
            &hidden,
            &StructuredPruner::new(crit, 0.5)?,
            &Statistics::new(),
        )?;
        m.mask_biases_of_pruned_channels(&hidden)?;
        let masked = eval(&m)?;
        m.remove_pruned_channels(&["fc1.weight", "fc2.weight", "fc3.weight"])?;
        let shrunk = eval(&m)?;
        assert!(
            (masked - shrunk).abs() < 1e-9,
            "removal must not change the function"
        );
        say!("{:<44} {:>10} {:>8.2}%", name, m.numel(), 100.0 * shrunk);
    }
    let mut m = model.clone();
    let merges = m.merge_neurons("fc1.weight", "fc2.weight", 0.5)?;
    say!(
        "{:<44} {:>10} {:>8.2}%",
        format!("neuron merging fc1, data-free ({} merged)", merges.len()),
        m.numel(),
        100.0 * eval(&m)?
    );

    say!("\nPrune and retrain (Han et al. 2015) with AGP (Zhu & Gupta 2017), global magnitude:");
    let retraining = mnist::Retraining {
        target: args.target,
        epochs: args.retrain_epochs,
        seed: args.seed,
        final_lr: None,
        distill: None,
    };
    let retrained = mnist::prune_and_retrain(&net, &model, &train, &test, &retraining)?;
    let final_acc = eval(&retrained)?;
    let report = retrained.sparsity(&weights)?;
    say!("{report}");
    say!(
        "\nresult: {:.1}% of the weights pruned, test accuracy {:.2}% (dense {:.2}%, {:+.2} points)",
        100.0 * report.sparsity(),
        100.0 * final_acc,
        100.0 * dense,
        100.0 * (final_acc - dense)
    );
    Ok(())
}

/// Gradient statistics over `calib` in batches of 32: the mean magnitude of the batch
/// gradients (for Taylor: at a trained optimum the mean gradient itself is near zero),
/// their mean square (a Fisher approximation of the Hessian diagonal, for OBD), and
/// input activation norms (for Wanda).
fn statistics(net: &Network, model: &Model, calib: &Dataset) -> Result<Statistics> {
    let mut sq: std::collections::BTreeMap<String, ArrayD<f32>> = Default::default();
    let mut abs: std::collections::BTreeMap<String, ArrayD<f32>> = Default::default();
    let batches = calib.len() / 32;
    for b in 0..batches {
        let x = calib.images.slice(s![b * 32..(b + 1) * 32, ..]);
        let y = calib.labels.slice(s![b * 32..(b + 1) * 32]);
        let (_, grads) = net.loss_and_gradients(model, x, y)?;
        for (name, g) in grads {
            let e = sq
                .entry(name.clone())
                .or_insert_with(|| ArrayD::zeros(g.raw_dim()));
            ndarray::Zip::from(e)
                .and(&g)
                .for_each(|e, &g| *e += g * g / batches as f32);
            let e = abs
                .entry(name)
                .or_insert_with(|| ArrayD::zeros(g.raw_dim()));
            ndarray::Zip::from(e)
                .and(&g)
                .for_each(|e, &g| *e += g.abs() / batches as f32);
        }
    }
    let mut stats = Statistics::new();
    for (name, ms) in sq {
        if model.get(&name)?.kind() != LayerKind::Linear {
            continue;
        }
        let mean_abs = abs.remove(&name).expect("same names as `sq`");
        stats = stats
            .with_gradient(name.clone(), mean_abs)
            .with_hessian_diag(name, ms);
    }
    for (name, norms) in net.activation_norms(model, calib.images.view())? {
        stats = stats.with_activation_norms(name, norms);
    }
    Ok(stats)
}
