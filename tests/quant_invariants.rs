//! Property tests of the quantization family's invariants, through the public API.

mod common;

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use slimnn::quant::{
    Decoding, Granularity, PackedCodes, QuantContext, Quantizer, Rounding, Scheme, UniformQuantizer,
};

fn tensor() -> impl Strategy<Value = ArrayD<f32>> {
    (
        1usize..6,
        1usize..5,
        prop_oneof![Just(1.0f32), Just(1e-3), Just(50.0)],
    )
        .prop_flat_map(|(r, g, mag)| {
            prop::collection::vec(-1.0f32..1.0, r * g * 8).prop_map(move |v| {
                ArrayD::from_shape_vec(IxDyn(&[r, g * 8]), v.into_iter().map(|x| x * mag).collect())
                    .unwrap()
            })
        })
}

fn granularity() -> impl Strategy<Value = Granularity> {
    prop_oneof![
        Just(Granularity::PerTensor),
        Just(Granularity::PerChannel { axis: 0 }),
        Just(Granularity::PerChannel { axis: 1 }),
        Just(Granularity::PerGroup { size: 8 }),
    ]
}

/// Per-element scale of a scalar decoding.
fn scales_per_element(q: &slimnn::quant::QuantizedTensor) -> Vec<f32> {
    let Decoding::Scalar {
        scales,
        granularity,
        ..
    } = q.decoding()
    else {
        panic!("scalar decoding")
    };
    let shape = q.shape();
    let n = q.len();
    (0..n)
        .map(|i| match granularity {
            Granularity::PerTensor => scales[0],
            Granularity::PerChannel { axis } => {
                let stride: usize = shape[axis + 1..].iter().product();
                scales[(i / stride) % shape[*axis]]
            }
            Granularity::PerGroup { size } => scales[i / size],
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Round to nearest inside the range: every error is at most half a step; codes fit.
    #[test]
    fn rounding_error_is_at_most_half_a_step(w in tensor(), bits in 2u8..=8, affine in any::<bool>(), g in granularity()) {
        let scheme = if affine { Scheme::Affine } else { Scheme::Symmetric };
        let q = UniformQuantizer::new(bits, scheme, g).unwrap().quantize(&w, &QuantContext::new()).unwrap();
        prop_assert_eq!(q.codes().bits(), bits);
        prop_assert!(q.codes().unpack().iter().all(|&c| (c as u32) < (1 << bits)));
        let back = q.dequantize::<f32>();
        let scales = scales_per_element(&q);
        for ((&a, &b), &s) in w.iter().zip(back.iter()).zip(&scales) {
            prop_assert!((a - b).abs() <= s / 2.0 * (1.0 + 1e-5) + 1e-12, "{} vs {} (scale {})", a, b, s);
        }
    }

    /// Zero is exact in both schemes.
    #[test]
    fn zero_is_exact(w in tensor(), bits in 2u8..=8, affine in any::<bool>(), g in granularity(), at in 0usize..8) {
        let mut w = w;
        let n = w.len();
        w.as_slice_mut().unwrap()[at % n] = 0.0;
        let scheme = if affine { Scheme::Affine } else { Scheme::Symmetric };
        let q = UniformQuantizer::new(bits, scheme, g).unwrap().quantize(&w, &QuantContext::new()).unwrap();
        prop_assert_eq!(q.dequantize::<f32>().as_slice().unwrap()[at % n], 0.0);
    }

    /// Pack/unpack round-trips for every width.
    #[test]
    fn packing_round_trips(bits in 1u8..=8, raw in prop::collection::vec(any::<u8>(), 0..200), start in 0usize..50) {
        let codes: Vec<u8> = raw.iter().map(|&c| if bits == 8 { c } else { c % (1 << bits) }).collect();
        let p = PackedCodes::pack(&codes, bits).unwrap();
        prop_assert_eq!(p.bytes().len(), (codes.len() * bits as usize).div_ceil(8));
        prop_assert_eq!(p.unpack(), codes.clone());
        let start = start.min(codes.len());
        let mut part = vec![0u8; codes.len() - start];
        p.unpack_into(start, &mut part);
        prop_assert_eq!(&part[..], &codes[start..]);
        prop_assert_eq!(PackedCodes::from_bytes(p.bytes().to_vec(), bits, codes.len()).unwrap(), p);
    }

    /// Storage is exactly codes plus parameters.
    #[test]
    fn storage_is_counted_exactly(w in tensor(), bits in 2u8..=8, g in granularity()) {
        let q = UniformQuantizer::new(bits, Scheme::Affine, g).unwrap().quantize(&w, &QuantContext::new()).unwrap();
        let Decoding::Scalar { scales, zero_points, .. } = q.decoding() else { unreachable!() };
        prop_assert_eq!(q.storage_bits(), w.len() * bits as usize + scales.len() * 32 + zero_points.len() * bits as usize);
    }
}

/// Stochastic rounding is unbiased: over many draws the mean error goes to 0, while
/// rounding to nearest keeps a systematic error.
#[test]
fn stochastic_rounding_is_unbiased() {
    // Values sitting 0.3 of a step above a level, all with the same scale.
    let step = 1.0f32 / 127.0;
    let mut v: Vec<f32> = (0..20_000)
        .map(|i| ((i % 50) as f32 + 0.3) * step)
        .collect();
    v.push(1.0); // pins max|x| = 1, so the step is exactly 1/127
    let w = ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.clone()).unwrap();
    let mean_err = |rounding| {
        let q = UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerTensor)
            .unwrap()
            .with_rounding(rounding);
        let back = q
            .quantize(&w, &QuantContext::new())
            .unwrap()
            .dequantize::<f32>();
        v.iter()
            .zip(back.iter())
            .map(|(a, b)| (b - a) as f64)
            .sum::<f64>()
            / v.len() as f64
            / step as f64
    };
    let nearest = mean_err(Rounding::NearestEven);
    assert!((nearest + 0.3).abs() < 0.01, "nearest: {nearest}");
    let stochastic = mean_err(Rounding::Stochastic { seed: 42 });
    // 20,000 draws of a Bernoulli(0.3) error: standard error of the mean ≈ 0.0032 steps.
    assert!(stochastic.abs() < 0.015, "stochastic: {stochastic}");
}

fn sse(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum()
}

fn vector() -> impl Strategy<Value = ArrayD<f32>> {
    prop::collection::vec(
        prop_oneof![(-20i8..20).prop_map(|x| x as f32 * 0.05), -1.0f32..1.0],
        8..200,
    )
    .prop_map(|v| ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The optimal codebook's error is never above Lloyd's, from any start.
    #[test]
    fn optimal_kmeans_beats_lloyd(w in vector(), k in 2usize..9, init in 0usize..3, seed in any::<u64>()) {
        use slimnn::quant::{KMeansInit, KMeansQuantizer};
        let distinct = { let mut v: Vec<u32> = w.iter().map(|x| x.to_bits()).collect(); v.sort(); v.dedup(); v.len() };
        prop_assume!(k <= distinct);
        let ctx = QuantContext::new();
        let init = [KMeansInit::Linear, KMeansInit::Density, KMeansInit::Random { seed }][init];
        let optimal = KMeansQuantizer::optimal(k).unwrap().quantize(&w, &ctx).unwrap().dequantize::<f32>();
        let lloyd = KMeansQuantizer::lloyd(k, init).unwrap().quantize(&w, &ctx).unwrap().dequantize::<f32>();
        let (o, l) = (sse(&w, &optimal), sse(&w, &lloyd));
        prop_assert!(o <= l * (1.0 + 1e-6) + 1e-9, "optimal {} > Lloyd {}", o, l);
        // Every weight sits on its nearest centroid.
        let q = KMeansQuantizer::optimal(k).unwrap().quantize(&w, &ctx).unwrap();
        let table = q.table().unwrap().to_vec();
        for (&x, &y) in w.iter().zip(optimal.iter()) {
            let best = table.iter().map(|c| (c - x).abs()).fold(f32::INFINITY, f32::min);
            prop_assert!((y - x).abs() <= best + 1e-6);
        }
    }

    /// Binary and ternary weights take their group's ±α (and 0); powers of two are 0 or
    /// ±2^e times the group scale, and the nearest such level.
    #[test]
    fn low_bit_levels(w in tensor(), bits in 2u8..=6) {
        use slimnn::quant::{BinaryQuantizer, PowerOfTwoQuantizer, TernaryQuantizer};
        let ctx = QuantContext::new();
        let g = Granularity::PerChannel { axis: 0 };
        let cols = w.shape()[1];
        let b = BinaryQuantizer::new(g).quantize(&w, &ctx).unwrap().dequantize::<f32>();
        for (row_w, row_b) in w.outer_iter().zip(b.outer_iter()) {
            let alpha = row_w.iter().map(|v| v.abs()).sum::<f32>() / cols as f32;
            for (&x, &y) in row_w.iter().zip(row_b.iter()) {
                prop_assert!((y.abs() - alpha).abs() <= 1e-5 * alpha.max(1e-30) && (y >= 0.0) == (x >= 0.0));
            }
        }
        let t = TernaryQuantizer::new(g).quantize(&w, &ctx).unwrap().dequantize::<f32>();
        for row in t.outer_iter() {
            let alpha = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            prop_assert!(row.iter().all(|v| *v == 0.0 || (v.abs() - alpha).abs() <= 1e-6 * alpha));
        }
        let q = PowerOfTwoQuantizer::new(bits, g).unwrap().quantize(&w, &ctx).unwrap();
        let Decoding::Scalar { scales, .. } = q.decoding() else { unreachable!() };
        let p = q.dequantize::<f32>();
        let m = (1i32 << (bits - 1)) - 1;
        for ((row_w, row_p), &s) in w.outer_iter().zip(p.outer_iter()).zip(scales) {
            let levels: Vec<f32> = std::iter::once(0.0).chain((0..m).map(|j| s * 2f32.powi(-j))).collect();
            for (&x, &y) in row_w.iter().zip(row_p.iter()) {
                let best = levels.iter().map(|l| (x.abs() - l).abs()).fold(f32::INFINITY, f32::min);
                prop_assert!(levels.iter().any(|l| (y.abs() - l).abs() <= 1e-6 * s));
                prop_assert!((x.abs() - y.abs()).abs() <= best * (1.0 + 1e-5) + 1e-12);
                prop_assert!(y == 0.0 || (y >= 0.0) == (x >= 0.0));
            }
        }
    }

    /// Decoding on the fly gives the product with the decoded weights.
    #[test]
    fn group_matmul_equals_the_dense_product(rows in 1usize..6, groups in 1usize..4, batch in 1usize..4, bits in 2u8..=8, seed in 0u64..500) {
        use slimnn::quant::group_matmul;
        let w = common::normal(&[rows, groups * 32], seed);
        let q = UniformQuantizer::new(bits, Scheme::Affine, Granularity::PerGroup { size: 32 }).unwrap().quantize(&w, &QuantContext::new()).unwrap();
        let x = common::normal(&[batch, groups * 32], seed + 1).into_dimensionality::<ndarray::Ix2>().unwrap();
        let y = group_matmul(&x, &q, None).unwrap();
        let dense = x.dot(&q.dequantize::<f32>().into_dimensionality::<ndarray::Ix2>().unwrap().t());
        for (a, b) in y.iter().zip(dense.iter()) {
            prop_assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "{} vs {}", a, b);
        }
    }

    /// The int8 layer stays close to the exact product, within the quantization steps.
    #[test]
    fn quantized_linear_tracks_the_dense_layer(out in 1usize..9, blocks in 1usize..4, batch in 1usize..5, seed in 0u64..500, per_row in any::<bool>()) {
        use slimnn::quant::QuantizedLinear;
        let inputs = blocks * 32;
        let w = common::normal(&[out, inputs], seed).into_dimensionality::<ndarray::Ix2>().unwrap();
        let b = common::normal(&[out], seed + 1).into_dimensionality::<ndarray::Ix1>().unwrap();
        let x = common::normal(&[batch, inputs], seed + 2).into_dimensionality::<ndarray::Ix2>().unwrap();
        let layer = if per_row { QuantizedLinear::with_block(&w, Some(&b), inputs) } else { QuantizedLinear::new(&w, Some(&b)) }.unwrap();
        let y = layer.forward(&x).unwrap();
        let exact = x.dot(&w.t()) + &b;
        // |Δy| ≤ Σ_k (|x_k|·|Δw_k| + |w_k|·|Δx_k| + |Δx_k|·|Δw_k|) with steps max/127.
        for (r, (yr, er)) in y.outer_iter().zip(exact.outer_iter()).enumerate() {
            let xa = x.row(r).iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (o, (&a, &e)) in yr.iter().zip(er.iter()).enumerate() {
                let wa = w.row(o).iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let bound = inputs as f32 * (xa * wa / 254.0 * 2.0 + xa * wa / 254.0 / 254.0) + 1e-4;
                prop_assert!((a - e).abs() <= bound, "{} vs {} (bound {})", a, e, bound);
            }
        }
    }

    /// Product quantization: exact when a slice has no more distinct subvectors than
    /// codewords, and codes and codebooks sized as stated.
    #[test]
    fn product_quantization_shapes(rows in 4usize..20, slices in 1usize..4, sub in 1usize..4, seed in any::<u64>()) {
        use slimnn::quant::ProductQuantizer;
        let distinct = common::normal(&[4, slices * sub], seed % 1000);
        let w = ArrayD::from_shape_fn(IxDyn(&[rows, slices * sub]), |i| distinct[[i[0] % 4, i[1]]]);
        let q = ProductQuantizer::new(sub, 4, seed).unwrap().quantize(&w, &QuantContext::new()).unwrap();
        prop_assert_eq!(q.codes().len(), rows * slices);
        prop_assert_eq!(q.storage_bits(), rows * slices * 2 + slices * 4 * sub * 32);
        let back = q.dequantize::<f32>();
        for (a, b) in w.iter().zip(back.iter()) {
            prop_assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()));
        }
    }
}

/// Observers: min-max covers every batch; the moving average follows its formula.
#[test]
fn observers() {
    use slimnn::quant::{MinMaxObserver, MovingAverageObserver, Observer};
    let batches = [vec![-1.0f32, 2.0], vec![-3.0, 1.0], vec![0.5, 0.25]];
    let mut mm = MinMaxObserver::new();
    let mut ma = MovingAverageObserver::new(0.5).unwrap();
    for b in &batches {
        let a = ArrayD::from_shape_vec(IxDyn(&[2]), b.clone()).unwrap();
        mm.observe(&a).unwrap();
        ma.observe(&a).unwrap();
    }
    assert_eq!(mm.range().unwrap(), (-3.0, 2.0));
    // lo: −1 → −2 → −0.875 (batch minima −1, −3, 0.25); hi: 2 → 1.5 → 1.0
    assert_eq!(ma.range().unwrap(), (-0.875, 1.0));
}

/// Ties round to the even level (not the even code), as IEEE 754 and PyTorch do.
#[test]
fn ties_round_to_even_levels() {
    let w = ArrayD::from_shape_vec(IxDyn(&[3]), vec![-1.0f32, 0.5, 1.0]).unwrap();
    let q = UniformQuantizer::new(2, Scheme::Symmetric, Granularity::PerTensor)
        .unwrap()
        .quantize(&w, &QuantContext::new())
        .unwrap();
    // Levels −1, 0, 1 with scale 1: 0.5 is a tie between 0 and 1 and goes to 0.
    assert_eq!(q.dequantize::<f32>().as_slice().unwrap(), &[-1.0, 0.0, 1.0]);
}

/// A range too small for 1/scale keeps zero exact.
#[test]
fn subnormal_ranges_keep_zero_exact() {
    let w = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1e-37f32, 0.0, -1e-37]).unwrap();
    for scheme in [Scheme::Symmetric, Scheme::Affine] {
        let q = UniformQuantizer::new(8, scheme, Granularity::PerTensor)
            .unwrap()
            .quantize(&w, &QuantContext::new())
            .unwrap();
        assert_eq!(q.dequantize::<f32>()[[1]], 0.0, "{scheme:?}");
    }
}

/// The straight-through estimator stops at the top level of a restricted symmetric grid.
#[test]
fn straight_through_stops_at_the_clipping_point() {
    use slimnn::quant::{Calibration, straight_through};
    // 4-bit symmetric: levels −7…7. Percentile clipping puts the outlier past level 7.
    let mut v: Vec<f32> = (1..200).map(|i| (i % 20) as f32 * 0.01).collect();
    v.push(1.0);
    let w = ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).unwrap();
    let q = UniformQuantizer::new(4, Scheme::Symmetric, Granularity::PerTensor)
        .unwrap()
        .with_calibration(Calibration::Percentile(0.95))
        .unwrap()
        .quantize(&w, &QuantContext::new())
        .unwrap();
    let Decoding::Scalar { scales, .. } = q.decoding() else {
        unreachable!()
    };
    let s = scales[0];
    // A weight a full step beyond the top level (7·s) is clipped: no gradient.
    let probe = ArrayD::from_shape_vec(
        IxDyn(&[w.len()]),
        w.iter()
            .enumerate()
            .map(|(i, &x)| if i == 0 { 8.0 * s } else { x })
            .collect(),
    )
    .unwrap();
    let g = straight_through(&ArrayD::ones(w.raw_dim()), &probe, &q).unwrap();
    assert_eq!(g[[0]], 0.0);
    assert_eq!(g[[1]], 1.0);
}

/// Codebook methods on a pruned model: statistics from the kept weights, pruned
/// weights decode to exactly 0 from the stored form too.
#[test]
fn pruned_weights_stay_zero_through_codebooks() {
    use slimnn::prune::{MagnitudePruner, Statistics};
    use slimnn::quant::{BinaryQuantizer, KMeansQuantizer, TernaryQuantizer};
    use slimnn::{Model, Selector};
    let quantizers: Vec<Box<dyn Quantizer>> = vec![
        Box::new(KMeansQuantizer::optimal(4).unwrap()),
        Box::new(BinaryQuantizer::new(Granularity::PerChannel { axis: 0 })),
        Box::new(TernaryQuantizer::new(Granularity::PerChannel { axis: 0 })),
        Box::new(
            UniformQuantizer::new(4, Scheme::Affine, Granularity::PerChannel { axis: 0 }).unwrap(),
        ),
    ];
    for q in &quantizers {
        let mut m = Model::new();
        m.add("fc.weight", common::normal(&[16, 32], 5)).unwrap();
        m.prune(
            &Selector::all(),
            &MagnitudePruner::magnitude(0.9).unwrap(),
            &Statistics::new(),
        )
        .unwrap();
        m.quantize(&Selector::all(), q.as_ref()).unwrap();
        let p = m.get("fc.weight").unwrap();
        let decoded = p.quantized().unwrap().dequantize::<f32>();
        let mask = p.mask().unwrap();
        assert!(
            mask.iter_pruned()
                .all(|i| decoded.as_slice().unwrap()[i] == 0.0)
        );
        // Binary: α is the mean magnitude of the kept weights of each row.
        let kept_mean = {
            let v = p.effective();
            let row: Vec<f32> = v
                .outer_iter()
                .next()
                .unwrap()
                .iter()
                .copied()
                .filter(|x| *x != 0.0)
                .collect();
            row.iter().map(|x| x.abs()).sum::<f32>() / row.len() as f32
        };
        if let Some(&d) = decoded
            .outer_iter()
            .next()
            .unwrap()
            .iter()
            .find(|x| **x != 0.0)
        {
            assert!(
                d.abs() > kept_mean * 0.2,
                "decoded {d} vs kept mean {kept_mean}"
            );
        }
        // Pruning more later keeps the stored form consistent.
        let mut m2 = m.clone();
        m2.prune(
            &Selector::all(),
            &MagnitudePruner::magnitude(0.95).unwrap(),
            &Statistics::new(),
        )
        .unwrap();
        let p2 = m2.get("fc.weight").unwrap();
        assert_eq!(p2.quantized().unwrap().dequantize::<f32>(), p2.effective());
        m2.make_permanent(&Selector::all()).unwrap();
        let p2 = m2.get("fc.weight").unwrap();
        assert_eq!(p2.quantized().unwrap().dequantize::<f32>(), *p2.value());
    }
}

/// llama.cpp's Q8_0 weights run in the int8 layer.
#[test]
fn q8_0_weights_run_in_the_int8_layer() {
    use slimnn::quant::{GgmlFormat, GgmlQuantizer, QuantizedLinear};
    let w = common::normal(&[8, 64], 9);
    let q = GgmlQuantizer::new(GgmlFormat::Q8_0)
        .quantize(&w, &QuantContext::new())
        .unwrap();
    let layer = QuantizedLinear::from_quantized(&q, None).unwrap();
    assert_eq!(layer.block(), 32);
    let x = common::normal(&[2, 64], 10)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let y = layer.forward(&x).unwrap();
    let dense = x.dot(
        &q.dequantize::<f32>()
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap()
            .t(),
    );
    let rel = ((&y - &dense).mapv(|e| e * e).sum() / dense.mapv(|e| e * e).sum()).sqrt();
    assert!(rel < 0.02, "{rel}");
}
