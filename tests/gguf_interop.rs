//! GGUF files shared with the Python `gguf` package (llama.cpp's), both ways:
//!
//! - `tests/fixtures/gguf_python.gguf`, written by `gguf.GGUFWriter`
//!   (`scripts/check_gguf.py write-fixture`), is read by slimnn with the names, shapes,
//!   types and (bit for bit) the values `gguf.quants.dequantize` gives, listed in
//!   `gguf_python.json`;
//! - `tests/fixtures/gguf_slimnn.gguf` is what slimnn writes for a fixed model (this test
//!   checks it still writes exactly those bytes; `SLIMNN_WRITE_FIXTURES=1` rewrites it and
//!   its sidecar `.json`), and `python3 scripts/check_gguf.py check
//!   tests/fixtures/gguf_slimnn.gguf` reads it with `gguf.GGUFReader`.

use std::path::PathBuf;

use half::{bf16, f16};
use serde_json::{Value, json};
use slimnn::io::gguf::{Gguf, GgufArray, GgufTensor, GgufType, GgufValue};
use slimnn::quant::{GgmlFormat, quantize_ggml};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn type_name(ty: GgufType) -> String {
    match ty {
        GgufType::Quant(f) => format!("{f:?}"),
        t => format!("{t:?}"),
    }
}

#[test]
fn reads_files_written_by_the_gguf_package() {
    let g = Gguf::read(fixture("gguf_python.gguf")).unwrap();
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("gguf_python.json")).unwrap())
            .unwrap();
    let want = want["tensors"].as_array().unwrap();
    assert_eq!(g.tensors.len(), want.len());
    for (t, w) in g.tensors.iter().zip(want) {
        assert_eq!(t.name, w["name"].as_str().unwrap());
        let shape: Vec<usize> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{}", t.name);
        assert_eq!(type_name(t.ty), w["type"].as_str().unwrap(), "{}", t.name);
        let values: Vec<u32> = w["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v.as_f64().unwrap() as f32).to_bits())
            .collect();
        let got: Vec<u32> = t.to_f32().unwrap().iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, values, "{}", t.name);
    }
    assert_eq!(
        g.get("general.architecture").and_then(GgufValue::as_str),
        Some("llama")
    );
    assert_eq!(g.get("llama.context_length"), Some(&GgufValue::U32(4096)));
    assert_eq!(g.get("test.flag"), Some(&GgufValue::Bool(true)));
    assert_eq!(g.get("test.i64"), Some(&GgufValue::I64(-(1 << 40))));
    assert_eq!(
        g.get("tokenizer.ggml.tokens"),
        Some(&GgufValue::Array(GgufArray::String(vec![
            "<s>".into(),
            "</s>".into(),
            "hé".into()
        ])))
    );
    // Also as a model: every tensor a parameter.
    let m = slimnn::Model::from_gguf(&g).unwrap();
    assert_eq!(m.len(), 7);
}

/// The file slimnn writes for the interoperability check.
fn slimnn_file() -> Gguf {
    let mut g = Gguf::new();
    g.metadata.push((
        "general.architecture".into(),
        GgufValue::String("llama".into()),
    ));
    g.metadata.push((
        "general.name".into(),
        GgufValue::String("slimnn fixture".into()),
    ));
    let x = |n: usize, k: f32| -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * k).sin() * 0.05 + (i % 7) as f32 * 1e-3)
            .collect()
    };
    g.tensors
        .push(GgufTensor::from_f32("token_embd.weight", &[3, 4], &x(12, 0.3)).unwrap());
    let h = x(16, 0.7)
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect();
    g.tensors
        .push(GgufTensor::new("blk.0.attn_norm.weight", &[2, 8], GgufType::F16, h).unwrap());
    let b = x(32, 0.9)
        .iter()
        .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
        .collect();
    g.tensors
        .push(GgufTensor::new("blk.0.ffn_gate.weight", &[4, 8], GgufType::BF16, b).unwrap());
    for (name, f, shape) in [
        ("blk.0.attn_q.weight", GgmlFormat::Q8_0, [2, 64]),
        ("blk.0.attn_k.weight", GgmlFormat::Q4_0, [2, 64]),
        ("blk.0.ffn_up.weight", GgmlFormat::Q4_K, [2, 256]),
        ("output.weight", GgmlFormat::Q6_K, [3, 256]),
    ] {
        let data = quantize_ggml(&x(shape[0] * shape[1], 0.13), &shape, f).unwrap();
        g.tensors
            .push(GgufTensor::new(name, &shape, GgufType::Quant(f), data).unwrap());
    }
    g
}

#[test]
fn writes_the_file_the_gguf_package_reads() {
    let g = slimnn_file();
    let bytes = g.to_bytes().unwrap();
    let path = fixture("gguf_slimnn.gguf");
    let json_path = fixture("gguf_slimnn.gguf.json");
    if std::env::var_os("SLIMNN_WRITE_FIXTURES").is_some() {
        let tensors: Vec<Value> = g
            .tensors
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "shape": t.shape,
                    "type": type_name(t.ty),
                    "values": t.to_f32().unwrap().iter().map(|&v| v as f64).collect::<Vec<_>>(),
                })
            })
            .collect();
        let meta: serde_json::Map<String, Value> = g
            .metadata
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), json!(v.as_str()?))))
            .collect();
        let doc =
            json!({ "generator": "tests/gguf_interop.rs", "tensors": tensors, "metadata": meta });
        std::fs::write(&path, &bytes).unwrap();
        std::fs::write(
            &json_path,
            serde_json::to_string_pretty(&doc).unwrap() + "\n",
        )
        .unwrap();
    }
    let committed = std::fs::read(&path).expect("tests/fixtures/gguf_slimnn.gguf");
    assert!(
        committed == bytes,
        "slimnn no longer writes gguf_slimnn.gguf byte for byte"
    );
    assert_eq!(Gguf::from_bytes(&committed, "fixture").unwrap(), g);
}
