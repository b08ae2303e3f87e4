//! Data-aware compression without retraining on MNIST: LeNet-300-100 and LeNet-5,
//! calibrated on a sample of training images, then quantized by GPTQ, AWQ and
//! round-to-nearest, and pruned by SparseGPT, OBS, Wanda and magnitude, each measured
//! by test accuracy.
//!
//! ```text
//! cargo run --release --example calibrate_mnist [-- --arch lenet300|lenet5|both
//!     --calibration 2048 --epochs 10 --seed 1 --holdout --sequential --json]
//! ```
//!
//! - Calibration: `--calibration N` training images (default 2,048), a seeded sample of
//!   the first 50,000; their statistics (`Σ x xᵀ` of every layer's inputs) come from
//!   [`Network::observe_calibration`] on the dense network, once, and every method reads
//!   the same statistics. With `--sequential`, as the GPTQ, SparseGPT and Wanda papers
//!   run, each layer's statistics are taken again on the network whose earlier layers
//!   are already compressed (slow for LeNet-5's convolutions).
//! - Every Linear and Conv2d weight is compressed, first and last layers included
//!   (biases stay in 32 bits); for 2:4, only the weights whose input channels divide into
//!   groups of 4 (LeNet-5's `conv1` has one input channel and stays dense).
//! - Quantization: affine grids (min/max with a zero point) at 4, 3 and 2 bits, one
//!   scale per output row or per group of inputs, the group being the divisor of the
//!   layer's input count nearest 100 (98 for 784 inputs; 25 for `conv1`'s 25: per row).
//!   Round-to-nearest, GPTQ and AWQ use the same grid and grouping.
//! - Pruning: magnitude per layer, Wanda per output row, SparseGPT (adaptive mask per
//!   block of columns) at 50%, 70% and 90% of every layer and at 2:4; OBS at 50%.
//! - `--holdout` measures on training images 50,000–59,999 (never in the calibration
//!   sample) instead of the test set: the set to choose settings on.
//! - `--json` ends with one line of flat keys: LeNet-300-100's accuracies as fractions
//!   (`dense`, `rtn_3bit`, `gptq_3bit_group`, `magnitude_2:4`, `sparsegpt_0.5`, …), then
//!   LeNet-5's with the prefix `lenet5_`.
//!
//! The trained networks are those of `deep_compression` (same recipes and cache files,
//! `target/slimnn-examples/lenet300.safetensors` and `lenet5.safetensors`); they are
//! trained if missing.

#[path = "common/mnist.rs"]
#[macro_use]
mod mnist;

use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use slimnn::calib::{Awq, CalibrationStats, Gptq, Obs, SparseGpt, SparsityPattern};
use slimnn::io::idx::Dataset;
use slimnn::nn::Network;
use slimnn::prune::{NmPruner, Pruner, Statistics, UnstructuredPruner, Wanda};
use slimnn::quant::{Granularity, Quantizer, Scheme, UniformQuantizer};
use slimnn::{Model, Result, Selector};

/// Training images the calibration sample is drawn from; the rest is the holdout set.
const CALIBRATION_POOL: usize = 50_000;
/// The group size aimed at: each layer takes the divisor of its input count nearest it.
const GROUP_TARGET: usize = 100;
const BITS: [u8; 3] = [4, 3, 2];

struct Args {
    archs: Vec<mnist::Arch>,
    calibration: usize,
    epochs: usize,
    seed: u64,
    fresh: bool,
    holdout: bool,
    sequential: bool,
    json: bool,
}

fn parse() -> Args {
    let mut a = Args {
        archs: vec![mnist::Arch::Lenet300, mnist::Arch::Lenet5],
        calibration: 2048,
        epochs: 10,
        seed: 1,
        fresh: false,
        holdout: false,
        sequential: false,
        json: false,
    };
    let usage = "usage: calibrate_mnist [--arch lenet300|lenet5|both] [--calibration N] \
                 [--epochs N] [--seed S] [--retrain-from-scratch] [--holdout] [--sequential] [--json]";
    let fail = |message: String| -> ! {
        eprintln!("{message} (try --help)");
        std::process::exit(2)
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| fail(format!("{flag} needs a value")))
        };
        let mut count = || {
            let v = value();
            v.parse::<u64>()
                .unwrap_or_else(|_| fail(format!("{flag} needs a whole number, not `{v}`")))
        };
        match flag.as_str() {
            "--arch" => {
                let v = value();
                a.archs = match mnist::Arch::parse(&v) {
                    Some(arch) => vec![arch],
                    None if v == "both" => vec![mnist::Arch::Lenet300, mnist::Arch::Lenet5],
                    None => fail(format!("--arch is lenet300, lenet5 or both, not `{v}`")),
                }
            }
            "--calibration" => a.calibration = count() as usize,
            "--epochs" => a.epochs = count() as usize,
            "--seed" => a.seed = count(),
            "--retrain-from-scratch" => a.fresh = true,
            "--holdout" => a.holdout = true,
            "--sequential" => a.sequential = true,
            "--json" => a.json = true,
            "-h" | "--help" => {
                say!("{usage}");
                std::process::exit(0)
            }
            other => fail(format!("unknown argument `{other}`")),
        }
    }
    if !(1..=CALIBRATION_POOL).contains(&a.calibration) || a.epochs == 0 {
        fail(format!(
            "--calibration must be 1 to {CALIBRATION_POOL} and --epochs at least 1"
        ))
    }
    a
}

fn main() -> Result<()> {
    let args = parse();
    let (train, test) = mnist::load()?;
    let eval = if args.holdout {
        say!("measuring on the holdout: training images {CALIBRATION_POOL}–59,999");
        train.slice(CALIBRATION_POOL..train.len())
    } else {
        test
    };
    let mut results = Vec::new();
    for &arch in &args.archs {
        let (model, net) = mnist::trained(arch, &train, &eval, args.epochs, args.seed, args.fresh)?;
        let prefix = match arch {
            mnist::Arch::Lenet300 => "",
            mnist::Arch::Lenet5 => "lenet5_",
        };
        let measured = Calibrated::new(arch, model, net, &train, &eval, &args)?.measure()?;
        results.extend(
            measured
                .into_iter()
                .map(|(k, v)| (format!("{prefix}{k}"), v)),
        );
    }
    if args.json {
        let fields: Vec<String> = results
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v:.4}"))
            .collect();
        say!("{{{}}}", fields.join(", "));
    }
    Ok(())
}

/// A trained network with its calibration statistics and the set it is measured on.
struct Calibrated<'a> {
    arch: mnist::Arch,
    model: Model,
    net: Network,
    stats: Arc<CalibrationStats>,
    /// The calibration images, `[n, 784]`.
    images: Array2<f32>,
    /// Each layer's statistics taken on the network with the earlier layers compressed.
    sequential: bool,
    eval: &'a Dataset,
    /// The Linear and Conv2d weights, in layer order, with their input counts.
    weights: Vec<(String, usize)>,
}

impl<'a> Calibrated<'a> {
    fn new(
        arch: mnist::Arch,
        model: Model,
        net: Network,
        train: &Dataset,
        eval: &'a Dataset,
        args: &Args,
    ) -> Result<Self> {
        let t0 = Instant::now();
        let mut sample: Vec<usize> = (0..CALIBRATION_POOL).collect();
        sample.shuffle(&mut rand::rngs::Xoshiro256PlusPlus::seed_from_u64(
            args.seed + 900,
        ));
        let images = train.images.select(Axis(0), &sample[..args.calibration]);
        let stats = statistics(&net, &model, &images)?;
        let weights = model
            .select(&Selector::prunable())?
            .into_iter()
            .map(|name| Ok((name.to_string(), inputs(model.get(name)?.shape()))))
            .collect::<Result<Vec<_>>>()?;
        say!(
            "\n{}: calibration statistics of {} training images ({:.1} s, loaded machine)",
            arch.title(),
            args.calibration,
            t0.elapsed().as_secs_f64()
        );
        for (name, n) in &weights {
            let rows = stats.get(name).map_or(0, |s| s.rows());
            say!(
                "  {name:<12} {n:>4} inputs, {rows:>9} rows ({:.1} per input)",
                rows as f64 / *n as f64
            );
        }
        Ok(Calibrated {
            arch,
            model,
            net,
            stats: Arc::new(stats),
            images,
            sequential: args.sequential,
            eval,
            weights,
        })
    }

    fn accuracy(&self, model: &Model) -> Result<f64> {
        Ok(self.net.evaluate(model, self.eval, 1000)?.accuracy)
    }

    /// Every method at every setting, printed as two tables; the accuracies by key.
    fn measure(&self) -> Result<Vec<(String, f64)>> {
        let t0 = Instant::now();
        let dense = self.accuracy(&self.model)?;
        let mut results = vec![("dense".to_string(), dense)];
        say!(
            "\n{} without retraining; dense: {:.2}%\n",
            self.arch.title(),
            100.0 * dense
        );
        let mut header = format!("{:<30}", "quantization (affine)");
        for grouped in [false, true] {
            for bits in BITS {
                let g = if grouped { " g" } else { "" };
                header += &format!(" {:>8}", format!("{bits}-bit{g}"));
            }
        }
        say!("{header}");
        for method in QUANTIZERS {
            let mut line = format!("{:<30}", method.label());
            for grouped in [false, true] {
                for bits in BITS {
                    let acc = self.accuracy(&self.quantized(method, bits, grouped)?)?;
                    line += &format!(" {:>7.2}%", 100.0 * acc);
                    let g = if grouped { "_group" } else { "" };
                    results.push((format!("{}_{bits}bit{g}", method.key()), acc));
                }
            }
            say!("{line}");
        }
        say!("(g: groups of the divisor of each layer's inputs nearest {GROUP_TARGET})\n");

        let mut header = format!("{:<30}", "pruning");
        for pattern in PATTERNS {
            header += &format!(" {:>8}", pattern.label());
        }
        say!("{header}");
        for method in PRUNERS {
            let mut line = format!("{:<30}", method.label());
            for pattern in PATTERNS {
                match self.pruned(method, pattern)? {
                    Some(m) => {
                        let acc = self.accuracy(&m)?;
                        line += &format!(" {:>7.2}%", 100.0 * acc);
                        results.push((format!("{}_{}", method.key(), pattern.key()), acc));
                    }
                    None => line += &format!(" {:>8}", "—"),
                }
            }
            say!("{line}");
        }
        say!(
            "({:.0} s for all, loaded machine)",
            t0.elapsed().as_secs_f64()
        );
        Ok(results)
    }

    /// The statistics for the layer `index` of `m`, whose earlier layers are compressed:
    /// those of the dense network, or with `--sequential` those of `m`.
    fn stats_for(&self, index: usize, m: &Model) -> Result<Arc<CalibrationStats>> {
        Ok(if self.sequential && index > 0 {
            Arc::new(statistics(&self.net, m, &self.images)?)
        } else {
            Arc::clone(&self.stats)
        })
    }

    /// The model with every weight quantized by `method`, per row or in groups.
    fn quantized(&self, method: Quant, bits: u8, grouped: bool) -> Result<Model> {
        let mut m = self.model.clone();
        for (i, (name, inputs)) in self.weights.iter().enumerate() {
            let group = grouped.then(|| group_size(*inputs));
            let q = method.quantizer(bits, group)?;
            let stats = self.stats_for(i, &m)?;
            m.quantize_calibrated(&Selector::glob(name.as_str()), q.as_ref(), &stats)?;
        }
        Ok(m)
    }

    /// The model with every weight pruned by `method` to `pattern` (`None`: not
    /// measured at this pattern).
    fn pruned(&self, method: Prune, pattern: Pattern) -> Result<Option<Model>> {
        let Some(pruner) = method.pruner(pattern)? else {
            return Ok(None);
        };
        let mut m = self.model.clone();
        for (i, (name, _)) in self.weights.iter().enumerate() {
            if pattern.fits(m.get(name)?.shape()) {
                let stats = Statistics::new().with_calibration(self.stats_for(i, &m)?);
                m.prune(&Selector::glob(name.as_str()), pruner.as_ref(), &stats)?;
            }
        }
        Ok(Some(m))
    }
}

/// The statistics of every layer's inputs over `images`, in batches of 512.
fn statistics(net: &Network, model: &Model, images: &Array2<f32>) -> Result<CalibrationStats> {
    let mut stats = CalibrationStats::new();
    for batch in images.axis_chunks_iter(Axis(0), 512) {
        net.observe_calibration(model, batch, &mut stats)?;
    }
    Ok(stats)
}

/// The inputs of a weight `[out, in, …]`: `in · kh · kw` for a Conv2d.
fn inputs(shape: &[usize]) -> usize {
    shape[1..].iter().product()
}

/// The divisor of `inputs` nearest [`GROUP_TARGET`] (the smaller on a tie).
fn group_size(inputs: usize) -> usize {
    (1..=inputs)
        .filter(|&g| inputs.is_multiple_of(g))
        .min_by_key(|g| g.abs_diff(GROUP_TARGET))
        .unwrap_or(1)
}

#[derive(Clone, Copy)]
enum Quant {
    RoundToNearest,
    Gptq,
    GptqActOrder,
    Awq,
}

const QUANTIZERS: [Quant; 4] = [
    Quant::RoundToNearest,
    Quant::Gptq,
    Quant::GptqActOrder,
    Quant::Awq,
];

impl Quant {
    fn label(self) -> &'static str {
        match self {
            Quant::RoundToNearest => "round-to-nearest",
            Quant::Gptq => "GPTQ",
            Quant::GptqActOrder => "GPTQ, act-order",
            Quant::Awq => "AWQ",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Quant::RoundToNearest => "rtn",
            Quant::Gptq => "gptq",
            Quant::GptqActOrder => "gptq_actorder",
            Quant::Awq => "awq",
        }
    }

    /// The quantizer at `bits`, per output row or in groups of `group` inputs.
    fn quantizer(self, bits: u8, group: Option<usize>) -> Result<Box<dyn Quantizer<f32>>> {
        let granularity = match group {
            Some(size) => Granularity::PerGroup { size },
            None => Granularity::PerChannel { axis: 0 },
        };
        let gptq = match group {
            Some(size) => Gptq::new(bits)?.with_group(size)?,
            None => Gptq::new(bits)?,
        };
        Ok(match self {
            Quant::RoundToNearest => {
                Box::new(UniformQuantizer::new(bits, Scheme::Affine, granularity)?)
            }
            Quant::Gptq => Box::new(gptq),
            Quant::GptqActOrder => Box::new(gptq.with_act_order(true)),
            Quant::Awq => Box::new(Awq::new(bits, group)?),
        })
    }
}

#[derive(Clone, Copy)]
enum Pattern {
    /// This fraction of every layer's weights.
    Fraction(f64),
    /// 2 of every 4 consecutive inputs kept.
    TwoFour,
}

const PATTERNS: [Pattern; 4] = [
    Pattern::Fraction(0.5),
    Pattern::Fraction(0.7),
    Pattern::Fraction(0.9),
    Pattern::TwoFour,
];

impl Pattern {
    fn label(self) -> String {
        match self {
            Pattern::Fraction(f) => format!("{:.0}%", 100.0 * f),
            Pattern::TwoFour => "2:4".into(),
        }
    }

    fn key(self) -> String {
        match self {
            Pattern::Fraction(f) => format!("{f}"),
            Pattern::TwoFour => "2:4".into(),
        }
    }

    /// Whether a weight of `shape` takes the pattern: 2:4 needs input channels in groups
    /// of 4.
    fn fits(self, shape: &[usize]) -> bool {
        match self {
            Pattern::Fraction(_) => true,
            Pattern::TwoFour => shape[1].is_multiple_of(4),
        }
    }
}

#[derive(Clone, Copy)]
enum Prune {
    Magnitude,
    Wanda,
    SparseGpt,
    Obs,
}

const PRUNERS: [Prune; 4] = [Prune::Magnitude, Prune::Wanda, Prune::SparseGpt, Prune::Obs];

impl Prune {
    fn label(self) -> &'static str {
        match self {
            Prune::Magnitude => "magnitude (per layer)",
            Prune::Wanda => "Wanda (per row)",
            Prune::SparseGpt => "SparseGPT",
            Prune::Obs => "OBS (per row)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Prune::Magnitude => "magnitude",
            Prune::Wanda => "wanda",
            Prune::SparseGpt => "sparsegpt",
            Prune::Obs => "obs",
        }
    }

    /// The pruner for `pattern`; `None` where it is not measured.
    fn pruner(self, pattern: Pattern) -> Result<Option<Box<dyn Pruner<f32>>>> {
        Ok(Some(match (self, pattern) {
            (Prune::Magnitude, Pattern::Fraction(f)) => Box::new(UnstructuredPruner::magnitude(f)?),
            (Prune::Magnitude, Pattern::TwoFour) => Box::new(NmPruner::magnitude(2, 4)?),
            (Prune::Wanda, Pattern::Fraction(f)) => Box::new(UnstructuredPruner::wanda(f)?),
            (Prune::Wanda, Pattern::TwoFour) => Box::new(NmPruner::new(Wanda, 2, 4)?),
            (Prune::SparseGpt, Pattern::Fraction(f)) => {
                Box::new(SparseGpt::new(SparsityPattern::Unstructured(f))?)
            }
            (Prune::SparseGpt, Pattern::TwoFour) => {
                Box::new(SparseGpt::new(SparsityPattern::NM { n: 2, m: 4 })?)
            }
            (Prune::Obs, Pattern::Fraction(f)) if f == 0.5 => Box::new(Obs::new(f)?),
            (Prune::Obs, _) => return Ok(None),
        }))
    }
}
