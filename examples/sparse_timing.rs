//! Sparse and compressed products against the dense f32 product of the same weight.
//!
//! ```text
//! cargo run --release --example sparse_timing [-- --repeats 7] [--only NAME_PART]
//! ```
//!
//! A 4096×4096 weight, entries N(0, 0.02²), activations N(0, 1) at batch 1 and 64:
//! CSR at 90% random unstructured sparsity, 2:4 with random positions, and a 16-entry
//! codebook (codes unpacked and packed at 4 bits). Each line is the median (and min)
//! over the repeats after one warm-up, with the largest difference to a dense f64
//! product. The dense yardstick is ndarray's `general_mat_mul`, as `W·X` with
//! `X` `[in, batch]` (what `examples/perf.rs` times as `dense_gemm`) and as `X·Wᵀ`.

use std::time::Instant;

use ndarray::{Array2, linalg::general_mat_mul};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};
use slimnn::quant::PackedCodes;
use slimnn::sparse_ops;

const N: usize = 4096;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let repeats = args
        .iter()
        .position(|a| a == "--repeats")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(7);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let normal = Normal::new(0.0f32, 0.02).unwrap();

    // 90% random unstructured sparsity, as CSR.
    let dense = Array2::from_shape_simple_fn((N, N), || {
        let w = normal.sample(&mut rng);
        if rng.random::<f32>() < 0.1 { w } else { 0.0 }
    });
    let (mut row_ptr, mut col_idx, mut values) = (vec![0u32], vec![], vec![]);
    for row in dense.rows() {
        for (c, &w) in row.iter().enumerate() {
            if w != 0.0 {
                col_idx.push(c as u32);
                values.push(w);
            }
        }
        row_ptr.push(col_idx.len() as u32);
    }

    // 2:4 with random positions.
    let mut nm = Array2::<f32>::zeros((N, N));
    let (mut nm_values, mut nm_idx) = (vec![], vec![]);
    for mut row in nm.rows_mut() {
        for g in 0..N / 4 {
            let first = rng.random_range(0..3u8);
            let second = rng.random_range(first + 1..4u8);
            for i in [first, second] {
                let w = normal.sample(&mut rng);
                row[g * 4 + i as usize] = w;
                nm_values.push(w);
                nm_idx.push(i);
            }
        }
    }

    // A 16-entry codebook.
    let codebook: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) * 0.006).collect();
    let codes: Vec<u8> = (0..N * N).map(|_| rng.random_range(0..16u8)).collect();
    let shared = Array2::from_shape_fn((N, N), |(r, c)| codebook[codes[r * N + c] as usize]);
    let packed = PackedCodes::pack(&codes, 4).unwrap();

    println!("4096x4096, medians (min) over {repeats} runs, max |y − f64 reference|");
    for batch in [1usize, 64] {
        let x = Array2::from_shape_simple_fn((batch, N), || {
            Normal::new(0.0f32, 1.0).unwrap().sample(&mut rng)
        });
        let xt = x.t().as_standard_layout().into_owned();
        println!("-- batch {batch}");
        let line = |name: &str, w: &Array2<f32>, run: &mut dyn FnMut() -> Array2<f32>| {
            if !name.contains(&only) {
                return;
            }
            let mut times: Vec<f64> = Vec::new();
            let mut y = run();
            for _ in 0..repeats {
                let t0 = Instant::now();
                y = run();
                times.push(t0.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let exact = x.mapv(f64::from).dot(&w.mapv(f64::from).t());
            let err = y
                .iter()
                .zip(&exact)
                .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
            println!(
                "{name:<34} {:>8.3} ms ({:>8.3})  err {err:.2e}",
                times[times.len() / 2] * 1e3,
                times[0] * 1e3
            );
        };
        for (label, w) in [("90% sparse", &dense), ("2:4", &nm), ("codebook", &shared)] {
            let mut y = Array2::zeros((N, batch));
            line(&format!("dense W·X ({label})"), w, &mut || {
                general_mat_mul(1.0, w, &xt, 0.0, &mut y);
                y.t().to_owned()
            });
            let mut y = Array2::zeros((batch, N));
            line(&format!("dense X·Wᵀ ({label})"), w, &mut || {
                general_mat_mul(1.0, &x, &w.t(), 0.0, &mut y);
                y.clone()
            });
        }
        line("csr (90% sparse)", &dense, &mut || {
            sparse_ops::csr_matmul([N, N], &row_ptr, &col_idx, &values, &x).unwrap()
        });
        line("2:4", &nm, &mut || {
            sparse_ops::nm_matmul([N, N], 2, 4, &nm_values, &nm_idx, &x).unwrap()
        });
        line("codebook 16 entries, u8 codes", &shared, &mut || {
            sparse_ops::codebook_matmul([N, N], &codes, &codebook, &x).unwrap()
        });
        line("codebook 16 entries, 4-bit codes", &shared, &mut || {
            sparse_ops::packed_codebook_matmul([N, N], packed.bytes(), 4, &codebook, &x).unwrap()
        });
    }
}
