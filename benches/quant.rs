//! Criterion benches of the quantization family (the same work as `examples/perf.rs`).

use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, Normal};
use slimnn::quant::{
    GgmlFormat, GgmlQuantizer, Granularity, KMeansInit, KMeansQuantizer, QuantContext,
    QuantizedLinear, Quantizer, Scheme, UniformQuantizer, group_matmul,
};

fn normal(shape: &[usize], std: f32, seed: u64) -> ArrayD<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let d = Normal::new(0.0f32, std).unwrap();
    ArrayD::from_shape_simple_fn(IxDyn(shape), || d.sample(&mut rng))
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("quant");
    g.sample_size(10);
    let ctx = QuantContext::new();
    let w = normal(&[4096, 4096], 0.02, 1);
    let mut out = vec![0f32; w.len()];
    let int8 =
        UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap();
    g.bench_function("int8 per channel, quantize + dequantize 4096x4096", |b| {
        b.iter(|| {
            int8.quantize(&w, &ctx)
                .unwrap()
                .dequantize_into(&mut out)
                .unwrap()
        })
    });
    let int4 =
        UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 128 }).unwrap();
    g.bench_function("int4 group 128, quantize + dequantize 4096x4096", |b| {
        b.iter(|| {
            int4.quantize(&w, &ctx)
                .unwrap()
                .dequantize_into(&mut out)
                .unwrap()
        })
    });
    let q4_0 = GgmlQuantizer::new(GgmlFormat::Q4_0);
    g.bench_function("Q4_0 quantize 4096x4096", |b| {
        b.iter(|| q4_0.quantize(&w, &ctx).unwrap())
    });

    let values = normal(&[1_048_576], 0.02, 2);
    let lloyd = KMeansQuantizer::lloyd(16, KMeansInit::Linear).unwrap();
    g.bench_function("k-means 16, Lloyd, 1M values", |b| {
        b.iter(|| lloyd.quantize(&values, &ctx).unwrap())
    });
    let optimal = KMeansQuantizer::optimal(16).unwrap();
    g.bench_function("k-means 16, optimal, 1M values", |b| {
        b.iter(|| optimal.quantize(&values, &ctx).unwrap())
    });

    let w2 = normal(&[4096, 4096], 1.0 / 64.0, 3)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let layer = QuantizedLinear::new(&w2, None).unwrap();
    let q4 = int4.quantize(&w2.view().into_dyn(), &ctx).unwrap();
    for batch in [1usize, 64] {
        let x = normal(&[batch, 4096], 1.0, 4)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        g.bench_function(format!("int8 Linear 4096x4096 @ batch {batch}"), |b| {
            b.iter(|| layer.forward(&x).unwrap())
        });
        g.bench_function(
            format!("4-bit group matmul 4096x4096 @ batch {batch}"),
            |b| b.iter(|| group_matmul(&x, &q4, None).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(quant, benches);
criterion_main!(quant);
