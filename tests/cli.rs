//! The `slimnn` binary, driven as a user would.
#![cfg(feature = "cli")]

#[path = "common/cli.rs"]
mod cli_common;

use std::process::Command;

use ndarray::{Array, IxDyn};
use slimnn::io::safetensors::SaveOptions;
use slimnn::{Model, Selector};

use cli_common::{model_file, slimnn};

#[test]
fn compress_report_decompress() {
    let dir = tempfile::tempdir().unwrap();
    let input = model_file(dir.path());
    let slim = dir.path().join("model.slim").display().to_string();
    let json = dir.path().join("report.json").display().to_string();
    let out = slimnn(&[
        "compress",
        &input,
        "-o",
        &slim,
        "--prune",
        "global:0.9",
        "--quantize",
        "kmeans:16",
        "--encode",
        "relative:4+huffman",
        "--report",
        &json,
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let file_bytes = std::fs::metadata(&slim).unwrap().len();
    assert_eq!(report["file_bytes"].as_u64().unwrap(), file_bytes);
    assert!(report["original_bytes"].as_u64().unwrap() > 10 * file_bytes);

    let out = slimnn(&["inspect", &slim]);
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("fc1.weight") && listing.contains("quantized"),
        "{listing}"
    );

    let dense = dir.path().join("dense.safetensors").display().to_string();
    let out = slimnn(&["decompress", &slim, "-o", &dense]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b) = (
        Model::load_compressed(&slim).unwrap(),
        Model::load(&dense).unwrap(),
    );
    for p in a.params() {
        assert_eq!(p.effective(), b.get(p.name()).unwrap().effective());
    }

    let out = slimnn(&[
        "report",
        &slim,
        "--original",
        &input,
        "--json",
        "--measure",
        "4",
    ]);
    assert!(out.status.success());
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["file_bytes"], report["file_bytes"]);
    // The pruned Linear weights were timed as CSR against the dense product.
    let timed = again["params"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["measured"].as_array().unwrap().is_empty())
        .collect::<Vec<_>>();
    assert_eq!(timed.len(), 2);
    // At batch 1 and the batch asked for, each with the kernel of its stored form.
    for p in timed {
        let batches: Vec<u64> = p["measured"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["batch"].as_u64().unwrap())
            .collect();
        assert_eq!(batches, [1, 4]);
        assert_eq!(p["measured"][0]["kernel"], "CSR");
    }
}

#[test]
fn a_safetensors_output_has_the_compression_applied() {
    let dir = tempfile::tempdir().unwrap();
    let input = model_file(dir.path());
    let output = dir.path().join("pruned.safetensors").display().to_string();
    let out = slimnn(&[
        "compress", &input, "-o", &output, "--prune", "nm:2:4", "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Model::load(&output).unwrap();
    let report = m.sparsity(&Selector::prunable()).unwrap();
    assert_eq!(report.sparsity(), 0.5);
}

#[test]
fn fold_bn_folds_the_named_pairs_and_reports_the_batch_norm_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model::load(model_file(dir.path())).unwrap();
    for (name, v) in [
        ("weight", 2.0f32),
        ("bias", 0.25),
        ("running_mean", 0.5),
        ("running_var", 3.0),
    ] {
        m.add(format!("bn1.{name}"), Array::from_elem(IxDyn(&[64]), v))
            .unwrap();
    }
    m.add_raw(slimnn::RawTensor {
        name: "bn1.num_batches_tracked".into(),
        dtype: "I64".into(),
        shape: vec![],
        bytes: vec![0; 8],
    })
    .unwrap();
    let input = dir.path().join("bn.safetensors");
    m.save(&input, &SaveOptions::default()).unwrap();
    let input = input.display().to_string();
    let output = dir.path().join("folded.safetensors").display().to_string();
    let json = dir.path().join("report.json").display().to_string();
    let out = slimnn(&[
        "compress",
        &input,
        "-o",
        &output,
        "--fold-bn",
        "fc1=bn1@1",
        "--report",
        &json,
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folded = Model::load(&output).unwrap();
    assert!(!folded.contains("bn1.weight"));
    assert!(folded.raw_tensors().is_empty());
    // s = 2/√(3 + 1) = 1: the weight is unchanged, b' = (0.5 − 0.5)·1 + 0.25.
    assert_eq!(
        folded.get("fc1.weight").unwrap().value(),
        m.get("fc1.weight").unwrap().value()
    );
    assert!(
        folded
            .get("fc1.bias")
            .unwrap()
            .value()
            .iter()
            .all(|&b| b == 0.25)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["removed"].as_array().unwrap().len(), 4);
    assert_eq!(
        report["original_params"].as_u64().unwrap(),
        m.numel() as u64
    );

    let err = slimnn(&["compress", &input, "-o", &output, "--fold-bn", "fc1:bn1"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("fold-bn"));
}

#[test]
fn bad_requests_fail_with_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = model_file(dir.path());
    let out_path = dir.path().join("out.slim");
    let output = out_path.display().to_string();
    for args in [
        vec!["compress", &input, "-o", &output, "--prune", "magic:0.5"],
        vec!["compress", &input, "-o", &output, "--quantize", "int9"],
        vec!["compress", &input, "-o", &output, "--encode", "relative:9"],
        vec!["compress", &input, "-o", &output, "--prune", "global:1.5"],
        vec!["compress", "missing.safetensors", "-o", &output],
        vec!["compress", &input, "-o", "x.safetensors", "--encode", "csr"],
        vec![
            "compress",
            &input,
            "-o",
            &output,
            "--quantize",
            "kmeans:100000",
        ],
    ] {
        let out = slimnn(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!out_path.exists(), "{args:?} left a file");
    }
    let garbage = dir.path().join("garbage.slim");
    std::fs::write(&garbage, b"SLIMNNCM\x01\0\0\0garbage").unwrap();
    let out = slimnn(&["inspect", &garbage.display().to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("slimnn compressed model"));
}

#[test]
fn selections_combine_globs_exclusions_and_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let input = model_file(dir.path());
    let listed = |select: &str| -> Vec<String> {
        let out = slimnn(&["inspect", "--select", select, &input]);
        assert!(
            out.status.success(),
            "{select}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed("fc*,!fc2.*"), ["fc1.bias", "fc1.weight"]);
    assert_eq!(
        listed("kind=bias|linear,!fc1.weight"),
        ["fc1.bias", "fc2.weight"]
    );
    // A step spec keeps its method's default kinds: no bias.
    assert_eq!(listed("magnitude:0.5@fc1.*"), ["fc1.weight"]);

    // `@fc1.*` prunes fc1's weight, not its bias.
    let output = dir.path().join("pruned.safetensors").display().to_string();
    let out = slimnn(&[
        "compress",
        &input,
        "-o",
        &output,
        "--prune",
        "magnitude:0.5@fc1.*,fc2.*,!fc2.*",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Model::load(&output).unwrap();
    assert_eq!(m.get("fc1.bias").unwrap().zeros(), 0);
    assert_eq!(m.get("fc2.weight").unwrap().zeros(), 0);
    assert_eq!(m.get("fc1.weight").unwrap().zeros(), 64 * 96 / 2);
}

#[test]
fn a_closed_pipe_a_mistyped_selection_and_a_dense_input_get_one_clear_line() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let input = model_file(dir.path());
    let slim = dir.path().join("model.slim").display().to_string();
    let out = slimnn(&["compress", &input, "-o", &slim, "--quiet"]);
    assert!(out.status.success());

    // `slimnn report model.slim | head -0`: the reader is gone before the first write.
    for args in [vec!["report", &slim], vec!["inspect", &slim]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_slimnn"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }

    // An empty selection is named in the syntax it was given in.
    let out = slimnn(&[
        "compress",
        &input,
        "-o",
        &slim,
        "--prune",
        "magnitude:0.5@encoder.*,!*.bias",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("`encoder.*,!*.bias,kind=linear|conv2d`") && !err.contains("Selector"),
        "{err}"
    );

    // A safetensors input is not a compressed file: one line, nothing written.
    let dense = dir.path().join("dense.safetensors");
    let out = slimnn(&["decompress", &input, "-o", &dense.display().to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not a compressed file"), "{err}");
    assert!(!dense.exists());
}

/// `n` with thousands separators, as reports print it.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn the_report_describes_the_file_written_against_the_input_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = model_file(dir.path());
    let input_size = std::fs::metadata(&input).unwrap().len();
    for output in ["pruned.safetensors", "pruned.slim"] {
        let output = dir.path().join(output).display().to_string();
        let json = dir.path().join("report.json").display().to_string();
        let out = slimnn(&[
            "compress",
            &input,
            "-o",
            &output,
            "--prune",
            "nm:2:4",
            "--quantize",
            "int8",
            "--report",
            &json,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = std::fs::metadata(&output).unwrap().len();
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["file_bytes"].as_u64().unwrap(), written, "{output}");
        assert_eq!(
            report["original_bytes"].as_u64().unwrap(),
            input_size,
            "{output}"
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        let summary = format!("({} → {} bytes)", grouped(input_size), grouped(written));
        assert!(printed.contains(&summary), "{summary} not in {printed}");
        if output.ends_with(".safetensors") {
            // Dense floats: each weight's bytes are its elements × 4.
            let rows = report["params"].as_array().unwrap();
            for p in rows {
                let stored: u64 = ["header", "values", "indices", "decoding", "tables"]
                    .iter()
                    .map(|k| p["stored"][k].as_u64().unwrap())
                    .sum();
                assert_eq!(stored, 4 * p["params"].as_u64().unwrap(), "{p}");
            }
        }
    }
}

#[test]
fn the_input_is_never_harmed_and_a_failed_run_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = model_file(dir.path());
    let slim = dir.path().join("model.slim").display().to_string();
    assert!(
        slimnn(&["compress", &input, "-o", &slim, "--quiet"])
            .status
            .success()
    );
    let link = dir.path().join("link.safetensors");
    std::fs::hard_link(&input, &link).unwrap();
    let same_input = format!("{}/./model.safetensors", dir.path().display());
    let link = link.display().to_string();
    let missing = dir
        .path()
        .join("missing")
        .join("r.json")
        .display()
        .to_string();
    let out_path = dir.path().join("out.slim");
    let output = out_path.display().to_string();
    let before = (
        std::fs::read(&input).unwrap(),
        std::fs::read(&slim).unwrap(),
    );
    for args in [
        vec!["compress", &input, "-o", &input, "--prune", "nm:2:4"],
        vec!["compress", &input, "-o", &same_input, "--prune", "nm:2:4"],
        vec!["compress", &input, "-o", &link, "--prune", "nm:2:4"],
        vec!["compress", &slim, "-o", &slim, "--quantize", "int8"],
        vec!["compress", &input, "-o", &output, "--report", &input],
        vec!["compress", &input, "-o", &output, "--report", &output],
        vec!["compress", &input, "-o", &output, "--report", &missing],
        vec!["decompress", &slim, "-o", &slim],
    ] {
        let out = slimnn(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!out_path.exists(), "{args:?} left a file");
        let now = (
            std::fs::read(&input).unwrap(),
            std::fs::read(&slim).unwrap(),
        );
        assert!(now == before, "{args:?} changed an input");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".slimnn-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[cfg(unix)]
#[test]
fn a_run_stopped_by_a_signal_removes_its_temporary_files() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let input = model_file(dir.path());
    let output = dir.path().join("out.slim");
    let json = dir.path().join("report.json");
    let temporaries = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".slimnn-") && n.ends_with(".tmp"))
            .collect()
    };
    for signal in ["-TERM", "-INT"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_slimnn"))
            .args(["compress", &input, "-o", &output.display().to_string()])
            .args(["--report", &json.display().to_string(), "--quiet"])
            .env("SLIMNN_TEST_HOLD_OUTPUTS_MS", "20000")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while temporaries().len() < 2 {
            assert!(t0.elapsed() < Duration::from_secs(60), "no temporary files");
            std::thread::sleep(Duration::from_millis(20));
        }
        let killed = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = child.wait().unwrap();
        assert!(!status.success(), "{signal}");
        assert!(temporaries().is_empty(), "{signal}: {:?}", temporaries());
        assert!(!output.exists() && !json.exists(), "{signal}");
    }
}

#[test]
fn requests_that_make_things_bigger_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let input = model_file(dir.path());
    let output = dir.path().join("out.slim").display().to_string();
    let json = dir.path().join("report.json").display().to_string();
    let run = |extra: &[&str]| -> (String, Vec<String>) {
        let mut args = vec![
            "compress", &input, "-o", &output, "--report", &json, "--quiet",
        ];
        args.extend_from_slice(extra);
        let out = slimnn(&args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{extra:?}: {err}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let warnings = report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        let printed: Vec<String> = err
            .lines()
            .map(|l| l.strip_prefix("warning: ").expect(l).to_string())
            .collect();
        assert_eq!(printed, warnings, "{extra:?}");
        (err, warnings)
    };
    // CSR on weights without zeros.
    let (_, w) = run(&["--encode", "csr@fc1.weight"]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("`fc1.weight`") && w[0].contains("sparse positions"),
        "{w:?}"
    );
    // A bias quantized per element.
    let (_, w) = run(&["--quantize", "int8@fc1.*,kind=linear|bias"]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("`fc1.bias`") && w[0].contains("scale per element"),
        "{w:?}"
    );
    // A pruning level whose positions cost more than its zeros save.
    let (_, w) = run(&["--prune", "magnitude:0.05", "--encode", "relative:8"]);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w.iter().all(|w| w.contains("sparse positions")), "{w:?}");
    // What pays off gives no warning.
    let (err, w) = run(&[
        "--prune",
        "global:0.9",
        "--quantize",
        "kmeans:16",
        "--encode",
        "relative:4+huffman@kind=linear",
    ]);
    assert!(w.is_empty() && err.is_empty(), "{w:?} {err}");
}

#[test]
fn a_trusted_file_beyond_the_default_memory_bound_loads_with_max_memory() {
    // 4M weights pruned to 0.1%: a small file that decompresses to far more than 256x
    // its size, which the loader refuses by default.
    let dir = tempfile::tempdir().unwrap();
    let mut m = Model::new();
    m.add(
        "fc.weight",
        Array::from_shape_fn(IxDyn(&[2048, 2048]), |i| {
            ((i[0] * 2048 + i[1]) as f32 * 0.37).sin()
        }),
    )
    .unwrap();
    let input = dir.path().join("big.safetensors");
    m.save(&input, &SaveOptions::default()).unwrap();
    let slim = dir.path().join("big.slim").display().to_string();
    let input = input.display().to_string();
    let out = slimnn(&[
        "compress",
        &input,
        "-o",
        &slim,
        "--prune",
        "magnitude:0.999",
        "-q",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let refused = slimnn(&["report", &slim]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--max-memory"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let trusted = slimnn(&["report", &slim, "--max-memory", "1G"]);
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let bad = slimnn(&["report", &slim, "--max-memory", "lots"]);
    assert!(!bad.status.success());
}

#[test]
fn compress_reads_a_sharded_checkpoint_directory() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("llama");
    let options = slimnn::io::synthetic::SyntheticOptions {
        max_shard_bytes: 2_000_000,
        ..Default::default()
    };
    let written = slimnn::io::synthetic::write_checkpoint(&input, &options).unwrap();
    let output = dir.path().join("out.safetensors");
    let out = slimnn(&[
        "compress",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--quantize",
        "int8",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Model::load(&output).unwrap();
    assert_eq!(m.len(), written.tensors);
}

/// `compress` streams a sharded checkpoint tensor by tensor: the GGUF it writes is the
/// one the whole model gives, and the report describes that file.
#[test]
fn a_streamed_compress_writes_what_the_whole_model_gives() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("llama");
    let options = slimnn::io::synthetic::SyntheticOptions {
        max_shard_bytes: 2_000_000,
        ..Default::default()
    };
    slimnn::io::synthetic::write_checkpoint(&input, &options).unwrap();
    let output = dir.path().join("out.gguf");
    let json = dir.path().join("report.json");
    let spec = "q4_0@!*.down_proj.*";
    let out = slimnn(&[
        "compress",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--quantize",
        spec,
        "--report",
        json.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut model = Model::load(&input).unwrap();
    slimnn::pipeline::Pipeline::new()
        .then(slimnn::pipeline::spec::quantize_step(spec).unwrap())
        .run(&mut model)
        .unwrap();
    let expected = model
        .to_gguf(&slimnn::io::GgufOptions::default())
        .unwrap()
        .to_bytes()
        .unwrap();
    let written = std::fs::read(&output).unwrap();
    assert!(written == expected);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["file_bytes"].as_u64(), Some(written.len() as u64));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".slimnn-"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn shard_size_writes_a_hugging_face_sharded_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("llama");
    slimnn::io::synthetic::write_checkpoint(&input, &Default::default()).unwrap();
    let output = dir.path().join("out");
    for (steps, size) in [
        (vec!["--quantize", "q8_0@*.self_attn.*"], "1MB"),
        (vec!["--prune", "global:0.5"], "1MiB"),
    ] {
        let _ = std::fs::remove_dir_all(&output);
        let out = slimnn(
            &[
                &[
                    "compress",
                    input.to_str().unwrap(),
                    "-o",
                    output.to_str().unwrap(),
                ][..],
                &steps,
                &["--shard-size", size, "--quiet"],
            ]
            .concat(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shards = slimnn::io::safetensors::checkpoint_files(&output).unwrap();
        assert!(shards.len() > 3, "{shards:?}");
        let limit = if size == "1MB" { 1_000_000 } else { 1 << 20 };
        for s in &shards {
            assert!(std::fs::metadata(s).unwrap().len() < limit + 100_000);
        }
        let original = Model::load(&input).unwrap();
        let written = Model::load(&output).unwrap();
        assert_eq!(written.len(), original.len());
    }
    // A directory that is not empty is refused before any work.
    let out = slimnn(&[
        "compress",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--shard-size",
        "1MB",
    ]);
    assert!(!out.status.success());
    let bad = slimnn(&[
        "compress",
        input.to_str().unwrap(),
        "-o",
        "x",
        "--shard-size",
        "lots",
    ]);
    assert!(!bad.status.success());
}
