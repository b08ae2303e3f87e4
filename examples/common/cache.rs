//! Trained networks cached between runs of an example, under
//! `target/slimnn-examples/EXAMPLE/KEY.safetensors`, tagged with the recipe that made
//! them (a cache made by another recipe is ignored).

use std::path::{Path, PathBuf};

use slimnn::io::safetensors::SaveOptions;
use slimnn::{Model, Result};

/// Where `example`'s network `key` is cached.
pub fn path(example: &str, key: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/slimnn-examples")
        .join(example)
        .join(format!("{key}.safetensors"))
}

/// Loads the cached values at `path` into `model` if they were made by `recipe` and
/// hold exactly `model`'s parameters; `false` if there is no such cache.
pub fn load(path: &Path, recipe: &str, model: &mut Model) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let cached = Model::load(path)?;
    if cached.metadata().get("trained").map(String::as_str) != Some(recipe) {
        return Ok(false);
    }
    let names: Vec<String> = model
        .params()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    if cached.len() != names.len() || names.iter().any(|n| !cached.contains(n)) {
        return Ok(false);
    }
    for name in names {
        let value = cached.get(&name)?.value().clone();
        model.get_mut(&name)?.value_mut().assign(&value);
    }
    eprintln!("    loaded {} ({recipe})", path.display());
    Ok(true)
}

/// Saves `model` at `path`, tagged with `recipe`.
pub fn save(path: &Path, recipe: &str, model: &Model) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| slimnn::Error::Io {
            path: dir.into(),
            source: e,
        })?;
    }
    let mut m = model.clone();
    m.metadata_mut().insert("trained".into(), recipe.into());
    m.save(path, &SaveOptions::default())
}
