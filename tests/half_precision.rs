//! Engine entry points on 16-bit buffers (issue 14, native half precision): pruning,
//! quantization and masks on `&mut [f16]` / `&mut [bf16]` give exactly what the f32 path
//! gives for the widened values, and bad input is the same typed error.

use proptest::prelude::*;
use slimnn::half::{bf16, f16};
use slimnn::ndarray::{ArrayD, IxDyn};
use slimnn::prune::{
    ChannelCriterion, HalfPruner, MagnitudePruner, NmPruner, PruneContext, Pruner, Scope,
    StructuredPruner, UnstructuredPruner,
};
use slimnn::quant::{
    GgmlFormat, GgmlQuantizer, Granularity, HalfQuantizer, KMeansQuantizer, QuantContext,
    Quantizer, Scheme, UniformQuantizer, quantize_ggml, quantize_ggml_half,
};
use slimnn::{Error, HalfFloat, Mask};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + seed as f32 * 0.61) * 0.37).sin() * (1.0 + (i % 7) as f32))
        .collect()
}

fn to_half<H: HalfFloat>(v: &[f32]) -> Vec<H> {
    v.iter().map(|&x| H::from_f32(x)).collect()
}

fn widened<H: HalfFloat>(v: &[H]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn bits<H: HalfFloat>(v: &[H]) -> Vec<u16> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Prunes the 16-bit buffer and, separately, its widened copy through the f32 path;
/// checks the masks agree and the 16-bit result is the f32 result narrowed, with pruned
/// entries +0 and kept entries untouched bit for bit.
fn check_prune<H: HalfFloat>(
    pruner: &dyn Pruner,
    half: &[H],
    shape: &[usize],
    ctx: &PruneContext<'_>,
    run: impl Fn(&dyn Pruner, &mut [H]) -> slimnn::Result<Mask>,
) {
    let mut wide = widened(half);
    let want = pruner.prune_slice(&mut wide, shape, ctx).unwrap();
    let mut got_buf = half.to_vec();
    let got = run(pruner, &mut got_buf).unwrap();
    assert_eq!(got, want, "{}", pruner.describe());
    for (i, (&g, &h)) in got_buf.iter().zip(half).enumerate() {
        let expect = if want.get(i) { h.to_bits() } else { 0 };
        assert_eq!(g.to_bits(), expect, "{} at {i}", pruner.describe());
    }
}

fn pruners() -> Vec<Box<dyn Pruner>> {
    vec![
        Box::new(MagnitudePruner::magnitude(0.5).unwrap()),
        Box::new(MagnitudePruner::magnitude(0.9).unwrap()),
        Box::new(MagnitudePruner::magnitude(0.0).unwrap()),
        Box::new(MagnitudePruner::magnitude(1.0).unwrap()),
        Box::new(
            MagnitudePruner::magnitude(0.3)
                .unwrap()
                .with_scope(Scope::PerOutput),
        ),
        Box::new(UnstructuredPruner::random(7, 0.4).unwrap()),
        Box::new(NmPruner::magnitude(2, 4).unwrap()),
        Box::new(StructuredPruner::new(ChannelCriterion::L2, 0.5).unwrap()),
    ]
}

#[test]
fn every_pruner_on_f16_and_bf16_equals_the_f32_path_on_the_widened_values() {
    let shape = [24, 40];
    let v = values(24 * 40, 1);
    for p in pruners() {
        let ctx = PruneContext::new();
        check_prune(&*p, &to_half::<f16>(&v), &shape, &ctx, |p, w| {
            p.prune_half_slice(w, &shape, &ctx)
        });
        check_prune(&*p, &to_half::<bf16>(&v), &shape, &ctx, |p, w| {
            p.prune_half_slice(w, &shape, &ctx)
        });
    }
}

#[test]
fn magnitude_pruning_of_a_large_bf16_tensor_with_many_ties_equals_the_f32_path() {
    // 300k values on a coarse grid: thousands of ties at the threshold, several tasks.
    let shape = [300, 1000];
    let v: Vec<f32> = values(300_000, 3)
        .iter()
        .map(|x| (x * 8.0).round() / 8.0)
        .collect();
    for amount in [0.1, 0.5, 0.77, 0.999] {
        let p = MagnitudePruner::magnitude(amount).unwrap();
        let ctx = PruneContext::new();
        check_prune(&p, &to_half::<bf16>(&v), &shape, &ctx, |p, w| {
            p.prune_half_slice(w, &shape, &ctx)
        });
        check_prune(&p, &to_half::<f16>(&v), &shape, &ctx, |p, w| {
            p.prune_half_slice(w, &shape, &ctx)
        });
    }
}

#[test]
fn a_prior_mask_is_respected_as_on_the_f32_path() {
    let shape = [8, 16];
    let v = values(128, 2);
    let prior = Mask::from_fn(&shape, |i| i % 5 != 0);
    let ctx = PruneContext::new().with_mask(&prior);
    let p = MagnitudePruner::magnitude(0.6).unwrap();
    check_prune(&p, &to_half::<bf16>(&v), &shape, &ctx, |p, w| {
        p.prune_half_slice(w, &shape, &ctx)
    });
}

#[test]
fn signed_zeros_subnormals_and_extremes_prune_like_their_widened_values() {
    let specials = [
        bf16::from_bits(0x8000),
        bf16::ZERO,
        bf16::from_bits(0x0001),
        bf16::from_bits(0x8001),
        bf16::MAX,
        bf16::MIN,
        bf16::MIN_POSITIVE,
        bf16::from_f32(-1.0),
    ];
    let half: Vec<bf16> = specials.iter().cycle().take(64).copied().collect();
    for amount in [0.25, 0.5, 0.75] {
        let p = MagnitudePruner::magnitude(amount).unwrap();
        let ctx = PruneContext::new();
        check_prune(&p, &half, &[64], &ctx, |p, w| {
            p.prune_half_slice(w, &[64], &ctx)
        });
    }
}

#[test]
fn nan_and_infinity_are_the_same_typed_error_and_leave_the_buffer_alone() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut v = values(64, 4);
        v[37] = bad;
        let mut wide = v.clone();
        let mut half: Vec<bf16> = to_half(&v);
        let before = bits(&half);
        for p in pruners().into_iter().take(2) {
            let want = p.prune_slice(&mut wide, &[8, 8], &PruneContext::new());
            let got = p.prune_half_slice(&mut half, &[8, 8], &PruneContext::new());
            match (want, got) {
                (
                    Err(Error::NonFinite { index: a, .. }),
                    Err(Error::NonFinite { index: b, .. }),
                ) => assert_eq!((a, b), (37, 37)),
                other => panic!("expected NonFinite twice, got {other:?}"),
            }
            assert_eq!(bits(&half), before);
        }
        let q = GgmlQuantizer::new(GgmlFormat::Q8_0);
        assert!(matches!(
            q.quantize_half_slice(&half, &[2, 32], &QuantContext::new()),
            Err(Error::NonFinite { index: 37, .. })
        ));
        assert!(matches!(
            quantize_ggml_half(&half, &[2, 32], GgmlFormat::Q4_0),
            Err(Error::NonFinite { index: 37, .. })
        ));
    }
}

#[test]
fn a_buffer_that_does_not_fit_the_shape_is_a_typed_error() {
    let mut half: Vec<f16> = to_half(&values(10, 5));
    let p = MagnitudePruner::magnitude(0.5).unwrap();
    assert!(matches!(
        p.prune_half_slice(&mut half, &[3, 4], &PruneContext::new()),
        Err(Error::BadShape { .. })
    ));
    let q = UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerTensor).unwrap();
    assert!(matches!(
        q.quantize_half_slice(&half, &[3, 4], &QuantContext::new()),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        GgmlQuantizer::new(GgmlFormat::Q8_0).quantize_half_slice(
            &half,
            &[3, 4],
            &QuantContext::new()
        ),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        Mask::ones(&[11]).apply_half_slice(&mut half),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut out = [0f32; 9];
    assert!(matches!(
        slimnn::tensor::widen(&half, &mut out),
        Err(Error::ShapeMismatch { .. })
    ));
}

fn quantizers() -> Vec<Box<dyn Quantizer>> {
    vec![
        Box::new(
            UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })
                .unwrap(),
        ),
        Box::new(
            UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 32 }).unwrap(),
        ),
        Box::new(KMeansQuantizer::optimal(16).unwrap()),
        Box::new(GgmlQuantizer::new(GgmlFormat::Q8_0)),
        Box::new(GgmlQuantizer::new(GgmlFormat::Q4_0)),
        Box::new(GgmlQuantizer::new(GgmlFormat::Q6_K)),
    ]
}

fn check_quant<H: HalfFloat>(
    q: &dyn Quantizer,
    half: &[H],
    shape: &[usize],
    quantize: impl Fn(&dyn Quantizer, &[H]) -> slimnn::Result<slimnn::quant::QuantizedTensor>,
    fake: impl Fn(&dyn Quantizer, &mut [H]) -> slimnn::Result<()>,
) {
    let wide = ArrayD::from_shape_vec(IxDyn(shape), widened(half)).unwrap();
    let want = q.quantize(&wide, &QuantContext::new()).unwrap();
    let got = quantize(q, half).unwrap();
    assert_eq!(got, want, "{}", q.describe());
    let mut buf = half.to_vec();
    fake(q, &mut buf).unwrap();
    let decoded = want.dequantize::<f32>();
    for (g, d) in buf.iter().zip(decoded.iter()) {
        assert_eq!(g.to_bits(), H::from_f32(*d).to_bits(), "{}", q.describe());
    }
}

#[test]
fn every_quantizer_on_f16_and_bf16_equals_the_f32_path_on_the_widened_values() {
    let shape = [16, 256];
    let v = values(16 * 256, 6);
    for q in quantizers() {
        check_quant(
            &*q,
            &to_half::<f16>(&v),
            &shape,
            |q, w| q.quantize_half_slice(w, &shape, &QuantContext::new()),
            |q, w| q.fake_quantize_half_slice(w, &shape, &QuantContext::new()),
        );
        check_quant(
            &*q,
            &to_half::<bf16>(&v),
            &shape,
            |q, w| q.quantize_half_slice(w, &shape, &QuantContext::new()),
            |q, w| q.fake_quantize_half_slice(w, &shape, &QuantContext::new()),
        );
    }
}

#[test]
fn ggml_blocks_from_16_bit_values_match_the_f32_blocks_for_every_format() {
    // More than one conversion block (4096) and more than one task.
    let shape = [40, 512];
    let v = values(40 * 512, 8);
    for format in [
        GgmlFormat::Q8_0,
        GgmlFormat::Q4_0,
        GgmlFormat::Q4_K,
        GgmlFormat::Q6_K,
    ] {
        let b: Vec<bf16> = to_half(&v);
        let h: Vec<f16> = to_half(&v);
        assert_eq!(
            quantize_ggml_half(&b, &shape, format).unwrap(),
            quantize_ggml(&widened(&b), &shape, format).unwrap()
        );
        assert_eq!(
            quantize_ggml_half(&h, &shape, format).unwrap(),
            quantize_ggml(&widened(&h), &shape, format).unwrap()
        );
    }
}

#[test]
fn widen_and_narrow_round_trip_every_bf16_and_f16_value() {
    let b: Vec<bf16> = (0..=u16::MAX)
        .map(bf16::from_bits)
        .filter(|x| !x.is_nan())
        .collect();
    let mut wide = vec![0f32; b.len()];
    slimnn::tensor::widen(&b, &mut wide).unwrap();
    let mut back = vec![bf16::ZERO; b.len()];
    slimnn::tensor::narrow(&wide, &mut back).unwrap();
    assert_eq!(bits(&back), bits(&b));
    let h: Vec<f16> = (0..=u16::MAX)
        .map(f16::from_bits)
        .filter(|x| !x.is_nan())
        .collect();
    let mut wide = vec![0f32; h.len()];
    slimnn::tensor::widen(&h, &mut wide).unwrap();
    let mut back = vec![f16::ZERO; h.len()];
    slimnn::tensor::narrow(&wide, &mut back).unwrap();
    assert_eq!(bits(&back), bits(&h));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary finite bf16 patterns (any exponent, heavy ties) and amounts: the
    /// in-place magnitude path equals the f32 path.
    #[test]
    fn magnitude_on_arbitrary_bf16_equals_the_f32_path(
        raw in prop::collection::vec(prop_oneof![any::<u16>(), 0u16..8, 0x8000u16..0x8008], 1..400),
        amount in 0.0f64..=1.0,
    ) {
        let half: Vec<bf16> = raw
            .iter()
            .map(|&b| bf16::from_bits(if b & 0x7FFF >= 0x7F80 { b & 0x807F } else { b }))
            .collect();
        let n = half.len();
        let p = MagnitudePruner::magnitude(amount).unwrap();
        let ctx = PruneContext::new();
        check_prune(&p, &half, &[n], &ctx, |p, w| p.prune_half_slice(w, &[n], &ctx));
    }
}

/// Untouched f16 and bf16 tensors come back byte for byte through load → compress →
/// save: quiet and signalling NaNs with any payload, −0, subnormals, infinities.
#[test]
fn untouched_16_bit_tensors_are_written_back_byte_identical() {
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};
    use slimnn::io::safetensors::SaveOptions;
    use slimnn::prune::Statistics;
    use slimnn::{Model, Selector};

    let specials: [u16; 12] = [
        0x0000, 0x8000, 0x0001, 0x8001, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81, 0xFF85, 0x7C01,
        0xFE00,
    ];
    let patterns: Vec<u16> = specials
        .iter()
        .copied()
        .chain((0..52u16).map(|i| i.wrapping_mul(2654).rotate_left(3)))
        .collect();
    let bytes16: Vec<u8> = patterns.iter().flat_map(|b| b.to_le_bytes()).collect();
    let weight: Vec<u8> = values(32, 9).iter().flat_map(|x| x.to_le_bytes()).collect();
    let file = safetensors::serialize(
        [
            (
                "fc.weight",
                TensorView::new(Dtype::F32, vec![4, 8], &weight).unwrap(),
            ),
            (
                "ln.weight",
                TensorView::new(Dtype::BF16, vec![64], &bytes16).unwrap(),
            ),
            (
                "ln2.weight",
                TensorView::new(Dtype::F16, vec![64], &bytes16).unwrap(),
            ),
        ],
        None,
    )
    .unwrap();
    let mut model = Model::from_safetensors(&file, "test").unwrap();
    model
        .prune(
            &Selector::prunable(),
            &MagnitudePruner::magnitude(0.5).unwrap(),
            &Statistics::new(),
        )
        .unwrap();
    let out = model.to_safetensors(&SaveOptions::default()).unwrap();
    let st = SafeTensors::deserialize(&out).unwrap();
    for name in ["ln.weight", "ln2.weight"] {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.data(), &bytes16[..], "{name}");
    }
    assert_eq!(st.tensor("ln.weight").unwrap().dtype(), Dtype::BF16);
    assert_eq!(st.tensor("ln2.weight").unwrap().dtype(), Dtype::F16);
}
