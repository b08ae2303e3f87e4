//! Compact and transferred filters on MNIST, on two dense networks and their variants:
//!
//! - LeNet-5 (Caffe's, as in Deep Compression): conv2 converted into its optimal
//!   depthwise-separable pair (before and after fine-tuning with the dense network as
//!   teacher), depthwise-separable conv2 (MobileNet's layout, with BatchNorm) trained
//!   from scratch, CReLU with half the filters, tied flip/rotation banks, a fire module;
//! - a wider BatchNorm net (conv 3×3 32 → BN → ReLU → pool → conv 3×3 64 → BN → ReLU →
//!   pool → fc 10) and the same variants of its conv2 (CReLU and tied banks on both).
//!
//! Prints parameters, MACs, measured inference time over the 10,000 test images (batch 1
//! and 256, in the same run as the dense network) and test accuracy. Trained networks
//! are cached in `target/slimnn-examples/` (LeNet-5 with the other examples, the rest in
//! `compact_filters/`, keyed by their training recipe), so a second run only measures.
//! `--json` ends with one line: the wide BatchNorm net's `{"dense": {…}, "variants":
//! [{"name", …}]}`, with LeNet-5's in the same form under `"lenet5"` (with `--only`, the
//! one network run).
//!
//! ```text
//! cargo run --release --example compact_filters -- [--epochs N] [--compact-epochs N]
//!     [--seed S] [--only lenet5|wide] [--repeat N] [--retrain-from-scratch] [--json]
//! ```
//!
//! `--epochs` (default 3) trains the dense networks, fine-tunes the converted ones and
//! trains the CReLU and tied variants; `--compact-epochs` (default 3) trains the
//! depthwise-separable and fire variants. `--repeat N` times each test-set pass `N`
//! times and keeps the fastest (for a shared machine).

#[path = "common/cache.rs"]
mod cache;
#[path = "common/mnist.rs"]
#[macro_use]
mod mnist;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use slimnn::distill::{DistillConfig, Distillation, Teacher};
use slimnn::filters::{ConvBnRelu, FireModule, SeparableBlock, Transforms};
use slimnn::io::idx::Dataset;
use slimnn::nn::{ConvSpec, Evaluation, Layer, Network, Sgd, train_epoch};
use slimnn::{DType, LayerKind, Model, Result, Selector};

struct Row {
    name: String,
    accuracy: f64,
    conv_params: usize,
    macs: usize,
    time_b1_s: f64,
    time_b256_s: f64,
}

impl Row {
    fn json(&self) -> String {
        format!(
            "{{\"name\": \"{}\", \"accuracy\": {:.4}, \"conv_params\": {}, \"macs\": {}, \
             \"time_b1_s\": {:.3}, \"time_b256_s\": {:.3}}}",
            self.name.trim(),
            self.accuracy,
            self.conv_params,
            self.macs,
            self.time_b1_s,
            self.time_b256_s
        )
    }
}

/// Measures `net` (see [`measure_one`]) and, if it has BatchNorms after convolutions,
/// the same network with them folded into the convolutions (printed, not returned).
fn measure(name: &str, net: &Network, model: &Model, test: &Dataset) -> Result<Row> {
    let row = measure_one(name, net, model, test)?;
    let mut folded = model.clone();
    let (f, report) = net.fold_batch_norm(&mut folded)?;
    if !report.folds.is_empty() {
        measure_one("    BatchNorms folded", &f, &folded, test)?;
    }
    Ok(row)
}

/// Passes over the test set per timing (`--repeat`); the fastest counts.
static REPEAT: AtomicUsize = AtomicUsize::new(1);

/// Parameters, MACs, accuracy, and the time to classify the test set by batches of 1
/// and 256 (the fastest of `--repeat` passes).
fn measure_one(name: &str, net: &Network, model: &Model, test: &Dataset) -> Result<Row> {
    let cost = net.costs(model)?;
    let timed = |batch| -> Result<(Evaluation, f64)> {
        let mut best = f64::INFINITY;
        let mut eval = None;
        for _ in 0..REPEAT.load(Ordering::Relaxed).max(1) {
            let t0 = Instant::now();
            eval = Some(net.evaluate(model, test, batch)?);
            best = best.min(t0.elapsed().as_secs_f64());
        }
        Ok((eval.expect("at least one pass"), best))
    };
    let (b1, time_b1_s) = timed(1)?;
    let (b256, time_b256_s) = timed(256)?;
    assert_eq!(b1.correct, b256.correct, "batch size changes no prediction");
    let row = Row {
        name: name.into(),
        accuracy: b256.accuracy,
        conv_params: cost.conv_params(),
        macs: cost.macs(),
        time_b1_s,
        time_b256_s,
    };
    say!(
        "{:<34} {:>8.2}% {:>11} {:>11} {:>9.2} s {:>9.3} s",
        row.name,
        100.0 * row.accuracy,
        row.conv_params,
        row.macs,
        row.time_b1_s,
        row.time_b256_s
    );
    Ok(row)
}

/// Uniform values in `±1/√fan_in` from `seed` (PyTorch's initialisation).
fn uniform(shape: &[usize], fan_in: usize, seed: u64) -> ArrayD<f32> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    ArrayD::from_shape_simple_fn(IxDyn(shape), move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
    })
}

/// Adds `PREFIX.weight` `shape` and `PREFIX.bias` `[bias]`, PyTorch's initialisation.
fn param(model: &mut Model, prefix: &str, shape: &[usize], bias: usize, seed: u64) -> Result<()> {
    let fan_in: usize = shape[1..].iter().product();
    let w = uniform(shape, fan_in, seed);
    let b = uniform(&[bias], fan_in, seed ^ 0x5555);
    model.add_param(format!("{prefix}.weight"), LayerKind::Conv2d, DType::F32, w)?;
    model.add_param(format!("{prefix}.bias"), LayerKind::Bias, DType::F32, b)?;
    Ok(())
}

/// Adds a BatchNorm's parameters `PREFIX.*` over `c` channels (γ 1, β 0, running
/// mean 0, running variance 1) and returns its layer.
fn bn(model: &mut Model, prefix: &str, c: usize) -> Result<Layer> {
    for (suffix, kind, v) in [
        ("weight", LayerKind::Norm, 1.0),
        ("bias", LayerKind::Bias, 0.0),
        ("running_mean", LayerKind::Other, 0.0),
        ("running_var", LayerKind::Other, 1.0),
    ] {
        let value = ArrayD::from_elem(IxDyn(&[c]), v);
        model.add_param(format!("{prefix}.{suffix}"), kind, DType::F32, value)?;
    }
    Ok(Layer::batch_norm(prefix))
}

fn conv(prefix: &str, spec: ConvSpec) -> Layer {
    Layer::Conv2d {
        weight: format!("{prefix}.weight"),
        bias: Some(format!("{prefix}.bias")),
        spec,
    }
}

fn pool() -> Layer {
    Layer::MaxPool2d {
        kernel: (2, 2),
        stride: (2, 2),
    }
}

fn tied(prefix: &str, bias: bool, spec: ConvSpec, transforms: Transforms) -> Layer {
    Layer::TiedConv2d {
        weight: format!("{prefix}.weight"),
        bias: bias.then(|| format!("{prefix}.bias")),
        spec,
        transforms,
    }
}

/// LeNet-5 with `front` (from `[1, 28, 28]` to 50 maps of 8×8) replacing its
/// convolutions, then pool → flatten → fc1 (500) → ReLU → fc2 (10).
fn lenet_with(model: &mut Model, front: Vec<Layer>, seed: u64) -> Result<Network> {
    let mut fc = Model::new();
    Network::lenet5(&mut fc, seed)?;
    for name in ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"] {
        let p = fc.get(name)?;
        model.add_param(name, p.kind(), DType::F32, p.value().clone())?;
    }
    let mut layers = front;
    layers.extend([
        pool(),
        Layer::Flatten,
        Layer::Linear {
            weight: "fc1.weight".into(),
            bias: Some("fc1.bias".into()),
        },
        Layer::Relu,
        Layer::Linear {
            weight: "fc2.weight".into(),
            bias: Some("fc2.bias".into()),
        },
    ]);
    let net = Network::new(layers).with_input_shape(&[1, 28, 28]);
    net.check(model)?;
    Ok(net)
}

/// The wide BatchNorm net with `front` (from `[1, 28, 28]` to 64 maps of 14×14)
/// replacing its convolutions, then pool → flatten (3,136) → fc (10).
fn wide_with(model: &mut Model, front: Vec<Layer>, seed: u64) -> Result<Network> {
    let fc = uniform(&[10, 64 * 7 * 7], 64 * 7 * 7, seed + 99);
    let fcb = uniform(&[10], 64 * 7 * 7, seed + 98);
    model.add_param("fc.weight", LayerKind::Linear, DType::F32, fc)?;
    model.add_param("fc.bias", LayerKind::Bias, DType::F32, fcb)?;
    let mut layers = front;
    layers.extend([
        pool(),
        Layer::Flatten,
        Layer::Linear {
            weight: "fc.weight".into(),
            bias: Some("fc.bias".into()),
        },
    ]);
    let net = Network::new(layers).with_input_shape(&[1, 28, 28]);
    net.check(model)?;
    Ok(net)
}

/// How a network is trained: SGD with momentum 0.9, `lr` for the first two thirds of
/// the epochs and `lr / 10` after.
#[derive(Clone, Copy)]
struct Recipe {
    epochs: usize,
    lr: f32,
    batch: usize,
    decay: f32,
}

impl Recipe {
    /// Caffe's LeNet-5 solver.
    fn caffe(epochs: usize) -> Recipe {
        Recipe {
            epochs,
            lr: 0.01,
            batch: 64,
            decay: 5e-4,
        }
    }

    /// For the BatchNorm nets (0.05 diverges: the classifier is not normalised).
    fn bn(epochs: usize) -> Recipe {
        Recipe {
            epochs,
            lr: 0.01,
            batch: 64,
            decay: 1e-4,
        }
    }

    fn describe(&self, seed: u64) -> String {
        format!(
            "{} epochs, lr {} (/10 after 2/3), batch {}, decay {}, seed {seed}",
            self.epochs, self.lr, self.batch, self.decay
        )
    }
}

/// Where a trained variant is cached.
fn cache_path(key: &str) -> PathBuf {
    cache::path("compact_filters", key)
}

/// Loads `key`'s cached values into `model` if they were made by `recipe`; `false`
/// if there is no such cache (or `fresh` asks to retrain).
fn load_cached(key: &str, recipe: &str, model: &mut Model, fresh: bool) -> Result<bool> {
    Ok(!fresh && cache::load(&cache_path(key), recipe, model)?)
}

fn save_cached(key: &str, recipe: &str, model: &Model) -> Result<()> {
    cache::save(&cache_path(key), recipe, model)
}

/// What the run shares: the data, the seed, whether to retrain.
struct Run {
    train: Dataset,
    test: Dataset,
    seed: u64,
    fresh: bool,
}

impl Run {
    /// `net` over `model` trained by `recipe`, or loaded from the cache under `key`.
    fn trained(&self, key: &str, net: &Network, model: &mut Model, recipe: Recipe) -> Result<()> {
        let what = recipe.describe(self.seed);
        if load_cached(key, &what, model, self.fresh)? {
            return Ok(());
        }
        eprintln!("  training {key} ({what})");
        let mut sgd = Sgd::new(recipe.lr, 0.9, recipe.decay)?;
        let n = recipe.epochs;
        for epoch in 0..n {
            sgd.set_lr(if epoch >= n * 2 / 3 {
                recipe.lr / 10.0
            } else {
                recipe.lr
            })?;
            let t0 = Instant::now();
            let seed = self.seed + epoch as u64;
            let loss = train_epoch(net, model, &mut sgd, &self.train, recipe.batch, seed)?;
            eprintln!(
                "    epoch {}: loss {loss:.4} ({:.1} s)",
                epoch + 1,
                t0.elapsed().as_secs_f64()
            );
        }
        save_cached(key, &what, model)
    }

    /// `student` over `model` fine-tuned for `epochs` by distillation from `teacher`
    /// (T 4, α 0.9; SGD at `lr`, momentum 0.9), or loaded from the cache under `key`.
    fn distilled(
        &self,
        key: &str,
        teacher: (&Network, &Model),
        student: &Network,
        model: &mut Model,
        epochs: usize,
        lr: f32,
    ) -> Result<()> {
        let what = format!(
            "KD T 4 α 0.9, {epochs} epochs, lr {lr}, batch 64, seed {}",
            self.seed
        );
        if load_cached(key, &what, model, self.fresh)? {
            return Ok(());
        }
        eprintln!("  fine-tuning {key} ({what})");
        let mut kd = Distillation::new(
            DistillConfig {
                temperature: 4.0,
                alpha: 0.9,
                ..Default::default()
            },
            Teacher::new(teacher.0.clone(), teacher.1.clone())?,
            student,
            model,
        )?;
        let mut sgd = Sgd::new(lr, 0.9, 5e-4)?;
        for epoch in 0..epochs {
            let t0 = Instant::now();
            let loss = kd.train_epoch(
                student,
                model,
                &mut sgd,
                &self.train,
                64,
                100 + epoch as u64,
            )?;
            eprintln!(
                "    epoch {}: loss {loss:.4} ({:.1} s)",
                epoch + 1,
                t0.elapsed().as_secs_f64()
            );
        }
        save_cached(key, &what, model)
    }

    /// conv2 (weight `weight`) of a trained `net` converted into its optimal
    /// depthwise-separable pair, measured before and after fine-tuning by distillation.
    fn converted(
        &self,
        key: &str,
        net: &Network,
        model: &Model,
        weight: &str,
        kd: (usize, f32),
        rows: &mut Vec<Row>,
    ) -> Result<()> {
        let mut converted = model.clone();
        let (sep, report) =
            net.convert_depthwise_separable(&mut converted, &Selector::glob(weight))?;
        eprintln!(
            "  {weight} → depthwise-separable: relative error {:.3}",
            report.layers[0]
                .factorization
                .relative_error()
                .unwrap_or(f64::NAN)
        );
        rows.push(measure(
            "dw-separable conv2, converted",
            &sep,
            &converted,
            &self.test,
        )?);
        self.distilled(key, (net, model), &sep, &mut converted, kd.0, kd.1)?;
        rows.push(measure(
            "  + fine-tuned (KD from dense)",
            &sep,
            &converted,
            &self.test,
        )?);
        Ok(())
    }
}

fn header(title: &str) {
    say!(
        "\n{:<34} {:>9} {:>11} {:>11} {:>11} {:>11}",
        title,
        "accuracy",
        "conv params",
        "MACs",
        "time b1",
        "time b256"
    );
}

/// LeNet-5 (Caffe's) and its variants.
fn lenet5(run: &Run, epochs: usize, compact: usize) -> Result<(Row, Vec<Row>)> {
    let (model, net) = mnist::trained(
        mnist::Arch::Lenet5,
        &run.train,
        &run.test,
        epochs,
        run.seed,
        false,
    )?;
    header("LeNet-5");
    let dense = measure("LeNet-5 (dense)", &net, &model, &run.test)?;
    let mut rows = Vec::new();
    let seed = run.seed;
    run.converted(
        "lenet5-dwsep-kd",
        &net,
        &model,
        "conv2.weight",
        (epochs.max(1), 0.001),
        &mut rows,
    )?;

    // Depthwise-separable conv2 (MobileNet's layout, BatchNorms) trained from scratch.
    let mut m = Model::new();
    param(&mut m, "conv1", &[20, 1, 5, 5], 20, seed)?;
    let mut front = vec![conv("conv1", ConvSpec::new()), pool()];
    let block = SeparableBlock::new(20, 50, 5).with_batch_norm(true);
    front.extend(block.build(&mut m, "conv2", seed + 1)?);
    let n = lenet_with(&mut m, front, seed)?;
    run.trained("lenet5-dwsep-bn", &n, &mut m, Recipe::caffe(compact))?;
    rows.push(measure(
        "dw-separable conv2 +BN, scratch",
        &n,
        &m,
        &run.test,
    )?);

    // CReLU with half the filters: 10 → 20 maps, 25 → 50 maps.
    let mut m = Model::new();
    param(&mut m, "conv1", &[10, 1, 5, 5], 10, seed)?;
    param(&mut m, "conv2", &[25, 20, 5, 5], 25, seed + 1)?;
    let front = vec![
        conv("conv1", ConvSpec::new()),
        Layer::CRelu,
        pool(),
        conv("conv2", ConvSpec::new()),
        Layer::CRelu,
    ];
    let n = lenet_with(&mut m, front, seed)?;
    run.trained("lenet5-crelu", &n, &mut m, Recipe::caffe(epochs))?;
    rows.push(measure("CReLU, half the filters", &n, &m, &run.test)?);

    // Tied banks: conv1 5 filters × 4 rotations, conv2 25 filters × 2 flips.
    let mut m = Model::new();
    param(&mut m, "conv1", &[5, 1, 5, 5], 20, seed)?;
    param(&mut m, "conv2", &[25, 20, 5, 5], 50, seed + 1)?;
    let front = vec![
        tied("conv1", true, ConvSpec::new(), Transforms::rotations()),
        pool(),
        tied("conv2", true, ConvSpec::new(), Transforms::flips()),
    ];
    let n = lenet_with(&mut m, front, seed)?;
    run.trained("lenet5-tied", &n, &mut m, Recipe::caffe(epochs))?;
    rows.push(measure("tied banks (rotations, flips)", &n, &m, &run.test)?);

    // conv2 narrowed to 16 filters, then a fire module 16 → squeeze 8 → 25 + 25 maps.
    let mut m = Model::new();
    param(&mut m, "conv1", &[20, 1, 5, 5], 20, seed)?;
    param(&mut m, "conv2", &[16, 20, 5, 5], 16, seed + 1)?;
    let mut front = vec![
        conv("conv1", ConvSpec::new()),
        pool(),
        conv("conv2", ConvSpec::new()),
        Layer::Relu,
    ];
    front.extend(FireModule::new(16, 8, 25, 25).build(&mut m, "fire", seed + 2)?);
    let n = lenet_with(&mut m, front, seed)?;
    run.trained("lenet5-fire", &n, &mut m, Recipe::caffe(compact))?;
    rows.push(measure(
        "conv2 16 filters + fire module",
        &n,
        &m,
        &run.test,
    )?);
    Ok((dense, rows))
}

/// The wide BatchNorm net (conv3×3 32 → BN → ReLU → pool → conv3×3 64 → BN → ReLU →
/// pool → fc) and its variants.
fn wide(run: &Run, epochs: usize, compact: usize) -> Result<(Row, Vec<Row>)> {
    let seed = run.seed;
    let same = ConvSpec::new().with_padding(1, 1);
    let mut model = Model::new();
    let mut front = ConvBnRelu::new(1, 32, 3)
        .with_padding(1)
        .build(&mut model, "conv1", seed)?;
    front.push(pool());
    front.extend(ConvBnRelu::new(32, 64, 3).with_padding(1).build(
        &mut model,
        "conv2",
        seed + 1,
    )?);
    let net = wide_with(&mut model, front, seed)?;
    run.trained("wide-dense", &net, &mut model, Recipe::bn(epochs))?;
    header("wide BatchNorm net (32-64)");
    let dense = measure("wide BN net (dense)", &net, &model, &run.test)?;
    let mut rows = Vec::new();
    run.converted(
        "wide-dwsep-kd",
        &net,
        &model,
        "conv2.conv.weight",
        (epochs.max(1), 0.005),
        &mut rows,
    )?;

    // conv2 as a depthwise-separable block (MobileNet's layout), from scratch.
    let mut m = Model::new();
    let mut front = ConvBnRelu::new(1, 32, 3)
        .with_padding(1)
        .build(&mut m, "conv1", seed)?;
    front.push(pool());
    let block = SeparableBlock::new(32, 64, 3)
        .with_padding(1)
        .with_batch_norm(true);
    front.extend(block.build(&mut m, "conv2", seed + 1)?);
    let n = wide_with(&mut m, front, seed)?;
    run.trained("wide-dwsep-bn", &n, &mut m, Recipe::bn(compact))?;
    rows.push(measure(
        "dw-separable conv2 +BN, scratch",
        &n,
        &m,
        &run.test,
    )?);

    // CReLU with half the filters: 16 → 32 maps, 32 → 64 maps.
    let mut m = Model::new();
    let mut front = ConvBnRelu::new(1, 16, 3)
        .with_padding(1)
        .with_relu(false)
        .build(&mut m, "conv1", seed)?;
    front.extend([Layer::CRelu, pool()]);
    front.extend(
        ConvBnRelu::new(32, 32, 3)
            .with_padding(1)
            .with_relu(false)
            .build(&mut m, "conv2", seed + 1)?,
    );
    front.push(Layer::CRelu);
    let n = wide_with(&mut m, front, seed)?;
    run.trained("wide-crelu", &n, &mut m, Recipe::bn(epochs))?;
    rows.push(measure("CReLU, half the filters", &n, &m, &run.test)?);

    // Tied banks: conv1 8 filters × 4 rotations, conv2 32 filters × 2 flips.
    let mut m = Model::new();
    m.add_param(
        "conv1.weight",
        LayerKind::Conv2d,
        DType::F32,
        uniform(&[8, 1, 3, 3], 9, seed),
    )?;
    m.add_param(
        "conv2.weight",
        LayerKind::Conv2d,
        DType::F32,
        uniform(&[32, 32, 3, 3], 288, seed + 1),
    )?;
    let front = vec![
        tied("conv1", false, same, Transforms::rotations()),
        bn(&mut m, "bn1", 32)?,
        Layer::Relu,
        pool(),
        tied("conv2", false, same, Transforms::flips()),
        bn(&mut m, "bn2", 64)?,
        Layer::Relu,
    ];
    let n = wide_with(&mut m, front, seed)?;
    run.trained("wide-tied", &n, &mut m, Recipe::bn(epochs))?;
    rows.push(measure("tied banks (rotations, flips)", &n, &m, &run.test)?);

    // conv2 as a fire module: squeeze 1×1 32 → 16, expand 1×1 and 3×3 to 32 + 32.
    let mut m = Model::new();
    let mut front = ConvBnRelu::new(1, 32, 3)
        .with_padding(1)
        .build(&mut m, "conv1", seed)?;
    front.push(pool());
    front.extend(FireModule::new(32, 16, 32, 32).build(&mut m, "fire", seed + 2)?);
    let n = wide_with(&mut m, front, seed)?;
    run.trained("wide-fire", &n, &mut m, Recipe::bn(compact))?;
    rows.push(measure("fire module (squeeze 16)", &n, &m, &run.test)?);
    Ok((dense, rows))
}

/// The `--json` line: `{"dense": {…}, "variants": [{"name", …}]}`.
fn json_line(dense: &Row, variants: &[Row]) -> String {
    let list: Vec<String> = variants.iter().map(Row::json).collect();
    let d = dense.json();
    let d = d.replacen(&format!("\"name\": \"{}\", ", dense.name.trim()), "", 1);
    format!("{{\"dense\": {d}, \"variants\": [{}]}}", list.join(", "))
}

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let fresh = std::env::args().any(|a| a == "--retrain-from-scratch");
    let argv: Vec<String> = std::env::args()
        .filter(|a| a != "--json" && a != "--retrain-from-scratch")
        .collect();
    let mut epochs = 3usize;
    let mut compact = None;
    let mut seed = 1u64;
    let mut only = None;
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        let v = it.next();
        let num = v.and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), num) {
            ("--epochs", Some(v)) => epochs = v as usize,
            ("--compact-epochs", Some(v)) => compact = Some(v as usize),
            ("--seed", Some(v)) => seed = v,
            ("--repeat", Some(v)) => REPEAT.store(v as usize, Ordering::Relaxed),
            ("--only", _) if matches!(v.map(String::as_str), Some("lenet5" | "wide")) => {
                only = v.cloned()
            }
            _ => {
                eprintln!(
                    "usage: compact_filters [--epochs N] [--compact-epochs N] [--seed S] \
                     [--only lenet5|wide] [--repeat N] [--retrain-from-scratch] [--json]"
                );
                std::process::exit(2)
            }
        }
    }
    let compact = compact.unwrap_or(epochs);
    let (train, test) = mnist::load()?;
    let run = Run {
        train,
        test,
        seed,
        fresh,
    };
    let lenet = match only.as_deref() {
        Some("wide") => None,
        _ => Some(lenet5(&run, epochs, compact)?),
    };
    let wide_net = match only.as_deref() {
        Some("lenet5") => None,
        _ => Some(wide(&run, epochs, compact)?),
    };
    if json {
        let line = match (&lenet, &wide_net) {
            (Some((ld, lr)), Some((wd, wr))) => {
                let main = json_line(wd, wr);
                let inner = json_line(ld, lr);
                format!("{}, \"lenet5\": {inner}}}", &main[..main.len() - 1])
            }
            (Some((d, r)), None) | (None, Some((d, r))) => json_line(d, r),
            (None, None) => unreachable!("at least one network runs"),
        };
        say!("{line}");
    }
    Ok(())
}
