//! slimnn's GPTQ and SparseGPT against the NumPy reference in `scripts/calib_reference.py`
//! (a port of the papers' reference implementations), on the committed fixture
//! `tests/fixtures/calib_solvers.json`: the same codes and masks.

use ndarray::Array2;
use serde_json::Value;
use slimnn::calib::gptq::Gptq;
use slimnn::calib::sparsegpt::{SparseGpt, SparsityPattern};
use slimnn::quant::{Decoding, Scheme};

fn load() -> (Value, Array2<f32>, Array2<f64>, u64) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/calib_solvers.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (out, n, rows) = (
        v["out"].as_u64().unwrap() as usize,
        v["in"].as_u64().unwrap() as usize,
        v["rows"].as_u64().unwrap() as usize,
    );
    let scale = v["w_scale"].as_f64().unwrap();
    let ints = |k: &str| {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let w = Array2::from_shape_vec(
        (out, n),
        ints("w_int")
            .iter()
            .map(|&i| (i as f64 / scale) as f32)
            .collect(),
    )
    .unwrap();
    let x = Array2::from_shape_vec((rows, n), ints("x_int").iter().map(|&i| i as f64).collect())
        .unwrap();
    let h = x.t().dot(&x); // exact: small integers
    (v, w, h, rows as u64)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn gptq_matches_the_numpy_reference() {
    let (v, w, h, rows) = load();
    let mut checked = 0;
    for case in v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["method"] == "gptq")
    {
        let bits = case["bits"].as_u64().unwrap() as u8;
        let mut g = Gptq::new(bits)
            .unwrap()
            .with_scheme(if case["affine"].as_bool().unwrap() {
                Scheme::Affine
            } else {
                Scheme::Symmetric
            })
            .with_act_order(case["act_order"].as_bool().unwrap())
            .with_dynamic_groups(!case["static_groups"].as_bool().unwrap())
            .with_block_size(case["block_size"].as_u64().unwrap() as usize)
            .unwrap();
        if let Some(size) = case["group"].as_u64() {
            g = g.with_group(size as usize).unwrap();
        }
        let q = g.quantize(w.view(), h.view(), rows).unwrap();
        let codes: Vec<u8> = q.codes().unpack();
        let expected: Vec<u8> = floats(&case["codes"]).iter().map(|&c| c as u8).collect();
        let differ = codes.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ,
            0,
            "{case_desc}: {differ} codes differ",
            case_desc = g.describe()
        );
        let Decoding::Scalar {
            scales,
            zero_points,
            ..
        } = q.decoding()
        else {
            panic!()
        };
        for (a, b) in scales.iter().zip(floats(&case["scales"])) {
            assert!(
                (*a as f64 - b).abs() <= 1e-6 * b.abs(),
                "{}: scale {a} vs {b}",
                g.describe()
            );
        }
        if case["affine"].as_bool().unwrap() {
            assert_eq!(
                zero_points.iter().map(|&z| z as f64).collect::<Vec<_>>(),
                floats(&case["zeros"])
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 9);
}

#[test]
fn sparsegpt_matches_the_numpy_reference() {
    let (v, w, h, rows) = load();
    let mut checked = 0;
    for case in v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["method"] == "sparsegpt")
    {
        let p = case["pattern"].as_array().unwrap();
        let pattern = match p[0].as_str().unwrap() {
            "unstructured" => SparsityPattern::Unstructured(p[1].as_f64().unwrap()),
            "per_row" => SparsityPattern::PerRow(p[1].as_f64().unwrap()),
            _ => SparsityPattern::NM {
                n: p[1].as_u64().unwrap() as usize,
                m: p[2].as_u64().unwrap() as usize,
            },
        };
        let s = SparseGpt::new(pattern)
            .unwrap()
            .with_block_size(case["block_size"].as_u64().unwrap() as usize)
            .unwrap();
        let r = s.prune(w.view(), h.view(), rows).unwrap();
        let keep: Vec<bool> = floats(&case["keep"]).iter().map(|&k| k != 0.0).collect();
        let got: Vec<bool> = (0..keep.len()).map(|i| r.mask.get(i)).collect();
        assert_eq!(got, keep, "{}", s.describe());
        for (a, b) in r.weights.iter().zip(floats(&case["weights"])) {
            assert!(
                (*a as f64 - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{}: weight {a} vs {b}",
                s.describe()
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 5);
}
