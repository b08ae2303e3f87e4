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
