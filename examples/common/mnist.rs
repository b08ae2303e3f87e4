//! Shared by the MNIST examples: the bundled data and a trained LeNet-300-100, cached
//! in `target/slimnn-examples/` so that later runs (and other examples) reuse it.

/// `println!` that ends the program quietly (status 0) once stdout is closed, e.g. by
/// `| head`, where `println!` would panic.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::mnist::say_line(format_args!($($arg)*))
    };
}

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Axis;
use slimnn::distill::Distillation;
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
                say!("usage: {example} [--epochs N] [--seed S] [--retrain-from-scratch]");
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
    say!(
        "MNIST: {} training and {} test images",
        train.len(),
        test.len()
    );
    Ok((train, test))
}

/// The networks of Han et al.'s MNIST experiments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// LeNet-300-100, fully connected (784-300-100-10).
    Lenet300,
    /// LeNet-5 as in Caffe: two 5×5 convolutions with max pooling, then 800-500-10.
    Lenet5,
}

#[allow(dead_code)] // only deep_compression offers LeNet-5
impl Arch {
    /// `lenet300` or `lenet5`, as on the command line.
    pub fn parse(name: &str) -> Option<Arch> {
        match name {
            "lenet300" | "lenet-300-100" => Some(Arch::Lenet300),
            "lenet5" | "lenet-5" => Some(Arch::Lenet5),
            _ => None,
        }
    }

    /// The short name files are called by.
    pub fn file_stem(self) -> &'static str {
        match self {
            Arch::Lenet300 => "lenet300",
            Arch::Lenet5 => "lenet5",
        }
    }

    /// The name the paper uses.
    pub fn title(self) -> &'static str {
        match self {
            Arch::Lenet300 => "LeNet-300-100",
            Arch::Lenet5 => "LeNet-5",
        }
    }

    /// Where the trained network is cached.
    pub fn checkpoint(self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/slimnn-examples")
            .join(format!("{}.safetensors", self.file_stem()))
    }

    fn build(self, model: &mut Model, seed: u64) -> Result<Network> {
        match self {
            Arch::Lenet300 => Network::lenet_300_100(model, seed),
            Arch::Lenet5 => Network::lenet5(model, seed),
        }
    }

    fn of(self, model: &Model) -> Result<Network> {
        match self {
            Arch::Lenet300 => Network::mlp_from(model, &["fc1", "fc2", "fc3"]),
            Arch::Lenet5 => Network::lenet5_from(model),
        }
    }

    /// Learning rate (from epoch ⌊2n/3⌋ of n on, a tenth of it), batch and weight
    /// decay: Caffe's LeNet-5 solver uses 0.01, 64 and 5e-4.
    fn recipe(self) -> (f32, usize, f32) {
        match self {
            Arch::Lenet300 => (0.05, 128, 1e-4),
            Arch::Lenet5 => (0.01, 64, 5e-4),
        }
    }
}

/// Where the trained LeNet-300-100 is cached.
#[allow(dead_code)] // only deep_compression writes beside it
pub fn checkpoint() -> PathBuf {
    Arch::Lenet300.checkpoint()
}

/// LeNet-300-100 trained for `epochs`, or loaded from the checkpoint unless `fresh`.
#[allow(dead_code)] // deep_compression picks its architecture
pub fn trained_lenet300(
    train: &Dataset,
    test: &Dataset,
    epochs: usize,
    seed: u64,
    fresh: bool,
) -> Result<(Model, Network)> {
    trained(Arch::Lenet300, train, test, epochs, seed, fresh)
}

/// `arch` trained for `epochs` (SGD with momentum 0.9 by [`Arch::recipe`]), or loaded from
/// its checkpoint unless `fresh`.
pub fn trained(
    arch: Arch,
    train: &Dataset,
    test: &Dataset,
    epochs: usize,
    seed: u64,
    fresh: bool,
) -> Result<(Model, Network)> {
    let path = arch.checkpoint();
    let settings = format!("{epochs} epochs, seed {seed}");
    if path.exists() && !fresh {
        let model = Model::load(&path)?;
        if model.metadata().get("trained").map(String::as_str) == Some(settings.as_str()) {
            let net = arch.of(&model)?;
            say!(
                "loaded the trained {} ({settings}) from {} (pass --retrain-from-scratch \
                 to train anew)",
                arch.title(),
                path.display()
            );
            return Ok((model, net));
        }
        say!(
            "the cached {} was not trained with {settings}: training anew",
            arch.title()
        );
    }
    let mut model = Model::new();
    let net = arch.build(&mut model, seed)?;
    let (lr, batch, decay) = arch.recipe();
    let mut sgd = Sgd::new(lr, 0.9, decay)?;
    say!(
        "training {} for {epochs} epochs (SGD, momentum 0.9, batch {batch})",
        arch.title()
    );
    for epoch in 0..epochs {
        let t0 = Instant::now();
        sgd.set_lr(if epoch >= epochs * 2 / 3 {
            lr / 10.0
        } else {
            lr
        })?;
        let loss = train_epoch(
            &net,
            &mut model,
            &mut sgd,
            train,
            batch,
            seed + epoch as u64,
        )?;
        let acc = net.evaluate(&model, test, 1000)?.accuracy;
        say!(
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
        .insert("network".into(), arch.title().into());
    model.metadata_mut().insert("trained".into(), settings);
    model.save(&path, &SaveOptions::default())?;
    say!("saved the trained network to {}", path.display());
    Ok((model, net))
}

/// Deep Compression's centroid fine-tuning: plain SGD at `lr`, which for a weight-shared
/// parameter moves each shared value by the sum of its weights' gradients, codes fixed
/// (biases, stored in full, train as usual).
#[allow(dead_code)] // prune_mnist and lowrank_mnist do not share weights
///
/// With `distill`, the loss is its distillation loss (e.g. the dense network as
/// teacher) instead of cross-entropy on the labels.
pub fn fine_tune_centroids(
    net: &Network,
    model: &mut Model,
    train: &Dataset,
    epochs: usize,
    lr: f32,
    mut distill: Option<&mut Distillation>,
) -> Result<()> {
    let mut sgd = Sgd::new(lr, 0.0, 0.0)?;
    for epoch in 0..epochs {
        let seed = 500 + epoch as u64;
        match distill.as_deref_mut() {
            Some(d) => d.train_epoch(net, model, &mut sgd, train, 128, seed)?,
            None => train_epoch(net, model, &mut sgd, train, 128, seed)?,
        };
    }
    Ok(())
}

/// How [`prune_and_retrain`] prunes and retrains.
#[allow(dead_code)] // quantize_mnist and lowrank_mnist do not prune
#[derive(Clone, Copy)]
pub struct Retraining<'a> {
    /// The global sparsity reached.
    pub target: f64,
    /// Epochs of retraining (pruning happens over the first half).
    pub epochs: usize,
    /// Seed of the batch order.
    pub seed: u64,
    /// The learning rate from epoch ⌊3n/4⌋ of n on (`None`: stays at 0.01).
    pub final_lr: Option<f32>,
    /// Retrain with this distillation loss (e.g. the dense network as teacher) instead
    /// of cross-entropy on the labels.
    pub distill: Option<&'a Distillation>,
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
        distill,
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
            let grads = match distill {
                Some(d) => {
                    d.loss_and_gradients(net, &model, x.view(), y.view(), None)?
                        .gradients
                }
                None => net.loss_and_gradients(&model, x.view(), y.view())?.1,
            };
            sgd.step(&mut model, &grads)?;
            step += 1;
        }
        say!(
            "  retrain epoch {}: sparsity {:.1}%, test accuracy {:.2}%",
            epoch + 1,
            100.0 * model.sparsity(&Selector::prunable())?.sparsity(),
            100.0 * net.evaluate(&model, test, 1000)?.accuracy
        );
    }
    Ok(model)
}

/// Writes `line` and a newline to stdout (see [`say!`]): on a closed stdout the program
/// stops quietly, on another write error with a message and status 1.
pub fn say_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("cannot write to stdout: {e}");
            std::process::exit(1)
        }
        std::process::exit(0)
    }
}
