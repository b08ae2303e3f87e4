//! The compressed model file: every form of every parameter comes back exactly, the
//! report's sizes are the file's, and corrupt files are typed errors.

use ndarray::{Array, ArrayD, IxDyn};
use proptest::prelude::*;
use slimnn::lowrank::{Rank, TruncatedSvd, Tucker2};
use slimnn::pipeline::{Compressor, Encode, Factorize, Pipeline, Prune, PruneGlobal, Quantize};
use slimnn::prune::{GlobalPruner, MagnitudePruner};
use slimnn::quant::{
    GgmlFormat, GgmlQuantizer, Granularity, KMeansInit, KMeansQuantizer, ProductQuantizer, Scheme,
    TernaryQuantizer, UniformQuantizer,
};
use slimnn::store::{self, Encoding, Positions};
use slimnn::{DType, Error, LayerKind, Model, RawTensor, Selector};

fn values(shape: &[usize], seed: usize) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    Array::from_shape_vec(
        IxDyn(shape),
        (0..n)
            .map(|k| ((k * 7 + seed * 131) as f32 * 0.618).sin())
            .collect(),
    )
    .unwrap()
}

fn model() -> Model {
    let mut m = Model::new();
    m.add("fc1.weight", values(&[24, 64], 1)).unwrap();
    m.add("fc1.bias", values(&[24], 2)).unwrap();
    m.add_param(
        "conv.weight",
        LayerKind::Conv2d,
        DType::F16,
        values(&[8, 4, 3, 3], 3),
    )
    .unwrap();
    m.add_param(
        "fc2.weight",
        LayerKind::Linear,
        DType::BF16,
        values(&[10, 24], 4),
    )
    .unwrap();
    m.add_param(
        "fc3.weight",
        LayerKind::Linear,
        DType::F64,
        values(&[6, 10], 5),
    )
    .unwrap();
    m.add_raw(RawTensor {
        name: "steps".into(),
        dtype: "I64".into(),
        shape: vec![1],
        bytes: 7i64.to_le_bytes().to_vec(),
    })
    .unwrap();
    m.metadata_mut().insert("format".into(), "pt".into());
    m
}

/// Everything a parameter holds, compared exactly.
fn assert_same(a: &Model, b: &Model) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.metadata(), b.metadata());
    assert_eq!(a.raw_tensors(), b.raw_tensors());
    for p in a.params() {
        let q = b.get(p.name()).unwrap();
        assert_eq!(p.kind(), q.kind(), "{}", p.name());
        assert_eq!(p.dtype(), q.dtype(), "{}", p.name());
        let (x, y) = (p.effective(), q.effective());
        let bits = |v: &ArrayD<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        // Parameters stored in 16-bit types come back rounded to them, as safetensors.
        if p.dtype() == DType::F32 || p.quantized().is_some() || p.factorization().is_some() {
            assert_eq!(bits(&x), bits(&y), "{}", p.name());
        }
        assert_eq!(p.mask(), q.mask(), "{}", p.name());
        assert_eq!(p.factorization(), q.factorization(), "{}", p.name());
        assert_eq!(
            p.quantized().map(|t| t.dequantize::<f32>()),
            q.quantized().map(|t| t.dequantize::<f32>()),
            "{}",
            p.name()
        );
    }
}

fn roundtrip(m: &Model) -> Model {
    let bytes = store::to_bytes(m).unwrap();
    let back = store::from_bytes(&bytes).unwrap();
    // The loaded model knows how it was encoded: it writes the same bytes.
    assert_eq!(store::to_bytes(&back).unwrap(), bytes);
    // Once stored, values are in their dtype: a second trip is exact everywhere.
    let again = store::from_bytes(&store::to_bytes(&back).unwrap()).unwrap();
    assert_same(&back, &again);
    back
}

const ENCODINGS: [Positions; 6] = [
    Positions::Auto,
    Positions::Dense,
    Positions::Bitmask,
    Positions::Csr,
    Positions::RelativeIndex { bits: 4 },
    Positions::RelativeIndex { bits: 2 },
];

fn every_encoding(run: impl Fn(&mut Model)) {
    for positions in ENCODINGS {
        for huffman in [false, true] {
            let mut m = model();
            run(&mut m);
            Encode::new(Selector::all(), Encoding { positions, huffman })
                .compress(&mut m)
                .unwrap();
            let back = roundtrip(&m);
            assert_same(&m, &back);
        }
    }
}

#[test]
fn dense_models_round_trip() {
    every_encoding(|_| {});
}

#[test]
fn pruned_models_round_trip() {
    every_encoding(|m| {
        Prune::new(
            Selector::prunable(),
            MagnitudePruner::magnitude(0.8).unwrap(),
        )
        .compress(m)
        .unwrap();
    });
}

#[test]
fn pruned_and_permanent_models_round_trip() {
    every_encoding(|m| {
        Prune::new(
            Selector::prunable(),
            MagnitudePruner::magnitude(0.7).unwrap(),
        )
        .compress(m)
        .unwrap();
        m.make_permanent(&Selector::all()).unwrap();
    });
}

#[test]
fn quantized_models_round_trip() {
    let linear = Selector::kinds(&[LayerKind::Linear]);
    let steps: Vec<Box<dyn Compressor>> = vec![
        Box::new(Quantize::new(
            linear.clone(),
            KMeansQuantizer::optimal(8).unwrap(),
        )),
        Box::new(Quantize::new(
            linear.clone(),
            UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 2 }).unwrap(),
        )),
        Box::new(Quantize::new(
            linear.clone(),
            UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })
                .unwrap(),
        )),
        Box::new(Quantize::new(
            linear.clone(),
            TernaryQuantizer::new(Granularity::PerChannel { axis: 0 }),
        )),
        Box::new(Quantize::new(
            Selector::glob("fc1.weight"),
            ProductQuantizer::new(4, 8, 1).unwrap(),
        )),
        Box::new(Quantize::new(
            Selector::glob("fc1.weight"),
            GgmlQuantizer::new(GgmlFormat::Q4_0),
        )),
    ];
    for step in &steps {
        every_encoding(|m| step.compress(m).unwrap());
        every_encoding(|m| {
            PruneGlobal::new(Selector::prunable(), GlobalPruner::magnitude(0.75).unwrap())
                .compress(m)
                .unwrap();
            step.compress(m).unwrap();
        });
    }
}

#[test]
fn factorized_models_round_trip() {
    every_encoding(|m| {
        Factorize::new(
            Selector::kinds(&[LayerKind::Linear]),
            TruncatedSvd::new(Rank::Fixed(3)).unwrap(),
        )
        .compress(m)
        .unwrap();
        Factorize::new(
            Selector::kinds(&[LayerKind::Conv2d]),
            Tucker2::new(Rank::Fixed(2), Rank::Fixed(2)).unwrap(),
        )
        .compress(m)
        .unwrap();
    });
}

#[test]
fn the_report_gives_the_bytes_the_file_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.slim");
    let mut m = model();
    let weights = Selector::prunable();
    let report = Pipeline::new()
        .then(PruneGlobal::new(
            weights.clone(),
            GlobalPruner::magnitude(0.9).unwrap(),
        ))
        .then(Quantize::new(
            weights.clone(),
            KMeansQuantizer::lloyd(4, KMeansInit::Linear).unwrap(),
        ))
        .then(Encode::new(
            Selector::all(),
            Encoding {
                positions: Positions::RelativeIndex { bits: 4 },
                huffman: true,
            },
        ))
        .run(&mut m)
        .unwrap();
    m.save_compressed(&path).unwrap();
    let on_disk = std::fs::metadata(&path).unwrap().len() as usize;
    assert_eq!(report.file_bytes, on_disk);
    let per_param: usize = report.params.iter().map(|p| p.stored.total()).sum();
    assert!(
        per_param <= on_disk && on_disk - per_param < 200,
        "{per_param} vs {on_disk}"
    );
    assert_same(&m, &Model::load_compressed(&path).unwrap());
}

#[test]
fn corrupt_files_are_typed_errors() {
    let mut m = model();
    PruneGlobal::new(Selector::prunable(), GlobalPruner::magnitude(0.5).unwrap())
        .compress(&mut m)
        .unwrap();
    Quantize::new(Selector::prunable(), KMeansQuantizer::optimal(4).unwrap())
        .compress(&mut m)
        .unwrap();
    let bytes = store::to_bytes(&m).unwrap();
    let bad = |b: &[u8]| matches!(store::from_bytes(b), Err(Error::InvalidFormat { .. }));
    for cut in 0..bytes.len() {
        assert!(bad(&bytes[..cut]), "truncated at {cut}");
    }
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        assert!(bad(&b), "byte {i} flipped");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(bad(&longer));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the pipeline, the report's sizes are the bytes written.
    #[test]
    fn report_bytes_are_the_bytes_written(
        sparsity in 0.0f64..0.97,
        levels in 2usize..12,
        positions in 0usize..ENCODINGS.len(),
        huffman in any::<bool>(),
        quantize in any::<bool>(),
    ) {
        let mut m = model();
        let weights = Selector::prunable();
        let mut pipeline = Pipeline::new()
            .then(PruneGlobal::new(weights.clone(), GlobalPruner::magnitude(sparsity).unwrap()));
        if quantize {
            pipeline = pipeline.then(Quantize::new(
                Selector::glob("fc1.weight"),
                KMeansQuantizer::lloyd(levels, KMeansInit::Linear).unwrap(),
            ));
        }
        let encoding = Encoding { positions: ENCODINGS[positions], huffman };
        let report = pipeline.then(Encode::new(Selector::all(), encoding)).run(&mut m).unwrap();
        let bytes = store::to_bytes(&m).unwrap();
        prop_assert_eq!(report.file_bytes, bytes.len());
        let per_param: usize = report.params.iter().map(|p| p.stored.total()).sum();
        prop_assert!(per_param <= bytes.len() && bytes.len() - per_param < 200);
        for p in &report.params {
            // A Huffman-coded stream is within a bit per symbol of its entropy, and
            // never below it.
            prop_assert!(p.huffman_bits as f64 + 1e-6 >= p.entropy_bits);
        }
        assert_same(&m, &store::from_bytes(&bytes).unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Hostile bytes are a format error, never a panic. (Random bytes stop at the magic
    /// or the header's checksum: `tests/store_memory.rs` mutates records behind valid
    /// checksums.)
    #[test]
    fn garbage_is_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..400), magic in any::<bool>()) {
        let mut b = bytes;
        if magic && b.len() >= 12 {
            b[..8].copy_from_slice(b"SLIMNNCM");
            b[8..12].copy_from_slice(&1u32.to_le_bytes());
        }
        let r = store::from_bytes(&b);
        prop_assert!(matches!(r, Err(Error::InvalidFormat { .. })), "{:?}", r.map(|m| m.len()));
    }
}
