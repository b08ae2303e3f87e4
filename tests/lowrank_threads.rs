//! Low-rank results do not depend on the number of threads: the same factorization in
//! rayon pools of 1, 2 and 3 threads gives the same bits.

mod common;

use common::normal;
use slimnn::lowrank::{
    CpAls, Factorization, LowRank, LowRankContext, RandomizedSvd, Rank, TruncatedSvd, TtSvd,
    Tucker2,
};

fn bits(f: &Factorization) -> Vec<u32> {
    f.reconstruct().iter().map(|v| v.to_bits()).collect()
}

fn in_pool(threads: usize, run: impl FnOnce() -> Vec<u32> + Send) -> Vec<u32> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(run)
}

#[test]
fn factorizations_are_the_same_on_any_number_of_threads() {
    let linear = normal(&[384, 320], 3);
    let conv = normal(&[96, 64, 3, 3], 4);
    let ctx = LowRankContext::new().with_seed(11);
    let methods: Vec<(&str, Box<dyn LowRank + Sync>, _)> = vec![
        (
            "truncated",
            Box::new(TruncatedSvd::new(Rank::Fixed(24)).unwrap()),
            &linear,
        ),
        (
            "randomized",
            Box::new(RandomizedSvd::new(Rank::Fixed(24)).unwrap()),
            &linear,
        ),
        (
            "tt",
            Box::new(TtSvd::new(vec![16, 24], vec![16, 20], Rank::Fixed(8)).unwrap()),
            &linear,
        ),
        (
            "tucker",
            Box::new(Tucker2::new(Rank::Fixed(24), Rank::Fixed(16)).unwrap()),
            &conv,
        ),
        (
            "cp",
            Box::new(CpAls::new(16).unwrap().best_effort(true)),
            &conv,
        ),
    ];
    for (name, method, w) in &methods {
        let run = || bits(&method.factorize(w, &ctx).unwrap());
        let one = in_pool(1, run);
        for threads in [2, 3] {
            assert!(
                in_pool(threads, run) == one,
                "{name}: {threads} threads differ from 1"
            );
        }
    }
}
