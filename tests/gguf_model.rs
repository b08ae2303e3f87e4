//! A model as GGUF and back: ggml-quantized parameters keep their blocks, dense ones
//! their dtype, metadata becomes string key-values; forms GGUF cannot hold are refused
//! before anything is written. And `slimnn compress ... --format gguf`.

use half::f16;
use ndarray::{Array, ArrayD, Dimension, IxDyn};
use slimnn::io::GgufOptions;
use slimnn::io::gguf::{Gguf, GgufType, GgufValue};
use slimnn::model::{DType, LayerKind};
use slimnn::quant::{
    GgmlFormat, GgmlQuantizer, KMeansInit, KMeansQuantizer, QuantContext, Quantizer,
    dequantize_ggml, quantize_ggml, to_ggml_blocks,
};
use slimnn::{Error, Model};

fn weights(shape: &[usize], k: f32) -> ArrayD<f32> {
    Array::from_shape_fn(IxDyn(shape), |i| {
        (i.slice().iter().fold(0usize, |a, &x| a * 7 + x) as f32 * k).sin() * 0.1
    })
}

fn model() -> Model {
    let mut m = Model::new();
    m.metadata_mut().insert("format".into(), "pt".into());
    m.metadata_mut()
        .insert("general.name".into(), "tiny".into());
    for (name, f) in [
        ("q8.weight", GgmlFormat::Q8_0),
        ("q4.weight", GgmlFormat::Q4_0),
        ("q6.weight", GgmlFormat::Q6_K),
    ] {
        let w = weights(&[4, 256], 0.37);
        let q = GgmlQuantizer::new(f)
            .quantize(&w, &QuantContext::new())
            .unwrap();
        m.add(name, w).unwrap().set_quantized(q).unwrap();
    }
    m.add_param(
        "half.weight",
        LayerKind::Linear,
        DType::F16,
        weights(&[3, 5], 0.5).mapv(|v| f16::from_f32(v).to_f32()),
    )
    .unwrap();
    m.add_param(
        "norm.weight",
        LayerKind::Other,
        DType::BF16,
        ArrayD::from_elem(IxDyn(&[8]), 1.0),
    )
    .unwrap();
    m.add("dense.weight", weights(&[2, 512], 0.11)).unwrap();
    m
}

#[test]
fn quantized_parameters_keep_their_blocks_and_dense_ones_their_dtype() {
    let m = model();
    let g = m.to_gguf(&GgufOptions::default()).unwrap();
    let g = Gguf::from_bytes(&g.to_bytes().unwrap(), "<bytes>").unwrap();
    let ty = |n: &str| g.tensor(n).unwrap().ty;
    assert_eq!(ty("q8.weight"), GgufType::Quant(GgmlFormat::Q8_0));
    assert_eq!(ty("q4.weight"), GgufType::Quant(GgmlFormat::Q4_0));
    assert_eq!(ty("q6.weight"), GgufType::Quant(GgmlFormat::Q6_K));
    assert_eq!(ty("half.weight"), GgufType::F16);
    assert_eq!(ty("norm.weight"), GgufType::BF16);
    assert_eq!(ty("dense.weight"), GgufType::F32);
    assert_eq!(g.tensor("half.weight").unwrap().shape, [3, 5]);
    for f in ["q8.weight", "q4.weight", "q6.weight"] {
        let q = m.get(f).unwrap().quantized().unwrap();
        let format = match ty(f) {
            GgufType::Quant(f) => f,
            _ => unreachable!(),
        };
        assert_eq!(
            g.tensor(f).unwrap().data,
            to_ggml_blocks(q, format).unwrap()
        );
    }
    assert_eq!(
        g.get("general.name"),
        Some(&GgufValue::String("tiny".into()))
    );
    assert_eq!(g.get("format").and_then(GgufValue::as_str), Some("pt"));

    // Back to a model: the same values, quantized forms and dtypes.
    let back = Model::from_gguf(&g).unwrap();
    for p in m.params() {
        let b = back.get(p.name()).unwrap();
        assert_eq!(b.value(), p.value(), "{}", p.name());
        assert_eq!(b.dtype(), p.dtype(), "{}", p.name());
        assert_eq!(b.quantized(), p.quantized(), "{}", p.name());
    }
    assert_eq!(back.metadata().get("general.name").unwrap(), "tiny");
}

#[test]
fn q4_k_on_writing_quantizes_the_weights_whose_rows_fit() {
    let m = model();
    let g = m
        .to_gguf(&GgufOptions {
            quantize: Some(GgmlFormat::Q4_K),
        })
        .unwrap();
    let t = g.tensor("dense.weight").unwrap();
    assert_eq!(t.ty, GgufType::Quant(GgmlFormat::Q4_K));
    let w = m.get("dense.weight").unwrap().value();
    let w = w.as_slice().unwrap();
    assert_eq!(
        t.data,
        quantize_ggml(w, &[2, 512], GgmlFormat::Q4_K).unwrap()
    );
    let back = dequantize_ggml(&t.data, &[2, 512], GgmlFormat::Q4_K).unwrap();
    let err: f32 = w
        .iter()
        .zip(&back)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f32>()
        .sqrt()
        / w.iter().map(|a| a * a).sum::<f32>().sqrt();
    assert!(err < 0.1, "relative error {err}");
    // Rows of 5 and vectors stay as they were; quantized parameters keep their form.
    assert_eq!(g.tensor("half.weight").unwrap().ty, GgufType::F16);
    assert_eq!(g.tensor("norm.weight").unwrap().ty, GgufType::BF16);
    assert_eq!(
        g.tensor("q8.weight").unwrap().ty,
        GgufType::Quant(GgmlFormat::Q8_0)
    );
    // Read back: a dense f32 parameter with the decoded values.
    let m2 = Model::from_gguf(&g).unwrap();
    assert_eq!(
        m2.get("dense.weight").unwrap().value().as_slice().unwrap(),
        back.as_slice()
    );
}

#[test]
fn forms_gguf_cannot_hold_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut m = model();
    let w = weights(&[4, 8], 0.3);
    let q = KMeansQuantizer::lloyd(4, KMeansInit::Linear)
        .unwrap()
        .quantize(&w, &QuantContext::new())
        .unwrap();
    m.add("kmeans.weight", w).unwrap().set_quantized(q).unwrap();
    match m.save_gguf(&path, &GgufOptions::default()) {
        Err(Error::InvalidParameter { value, .. }) => assert!(value.contains("kmeans.weight")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Without it the file is written, and reads back.
    let m = model();
    m.save_gguf(&path, &GgufOptions::default()).unwrap();
    assert_eq!(Model::load_gguf(&path).unwrap().len(), m.len());
}

#[cfg(feature = "cli")]
#[test]
fn cli_compress_to_gguf() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.safetensors");
    let mut m = Model::new();
    m.metadata_mut().insert("source".into(), "test".into());
    m.add("fc1.weight", weights(&[8, 256], 0.2)).unwrap();
    m.add("fc1.bias", ArrayD::from_elem(IxDyn(&[8]), 0.5))
        .unwrap();
    m.save(&input, &Default::default()).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_slimnn"))
            .args(args)
            .output()
            .unwrap()
    };
    let out_path = dir.path().join("m.gguf");
    let (i, o) = (input.to_str().unwrap(), out_path.to_str().unwrap());
    for (spec, ty) in [
        ("q4_0", GgmlFormat::Q4_0),
        ("q6_k", GgmlFormat::Q6_K),
        ("q4_k", GgmlFormat::Q4_K),
    ] {
        let out = run(&["compress", i, "-o", o, "--quantize", spec, "--quiet"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let g = Gguf::read(&out_path).unwrap();
        assert_eq!(g.tensor("fc1.weight").unwrap().ty, GgufType::Quant(ty));
        assert_eq!(g.tensor("fc1.bias").unwrap().ty, GgufType::F32);
        assert_eq!(g.get("source").and_then(GgufValue::as_str), Some("test"));
        // And a GGUF input is read as a model.
        let out = run(&["inspect", o]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // q4_k anywhere but GGUF is refused; so is a scheme GGUF cannot hold.
    let slim = dir.path().join("m.slim");
    let out = run(&[
        "compress",
        i,
        "-o",
        slim.to_str().unwrap(),
        "--quantize",
        "q4_k",
    ]);
    assert!(!out.status.success());
    let out = run(&[
        "compress",
        i,
        "-o",
        o,
        "--format",
        "gguf",
        "--quantize",
        "kmeans:16",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fc1.weight"));
}
