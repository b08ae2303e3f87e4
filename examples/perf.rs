//! The benchmark contract of `../shared/PERF.md`: one JSON object per line per op.
//!
//! ```text
//! cargo run --release --example perf -- --json [--ops memcpy,prune_global] [--repeats 5]
//!     [--save-inputs DIR]
//! ```
//!
//! `--save-inputs DIR` writes the inputs of the ops whose quality depends on the draw
//! (`svd_trunc`, `tucker2`) as `DIR/<op>.npy`, for `scripts/perf_numpy.py --inputs DIR`
//! to run NumPy, scikit-learn and TensorLy on the very same matrices.
//!
//! Inputs are generated in-process with a fixed seed; only the named work is timed,
//! after one untimed warm-up.

use std::time::Instant;

use ndarray::{Array, ArrayD, IxDyn};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, Normal, Uniform};
use slimnn::encode::huffman::{HuffmanCode, entropy_bits, symbol_counts};
use slimnn::encode::{Csr, NmSparse};
use slimnn::lowrank::{LowRank, LowRankContext, RandomizedSvd, Rank, TruncatedSvd, Tucker2};
use slimnn::nn::{ConvSpec, Network, Sgd, conv2d};
use slimnn::prune::{
    ChannelCriterion, GlobalPruner, NmPruner, PruneContext, Pruner, StructuredPruner,
};
use slimnn::quant::{
    Granularity, KMeansInit, KMeansQuantizer, QuantContext, QuantizedLinear, Quantizer, Scheme,
    UniformQuantizer,
};
use slimnn::sparse_ops;

struct Opts {
    json: bool,
    repeats: usize,
    save_inputs: Option<std::path::PathBuf>,
}

struct Line {
    op: &'static str,
    size: String,
    times: Vec<f64>,
    quality: f64,
    metric: &'static str,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = Opts {
        json: false,
        repeats: 5,
        save_inputs: None,
    };
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => opts.json = true,
            "--save-inputs" => opts.save_inputs = it.next().map(Into::into),
            "--ops" => only = it.next().map(|s| s.split(',').map(String::from).collect()),
            "--repeats" => {
                opts.repeats = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|&r| r >= 3)
                    .unwrap_or_else(|| {
                        eprintln!("--repeats needs a number ≥ 3");
                        std::process::exit(2)
                    })
            }
            "-h" | "--help" => {
                println!(
                    "usage: perf [--json] [--ops a,b,c] [--repeats N≥3] [--save-inputs DIR]\nops: {}",
                    OPS.iter().map(|o| o.0).collect::<Vec<_>>().join(", ")
                );
                return;
            }
            other => {
                eprintln!("unknown argument `{other}` (try --help)");
                std::process::exit(2)
            }
        }
    }
    if let Some(names) = &only {
        for n in names {
            if !OPS.iter().any(|o| o.0 == n) {
                eprintln!(
                    "unknown op `{n}`; known: {}",
                    OPS.iter().map(|o| o.0).collect::<Vec<_>>().join(", ")
                );
                std::process::exit(2)
            }
        }
    }
    for (name, run) in OPS {
        if only.as_ref().is_none_or(|o| o.iter().any(|n| n == name)) {
            for line in run(&opts) {
                print(&opts, &line);
            }
        }
    }
}

type Op = fn(&Opts) -> Vec<Line>;
const OPS: &[(&str, Op)] = &[
    ("memcpy", memcpy),
    ("prune_global", prune_global),
    ("prune_structured", prune_structured),
    ("quant_int8_perchannel", quant_int8_perchannel),
    ("quant_int4_group", quant_int4_group),
    ("kmeans_share", kmeans_share),
    ("dense_gemm", dense_gemm),
    ("int8_gemm", int8_gemm),
    ("svd_trunc", svd_trunc),
    ("tucker2", tucker2),
    ("lowrank_linear", lowrank_linear),
    ("lowrank_conv", lowrank_conv),
    ("spmm", spmm),
    ("nm_matmul", nm_matmul),
    ("codebook_matmul", codebook_matmul),
    ("huffman", huffman),
    ("train_step", train_step),
    ("depthwise_conv", depthwise_conv),
    ("dwsep_block", dwsep_block),
    ("gptq", gptq),
    ("sparsegpt", sparsegpt),
    ("half_convert", half_convert),
    ("prune_half", prune_half),
    ("q4_matmul", q4_matmul),
];

fn print(opts: &Opts, l: &Line) {
    let mut t = l.times.clone();
    t.sort_by(f64::total_cmp);
    let median = t[t.len() / 2];
    if opts.json {
        println!(
            "{{\"op\": \"{}\", \"impl\": \"slimnn\", \"size\": \"{}\", \"median_s\": {:.6e}, \"min_s\": {:.6e}, \"repeats\": {}, \"quality\": {}, \"quality_metric\": \"{}\"}}",
            l.op,
            l.size,
            median,
            t[0],
            t.len(),
            l.quality,
            l.metric
        );
    } else {
        println!(
            "{:<18} {:<44} median {:>9.3} ms  min {:>9.3} ms  {} = {:.6}",
            l.op,
            l.size,
            median * 1e3,
            t[0] * 1e3,
            l.metric,
            l.quality
        );
    }
}

/// Runs `once` (which times its own work and returns seconds) after one warm-up.
fn repeat(repeats: usize, mut once: impl FnMut() -> f64) -> Vec<f64> {
    once();
    (0..repeats).map(|_| once()).collect()
}

/// Seconds taken by `work`.
fn timed(work: impl FnOnce()) -> f64 {
    let t0 = Instant::now();
    work();
    t0.elapsed().as_secs_f64()
}

fn normal(shape: &[usize], std: f32, seed: u64) -> ArrayD<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let d = Normal::new(0.0f32, std).expect("valid normal");
    Array::from_shape_simple_fn(IxDyn(shape), || d.sample(&mut rng))
}

fn memcpy(opts: &Opts) -> Vec<Line> {
    [
        (vec![4096usize, 4096], "4096x4096 f32".to_string()),
        (
            vec![25_165_824],
            "25165824 f32 (prune_global's bytes)".into(),
        ),
    ]
    .into_iter()
    .map(|(shape, size)| {
        let src = normal(&shape, 1.0, 1);
        let src = src.as_slice().unwrap();
        let mut dst = vec![0.0f32; src.len()];
        let times = repeat(opts.repeats, || timed(|| dst.copy_from_slice(src)));
        std::hint::black_box(&dst);
        let mut t = times.clone();
        t.sort_by(f64::total_cmp);
        Line {
            op: "memcpy",
            size,
            quality: (src.len() * 4) as f64 / t[t.len() / 2] / 1e9,
            times,
            metric: "GB/s copied",
        }
    })
    .collect()
}

fn prune_global(opts: &Opts) -> Vec<Line> {
    let shapes = [[4096usize, 4096], [4096, 1024], [1024, 4096]];
    let originals: Vec<ArrayD<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| normal(s, 0.02, 10 + i as u64))
        .collect();
    let mut work: Vec<ArrayD<f32>> = originals.clone();
    let pruner = GlobalPruner::magnitude(0.9).unwrap();
    let mut sparsity = 0.0;
    let times = repeat(opts.repeats, || {
        for (w, o) in work.iter_mut().zip(&originals) {
            w.assign(o);
        }
        let mut views: Vec<_> = work.iter_mut().map(|w| w.view_mut()).collect();
        let mut masks = Vec::new();
        let t = timed(|| masks = pruner.prune(&mut views, &[]).unwrap());
        let kept: usize = masks.iter().map(|m| m.count_kept()).sum();
        let n: usize = masks.iter().map(|m| m.len()).sum();
        sparsity = 1.0 - kept as f64 / n as f64;
        t
    });
    vec![Line {
        op: "prune_global",
        size: "3 tensors 4096x4096+4096x1024+1024x4096".into(),
        times,
        quality: sparsity,
        metric: "sparsity",
    }]
}

fn prune_structured(opts: &Opts) -> Vec<Line> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(20);
    let scale = Uniform::new(0.2f32, 2.0).unwrap();
    let scales: Vec<f32> = (0..512).map(|_| scale.sample(&mut rng)).collect();
    let mut original = normal(&[512, 256, 3, 3], 0.05, 21);
    for (mut f, s) in original.outer_iter_mut().zip(&scales) {
        f *= *s;
    }
    let pruner = StructuredPruner::new(ChannelCriterion::L2, 256usize).unwrap();
    let ctx = PruneContext::new();
    let mut zeroed = 0.0;
    let times = repeat(opts.repeats, || {
        let mut w = original.clone();
        let t = timed(|| {
            pruner.prune(&mut w, &ctx).unwrap();
        });
        let dead = w
            .outer_iter()
            .filter(|f| f.iter().all(|&x| x == 0.0))
            .count();
        zeroed = dead as f64 / 512.0;
        t
    });
    vec![Line {
        op: "prune_structured",
        size: "512x256x3x3 keep 256 filters".into(),
        times,
        quality: zeroed,
        metric: "fraction of filters zeroed",
    }]
}

fn relative_error(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (x as f64).powi(2);
    }
    (num / den).sqrt()
}

/// Quantize then dequantize a 4096×4096 N(0, 0.02²) weight with `quantizer`.
fn quant_roundtrip(
    opts: &Opts,
    op: &'static str,
    size: &str,
    quantizer: UniformQuantizer,
) -> Vec<Line> {
    let w = normal(&[4096, 4096], 0.02, 30);
    let ctx = QuantContext::new();
    let mut out = ArrayD::zeros(IxDyn(&[4096, 4096]));
    let times = repeat(opts.repeats, || {
        timed(|| {
            let q = quantizer.quantize(&w, &ctx).unwrap();
            q.dequantize_into(out.as_slice_mut().unwrap()).unwrap();
        })
    });
    let quality = relative_error(&w, &out);
    vec![Line {
        op,
        size: size.into(),
        times,
        quality,
        metric: "relative Frobenius error",
    }]
}

fn quant_int8_perchannel(opts: &Opts) -> Vec<Line> {
    let q =
        UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap();
    quant_roundtrip(opts, "quant_int8_perchannel", "4096x4096", q)
}

fn quant_int4_group(opts: &Opts) -> Vec<Line> {
    let q = UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 128 }).unwrap();
    quant_roundtrip(opts, "quant_int4_group", "4096x4096 group 128", q)
}

/// The crate's dense yardstick, `sparse_ops::dense_matmul` (`y = x·Wᵀ`, the same
/// multiply-adds as NumPy's `W @ X` in `scripts/perf_numpy.py`): row kernels at batch 1,
/// the tuned GEMM at batch 64.
fn dense_gemm(opts: &Opts) -> Vec<Line> {
    let w = normal(&[4096, 4096], 0.02, 40)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let wv = w.as_slice().unwrap();
    [1usize, 64]
        .into_iter()
        .map(|batch| {
            let x = normal(&[batch, 4096], 1.0, 41)
                .into_dimensionality::<ndarray::Ix2>()
                .unwrap();
            let mut y = ndarray::Array2::<f32>::zeros((batch, 4096));
            let times = repeat(opts.repeats, || {
                timed(|| y = sparse_ops::dense_matmul([4096, 4096], wv, &x).unwrap())
            });
            Line {
                op: "dense_gemm",
                size: format!("4096x4096 @ batch {batch}"),
                times,
                quality: max_abs_diff(y.as_slice().unwrap(), &exact_product(&x, &w)),
                metric: "max abs difference to f64",
            }
        })
        .collect()
}

/// The int8 Linear 4096→4096 with bias (weights N(0, 1/64²) quantized once, untimed)
/// against the dense product of the same f32 weights, at batch 1 and 64. The int8 lines'
/// quality is the relative Frobenius error vs f64, bias included.
fn int8_gemm(opts: &Opts) -> Vec<Line> {
    let w = normal(&[4096, 4096], 1.0 / 64.0, 50)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let bias = normal(&[4096], 0.1, 51)
        .into_dimensionality::<ndarray::Ix1>()
        .unwrap();
    let layer = QuantizedLinear::new(&w, Some(&bias)).unwrap();
    let mut lines = product_lines(opts, "int8_gemm", "int8", &w, &|x, y| {
        layer.forward_into(x, y).unwrap()
    });
    let int8_lines = lines.iter_mut().filter(|l| l.size.ends_with(" int8"));
    for (line, batch) in int8_lines.zip([1usize, 64]) {
        // The activations `product_lines` generated for this batch.
        let x = normal(&[batch, 4096], 1.0, 100 + batch as u64)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let y = layer.forward(&x).unwrap();
        let exact = exact_product(&x, &w) + &bias.mapv(f64::from);
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (&a, &b) in y.iter().zip(&exact) {
            num += (a as f64 - b).powi(2);
            den += b * b;
        }
        line.quality = (num / den).sqrt();
        line.metric = "relative Frobenius error vs f64";
    }
    lines
}

/// 16-entry weight sharing of 1,048,576 Laplace(0, 0.02) values: the optimal codebook,
/// and Lloyd's algorithm from Deep Compression's linear start.
fn kmeans_share(opts: &Opts) -> Vec<Line> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(60);
    let u = Uniform::new(-0.5f64, 0.5).unwrap();
    let values: Vec<f32> = (0..1_048_576)
        .map(|_| {
            let v = u.sample(&mut rng);
            (-0.02 * v.signum() * (1.0 - 2.0 * v.abs()).ln()) as f32
        })
        .collect();
    let w = ArrayD::from_shape_vec(IxDyn(&[1_048_576]), values).unwrap();
    let ctx = QuantContext::new();
    [
        ("optimal", KMeansQuantizer::optimal(16).unwrap()),
        (
            "lloyd linear init",
            KMeansQuantizer::lloyd(16, KMeansInit::Linear).unwrap(),
        ),
    ]
    .into_iter()
    .map(|(name, q)| {
        let mut out = None;
        let times = repeat(opts.repeats, || {
            timed(|| out = Some(q.quantize(&w, &ctx).unwrap()))
        });
        let back = out.unwrap().dequantize::<f32>();
        let sse: f64 = w
            .iter()
            .zip(back.iter())
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        Line {
            op: "kmeans_share",
            size: format!("1048576 values k=16 {name}"),
            times,
            quality: sse,
            metric: "SSE",
        }
    })
    .collect()
}

/// A random `n × n` orthonormal basis (the Q of a Gaussian matrix's QR), in f64.
fn orthonormal(n: usize, seed: u64) -> ndarray::Array2<f64> {
    let g = normal(&[n, n], 1.0, seed).mapv(f64::from);
    let g = faer::Mat::<f64>::from_fn(n, n, |i, j| g[[i, j]]);
    let q = g.qr().compute_Q();
    ndarray::Array2::from_shape_fn((n, n), |(i, j)| q[(i, j)])
}

/// Writes `w` as `<dir>/<op>.npy` (format 1.0, little-endian f32, C order) when
/// `--save-inputs` asks for it.
fn save_input(opts: &Opts, op: &str, w: &ArrayD<f32>) {
    let Some(dir) = &opts.save_inputs else { return };
    let dims: Vec<String> = w.shape().iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in w.iter() {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(dir.join(format!("{op}.npy")), bytes))
        .unwrap_or_else(|e| {
            eprintln!("cannot write {op}.npy into {}: {e}", dir.display());
            std::process::exit(1)
        });
}

/// `‖W − Ŵ‖_F / ‖W‖_F` in f64.
fn factorization_error(w: &ArrayD<f32>, f: &slimnn::lowrank::Factorization) -> f64 {
    relative_error(w, &f.reconstruct())
}

/// Rank-128 factorization of a 2048×2048 matrix with singular values exp(−i/100) plus
/// N(0, 1e−3²) noise: the exact truncated SVD and the randomized one.
fn svd_trunc(opts: &Opts) -> Vec<Line> {
    let n = 2048;
    let u = orthonormal(n, 70);
    let v = orthonormal(n, 71);
    let scaled = &u * &ndarray::Array1::from_shape_fn(n, |i| (-(i as f64) / 100.0).exp());
    let w = (scaled.dot(&v.t()).mapv(|x| x as f32).into_dyn()) + normal(&[n, n], 1e-3, 72);
    save_input(opts, "svd_trunc", &w);
    let ctx = LowRankContext::new();
    let methods: [(&str, Box<dyn LowRank>); 2] = [
        (
            "truncated SVD",
            Box::new(TruncatedSvd::new(Rank::Fixed(128)).unwrap()),
        ),
        (
            "randomized SVD",
            Box::new(RandomizedSvd::new(Rank::Fixed(128)).unwrap()),
        ),
    ];
    methods
        .into_iter()
        .map(|(name, method)| {
            let mut out = None;
            let times = repeat(opts.repeats, || {
                timed(|| out = Some(method.factorize(&w, &ctx).unwrap()))
            });
            Line {
                op: "svd_trunc",
                size: format!("{n}x{n} rank 128 {name}"),
                times,
                quality: factorization_error(&w, &out.unwrap()),
                metric: "relative Frobenius error",
            }
        })
        .collect()
}

/// A [256, 256, 3, 3] conv weight `G ×₀ U₀ ×₁ U₁ + N(0, 1e−4²)`, `G` N(0, 1), `U₀`, `U₁`
/// orthonormal with column `i` scaled by exp(−i/16): both channel modes decay.
fn decaying_conv_weight() -> ArrayD<f32> {
    let decaying = |seed| {
        &orthonormal(256, seed)
            * &ndarray::Array1::from_shape_fn(256, |i| (-(i as f64) / 16.0).exp())
    };
    let (u0, u1) = (decaying(80), decaying(81));
    let g = normal(&[256, 256 * 9], 1.0, 82)
        .mapv(f64::from)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    // (U₀ G) as [256, 256, 9], then ×₁ U₁ on the input mode.
    let a = u0.dot(&g).into_shape_with_order((256, 256, 9)).unwrap();
    let mut w = ndarray::Array3::<f64>::zeros((256, 256, 9));
    for (o, slice) in a.outer_iter().enumerate() {
        w.index_axis_mut(ndarray::Axis(0), o)
            .assign(&u1.dot(&slice));
    }
    w.mapv(|x| x as f32)
        .into_shape_with_order(IxDyn(&[256, 256, 3, 3]))
        .unwrap()
        + normal(&[256, 256, 3, 3], 1e-4, 83)
}

/// Tucker-2 of [`decaying_conv_weight`] with ranks [64, 64].
fn tucker2(opts: &Opts) -> Vec<Line> {
    let w = decaying_conv_weight();
    save_input(opts, "tucker2", &w);
    let method = Tucker2::new(Rank::Fixed(64), Rank::Fixed(64)).unwrap();
    let ctx = LowRankContext::new();
    let mut out = None;
    let times = repeat(opts.repeats, || {
        timed(|| out = Some(method.factorize(&w, &ctx).unwrap()))
    });
    vec![Line {
        op: "tucker2",
        size: "256x256x3x3 ranks [64, 64]".into(),
        times,
        quality: factorization_error(&w, &out.unwrap()),
        metric: "relative Frobenius error",
    }]
}

/// A 4096×4096 Linear of rank 256 at batch 64: the dense product (the yardstick) and the
/// factorized layer's forward pass.
fn lowrank_linear(opts: &Opts) -> Vec<Line> {
    let (n, r, batch) = (4096, 256, 64);
    let std = (0.02 / (r as f32).sqrt()).sqrt();
    let a = normal(&[n, r], std, 90)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let b = normal(&[r, n], std, 91)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let w = a.dot(&b);
    let f = slimnn::lowrank::Factorization::new(&[n, n], slimnn::lowrank::Factors::Linear { a, b })
        .unwrap();
    let x = normal(&[batch, n], 1.0, 92)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let mut dense = ndarray::Array2::<f32>::zeros((batch, n));
    let dense_times = repeat(opts.repeats, || {
        timed(|| ndarray::linalg::general_mat_mul(1.0, &x, &w.t(), 0.0, &mut dense))
    });
    let exact = x.mapv(f64::from).dot(&w.mapv(f64::from).t());
    let max_diff = |y: &ndarray::Array2<f32>, reference: &ndarray::Array2<f64>| {
        y.iter()
            .zip(reference)
            .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()))
    };
    let x = x.into_dyn();
    let mut y = ndarray::Array2::<f32>::zeros((0, 0));
    let factorized_times = repeat(opts.repeats, || {
        timed(|| y = f.forward(&x).unwrap().into_dimensionality().unwrap())
    });
    let size = format!("{n}x{n} rank {r} @ batch {batch}");
    vec![
        Line {
            op: "lowrank_linear",
            size: format!("{size} dense"),
            times: dense_times,
            quality: max_diff(&dense, &exact),
            metric: "max abs difference to f64",
        },
        Line {
            op: "lowrank_linear",
            size: format!("{size} factorized"),
            times: factorized_times,
            quality: max_diff(&y, &dense.mapv(f64::from)),
            metric: "max abs difference",
        },
    ]
}

/// The Tucker-2 factorization (ranks [64, 64]) of [`decaying_conv_weight`] on a batch of
/// 8 feature maps 256×14×14 (3×3, padding 1): the dense convolution with the
/// reconstructed weight (im2col + GEMM, the yardstick) and the three factorized ones.
fn lowrank_conv(opts: &Opts) -> Vec<Line> {
    let w = decaying_conv_weight();
    let f = Tucker2::new(Rank::Fixed(64), Rank::Fixed(64))
        .unwrap()
        .factorize(
            &w,
            &LowRankContext::new().with_conv(ConvSpec::new().with_padding(1, 1)),
        )
        .unwrap();
    let dense_w = f
        .reconstruct()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap();
    let x = normal(&[8, 256, 14, 14], 1.0, 93)
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap();
    let spec = ConvSpec::new().with_padding(1, 1);
    let mut dense = ndarray::Array4::<f32>::zeros((0, 0, 0, 0));
    let dense_times = repeat(opts.repeats, || {
        timed(|| dense = conv2d(&x, &dense_w, None, spec).unwrap())
    });
    let x = x.into_dyn();
    let mut y = ArrayD::<f32>::zeros(IxDyn(&[0]));
    let factorized_times = repeat(opts.repeats, || timed(|| y = f.forward(&x).unwrap()));
    let scale = dense.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    let diff = y
        .iter()
        .zip(dense.iter())
        .fold(0.0f64, |m, (&a, &b)| m.max((a - b).abs() as f64));
    let size = "256x256x3x3 r[64,64] @ 8x256x14x14";
    vec![
        Line {
            op: "lowrank_conv",
            size: format!("{size} dense"),
            times: dense_times,
            quality: f.dense_flops() as f64,
            metric: "MACs per output position",
        },
        Line {
            op: "lowrank_conv",
            size: format!("{size} factorized"),
            times: factorized_times,
            quality: diff / scale,
            metric: "max abs difference / max |output|",
        },
    ]
}

/// `y = x·wᵀ` in f64, the reference of the product ops.
fn exact_product(x: &ndarray::Array2<f32>, w: &ndarray::Array2<f32>) -> ndarray::Array2<f64> {
    x.mapv(f64::from).dot(&w.mapv(f64::from).t())
}

fn max_abs_diff(y: &[f32], reference: &ndarray::Array2<f64>) -> f64 {
    y.iter()
        .zip(reference.iter())
        .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()))
}

/// `y = x·wᵀ` by faer's own matrix product and its own threads, as a user of faer would
/// call it (the `dense gemm` lines: a general GEMM at every batch, beside the crate's
/// `dense_matmul`).
fn faer_gemm(x: &ndarray::Array2<f32>, w: &ndarray::Array2<f32>, y: &mut ndarray::Array2<f32>) {
    let (m, k, n) = (x.nrows(), x.ncols(), w.nrows());
    let a = faer::MatRef::from_row_major_slice(x.as_slice().unwrap(), m, k);
    let b = faer::MatRef::from_row_major_slice(w.as_slice().unwrap(), n, k).transpose();
    let c = faer::MatMut::from_row_major_slice_mut(y.as_slice_mut().unwrap(), m, n);
    faer::linalg::matmul::matmul(c, faer::Accum::Replace, a, b, 1.0, faer::Par::rayon(0));
}

/// One compressed product against the dense f32 product of the same weights, at batch 1
/// and 64: three lines per batch (`dense gemm`: faer's GEMM as is; `dense_matmul`: the
/// crate's dense yardstick; then `label`), from the same run.
fn product_lines(
    opts: &Opts,
    op: &'static str,
    label: &str,
    w: &ndarray::Array2<f32>,
    run: &dyn Fn(&[f32], &mut [f32]),
) -> Vec<Line> {
    let n = w.nrows();
    let mut lines = Vec::new();
    for batch in [1usize, 64] {
        let x = normal(&[batch, w.ncols()], 1.0, 100 + batch as u64)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let exact = exact_product(&x, w);
        let mut dense = ndarray::Array2::<f32>::zeros((batch, n));
        let dense_times = repeat(opts.repeats, || timed(|| faer_gemm(&x, w, &mut dense)));
        let wv = w.as_slice().unwrap();
        let mut rows = ndarray::Array2::<f32>::zeros((batch, n));
        let rows_times = repeat(opts.repeats, || {
            timed(|| rows = sparse_ops::dense_matmul([n, w.ncols()], wv, &x).unwrap())
        });
        let xs = x.as_slice().unwrap();
        let mut y = vec![0f32; batch * n];
        let times = repeat(opts.repeats, || timed(|| run(xs, &mut y)));
        let size = format!("{n}x{} @ batch {batch}", w.ncols());
        lines.push(Line {
            op,
            size: format!("{size} dense gemm"),
            times: dense_times,
            quality: max_abs_diff(dense.as_slice().unwrap(), &exact),
            metric: "max abs difference to f64",
        });
        lines.push(Line {
            op,
            size: format!("{size} dense_matmul"),
            times: rows_times,
            quality: max_abs_diff(rows.as_slice().unwrap(), &exact),
            metric: "max abs difference to f64",
        });
        lines.push(Line {
            op,
            size: format!("{size} {label}"),
            times,
            quality: max_abs_diff(&y, &exact),
            metric: "max abs difference to f64",
        });
    }
    lines
}

/// A 4096×4096 weight N(0, 0.02²) at 90% random unstructured sparsity as CSR (built
/// once, untimed), against the dense product of the same weights.
fn spmm(opts: &Opts) -> Vec<Line> {
    let n = 4096;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(110);
    let keep = Uniform::new(0.0f32, 1.0).unwrap();
    let w = normal(&[n, n], 0.02, 111)
        .mapv(|v| if keep.sample(&mut rng) < 0.1 { v } else { 0.0 })
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let csr = Csr::from_dense(w.as_slice().unwrap(), [n, n], None).unwrap();
    let mut lines = product_lines(opts, "spmm", "CSR 90% sparse", &w, &|x, y| {
        sparse_ops::csr_matmul_into([n, n], csr.row_ptr(), csr.col_idx(), csr.values(), x, y)
            .unwrap()
    });
    let narrow: Vec<u16> = csr.col_idx().iter().map(|&c| c as u16).collect();
    lines.extend(product_lines(
        opts,
        "spmm",
        "CSR 90% sparse, 16-bit columns",
        &w,
        &|x, y| {
            sparse_ops::csr16_matmul_into([n, n], csr.row_ptr(), &narrow, csr.values(), x, y)
                .unwrap()
        },
    ));
    lines
}

/// A 4096×4096 weight N(0, 0.02²) with random 2:4 sparsity, against the dense product.
fn nm_matmul(opts: &Opts) -> Vec<Line> {
    let n = 4096;
    let w = normal(&[n, n], 0.02, 120);
    let mask = NmPruner::magnitude(2, 4)
        .unwrap()
        .mask(&w, &PruneContext::new())
        .unwrap();
    let mut w = w.into_dimensionality::<ndarray::Ix2>().unwrap();
    mask.apply(&mut w).unwrap();
    let nm = NmSparse::from_dense(w.as_slice().unwrap(), [n, n], Some(&mask), 2, 4).unwrap();
    product_lines(opts, "nm_matmul", "2:4", &w, &|x, y| {
        sparse_ops::nm_matmul_into([n, n], 2, 4, nm.values(), nm.indices(), x, y).unwrap()
    })
}

/// A 4096×4096 weight of 16 shared values (4-bit k-means codes of N(0, 0.02²) weights,
/// packed two per byte), against the dense product of the decoded weights.
fn codebook_matmul(opts: &Opts) -> Vec<Line> {
    let n = 4096;
    let w = normal(&[n, n], 0.02, 130);
    let q = KMeansQuantizer::lloyd(16, KMeansInit::Linear)
        .unwrap()
        .quantize(&w, &QuantContext::new())
        .unwrap();
    let codebook = q.table().unwrap().to_vec();
    let dense = q
        .dequantize::<f32>()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let bytes = q.codes().bytes().to_vec();
    product_lines(
        opts,
        "codebook_matmul",
        "16 shared values, 4-bit codes",
        &dense,
        &|x, y| {
            sparse_ops::packed_codebook_matmul_into([n, n], &bytes, 4, &codebook, x, y).unwrap()
        },
    )
}

/// Canonical Huffman coding of 4,194,304 symbols drawn from a 32-symbol Laplace-like
/// distribution (P(k) ∝ exp(−|k − 15.5|/3)): encode, then decode; quality is bits per
/// symbol, table included, beside the entropy.
fn huffman(opts: &Opts) -> Vec<Line> {
    let n = 4 << 20;
    let weights: Vec<f64> = (0..32)
        .map(|k| (-(k as f64 - 15.5).abs() / 3.0).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(140);
    let u = Uniform::new(0.0f64, 1.0).unwrap();
    let symbols: Vec<u16> = (0..n)
        .map(|_| {
            let mut t = u.sample(&mut rng) * total;
            let mut k = 0;
            while k < 31 && t >= weights[k] {
                t -= weights[k];
                k += 1;
            }
            k as u16
        })
        .collect();
    let counts = symbol_counts(&symbols);
    let entropy = entropy_bits(&counts) / n as f64;
    let mut code = None;
    let mut stream = None;
    let encode_times = repeat(opts.repeats, || {
        timed(|| {
            let c = HuffmanCode::from_counts(&counts).unwrap();
            stream = Some(c.encode(&symbols).unwrap());
            code = Some(c);
        })
    });
    let (code, stream) = (code.unwrap(), stream.unwrap());
    let mut decoded = Vec::new();
    let decode_times = repeat(opts.repeats, || {
        timed(|| decoded = code.decode(&stream, n).unwrap())
    });
    assert_eq!(
        decoded, symbols,
        "Huffman decoding must give the symbols back"
    );
    let bits = (code.storage_bits() + stream.storage_bits()) as f64 / n as f64;
    let size = format!("{n} symbols of 32 (entropy {entropy:.4} bits)");
    vec![
        Line {
            op: "huffman",
            size: format!("{size} encode"),
            times: encode_times,
            quality: bits,
            metric: "bits per symbol, table included",
        },
        Line {
            op: "huffman",
            size: format!("{size} decode"),
            times: decode_times,
            quality: bits,
            metric: "bits per symbol, table included",
        },
    ]
}

/// One SGD step (forward, backpropagation, update with momentum and weight decay) of
/// LeNet-300-100 and of LeNet-5 on a batch of 64 MNIST-shaped images.
fn train_step(opts: &Opts) -> Vec<Line> {
    let x = Array::from_shape_fn((64, 784), |(i, j)| {
        ((i * 784 + j) as f32 * 0.37).sin().abs()
    });
    let y: ndarray::Array1<u8> = (0..64).map(|i| (i % 10) as u8).collect();
    type Build = fn(&mut slimnn::Model, u64) -> slimnn::Result<Network>;
    let builders: [(&str, Build); 2] = [
        ("LeNet-300-100", Network::lenet_300_100),
        ("LeNet-5", Network::lenet5),
    ];
    builders
        .into_iter()
        .map(|(name, build)| {
            let mut model = slimnn::Model::new();
            let net = build(&mut model, 1).unwrap();
            let mut sgd = Sgd::new(0.01, 0.9, 5e-4).unwrap();
            let mut loss = 0.0;
            let times = repeat(opts.repeats, || {
                timed(|| {
                    let (l, grads) = net.train_gradients(&model, x.view(), y.view(), 1).unwrap();
                    sgd.step(&mut model, &grads).unwrap();
                    loss = l;
                })
            });
            Line {
                op: "train_step",
                size: format!("{name} @ batch 64"),
                times,
                quality: loss as f64,
                metric: "training loss",
            }
        })
        .collect()
}

/// `conv2d` in f64 (im2col and a product per image and group), stride 1: the reference
/// of `depthwise_conv`.
fn conv_f64(
    x: &ndarray::Array4<f32>,
    w: &ndarray::Array4<f32>,
    groups: usize,
    pad: usize,
) -> ndarray::Array4<f64> {
    let (n, _, h, wd) = x.dim();
    let (o, cg, kh, kw) = w.dim();
    let (oh, ow) = (h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1);
    let og = o / groups;
    let wm = w
        .mapv(f64::from)
        .into_shape_with_order((o, cg * kh * kw))
        .unwrap();
    let mut y = ndarray::Array4::<f64>::zeros((n, o, oh, ow));
    for b in 0..n {
        for g in 0..groups {
            let cols = ndarray::Array2::from_shape_fn((cg * kh * kw, oh * ow), |(r, p)| {
                let (ci, ki, kj) = (r / (kh * kw), r / kw % kh, r % kw);
                let (yi, xj) = (
                    (p / ow + ki) as isize - pad as isize,
                    (p % ow + kj) as isize - pad as isize,
                );
                if yi < 0 || xj < 0 || yi as usize >= h || xj as usize >= wd {
                    0.0
                } else {
                    f64::from(x[[b, g * cg + ci, yi as usize, xj as usize]])
                }
            });
            let prod = wm.slice(ndarray::s![g * og..(g + 1) * og, ..]).dot(&cols);
            y.slice_mut(ndarray::s![b, g * og..(g + 1) * og, .., ..])
                .assign(&prod.into_shape_with_order((og, oh, ow)).unwrap());
        }
    }
    y
}

fn max_abs_diff4(y: &ndarray::Array4<f32>, reference: &ndarray::Array4<f64>) -> f64 {
    y.iter()
        .zip(reference.iter())
        .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()))
}

/// A 3×3 depthwise convolution (padding 1) and the depthwise-separable block (3×3
/// depthwise, then 1×1 pointwise C→C) against the dense 3×3 convolution C→C they
/// replace (the yardstick, im2col + GEMM), at batch 1 and 8, for 256 channels of 28×28
/// and 32 channels of 56×56.
fn depthwise_conv(opts: &Opts) -> Vec<Line> {
    let mut lines = Vec::new();
    let spec = ConvSpec::new().with_padding(1, 1);
    for (c, side) in [(256usize, 28usize), (32, 56)] {
        let as4 = |a: ArrayD<f32>| a.into_dimensionality::<ndarray::Ix4>().unwrap();
        let dense_w = as4(normal(&[c, c, 3, 3], (1.0 / (9.0 * c as f32)).sqrt(), 150));
        let dw_w = as4(normal(&[c, 1, 3, 3], 1.0 / 3.0, 151));
        let pw_w = as4(normal(&[c, c, 1, 1], (1.0 / c as f32).sqrt(), 152));
        let dw_spec = spec.with_groups(c);
        for batch in [1usize, 8] {
            let x = as4(normal(&[batch, c, side, side], 1.0, 153 + batch as u64));
            let size = format!("{c}x{side}x{side} 3x3 @ batch {batch}");
            let mut y = ndarray::Array4::<f32>::zeros((0, 0, 0, 0));
            let times = repeat(opts.repeats, || {
                timed(|| y = conv2d(&x, &dense_w, None, spec).unwrap())
            });
            lines.push(Line {
                op: "depthwise_conv",
                size: format!("{size} dense conv {c}->{c}"),
                times,
                quality: max_abs_diff4(&y, &conv_f64(&x, &dense_w, 1, 1)),
                metric: "max abs difference to f64",
            });
            let times = repeat(opts.repeats, || {
                timed(|| y = conv2d(&x, &dw_w, None, dw_spec).unwrap())
            });
            let dw_exact = conv_f64(&x, &dw_w, c, 1);
            lines.push(Line {
                op: "depthwise_conv",
                size: format!("{size} depthwise"),
                times,
                quality: max_abs_diff4(&y, &dw_exact),
                metric: "max abs difference to f64",
            });
            let times = repeat(opts.repeats, || {
                timed(|| {
                    let h = conv2d(&x, &dw_w, None, dw_spec).unwrap();
                    y = conv2d(&h, &pw_w, None, ConvSpec::new()).unwrap();
                })
            });
            let sep_exact = conv_f64(&dw_exact.mapv(|v| v as f32), &pw_w, 1, 0);
            lines.push(Line {
                op: "depthwise_conv",
                size: format!("{size} separable dw3x3+pw1x1 {c}->{c}"),
                times,
                quality: max_abs_diff4(&y, &sep_exact),
                metric: "max abs difference to f64",
            });
        }
    }
    lines
}

/// The depthwise-separable block of a compact network (3×3 depthwise, padding 1, then
/// 1×1 pointwise C→O) against the dense 3×3 convolution C→O it replaces (the
/// yardstick), forward, at batch 1, 64 and 256: 32→64 channels on 28×28 and 64→128 on
/// 14×14.
fn dwsep_block(opts: &Opts) -> Vec<Line> {
    let mut lines = Vec::new();
    let spec = ConvSpec::new().with_padding(1, 1);
    let as4 = |a: ArrayD<f32>| a.into_dimensionality::<ndarray::Ix4>().unwrap();
    for (c, o, side) in [(32usize, 64usize, 28usize), (64, 128, 14)] {
        let dense_w = as4(normal(&[o, c, 3, 3], (1.0 / (9.0 * c as f32)).sqrt(), 160));
        let dw_w = as4(normal(&[c, 1, 3, 3], 1.0 / 3.0, 161));
        let pw_w = as4(normal(&[o, c, 1, 1], (1.0 / c as f32).sqrt(), 162));
        let dw_spec = spec.with_groups(c);
        for batch in [1usize, 64, 256] {
            let x = as4(normal(&[batch, c, side, side], 1.0, 163 + batch as u64));
            let size = format!("{c}->{o} {side}x{side} 3x3 @ batch {batch}");
            let mut y = ndarray::Array4::<f32>::zeros((0, 0, 0, 0));
            let times = repeat(opts.repeats, || {
                timed(|| y = conv2d(&x, &dense_w, None, spec).unwrap())
            });
            lines.push(Line {
                op: "dwsep_block",
                size: format!("{size} dense conv"),
                times,
                quality: max_abs_diff4(&y, &conv_f64(&x, &dense_w, 1, 1)),
                metric: "max abs difference to f64",
            });
            let times = repeat(opts.repeats, || {
                timed(|| {
                    let h = conv2d(&x, &dw_w, None, dw_spec).unwrap();
                    y = conv2d(&h, &pw_w, None, ConvSpec::new()).unwrap();
                })
            });
            let dw_exact = conv_f64(&x, &dw_w, c, 1).mapv(|v| v as f32);
            lines.push(Line {
                op: "dwsep_block",
                size: format!("{size} separable dw3x3+pw1x1"),
                times,
                quality: max_abs_diff4(&y, &conv_f64(&dw_exact, &pw_w, 1, 0)),
                metric: "max abs difference to f64",
            });
        }
    }
    lines
}

/// The layer of the `gptq` and `sparsegpt` ops: W 4096×4096 N(0, 0.02²), calibration
/// inputs X 2,048×4096 N(0, 1) with every 256th channel ×10, and H = XᵀX in f64.
fn calibrated_layer() -> (
    ndarray::Array2<f32>,
    ndarray::Array2<f32>,
    ndarray::Array2<f64>,
) {
    let w = normal(&[4096, 4096], 0.02, 150)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let mut x = normal(&[2048, 4096], 1.0, 151)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    for j in (0..4096).step_by(256) {
        x.column_mut(j).mapv_inplace(|v| v * 10.0);
    }
    let x64 = x.mapv(f64::from);
    let h = x64.t().dot(&x64);
    (w, x, h)
}

/// ‖(W − Ŵ)Xᵀ‖ / ‖W Xᵀ‖ on the calibration rows.
fn output_error(
    w: &ndarray::Array2<f32>,
    w_hat: &ndarray::Array2<f32>,
    x: &ndarray::Array2<f32>,
) -> f64 {
    let d = w - w_hat;
    let num = d
        .dot(&x.t())
        .iter()
        .map(|&v| (v as f64).powi(2))
        .sum::<f64>();
    let den = w
        .dot(&x.t())
        .iter()
        .map(|&v| (v as f64).powi(2))
        .sum::<f64>();
    (num / den).sqrt()
}

fn gptq(opts: &Opts) -> Vec<Line> {
    use slimnn::calib::gptq::Gptq;
    let (w, x, h) = calibrated_layer();
    let metric = "relative output error";
    let g = Gptq::new(4).unwrap().with_group(128).unwrap();
    let mut q = None;
    let times = repeat(opts.repeats, || {
        timed(|| q = Some(g.quantize(w.view(), h.view(), 2048).unwrap()))
    });
    let w_hat = q
        .unwrap()
        .dequantize::<f32>()
        .into_dimensionality()
        .unwrap();
    let gptq_err = output_error(&w, &w_hat, &x);
    let rtn =
        UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 128 }).unwrap();
    let wd = w.clone().into_dyn();
    let mut r = None;
    let rtn_times = repeat(opts.repeats, || {
        timed(|| r = Some(rtn.quantize(&wd, &QuantContext::new()).unwrap()))
    });
    let r_hat = r
        .unwrap()
        .dequantize::<f32>()
        .into_dimensionality()
        .unwrap();
    vec![
        Line {
            op: "gptq",
            size: "4096x4096 @ 2048 rows, 4-bit group 128".into(),
            times,
            quality: gptq_err,
            metric,
        },
        Line {
            op: "gptq",
            size: "4096x4096, 4-bit group 128 round-to-nearest".into(),
            times: rtn_times,
            quality: output_error(&w, &r_hat, &x),
            metric,
        },
    ]
}

fn sparsegpt(opts: &Opts) -> Vec<Line> {
    use slimnn::calib::sparsegpt::{SparseGpt, SparsityPattern};
    use slimnn::prune::UnstructuredPruner;
    let (w, x, h) = calibrated_layer();
    let metric = "relative output error";
    let s = SparseGpt::new(SparsityPattern::Unstructured(0.5)).unwrap();
    let mut p = None;
    let times = repeat(opts.repeats, || {
        timed(|| p = Some(s.prune(w.view(), h.view(), 2048).unwrap()))
    });
    let sgpt_err = output_error(&w, &p.unwrap().weights, &x);
    let norms = h.diag().mapv(|v| v.sqrt() as f32);
    let wd = w.clone().into_dyn();
    let mut lines = vec![Line {
        op: "sparsegpt",
        size: "4096x4096 @ 2048 rows, 50%".into(),
        times,
        quality: sgpt_err,
        metric,
    }];
    let pruners: [(&str, Box<dyn Pruner>); 2] = [
        (
            "magnitude",
            Box::new(UnstructuredPruner::magnitude(0.5).unwrap()),
        ),
        ("wanda", Box::new(UnstructuredPruner::wanda(0.5).unwrap())),
    ];
    for (name, pruner) in pruners {
        let ctx = PruneContext::new().with_activation_norms(norms.view());
        let mut m = None;
        let t = repeat(opts.repeats, || {
            timed(|| m = Some(pruner.mask(&wd, &ctx).unwrap()))
        });
        let mut pruned = wd.clone();
        m.unwrap().apply(&mut pruned).unwrap();
        let pruned = pruned.into_dimensionality().unwrap();
        lines.push(Line {
            op: "sparsegpt",
            size: format!("4096x4096, 50% {name}"),
            times: t,
            quality: output_error(&w, &pruned, &x),
            metric,
        });
    }
    lines
}

/// f16/bf16 ↔ f32 of 4096×4096 values with slimnn's kernels; quality: elements whose bits
/// differ from the `half` crate's conversion (0 expected).
fn half_convert(opts: &Opts) -> Vec<Line> {
    use slimnn::half::{bf16, f16};
    let src = normal(&[4096, 4096], 1.0, 40);
    let src = src.as_slice().unwrap();
    let n = src.len();
    let mut lines = Vec::new();
    let mut wide = vec![0f32; n];
    let mut b = vec![bf16::ZERO; n];
    let times = repeat(opts.repeats, || {
        timed(|| slimnn::tensor::narrow(src, &mut b).unwrap())
    });
    let bad = src
        .iter()
        .zip(&b)
        .filter(|(x, y)| bf16::from_f32(**x).to_bits() != y.to_bits())
        .count();
    lines.push(("4096x4096 f32->bf16", times, bad));
    let times = repeat(opts.repeats, || {
        timed(|| slimnn::tensor::widen(&b, &mut wide).unwrap())
    });
    let bad = b
        .iter()
        .zip(&wide)
        .filter(|(x, y)| x.to_f32().to_bits() != y.to_bits())
        .count();
    lines.push(("4096x4096 bf16->f32", times, bad));
    let mut h = vec![f16::ZERO; n];
    let times = repeat(opts.repeats, || {
        timed(|| slimnn::tensor::narrow(src, &mut h).unwrap())
    });
    let bad = src
        .iter()
        .zip(&h)
        .filter(|(x, y)| f16::from_f32(**x).to_bits() != y.to_bits())
        .count();
    lines.push(("4096x4096 f32->f16", times, bad));
    let times = repeat(opts.repeats, || {
        timed(|| slimnn::tensor::widen(&h, &mut wide).unwrap())
    });
    let bad = h
        .iter()
        .zip(&wide)
        .filter(|(x, y)| x.to_f32().to_bits() != y.to_bits())
        .count();
    lines.push(("4096x4096 f16->f32", times, bad));
    lines
        .into_iter()
        .map(|(size, times, bad)| Line {
            op: "half_convert",
            size: size.into(),
            times,
            quality: bad as f64,
            metric: "elements differing from the half crate",
        })
        .collect()
}

/// Magnitude pruning to 90% of a 4096×4096 bf16 tensor read in place, and the same
/// values as f32 through the f32 path (the yardstick); quality: achieved sparsity.
fn prune_half(opts: &Opts) -> Vec<Line> {
    use slimnn::half::bf16;
    use slimnn::prune::{HalfPruner, MagnitudePruner};
    let original = normal(&[4096, 4096], 0.02, 41);
    let original_b: Vec<bf16> = original.iter().map(|&x| bf16::from_f32(x)).collect();
    let original_w: Vec<f32> = original_b.iter().map(|x| x.to_f32()).collect();
    let pruner = MagnitudePruner::magnitude(0.9).unwrap();
    let ctx = PruneContext::new();
    let mut b = original_b.clone();
    let mut sparsity = 0.0;
    let times = repeat(opts.repeats, || {
        b.copy_from_slice(&original_b);
        timed(|| {
            sparsity = pruner
                .prune_half_slice(&mut b, &[4096, 4096], &ctx)
                .unwrap()
                .sparsity()
        })
    });
    let mut w = original_w.clone();
    let mut sparsity_f32 = 0.0;
    let times_f32 = repeat(opts.repeats, || {
        w.copy_from_slice(&original_w);
        timed(|| {
            sparsity_f32 = pruner
                .prune_slice(&mut w, &[4096, 4096], &ctx)
                .unwrap()
                .sparsity()
        })
    });
    vec![
        Line {
            op: "prune_half",
            size: "4096x4096 bf16 in place".into(),
            times,
            quality: sparsity,
            metric: "sparsity",
        },
        Line {
            op: "prune_half",
            size: "4096x4096 f32 (yardstick)".into(),
            times: times_f32,
            quality: sparsity_f32,
            metric: "sparsity",
        },
    ]
}

/// The `int8_gemm` Linear's weights (4096×4096, N(0, 1/64²)) in three 4-bit forms: int4
/// affine groups of 128, llama.cpp's Q4_0 and a 16-entry k-means codebook; each against
/// the dense product of its decoded weights.
fn q4_matmul(opts: &Opts) -> Vec<Line> {
    use slimnn::quant::{Decoding, GgmlFormat, Levels, dequantize_ggml, quantize_ggml};
    let n = 4096;
    let w = normal(&[n, n], 1.0 / 64.0, 50);
    let square = |v: ArrayD<f32>| v.into_dimensionality::<ndarray::Ix2>().unwrap();
    let mut lines = Vec::new();

    let q = UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 128 })
        .unwrap()
        .quantize(&w, &QuantContext::new())
        .unwrap();
    let Decoding::Scalar {
        levels: Levels::Integers { min, .. },
        scales,
        zero_points,
        ..
    } = q.decoding()
    else {
        panic!("uniform 4-bit groups")
    };
    let zeros: Vec<f32> = zero_points.iter().map(|z| z - *min as f32).collect();
    let codes = q.codes().bytes();
    lines.extend(product_lines(
        opts,
        "q4_matmul",
        "int4 groups of 128",
        &square(q.dequantize::<f32>()),
        &|x, y| {
            sparse_ops::int4_matmul_into([n, n], codes, 128, scales, Some(&zeros), x, y).unwrap()
        },
    ));

    let flat = w.as_slice().unwrap();
    let blocks = quantize_ggml(flat, &[n, n], GgmlFormat::Q4_0).unwrap();
    let decoded = dequantize_ggml(&blocks, &[n, n], GgmlFormat::Q4_0).unwrap();
    lines.extend(product_lines(
        opts,
        "q4_matmul",
        "Q4_0",
        &ndarray::Array2::from_shape_vec((n, n), decoded).unwrap(),
        &|x, y| sparse_ops::q4_0_matmul_into([n, n], &blocks, x, y).unwrap(),
    ));

    let q = KMeansQuantizer::lloyd(16, KMeansInit::Linear)
        .unwrap()
        .quantize(&w, &QuantContext::new())
        .unwrap();
    let codebook = q.table().unwrap().to_vec();
    let bytes = q.codes().bytes();
    lines.extend(product_lines(
        opts,
        "q4_matmul",
        "16-entry codebook",
        &square(q.dequantize::<f32>()),
        &|x, y| sparse_ops::packed_codebook_matmul_into([n, n], bytes, 4, &codebook, x, y).unwrap(),
    ));
    lines
}
