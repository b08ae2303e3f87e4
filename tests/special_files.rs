//! The loaders read regular files only: a device such as `/dev/zero` would be read
//! without end, a pipe would block.

#![cfg(unix)]

use slimnn::io::idx::read_idx;
use slimnn::{Error, Model};

fn not_regular(e: Error) {
    match e {
        Error::Io { path, source } => {
            assert!(path.starts_with("/dev"), "{path:?}");
            assert!(
                source.to_string().contains("not a regular file"),
                "{source}"
            );
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn devices_are_refused_before_reading() {
    for path in ["/dev/zero", "/dev/null"] {
        if !std::path::Path::new(path).exists() {
            continue;
        }
        not_regular(Model::load(path).unwrap_err());
        not_regular(Model::load_compressed(path).unwrap_err());
        not_regular(read_idx(path).unwrap_err());
    }
}

#[test]
fn directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Model::load(dir.path()), Err(Error::Io { .. })));
    assert!(matches!(
        Model::load_compressed(dir.path()),
        Err(Error::Io { .. })
    ));
}
