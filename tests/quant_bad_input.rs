//! Bad input to the quantization family: typed errors, never panics.

mod common;

use common::normal;
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use slimnn::Error;
use slimnn::quant::{
    BinaryQuantizer, Calibration, Decoding, GgmlFormat, GgmlQuantizer, Granularity,
    HistogramObserver, KMeansInit, KMeansQuantizer, Levels, MinMaxObserver, MovingAverageObserver,
    Observer, PackedCodes, PowerOfTwoQuantizer, ProductQuantizer, QuantContext, QuantizedLinear,
    QuantizedTensor, Quantizer, Scheme, TernaryQuantizer, UniformQuantizer, from_ggml_blocks,
    group_matmul,
};

fn ctx<'a>() -> QuantContext<'a> {
    QuantContext::new().with_name("fc.weight")
}

#[test]
fn bits_out_of_range() {
    for bits in [0u8, 1, 9, 16] {
        assert!(matches!(
            UniformQuantizer::new(bits, Scheme::Symmetric, Granularity::PerTensor),
            Err(Error::InvalidParameter { name: "bits", .. })
        ));
    }
    for bits in [0u8, 1, 9] {
        assert!(PowerOfTwoQuantizer::new(bits, Granularity::PerTensor).is_err());
    }
    assert!(PackedCodes::pack(&[1, 2], 0).is_err());
    assert!(PackedCodes::pack(&[1, 2], 9).is_err());
    assert!(matches!(
        PackedCodes::pack(&[1, 16], 4),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(PackedCodes::from_bytes(vec![0; 3], 4, 7).is_err());
    assert!(
        PackedCodes::from_bytes(vec![0xF0], 4, 1).is_err(),
        "set padding bits"
    );
    for k in [0usize, 1, 257] {
        assert!(KMeansQuantizer::optimal(k).is_err());
        assert!(KMeansQuantizer::lloyd(k, KMeansInit::Linear).is_err());
    }
    assert!(ProductQuantizer::new(0, 16, 0).is_err());
    assert!(ProductQuantizer::new(4, 1, 0).is_err());
    assert!(ProductQuantizer::new(4, 300, 0).is_err());
}

#[test]
fn groups_and_axes_that_do_not_fit() {
    let w = normal(&[4, 100], 1);
    let err = UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 128 })
        .unwrap()
        .quantize(&w, &ctx())
        .unwrap_err();
    assert!(
        matches!(&err, Error::BadShape { what, reason, .. } if what.contains("fc.weight") && reason.contains("does not divide")),
        "{err}"
    );
    assert!(UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 0 }).is_err());
    let err = UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 2 })
        .unwrap()
        .quantize(&w, &ctx())
        .unwrap_err();
    assert!(matches!(err, Error::BadShape { .. }), "{err}");
    assert!(
        BinaryQuantizer::new(Granularity::PerChannel { axis: 5 })
            .quantize(&w, &ctx())
            .is_err()
    );
    assert!(
        GgmlQuantizer::new(GgmlFormat::Q8_0)
            .quantize(&w, &ctx())
            .is_err(),
        "rows not a multiple of 32"
    );
    assert!(
        ProductQuantizer::new(3, 2, 0)
            .unwrap()
            .quantize(&w, &ctx())
            .is_err(),
        "3 does not divide 100"
    );
    assert!(
        ProductQuantizer::new(4, 8, 0)
            .unwrap()
            .quantize(&w, &ctx())
            .is_err(),
        "8 codewords for 4 rows"
    );
    assert!(
        ProductQuantizer::new(4, 2, 0)
            .unwrap()
            .quantize(&normal(&[16], 1), &ctx())
            .is_err(),
        "1-D"
    );
}

#[test]
fn k_larger_than_the_distinct_values() {
    let w = ArrayD::from_shape_vec(IxDyn(&[6]), vec![1.0f32, 1.0, 2.0, 2.0, 3.0, 3.0]).unwrap();
    for q in [
        KMeansQuantizer::optimal(4).unwrap(),
        KMeansQuantizer::lloyd(4, KMeansInit::Density).unwrap(),
    ] {
        let err = q.quantize(&w, &ctx()).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidParameter { name: "k", expected, .. } if expected.contains("3")),
            "{err}"
        );
    }
    assert!(
        KMeansQuantizer::optimal(3)
            .unwrap()
            .quantize(&w, &ctx())
            .is_ok()
    );
}

#[test]
fn non_finite_weights_and_calibration_data() {
    let mut w = normal(&[8, 32], 1);
    w[[3, 7]] = f32::NAN;
    let quantizers: Vec<Box<dyn Quantizer>> = vec![
        Box::new(
            UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })
                .unwrap(),
        ),
        Box::new(
            UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 16 })
                .unwrap()
                .with_calibration(Calibration::Mse)
                .unwrap(),
        ),
        Box::new(BinaryQuantizer::new(Granularity::PerTensor)),
        Box::new(TernaryQuantizer::new(Granularity::PerTensor)),
        Box::new(PowerOfTwoQuantizer::new(4, Granularity::PerTensor).unwrap()),
        Box::new(KMeansQuantizer::optimal(4).unwrap()),
        Box::new(ProductQuantizer::new(4, 4, 0).unwrap()),
        Box::new(GgmlQuantizer::new(GgmlFormat::Q4_0)),
    ];
    for q in &quantizers {
        match q.quantize(&w, &ctx()) {
            Err(Error::NonFinite { index, what, .. }) => {
                assert_eq!(index, 3 * 32 + 7);
                assert!(what.contains("fc.weight"));
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }
    let mut batch = normal(&[4, 4], 2);
    batch[[0, 1]] = f32::INFINITY;
    assert!(matches!(
        MinMaxObserver::new().observe(&batch),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        MovingAverageObserver::new(0.01).unwrap().observe(&batch),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        HistogramObserver::new(Calibration::Kl, Scheme::Symmetric, 8)
            .unwrap()
            .observe(&batch),
        Err(Error::NonFinite { .. })
    ));
    let layer = QuantizedLinear::new(&Array2::<f32>::ones((4, 32)), None).unwrap();
    let mut x = Array2::<f32>::ones((2, 32));
    x[[1, 3]] = f32::NAN;
    assert!(matches!(layer.forward(&x), Err(Error::NonFinite { .. })));
}

#[test]
fn empty_tensors_and_observers() {
    let w = ArrayD::<f32>::zeros(IxDyn(&[0, 8]));
    assert!(matches!(
        UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerTensor)
            .unwrap()
            .quantize(&w, &ctx()),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        KMeansQuantizer::optimal(2).unwrap().quantize(&w, &ctx()),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        MinMaxObserver::new().range(),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        MinMaxObserver::new().observe(&w),
        Err(Error::Empty { .. })
    ));
    assert!(MovingAverageObserver::new(0.0).is_err());
    assert!(MovingAverageObserver::new(1.5).is_err());
    // Everything pruned: nothing to fit a codebook to.
    let w = normal(&[4, 4], 3);
    let mask = slimnn::Mask::zeros(&[4, 4]);
    assert!(matches!(
        KMeansQuantizer::optimal(2)
            .unwrap()
            .quantize(&w, &ctx().with_mask(&mask)),
        Err(Error::Empty { .. })
    ));
    let percentile = UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerTensor)
        .unwrap()
        .with_calibration(Calibration::Percentile(0.3));
    assert!(matches!(
        percentile,
        Err(Error::InvalidParameter {
            name: "percentile",
            ..
        })
    ));
}

#[test]
fn codebooks_and_codes_that_do_not_match() {
    let codes = PackedCodes::pack(&[0, 1, 2, 3], 2).unwrap();
    let table = |t: Vec<f32>| Decoding::Scalar {
        levels: Levels::Table(t),
        granularity: Granularity::PerTensor,
        scales: vec![1.0],
        zero_points: vec![],
        scale_bits: 32,
    };
    // Code 3 has no entry in a 3-entry codebook.
    assert!(matches!(
        QuantizedTensor::new(&[4], codes.clone(), table(vec![0.0, 1.0, 2.0])),
        Err(Error::InvalidParameter { .. })
    ));
    // Codes for 4 elements, shape for 5.
    assert!(matches!(
        QuantizedTensor::new(&[5], codes.clone(), table(vec![0.0; 4])),
        Err(Error::ShapeMismatch { .. })
    ));
    // Scales for the wrong number of groups.
    let bad_scales = Decoding::Scalar {
        levels: Levels::Integers { min: 0, max: 3 },
        granularity: Granularity::PerChannel { axis: 0 },
        scales: vec![1.0; 3],
        zero_points: vec![],
        scale_bits: 32,
    };
    assert!(matches!(
        QuantizedTensor::new(&[2, 2], codes.clone(), bad_scales),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(
        QuantizedTensor::new(&[4], codes.clone(), table(vec![0.0, f32::NAN, 1.0, 2.0])).is_err()
    );
    // Product codebooks of the wrong size.
    let pq = Decoding::Product {
        sub_dim: 2,
        codewords: 4,
        codebooks: vec![0.0; 7],
    };
    assert!(matches!(
        QuantizedTensor::new(&[2, 4], codes.clone(), pq),
        Err(Error::ShapeMismatch { .. })
    ));
    // A fine-tuned codebook of the wrong length.
    let mut q = QuantizedTensor::new(&[4], codes, table(vec![0.0, 1.0, 2.0, 3.0])).unwrap();
    assert!(q.set_table(vec![0.0; 3]).is_err());
    assert!(q.set_table(vec![0.0, 1.0, f32::INFINITY, 3.0]).is_err());
    // ggml blocks of the wrong length, or with a non-finite scale.
    assert!(from_ggml_blocks(&[0; 33], &[32], GgmlFormat::Q8_0).is_err());
    let mut inf = vec![0u8; 34];
    inf[..2].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    assert!(from_ggml_blocks(&inf, &[32], GgmlFormat::Q8_0).is_err());
}

#[test]
fn quantized_layers_with_wrong_shapes() {
    let w = Array2::from_shape_fn((8, 64), |(o, i)| (o + i) as f32 * 0.01);
    let layer = QuantizedLinear::new(&w, None).unwrap();
    assert!(matches!(
        layer.forward(&Array2::zeros((2, 63))),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(QuantizedLinear::new(&w, Some(&Array1::zeros(7))).is_err());
    assert!(
        QuantizedLinear::with_block(&w, None, 48).is_err(),
        "48 does not divide 64"
    );
    let q4 = UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 32 })
        .unwrap()
        .quantize(&w.view().into_dyn(), &ctx())
        .unwrap();
    assert!(
        QuantizedLinear::from_quantized(&q4, None).is_err(),
        "4-bit affine is not int8 symmetric"
    );
    assert!(matches!(
        group_matmul(&Array2::zeros((2, 63)), &q4, None),
        Err(Error::ShapeMismatch { .. })
    ));
    let per_tensor = UniformQuantizer::new(4, Scheme::Affine, Granularity::PerTensor)
        .unwrap()
        .quantize(&w.view().into_dyn(), &ctx())
        .unwrap();
    assert!(group_matmul(&Array2::zeros((2, 64)), &per_tensor, None).is_err());
}

#[test]
fn observers_and_decodings_out_of_range() {
    assert!(HistogramObserver::new(Calibration::Kl, Scheme::Symmetric, 1).is_err());
    assert!(HistogramObserver::new(Calibration::Percentile(0.2), Scheme::Affine, 8).is_err());
    let codes = PackedCodes::pack(&[0, 1, 2, 3], 2).unwrap();
    let scalar = |levels, zero_points: Vec<f32>, scale_bits| Decoding::Scalar {
        levels,
        granularity: Granularity::PerTensor,
        scales: vec![0.1],
        zero_points,
        scale_bits,
    };
    // Code 3 is past the levels 0..=2; a fractional zero point; 0.1 is not exact in f16.
    assert!(
        QuantizedTensor::new(
            &[4],
            codes.clone(),
            scalar(Levels::Integers { min: 0, max: 2 }, vec![], 32)
        )
        .is_err()
    );
    assert!(
        QuantizedTensor::new(
            &[4],
            codes.clone(),
            scalar(Levels::Integers { min: 0, max: 3 }, vec![1.5], 32)
        )
        .is_err()
    );
    assert!(
        QuantizedTensor::new(
            &[4],
            codes.clone(),
            scalar(Levels::Integers { min: 0, max: 3 }, vec![], 16)
        )
        .is_err()
    );
    let q = QuantizedTensor::new(
        &[4],
        codes,
        scalar(Levels::Integers { min: 0, max: 3 }, vec![1.0], 32),
    )
    .unwrap();
    assert!(matches!(
        q.dequantize_into(&mut [0.0; 3]),
        Err(Error::ShapeMismatch { .. })
    ));
    // Shapes whose element count overflows.
    assert!(from_ggml_blocks(&[], &[usize::MAX, 64], GgmlFormat::Q8_0).is_err());
    let pq = Decoding::Product {
        sub_dim: 1,
        codewords: usize::MAX,
        codebooks: vec![],
    };
    assert!(QuantizedTensor::new(&[1, 2], PackedCodes::pack(&[0, 0], 1).unwrap(), pq).is_err());
    let w = ArrayD::<f32>::zeros(IxDyn(&[0, 4]));
    assert!(
        UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })
            .unwrap()
            .quantize(&w, &ctx())
            .is_err()
    );
}

#[test]
fn product_codewords_beyond_the_distinct_subvectors() {
    // 8 rows but only 2 distinct subvectors per slice: 4 codewords would be wasted.
    let w = ArrayD::from_shape_fn(IxDyn(&[8, 4]), |i| (i[0] % 2) as f32);
    let err = ProductQuantizer::new(2, 4, 0)
        .unwrap()
        .quantize(&w, &ctx())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                name: "codewords",
                ..
            }
        ),
        "{err}"
    );
}

/// Values whose block scale overflows f16 are an error, not blocks of infinities.
#[test]
fn ggml_scales_beyond_f16_are_an_overflow_error() {
    use slimnn::quant::quantize_ggml;
    for (f, n) in [
        (GgmlFormat::Q8_0, 32),
        (GgmlFormat::Q4_0, 32),
        (GgmlFormat::Q4_K, 256),
        (GgmlFormat::Q6_K, 256),
    ] {
        let mut x = vec![0.5f32; 2 * n];
        x[n + 3] = 1.0e10;
        assert!(
            matches!(quantize_ggml(&x, &[2, n], f), Err(Error::Overflow { .. })),
            "{f:?}"
        );
        x[n + 3] = 1.0;
        assert!(quantize_ggml(&x, &[2, n], f).is_ok(), "{f:?}");
    }
}
