//! What the command-line tests share: the binary, and a small model file.

use std::path::Path;
use std::process::{Command, Output};

use ndarray::{Array, IxDyn};
use slimnn::Model;
use slimnn::io::safetensors::SaveOptions;

/// Runs the `slimnn` binary with `args`.
pub fn slimnn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slimnn"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// A two-layer model (`fc1` 64×96 with a bias, `fc2` 10×64) saved in `dir`; its path.
pub fn model_file(dir: &Path) -> String {
    let mut m = Model::new();
    m.add(
        "fc1.weight",
        Array::from_shape_fn(IxDyn(&[64, 96]), |i| {
            ((i[0] * 96 + i[1]) as f32 * 0.37).sin()
        }),
    )
    .unwrap();
    m.add("fc1.bias", Array::from_elem(IxDyn(&[64]), 0.5))
        .unwrap();
    m.add(
        "fc2.weight",
        Array::from_shape_fn(IxDyn(&[10, 64]), |i| {
            ((i[0] * 64 + i[1]) as f32 * 0.11).cos()
        }),
    )
    .unwrap();
    let path = dir.join("model.safetensors");
    m.save(&path, &SaveOptions::default()).unwrap();
    path.display().to_string()
}
