//! [`Report`]: what a pipeline gained and cost, per parameter and in total.

use std::fmt;

use crate::error::Result;
use crate::model::{DType, LayerKind, Model, Param};
use crate::nn::CompiledLinear;
use crate::quant::{Decoding, Levels};
use crate::store::{Positions, StoredBytes, encode_model};

/// One step of a pipeline run.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StepRecord {
    /// The step's description.
    pub description: String,
    /// Wall-clock time it took.
    pub seconds: f64,
}

/// Where a speed-up figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum SpeedupSource {
    /// Dense multiply-adds over effective ones (non-zeros, or the factorized layers'):
    /// what a kernel that skips zeros could reach, not a measurement. Measured times are
    /// beside it, per parameter, after [`Report::measure`].
    EstimatedFromFlops,
}

/// One parameter of a [`Report`].
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ParamReport {
    /// The parameter's name.
    pub name: String,
    /// Its kind, e.g. `"Linear"`.
    pub kind: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// How it is held and stored, e.g. `"16-entry codebook, 4-bit codes; CSR + Huffman"`.
    pub form: String,
    /// Elements.
    pub params: usize,
    /// Non-zero elements after compression.
    pub nonzeros: usize,
    /// Bytes before compression (elements × the original dtype's size; 0 for a
    /// parameter the pipeline added).
    pub original_bytes: usize,
    /// Bytes in the compressed file, by part.
    pub stored: StoredBytes,
    /// `‖W − Ŵ‖_F / ‖W‖_F` against the values before the pipeline (pruned weights of
    /// the original count as zero); 0 for a parameter the pipeline added (see
    /// [`Report::added`]). A BatchNorm fold changes values exactly: its layers' errors
    /// are of the values, not of the outputs.
    pub relative_error: f64,
    /// Multiply-adds per output position of the dense layer (0 for non-weights).
    pub dense_flops: usize,
    /// Multiply-adds per output position after compression: non-zeros, or the
    /// factorized layers'.
    pub effective_flops: usize,
    /// Bits of its Huffman-coded streams (codes, index gaps), tables excluded; 0 when
    /// nothing is Huffman-coded.
    pub huffman_bits: u64,
    /// The Shannon entropy of those streams' symbols, in bits: the bound a symbol-wise
    /// code approaches.
    pub entropy_bits: f64,
    /// Seconds of the dense product and of the compressed one, measured by
    /// [`Report::measure`] (at batch 1 and the batch asked for) where a kernel runs the
    /// stored form; empty when not measured.
    pub measured: Vec<Timing>,
}

/// A measured product: the dense layer's time and the compressed layer's, at one batch.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Timing {
    /// Rows of the activation batch.
    pub batch: usize,
    /// The kernel the stored form runs on ([`CompiledLinear::form`]), e.g. `"CSR"`.
    pub kernel: String,
    /// Median seconds of the dense f32 product.
    pub dense_seconds: f64,
    /// Median seconds of the compressed product.
    pub compressed_seconds: f64,
}

impl Timing {
    /// Dense over compressed seconds.
    pub fn speedup(&self) -> f64 {
        self.dense_seconds / self.compressed_seconds.max(f64::MIN_POSITIVE)
    }
}

impl ParamReport {
    /// Stored bits per element, everything needed to decode included.
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.stored.total() as f64 / self.params.max(1) as f64
    }

    /// Original bytes over stored bytes.
    pub fn compression_rate(&self) -> f64 {
        self.original_bytes as f64 / self.stored.total().max(1) as f64
    }
}

/// What a pipeline gained and cost: per parameter and in total, the survey's
/// compression rate and speed-up rate.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Report {
    /// The steps run, in order.
    pub steps: Vec<StepRecord>,
    /// Every parameter of the model.
    pub params: Vec<ParamReport>,
    /// Parameter elements before the pipeline (after it: [`Report::total_params`]).
    pub original_params: usize,
    /// Parameters of the original model the pipeline removed (e.g. folded BatchNorms),
    /// in the original's order.
    pub removed: Vec<String>,
    /// Parameters the pipeline added (e.g. the bias a BatchNorm fold gives a layer
    /// without one), in model order; their rows have no reference to compare with.
    pub added: Vec<String>,
    /// Bytes of the uncompressed parameters and kept raw tensors (the command line
    /// sets it to the input file's size on disk).
    pub original_bytes: usize,
    /// Bytes of the compressed model file, headers and checksums included.
    pub file_bytes: usize,
    /// Where [`Report::speedup_rate`] comes from.
    pub speedup_source: SpeedupSource,
}

impl Report {
    /// The report of `compressed` against `original`, parameter by parameter by name.
    /// A parameter only `original` holds is listed in [`Report::removed`] (its bytes
    /// count in [`Report::original_bytes`]), one only `compressed` holds in
    /// [`Report::added`].
    pub fn compare(original: &Model, compressed: &Model, steps: Vec<StepRecord>) -> Result<Report> {
        let (file, stored) = encode_model(compressed)?;
        let mut params = Vec::with_capacity(compressed.len());
        let mut added = Vec::new();
        for (p, s) in compressed.params().iter().zip(stored) {
            let before = if original.contains(p.name()) {
                Some(original.get(p.name())?)
            } else {
                added.push(p.name().to_string());
                None
            };
            params.push(param_row(p, before, &s)?.0);
        }
        let raw: usize = original.raw_tensors().iter().map(|t| t.bytes.len()).sum();
        let dense: usize = original
            .params()
            .iter()
            .map(|p| p.numel() * p.dtype().size())
            .sum();
        let removed = original
            .params()
            .iter()
            .filter(|p| !compressed.contains(p.name()))
            .map(|p| p.name().to_string())
            .collect();
        Ok(Report {
            steps,
            original_bytes: dense + raw,
            original_params: original.numel(),
            removed,
            added,
            params,
            file_bytes: file.len(),
            speedup_source: SpeedupSource::EstimatedFromFlops,
        })
    }

    /// Original bytes over the compressed file's bytes (the survey's compression rate).
    pub fn compression_rate(&self) -> f64 {
        self.original_bytes as f64 / self.file_bytes.max(1) as f64
    }

    /// Dense multiply-adds over effective ones, over all weights (the survey's
    /// speed-up rate; see [`Report::speedup_source`]).
    pub fn speedup_rate(&self) -> f64 {
        let dense: usize = self.params.iter().map(|p| p.dense_flops).sum();
        let effective: usize = self.params.iter().map(|p| p.effective_flops).sum();
        dense as f64 / effective.max(1) as f64
    }

    /// Times each Linear weight of `model` (the compressed model this report describes)
    /// in the form it is stored in, as [`CompiledLinear`] runs it (CSR, N:M, int8,
    /// codebook, integer groups, factor layers), against the dense product of the same
    /// weights ([`sparse_ops::dense_matmul`](crate::sparse_ops::dense_matmul)), at batch
    /// 1 and at `batch`, on seeded activations (median of 5 runs after a warm-up).
    /// Weights whose form runs dense are not timed.
    pub fn measure(&mut self, model: &Model, batch: usize) -> Result<()> {
        let mut batches = vec![1, batch.max(1)];
        batches.dedup();
        for row in &mut self.params {
            let p = model.get(&row.name)?;
            if p.kind() != LayerKind::Linear || p.shape().len() != 2 {
                continue;
            }
            let layer = CompiledLinear::new(p)?;
            if layer.form() == "dense" {
                continue;
            }
            let [out, inp] = layer.shape();
            let dense = p.effective();
            let dense = dense.as_slice().expect("a fresh array is contiguous");
            row.measured.clear();
            for &b in &batches {
                let x = ndarray::Array2::from_shape_fn((b, inp), |(i, j)| {
                    ((i * 7919 + j * 104_729) % 1000) as f32 / 500.0 - 1.0
                });
                let dense_seconds = median_seconds(|| {
                    crate::sparse_ops::dense_matmul([out, inp], dense, &x).map(|_| ())
                })?;
                let compressed_seconds = median_seconds(|| layer.forward(x.view()).map(|_| ()))?;
                row.measured.push(Timing {
                    batch: b,
                    kernel: layer.form().to_string(),
                    dense_seconds,
                    compressed_seconds,
                });
            }
        }
        Ok(())
    }

    /// Dense over compressed seconds at `batch`, summed over the layers measured there
    /// (`None` if [`Report::measure`] measured none).
    pub fn measured_speedup(&self, batch: usize) -> Option<f64> {
        let timed: Vec<&Timing> = self
            .params
            .iter()
            .flat_map(|p| &p.measured)
            .filter(|t| t.batch == batch)
            .collect();
        if timed.is_empty() {
            return None;
        }
        let dense: f64 = timed.iter().map(|t| t.dense_seconds).sum();
        let compressed: f64 = timed.iter().map(|t| t.compressed_seconds).sum();
        Some(dense / compressed.max(f64::MIN_POSITIVE))
    }

    /// The batches [`Report::measure`] timed, ascending.
    pub fn measured_batches(&self) -> Vec<usize> {
        let mut b: Vec<usize> = self
            .params
            .iter()
            .flat_map(|p| p.measured.iter().map(|t| t.batch))
            .collect();
        b.sort_unstable();
        b.dedup();
        b
    }

    /// Elements over all parameters.
    pub fn total_params(&self) -> usize {
        self.params.iter().map(|p| p.params).sum()
    }

    /// Non-zero elements over all parameters.
    pub fn total_nonzeros(&self) -> usize {
        self.params.iter().map(|p| p.nonzeros).sum()
    }

    /// The report as one JSON object, with [`Report::warnings`] as `"warnings"`.
    #[cfg(feature = "serde")]
    pub fn to_json(&self) -> String {
        /// The report's fields, in order, then its warnings.
        #[derive(serde::Serialize)]
        struct WithWarnings<'a> {
            #[serde(flatten)]
            report: &'a Report,
            warnings: Vec<String>,
        }
        serde_json::to_string(&WithWarnings {
            report: self,
            warnings: self.warnings(),
        })
        .expect("a report is plain data")
    }

    /// Where the request made things bigger: each parameter whose stored bytes
    /// (values, positions, scales and tables; its directory entry left out) exceed its
    /// dense bytes, saying why — sparse positions on a layer with few zeros (`csr` on
    /// a dense layer, or a pruning level whose positions cost more than its zeros
    /// save), or a bias or norm quantized with a scale per element. One line each, in
    /// model order; empty when nothing grew.
    ///
    /// ```
    /// use ndarray::{Array, IxDyn};
    /// use slimnn::pipeline::{Encode, Pipeline};
    /// use slimnn::store::{Encoding, Positions};
    /// use slimnn::{Model, Selector};
    ///
    /// let mut model = Model::new();
    /// // One zero in 512 weights.
    /// model.add("fc.weight", Array::from_shape_fn(IxDyn(&[16, 32]), |i| (i[0] * 32 + i[1]) as f32))?;
    /// let csr = Encoding { positions: Positions::Csr, huffman: false };
    /// let report = Pipeline::new().then(Encode::new(Selector::all(), csr)).run(&mut model)?;
    /// assert_eq!(report.warnings().len(), 1);
    /// assert!(report.warnings()[0].starts_with("`fc.weight`"));
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.params {
            let payload = p.stored.total() - p.stored.header;
            if payload <= p.original_bytes {
                continue;
            }
            let grew = format!(
                "`{}` is stored in {} bytes, more than its {} dense bytes",
                p.name,
                group(payload),
                group(p.original_bytes)
            );
            let one_d = p.shape.len() <= 1;
            let is_bias_or_norm =
                p.kind == LayerKind::Bias.to_string() || p.kind == LayerKind::Norm.to_string();
            out.push(
                if p.stored.indices > 0 && p.stored.decoding <= p.stored.indices {
                    format!(
                        "{grew}: its sparse positions ({} bytes) cost more than its {} zeros of \
                     {} save; store it dense (leave it out of --encode, or use `auto`)",
                        group(p.stored.indices),
                        group(p.params - p.nonzeros),
                        group(p.params)
                    )
                } else if p.stored.decoding > 0 && (is_bias_or_norm || one_d) {
                    format!(
                        "{grew}: a {} quantized with a scale per element ({} bytes of scales); \
                     leave biases and norms out (e.g. `kind=linear` or `!*.bias`)",
                        if is_bias_or_norm {
                            p.kind.to_lowercase()
                        } else {
                            "1-D parameter".into()
                        },
                        group(p.stored.decoding)
                    )
                } else {
                    format!("{grew} ({})", p.form)
                },
            );
        }
        out
    }
}

impl Report {
    /// Makes the report describe a dense safetensors file of `model` (the compressed
    /// model it reports on) instead of the compressed format: every parameter stored as
    /// its dense values (elements × its dtype's size, or `dtype`'s when the file was
    /// written in one dtype), no Huffman streams, and [`Report::file_bytes`] the size
    /// of the file written. Errors and FLOPs are unchanged: they are of the values.
    ///
    /// ```
    /// use ndarray::{Array, IxDyn};
    /// use slimnn::io::safetensors::SaveOptions;
    /// use slimnn::pipeline::{Pipeline, Prune};
    /// use slimnn::prune::MagnitudePruner;
    /// use slimnn::{Model, Selector};
    ///
    /// let mut model = Model::new();
    /// model.add("fc.weight", Array::from_shape_fn(IxDyn(&[16, 32]), |i| (i[0] * 32 + i[1]) as f32))?;
    /// let mut report = Pipeline::new()
    ///     .then(Prune::new(Selector::prunable(), MagnitudePruner::magnitude(0.9)?))
    ///     .run(&mut model)?;
    /// let bytes = model.to_safetensors(&SaveOptions::default())?;
    /// report.describe_dense_file(&model, None, bytes.len())?;
    /// assert_eq!(report.file_bytes, bytes.len());
    /// assert_eq!(report.params[0].stored.total(), 16 * 32 * 4);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn describe_dense_file(
        &mut self,
        model: &Model,
        dtype: Option<crate::model::DType>,
        file_bytes: usize,
    ) -> Result<()> {
        for row in &mut self.params {
            let p = model.get(&row.name)?;
            let dtype = dtype.unwrap_or(p.dtype());
            row.stored = StoredBytes {
                values: p.numel() * dtype.size(),
                ..StoredBytes::default()
            };
            let held = format!("{dtype:?}");
            if row.form != held {
                row.form = format!("{held}, decoded from {}", row.form);
            }
            row.huffman_bits = 0;
            row.entropy_bits = 0.0;
        }
        self.file_bytes = file_bytes;
        Ok(())
    }
}

/// The report row of `p` (stored as `s`) against `before`, its values before
/// compression (`None`: added by the pipeline), with the squared norms of the error
/// and of the reference, for summing over row chunks.
pub(crate) fn param_row(
    p: &Param,
    before: Option<&Param>,
    s: &crate::store::Stored,
) -> Result<(ParamReport, f64, f64)> {
    use rayon::prelude::*;
    let after = p.effective();
    let (reference, original_bytes) = match before {
        Some(before) => (before.effective(), before.numel() * before.dtype().size()),
        None => (after.clone(), 0),
    };
    crate::tensor::check_same_shape(reference.shape(), after.shape(), || {
        format!("`{}` before and after compression", p.name())
    })?;
    let (reference, after) = (reference.as_standard_layout(), after.as_standard_layout());
    let (reference, after) = (
        reference.as_slice().expect("standard layout"),
        after.as_slice().expect("standard layout"),
    );
    let (diff, norm, nonzeros) = reference
        .par_chunks(1 << 16)
        .zip(after.par_chunks(1 << 16))
        .map(|(r, a)| {
            r.iter()
                .zip(a)
                .fold((0f64, 0f64, 0usize), |(d, n, z), (&a, &b)| {
                    (
                        d + (a as f64 - b as f64).powi(2),
                        n + (a as f64).powi(2),
                        z + (b != 0.0) as usize,
                    )
                })
        })
        // Summed in chunk order, so the result does not depend on the threads.
        .collect::<Vec<_>>()
        .into_iter()
        .fold((0.0, 0.0, 0), |x, y| (x.0 + y.0, x.1 + y.1, x.2 + y.2));
    Ok((
        row(p, s, original_bytes, nonzeros, relative_error(diff, norm)),
        diff,
        norm,
    ))
}

/// The report row of `p` (stored as `s`) that no step changed: no error, its own
/// bytes as the original's.
pub(crate) fn unchanged_row(p: &Param, s: &crate::store::Stored) -> ParamReport {
    use rayon::prelude::*;
    let values = p.effective();
    let values = values.as_standard_layout();
    let nonzeros = values
        .as_slice()
        .expect("standard layout")
        .par_chunks(1 << 16)
        .map(|c| c.iter().filter(|&&v| v != 0.0).count())
        .sum();
    row(p, s, p.numel() * p.dtype().size(), nonzeros, 0.0)
}

fn row(
    p: &Param,
    s: &crate::store::Stored,
    original_bytes: usize,
    nonzeros: usize,
    relative_error: f64,
) -> ParamReport {
    let (dense_flops, effective_flops) = flops(
        p.kind(),
        p.numel(),
        p.factorization().map_or(nonzeros, |f| f.flops()),
    );
    ParamReport {
        name: p.name().to_string(),
        kind: p.kind().to_string(),
        shape: p.shape().to_vec(),
        form: form(p, s.positions),
        params: p.numel(),
        nonzeros,
        original_bytes,
        stored: s.bytes,
        relative_error,
        dense_flops,
        effective_flops,
        huffman_bits: s.coded.stream_bits,
        entropy_bits: s.coded.entropy_bits,
        measured: Vec::new(),
    }
}

/// Dense and effective multiply-adds of a parameter of `kind` with `numel` elements and
/// `effective` multiply-adds once compressed (both 0 but for weights).
fn flops(kind: LayerKind, numel: usize, effective: usize) -> (usize, usize) {
    match kind {
        LayerKind::Linear | LayerKind::Conv2d => (numel, effective),
        _ => (0, 0),
    }
}

/// The row [`param_row`] gives (row chunk `shape` of) a parameter of `kind` read as
/// `dtype`, quantized by a step to codes of `code_bits` (or [`unchanged_row`]: `None`),
/// when it is written as `bytes` of ggml blocks or 16-bit values; `nonzeros` of the
/// decoded values or of the values read.
pub(crate) fn written_row(
    (name, kind, dtype): (&str, LayerKind, DType),
    shape: &[usize],
    code_bits: Option<u8>,
    bytes: usize,
    nonzeros: usize,
) -> ParamReport {
    let numel = shape.iter().product();
    let (dense_flops, effective_flops) = flops(kind, numel, nonzeros);
    ParamReport {
        name: name.to_string(),
        kind: kind.to_string(),
        shape: shape.to_vec(),
        form: code_bits.map_or_else(|| format!("{dtype:?}"), integers),
        params: numel,
        nonzeros,
        original_bytes: numel * dtype.size(),
        stored: StoredBytes {
            values: bytes,
            ..StoredBytes::default()
        },
        relative_error: 0.0,
        dense_flops,
        effective_flops,
        huffman_bits: 0,
        entropy_bits: 0.0,
        measured: Vec::new(),
    }
}

/// How [`ParamReport::form`] names codes that are integers of `bits`.
fn integers(bits: u8) -> String {
    format!("{bits}-bit integers")
}

/// `sqrt(diff / norm)`, 0 when nothing changed.
pub(crate) fn relative_error(diff: f64, norm: f64) -> f64 {
    if diff == 0.0 {
        0.0
    } else {
        (diff / norm).sqrt()
    }
}

/// The median seconds of 5 runs of `run`, after one untimed warm-up.
fn median_seconds(run: impl Fn() -> Result<()>) -> Result<f64> {
    run()?;
    let mut times = Vec::with_capacity(5);
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        run()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[2])
}

/// How a parameter is held and stored, in a few words.
fn form(p: &Param, positions: Option<Positions>) -> String {
    let held = if let Some(f) = p.factorization() {
        match f.quantized_factors().and_then(|q| q.first()) {
            Some(q) => format!(
                "factorized, ranks {:?}, quantized factors ({}-bit codes)",
                f.ranks(),
                q.codes().bits()
            ),
            None => format!("factorized, ranks {:?}", f.ranks()),
        }
    } else if let Some(q) = p.quantized() {
        let bits = q.codes().bits();
        match q.decoding() {
            Decoding::Scalar {
                levels: Levels::Table(t),
                ..
            } => format!("{}-entry codebook, {bits}-bit codes", t.len()),
            Decoding::Scalar { .. } => integers(bits),
            Decoding::Product { codewords, .. } => {
                format!("product quantized, {codewords} codewords")
            }
        }
    } else {
        format!("{:?}", p.dtype())
    };
    let index = match positions {
        None => String::new(),
        Some(Positions::Bitmask) | Some(Positions::Dense) | Some(Positions::Auto) => {
            "; bitmask".into()
        }
        Some(Positions::Csr) => "; CSR".into(),
        Some(Positions::RelativeIndex { bits }) => format!("; {bits}-bit relative index"),
    };
    let huffman = if p.encoding().huffman && (p.quantized().is_some() || positions.is_some()) {
        " + Huffman"
    } else {
        ""
    };
    format!("{held}{index}{huffman}")
}

/// `n (a, b, c, …)`: a count and the first few names.
fn names(list: &[String]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    let shown: Vec<&str> = list.iter().take(4).map(String::as_str).collect();
    let more = if list.len() > 4 { ", …" } else { "" };
    format!("{} ({}{more})", list.len(), shown.join(", "))
}

fn group(n: usize) -> String {
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

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "step {}: {} ({:.2} s)", i + 1, s.description, s.seconds)?;
        }
        if !self.steps.is_empty() {
            writeln!(f)?;
        }
        let name_w = self
            .params
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(4)
            .max(9);
        let form_w = self
            .params
            .iter()
            .map(|p| p.form.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "{:<name_w$}  {:<form_w$}  {:>11}  {:>11}  {:>7}  {:>11}  {:>7}  {:>10}",
            "parameter", "form", "elements", "non-zeros", "bits/w", "bytes", "ratio", "rel. error"
        )?;
        for p in &self.params {
            writeln!(
                f,
                "{:<name_w$}  {:<form_w$}  {:>11}  {:>11}  {:>7.3}  {:>11}  {:>6.1}x  {:>10.4}",
                p.name,
                p.form,
                group(p.params),
                group(p.nonzeros),
                p.bits_per_weight(),
                group(p.stored.total()),
                p.compression_rate(),
                p.relative_error
            )?;
        }
        writeln!(
            f,
            "{:<name_w$}  {:<form_w$}  {:>11}  {:>11}  {:>7.3}  {:>11}  {:>6.1}x",
            "total (file)",
            "",
            group(self.total_params()),
            group(self.total_nonzeros()),
            8.0 * self.file_bytes as f64 / self.total_params().max(1) as f64,
            group(self.file_bytes),
            self.compression_rate()
        )?;
        if !self.removed.is_empty() || !self.added.is_empty() {
            writeln!(
                f,
                "\nparameters: {} → {} elements; removed {}; added {}",
                group(self.original_params),
                group(self.total_params()),
                names(&self.removed),
                names(&self.added)
            )?;
        }
        let coded: u64 = self.params.iter().map(|p| p.huffman_bits).sum();
        if coded > 0 {
            let entropy: f64 = self.params.iter().map(|p| p.entropy_bits).sum();
            writeln!(
                f,
                "\nHuffman-coded streams: {} bits, their entropy {} bits (+{:.2}%)",
                group(coded as usize),
                group(entropy.round() as usize),
                100.0 * (coded as f64 / entropy.max(1.0) - 1.0)
            )?;
        }
        for p in &self.params {
            for t in &p.measured {
                writeln!(
                    f,
                    "measured {} ({}): dense {:.3} ms, compressed {:.3} ms at batch {} ({:.2}x)",
                    p.name,
                    t.kernel,
                    1e3 * t.dense_seconds,
                    1e3 * t.compressed_seconds,
                    t.batch,
                    t.speedup()
                )?;
            }
        }
        writeln!(
            f,
            "\ncompression rate {:.1}x ({} → {} bytes)",
            self.compression_rate(),
            group(self.original_bytes),
            group(self.file_bytes),
        )?;
        let batches = self.measured_batches();
        if batches.is_empty() {
            writeln!(f, "speed: not measured")?;
        }
        for b in batches {
            let s = self.measured_speedup(b).expect("a measured batch");
            writeln!(
                f,
                "measured speed-up of the timed Linear layers at batch {b}: {s:.2}x"
            )?;
        }
        // A FLOP count is an estimate of what a kernel that skips zeros could reach,
        // never printed as a speed-up.
        writeln!(
            f,
            "dense / effective multiply-adds {:.1}x (a FLOP count, not a measured speed)",
            self.speedup_rate()
        )?;
        Ok(())
    }
}
