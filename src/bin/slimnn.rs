//! `slimnn`: inspect, compress, decompress and report on model files.
//!
//! ```text
//! slimnn inspect model.safetensors
//! slimnn inspect --select 'encoder.*,!*.LayerNorm.*,kind=linear' model.safetensors
//! slimnn compress model.safetensors -o model.slim --prune global:0.9 --quantize kmeans:32 --encode relative:4+huffman --report report.json
//! slimnn compress model.safetensors -o pruned.safetensors --prune nm:2:4
//! slimnn decompress model.slim -o model.safetensors
//! slimnn report model.slim --original model.safetensors
//! ```
//!
//! Step specifications are those of `slimnn::pipeline::spec`. Errors are one line on
//! stderr and a non-zero exit; outputs are written atomically, never half.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use slimnn::calib::CalibrationStats;
use slimnn::io::GgufOptions;
use slimnn::io::safetensors::SaveOptions;
use slimnn::pipeline::{FoldBatchNorm, Pipeline, Report, StreamFormat, spec};
use slimnn::quant::GgmlFormat;
use slimnn::store::LoadOptions;
use slimnn::{Error, Model, Result, Selector};

#[derive(Parser)]
#[command(
    name = "slimnn",
    version,
    about = "Make trained neural networks smaller and faster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Let a compressed input claim up to this many bytes of memory (default: 256 bytes
    /// per byte of file plus 16 MiB, which bounds what a hostile file can take). Raise it
    /// for a trusted file that decompresses further, e.g. `--max-memory 8G`.
    #[arg(long, global = true, value_name = "BYTES", value_parser = parse_bytes)]
    max_memory: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// List a model's parameters: kinds, shapes, dtypes, sparsity and compressed forms.
    Inspect {
        /// A safetensors file or a slimnn compressed file.
        model: PathBuf,
        /// List only what a selection picks: `encoder.*,!*.LayerNorm.*,kind=linear`, or a
        /// step spec such as `int8@encoder.*` (with the method's default kinds).
        #[arg(long, value_name = "SPEC")]
        select: Option<String>,
    },
    /// Compress a model: steps run in the order fold-bn, prune, lowrank, quantize, encode.
    ///
    /// Each SPEC may end in `@SELECTION`: comma-separated name globs, `!GLOB` exclusions
    /// and `kind=K[|K2]` (e.g. `int8@encoder.*,!*.LayerNorm.*`); without `kind=` the
    /// method's default kinds apply. See what a selection picks with `inspect --select`.
    Compress {
        /// The model to compress (safetensors or slimnn compressed).
        model: PathBuf,
        /// Where to write the result.
        #[arg(short, long)]
        output: PathBuf,
        /// BatchNorm folds (a file has no graph: name each layer and the BatchNorm
        /// after it, PyTorch's names), e.g. `conv1=bn1,layer1.0.conv1=layer1.0.bn1`;
        /// `@EPS` sets ε (default 1e-5).
        #[arg(long, value_name = "LAYER=BN,...")]
        fold_bn: Vec<String>,
        /// Pruning steps, e.g. `global:0.9`, `nm:2:4`, `magnitude:0.5@fc1.*,!*.bias`.
        #[arg(long, value_name = "SPEC")]
        prune: Vec<String>,
        /// Low-rank steps, e.g. `svd:0.95`, `svd:64@fc*`, `tucker2:vbmf`, `budget:100000`.
        #[arg(long, value_name = "SPEC")]
        lowrank: Vec<String>,
        /// Quantization steps, e.g. `kmeans:32`, `int8`, `int4-group128`, `q4_0`, `q6_k`;
        /// `q4_k` with `--format gguf` only (its weights are quantized as written).
        #[arg(long, value_name = "SPEC")]
        quantize: Vec<String>,
        /// Calibration statistics (safetensors: `NAME.xtx`, `NAME.rows`, optional
        /// `NAME.absmean` per weight; see docs/calibration.md). Enables the data-aware
        /// methods `--prune wanda:F|sparsegpt:F|sparsegpt:N:M|obs:F` and `--quantize
        /// gptq:BITS[:gGROUP]|awq:BITS[:gGROUP]`.
        #[arg(long, value_name = "STATS.safetensors")]
        calibration: Option<PathBuf>,
        /// Storage of the compressed format, e.g. `relative:4+huffman`, `csr`, `auto`.
        #[arg(long, value_name = "SPEC")]
        encode: Vec<String>,
        /// Output format (default: safetensors if the output ends in `.safetensors`,
        /// GGUF if it ends in `.gguf`).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Also write the report as JSON.
        #[arg(long, value_name = "FILE.json")]
        report: Option<PathBuf>,
        /// Write a Hugging Face sharded safetensors checkpoint into the directory OUTPUT
        /// (absent or empty): shards of at most SIZE bytes of data (`2GB` = 2·10⁹ as
        /// Hugging Face counts, `2GiB` or `2G` = 2³¹) and `model.safetensors.index.json`.
        #[arg(long, value_name = "SIZE", value_parser = parse_shard_size)]
        shard_size: Option<u64>,
        /// No progress bar and no report table.
        #[arg(short, long)]
        quiet: bool,
        /// Time each compressed Linear layer in the form the output stores (CSR, N:M,
        /// int8, codebook, integer groups, factors) against the dense product, at batch 1
        /// and BATCH (a compressed or GGUF output; streamed outputs when they are at most
        /// 1 GiB).
        #[arg(long, value_name = "BATCH", default_value_t = 64)]
        measure: usize,
        /// Do not time the layers.
        #[arg(long)]
        no_measure: bool,
    },
    /// Write a compressed model as a dense safetensors file.
    Decompress {
        /// The compressed model.
        model: PathBuf,
        /// The safetensors file to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// The report of a compressed model: storage per parameter, and against the
    /// original, errors and compression rate.
    Report {
        /// The compressed model.
        model: PathBuf,
        /// The model it was compressed from.
        #[arg(long)]
        original: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Time each compressed Linear layer in its stored form against the dense
        /// product, at batch 1 and BATCH.
        #[arg(long, value_name = "BATCH", default_value_t = 64)]
        measure: usize,
        /// Do not time the layers.
        #[arg(long)]
        no_measure: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// slimnn's compressed model file.
    Compressed,
    /// A dense safetensors file with the compression applied.
    Safetensors,
    /// A GGUF v3 file (llama.cpp): ggml-quantized weights as their block types, the
    /// rest dense.
    Gguf,
}

fn main() -> ExitCode {
    outputs::remove_temporary_files_on_signal();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let limits = match cli.max_memory {
        Some(bytes) => LoadOptions::new().with_max_memory(bytes),
        None => LoadOptions::new(),
    };
    let load = |path: &Path| load(path, &limits);
    match cli.command {
        Command::Inspect { model, select } => {
            let selector = select.as_deref().map(spec::selection).transpose()?;
            let model = load(&model)?;
            if let Some(selector) = &selector {
                // An empty selection is an error naming it.
                model.select(selector)?;
            }
            inspect(&model, selector.as_ref())
        }
        Command::Compress {
            model,
            output,
            fold_bn,
            prune,
            lowrank,
            quantize,
            calibration,
            encode,
            format,
            report,
            shard_size,
            quiet,
            measure,
            no_measure,
        } => {
            if shard_size.is_some() && !matches!(format, None | Some(Format::Safetensors)) {
                return Err(Error::InvalidParameter {
                    name: "--shard-size",
                    value: "with --format".into(),
                    expected: "a safetensors output (shards are safetensors files)".into(),
                });
            }
            let format = format.unwrap_or(match output.extension() {
                _ if shard_size.is_some() => Format::Safetensors,
                Some(e) if e == "safetensors" => Format::Safetensors,
                Some(e) if e == "gguf" => Format::Gguf,
                _ => Format::Compressed,
            });
            // The stored forms are timed where the output stores them (not in a dense
            // safetensors file).
            let measure = (!no_measure && format != Format::Safetensors).then_some(measure);
            // `q4_k` has no in-memory quantized form: GGUF output quantizes as it writes.
            let (q4_k, quantize): (Vec<String>, Vec<String>) =
                quantize.into_iter().partition(|s| s == "q4_k");
            if !q4_k.is_empty() && format != Format::Gguf {
                return Err(Error::InvalidParameter {
                    name: "--quantize",
                    value: "q4_k".into(),
                    expected: "q4_k with --format gguf only (other outputs: q4_0, q6_k, ...)"
                        .into(),
                });
            }
            if format != Format::Compressed && !encode.is_empty() {
                return Err(Error::InvalidParameter {
                    name: "--encode",
                    value: encode.join(" "),
                    expected: "no encoding with a safetensors or GGUF output (encodings are \
                               of the compressed format)"
                        .into(),
                });
            }
            // Nothing is read or computed before every output is known to be writable
            // and none is the input.
            let mut targets = vec![];
            if shard_size.is_none() {
                targets.push(("--output", output.as_path()));
            } else {
                outputs::check_directory(&model, &output)?;
            }
            if let Some(r) = &report {
                targets.push(("--report", r.as_path()));
            }
            outputs::check(&model, &targets)?;
            let stats = calibration
                .as_deref()
                .map(|p| CalibrationStats::load(p).map(Arc::new))
                .transpose()?;
            let mut pipeline = Pipeline::new();
            for s in &fold_bn {
                pipeline.push(Box::new(FoldBatchNorm::parse(s)?));
            }
            for s in &prune {
                pipeline.push(match &stats {
                    Some(st) => spec::calibrated_prune_step(s, Arc::clone(st))?,
                    None => spec::prune_step(s)?,
                });
            }
            for s in &lowrank {
                pipeline.push(spec::lowrank_step(s)?);
            }
            for s in &quantize {
                pipeline.push(match &stats {
                    Some(st) => spec::calibrated_quantize_step(s, Arc::clone(st))?,
                    None => spec::quantize_step(s)?,
                });
            }
            for s in &encode {
                pipeline.push(spec::encode_step(s)?);
            }
            let input_bytes = input_size(&model)?;
            // A request the forms cannot hold is refused before any work, streamed or not.
            let streams = pipeline.can_stream(&model)?;
            if streams {
                spec::check_prune_lowrank_at(&model, &prune, &lowrank)?;
            }
            if let Some(max_shard_bytes) = shard_size {
                return compress_sharded(
                    &pipeline,
                    &model,
                    &output,
                    report.as_deref(),
                    max_shard_bytes,
                    quiet,
                    input_bytes,
                    measure,
                );
            }
            if streams {
                let format = match format {
                    Format::Compressed => StreamFormat::Compressed,
                    Format::Safetensors => StreamFormat::Safetensors(SaveOptions::default()),
                    Format::Gguf => StreamFormat::Gguf(GgufOptions {
                        quantize: (!q4_k.is_empty()).then_some(GgmlFormat::Q4_K),
                    }),
                };
                return compress_streaming(
                    &pipeline,
                    &model,
                    &output,
                    report.as_deref(),
                    format,
                    quiet,
                    input_bytes,
                    measure,
                );
            }
            let mut model = load(&model)?;
            spec::check_prune_lowrank(&model, &prune, &lowrank)?;
            // Every weight a data-aware step selects has its statistics, before any work.
            if let Some(st) = &stats {
                for s in prune.iter().chain(&quantize) {
                    if spec::is_calibrated(s) {
                        spec::check_calibrated(s, &model, st)?;
                    }
                }
            }
            let bar = progress(quiet, pipeline.describe_steps().len());
            let result = pipeline.run_with(&mut model, |i, description| {
                bar.set_position(i as u64);
                bar.set_message(description.to_string());
            });
            bar.finish_and_clear();
            let mut result = result?;
            if let Some(batch) = measure
                && format != Format::Safetensors
            {
                result.measure(&model, batch)?;
            }
            // The report describes the file written, against the input file on disk.
            let bytes = match format {
                Format::Compressed => slimnn::store::to_bytes(&model)?,
                Format::Safetensors => {
                    let options = SaveOptions::default();
                    let bytes = model.to_safetensors(&options)?;
                    result.describe_dense_file(&model, options.dtype, bytes.len())?;
                    bytes
                }
                Format::Gguf => {
                    let options = GgufOptions {
                        quantize: (!q4_k.is_empty()).then_some(GgmlFormat::Q4_K),
                    };
                    model.to_gguf(&options)?.to_bytes()?
                }
            };
            result.file_bytes = bytes.len();
            result.original_bytes = input_bytes;
            // All outputs are written last, together: a failing one leaves none behind.
            let json = report.as_ref().map(|_| result.to_json() + "\n");
            let mut files = vec![(output.as_path(), bytes.as_slice())];
            if let (Some(path), Some(json)) = (&report, &json) {
                files.push((path.as_path(), json.as_bytes()));
            }
            outputs::write_all(&files)?;
            if !quiet {
                emit(&format!("{result}wrote {}\n", output.display()))?;
            }
            warn(&result);
            Ok(())
        }
        Command::Decompress { model, output } => {
            if !is_compressed(&model)? {
                return Err(Error::InvalidFormat {
                    format: "slimnn compressed model",
                    source_name: model.display().to_string(),
                    reason: "not a compressed file (no SLIMNNCM magic): decompress reads \
                             what compress writes; a safetensors file is already dense"
                        .into(),
                });
            }
            outputs::check(&model, &[("--output", output.as_path())])?;
            let bytes = Model::load_compressed_with(&model, &limits)?
                .to_safetensors(&SaveOptions::default())?;
            outputs::write_all(&[(output.as_path(), bytes.as_slice())])
        }
        Command::Report {
            model,
            original,
            json,
            measure,
            no_measure,
        } => {
            let compressed = load(&model)?;
            let original_bytes = original.as_deref().map(file_size).transpose()?;
            let original = match original {
                Some(p) => load(&p)?,
                None => compressed.clone(),
            };
            let mut report = Report::compare(&original, &compressed, Vec::new())?;
            if let Some(n) = original_bytes {
                report.original_bytes = n;
            }
            if !no_measure {
                report.measure(&compressed, measure)?;
            }
            if json {
                emit(&(report.to_json() + "\n"))?;
            } else {
                emit(&report.to_string())?;
            }
            warn(&report);
            Ok(())
        }
    }
}

/// Streamed compressed outputs of models with at most this many parameters are loaded
/// back to time their layers.
const MEASURE_PARAMS_AT_MOST: usize = 100_000_000;

/// `compress` one tensor at a time: the output written as it goes into its temporary
/// file, renamed into place with the report once complete.
#[allow(clippy::too_many_arguments)]
fn compress_streaming(
    pipeline: &Pipeline,
    input: &Path,
    output: &Path,
    report: Option<&Path>,
    format: StreamFormat,
    quiet: bool,
    input_bytes: usize,
    measure: Option<usize>,
) -> Result<()> {
    let mut tmp = outputs::temporary_file(output)?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        progress(false, 0)
    };
    let result = {
        let mut w = std::io::BufWriter::with_capacity(8 << 20, tmp.as_file_mut());
        let result = pipeline.stream(input, &mut w, format, |done, total, name| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(name.to_string());
        });
        bar.finish_and_clear();
        let result = result?;
        w.into_inner()
            .map_err(|e| Error::Io {
                path: output.into(),
                source: e.into_error(),
            })?
            .sync_all()
            .map_err(|e| Error::Io {
                path: output.into(),
                source: e,
            })?;
        result
    };
    let mut result = result;
    result.original_bytes = input_bytes;
    // The file written holds the stored forms: time them from it when the model is
    // small enough to load whole (the file is ours: the bound is its decoded size).
    if let Some(batch) = measure
        && format == StreamFormat::Compressed
        && result.original_params <= MEASURE_PARAMS_AT_MOST
    {
        let bound = LoadOptions::BYTES_PER_ELEMENT * result.original_params
            + LoadOptions::MEMORY_SLACK
            + result.file_bytes;
        let compressed =
            Model::load_compressed_with(tmp.path(), &LoadOptions::new().with_max_memory(bound))?;
        result.measure(&compressed, batch)?;
    }
    let json = report.map(|_| result.to_json() + "\n");
    let mut files = vec![];
    if let (Some(path), Some(json)) = (report, &json) {
        files.push((path, json.as_bytes()));
    }
    outputs::write_all_with(vec![(tmp, output)], &files)?;
    if !quiet {
        emit(&format!("{result}wrote {}\n", output.display()))?;
    }
    warn(&result);
    Ok(())
}

/// `compress --shard-size`: a sharded safetensors checkpoint in the directory
/// `output`, streamed when the steps allow, else from the whole model.
#[allow(clippy::too_many_arguments)]
fn compress_sharded(
    pipeline: &Pipeline,
    input: &Path,
    output: &Path,
    report: Option<&Path>,
    max_shard_bytes: u64,
    quiet: bool,
    input_bytes: usize,
    measure: Option<usize>,
) -> Result<()> {
    let options = SaveOptions::default();
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        progress(false, 0)
    };
    let result = if pipeline.can_stream(input)? {
        pipeline.stream_sharded(
            input,
            output,
            options,
            max_shard_bytes,
            |done, total, name| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_message(name.to_string());
            },
        )
    } else {
        let mut model = Model::load(input)?;
        let mut result = pipeline.run(&mut model)?;
        if let Some(batch) = measure {
            result.measure(&model, batch)?;
        }
        let files = model.save_sharded(output, &options, max_shard_bytes)?;
        let mut bytes = 0;
        for f in &files {
            bytes += file_size(f)?;
        }
        result.describe_dense_file(&model, options.dtype, bytes)?;
        Ok(result)
    };
    bar.finish_and_clear();
    let mut result = result?;
    result.original_bytes = input_bytes;
    if let Some(path) = report {
        outputs::write_all(&[(path, (result.to_json() + "\n").as_bytes())])?;
    }
    if !quiet {
        emit(&format!("{result}wrote {}\n", output.display()))?;
    }
    warn(&result);
    Ok(())
}

/// A shard size: `2GB` (powers of 1000, as Hugging Face's `max_shard_size`), `2GiB`,
/// or a byte count as `--max-memory` takes it (`2G`: powers of 1024).
fn parse_shard_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let bad = || format!("`{t}` is not a size such as 2GB, 500MB or 2GiB");
    if let Some(binary) = t.strip_suffix("iB") {
        return parse_bytes(binary).map(|n| n as u64).map_err(|_| bad());
    }
    let decimal = [("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)];
    for (unit, scale) in decimal {
        if let Some(n) = t.strip_suffix(unit) {
            let n: f64 = n.trim().parse().map_err(|_| bad())?;
            return (n > 0.0 && n.is_finite())
                .then_some((n * scale) as u64)
                .ok_or_else(bad);
        }
    }
    parse_bytes(t).map(|n| n as u64).map_err(|_| bad())
}

/// A byte count such as `1048576`, `512K`, `64M` or `8G` (powers of 1024).
fn parse_bytes(text: &str) -> std::result::Result<usize, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 10),
        Some((i, 'm' | 'M')) => (&text[..i], 20),
        Some((i, 'g' | 'G')) => (&text[..i], 30),
        Some((i, 't' | 'T')) => (&text[..i], 40),
        _ => (text, 0),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1usize << shift))
        .ok_or_else(|| format!("`{text}` is not a byte count such as 512M or 8G"))
}

/// Whether `path` starts with the compressed format's magic (an error if it cannot be
/// opened).
fn is_compressed(path: &Path) -> Result<bool> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    let mut magic = [0u8; 8];
    Ok(std::io::Read::read_exact(&mut file, &mut magic).is_ok() && &magic == b"SLIMNNCM")
}

/// Whether `path` starts with GGUF's magic.
fn is_gguf(path: &Path) -> Result<bool> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    let mut magic = [0u8; 4];
    Ok(std::io::Read::read_exact(&mut file, &mut magic).is_ok() && &magic == b"GGUF")
}

/// A safetensors, GGUF or compressed model, told apart by their magic.
fn load(path: &Path, limits: &LoadOptions) -> Result<Model> {
    if is_compressed(path)? {
        Model::load_compressed_with(path, limits)
    } else if is_gguf(path)? {
        Model::load_gguf(path)
    } else {
        Model::load(path)
    }
}

fn progress(quiet: bool, steps: usize) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    bar
}

/// The size of the file at `path` on disk.
fn file_size(path: &Path) -> Result<usize> {
    let meta = std::fs::metadata(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    Ok(usize::try_from(meta.len()).unwrap_or(usize::MAX))
}

/// The size of a model input on disk: of all its shards for a sharded checkpoint.
fn input_size(path: &Path) -> Result<usize> {
    if is_compressed(path)? {
        return file_size(path);
    }
    let mut total = 0usize;
    for shard in slimnn::io::safetensors::checkpoint_files(path)? {
        total = total.saturating_add(file_size(&shard)?);
    }
    Ok(total)
}

fn inspect(model: &Model, selector: Option<&Selector>) -> Result<()> {
    let width = model
        .params()
        .iter()
        .map(|p| p.name().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:<9}  {:<5}  {:<18}  {:>11}  {:>8}  form",
        "name", "kind", "dtype", "shape", "elements", "sparsity"
    );
    let picked = |p: &&slimnn::Param| selector.is_none_or(|s| s.matches(p.name(), p.kind()));
    for p in model.params().iter().filter(picked) {
        let form = if let Some(f) = p.factorization() {
            format!("factorized, ranks {:?}", f.ranks())
        } else if let Some(q) = p.quantized() {
            format!("quantized, {}-bit codes", q.codes().bits())
        } else if p.mask().is_some() {
            "masked".to_string()
        } else {
            "dense".to_string()
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<9}  {:<5}  {:<18}  {:>11}  {:>7.2}%  {form}",
            p.name(),
            p.kind().to_string(),
            format!("{:?}", p.dtype()),
            format!("{:?}", p.shape()),
            p.numel(),
            100.0 * p.zeros() as f64 / p.numel().max(1) as f64,
        );
    }
    if selector.is_none() {
        for t in model.raw_tensors() {
            let _ = writeln!(
                out,
                "{:<width$}  {:<9}  {:<5}  {:<18}  {:>11}  {:>8}  kept as is",
                t.name,
                "raw",
                t.dtype,
                format!("{:?}", t.shape),
                t.shape.iter().product::<usize>(),
                "",
            );
        }
    }
    emit(&out)
}

/// Prints the report's warnings on standard error, one `warning: ...` line each.
fn warn(report: &Report) {
    for w in report.warnings() {
        eprintln!("warning: {w}");
    }
}

/// Writes `text` to standard output. A closed pipe (`slimnn report m.slim | head -3`)
/// is a quiet success, as for other command-line tools.
fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Io {
            path: "<standard output>".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Output files: checked before any work, written together at the end, and their
/// temporary files removed when a signal stops the run.
mod outputs {
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, MutexGuard};

    use slimnn::{Error, Result};

    /// The temporary files that exist right now, for the signal handler.
    static TEMPORARY: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    fn temporary() -> MutexGuard<'static, Vec<PathBuf>> {
        TEMPORARY.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// On SIGINT, SIGTERM or SIGHUP: removes the temporary files, then exits with
    /// status 130 (the shell's for an interrupted command).
    pub fn remove_temporary_files_on_signal() {
        // Without a handler the signal still ends the process; only cleanup is lost.
        let _ = ctrlc::set_handler(|| {
            for f in temporary().iter() {
                let _ = std::fs::remove_file(f);
            }
            std::process::exit(130);
        });
    }

    fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    fn parent(path: &Path) -> &Path {
        match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    }

    /// Where `path` points: its canonical form if it exists, else its canonical
    /// directory joined with its name (`None` if the directory does not exist).
    fn location(path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok().or_else(|| {
            Some(
                std::fs::canonicalize(parent(path))
                    .ok()?
                    .join(path.file_name()?),
            )
        })
    }

    /// Whether `a` and `b` are the same file: the same device and inode (hard links
    /// too) when both exist, else the same location.
    fn same_file(a: &Path, b: &Path) -> bool {
        #[cfg(unix)]
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            use std::os::unix::fs::MetadataExt;
            return (x.dev(), x.ino()) == (y.dev(), y.ino());
        }
        matches!((location(a), location(b)), (Some(x), Some(y)) if x == y)
    }

    /// Fails unless `dir` can become the output directory of a sharded checkpoint:
    /// absent or empty, in an existing directory, and not the input's.
    pub fn check_directory(input: &Path, dir: &Path) -> Result<()> {
        let refuse = |expected: &str| Error::InvalidParameter {
            name: "--output",
            value: dir.display().to_string(),
            expected: expected.into(),
        };
        if same_file(input, dir) {
            return Err(refuse("a directory other than the input"));
        }
        if dir.exists() {
            let empty = std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_none());
            if !empty {
                return Err(refuse(
                    "an absent or empty directory (with --shard-size, the shards' directory)",
                ));
            }
        } else if !parent(dir).is_dir() {
            return Err(refuse("a path in an existing directory"));
        }
        Ok(())
    }

    /// Fails unless every output can be written, is not the `input` and is not another
    /// output; `outputs` pairs each path with the flag that gave it.
    pub fn check(input: &Path, outputs: &[(&'static str, &Path)]) -> Result<()> {
        for (i, &(flag, out)) in outputs.iter().enumerate() {
            let refuse = |expected: String| Error::InvalidParameter {
                name: flag,
                value: out.display().to_string(),
                expected,
            };
            if same_file(input, out) {
                return Err(refuse(format!(
                    "a file other than the input {} (the input is never overwritten)",
                    input.display()
                )));
            }
            if let Some(&(other, _)) = outputs[..i].iter().find(|(_, o)| same_file(o, out)) {
                return Err(refuse(format!("a file other than that of {other}")));
            }
            if out.is_dir() {
                return Err(refuse("a file, not a directory".into()));
            }
            let dir = parent(out);
            if !dir.is_dir() {
                return Err(refuse(format!(
                    "a path in an existing directory ({} is none)",
                    dir.display()
                )));
            }
            // A file can be created beside it (the temporary file it is written to).
            tempfile::Builder::new()
                .prefix(".slimnn-")
                .tempfile_in(dir)
                .map_err(|e| io(dir, std::io::Error::from(e.kind())))?;
        }
        Ok(())
    }

    /// Writes every file into a temporary file beside it, then renames them all into
    /// place: if any write fails, none of the outputs is created.
    pub fn write_all(files: &[(&Path, &[u8])]) -> Result<()> {
        write_all_with(Vec::new(), files)
    }

    /// As [`write_all`], with outputs already written into their temporary files
    /// ([`temporary_file`]), renamed into place with the others.
    pub fn write_all_with(
        written: Vec<(tempfile::NamedTempFile, &Path)>,
        files: &[(&Path, &[u8])],
    ) -> Result<()> {
        let result = write_then_rename(written, files);
        temporary().clear();
        result
    }

    /// A new temporary file beside `path`, removed on a signal, to be renamed into
    /// place by [`write_all_with`].
    pub fn temporary_file(path: &Path) -> Result<tempfile::NamedTempFile> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(".slimnn-").suffix(".tmp");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o644));
        }
        // Created and registered under the lock, so that a signal never misses it.
        let mut registry = temporary();
        let tmp = builder.tempfile_in(parent(path)).map_err(|e| io(path, e))?;
        registry.push(tmp.path().to_path_buf());
        Ok(tmp)
    }

    fn write_then_rename<'a>(
        mut written: Vec<(tempfile::NamedTempFile, &'a Path)>,
        files: &[(&'a Path, &[u8])],
    ) -> Result<()> {
        for &(path, bytes) in files {
            let mut tmp = temporary_file(path)?;
            std::io::Write::write_all(&mut tmp, bytes)
                .and_then(|()| tmp.as_file().sync_all())
                .map_err(|e| io(tmp.path(), e))?;
            written.push((tmp, path));
        }
        // For the tests of interrupted runs: hold the temporary files for a while.
        if let Some(ms) = std::env::var("SLIMNN_TEST_HOLD_OUTPUTS_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            eprintln!("holding the temporary files");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        for (tmp, path) in written {
            tmp.persist(path).map_err(|e| io(path, e.error))?;
        }
        Ok(())
    }
}
