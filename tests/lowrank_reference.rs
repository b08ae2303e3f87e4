//! The low-rank family against independent references (`scripts/make_lowrank_fixtures.py`):
//! singular values and optimal truncation errors from NumPy, Tucker-2 and CP errors from
//! TensorLy, on the same matrices and tensors.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use serde_json::Value;
use slimnn::lowrank::{
    CpAls, Factorization, LayerSpectrum, LowRank, LowRankContext, RandomizedSvd, Rank,
    TruncatedSvd, Tucker2,
};

fn fixture(name: &str) -> (Vec<f64>, Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bytes = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
    let values = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let json =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    (values, json)
}

fn dims(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// `‖W − Ŵ‖ / ‖W‖` against the f64 original.
fn error_vs(original: &[f64], f: &Factorization) -> f64 {
    let rec = f.reconstruct();
    let (mut num, mut den) = (0.0, 0.0);
    for (&a, &b) in original.iter().zip(rec.iter()) {
        num += (a - b as f64).powi(2);
        den += a * a;
    }
    (num / den).sqrt()
}

#[test]
fn singular_values_optimal_errors_and_vbmf_ranks_match_the_references() {
    let (values, json) = fixture("lowrank_svd");
    let ctx = LowRankContext::new();
    for m in json["matrices"].as_array().unwrap() {
        let shape = dims(&m["shape"]);
        let offset = m["offset"].as_u64().unwrap() as usize;
        let data = &values[offset..offset + shape[0] * shape[1]];
        let w = ArrayD::from_shape_vec(IxDyn(&shape), data.iter().map(|&v| v as f32).collect())
            .unwrap();
        let expected = floats(&m["singular_values"]);
        let got = LayerSpectrum::linear(&w, &ctx).unwrap().singular_values;
        assert_eq!(got.len(), expected.len());
        // f32 weights and arithmetic: agreement to 1e-5 of the largest singular value.
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-5 * expected[0], "{g} vs {e}");
        }
        // EVBMF's rank at the global minimum of its free energy (0 becomes rank 1). The
        // reference code's local search can stop short of it ("decaying": 25, not 28).
        let vbmf = TruncatedSvd::new(Rank::Vbmf)
            .unwrap()
            .factorize(&w, &ctx)
            .unwrap();
        let want = m["evbmf"]["global"]["rank"].as_u64().unwrap() as usize;
        assert_eq!(vbmf.ranks(), vec![want.max(1)], "{}", m["name"]);
        for (r, best) in m["best_rank_relative_error"].as_object().unwrap() {
            let r: usize = r.parse().unwrap();
            let best = best.as_f64().unwrap();
            let f = TruncatedSvd::new(Rank::Fixed(r))
                .unwrap()
                .factorize(&w, &ctx)
                .unwrap();
            let reported = f.relative_error().unwrap();
            assert!(
                (reported - best).abs() <= 1e-5 + 1e-4 * best,
                "rank {r}: {reported} vs {best}"
            );
            assert!((error_vs(data, &f) - best).abs() <= 1e-5 + 1e-4 * best);
            let fast = RandomizedSvd::new(Rank::Fixed(r))
                .unwrap()
                .factorize(&w, &ctx.with_seed(1))
                .unwrap();
            assert!(
                error_vs(data, &fast) <= best * 1.05 + 1e-5,
                "randomized rank {r}: {} vs {best}",
                error_vs(data, &fast)
            );
        }
    }
}

#[test]
fn tucker2_is_never_worse_than_tensorly() {
    let (values, json) = fixture("lowrank_conv");
    let shape = dims(&json["shape"]);
    let w =
        ArrayD::from_shape_vec(IxDyn(&shape), values.iter().map(|&v| v as f32).collect()).unwrap();
    let ctx = LowRankContext::new();
    for case in json["tucker2"].as_array().unwrap() {
        let ranks = dims(&case["ranks"]);
        let tensorly = case["relative_error"].as_f64().unwrap();
        let f = Tucker2::new(Rank::Fixed(ranks[0]), Rank::Fixed(ranks[1]))
            .unwrap()
            .factorize(&w, &ctx)
            .unwrap();
        let ours = error_vs(&values, &f);
        assert!(
            ours <= tensorly + 1e-6,
            "ranks {ranks:?}: {ours} vs TensorLy {tensorly}"
        );
        assert!((f.relative_error().unwrap() - ours).abs() < 1e-5);
        // HOOI improves on the truncated HOSVD it starts from.
        let hosvd = Tucker2::new(Rank::Fixed(ranks[0]), Rank::Fixed(ranks[1]))
            .unwrap()
            .with_max_iter(0)
            .factorize(&w, &ctx)
            .unwrap();
        let start = case["hosvd_relative_error"].as_f64().unwrap();
        assert!((error_vs(&values, &hosvd) - start).abs() < 1e-5);
        assert!(ours <= error_vs(&values, &hosvd) + 1e-9);
    }
}

#[test]
fn cp_als_is_never_worse_than_tensorly_parafac() {
    let (values, json) = fixture("lowrank_conv");
    let shape = dims(&json["shape"]);
    let w =
        ArrayD::from_shape_vec(IxDyn(&shape), values.iter().map(|&v| v as f32).collect()).unwrap();
    for case in json["cp"].as_array().unwrap() {
        let rank = case["rank"].as_u64().unwrap() as usize;
        let tensorly = case["relative_error"].as_f64().unwrap();
        let f = CpAls::new(rank)
            .unwrap()
            .best_effort(true)
            .factorize(&w, &LowRankContext::new())
            .unwrap();
        let ours = error_vs(&values, &f);
        assert!(
            ours <= tensorly * 1.01,
            "rank {rank}: {ours} vs TensorLy {tensorly}"
        );
    }
}
