//! Shared by the MNIST examples: the bundled data and a trained LeNet-300-100, cached
//! in `target/slimnn-examples/` so that later runs (and other examples) reuse it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Axis;
use slimnn::io::idx::Dataset;
use slimnn::io::safetensors::SaveOptions;
use slimnn::nn::{Network, Sgd, train_epoch};
use slimnn::{Model, Result, Selector};

/// The options of an example that only needs the trained network: `--epochs N`,
/// `--seed S` and `--retrain-from-scratch`.
pub struct Args {
    /// Training epochs, when the network is trained.
    pub epochs: usize,
    /// Seed of the initialisation and the batch order.
    pub seed: u64,
    /// Train anew even if a checkpoint exists.
    pub fresh: bool,
}

/// Parses [`Args`] from the command line; prints usage and exits on `--help` or a bad
/// argument.
#[allow(dead_code)] // prune_mnist has options of its own
pub fn parse_args(example: &str) -> Args {
    let mut args = Args {
        epochs: 10,
        seed: 1,
        fresh: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut num = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| {
                    eprintln!("{a} needs a number");
                    std::process::exit(2)
                })
        };
        match a.as_str() {
            "--epochs" => args.epochs = num() as usize,
            "--seed" => args.seed = num(),
            "--retrain-from-scratch" => args.fresh = true,
            "-h" | "--help" => {
                println!("usage: {example} [--epochs N] [--seed S] [--retrain-from-scratch]");
                std::process::exit(0)
            }
            other => {
                eprintln!("unknown argument `{other}` (try --help)");
                std::process::exit(2)
            }
        }
    }
    args
}

/// MNIST's 60,000 training and 10,000 test images, pixels scaled to [0, 1].
pub fn load() -> Result<(Dataset, Dataset)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let set =
        |images: &str, labels: &str| Dataset::from_idx(dir.join(images), dir.join(labels), 255.0);
    let train = set("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")?;
    let test = set("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")?;
    println!(
        "MNIST: {} training and {} test images",
        train.len(),
        test.len()
    );
    Ok((train, test))
}

/// Where the trained network is cached.
pub fn checkpoint() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/slimnn-examples/lenet300.safetensors")
}

/// LeNet-300-100 trained for `epochs` (SGD, momentum 0.9, batch 128, the last third of
/// the epochs at a tenth of the rate), or loaded from the checkpoint unless `fresh`.
pub fn trained_lenet300(
    train: &Dataset,
    test: &Dataset,
    epochs: usize,
    seed: u64,
    fresh: bool,
) -> Result<(Model, Network)> {
    let path = checkpoint();
    if path.exists() && !fresh {
        let model = Model::load(&path)?;
        let net = Network::mlp_from(&model, &["fc1", "fc2", "fc3"])?;
        println!(
            "loaded the trained network from {} (pass --retrain-from-scratch to train anew)",
            path.display()
        );
        return Ok((model, net));
    }
    let mut model = Model::new();
    let net = Network::lenet_300_100(&mut model, seed)?;
    let mut sgd = Sgd::new(0.05, 0.9, 1e-4)?;
    println!("training LeNet-300-100 for {epochs} epochs (SGD, momentum 0.9, batch 128)");
    for epoch in 0..epochs {
        let t0 = Instant::now();
        sgd.set_lr(if epoch >= epochs * 2 / 3 { 0.005 } else { 0.05 })?;
        let loss = train_epoch(&net, &mut model, &mut sgd, train, 128, seed + epoch as u64)?;
        let acc = net.evaluate(&model, test, 1000)?.accuracy;
        println!(
            "  epoch {:>2}: loss {loss:.4}, test accuracy {:.2}% ({:.1} s)",
            epoch + 1,
            100.0 * acc,
            t0.elapsed().as_secs_f64()
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| slimnn::Error::Io {
            path: dir.into(),
            source: e,
        })?;
    }
    model
        .metadata_mut()
        .insert("network".into(), "LeNet-300-100".into());
    model.save(&path, &SaveOptions::default())?;
    println!("saved the trained network to {}", path.display());
    Ok((model, net))
}

/// Deep Compression's centroid fine-tuning: plain SGD at `lr`, which for a weight-shared
/// parameter moves each shared value by the sum of its weights' gradients, codes fixed
/// (biases, stored in full, train as usual).
#[allow(dead_code)] // prune_mnist and lowrank_mnist do not share weights
pub fn fine_tune_centroids(
    net: &Network,
    model: &mut Model,
    train: &Dataset,
    epochs: usize,
    lr: f32,
) -> Result<()> {
    let mut sgd = Sgd::new(lr, 0.0, 0.0)?;
    for epoch in 0..epochs {
        train_epoch(net, model, &mut sgd, train, 128, 500 + epoch as u64)?;
    }
    Ok(())
}

/// How [`prune_and_retrain`] prunes and retrains.
#[allow(dead_code)] // quantize_mnist and lowrank_mnist do not prune
#[derive(Clone, Copy)]
pub struct Retraining {
    /// The global sparsity reached.
    pub target: f64,
    /// Epochs of retraining (pruning happens over the first half).
    pub epochs: usize,
    /// Seed of the batch order.
    pub seed: u64,
    /// The learning rate of the last quarter of the epochs (`None`: stays at 0.01).
    pub final_lr: Option<f32>,
}

/// Han et al.'s prune and retrain: global magnitude pruning to `r.target` over the first
/// half of retraining (an AGP schedule from 50%, 20 steps), then retraining with the
/// masks fixed, by SGD at 0.01.
#[allow(dead_code)] // quantize_mnist and lowrank_mnist do not prune
pub fn prune_and_retrain(
    net: &Network,
    dense: &Model,
    train: &Dataset,
    test: &Dataset,
    r: &Retraining,
) -> Result<Model> {
    let Retraining {
        target,
        epochs,
        seed,
        final_lr,
    } = *r;
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    use slimnn::prune::{GlobalPruner, Magnitude, Schedule, Statistics};

    let mut model = dense.clone();
    let batch = 128;
    let epochs = epochs.max(1);
    let total = train.len().div_ceil(batch) * epochs;
    let prune_steps = 20;
    let schedule = Schedule::agp(
        0.5,
        target,
        0,
        prune_steps,
        (total / 2 / prune_steps).max(1),
    )?;
    let mut sgd = Sgd::new(0.01, 0.9, 1e-4)?;
    let mut step = 0;
    for epoch in 0..epochs {
        if let Some(lr) = final_lr.filter(|_| epoch == epochs * 3 / 4) {
            sgd.set_lr(lr)?;
        }
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rand::rngs::Xoshiro256PlusPlus::seed_from_u64(
            seed + 100 + epoch as u64,
        ));
        for idx in order.chunks(batch) {
            if schedule.is_pruning_step(step) {
                let pruner = GlobalPruner::new(Magnitude, schedule.sparsity_at(step))?;
                model.prune_global(&Selector::prunable(), &pruner, &Statistics::new())?;
            }
            let x = train.images.select(Axis(0), idx);
            let y = train.labels.select(Axis(0), idx);
            let (_, grads) = net.loss_and_gradients(&model, x.view(), y.view())?;
            sgd.step(&mut model, &grads)?;
            step += 1;
        }
        println!(
            "  retrain epoch {}: sparsity {:.1}%, test accuracy {:.2}%",
            epoch + 1,
            100.0 * model.sparsity(&Selector::prunable())?.sparsity(),
            100.0 * net.evaluate(&model, test, 1000)?.accuracy
        );
    }
    Ok(model)
}
