//! Criterion benches of the low-rank family (smaller versions of `examples/perf.rs`'s
//! `svd_trunc`, `tucker2`, `lowrank_linear` and `lowrank_conv`).

use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, Normal};
use slimnn::lowrank::{LowRank, LowRankContext, RandomizedSvd, Rank, TruncatedSvd, Tucker2};
use slimnn::nn::{ConvSpec, conv2d};

fn normal(shape: &[usize], std: f32, seed: u64) -> ArrayD<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let d = Normal::new(0.0f32, std).unwrap();
    ArrayD::from_shape_simple_fn(IxDyn(shape), || d.sample(&mut rng))
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("lowrank");
    g.sample_size(10);
    let ctx = LowRankContext::new();

    let w = normal(&[1024, 1024], 0.02, 1);
    let truncated = TruncatedSvd::new(Rank::Fixed(64)).unwrap();
    g.bench_function("truncated SVD 1024x1024 rank 64", |b| {
        b.iter(|| truncated.factorize(&w, &ctx).unwrap())
    });
    let randomized = RandomizedSvd::new(Rank::Fixed(64)).unwrap();
    g.bench_function("randomized SVD 1024x1024 rank 64", |b| {
        b.iter(|| randomized.factorize(&w, &ctx).unwrap())
    });

    let conv = normal(&[128, 128, 3, 3], 0.02, 2);
    let tucker = Tucker2::new(Rank::Fixed(32), Rank::Fixed(32)).unwrap();
    g.bench_function("Tucker-2 128x128x3x3 ranks [32, 32]", |b| {
        b.iter(|| tucker.factorize(&conv, &ctx).unwrap())
    });

    let linear = truncated.factorize(&w, &ctx).unwrap();
    let dense_w = linear
        .reconstruct()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let x = normal(&[64, 1024], 1.0, 3);
    let x2 = x.view().into_dimensionality::<ndarray::Ix2>().unwrap();
    g.bench_function("Linear 1024x1024 @ batch 64, dense", |b| {
        b.iter(|| x2.dot(&dense_w.t()))
    });
    g.bench_function("Linear 1024x1024 rank 64 @ batch 64, factorized", |b| {
        b.iter(|| linear.forward(&x).unwrap())
    });

    let spec = ConvSpec::new().with_padding(1, 1);
    let factorized = tucker.factorize(&conv, &ctx.with_conv(spec)).unwrap();
    let dense_conv = factorized
        .reconstruct()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap();
    let maps = normal(&[4, 128, 14, 14], 1.0, 4);
    let maps4 = maps.view().into_dimensionality::<ndarray::Ix4>().unwrap();
    g.bench_function("Conv 128x128x3x3 @ 4x128x14x14, dense", |b| {
        b.iter(|| conv2d(&maps4, &dense_conv, None, spec).unwrap())
    });
    g.bench_function(
        "Conv 128x128x3x3 ranks [32, 32] @ 4x128x14x14, Tucker-2",
        |b| b.iter(|| factorized.forward(&maps).unwrap()),
    );
    g.finish();
}

criterion_group!(lowrank, benches);
criterion_main!(lowrank);
