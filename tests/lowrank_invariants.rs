//! Property tests of the low-rank family's invariants, through the public API.

mod common;

use common::normal;
use ndarray::{Array1, Array4, ArrayD, Ix2, Ix4};
use proptest::prelude::*;
use slimnn::lowrank::{
    CpAls, Factorization, LayerSpectrum, LowRank, LowRankContext, RandomizedSvd, Rank,
    SpatialSeparable, TruncatedSvd, TtSvd, Tucker2,
};
use slimnn::nn::{ConvSpec, conv2d};

fn frobenius(a: &ArrayD<f32>) -> f64 {
    a.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt()
}

/// `‖W − Ŵ‖ / ‖W‖`, measured from the reconstruction.
fn measured_error(w: &ArrayD<f32>, f: &Factorization) -> f64 {
    frobenius(&(w - &f.reconstruct())) / frobenius(w)
}

/// A `rows × cols` matrix with singular values `decay^i` (and random singular vectors).
fn decaying(rows: usize, cols: usize, decay: f64, seed: u64) -> ArrayD<f32> {
    let k = rows.min(cols);
    let g = normal(&[rows + cols, k], seed).mapv(f64::from);
    let q = |m: ndarray::ArrayView2<f64>| {
        // Gram–Schmidt, enough for a test matrix.
        let mut q = m.to_owned();
        for j in 0..q.ncols() {
            for i in 0..j {
                let d = q.column(i).dot(&q.column(j));
                let ci = q.column(i).to_owned();
                q.column_mut(j).scaled_add(-d, &ci);
            }
            let n = q.column(j).dot(&q.column(j)).sqrt();
            q.column_mut(j).mapv_inplace(|v| v / n);
        }
        q
    };
    let g = g.into_dimensionality::<Ix2>().unwrap();
    let u = q(g.slice(ndarray::s![..rows, ..]));
    let v = q(g.slice(ndarray::s![rows.., ..]));
    let s = Array1::from_shape_fn(k, |i| decay.powi(i as i32));
    (&u * &s).dot(&v.t()).mapv(|x| x as f32).into_dyn()
}

fn linear_input(batch: usize, features: usize, seed: u64) -> ArrayD<f32> {
    normal(&[batch, features], seed)
}

/// The dense layer's output with weight `w`: `x Wᵀ` or a convolution.
fn dense_forward(x: &ArrayD<f32>, w: &ArrayD<f32>, spec: ConvSpec) -> ArrayD<f32> {
    if w.ndim() == 2 {
        let x = x.view().into_dimensionality::<Ix2>().unwrap();
        x.dot(&w.view().into_dimensionality::<Ix2>().unwrap().t())
            .into_dyn()
    } else {
        let x = x.view().into_dimensionality::<Ix4>().unwrap();
        let w: Array4<f32> = w.clone().into_dimensionality().unwrap();
        conv2d(&x, &w, None, spec).unwrap().into_dyn()
    }
}

fn assert_close(a: &ArrayD<f32>, b: &ArrayD<f32>, tol: f32) {
    assert_eq!(a.shape(), b.shape());
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * scale, "{x} vs {y} (scale {scale})");
    }
}

fn shape2() -> impl Strategy<Value = (usize, usize)> {
    (1usize..24, 1usize..24)
}

fn conv_shape() -> impl Strategy<Value = (usize, usize, usize, usize)> {
    (1usize..9, 1usize..7, 1usize..4, 1usize..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Eckart–Young: the truncated SVD's error is the discarded singular values' energy,
    /// and the reported error is the measured one.
    #[test]
    fn truncated_svd_error_is_the_discarded_energy((m, n) in shape2(), r in 1usize..24, seed in 0u64..1000) {
        let r = r.min(m.min(n));
        let w = normal(&[m, n], seed);
        let ctx = LowRankContext::new();
        let f = TruncatedSvd::new(Rank::Fixed(r)).unwrap().factorize(&w, &ctx).unwrap();
        let s = LayerSpectrum::linear(&w, &ctx).unwrap().singular_values;
        let total: f64 = s.iter().map(|v| v * v).sum();
        let tail: f64 = s[r..].iter().map(|v| v * v).sum();
        let expected = (tail / total).sqrt();
        let reported = f.relative_error().unwrap();
        prop_assert!((reported - expected).abs() < 1e-4, "{reported} vs {expected}");
        prop_assert!((measured_error(&w, &f) - expected).abs() < 1e-4);
        prop_assert_eq!(f.ranks(), vec![r]);
        prop_assert_eq!(f.params(), r * (m + n));
        prop_assert_eq!(f.flops(), r * (m + n));
        prop_assert_eq!(f.dense_params(), m * n);
    }

    /// At full rank every method reconstructs the weight.
    #[test]
    fn full_rank_is_exact((o, c, kh, kw) in conv_shape(), seed in 0u64..1000) {
        let ctx = LowRankContext::new();
        let w2 = normal(&[o, c * kh], seed);
        let f = TruncatedSvd::new(Rank::Fixed(o.min(c * kh))).unwrap().factorize(&w2, &ctx).unwrap();
        prop_assert!(measured_error(&w2, &f) < 1e-5);
        let w4 = normal(&[o, c, kh, kw], seed);
        let f = Tucker2::new(Rank::Fixed(o.min(c * kh * kw)), Rank::Fixed(c.min(o * kh * kw))).unwrap().factorize(&w4, &ctx).unwrap();
        prop_assert!(measured_error(&w4, &f) < 1e-5, "tucker {}", measured_error(&w4, &f));
        let f = SpatialSeparable::new(Rank::Fixed((c * kh).min(o * kw))).unwrap().factorize(&w4, &ctx).unwrap();
        prop_assert!(measured_error(&w4, &f) < 1e-5);
        let f = TtSvd::new(vec![o, kh], vec![c, kw], Rank::Fixed(64)).unwrap().factorize(&normal(&[o * kh, c * kw], seed), &ctx).unwrap();
        prop_assert!(f.relative_error().unwrap() < 1e-5);
    }

    /// The factorized layers compute what the dense layer with the reconstructed weight
    /// computes, and the counts match the factor shapes.
    #[test]
    fn forward_equals_the_dense_forward_of_the_reconstruction(
        (o, c, kh, kw) in conv_shape(),
        r in 1usize..6,
        stride in 1usize..3,
        pad in 0usize..2,
        seed in 0u64..1000,
    ) {
        let ctx = LowRankContext::new().with_conv(ConvSpec::new().with_stride(stride, stride).with_padding(pad, pad));
        let w4 = normal(&[o, c, kh, kw], seed);
        let x4 = normal(&[2, c, kh + 3, kw + 2], seed + 1);
        let k = kh * kw;
        let (ro, ri) = (r.min(o).min(c * k), r.min(c).min(o * k));
        let tucker = Tucker2::new(Rank::Fixed(ro), Rank::Fixed(ri)).unwrap().factorize(&w4, &ctx).unwrap();
        prop_assert_eq!(tucker.params(), o * ro + ro * ri * k + c * ri);
        prop_assert_eq!(tucker.flops(), c * ri * stride * stride + ro * ri * k + o * ro);
        let cp = CpAls::new(r).unwrap().best_effort(true).with_max_iter(20).factorize(&w4, &ctx).unwrap();
        prop_assert_eq!(cp.params(), r * (o + c + kh + kw));
        let rs = r.min(c * kh).min(o * kw);
        let sep = SpatialSeparable::new(Rank::Fixed(rs)).unwrap().factorize(&w4, &ctx).unwrap();
        prop_assert_eq!(sep.params(), rs * (c * kh + o * kw));
        prop_assert_eq!(sep.dense_flops(), o * c * k);
        for f in [&tucker, &cp, &sep] {
            let y = f.forward(&x4).unwrap();
            assert_close(&y, &dense_forward(&x4, &f.reconstruct(), f.conv_spec()), 1e-4);
        }

        let w2 = normal(&[o * kh, c * kw], seed + 2);
        let x2 = linear_input(3, c * kw, seed + 3);
        let lin = TruncatedSvd::new(Rank::Fixed(r.min(o * kh).min(c * kw))).unwrap().factorize(&w2, &ctx).unwrap();
        let tt = TtSvd::new(vec![o, kh], vec![c, kw], Rank::Fixed(r)).unwrap().factorize(&w2, &ctx).unwrap();
        let r1 = tt.ranks()[0];
        prop_assert!(r1 <= r);
        prop_assert_eq!(tt.params(), o * c * r1 + r1 * kh * kw);
        for f in [&lin, &tt] {
            assert_close(&f.forward(&x2).unwrap(), &dense_forward(&x2, &f.reconstruct(), ConvSpec::new()), 1e-4);
        }
    }

    /// Randomized SVD comes within a small factor of the optimal error on decaying spectra.
    #[test]
    fn randomized_svd_is_near_optimal(m in 20usize..60, n in 20usize..60, r in 1usize..10, decay in 0.5f64..0.95, seed in 0u64..1000) {
        let w = decaying(m, n, decay, seed);
        let ctx = LowRankContext::new().with_seed(seed);
        let best = TruncatedSvd::new(Rank::Fixed(r)).unwrap().factorize(&w, &ctx).unwrap();
        let fast = RandomizedSvd::new(Rank::Fixed(r)).unwrap().factorize(&w, &ctx).unwrap();
        let (b, f) = (best.relative_error().unwrap(), fast.relative_error().unwrap());
        prop_assert!(f <= b * 1.1 + 1e-5, "randomized {f} vs optimal {b}");
        prop_assert!((measured_error(&w, &fast) - f).abs() < 1e-4);
    }

    /// More rank, less error: Tucker-2 and the tensor train.
    #[test]
    fn errors_decrease_as_ranks_grow((o, c, kh, kw) in conv_shape(), seed in 0u64..1000) {
        let ctx = LowRankContext::new();
        let w4 = normal(&[o, c, kh, kw], seed);
        let mut last = f64::INFINITY;
        let (max_o, max_c) = (o.min(c * kh * kw), c.min(o * kh * kw));
        for r in 1..=o.max(c) {
            let f = Tucker2::new(Rank::Fixed(r.min(max_o)), Rank::Fixed(r.min(max_c))).unwrap().factorize(&w4, &ctx).unwrap();
            let e = f.relative_error().unwrap();
            prop_assert!(e <= last + 1e-6, "rank {r}: {e} after {last}");
            prop_assert!((measured_error(&w4, &f) - e).abs() < 1e-4);
            last = e;
        }
        let w2 = normal(&[o * kh, c * kw], seed);
        let mut last = f64::INFINITY;
        for r in 1..=8 {
            let f = TtSvd::new(vec![o, kh], vec![c, kw], Rank::Fixed(r)).unwrap().factorize(&w2, &ctx).unwrap();
            let e = f.relative_error().unwrap();
            prop_assert!(e <= last + 1e-6, "TT rank {r}: {e} after {last}");
            prop_assert!((measured_error(&w2, &f) - e).abs() < 1e-4);
            last = e;
        }
    }

    /// Rank rules: energy keeps at least the asked fraction, compression at least the
    /// asked ratio.
    #[test]
    fn rank_rules_hold((m, n) in shape2(), energy in 0.05f64..1.0, ratio in 1.01f64..4.0, seed in 0u64..1000) {
        let w = normal(&[m, n], seed);
        let ctx = LowRankContext::new();
        let f = TruncatedSvd::new(Rank::Energy(energy)).unwrap().factorize(&w, &ctx).unwrap();
        let e = f.relative_error().unwrap();
        prop_assert!(1.0 - e * e >= energy - 1e-5, "kept {} < {energy}", 1.0 - e * e);
        if let Ok(f) = TruncatedSvd::new(Rank::Compression(ratio)).unwrap().factorize(&w, &ctx) {
            prop_assert!(f.params() as f64 * ratio <= (m * n) as f64 + 1e-9);
        } else {
            prop_assert!(((m + n) as f64) * ratio > (m * n) as f64);
        }
        let f = TruncatedSvd::new(Rank::Vbmf).unwrap().factorize(&w, &ctx).unwrap();
        prop_assert!(f.ranks()[0] >= 1 && f.ranks()[0] <= m.min(n));
    }
}

/// CP by ALS: on the TensorLy fixture's kind of tensor (decaying channel spectra), the
/// error falls as the rank grows, and an exactly low-rank tensor is recovered.
#[test]
fn cp_error_falls_with_rank_and_recovers_exact_cp_tensors() {
    let ctx = LowRankContext::new();
    let (o, c, kh, kw, r) = (12, 10, 3, 3, 4);
    let a = normal(&[o, r], 1).into_dimensionality::<Ix2>().unwrap();
    let b = normal(&[c, r], 2).into_dimensionality::<Ix2>().unwrap();
    let y = normal(&[kh, r], 3).into_dimensionality::<Ix2>().unwrap();
    let x = normal(&[kw, r], 4).into_dimensionality::<Ix2>().unwrap();
    let w = Array4::from_shape_fn((o, c, kh, kw), |(i, j, p, q)| {
        (0..r)
            .map(|t| a[[i, t]] * b[[j, t]] * y[[p, t]] * x[[q, t]])
            .sum::<f32>()
    })
    .into_dyn();
    let f = CpAls::new(r).unwrap().factorize(&w, &ctx).unwrap();
    assert!(
        f.relative_error().unwrap() < 1e-3,
        "{:?}",
        f.relative_error()
    );
    assert!((measured_error(&w, &f) - f.relative_error().unwrap()).abs() < 1e-4);

    let noisy = &w + &normal(&[o, c, kh, kw], 5).mapv(|v| v * 0.3);
    let errors: Vec<f64> = [1, 2, 4, 8, 16]
        .iter()
        .map(|&r| {
            CpAls::new(r)
                .unwrap()
                .best_effort(true)
                .factorize(&noisy, &ctx)
                .unwrap()
                .relative_error()
                .unwrap()
        })
        .collect();
    assert!(errors.windows(2).all(|p| p[1] < p[0]), "{errors:?}");
}

/// A tensor train with `Rank::Energy` keeps the error within `√(1 − energy)`.
#[test]
fn tt_energy_bounds_the_error() {
    let w = decaying(64, 64, 0.9, 3);
    let ctx = LowRankContext::new();
    let mut params = 0;
    for energy in [0.5, 0.9, 0.99, 0.999] {
        let f = TtSvd::new(vec![4, 4, 4], vec![4, 4, 4], Rank::Energy(energy))
            .unwrap()
            .factorize(&w, &ctx)
            .unwrap();
        let e = f.relative_error().unwrap();
        assert!(e <= (1.0 - energy).sqrt() + 1e-6, "{energy}: {e}");
        assert!(f.params() >= params);
        params = f.params();
    }
}
