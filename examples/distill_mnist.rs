//! Knowledge distillation on MNIST: Hinton, Vinyals & Dean's experiment (2015, section
//! 3) at this machine's scale, plus a much smaller student and a thin convolutional
//! student taught by LeNet-5 with FitNets hints and with attention transfer.
//!
//! ```text
//! cargo run --release --example distill_mnist [-- --teacher-epochs 50 --epochs 6
//!     --seeds 3 --temperature 20 --small-temperature 4 --alpha 0.9 --no-mlp
//!     --conv-epochs 3 --conv-teacher-epochs 3 --conv-train 60000 --beta 1 --at-layer 1
//!     --at-alpha 0.9 --conv-seed 7 --conv-seeds 3 --no-conv --lenet5-teacher
//!     --retrain-from-scratch --json --trace]
//! ```
//!
//! - Teacher: 784-1200-1200-10 with dropout (20% on the inputs, 50% on the hidden
//!   layers) and images jittered by up to ±2 pixels, trained by SGD (momentum 0.9,
//!   batch 128, lr 0.1 after a one-epoch warm-up, cosine decay to zero, max-norm 3 on each
//!   unit's incoming weights) once and cached in
//!   `target/slimnn-examples/distill-teacher.safetensors` (with its recipe and epochs:
//!   a teacher trained otherwise is not reused).
//! - Student 784-800-800-10 without regularisation, trained (a) on the labels alone and
//!   (b) with soft targets at T = 20 (α = 0.9), with the same epochs, batches and seed;
//!   the teacher's logits on the training set are computed once and reused.
//! - A much smaller student, 784-30-30-10, the same two ways at T = 4 (the paper: with
//!   30 units per layer, temperatures from 2.5 to 4 worked significantly better).
//! - LeNet-5 (cached as `deep_compression --arch lenet5` caches it) teaching a thin
//!   LeNet (4 and 8 filters, 32 hidden units), from `--conv-seeds` initialisations,
//!   five ways with the same batches and `--conv-epochs` + 1 passes over the data:
//!   labels alone; FitNets (one epoch of hint training of conv1-conv2 from LeNet-5's
//!   conv2 through a 1×1-convolution regressor, then soft targets at T = 4); attention
//!   transfer on conv1 (β = 1; `--at-layer 0`: both conv layers, `2`: conv2 only) with
//!   the labels alone; attention transfer with soft targets (T = 4, α = `--at-alpha`);
//!   soft targets alone. The teacher's logits and attention-layer outputs on the
//!   training set are computed once.
//!
//! With `--lenet5-teacher`, the MLP students learn from LeNet-5 instead. `--trace`
//! prints every MLP student's test errors after each epoch.
//!
//! Prints a table with the paper's figures beside ours (test errors out of 10,000), and
//! with `--json` ends with one line
//! `{"teacher_errors", "student_errors", "distilled_errors", "seeds", ...}`.

#[path = "common/mnist.rs"]
#[macro_use]
mod mnist;

use std::path::Path;
use std::time::Instant;

use ndarray::{Array2, ArrayD, Axis, IxDyn};
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use slimnn::distill::{DistillConfig, Distillation, HintPair, LayerPair, Teacher, TeacherOutputs};
use slimnn::io::idx::Dataset;
use slimnn::io::safetensors::SaveOptions;
use slimnn::nn::{ConvSpec, Layer, Network, Sgd};
use slimnn::{LayerKind, Model, Result};

struct Args {
    teacher_epochs: usize,
    epochs: usize,
    seeds: u64,
    temperature: f32,
    small_temperature: f32,
    alpha: f32,
    mlp: bool,
    beta: f32,
    at_layer: usize,
    at_alpha: f32,
    conv_seed: u64,
    conv_seeds: u64,
    conv: bool,
    lenet5_teacher: bool,
    conv_epochs: usize,
    conv_teacher_epochs: usize,
    conv_train: usize,
    fresh: bool,
    json: bool,
    trace: bool,
}

fn parse() -> Args {
    let mut a = Args {
        teacher_epochs: 50,
        epochs: 6,
        seeds: 3,
        temperature: 20.0,
        small_temperature: 4.0,
        mlp: true,
        beta: 1.0,
        at_layer: 1,
        at_alpha: 0.9,
        conv_seed: 7,
        conv_seeds: 3,
        alpha: 0.9,
        conv: true,
        lenet5_teacher: false,
        conv_epochs: 3,
        conv_teacher_epochs: 3,
        conv_train: 60_000,
        fresh: false,
        json: false,
        trace: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || -> f64 {
            it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{flag} needs a number");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--teacher-epochs" => a.teacher_epochs = value() as usize,
            "--epochs" => a.epochs = value() as usize,
            "--seeds" => a.seeds = value() as u64,
            "--temperature" => a.temperature = value() as f32,
            "--small-temperature" => a.small_temperature = value() as f32,
            "--no-mlp" => a.mlp = false,
            "--beta" => a.beta = value() as f32,
            "--at-layer" => a.at_layer = value() as usize,
            "--at-alpha" => a.at_alpha = value() as f32,
            "--conv-seed" => a.conv_seed = value() as u64,
            "--conv-seeds" => a.conv_seeds = value() as u64,
            "--alpha" => a.alpha = value() as f32,
            "--conv-epochs" => a.conv_epochs = value() as usize,
            "--conv-teacher-epochs" => a.conv_teacher_epochs = value() as usize,
            "--conv-train" => a.conv_train = value() as usize,
            "--no-conv" => a.conv = false,
            "--lenet5-teacher" => a.lenet5_teacher = true,
            "--retrain-from-scratch" => a.fresh = true,
            "--json" => a.json = true,
            "--trace" => a.trace = true,
            "-h" | "--help" => {
                say!(
                    "usage: distill_mnist [--teacher-epochs N] [--epochs N] [--seeds N] \
                     [--temperature T] [--small-temperature T] [--alpha A] [--beta B] [--at-layer 0|1|2] [--at-alpha A] [--conv-seed S] [--conv-seeds N] [--no-mlp] [--conv-epochs N] [--conv-teacher-epochs N] [--conv-train N] \
                     [--no-conv] [--lenet5-teacher] [--retrain-from-scratch] [--json] [--trace]"
                );
                std::process::exit(0)
            }
            other => {
                eprintln!("unknown argument `{other}` (try --help)");
                std::process::exit(2)
            }
        }
    }
    if a.teacher_epochs == 0
        || a.epochs == 0
        || a.seeds == 0
        || a.conv_seeds == 0
        || a.conv_epochs == 0
        || a.conv_teacher_epochs == 0
    {
        eprintln!("epochs and seeds must be at least 1");
        std::process::exit(2)
    }
    if a.at_layer > 2 || !(0.0..=1.0).contains(&a.at_alpha) {
        eprintln!("--at-layer is 0 (both conv layers), 1 or 2; --at-alpha is in [0, 1]");
        std::process::exit(2)
    }
    a
}

fn main() -> Result<()> {
    let args = parse();
    let (train, test) = mnist::load()?;
    let errors = |net: &Network, m: &Model| -> Result<usize> {
        let e = net.evaluate(m, &test, 1000)?;
        Ok(e.total - e.correct)
    };

    if !args.mlp {
        let mut rows = Vec::new();
        conv_students(&train, &test, &args, &mut rows)?;
        print_table(&rows);
        return Ok(());
    }
    // The teacher, 784-1200-1200-10 with dropout and jitter (or LeNet-5).
    let (tmodel, tnet) = if args.lenet5_teacher {
        mnist::trained(
            mnist::Arch::Lenet5,
            &train,
            &test,
            args.conv_teacher_epochs,
            1,
            args.fresh,
        )?
    } else {
        teacher(&train, &test, &args)?
    };
    let teacher_name = if args.lenet5_teacher {
        "teacher LeNet-5"
    } else {
        "teacher 1200-1200, dropout + jitter"
    };
    let teacher_errors = errors(&tnet, &tmodel)?;
    say!("{teacher_name}: {teacher_errors} test errors");
    let t0 = Instant::now();
    let teacher_logits = tnet.forward(&tmodel, train.images.view())?;
    say!(
        "  its logits on the training set, computed once ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    let teacher = Teacher::new(tnet.clone(), tmodel.clone())?;

    let seeds: Vec<u64> = (1..=args.seeds).collect();
    let mut rows = Vec::new();
    let mut mlp_results = Vec::new();
    for sizes in [[784, 800, 800, 10], [784, 30, 30, 10]] {
        let (mut alone, mut taught) = (Vec::new(), Vec::new());
        for &seed in &seeds {
            let mut m = Model::new();
            let net = Network::mlp(&mut m, &sizes, 100 + seed)?;
            let params = m.numel();
            let mut kd_model = m.clone();
            let t = Instant::now();
            train_mlp(
                &net,
                &mut m,
                &train,
                None,
                args.epochs,
                seed,
                args.trace.then_some(&test),
            )?;
            let config = DistillConfig {
                temperature: if sizes[1] < 100 {
                    args.small_temperature
                } else {
                    args.temperature
                },
                alpha: args.alpha,
                ..Default::default()
            };
            let kd = Distillation::new(config, teacher.clone(), &net, &kd_model)?;
            train_mlp(
                &net,
                &mut kd_model,
                &train,
                Some((&kd, &teacher_logits)),
                args.epochs,
                seed,
                args.trace.then_some(&test),
            )?;
            let (a, b) = (errors(&net, &m)?, errors(&net, &kd_model)?);
            say!(
                "  {sizes:?} seed {seed}: {a} errors alone, {b} with soft targets ({:.0} s)",
                t.elapsed().as_secs_f64()
            );
            alone.push(a);
            taught.push(b);
            if seed == seeds[seeds.len() - 1] {
                mlp_results.push((sizes, params, alone.clone(), taught.clone()));
            }
        }
    }
    let tparams = tmodel.numel();
    rows.push(Row::new(
        teacher_name,
        tparams,
        &[teacher_errors],
        (!args.lenet5_teacher).then_some(67),
    ));
    let paper = [(Some(146), Some(74)), (None, None)];
    for ((sizes, params, alone, taught), (pa, pt)) in mlp_results.iter().zip(paper) {
        let name = format!("{}-{}", sizes[1], sizes[2]);
        rows.push(Row::new(
            &format!("student {name}, labels"),
            *params,
            alone,
            pa,
        ));
        let t = if sizes[1] < 100 {
            args.small_temperature
        } else {
            args.temperature
        };
        rows.push(Row::new(
            &format!("student {name}, soft targets T={t}"),
            *params,
            taught,
            pt,
        ));
    }

    let mut conv = None;
    if args.conv {
        conv = Some(conv_students(&train, &test, &args, &mut rows)?);
    }

    print_table(&rows);
    let (_, _, alone, taught) = &mlp_results[0];
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
    let gap = mean(alone) - teacher_errors as f64;
    let closed = (mean(alone) - mean(taught)) / gap;
    say!(
        "\n800-800 student: soft targets close {:.0}% of the gap to the teacher (the paper: 91%)",
        100.0 * closed
    );
    if args.json {
        let list = |v: &[usize]| {
            format!(
                "[{}]",
                v.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let (_, _, small_alone, small_taught) = &mlp_results[1];
        let conv_json = match &conv {
            Some(c) => format!(
                ", \"conv_teacher_errors\": {}, \"conv_student_errors\": {}, \"conv_hint_errors\": {}, \"conv_attention_errors\": {}, \"conv_attention_kd_errors\": {}, \"conv_kd_errors\": {}, \"conv_seeds\": {}",
                c.teacher,
                list(&c.students[0]),
                list(&c.students[1]),
                list(&c.students[2]),
                list(&c.students[3]),
                list(&c.students[4]),
                list(
                    &(args.conv_seed..args.conv_seed + args.conv_seeds)
                        .map(|s| s as usize)
                        .collect::<Vec<_>>()
                ),
            ),
            None => String::new(),
        };
        say!(
            "{{\"teacher_errors\": {teacher_errors}, \"student_errors\": {}, \"distilled_errors\": {}, \"seeds\": {}, \"small_student_errors\": {}, \"small_distilled_errors\": {}, \"gap_closed\": {closed:.3}, \"temperature\": {}, \"alpha\": {}, \"epochs\": {}, \"teacher_epochs\": {}, \"teacher\": \"{teacher_name}\"{conv_json}}}",
            list(alone),
            list(taught),
            list(&seeds.iter().map(|&s| s as usize).collect::<Vec<_>>()),
            list(small_alone),
            list(small_taught),
            args.temperature,
            args.alpha,
            args.epochs,
            if args.lenet5_teacher {
                args.conv_teacher_epochs
            } else {
                args.teacher_epochs
            }
        );
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    say!(
        "\n{:<40} {:>9} {:>22} {:>9} {:>12}",
        "network",
        "params",
        "test errors (range)",
        "accuracy",
        "paper errors"
    );
    for r in rows {
        say!(
            "{:<40} {:>9} {:>22} {:>8.2}% {:>12}",
            r.name,
            r.params,
            r.errors_text(),
            100.0 - r.mean() / 100.0,
            r.paper.map_or("-".into(), |p| p.to_string())
        );
    }
}

/// One row of the table: errors over the seeds.
struct Row {
    name: String,
    params: usize,
    errors: Vec<usize>,
    paper: Option<usize>,
}

impl Row {
    fn new(name: &str, params: usize, errors: &[usize], paper: Option<usize>) -> Row {
        Row {
            name: name.into(),
            params,
            errors: errors.to_vec(),
            paper,
        }
    }

    fn mean(&self) -> f64 {
        self.errors.iter().sum::<usize>() as f64 / self.errors.len() as f64
    }

    fn errors_text(&self) -> String {
        let (lo, hi) = (
            self.errors.iter().min().copied().unwrap_or(0),
            self.errors.iter().max().copied().unwrap_or(0),
        );
        if self.errors.len() == 1 {
            format!("{lo}")
        } else {
            format!("{:.1} ({lo}-{hi})", self.mean())
        }
    }
}

/// 784-1200-1200-10 with dropout 20% on the inputs and 50% on the hidden layers.
fn teacher_net(model: &Model) -> Result<Network> {
    let plain = Network::mlp_from(model, &["fc1", "fc2", "fc3"])?;
    let mut layers = vec![Layer::Dropout { p: 0.2 }];
    for l in plain.layers() {
        layers.push(l.clone());
        if matches!(l, Layer::Relu) {
            layers.push(Layer::Dropout { p: 0.5 });
        }
    }
    let net = Network::new(layers);
    net.check(model)?;
    Ok(net)
}

/// The teacher's training recipe: SGD with momentum 0.9 in batches of 128, the
/// learning rate warmed up linearly over the first epoch to `TEACHER_LR` and then
/// decayed to zero along a cosine, each hidden unit's incoming weights held to an L2
/// norm of at most `MAX_NORM` (Srivastava et al.'s max-norm, which lets dropout nets
/// take large steps), each epoch on the images jittered anew.
const TEACHER_LR: f32 = 0.1;
const MAX_NORM: f32 = 3.0;

/// The teacher, from its cache (when trained by the same recipe and epochs) or trained.
fn teacher(train: &Dataset, test: &Dataset, args: &Args) -> Result<(Model, Network)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/slimnn-examples/distill-teacher.safetensors");
    let settings = format!(
        "784-1200-1200-10, dropout 0.2/0.5, jitter ±2, SGD momentum 0.9 batch 128, \
         lr {TEACHER_LR} warm-up 1 epoch then cosine, max-norm {MAX_NORM}, {} epochs, seed 1",
        args.teacher_epochs
    );
    if path.exists() && !args.fresh {
        let model = Model::load(&path)?;
        if model.metadata().get("trained") == Some(&settings) {
            say!("loaded the teacher ({settings}) from {}", path.display());
            let net = teacher_net(&model)?;
            return Ok((model, net));
        }
        say!("the cached teacher was trained otherwise: training anew");
    }
    let mut model = Model::new();
    Network::mlp(&mut model, &[784, 1200, 1200, 10], 1)?;
    let net = teacher_net(&model)?;
    let mut sgd = Sgd::new(TEACHER_LR, 0.9, 0.0)?;
    say!("training the teacher: {settings}");
    let batch = 128;
    let per_epoch = train.len().div_ceil(batch);
    let steps = args.teacher_epochs * per_epoch;
    let mut step = 0;
    for epoch in 0..args.teacher_epochs {
        let t = Instant::now();
        let jittered = jitter(&train.images, 1000 + epoch as u64);
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(epoch as u64));
        let mut loss = 0.0f64;
        for (b, idx) in order.chunks(batch).enumerate() {
            sgd.set_lr(teacher_lr(step, per_epoch, steps))?;
            let x = jittered.select(Axis(0), idx);
            let y = train.labels.select(Axis(0), idx);
            let (l, grads) =
                net.train_gradients(&model, x.view(), y.view(), (epoch * per_epoch + b) as u64)?;
            sgd.step(&mut model, &grads)?;
            max_norm(&mut model, MAX_NORM)?;
            loss += l as f64 * idx.len() as f64;
            step += 1;
        }
        let e = net.evaluate(&model, test, 1000)?;
        say!(
            "  epoch {:>2}: loss {:.4}, {} test errors ({:.0} s)",
            epoch + 1,
            loss / train.len() as f64,
            e.total - e.correct,
            t.elapsed().as_secs_f64()
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| slimnn::Error::Io {
            path: dir.into(),
            source: e,
        })?;
    }
    model.metadata_mut().insert("trained".into(), settings);
    model.save(&path, &SaveOptions::default())?;
    Ok((model, net))
}

/// The teacher's learning rate at `step` of `steps`: linear warm-up over the first
/// epoch, then a cosine from `TEACHER_LR` down to zero.
fn teacher_lr(step: usize, per_epoch: usize, steps: usize) -> f32 {
    let lr = if step < per_epoch {
        TEACHER_LR * (step + 1) as f32 / per_epoch as f32
    } else {
        let t = (step - per_epoch) as f32 / (steps - per_epoch).max(1) as f32;
        TEACHER_LR * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
    };
    lr.max(TEACHER_LR * 1e-3)
}

/// Scales each row of every Linear weight (a unit's incoming weights) down to an L2
/// norm of at most `limit`.
fn max_norm(model: &mut Model, limit: f32) -> Result<()> {
    for p in model.params_mut() {
        if p.kind() != LayerKind::Linear {
            continue;
        }
        let mut w = p.value_mut();
        for mut row in w.outer_iter_mut() {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > limit {
                row.mapv_inplace(|v| v * limit / norm);
            }
        }
    }
    Ok(())
}

/// Each 28×28 image shifted by a random whole number of pixels in [−2, 2] along each
/// axis (zeros shifted in).
fn jitter(images: &Array2<f32>, seed: u64) -> Array2<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut out = Array2::zeros(images.raw_dim());
    for (src, mut dst) in images.rows().into_iter().zip(out.rows_mut()) {
        let dy = (rng.next_u32() % 5) as isize - 2;
        let dx = (rng.next_u32() % 5) as isize - 2;
        for y in 0..28isize {
            let sy = y - dy;
            if !(0..28).contains(&sy) {
                continue;
            }
            for x in 0..28isize {
                let sx = x - dx;
                if (0..28).contains(&sx) {
                    dst[(y * 28 + x) as usize] = src[(sy * 28 + sx) as usize];
                }
            }
        }
    }
    out
}

/// A student MLP trained by SGD (momentum 0.9, batch 128, lr 0.05, a tenth of it for
/// the last third, no regularisation), on the labels or (with `kd`) on the
/// distillation loss against the teacher's precomputed logits. The batch order depends
/// only on `seed`, so both ways see the same batches.
fn train_mlp(
    net: &Network,
    model: &mut Model,
    train: &Dataset,
    kd: Option<(&Distillation, &Array2<f32>)>,
    epochs: usize,
    seed: u64,
    trace: Option<&Dataset>,
) -> Result<()> {
    let mut sgd = Sgd::new(0.05, 0.9, 0.0)?;
    for epoch in 0..epochs {
        if epoch == epochs * 2 / 3 {
            sgd.set_lr(0.005)?;
        }
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(
            seed * 1000 + epoch as u64,
        ));
        for idx in order.chunks(128) {
            let x = train.images.select(Axis(0), idx);
            let y = train.labels.select(Axis(0), idx);
            let grads = match kd {
                Some((d, logits)) => {
                    let t = (vec![logits.select(Axis(0), idx)], Vec::new());
                    d.loss_and_gradients_from(net, model, x.view(), y.view(), None, &t)?
                        .gradients
                }
                None => net.loss_and_gradients(model, x.view(), y.view())?.1,
            };
            sgd.step(model, &grads)?;
        }
        if let Some(test) = trace {
            let e = net.evaluate(model, test, 1000)?;
            let how = if kd.is_some() {
                "soft targets"
            } else {
                "labels"
            };
            say!(
                "    {how}, epoch {}: {} test errors",
                epoch + 1,
                e.total - e.correct
            );
        }
    }
    Ok(())
}

/// A thin LeNet (conv 4 → pool → conv 8 → pool → 32 → 10), the layers laid out as
/// [`Network::lenet5`]'s so that layer 0 and 2 (the convolutions) pair with LeNet-5's.
fn thin_lenet(seed: u64) -> Result<(Model, Network)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut model = Model::new();
    for (name, kind, shape) in [
        ("conv1", LayerKind::Conv2d, vec![4, 1, 5, 5]),
        ("conv2", LayerKind::Conv2d, vec![8, 4, 5, 5]),
        ("fc1", LayerKind::Linear, vec![32, 128]),
        ("fc2", LayerKind::Linear, vec![10, 32]),
    ] {
        let bound = 1.0 / (shape[1..].iter().product::<usize>() as f32).sqrt();
        let mut u = || ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound;
        let w = ndarray::ArrayD::from_shape_simple_fn(ndarray::IxDyn(&shape), &mut u);
        let b = ndarray::ArrayD::from_shape_simple_fn(ndarray::IxDyn(&[shape[0]]), &mut u);
        model.add_param(format!("{name}.weight"), kind, slimnn::DType::F32, w)?;
        model.add_param(
            format!("{name}.bias"),
            LayerKind::Bias,
            slimnn::DType::F32,
            b,
        )?;
    }
    let pool = Layer::MaxPool2d {
        kernel: (2, 2),
        stride: (2, 2),
    };
    let conv = |p: &str| Layer::Conv2d {
        weight: format!("{p}.weight"),
        bias: Some(format!("{p}.bias")),
        spec: ConvSpec::new(),
    };
    let linear = |p: &str| Layer::Linear {
        weight: format!("{p}.weight"),
        bias: Some(format!("{p}.bias")),
    };
    let net = Network::new(vec![
        conv("conv1"),
        pool.clone(),
        conv("conv2"),
        pool,
        Layer::Flatten,
        linear("fc1"),
        Layer::Relu,
        linear("fc2"),
    ])
    .with_input_shape(&[1, 28, 28]);
    net.check(&model)?;
    Ok((model, net))
}

/// The thin LeNet's students, in the table's order: the labels alone; FitNets (hints,
/// then soft targets); attention transfer with the labels alone; attention transfer
/// with soft targets; soft targets alone.
const CONV_STUDENTS: [&str; 5] = [
    "thin LeNet, labels",
    "thin LeNet, FitNets hints + KD",
    "thin LeNet, attention transfer",
    "thin LeNet, attention transfer + KD",
    "thin LeNet, soft targets (KD)",
];

/// The conv students' test errors: LeNet-5's, and each of [`CONV_STUDENTS`]'s over the
/// initialisations.
struct ConvResults {
    teacher: usize,
    students: [Vec<usize>; 5],
}

/// LeNet-5 teaching the thin LeNet, every student of [`CONV_STUDENTS`] from each of
/// `--conv-seeds` initialisations (`--conv-seed`, the next, …) with the same batches
/// and `--conv-epochs` + 1 passes over the data.
fn conv_students(
    train: &Dataset,
    test: &Dataset,
    args: &Args,
    rows: &mut Vec<Row>,
) -> Result<ConvResults> {
    let (lenet, lnet) = mnist::trained(
        mnist::Arch::Lenet5,
        train,
        test,
        args.conv_teacher_epochs,
        1,
        args.fresh,
    )?;
    let train = train.slice(0..args.conv_train.min(train.len()));
    let errors = |net: &Network, m: &Model| -> Result<usize> {
        let e = net.evaluate(m, test, 1000)?;
        Ok(e.total - e.correct)
    };
    let teacher_errors = errors(&lnet, &lenet)?;
    say!("LeNet-5 teacher: {teacher_errors} test errors");
    let teacher = Teacher::new(lnet.clone(), lenet.clone())?;
    let t = Instant::now();
    let layers: Vec<usize> = attention_pairs(args)
        .iter()
        .map(|p| p.teacher_layer)
        .collect();
    let outputs = outputs_on(&teacher, &train, &layers)?;
    say!(
        "  its logits and attention-layer outputs on the training set, computed once ({:.0} s)",
        t.elapsed().as_secs_f64()
    );
    let mut students: [Vec<usize>; 5] = Default::default();
    let mut params = 0;
    for conv_seed in args.conv_seed..args.conv_seed + args.conv_seeds {
        let (start, net) = thin_lenet(conv_seed)?;
        params = start.numel();
        for (v, name) in CONV_STUDENTS.iter().enumerate() {
            let t = Instant::now();
            let mut m = start.clone();
            conv_student(v, &net, &mut m, &teacher, &train, &outputs, args)?;
            let e = errors(&net, &m)?;
            say!(
                "  {name}, seed {conv_seed}: {e} errors ({:.0} s)",
                t.elapsed().as_secs_f64()
            );
            students[v].push(e);
        }
    }
    rows.push(Row::new(
        &format!("teacher LeNet-5 ({} epochs)", args.conv_teacher_epochs),
        lenet.numel(),
        &[teacher_errors],
        None,
    ));
    for (name, e) in CONV_STUDENTS.iter().zip(&students) {
        rows.push(Row::new(name, params, e, None));
    }
    Ok(ConvResults {
        teacher: teacher_errors,
        students,
    })
}

/// The teacher's outputs on all of `data` (its logits, and the outputs of `layers`),
/// computed once in evaluation mode, batch by batch.
fn outputs_on(teacher: &Teacher, data: &Dataset, layers: &[usize]) -> Result<TeacherOutputs> {
    let n = data.len();
    let mut all: Option<TeacherOutputs> = None;
    for start in (0..n).step_by(1000) {
        let end = (start + 1000).min(n);
        let (logits, taps) =
            teacher.outputs(data.images.slice(ndarray::s![start..end, ..]), layers)?;
        let (l_all, t_all) = all.get_or_insert_with(|| {
            let grow = |shape: &[usize]| {
                let mut s = shape.to_vec();
                s[0] = n;
                s
            };
            (
                logits
                    .iter()
                    .map(|l| Array2::zeros((n, l.ncols())))
                    .collect(),
                taps.iter()
                    .map(|t| ArrayD::zeros(IxDyn(&grow(t.shape()))))
                    .collect(),
            )
        });
        for (dst, src) in l_all.iter_mut().zip(&logits) {
            dst.slice_mut(ndarray::s![start..end, ..]).assign(src);
        }
        for (dst, src) in t_all.iter_mut().zip(&taps) {
            dst.slice_axis_mut(Axis(0), (start..end).into()).assign(src);
        }
    }
    Ok(all.unwrap_or_default())
}

/// `passes` epochs of SGD in batches of 64 (the order of epoch `e` from seed 40 + `e`,
/// the same for every student): on the labels, or with `kd` on the distillation loss
/// against the teacher's outputs on `train`, computed once.
fn conv_epochs(
    net: &Network,
    model: &mut Model,
    opt: &mut Sgd,
    train: &Dataset,
    kd: Option<(&Distillation, &TeacherOutputs)>,
    passes: std::ops::Range<usize>,
) -> Result<()> {
    for e in passes {
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(40 + e as u64));
        for idx in order.chunks(64) {
            let x = train.images.select(Axis(0), idx);
            let y = train.labels.select(Axis(0), idx);
            let grads = match kd {
                Some((d, (logits, taps))) => {
                    let t = (
                        logits.iter().map(|l| l.select(Axis(0), idx)).collect(),
                        taps.iter().map(|t| t.select(Axis(0), idx)).collect(),
                    );
                    d.loss_and_gradients_from(net, model, x.view(), y.view(), None, &t)?
                        .gradients
                }
                None => net.loss_and_gradients(model, x.view(), y.view())?.1,
            };
            opt.step(model, &grads)?;
        }
    }
    Ok(())
}

/// Trains the thin LeNet `model` as student `variant` of [`CONV_STUDENTS`]: SGD
/// (lr 0.01, momentum 0.9, batch 64), `--conv-epochs` + 1 passes over `train` (FitNets'
/// first is its hint stage), soft targets at T = 4 with weight `--at-alpha`, attention
/// transfer on `--at-layer` with `--beta`. `outputs` are the teacher's logits and its
/// outputs at the attention layers on `train`.
fn conv_student(
    variant: usize,
    net: &Network,
    model: &mut Model,
    teacher: &Teacher,
    train: &Dataset,
    outputs: &TeacherOutputs,
    args: &Args,
) -> Result<()> {
    let passes = args.conv_epochs + 1;
    let mut opt = Sgd::new(0.01, 0.9, 0.0)?;
    let kd = |alpha: f32, attention: bool| DistillConfig {
        temperature: 4.0,
        alpha,
        attention: if attention {
            attention_pairs(args)
        } else {
            Vec::new()
        },
        beta: if attention { args.beta } else { 0.0 },
        ..Default::default()
    };
    // Outputs at no teacher layer, for the students without attention transfer.
    let logits_only = (outputs.0.clone(), Vec::new());
    let (config, outputs, first) = match variant {
        0 => return conv_epochs(net, model, &mut opt, train, None, 0..passes),
        1 => {
            // FitNets: stage 1, hints (student conv2 ← LeNet-5 conv2 through a 1×1
            // regressor) train conv1-conv2; stage 2, soft targets for the whole student.
            // The hint loss is summed over LeNet-5's 50×8×8 conv2 outputs: weighted by
            // their count, it is a mean square, which keeps the first stage stable.
            let (tnet, tmodel) = teacher.network();
            let hint_size: usize = tnet.shapes(tmodel)?[3].iter().product();
            let stage1 = DistillConfig {
                hints: vec![HintPair {
                    student_layer: 2,
                    teacher_layer: 2,
                    weight: 1.0 / hint_size as f32,
                }],
                hints_only: true,
                ..Default::default()
            };
            let mut d = Distillation::new(stage1, teacher.clone(), net, model)?;
            d.train_epoch(net, model, &mut opt, train, 64, 39)?;
            opt = Sgd::new(0.01, 0.9, 0.0)?;
            (kd(args.at_alpha, false), &logits_only, 1)
        }
        2 => (kd(0.0, true), outputs, 0),
        3 => (kd(args.at_alpha, true), outputs, 0),
        _ => (kd(args.at_alpha, false), &logits_only, 0),
    };
    let d = Distillation::new(config, teacher.clone(), net, model)?;
    conv_epochs(
        net,
        model,
        &mut opt,
        train,
        Some((&d, outputs)),
        first..passes,
    )
}

/// The layer pairs `--at-layer` names: 1 is conv1 (24×24), 2 conv2 (8×8), 0 both.
fn attention_pairs(args: &Args) -> Vec<LayerPair> {
    [0, 2]
        .into_iter()
        .filter(|&l| args.at_layer == 0 || args.at_layer == l / 2 + 1)
        .map(|l| LayerPair {
            student_layer: l,
            teacher_layer: l,
        })
        .collect()
}
