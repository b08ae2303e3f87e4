//! Hugging Face sharded checkpoints (`model.safetensors.index.json` plus shards) load as
//! one model; hostile indexes are typed errors.

use std::path::Path;

use slimnn::io::synthetic::{SyntheticOptions, write_checkpoint};
use slimnn::{Error, Model};

fn tiny(dir: &Path) -> slimnn::io::synthetic::SyntheticCheckpoint {
    let options = SyntheticOptions {
        max_shard_bytes: 2_000_000,
        ..SyntheticOptions::default()
    };
    write_checkpoint(dir, &options).unwrap()
}

/// The same tensors, read one shard at a time with the single-file loader.
fn shard_by_shard(shards: &[std::path::PathBuf]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = vec![];
    for s in shards {
        let m = Model::load(s).unwrap();
        for p in m.params() {
            out.push((
                p.name().to_string(),
                p.value().shape().to_vec(),
                p.value().iter().copied().collect(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_directory_or_its_index_loads_as_one_model() {
    let dir = tempfile::tempdir().unwrap();
    let written = tiny(dir.path());
    assert!(written.shards.len() >= 3);
    let expected = shard_by_shard(&written.shards);
    for path in [dir.path().to_path_buf(), written.index.clone()] {
        let model = Model::load(&path).unwrap();
        assert_eq!(model.len(), written.tensors);
        let mut got: Vec<_> = model
            .params()
            .iter()
            .map(|p| {
                (
                    p.name().to_string(),
                    p.value().shape().to_vec(),
                    p.value().iter().copied().collect::<Vec<f32>>(),
                )
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(got == expected, "{}", path.display());
        // Layers in numeric order, as for a single file.
        let names: Vec<&str> = model.params().iter().map(|p| p.name()).collect();
        assert_eq!(names[0], "lm_head.weight");
        assert_eq!(
            model.metadata().get("format").map(String::as_str),
            Some("pt")
        );
    }
    let files = slimnn::io::safetensors::checkpoint_files(dir.path()).unwrap();
    assert_eq!(files, written.shards);
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_string()
}

fn rewrite_index(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut index);
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

fn invalid(dir: &Path) -> String {
    match Model::load(dir) {
        Err(Error::InvalidFormat { reason, .. }) => reason,
        other => panic!("expected InvalidFormat, got {:?}", other.map(|m| m.len())),
    }
}

#[test]
fn a_hostile_index_is_a_typed_error() {
    const K: &str = "model.layers.0.self_attn.k_proj.weight";
    // A shard that does not exist.
    let dir = tempfile::tempdir().unwrap();
    let written = tiny(dir.path());
    std::fs::remove_file(&written.shards[1]).unwrap();
    assert!(matches!(Model::load(dir.path()), Err(Error::Io { .. })));

    // A name the index puts in a shard that lacks it.
    let dir = tempfile::tempdir().unwrap();
    let written = tiny(dir.path());
    let first = file_name(&written.shards[0]);
    rewrite_index(dir.path(), |i| {
        i["weight_map"]["no.such.weight"] = first.into();
    });
    assert!(invalid(dir.path()).contains("no.such.weight"));

    // A tensor the index places in another shard than the one holding it.
    let dir = tempfile::tempdir().unwrap();
    let written = tiny(dir.path());
    let (first, second) = (file_name(&written.shards[0]), file_name(&written.shards[1]));
    rewrite_index(dir.path(), |i| {
        let here = i["weight_map"][K].as_str().unwrap().to_string();
        let other = if here == first { second } else { first };
        i["weight_map"][K] = other.into();
    });
    assert!(invalid(dir.path()).contains(K));

    // The same name in two shards.
    let dir = tempfile::tempdir().unwrap();
    let written = tiny(dir.path());
    let first = written.shards[0].clone();
    let copy = dir.path().join("copy.safetensors");
    std::fs::copy(&first, &copy).unwrap();
    rewrite_index(dir.path(), |i| {
        i["weight_map"]["model.embed_tokens.weight"] = "copy.safetensors".into();
    });
    // The copy holds every tensor of the first shard: now in two shards.
    let reason = invalid(dir.path());
    assert!(
        reason.contains("also in") || reason.contains("does not put it here"),
        "{reason}"
    );

    // Paths leaving the directory.
    for escape in [
        "../model-00001-of-00003.safetensors",
        "/etc/passwd",
        "sub/../../x",
        "",
    ] {
        let dir = tempfile::tempdir().unwrap();
        tiny(dir.path());
        rewrite_index(dir.path(), |i| {
            i["weight_map"]["model.norm.weight"] = escape.into();
        });
        assert!(invalid(dir.path()).contains("not a file name"), "{escape}");
    }

    // Not an index at all.
    let dir = tempfile::tempdir().unwrap();
    tiny(dir.path());
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        b"{\"weight_map\": 3}",
    )
    .unwrap();
    assert!(invalid(dir.path()).contains("weight_map"));
}

#[test]
fn a_model_saved_sharded_loads_back_and_a_failed_save_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let written = tiny(&dir.path().join("in"));
    let model = Model::load(&written.index).unwrap();
    let out = dir.path().join("out");
    let options = slimnn::io::safetensors::SaveOptions::default();
    let shards = model.save_sharded(&out, &options, 1_500_000).unwrap();
    assert!(shards.len() >= 3, "{shards:?}");
    assert!(out.join("model.safetensors.index.json").is_file());
    // bf16 values written back byte for byte: the shards hold the input's tensors.
    assert_eq!(shard_by_shard(&shards), shard_by_shard(&written.shards),);
    let back = Model::load(&out).unwrap();
    assert_eq!(back.len(), model.len());

    // A non-empty output directory is refused, and nothing is left beside it.
    let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(matches!(
        model.save_sharded(&out, &options, 1_500_000),
        Err(Error::Io { .. })
    ));
    let after: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(before.len(), after.len());
    // An empty directory is fine.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    model.save_sharded(&empty, &options, 10_000_000).unwrap();
    assert_eq!(
        slimnn::io::safetensors::checkpoint_files(&empty)
            .unwrap()
            .len(),
        1
    );
}
