//! `slimnn compress --calibration`: data-aware methods from a statistics file.
#![cfg(feature = "cli")]

#[path = "common/cli.rs"]
mod cli_common;

use std::path::Path;
use std::process::Output;

use slimnn::calib::CalibrationStats;
use slimnn::{Model, Selector};

use cli_common::{model_file, slimnn};

/// Statistics of `layers` (name, inputs), inputs of very different scales.
fn stats_file(dir: &Path, file: &str, layers: &[(&str, usize)]) -> String {
    let mut s = CalibrationStats::new();
    for &(name, d) in layers {
        let n = 300;
        let rows: Vec<f32> = (0..n * d)
            .map(|k| {
                ((k as f32) * 0.731).sin() * if (k % d).is_multiple_of(5) { 30.0 } else { 1.0 }
            })
            .collect();
        s.observe(name, &rows, n, d).unwrap();
    }
    let path = dir.join(file);
    s.save(&path).unwrap();
    path.display().to_string()
}

/// The layer output error `tr(ΔW·H·ΔWᵀ)` of `name` in `q` against `original`, from the
/// statistics `st`.
fn output_error(original: &Model, q: &Model, st: &CalibrationStats, name: &str) -> f64 {
    let (w, wq) = (
        original.get(name).unwrap().value(),
        q.get(name).unwrap().effective(),
    );
    let cols = w.shape()[1];
    let h = st.get(name).unwrap().xtx();
    let dw: Vec<f64> = w
        .iter()
        .zip(wq.iter())
        .map(|(a, b)| (b - a) as f64)
        .collect();
    dw.chunks(cols)
        .map(|row| {
            (0..cols)
                .map(|j| row[j] * (0..cols).map(|k| h[[j, k]] * row[k]).sum::<f64>())
                .sum::<f64>()
        })
        .sum()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wanda_and_awq_run_from_a_statistics_file() {
    let (dir, input, stats, st, original) = two_layers();
    let out_path = |n: &str| dir.path().join(n).display().to_string();

    let (wanda, magnitude) = (
        out_path("wanda.safetensors"),
        out_path("magnitude.safetensors"),
    );
    ok(&slimnn(&[
        "compress",
        &input,
        "-o",
        &wanda,
        "--calibration",
        &stats,
        "--prune",
        "wanda:0.5",
        "--quiet",
    ]));
    ok(&slimnn(&[
        "compress",
        &input,
        "-o",
        &magnitude,
        "--prune",
        "magnitude:0.5",
        "--quiet",
    ]));
    let w = Model::load(&wanda).unwrap();
    assert_eq!(w.sparsity(&Selector::prunable()).unwrap().sparsity(), 0.5);
    let m = Model::load(&magnitude).unwrap();
    assert_ne!(
        w.get("fc1.weight").unwrap().value(),
        m.get("fc1.weight").unwrap().value(),
        "Wanda must use the statistics"
    );

    let awq = out_path("awq.safetensors");
    ok(&slimnn(&[
        "compress",
        &input,
        "-o",
        &awq,
        "--calibration",
        &stats,
        "--quantize",
        "awq:4:g32",
        "--quiet",
    ]));
    ok(&slimnn(&[
        "compress",
        &input,
        "-o",
        &out_path("awq3.safetensors"),
        "--calibration",
        &stats,
        "--quantize",
        "awq:3@fc1.*",
        "--prune",
        "wanda:0.25",
        "--quiet",
    ]));
    let a = Model::load(&awq).unwrap();
    // The layer output error tr(ΔW·XᵀX·ΔWᵀ) of AWQ is at most round-to-nearest's
    // (the same affine grid, groups of 32).
    let rtn = out_path("rtn.safetensors");
    ok(&slimnn(&[
        "compress",
        &input,
        "-o",
        &rtn,
        "--quantize",
        "int4-group32",
        "--quiet",
    ]));
    let r = Model::load(&rtn).unwrap();
    for name in ["fc1.weight", "fc2.weight"] {
        let (e_awq, e_rtn) = (
            output_error(&original, &a, &st, name),
            output_error(&original, &r, &st, name),
        );
        assert!(e_awq < e_rtn, "{name}: AWQ {e_awq} vs RTN {e_rtn}");
    }
    // Data-free methods still run beside --calibration.
    ok(&slimnn(&[
        "compress",
        &input,
        "-o",
        &out_path("int8.safetensors"),
        "--calibration",
        &stats,
        "--quantize",
        "int8",
        "--quiet",
    ]));
}

/// A temporary directory with the two-layer model file and statistics of both layers:
/// the directory, the model's path, the statistics' path, the statistics, the model.
fn two_layers() -> (tempfile::TempDir, String, String, CalibrationStats, Model) {
    let dir = tempfile::tempdir().unwrap();
    let input = model_file(dir.path());
    let stats = stats_file(
        dir.path(),
        "stats.safetensors",
        &[("fc1.weight", 96), ("fc2.weight", 64)],
    );
    let st = CalibrationStats::load(&stats).unwrap();
    let original = Model::load(&input).unwrap();
    (dir, input, stats, st, original)
}

/// Runs `compress` on `input` into `dir/out` with `args`; the model written.
fn compressed(dir: &Path, input: &str, out: &str, args: &[&str]) -> Model {
    let path = dir.join(out).display().to_string();
    let mut all = vec!["compress", input, "-o", &path, "--quiet"];
    all.extend(args);
    ok(&slimnn(&all));
    match path.ends_with(".safetensors") {
        true => Model::load(&path).unwrap(),
        false => Model::load_compressed(&path).unwrap(),
    }
}

#[test]
fn second_order_methods_run_from_a_statistics_file() {
    let (dir, input, stats, st, original) = two_layers();
    let run = |out: &str, args: &[&str]| {
        let mut all = vec!["--calibration", stats.as_str()];
        all.extend(args);
        compressed(dir.path(), &input, out, &all)
    };
    // Each data-aware method against its data-free counterpart of the same pattern.
    for (method, baseline) in [
        ("sparsegpt:0.5", "magnitude:0.5"),
        ("sparsegpt:2:4", "nm:2:4"),
        ("obs:0.5", "magnitude:0.5"),
    ] {
        let m = run("m.safetensors", &["--prune", method]);
        let b = run("b.safetensors", &["--prune", baseline]);
        for name in ["fc1.weight", "fc2.weight"] {
            let p = m.get(name).unwrap();
            assert_eq!(p.zeros(), p.numel() / 2, "{method} {name}");
            let (e, e_b) = (
                output_error(&original, &m, &st, name),
                output_error(&original, &b, &st, name),
            );
            assert!(e < e_b, "{name}: {method} {e} vs {baseline} {e_b}");
        }
    }
    let g = run("g.safetensors", &["--quantize", "gptq:4:g32"]);
    let r = run("r.safetensors", &["--quantize", "int4-group32"]);
    for name in ["fc1.weight", "fc2.weight"] {
        let (e, e_r) = (
            output_error(&original, &g, &st, name),
            output_error(&original, &r, &st, name),
        );
        assert!(e < e_r, "{name}: GPTQ {e} vs round-to-nearest {e_r}");
    }
    // Pruned, then quantized with the pruned weights kept at 0, into the compressed
    // format (which keeps the codes), on one layer.
    let both = run(
        "both.slim",
        &[
            "--prune",
            "sparsegpt:2:4@fc1.*",
            "--quantize",
            "gptq:3@fc1.*",
        ],
    );
    let fc1 = both.get("fc1.weight").unwrap();
    assert!(fc1.quantized().is_some());
    assert!(fc1.zeros() >= fc1.numel() / 2);
    assert_eq!(
        both.get("fc2.weight").unwrap().value(),
        original.get("fc2.weight").unwrap().value()
    );
    // A compressed input is not streamed: the whole model, the same result.
    compressed(dir.path(), &input, "plain.slim", &[]);
    let slim = dir.path().join("plain.slim").display().to_string();
    let whole = compressed(
        dir.path(),
        &slim,
        "whole.safetensors",
        &["--calibration", &stats, "--quantize", "gptq:4:g32"],
    );
    for name in ["fc1.weight", "fc2.weight"] {
        assert_eq!(
            whole.get(name).unwrap().value(),
            g.get(name).unwrap().value()
        );
    }
    let partial = stats_file(dir.path(), "partial.safetensors", &[("fc1.weight", 96)]);
    let out = slimnn(&[
        "compress",
        &slim,
        "-o",
        &dir.path().join("no.safetensors").display().to_string(),
        "--calibration",
        &partial,
        "--prune",
        "sparsegpt:0.5",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("fc2.weight"), "{err}");
    assert!(!dir.path().join("no.safetensors").exists());
}

#[test]
fn calibration_mistakes_are_one_line_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let input = model_file(dir.path());
    let full = stats_file(
        dir.path(),
        "full.safetensors",
        &[("fc1.weight", 96), ("fc2.weight", 64)],
    );
    let partial = stats_file(dir.path(), "partial.safetensors", &[("fc1.weight", 96)]);
    let wrong = stats_file(
        dir.path(),
        "wrong.safetensors",
        &[("fc1.weight", 95), ("fc2.weight", 64)],
    );
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\x08\0\0\0\0\0\0\0{\"a\":1}").unwrap();
    let garbage = garbage.display().to_string();
    let out_path = dir.path().join("out.safetensors");
    let output = out_path.display().to_string();
    let slim = dir.path().join("out.slim").display().to_string();
    for (args, says) in [
        (vec!["--prune", "wanda:0.5"], "--calibration"),
        (vec!["--quantize", "awq:4"], "--calibration"),
        (
            vec!["--calibration", &partial, "--prune", "wanda:0.5"],
            "fc2.weight",
        ),
        (
            vec!["--calibration", &wrong, "--quantize", "awq:4"],
            "fc1.weight",
        ),
        (
            vec!["--calibration", &garbage, "--prune", "wanda:0.5"],
            "garbage",
        ),
        (vec!["--calibration", &full, "--quantize", "awq:9"], "bits"),
        (
            vec!["--calibration", &full, "--quantize", "awq:4:128"],
            "awq:BITS",
        ),
        (vec!["--prune", "sparsegpt:2:4"], "--calibration"),
        (vec!["--quantize", "gptq:4"], "--calibration"),
        (
            vec!["--calibration", &partial, "--prune", "sparsegpt:2:4"],
            "fc2.weight",
        ),
        (
            vec!["--calibration", &partial, "--prune", "obs:0.5@fc*"],
            "fc2.weight",
        ),
        (
            vec!["--calibration", &wrong, "--quantize", "gptq:4"],
            "fc1.weight",
        ),
        (vec!["--calibration", &full, "--quantize", "gptq:1"], "bits"),
        (
            vec!["--calibration", &full, "--quantize", "gptq:4:g"],
            "gptq:BITS",
        ),
        (
            vec!["--calibration", &full, "--prune", "sparsegpt:2:x"],
            "sparsegpt:F",
        ),
        (
            vec!["--calibration", &full, "--prune", "sparsegpt:4:2"],
            "`n`",
        ),
        (
            vec!["--calibration", &full, "--prune", "obs:1.5"],
            "sparsity",
        ),
        // 7 does not divide fc1's 96 inputs.
        (
            vec!["--calibration", &full, "--prune", "sparsegpt:3:7"],
            "fc1.weight",
        ),
    ] {
        let mut all = vec!["compress", &input, "-o", &output, "--quiet"];
        all.extend(&args);
        let out = slimnn(&all);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(says),
            "{args:?}: {err}"
        );
        assert!(!out_path.exists(), "{args:?} left a file");
    }
    // The compressed file keeps AWQ's decoded values.
    ok(&slimnn(&[
        "compress",
        &input,
        "-o",
        &slim,
        "--calibration",
        &full,
        "--quantize",
        "awq:4",
        "--quiet",
    ]));
    let back = Model::load_compressed(&slim).unwrap();
    let original = Model::load(&input).unwrap();
    assert_ne!(
        back.get("fc2.weight").unwrap().value(),
        original.get("fc2.weight").unwrap().value()
    );
}

/// `--quantize gptq:q4_0` / `gptq:q8_0` write GGUF Q4_0 / Q8_0 blocks that load back as
/// the quantized form, more accurate on the calibration data than plain `q4_0` / `q8_0`.
#[test]
fn gptq_on_ggml_grids_writes_gguf_blocks() {
    let (dir, input, stats, st, original) = two_layers();
    for (gptq, rtn) in [("gptq:q4_0", "q4_0"), ("gptq:q8_0", "q8_0")] {
        let run = |method: &str, calibrated: bool| {
            let path = dir.path().join("out.gguf").display().to_string();
            let mut all = vec!["compress", &input, "-o", &path, "--quiet"];
            all.extend(["--format", "gguf", "--quantize", method]);
            if calibrated {
                all.extend(["--calibration", stats.as_str()]);
            }
            ok(&slimnn(&all));
            Model::load_gguf(&path).unwrap()
        };
        let (g, r) = (run(gptq, true), run(rtn, false));
        for name in ["fc1.weight", "fc2.weight"] {
            let q = g.get(name).unwrap().quantized().unwrap();
            let r_q = r.get(name).unwrap().quantized().unwrap();
            assert_eq!(q.codes().bits(), r_q.codes().bits());
            assert_eq!(q.bits_per_weight(), r_q.bits_per_weight());
            let (e, e_r) = (
                output_error(&original, &g, &st, name),
                output_error(&original, &r, &st, name),
            );
            println!("{gptq} {name}: GPTQ {e:.6e} vs {rtn} {e_r:.6e}");
            assert!(e < e_r, "{name}: {gptq} {e} vs {rtn} {e_r}");
        }
    }
}
