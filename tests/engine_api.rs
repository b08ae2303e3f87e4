//! What an inference engine needs from slimnn's public API alone (issue 10): int8 codes
//! and scales without matching on the decoding, int8 products over raw codes (also into
//! the caller's buffer), the channels a structured pruner removes, `?` on ndarray shape
//! errors, the matching ndarray re-exported, and an error variant for its own methods.

use slimnn::Error;
use slimnn::ndarray::{Array2, ArrayView2, IxDyn};
use slimnn::prune::{ChannelCriterion, PruneContext, Pruner, StructuredPruner};
use slimnn::quant::{
    Granularity, KMeansQuantizer, QuantContext, QuantizedLinear, Quantizer, Scheme,
    UniformQuantizer,
};
use slimnn::sparse_ops::{int8_matmul, int8_matmul_into};

fn weight(out: usize, inputs: usize) -> Array2<f32> {
    Array2::from_shape_fn((out, inputs), |(o, i)| {
        ((o * inputs + i) as f32 * 0.37).sin()
    })
}

#[test]
fn int8_codes_decode_like_the_tensor_and_run_in_the_int8_product() {
    let w = weight(80, 64);
    let x = Array2::from_shape_fn((3, 64), |(r, i)| ((r + i) as f32 * 0.1).cos());
    for granularity in [
        Granularity::PerTensor,
        Granularity::PerChannel { axis: 0 },
        Granularity::PerGroup { size: 32 },
    ] {
        let q = UniformQuantizer::new(8, Scheme::Symmetric, granularity)
            .unwrap()
            .quantize(&w.view().into_dyn(), &QuantContext::new())
            .unwrap();
        let int8 = q.int8_codes().expect("symmetric int8");
        assert_eq!(int8.shape, [80, 64]);
        let (block, scales) = int8.row_blocks().unwrap();
        let decoded: Vec<f32> = int8
            .codes
            .iter()
            .enumerate()
            .map(|(i, &c)| scales[i / block] * c as f32)
            .collect();
        assert_eq!(
            decoded,
            q.dequantize::<f32>().iter().copied().collect::<Vec<_>>()
        );

        let y = int8_matmul([80, 64], &int8.codes, &scales, block, &x).unwrap();
        let mut y_into = vec![f32::NAN; 3 * 80];
        int8_matmul_into(
            [80, 64],
            &int8.codes,
            &scales,
            block,
            x.as_slice().unwrap(),
            &mut y_into,
        )
        .unwrap();
        assert_eq!(y.as_slice().unwrap(), y_into.as_slice());
        if granularity != Granularity::PerTensor {
            let layer = QuantizedLinear::from_quantized(&q, None).unwrap();
            assert_eq!(layer.forward(&x).unwrap(), y);
            let mut y_layer = vec![0.0; 3 * 80];
            layer
                .forward_into(x.as_slice().unwrap(), &mut y_layer)
                .unwrap();
            assert_eq!(y_layer, y_into);
        }
        let exact = x.dot(&w.t());
        let err = (&y - &exact).mapv(f32::abs).fold(0.0f32, |m, &e| m.max(e));
        assert!(err < 0.1, "{granularity:?}: {err}");
    }
    // Codebooks and affine zero points have no int8 form.
    let w = w.into_dyn();
    let kmeans = KMeansQuantizer::optimal(16)
        .unwrap()
        .quantize(&w, &QuantContext::new())
        .unwrap();
    assert!(kmeans.int8_codes().is_none());
    let affine = UniformQuantizer::new(8, Scheme::Affine, Granularity::PerTensor)
        .unwrap()
        .quantize(&w, &QuantContext::new())
        .unwrap();
    assert!(affine.int8_codes().is_none());
}

#[test]
fn int8_product_checks_raw_parts() {
    let x = [1.0f32, 2.0];
    let mut y = [0.0f32; 2];
    let err = int8_matmul_into([2, 2], &[1, -128, 3, 4], &[1.0, 1.0], 2, &x, &mut y);
    assert!(
        matches!(err, Err(Error::InvalidParameter { name: "codes", .. })),
        "{err:?}"
    );
    let err = int8_matmul_into([2, 2], &[1, 2, 3, 4], &[1.0], 2, &x, &mut y);
    assert!(
        matches!(err, Err(Error::InvalidParameter { name: "scales", .. })),
        "{err:?}"
    );
    let err = int8_matmul_into([2, 2], &[1, 2, 3, 4], &[1.0, 1.0], 3, &x, &mut y);
    assert!(
        matches!(err, Err(Error::InvalidParameter { name: "block", .. })),
        "{err:?}"
    );
    let err = int8_matmul_into([2, 2], &[1, 2, 3, 4], &[1.0, 1.0], 2, &x, &mut y[..1]);
    assert!(matches!(err, Err(Error::BadShape { .. })), "{err:?}");
    int8_matmul_into([2, 2], &[1, 2, 3, 4], &[1.0, 0.5], 2, &x, &mut y).unwrap();
    assert!(
        (y[0] - 5.0).abs() < 0.05 && (y[1] - 5.5).abs() < 0.05,
        "{y:?}"
    );
}

#[test]
fn structured_pruners_name_the_channels_they_remove() {
    let w = weight(8, 12).into_dyn();
    for (criterion, amount) in [(ChannelCriterion::L1, 0.5), (ChannelCriterion::L2, 0.25)] {
        let pruner = StructuredPruner::new(criterion, amount).unwrap();
        let removed = pruner.removed_channels(&w, &PruneContext::new()).unwrap();
        assert_eq!(removed.len(), (8.0 * amount) as usize);
        let mask = pruner.mask(&w, &PruneContext::new()).unwrap();
        let dead: Vec<usize> = (0..8)
            .filter(|r| (0..12).all(|c| !mask.get(r * 12 + c)))
            .collect();
        assert_eq!(removed, dead);
    }
}

#[test]
fn ndarray_errors_and_extension_errors_are_slimnn_errors() {
    fn view(data: &[f32]) -> slimnn::Result<ArrayView2<'_, f32>> {
        Ok(ArrayView2::from_shape((2, 3), data)?)
    }
    assert!(view(&[0.0; 6]).is_ok());
    assert!(matches!(view(&[0.0; 5]), Err(Error::ArrayShape(_))));

    struct Failing;
    impl Pruner for Failing {
        fn mask(
            &self,
            _: &slimnn::ndarray::ArrayRef<f32, IxDyn>,
            _: &PruneContext<'_, f32>,
        ) -> slimnn::Result<slimnn::Mask> {
            Err(Error::extension("Failing", "no data"))
        }
    }
    let w = weight(2, 2).into_dyn();
    let err = Failing.mask(&w, &PruneContext::new()).unwrap_err();
    assert!(matches!(&err, Error::Extension { method, .. } if method == "Failing"));
    assert_eq!(err.to_string(), "Failing: no data");
}
