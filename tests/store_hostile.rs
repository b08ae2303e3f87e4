//! Corrupt compressed files whose records are well formed but whose content the model
//! refuses (a name twice, a kind that does not fit the shape) are format errors naming
//! the tensor and the byte offset, as `docs/format.md` promises.

#[path = "common/slim_file.rs"]
mod slim_file;

use ndarray::{ArrayD, IxDyn};
use slim_file::SlimFile;
use slimnn::{Error, Model, RawTensor, store};

fn file() -> SlimFile {
    let mut m = Model::new();
    m.add("fc.weight", ArrayD::from_elem(IxDyn(&[4, 6]), 0.5))
        .unwrap();
    m.add("fc.bias", ArrayD::from_elem(IxDyn(&[4]), 0.25))
        .unwrap();
    m.add_raw(RawTensor {
        name: "steps".into(),
        dtype: "I64".into(),
        shape: vec![1],
        bytes: 7i64.to_le_bytes().to_vec(),
    })
    .unwrap();
    SlimFile::parse(&store::to_bytes(&m).unwrap())
}

/// The load fails with a format error whose reason names `name` and a byte offset.
fn assert_format_error(f: &SlimFile, name: &str) {
    match store::from_bytes(&f.to_bytes()) {
        Err(Error::InvalidFormat { reason, .. }) => {
            assert!(reason.contains(name), "{reason}");
            assert!(reason.contains("at byte"), "{reason}");
        }
        other => panic!("expected a format error naming `{name}`, got {other:?}"),
    }
}

#[test]
fn the_helper_rebuilds_a_file_exactly() {
    let mut m = Model::new();
    m.add("w", ArrayD::from_elem(IxDyn(&[2, 3]), 1.0)).unwrap();
    let bytes = store::to_bytes(&m).unwrap();
    assert_eq!(SlimFile::parse(&bytes).to_bytes(), bytes);
    assert!(store::from_bytes(&file().to_bytes()).is_ok());
}

#[test]
fn duplicate_names_are_format_errors() {
    let mut f = file();
    f.params[1].0 = b"fc.weight".to_vec();
    assert_format_error(&f, "fc.weight");
    let mut f = file();
    f.raw[0].name = b"fc.bias".to_vec();
    assert_format_error(&f, "fc.bias");
}

#[test]
fn a_kind_that_does_not_fit_the_shape_is_a_format_error() {
    // The 2-D weight as a Bias (kind 4), the 1-D bias as Linear (kind 0) or Conv2d (1).
    for (param, kind) in [(0, 4u8), (1, 0), (1, 1)] {
        let mut f = file();
        f.params[param].1[0] = kind;
        let name = String::from_utf8(f.params[param].0.clone()).unwrap();
        assert_format_error(&f, &name);
    }
}
