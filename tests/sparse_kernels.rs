//! The sparse and compressed products of `slimnn::sparse_ops` against a dense f64
//! product, and their answers to bad input. The proptests run the dispatched kernels;
//! `scalar_twins_match_f64_too` runs them again in a child process with
//! `SLIMNN_FORCE_SCALAR=1`, so the scalar twins meet the same reference.

use ndarray::Array2;
use proptest::prelude::*;
use slimnn::Error;
use slimnn::quant::PackedCodes;
use slimnn::sparse_ops::{
    codebook_matmul, codebook_matmul_into, csr_matmul, csr_matmul_into, dense_matmul, nm_matmul,
    nm_matmul_into, packed_codebook_matmul, packed_codebook_matmul_into,
};

/// Deterministic data from a seed (xorshift64).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect()
    }
}

/// Checks `y` `[batch, out]` against `x·wᵀ` in f64, each element within `1e-5·Σ|w||x|`.
fn assert_product(y: &Array2<f32>, w: &[f64], x: &[f32], out: usize, inputs: usize) {
    let batch = x.len() / inputs;
    assert_eq!(y.dim(), (batch, out));
    for b in 0..batch {
        for r in 0..out {
            let (mut exact, mut scale) = (0.0f64, 0.0f64);
            for c in 0..inputs {
                let t = w[r * inputs + c] * x[b * inputs + c] as f64;
                exact += t;
                scale += t.abs();
            }
            let got = y[[b, r]] as f64;
            assert!(
                (got - exact).abs() <= 1e-5 * scale + 1e-30,
                "y[{b}, {r}] = {got}, expected {exact}"
            );
        }
    }
}

/// Runs the `_into` form and checks it gives the same values as the array form.
fn assert_into_agrees(y: &Array2<f32>, run: impl FnOnce(&mut [f32]) -> slimnn::Result<()>) {
    let mut flat = vec![f32::NAN; y.len()];
    run(&mut flat).unwrap();
    assert_eq!(flat.as_slice(), y.as_slice().unwrap());
}

/// Shapes with `in` a multiple of `m`, neither a multiple of 8 in general.
fn case() -> impl Strategy<Value = (usize, usize, usize, usize, u64)> {
    (
        1usize..24,
        1usize..20,
        1usize..=8,
        1usize..=70,
        any::<u64>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// CSR with empty, full and partly filled rows (unsorted columns included).
    #[test]
    fn csr_matches_f64((out, groups, m, batch, seed) in case()) {
        let mut g = Gen(seed | 1);
        let inputs = groups * m;
        let mut w = vec![0.0f64; out * inputs];
        let (mut row_ptr, mut col_idx, mut values) = (vec![0u32], vec![], vec![]);
        for r in 0..out {
            let keep = [0, 100, g.below(100)][g.below(3)];
            let mut cols: Vec<u32> = (0..inputs as u32).filter(|_| g.below(100) < keep).collect();
            if g.below(2) == 0 {
                cols.reverse();
            }
            for c in cols {
                let v = g.values(1)[0];
                w[r * inputs + c as usize] = v as f64;
                col_idx.push(c);
                values.push(v);
            }
            row_ptr.push(col_idx.len() as u32);
        }
        let x = g.values(batch * inputs);
        let xa = Array2::from_shape_vec((batch, inputs), x.clone()).unwrap();
        let y = csr_matmul([out, inputs], &row_ptr, &col_idx, &values, &xa).unwrap();
        assert_product(&y, &w, &x, out, inputs);
        assert_into_agrees(&y, |y| csr_matmul_into([out, inputs], &row_ptr, &col_idx, &values, &x, y));
        // A non-contiguous view of the same activations.
        let xt = xa.t().to_owned();
        let yv = csr_matmul([out, inputs], &row_ptr, &col_idx, &values, &xt.t()).unwrap();
        prop_assert_eq!(yv, y);
    }

    /// N:M for every `1 ≤ n ≤ m ≤ 8`, 2:4 among them.
    #[test]
    fn nm_matches_f64((out, groups, m, batch, seed) in case(), two_four in any::<bool>()) {
        let mut g = Gen(seed | 1);
        let (n, m) = if two_four { (2, 4) } else { (1 + g.below(m), m) };
        let inputs = groups * m;
        let mut w = vec![0.0f64; out * inputs];
        let (mut values, mut idx) = (vec![], vec![]);
        for r in 0..out {
            for grp in 0..groups {
                // n distinct positions of the group.
                let mut pos: Vec<u8> = (0..m as u8).collect();
                for j in 0..n {
                    pos.swap(j, j + g.below(m - j));
                }
                for &p in &pos[..n] {
                    let v = g.values(1)[0];
                    w[r * inputs + grp * m + p as usize] = v as f64;
                    values.push(v);
                    idx.push(p);
                }
            }
        }
        let x = g.values(batch * inputs);
        let xa = Array2::from_shape_vec((batch, inputs), x.clone()).unwrap();
        let y = nm_matmul([out, inputs], n, m, &values, &idx, &xa).unwrap();
        assert_product(&y, &w, &x, out, inputs);
        assert_into_agrees(&y, |y| nm_matmul_into([out, inputs], n, m, &values, &idx, &x, y));
    }

    /// Weight sharing with codebooks of 1 to 256 entries, codes unpacked and packed at
    /// every width that holds them.
    #[test]
    fn codebook_matches_f64((out, groups, m, batch, seed) in case(), entries in 1usize..=256) {
        let mut g = Gen(seed | 1);
        let inputs = groups * m;
        let codebook = g.values(entries);
        let codes: Vec<u8> = (0..out * inputs).map(|_| g.below(entries) as u8).collect();
        let w: Vec<f64> = codes.iter().map(|&c| codebook[c as usize] as f64).collect();
        let x = g.values(batch * inputs);
        let xa = Array2::from_shape_vec((batch, inputs), x.clone()).unwrap();
        let y = codebook_matmul([out, inputs], &codes, &codebook, &xa).unwrap();
        assert_product(&y, &w, &x, out, inputs);
        assert_into_agrees(&y, |y| codebook_matmul_into([out, inputs], &codes, &codebook, &x, y));
        let min_bits = (usize::BITS - (entries - 1).leading_zeros()).max(1) as u8;
        for bits in min_bits..=8 {
            let packed = PackedCodes::pack(&codes, bits).unwrap();
            let yp = packed_codebook_matmul([out, inputs], packed.bytes(), bits, &codebook, &xa).unwrap();
            // 4-bit codes on rows of whole blocks of 32 take the 4-bit kernel, which sums
            // in its own order: each width is checked against f64, not against the others.
            assert_product(&yp, &w, &x, out, inputs);
            assert_into_agrees(&yp, |y| {
                packed_codebook_matmul_into([out, inputs], packed.bytes(), bits, &codebook, &x, y)
            });
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The dense yardstick, on both of its paths (row kernels below batch 8, a general
    /// matrix product from 8 on).
    #[test]
    fn dense_matches_f64((out, groups, m, batch, seed) in case()) {
        let mut g = Gen(seed | 1);
        let inputs = groups * m;
        let w = g.values(out * inputs);
        let x = g.values(batch * inputs);
        let xa = Array2::from_shape_vec((batch, inputs), x.clone()).unwrap();
        let y = dense_matmul([out, inputs], &w, &xa).unwrap();
        let wd: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        assert_product(&y, &wd, &x, out, inputs);
    }
}

#[test]
fn dense_rejects_bad_shapes() {
    let x = ones(1, 3);
    assert!(matches!(
        dense_matmul([0, 3], &[], &x),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        dense_matmul([2, 3], &[1.0; 5], &x),
        Err(Error::BadShape { .. })
    ));
    for batch in [1, 9] {
        assert!(matches!(
            dense_matmul([2, 4], &[1.0; 8], &ones(batch, 3)),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}

/// Reruns this file's proptests in a child process with the scalar twins forced.
#[test]
fn scalar_twins_match_f64_too() {
    if std::env::var_os("SLIMNN_FORCE_SCALAR").is_some_and(|v| !v.is_empty() && v != "0") {
        // Already the scalar run (in CI or in the child below).
        assert_eq!(slimnn::kernels::level(), slimnn::kernels::Level::Scalar);
        return;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "matches_f64",
            "scalar_twins_match_f64_too",
            "--test-threads=2",
        ])
        .env("SLIMNN_FORCE_SCALAR", "1")
        .status()
        .unwrap();
    assert!(status.success(), "the scalar run failed");
}

fn csr_3x4() -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    (vec![0, 2, 2, 3], vec![0, 3, 1], vec![1.0, 2.0, 3.0])
}

fn ones(batch: usize, inputs: usize) -> Array2<f32> {
    Array2::from_elem((batch, inputs), 1.0)
}

fn invalid(e: Error, name: &str) {
    match e {
        Error::InvalidParameter { name: n, .. } => assert_eq!(n, name),
        other => panic!("expected an invalid `{name}`, got {other}"),
    }
}

#[test]
fn csr_rejects_bad_layouts() {
    let (rp, ci, v) = csr_3x4();
    let x = ones(2, 4);
    invalid(
        csr_matmul([3, 4], &rp[..3], &ci, &v, &x).unwrap_err(),
        "row_ptr",
    );
    invalid(
        csr_matmul([3, 4], &rp, &ci, &v[..2], &x).unwrap_err(),
        "values",
    );
    invalid(
        csr_matmul([3, 4], &[1, 2, 2, 3], &ci, &v, &x).unwrap_err(),
        "row_ptr[0]",
    );
    invalid(
        csr_matmul([3, 4], &[0, 2, 1, 3], &ci, &v, &x).unwrap_err(),
        "row_ptr",
    );
    invalid(
        csr_matmul([3, 4], &[0, 1, 1, 2], &ci, &v, &x).unwrap_err(),
        "row_ptr",
    );
    invalid(
        csr_matmul([3, 4], &rp, &[0, 4, 1], &v, &x).unwrap_err(),
        "col_idx",
    );
    invalid(
        csr_matmul([3, 4], &rp, &[0, u32::MAX, 1], &v, &x).unwrap_err(),
        "col_idx",
    );
    assert!(matches!(
        csr_matmul([3, 0], &rp, &ci, &v, &x),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        csr_matmul([usize::MAX, 4], &rp, &ci, &v, &x),
        Err(Error::BadShape { .. })
    ));
    invalid(
        csr_matmul([usize::MAX, 1], &rp, &ci, &v, &ones(1, 1)).unwrap_err(),
        "row_ptr",
    );
}

#[test]
fn activations_and_outputs_must_fit() {
    let (rp, ci, v) = csr_3x4();
    assert!(matches!(
        csr_matmul([3, 4], &rp, &ci, &v, &ones(2, 5)),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut y = vec![0.0; 6];
    assert!(matches!(
        csr_matmul_into([3, 4], &rp, &ci, &v, &[1.0; 7], &mut y),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        csr_matmul_into([3, 4], &rp, &ci, &v, &[1.0; 8], &mut y[..5]),
        Err(Error::BadShape { .. })
    ));
    csr_matmul_into([3, 4], &rp, &ci, &v, &[1.0; 8], &mut y).unwrap();
    assert_eq!(y, [3.0, 0.0, 3.0, 3.0, 0.0, 3.0]);
    // A batch of no rows gives no rows.
    let y = csr_matmul([3, 4], &rp, &ci, &v, &ones(0, 4)).unwrap();
    assert_eq!(y.dim(), (0, 3));
}

#[test]
fn nm_rejects_bad_groups() {
    let (vals, idx) = ([1.0f32, 2.0, 3.0, 4.0], [0u8, 3, 1, 2]);
    let x = ones(1, 8);
    invalid(nm_matmul([1, 8], 3, 2, &vals, &idx, &x).unwrap_err(), "n");
    invalid(nm_matmul([1, 8], 0, 4, &vals, &idx, &x).unwrap_err(), "n");
    invalid(nm_matmul([1, 8], 2, 0, &vals, &idx, &x).unwrap_err(), "m");
    invalid(nm_matmul([1, 8], 2, 300, &vals, &idx, &x).unwrap_err(), "m");
    invalid(nm_matmul([1, 9], 2, 4, &vals, &idx, &x).unwrap_err(), "m");
    invalid(
        nm_matmul([1, 8], 2, 4, &vals[..3], &idx, &x).unwrap_err(),
        "values",
    );
    invalid(
        nm_matmul([1, 8], 2, 4, &vals, &idx[..3], &x).unwrap_err(),
        "idx",
    );
    invalid(
        nm_matmul([1, 8], 2, 4, &vals, &[0, 4, 1, 2], &x).unwrap_err(),
        "idx",
    );
    assert_eq!(
        nm_matmul([1, 8], 2, 4, &vals, &idx, &x).unwrap()[[0, 0]],
        10.0
    );
}

#[test]
fn codebook_rejects_bad_codes() {
    let x = ones(1, 3);
    let codes = [0u8, 1, 2];
    invalid(
        codebook_matmul([1, 3], &codes, &[], &x).unwrap_err(),
        "codebook",
    );
    invalid(
        codebook_matmul([1, 3], &codes, &[0.0; 257], &x).unwrap_err(),
        "codebook",
    );
    invalid(
        codebook_matmul([1, 3], &codes, &[1.0, 2.0], &x).unwrap_err(),
        "codes",
    );
    invalid(
        codebook_matmul([1, 3], &codes[..2], &[1.0; 3], &x).unwrap_err(),
        "codes",
    );
    let packed = PackedCodes::pack(&codes, 2).unwrap();
    let book = [1.0, 2.0];
    invalid(
        packed_codebook_matmul([1, 3], packed.bytes(), 2, &book, &x).unwrap_err(),
        "codes",
    );
    invalid(
        packed_codebook_matmul([1, 3], packed.bytes(), 0, &book, &x).unwrap_err(),
        "bits",
    );
    invalid(
        packed_codebook_matmul([1, 3], packed.bytes(), 9, &book, &x).unwrap_err(),
        "bits",
    );
    invalid(
        packed_codebook_matmul([1, 3], &[0, 0], 2, &book, &x).unwrap_err(),
        "bytes",
    );
    // Every 1-bit code is below a 2-entry codebook.
    let y = packed_codebook_matmul([1, 3], &[0b101], 1, &book, &x).unwrap();
    assert_eq!(y[[0, 0]], 5.0);
}

/// NaN and infinity are not errors: they reach the outputs through the stored weights.
#[test]
fn non_finite_activations_propagate() {
    let (rp, ci, v) = csr_3x4();
    let mut xa = ones(2, 4);
    xa[[0, 0]] = f32::NAN; // column 0: stored in row 0 only
    xa[[1, 1]] = f32::INFINITY; // column 1: stored in row 2 only
    let y = csr_matmul([3, 4], &rp, &ci, &v, &xa).unwrap();
    assert!(y[[0, 0]].is_nan() && y[[0, 1]] == 0.0 && y[[0, 2]] == 3.0);
    assert!(y[[1, 0]] == 3.0 && y[[1, 1]] == 0.0 && y[[1, 2]] == f32::INFINITY);
    // Every weight of a codebook matrix is stored, so a NaN reaches every output.
    let y = codebook_matmul([2, 4], &[0; 8], &[0.0], &xa).unwrap();
    assert!(y.row(0).iter().all(|v| v.is_nan()));
    assert!(y.row(1).iter().all(|v| v.is_nan())); // 0·∞
}
