//! Criterion benches of the pruning family (the same work as `examples/perf.rs`).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, Normal};
use slimnn::prune::{
    ChannelCriterion, GlobalPruner, NmPruner, PruneContext, Pruner, StructuredPruner,
};

fn normal(shape: &[usize], std: f32, seed: u64) -> ArrayD<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let d = Normal::new(0.0f32, std).unwrap();
    ArrayD::from_shape_simple_fn(IxDyn(shape), || d.sample(&mut rng))
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("prune");
    g.sample_size(10);

    let big = normal(&[4096, 4096], 0.02, 1);
    let mut dst = big.clone();
    g.bench_function("memcpy 4096x4096", |b| b.iter(|| dst.assign(&big)));

    let tensors: Vec<ArrayD<f32>> = [[4096, 4096], [4096, 1024], [1024, 4096]]
        .iter()
        .enumerate()
        .map(|(i, s)| normal(s, 0.02, 10 + i as u64))
        .collect();
    let pruner = GlobalPruner::magnitude(0.9).unwrap();
    g.bench_function("prune_global 90% of 25.2M", |b| {
        b.iter_batched_ref(
            || tensors.clone(),
            |ts| {
                let mut views: Vec<_> = ts.iter_mut().map(|t| t.view_mut()).collect();
                pruner.prune(&mut views, &[]).unwrap()
            },
            BatchSize::LargeInput,
        )
    });

    let conv = normal(&[512, 256, 3, 3], 0.05, 20);
    let structured = StructuredPruner::new(ChannelCriterion::L2, 256usize).unwrap();
    g.bench_function("prune_structured 256 of 512 filters", |b| {
        b.iter(|| structured.mask(&conv, &PruneContext::new()).unwrap())
    });

    let nm = NmPruner::magnitude(2, 4).unwrap();
    let w = normal(&[1024, 1024], 0.02, 30);
    g.bench_function("nm 2:4 of 1024x1024", |b| {
        b.iter(|| nm.mask(&w, &PruneContext::new()).unwrap())
    });
    g.finish();
}

criterion_group!(prune, benches);
criterion_main!(prune);
