//! safetensors loading and saving: a file written by the Python `safetensors` package,
//! round trips in every dtype, PyTorch's pruning convention, atomic saves, hostile files.

mod common;

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use slimnn::io::safetensors::{MaskExport, SaveOptions};
use slimnn::prune::{MagnitudePruner, Statistics};
use slimnn::{DType, Error, LayerKind, Model, Selector};

fn fixture() -> Model {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python_safetensors.safetensors");
    Model::load(path).unwrap()
}

fn values(m: &Model, name: &str) -> Vec<f32> {
    m.get(name).unwrap().value().iter().copied().collect()
}

fn formula(n: usize, f: impl Fn(f64) -> f64) -> Vec<f32> {
    (0..n).map(|i| f(i as f64) as f32).collect()
}

/// Written by `scripts/make_fixtures.py` with the Python `safetensors` package.
#[test]
fn reads_the_python_fixture() {
    let m = fixture();
    let expect = [
        (
            "fc1.weight",
            DType::F32,
            LayerKind::Linear,
            vec![4, 6],
            formula(24, |i| i * 0.25 - 1.0),
        ),
        (
            "fc1.bias",
            DType::F32,
            LayerKind::Bias,
            vec![4],
            formula(4, |i| i * 0.5 - 1.0),
        ),
        (
            "fc2.weight",
            DType::F16,
            LayerKind::Linear,
            vec![3, 4],
            formula(12, |i| i * 0.125 - 0.75),
        ),
        (
            "fc2.bias",
            DType::F16,
            LayerKind::Bias,
            vec![3],
            formula(3, |i| 0.25 - i * 0.5),
        ),
        // (i − 27)·0.125 + 2⁻⁴⁰: the 2⁻⁴⁰ is below f32 precision at these magnitudes.
        (
            "conv.weight",
            DType::F64,
            LayerKind::Conv2d,
            vec![2, 3, 3, 3],
            formula(54, |i| (i - 27.0) * 0.125 + 2f64.powi(-40)),
        ),
        (
            "emb.weight",
            DType::BF16,
            LayerKind::Embedding,
            vec![5, 4],
            formula(20, |i| i * 0.5 - 4.0),
        ),
        (
            "bn.running_mean",
            DType::F32,
            LayerKind::Other,
            vec![3],
            formula(3, |i| i * 0.75 - 0.5),
        ),
    ];
    for (name, dtype, kind, shape, vals) in expect {
        let p = m.get(name).unwrap();
        assert_eq!(p.dtype(), dtype, "{name}");
        assert_eq!(p.kind(), kind, "{name}");
        assert_eq!(p.shape(), &shape[..], "{name}");
        assert_eq!(values(&m, name), vals, "{name}");
    }
    // PyTorch's pruning pair became one masked parameter.
    let pruned = m.get("pruned.weight").unwrap();
    assert_eq!(values(&m, "pruned.weight"), formula(12, |i| i * 0.25 - 1.5));
    let kept: Vec<bool> = pruned.mask().unwrap().to_bools().into_iter().collect();
    assert_eq!(kept, [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1].map(|b| b == 1));
    // The int64 buffer is kept verbatim.
    let raw = &m.raw_tensors()[0];
    assert_eq!(
        (raw.name.as_str(), raw.dtype.as_str(), raw.shape.len()),
        ("bn.num_batches_tracked", "I64", 0)
    );
    assert_eq!(
        i64::from_le_bytes(raw.bytes[..8].try_into().unwrap()),
        (1i64 << 33) + 7
    );
    assert_eq!(m.metadata()["framework"], "pytorch-like");
    assert_eq!(m.metadata()["producer"], "python safetensors 0.8.0");
}

#[test]
fn round_trips_every_dtype_and_the_metadata() {
    let m = fixture();
    let bytes = m
        .to_safetensors(&SaveOptions {
            masks: MaskExport::PyTorch,
            ..SaveOptions::default()
        })
        .unwrap();
    let back = Model::from_safetensors(&bytes, "<round trip>").unwrap();
    for p in m.params() {
        let q = back.get(p.name()).unwrap();
        assert_eq!(
            (q.dtype(), q.kind(), q.shape()),
            (p.dtype(), p.kind(), p.shape())
        );
        assert_eq!(q.value(), p.value());
        assert_eq!(q.mask(), p.mask());
    }
    assert_eq!(back.raw_tensors(), m.raw_tensors());
    assert_eq!(back.metadata(), m.metadata());
    let names: Vec<&str> = back.params().iter().map(|p| p.name()).collect();
    assert_eq!(
        names,
        m.params().iter().map(|p| p.name()).collect::<Vec<_>>()
    );
}

#[test]
fn saving_applies_masks_by_default_and_can_convert_dtypes() {
    let m = fixture();
    let bytes = m
        .to_safetensors(&SaveOptions {
            dtype: Some(DType::F16),
            ..SaveOptions::default()
        })
        .unwrap();
    let back = Model::from_safetensors(&bytes, "<f16>").unwrap();
    let p = back.get("pruned.weight").unwrap();
    assert!(p.mask().is_none());
    assert_eq!(p.dtype(), DType::F16);
    assert_eq!(p.zeros(), 5); // the five masked (index 6, whose value is 0.0, among them)
    assert!(back.params().iter().all(|p| p.dtype() == DType::F16));
}

#[test]
fn saves_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut m = Model::new();
    m.add("fc.weight", common::normal(&[30, 20], 1)).unwrap();
    m.prune(
        &Selector::all(),
        &MagnitudePruner::magnitude(0.5).unwrap(),
        &Statistics::new(),
    )
    .unwrap();
    m.save(&path, &SaveOptions::default()).unwrap();
    let back = Model::load(&path).unwrap();
    assert_eq!(
        back.get("fc.weight").unwrap().value(),
        &m.get("fc.weight").unwrap().effective()
    );
    // Only the result is left in the directory.
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("model.safetensors")]);
    // Saving into a missing directory fails cleanly and writes nothing.
    let err = m
        .save(
            dir.path().join("missing/m.safetensors"),
            &SaveOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn hostile_and_corrupt_files_are_typed_errors() {
    let good = fixture().to_safetensors(&SaveOptions::default()).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("shorter than the length prefix", vec![1, 2, 3]),
        ("truncated data", good[..good.len() - 3].to_vec()),
        ("truncated header", good[..8 + header_len / 2].to_vec()),
        ("trailing bytes", [good.clone(), vec![0; 5]].concat()),
    ];
    // A header length pointing far past the end of the file.
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    cases.push(("header length past the end", huge));
    // A header that claims more data than the file holds.
    let claim = |shape: &str| {
        let header =
            format!("{{\"w\":{{\"dtype\":\"F32\",\"shape\":{shape},\"data_offsets\":[0,16]}}}}");
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&[0; 16]);
        b
    };
    cases.push((
        "shape claiming more data than the offsets",
        claim("[1000000,1000000]"),
    ));
    cases.push((
        "shape overflowing usize",
        claim("[4294967296,4294967296,4294967296]"),
    ));
    cases.push((
        "not JSON",
        [8u64.to_le_bytes().to_vec(), b"not json".to_vec()].concat(),
    ));
    for (what, bytes) in cases {
        match Model::from_safetensors(&bytes, what) {
            Err(Error::InvalidFormat {
                format: "safetensors",
                ..
            }) => {}
            other => panic!("{what}: expected InvalidFormat, got {other:?}"),
        }
    }
    let err = Model::load("/nonexistent/dir/model.safetensors").unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
}

#[test]
fn names_sort_naturally() {
    let mut m = Model::new();
    for i in [10, 2, 1] {
        m.add(format!("layers.{i}.weight"), ArrayD::zeros(IxDyn(&[2, 2])))
            .unwrap();
    }
    let back = Model::from_safetensors(
        &m.to_safetensors(&SaveOptions::default()).unwrap(),
        "<order>",
    )
    .unwrap();
    let names: Vec<&str> = back.params().iter().map(|p| p.name()).collect();
    assert_eq!(
        names,
        ["layers.1.weight", "layers.2.weight", "layers.10.weight"]
    );
}

/// A `_mask` beside a non-float `_orig` is not PyTorch's pair: both load as they are.
#[test]
fn non_float_orig_is_not_a_pruning_pair() {
    let header = r#"{"x_orig":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},"x_mask":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},"f8":{"dtype":"F8_E4M3FNUZ","shape":[2],"data_offsets":[24,26]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&[0; 26]);
    let m = Model::from_safetensors(&b, "pair").unwrap();
    assert!(m.contains("x_mask"));
    let raw: Vec<&str> = m.raw_tensors().iter().map(|r| r.name.as_str()).collect();
    assert!(raw.contains(&"x_orig") && raw.contains(&"f8"));
    // Every dtype that loads also saves.
    let again =
        Model::from_safetensors(&m.to_safetensors(&SaveOptions::default()).unwrap(), "again")
            .unwrap();
    assert_eq!(again.raw_tensors(), m.raw_tensors());
}

/// `Model::save` writes through slimnn's own temporary file, so the saved model gets the
/// same mode as every other output (0644 less the umask), not a private 0600; its bytes
/// are those of `Model::to_safetensors`, the same at every call (metadata included).
#[cfg(unix)]
#[test]
fn saved_files_are_readable_by_others_like_every_output() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // A plain file shows the umask: 0666 less it.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"x").unwrap();
    let plain_mode = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;

    let mut m = fixture();
    m.metadata_mut().insert("format".into(), "pt".into());
    let path = dir.path().join("out.safetensors");
    m.save(&path, &SaveOptions::default()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, plain_mode & 0o644, "mode {mode:o}");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes, m.to_safetensors(&SaveOptions::default()).unwrap());
    assert!(m.metadata().len() > 1);
    for _ in 0..8 {
        assert_eq!(bytes, m.to_safetensors(&SaveOptions::default()).unwrap());
    }
    let back = Model::from_safetensors(&bytes, "saved").unwrap();
    assert_eq!(back.to_safetensors(&SaveOptions::default()).unwrap(), bytes);
    // Nothing but the output is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}
