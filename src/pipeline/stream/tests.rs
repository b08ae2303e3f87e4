//! A streamed compression writes the bytes the whole-model path writes, in every
//! format, whole tensors or row chunks.

use std::io::Cursor;
use std::path::Path;

use super::StreamFormat;
use crate::io::GgufOptions;
use crate::io::safetensors::SaveOptions;
use crate::io::synthetic::{SyntheticOptions, write_checkpoint};
use crate::model::{DType, Model};
use crate::pipeline::{Pipeline, spec};
use crate::quant::GgmlFormat;

fn pipeline(prune: &[&str], quantize: &[&str], encode: &[&str]) -> Pipeline {
    let mut p = Pipeline::new();
    for s in prune {
        p.push(spec::prune_step(s).unwrap());
    }
    for s in quantize {
        p.push(spec::quantize_step(s).unwrap());
    }
    for s in encode {
        p.push(spec::encode_step(s).unwrap());
    }
    p
}

/// Q8_0 on the MLP but `down_proj` (whose rows are not whole blocks), Q6_K on attention.
fn ggml_mix() -> Pipeline {
    pipeline(
        &[],
        &["q8_0@*.mlp.*,!*.down_proj.*", "q6_k@*.self_attn.*"],
        &[],
    )
}

/// The whole-model path's bytes for `format`.
fn whole(input: &Path, p: &Pipeline, format: StreamFormat) -> (Vec<u8>, Model) {
    let mut model = Model::load(input).unwrap();
    p.run(&mut model).unwrap();
    let bytes = match format {
        StreamFormat::Compressed => crate::store::to_bytes(&model).unwrap(),
        StreamFormat::Safetensors(o) => model.to_safetensors(&o).unwrap(),
        StreamFormat::Gguf(o) => model.to_gguf(&o).unwrap().to_bytes().unwrap(),
    };
    (bytes, model)
}

fn streamed(
    input: &Path,
    p: &Pipeline,
    format: StreamFormat,
    chunk: usize,
) -> (Vec<u8>, super::Report) {
    streamed_by(input, p, format, chunk, true)
}

/// The streamed bytes and report, `straight` saying whether tensors may take the
/// straight path.
fn streamed_by(
    input: &Path,
    p: &Pipeline,
    format: StreamFormat,
    chunk: usize,
    straight: bool,
) -> (Vec<u8>, super::Report) {
    let mut out = Cursor::new(Vec::new());
    let report = p
        .stream_in_chunks(input, &mut out, format, |_, _, _| {}, chunk, straight)
        .unwrap();
    (out.into_inner(), report)
}

#[test]
fn streamed_bytes_are_those_of_the_whole_model_path() {
    let dir = tempfile::tempdir().unwrap();
    let options = SyntheticOptions {
        max_shard_bytes: 1 << 20,
        ..SyntheticOptions::default()
    };
    let ckpt = write_checkpoint(dir.path(), &options).unwrap();
    assert!(ckpt.shards.len() >= 3);
    let gguf = StreamFormat::Gguf(GgufOptions::default());
    let q4_k = StreamFormat::Gguf(GgufOptions {
        quantize: Some(GgmlFormat::Q4_K),
    });
    let st = StreamFormat::Safetensors(SaveOptions::default());
    let st32 = StreamFormat::Safetensors(SaveOptions {
        dtype: Some(DType::F32),
        ..SaveOptions::default()
    });
    let cases = [
        (pipeline(&[], &["q4_0@!*.down_proj.*"], &[]), gguf),
        (ggml_mix(), gguf),
        (pipeline(&[], &[], &[]), q4_k),
        (
            pipeline(&["magnitude:0.5"], &["q4_0@!*.down_proj.*"], &[]),
            st,
        ),
        (pipeline(&["nm:2:4"], &[], &[]), st32),
        (
            pipeline(&["magnitude:0.7"], &["kmeans:16"], &["relative:4+huffman"]),
            StreamFormat::Compressed,
        ),
        (
            pipeline(&[], &["int8"], &["auto"]),
            StreamFormat::Compressed,
        ),
    ];
    for (p, format) in &cases {
        let (expected, model) = whole(&ckpt.index, p, *format);
        // Whole tensors, then row chunks of 64 KiB (the embedding and `lm_head` of the
        // tiny model are 2 MiB in f32).
        for chunk in [usize::MAX, 64 << 10] {
            let (bytes, report) = streamed(dir.path(), p, *format, chunk);
            assert!(
                bytes == expected,
                "{format:?} {:?} chunk {chunk}",
                p.describe_steps()
            );
            assert_eq!(report.file_bytes, bytes.len());
            assert_eq!(report.params.len(), model.len());
            assert_eq!(report.total_params(), model.numel());
            if *format == StreamFormat::Compressed {
                // The sizes are the encoder's, as `Report::compare` gives them.
                let reference = crate::pipeline::Report::compare(&model, &model, vec![]).unwrap();
                for (a, b) in report.params.iter().zip(&reference.params) {
                    assert_eq!(a.stored, b.stored, "{}", a.name);
                }
            }
        }
    }
}

#[test]
fn the_straight_path_writes_and_reports_as_the_general_one() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = write_checkpoint(dir.path(), &SyntheticOptions::default()).unwrap();
    let gguf = StreamFormat::Gguf(GgufOptions::default());
    let q4_k = StreamFormat::Gguf(GgufOptions {
        quantize: Some(GgmlFormat::Q4_K),
    });
    let cases = [
        (pipeline(&[], &["q4_0@!*.down_proj.*"], &[]), gguf),
        (ggml_mix(), q4_k),
        (pipeline(&[], &["q4_0@*.mlp.*,!*.down_proj.*"], &[]), gguf),
        (
            pipeline(&["magnitude:0.5@*.mlp.*"], &["q8_0@!*.down_proj.*"], &[]),
            gguf,
        ),
        (pipeline(&[], &[], &[]), gguf),
    ];
    for (p, format) in &cases {
        for chunk in [usize::MAX, 64 << 10] {
            let (bytes, mut report) = streamed_by(&ckpt.index, p, *format, chunk, true);
            let (expected, mut general) = streamed_by(&ckpt.index, p, *format, chunk, false);
            let what = format!("{format:?} {:?} chunk {chunk}", p.describe_steps());
            assert!(bytes == expected, "{what}");
            for s in report.steps.iter_mut().chain(&mut general.steps) {
                s.seconds = 0.0;
            }
            assert_eq!(report, general, "{what}");
        }
    }
    // Rows that are not whole blocks: the general path's error either way.
    let p = pipeline(&[], &["q4_0"], &[]);
    let error = |straight| {
        let mut out = Cursor::new(Vec::new());
        p.stream_in_chunks(
            &ckpt.index,
            &mut out,
            gguf,
            |_, _, _| {},
            64 << 10,
            straight,
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(error(true), error(false));
}

#[test]
fn bf16_tensors_left_alone_are_byte_identical_and_errors_match_the_whole_path() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = write_checkpoint(dir.path(), &SyntheticOptions::default()).unwrap();
    let p = pipeline(&[], &["q4_0@*.up_proj.*"], &[]);
    let format = StreamFormat::Safetensors(SaveOptions::default());
    let (bytes, report) = streamed(&ckpt.index, &p, format, 64 << 10);
    let out = Model::from_safetensors(&bytes, "out").unwrap();
    let input = Model::load(&ckpt.index).unwrap();
    let mut reference = input.clone();
    let whole = p.run(&mut reference).unwrap();
    for (a, b) in report.params.iter().zip(&whole.params) {
        assert_eq!(a.name, b.name);
        assert!((a.relative_error - b.relative_error).abs() <= 1e-9 * b.relative_error.max(1.0));
        if !a.name.contains(".up_proj.") {
            assert_eq!(a.relative_error, 0.0);
            let (x, y) = (out.get(&a.name).unwrap(), input.get(&a.name).unwrap());
            assert_eq!(x.dtype(), DType::BF16);
            assert_eq!(x.value(), y.value());
        }
    }
}

#[test]
fn whole_model_steps_and_empty_selections_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = write_checkpoint(dir.path(), &SyntheticOptions::default()).unwrap();
    let global = pipeline(&["global:0.5"], &[], &[]);
    assert!(!global.can_stream(&ckpt.index).unwrap());
    assert!(
        pipeline(&[], &["q4_0@!*.down_proj.*"], &[])
            .can_stream(dir.path())
            .unwrap()
    );
    let mut out = Cursor::new(Vec::new());
    let format = StreamFormat::Compressed;
    assert!(
        global
            .stream(&ckpt.index, &mut out, format, |_, _, _| {})
            .is_err()
    );
    let none = pipeline(&[], &["int8@nothing.*"], &[]);
    let e = none.stream(&ckpt.index, &mut out, format, |_, _, _| {});
    assert!(matches!(e, Err(crate::Error::Empty { .. })), "{e:?}");
    assert!(out.get_ref().is_empty());
}

#[test]
fn streamed_shards_are_those_save_sharded_writes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_checkpoint(&input, &SyntheticOptions::default()).unwrap();
    let p = pipeline(&["nm:2:4@*.mlp.*"], &["q8_0@*.self_attn.*"], &[]);
    let options = SaveOptions::default();
    let mut model = Model::load(&input).unwrap();
    p.run(&mut model).unwrap();
    let expected = dir.path().join("expected");
    model.save_sharded(&expected, &options, 1_000_000).unwrap();
    let streamed = dir.path().join("streamed");
    let report = p
        .stream_sharded(&input, &streamed, options, 1_000_000, |_, _, _| {})
        .unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&expected)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(names.len() > 3);
    let mut total = 0;
    for name in &names {
        let a = std::fs::read(expected.join(name)).unwrap();
        let b = std::fs::read(streamed.join(name)).unwrap();
        assert!(a == b, "{name:?}");
        if name != crate::io::safetensors::INDEX_FILE {
            total += b.len();
        }
    }
    assert_eq!(report.file_bytes, total);
    assert_eq!(std::fs::read_dir(&streamed).unwrap().count(), names.len());
    // A non-empty directory is refused.
    let again = p.stream_sharded(&input, &streamed, options, 1_000_000, |_, _, _| {});
    assert!(again.is_err());
}
