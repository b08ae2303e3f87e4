//! GGUF v3 files: round trips of every value and tensor type, the reversed dimension
//! order, alignment, typed errors on bad input, and no panic on corrupted bytes.

use half::{bf16, f16};
use proptest::prelude::*;
use slimnn::Error;
use slimnn::io::gguf::{Gguf, GgufArray, GgufTensor, GgufType, GgufValue};
use slimnn::quant::{GgmlFormat, quantize_ggml};

fn sample() -> Gguf {
    let mut g = Gguf::new();
    let kv = |k: &str, v: GgufValue| (k.to_string(), v);
    g.metadata = vec![
        kv("general.architecture", GgufValue::String("llama".into())),
        kv("u8", GgufValue::U8(200)),
        kv("i8", GgufValue::I8(-5)),
        kv("u16", GgufValue::U16(60000)),
        kv("i16", GgufValue::I16(-30000)),
        kv("u32", GgufValue::U32(4_000_000_000)),
        kv("i32", GgufValue::I32(-2_000_000_000)),
        kv("f32", GgufValue::F32(1.5)),
        kv("bool", GgufValue::Bool(true)),
        kv("u64", GgufValue::U64(u64::MAX)),
        kv("i64", GgufValue::I64(i64::MIN)),
        kv("f64", GgufValue::F64(-2.25)),
        kv("empty", GgufValue::String(String::new())),
        kv(
            "tokens",
            GgufValue::Array(GgufArray::String(vec!["<s>".into(), "é".into()])),
        ),
        kv("scores", GgufValue::Array(GgufArray::F32(vec![0.5, -1.0]))),
        kv(
            "nested",
            GgufValue::Array(GgufArray::Array(vec![
                GgufArray::I32(vec![1, 2, 3]),
                GgufArray::Bool(vec![true, false]),
                GgufArray::U8(vec![]),
            ])),
        ),
        kv(
            "all",
            GgufValue::Array(GgufArray::Array(vec![
                GgufArray::I8(vec![-1]),
                GgufArray::U16(vec![7]),
                GgufArray::I16(vec![-7]),
                GgufArray::U32(vec![9]),
                GgufArray::U64(vec![11]),
                GgufArray::I64(vec![-11]),
                GgufArray::F64(vec![0.125]),
            ])),
        ),
    ];
    let w: Vec<f32> = (0..2 * 512).map(|i| (i as f32 * 0.731).sin()).collect();
    let shape = [2, 512];
    g.tensors
        .push(GgufTensor::from_f32("f32.weight", &[3, 2, 4], &w[..24]).unwrap());
    let h: Vec<u8> = w[..12]
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect();
    g.tensors
        .push(GgufTensor::new("f16", &[12], GgufType::F16, h).unwrap());
    let b: Vec<u8> = w[..6]
        .iter()
        .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
        .collect();
    g.tensors
        .push(GgufTensor::new("bf16", &[6, 1], GgufType::BF16, b).unwrap());
    for f in [
        GgmlFormat::Q8_0,
        GgmlFormat::Q4_0,
        GgmlFormat::Q4_K,
        GgmlFormat::Q6_K,
    ] {
        let data = quantize_ggml(&w, &shape, f).unwrap();
        g.tensors
            .push(GgufTensor::new(format!("{f:?}.w"), &shape, GgufType::Quant(f), data).unwrap());
    }
    g
}

#[test]
fn round_trip_every_type() {
    let g = sample();
    let bytes = g.to_bytes().unwrap();
    assert_eq!(&bytes[..4], b"GGUF");
    assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3);
    let back = Gguf::from_bytes(&bytes, "<bytes>").unwrap();
    assert_eq!(back, g);
    assert_eq!(back.to_bytes().unwrap(), bytes);
    let q = back.tensor("Q4_K.w").unwrap();
    let v = q.to_f32().unwrap();
    assert_eq!(v.len(), 1024);
    let t = back.tensor("f32.weight").unwrap();
    assert_eq!(t.to_f32().unwrap()[5], (5.0f32 * 0.731).sin());
}

/// GGUF's `ne` lists dimensions innermost first: a row-major [3, 2, 4] tensor is
/// written as n_dims 3, ne = [4, 2, 3].
#[test]
fn dimensions_are_reversed_in_the_file() {
    let mut g = Gguf::new();
    g.tensors
        .push(GgufTensor::from_f32("t", &[3, 2, 4], &[0.0; 24]).unwrap());
    let bytes = g.to_bytes().unwrap();
    // magic, version, counts (24 bytes); name: u64 len + "t"; n_dims; dims.
    let at = 24 + 8 + 1;
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 3);
    let dims: Vec<u64> = (0..3)
        .map(|i| u64::from_le_bytes(bytes[at + 4 + 8 * i..at + 12 + 8 * i].try_into().unwrap()))
        .collect();
    assert_eq!(dims, [4, 2, 3]);
    assert_eq!(
        Gguf::from_bytes(&bytes, "x").unwrap().tensors[0].shape,
        [3, 2, 4]
    );
}

#[test]
fn alignment_is_honoured() {
    for align in [None, Some(64u32), Some(1)] {
        let mut g = Gguf::new();
        if let Some(a) = align {
            g.metadata
                .push(("general.alignment".into(), GgufValue::U32(a)));
        }
        g.tensors
            .push(GgufTensor::from_f32("a", &[3], &[1.0, 2.0, 3.0]).unwrap());
        g.tensors
            .push(GgufTensor::from_f32("b", &[1], &[4.0]).unwrap());
        let bytes = g.to_bytes().unwrap();
        let a = align.unwrap_or(32) as usize;
        assert_eq!(bytes.len() % a, 0);
        // b's data is at the next multiple of the alignment after a's 12 bytes.
        let tail = &bytes[bytes.len() - a.max(4)..];
        assert_eq!(&tail[..4], &4.0f32.to_le_bytes());
        assert_eq!(Gguf::from_bytes(&bytes, "x").unwrap(), g);
    }
    let mut g = Gguf::new();
    g.metadata
        .push(("general.alignment".into(), GgufValue::U32(48)));
    assert!(matches!(g.to_bytes(), Err(Error::InvalidParameter { .. })));
}

#[test]
fn writer_refuses_bad_tensors() {
    // Rows not a multiple of the block, data of the wrong length, 5 dimensions.
    assert!(GgufTensor::new("q", &[2, 100], GgufType::Quant(GgmlFormat::Q4_K), vec![]).is_err());
    assert!(GgufTensor::new("f", &[2], GgufType::F32, vec![0; 7]).is_err());
    assert!(GgufTensor::new("f", &[1, 1, 1, 1, 1], GgufType::F32, vec![0; 4]).is_err());
    assert!(quantize_ggml(&[0.0; 300], &[300], GgmlFormat::Q6_K).is_err());
    let mut g = Gguf::new();
    g.tensors
        .push(GgufTensor::from_f32("same", &[1], &[1.0]).unwrap());
    g.tensors
        .push(GgufTensor::from_f32("same", &[1], &[1.0]).unwrap());
    assert!(g.to_bytes().is_err());
    let mut g = Gguf::new();
    g.tensors.push(GgufTensor {
        name: "x".into(),
        shape: vec![4],
        ty: GgufType::F32,
        data: vec![0; 3],
    });
    assert!(g.to_bytes().is_err());
}

fn format_error(bytes: &[u8]) -> String {
    match Gguf::from_bytes(bytes, "<bytes>") {
        Err(Error::InvalidFormat { reason, .. }) => reason,
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn hostile_headers_are_format_errors() {
    let good = sample().to_bytes().unwrap();
    assert!(format_error(b"GGML").contains("magic"));
    let mut v2 = good.clone();
    v2[4] = 2;
    assert!(format_error(&v2).contains("version"));
    // A tensor count of 2^60 and a key-value count of 2^60: refused before allocating.
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(format_error(&huge).contains("count"));
    let mut huge = good.clone();
    huge[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(format_error(&huge).contains("count"));
    // A first key of length 2^62.
    let mut huge = good.clone();
    huge[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(format_error(&huge).contains("count"));
    // Truncated data (the last tensor, Q6_K, is 840 bytes; the padding after it is
    // not needed).
    assert!(format_error(&good[..good.len() - 40]).contains("beyond"));
    assert!(Gguf::from_bytes(&good[..good.len() - 1], "x").is_ok());
    // An unsupported tensor type (Q5_K = 13).
    let mut g = Gguf::new();
    g.tensors
        .push(GgufTensor::from_f32("t", &[1], &[1.0]).unwrap());
    let mut b = g.to_bytes().unwrap();
    let at = 24 + 8 + 1 + 4 + 8;
    b[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
    assert!(format_error(&b).contains("type 13"));
}

#[test]
fn overlapping_tensors_are_refused() {
    let mut g = Gguf::new();
    g.tensors
        .push(GgufTensor::from_f32("a", &[16], &[1.0; 16]).unwrap());
    g.tensors
        .push(GgufTensor::from_f32("b", &[16], &[2.0; 16]).unwrap());
    let mut b = g.to_bytes().unwrap();
    // b's offset (after its name, dims and type) set to 0, a's.
    let info_b = 24 + (8 + 1 + 4 + 8 + 4 + 8) + (8 + 1 + 4 + 8 + 4);
    assert_eq!(
        u64::from_le_bytes(b[info_b..info_b + 8].try_into().unwrap()),
        64
    );
    b[info_b..info_b + 8].copy_from_slice(&0u64.to_le_bytes());
    assert!(format_error(&b).contains("overlap"));
}

#[test]
fn files_round_trip_on_disk_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let g = sample();
    g.write(&path).unwrap();
    assert_eq!(Gguf::read(&path).unwrap(), g);
    // Only the file itself is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Truncated or corrupted files never panic: they load or give a typed error.
    #[test]
    fn corrupted_bytes_never_panic(
        cut in 0usize..4000,
        flips in proptest::collection::vec((0usize..4000, any::<u8>()), 0..8),
    ) {
        let mut b = sample().to_bytes().unwrap();
        for (at, v) in flips {
            let n = b.len();
            b[at % n] = v;
        }
        b.truncate(cut.min(b.len()));
        if let Ok(g) = Gguf::from_bytes(&b, "<bytes>") {
            for t in &g.tensors {
                let _ = t.to_f32();
            }
        }
    }
}
