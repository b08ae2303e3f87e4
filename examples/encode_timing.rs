//! Timing of the encode module (release mode, one core):
//! `cargo run --release --example encode_timing`.
//!
//! Huffman encode/decode of 4 M symbols of a 32-symbol Laplace-like distribution, and
//! building, writing and reading the sparse formats of a 4096×4096 matrix with 90%
//! random unstructured sparsity.

use std::hint::black_box;
use std::time::Instant;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};
use slimnn::Mask;
use slimnn::encode::huffman::{HuffmanCode, entropy_bits, symbol_counts};
use slimnn::encode::{BitmaskSparse, Csr, RelativeIndexSparse, SparseFormat};

/// The median of `runs` timings of `f`, in seconds.
fn median(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

/// A uniform number in [0, 1).
fn uniform(rng: &mut Xoshiro256PlusPlus) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn main() -> slimnn::Result<()> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);

    // Laplace-like: P(k) ∝ exp(−|k − 15.5| / 3) over 32 symbols.
    let weights: Vec<f64> = (0..32)
        .map(|k| (-(k as f64 - 15.5).abs() / 3.0).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let cdf: Vec<f64> = weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w / total;
            Some(*acc)
        })
        .collect();
    let n = 4 << 20;
    let symbols: Vec<u16> = (0..n)
        .map(|_| {
            let u = uniform(&mut rng);
            cdf.iter().position(|&c| u < c).unwrap_or(31) as u16
        })
        .collect();
    let counts = symbol_counts(&symbols);
    let code = HuffmanCode::from_counts(&counts)?;
    let stream = code.encode(&symbols)?;
    println!(
        "huffman: {} symbols, max code {} bits, {:.4} bits/symbol (entropy {:.4})",
        n,
        code.max_len(),
        stream.bit_len() as f64 / n as f64,
        entropy_bits(&counts) / n as f64
    );
    let build = median(11, || {
        black_box(HuffmanCode::from_counts(black_box(&counts)).unwrap());
    });
    let enc = median(11, || {
        black_box(code.encode(black_box(&symbols)).unwrap());
    });
    let dec = median(11, || {
        black_box(code.decode(black_box(&stream), n).unwrap());
    });
    for (what, s) in [("encode", enc), ("decode", dec)] {
        println!(
            "  {what}: {:.2} ms, {:.0} M symbols/s, {:.0} MB/s of u16",
            s * 1e3,
            n as f64 / s / 1e6,
            2.0 * n as f64 / s / 1e6
        );
    }
    println!("  from_counts: {:.1} µs", build * 1e6);

    // A wide alphabet whose limit binds: 65,536 symbols with counts 2^k.
    let wide: Vec<u64> = (0..65_536u64).map(|s| 1 << (s % 40)).collect();
    let t = median(5, || {
        black_box(HuffmanCode::from_counts(black_box(&wide)).unwrap());
    });
    println!(
        "  from_counts, 65,536 symbols, limit binding: {:.2} ms",
        t * 1e3
    );

    let (rows, cols) = (4096, 4096);
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| uniform(&mut rng) as f32 - 0.5)
        .collect();
    let keep: Vec<bool> = (0..rows * cols).map(|_| uniform(&mut rng) < 0.1).collect();
    let mask = Mask::from_fn(&[rows, cols], |i| keep[i]);
    println!("sparse 4096×4096, {} kept:", mask.count_kept());
    fn report<F: SparseFormat>(name: &str, build: impl Fn() -> F) {
        let f = build();
        let t_build = median(5, || {
            black_box(build());
        });
        let mut bytes = Vec::new();
        let t_write = median(5, || {
            bytes.clear();
            f.write_to(&mut bytes);
        });
        let t_read = median(5, || {
            black_box(F::read_from(&mut &bytes[..]).unwrap());
        });
        let t_dense = median(5, || {
            black_box(f.to_dense());
        });
        println!(
            "  {name:<10} {:>6.2} bits/kept  build {:>6.1} ms  write {:>5.1} ms  read {:>5.1} ms  to_dense {:>5.1} ms",
            f.storage_bits() as f64 / f.nnz() as f64,
            t_build * 1e3,
            t_write * 1e3,
            t_read * 1e3,
            t_dense * 1e3
        );
    }
    report("csr", || {
        Csr::from_dense(&w, [rows, cols], Some(&mask)).unwrap()
    });
    report("bitmask", || {
        BitmaskSparse::from_dense(&w, [rows, cols], Some(&mask)).unwrap()
    });
    report("relative4", || {
        RelativeIndexSparse::from_dense(&w, [rows, cols], Some(&mask), 4).unwrap()
    });
    Ok(())
}
