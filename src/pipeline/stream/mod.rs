//! Streamed compression ([`Pipeline::stream`]): a safetensors checkpoint on disk (one
//! file or Hugging Face shards) compressed one tensor at a time, the output written as
//! it goes, so that memory is bounded by the largest tensor, not by the model.
//!
//! Each tensor is read from its file, becomes a one-parameter [`Model`], goes through
//! the steps that select it and is appended to the output. Steps that change each row on
//! its own ([`Streaming::PerRows`], e.g. the ggml block formats) let a large tensor go
//! in row chunks, so not even one whole tensor is held in `f32`. The header of every
//! output format is reserved first (its size depends on names and shapes only) and
//! filled in at the end. The report is built from the bytes written.

mod sink;
mod straight;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::path::Path;
use std::time::Instant;

use ndarray::{ArrayD, IxDyn};

use super::report::{ParamReport, param_row, relative_error, unchanged_row};
use super::{Compressor, Pipeline, Report, SpeedupSource, StepRecord, Streaming};
use crate::error::{Error, Result};
use crate::io::GgufOptions;
use crate::io::safetensors::{Checkpoint, Entry, Reader, SaveOptions};
use crate::model::{DType, LayerKind, Model, Selector};
use crate::store::{Stored, StoredBytes};

use sink::Sink;

/// The output of a streamed compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// slimnn's compressed model file (each parameter is held whole while it is
    /// encoded).
    Compressed,
    /// A dense safetensors file, masks applied (the options' `masks` must be
    /// [`MaskExport::Apply`](crate::io::safetensors::MaskExport::Apply)).
    Safetensors(SaveOptions),
    /// A GGUF v3 file.
    Gguf(GgufOptions),
}

/// Bytes of `f32` values a row chunk of a large tensor holds at most.
const CHUNK_BYTES: usize = 16 << 20;

/// A step, the parameters it selects, and whether it works row by row.
struct Step<'a> {
    step: &'a dyn Compressor,
    selector: &'a Selector,
    rows: bool,
    seconds: f64,
}

/// What a streamed run has reported so far for one tensor, over its row chunks.
struct Row {
    report: ParamReport,
    diff: f64,
    norm: f64,
}

impl Row {
    fn add(&mut self, chunk: ParamReport, diff: f64, norm: f64) {
        let r = &mut self.report;
        r.shape[0] += chunk.shape[0];
        r.params += chunk.params;
        r.nonzeros += chunk.nonzeros;
        r.original_bytes += chunk.original_bytes;
        let (s, c) = (&mut r.stored, chunk.stored);
        s.header += c.header;
        s.values += c.values;
        s.indices += c.indices;
        s.decoding += c.decoding;
        s.tables += c.tables;
        r.dense_flops += chunk.dense_flops;
        r.effective_flops += chunk.effective_flops;
        r.huffman_bits += chunk.huffman_bits;
        r.entropy_bits += chunk.entropy_bits;
        self.diff += diff;
        self.norm += norm;
    }
}

impl Pipeline {
    /// Whether [`Pipeline::stream`] can compress `input`: every step works tensor by
    /// tensor (no global pruning threshold, rank budget or BatchNorm fold), and `input`
    /// is a safetensors checkpoint (a file, a directory of shards or an index) without
    /// PyTorch's `x_orig` / `x_mask` pairs.
    pub fn can_stream(&self, input: &Path) -> Result<bool> {
        if self
            .steps
            .iter()
            .any(|s| matches!(s.streaming(), Streaming::WholeModel))
        {
            return Ok(false);
        }
        let is_safetensors = |path: &Path| -> Result<bool> {
            let mut magic = [0u8; 8];
            let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let ok = std::io::Read::read_exact(&mut file, &mut magic).is_ok();
            Ok(!(ok && (&magic == b"SLIMNNCM" || &magic[..4] == b"GGUF")))
        };
        if !input.is_dir() && !is_safetensors(input)? {
            return Ok(false);
        }
        Ok(!Checkpoint::open(input)?.has_mask_pairs())
    }

    /// Compresses the safetensors checkpoint at `input` (a file, a directory holding
    /// `model.safetensors.index.json`, or an index) one tensor at a time into `output`
    /// in `format`, writing as it goes; `progress(done, total, name)` is called before
    /// each tensor. The report describes the bytes written.
    ///
    /// The steps run on each parameter they select, in order; a large parameter goes in
    /// row chunks when every step that selects it works row by row
    /// ([`Streaming::PerRows`]) and the output is safetensors or GGUF. A step that needs
    /// the whole model is an error (see [`Pipeline::can_stream`]; run such pipelines
    /// with [`Pipeline::run`]). The output is written from its current position; on
    /// error it holds a partial file, which the caller discards ([`Pipeline::stream_to_file`]
    /// does).
    pub fn stream<W: Write + Seek>(
        &self,
        input: &Path,
        output: &mut W,
        format: StreamFormat,
        progress: impl FnMut(usize, usize, &str),
    ) -> Result<Report> {
        self.stream_in_chunks(input, output, format, progress, CHUNK_BYTES, true)
    }

    /// [`Pipeline::stream`] with row chunks of at most `chunk_bytes` of `f32` values;
    /// `straight`: whether tensors may take the straight path (the tests compare it with
    /// the general one).
    pub(crate) fn stream_in_chunks<W: Write + Seek>(
        &self,
        input: &Path,
        output: &mut W,
        format: StreamFormat,
        mut progress: impl FnMut(usize, usize, &str),
        chunk_bytes: usize,
        straight: bool,
    ) -> Result<Report> {
        let (mut steps, checkpoint) = self.prepare(input)?;
        let order = sink::order(&checkpoint, format)?;
        let mut run = Run::new(&checkpoint, chunk_bytes, straight)?;
        let total = order.len();
        let file_bytes = run.write(&order, output, format, &mut steps, &mut |done, name| {
            progress(done, total, name)
        })?;
        let rows = run.rows;
        Ok(report(&checkpoint, &steps, rows, file_bytes))
    }

    /// The steps, checked to stream, and the checkpoint, its selections checked.
    fn prepare(&self, input: &Path) -> Result<(Vec<Step<'_>>, Checkpoint)> {
        let mut steps = Vec::with_capacity(self.steps.len());
        for s in &self.steps {
            let (selector, rows) = match s.streaming() {
                Streaming::WholeModel => {
                    return Err(Error::invalid(
                        "streamed compression",
                        s.describe(),
                        "steps that work tensor by tensor (a global threshold, a budget or \
                         a BatchNorm fold needs the whole model: use Pipeline::run)",
                    ));
                }
                Streaming::PerTensor(selector) => (selector, false),
                Streaming::PerRows(selector) => (selector, true),
            };
            steps.push(Step {
                step: s.as_ref(),
                selector,
                rows,
                seconds: 0.0,
            });
        }
        let checkpoint = Checkpoint::open(input)?;
        if checkpoint.has_mask_pairs() {
            return Err(Error::invalid(
                "streamed compression",
                input.display().to_string(),
                "a checkpoint without PyTorch `x_orig` / `x_mask` pairs (load it with \
                 Model::load and use Pipeline::run)",
            ));
        }
        // Every selection picks something, as `Model::select` requires, and every step
        // can take what it picks: checked before anything is written.
        for s in &steps {
            let mut picked = false;
            for e in &checkpoint.entries {
                let kind = LayerKind::infer(&e.name, &e.shape);
                if e.float_dtype().is_some() && s.selector.matches(&e.name, kind) {
                    s.step.check_selected(&e.name, kind, &e.shape)?;
                    picked = true;
                }
            }
            if !picked {
                return Err(Error::Empty {
                    what: format!("the parameter selection `{}`", s.selector),
                });
            }
        }
        Ok((steps, checkpoint))
    }

    /// Compresses the checkpoint at `input` as [`Pipeline::stream`] does into a Hugging
    /// Face sharded safetensors checkpoint in the directory `dir`, laid out as
    /// [`Model::save_sharded`] lays it out (shards of at most `max_shard_bytes` of
    /// data, tensors in natural name order, and `model.safetensors.index.json`), each
    /// shard written as it goes. Atomic for the whole set: staged in a temporary
    /// directory beside `dir`, renamed to `dir` when complete; `dir` must be absent or
    /// empty. The report's file bytes are those of all shards.
    pub fn stream_sharded(
        &self,
        input: &Path,
        dir: &Path,
        options: SaveOptions,
        max_shard_bytes: u64,
        mut progress: impl FnMut(usize, usize, &str),
    ) -> Result<Report> {
        if max_shard_bytes == 0 {
            return Err(Error::invalid("max_shard_bytes", 0, "at least 1"));
        }
        let (mut steps, checkpoint) = self.prepare(input)?;
        let format = StreamFormat::Safetensors(options);
        // The order and sizes the whole model would have: natural name order, shards
        // filled up to the limit.
        sink::order(&checkpoint, format)?;
        let mut shards: Vec<Vec<usize>> = vec![];
        let mut size = 0u64;
        for (i, e) in checkpoint.entries.iter().enumerate() {
            let bytes = sink::planned(e, options).1 as u64;
            match shards.last_mut() {
                Some(last) if size + bytes <= max_shard_bytes => last.push(i),
                _ => {
                    shards.push(vec![i]);
                    size = 0;
                }
            }
            size += bytes;
        }
        if shards.is_empty() {
            shards.push(vec![]);
        }
        let mut run = Run::new(&checkpoint, CHUNK_BYTES, true)?;
        let total = checkpoint.entries.len();
        let mut done = 0;
        let mut file_bytes = 0;
        let n = shards.len();
        crate::io::safetensors::write_sharded(dir, n, |k, file| {
            let mut shard = shards[k].clone();
            sink::sort_for_safetensors(&checkpoint, &mut shard, options);
            let mut w = std::io::BufWriter::with_capacity(8 << 20, file);
            let bytes = run.write(&shard, &mut w, format, &mut steps, &mut |_, name| {
                progress(done, total, name);
                done += 1;
            })?;
            file_bytes += bytes;
            let file = w.into_inner().map_err(|e| Error::io(dir, e.into_error()))?;
            file.sync_all().map_err(|e| Error::io(dir, e))?;
            Ok(shard
                .iter()
                .map(|&i| {
                    let e = &checkpoint.entries[i];
                    (e.name.clone(), sink::planned(e, options).1 as u64)
                })
                .collect())
        })?;
        let rows = run.rows;
        Ok(report(&checkpoint, &steps, rows, file_bytes))
    }

    /// [`Pipeline::stream`] into the file `output`, atomically: written to a temporary
    /// file beside it and renamed over it only when complete, never a half-written
    /// output. `output` must not be (one of) the input's files.
    pub fn stream_to_file(
        &self,
        input: &Path,
        output: &Path,
        format: StreamFormat,
    ) -> Result<Report> {
        let mut report = None;
        crate::io::write_atomically(output, |tmp| {
            let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
            let mut w = std::io::BufWriter::with_capacity(8 << 20, file);
            report = Some(self.stream(input, &mut w, format, |_, _, _| {})?);
            w.into_inner()
                .map_err(|e| Error::io(tmp, e.into_error()))?
                .sync_all()
                .map_err(|e| Error::io(tmp, e))
        })?;
        Ok(report.expect("set when the write succeeded"))
    }
}

/// A streamed run over one checkpoint: the reader, its buffers (reused from chunk to
/// chunk and tensor to tensor) and the report rows so far.
struct Run<'c> {
    checkpoint: &'c Checkpoint,
    reader: Reader,
    /// The bytes read.
    buffer: Vec<u8>,
    /// The bytes the straight path writes.
    out: Vec<u8>,
    rows: Vec<ParamReport>,
    chunk_bytes: usize,
    /// Whether tensors may take the straight path ([`straight`]).
    straight: bool,
}

impl<'c> Run<'c> {
    fn new(checkpoint: &'c Checkpoint, chunk_bytes: usize, straight: bool) -> Result<Self> {
        Ok(Run {
            checkpoint,
            reader: Reader::new(checkpoint)?,
            buffer: Vec::new(),
            out: Vec::new(),
            rows: Vec::new(),
            chunk_bytes,
            straight,
        })
    }
}

impl Run<'_> {
    /// Writes the tensors `order` picks into `output` in `format`: the file's bytes.
    fn write<W: Write + Seek>(
        &mut self,
        order: &[usize],
        output: &mut W,
        format: StreamFormat,
        steps: &mut [Step<'_>],
        progress: &mut dyn FnMut(usize, &str),
    ) -> Result<usize> {
        let mut sink = Sink::begin(output, self.checkpoint, order, format)?;
        for (done, &i) in order.iter().enumerate() {
            let entry = &self.checkpoint.entries[i];
            progress(done, &entry.name);
            match entry.float_dtype() {
                Some(_) => {
                    let row = self.compress_tensor(entry, steps, format, &mut sink)?;
                    self.rows.push(row);
                }
                None => {
                    self.reader.read(entry, 0..entry.len, &mut self.buffer)?;
                    sink.raw(entry, &self.buffer)?;
                }
            }
        }
        sink.finish()
    }
}

/// The report of a streamed run: `rows` in model order.
fn report(
    checkpoint: &Checkpoint,
    steps: &[Step<'_>],
    mut rows: Vec<ParamReport>,
    file_bytes: usize,
) -> Report {
    let position: BTreeMap<&str, usize> = checkpoint
        .entries
        .iter()
        .enumerate()
        .map(|(k, e)| (e.name.as_str(), k))
        .collect();
    rows.sort_by_key(|r: &ParamReport| position.get(r.name.as_str()).copied());
    Report {
        steps: steps
            .iter()
            .map(|s| StepRecord {
                description: s.step.describe(),
                seconds: s.seconds,
            })
            .collect(),
        original_params: rows.iter().map(|r| r.params).sum(),
        original_bytes: checkpoint.entries.iter().map(|e| e.len).sum(),
        params: rows,
        removed: Vec::new(),
        added: Vec::new(),
        file_bytes,
        speedup_source: SpeedupSource::EstimatedFromFlops,
    }
}

/// Rows of `entry` per chunk: all of them unless it is large, every step that selects
/// it works row by row and the output is written densely or in blocks.
fn chunk_rows(
    entry: &Entry,
    steps: &[Step<'_>],
    kind: LayerKind,
    format: StreamFormat,
    chunk_bytes: usize,
) -> usize {
    let rows = entry.shape.first().copied().unwrap_or(1).max(1);
    let numel: usize = entry.shape.iter().product();
    let row_bytes = 4 * numel / rows;
    let rowwise = steps
        .iter()
        .all(|s| s.rows || !s.selector.matches(&entry.name, kind));
    if entry.shape.len() < 2 || numel * 4 <= chunk_bytes || !rowwise {
        return rows;
    }
    match format {
        StreamFormat::Compressed => rows,
        StreamFormat::Safetensors(_) | StreamFormat::Gguf(_) => {
            (chunk_bytes / row_bytes.max(1)).max(1)
        }
    }
}

/// A float tensor of the checkpoint being compressed, and the steps that select it.
struct Tensor<'e> {
    entry: &'e Entry,
    kind: LayerKind,
    dtype: DType,
    picked: Vec<bool>,
}

impl Run<'_> {
    /// Reads, compresses and writes one float tensor, chunk by chunk; its report row.
    fn compress_tensor<W: Write + Seek>(
        &mut self,
        entry: &Entry,
        steps: &mut [Step<'_>],
        format: StreamFormat,
        sink: &mut Sink<'_, W>,
    ) -> Result<ParamReport> {
        let kind = LayerKind::infer(&entry.name, &entry.shape);
        let t = Tensor {
            entry,
            kind,
            dtype: entry.float_dtype().expect("a float tensor"),
            picked: steps
                .iter()
                .map(|s| s.selector.matches(&entry.name, kind))
                .collect(),
        };
        let straight = self
            .straight
            .then(|| straight::plan(&t, steps, format))
            .flatten();
        let rows = entry.shape.first().copied().unwrap_or(1);
        let per_chunk = chunk_rows(entry, steps, kind, format, self.chunk_bytes);
        let row_bytes = entry.len.checked_div(rows).unwrap_or(0);
        let mut row: Option<Row> = None;
        let mut start = 0;
        loop {
            let end = (start + per_chunk).min(rows);
            let mut shape = entry.shape.clone();
            if !shape.is_empty() {
                shape[0] = end - start;
            }
            self.reader
                .read(entry, start * row_bytes..end * row_bytes, &mut self.buffer)?;
            let t0 = Instant::now();
            let written = match straight {
                Some(plan) => straight::chunk(plan, &t, &shape, &self.buffer, &mut self.out, sink)?,
                None => None,
            };
            let (chunk, diff, norm) = match written {
                Some(written) => {
                    // The quantizing step's time.
                    if let Some(s) = steps.iter_mut().zip(&t.picked).find(|(_, p)| **p) {
                        s.0.seconds += t0.elapsed().as_secs_f64();
                    }
                    written
                }
                None => compress_chunk(&t, shape, &self.buffer, steps, sink)?,
            };
            match &mut row {
                None => {
                    row = Some(Row {
                        report: chunk,
                        diff,
                        norm,
                    })
                }
                Some(r) => r.add(chunk, diff, norm),
            }
            start = end;
            if start >= rows {
                break;
            }
        }
        sink.end_param(entry)?;
        let mut row = row.expect("one chunk at least");
        row.report.relative_error = relative_error(row.diff, row.norm);
        Ok(row.report)
    }
}

/// Compresses a row chunk of `shape` of `t` (its bytes read in `bytes`) through the
/// steps that select it as a one-parameter model and writes it: its report row, with
/// its squared error and norm.
fn compress_chunk<W: Write + Seek>(
    t: &Tensor<'_>,
    shape: Vec<usize>,
    bytes: &[u8],
    steps: &mut [Step<'_>],
    sink: &mut Sink<'_, W>,
) -> Result<(ParamReport, f64, f64)> {
    let entry = t.entry;
    let values = ArrayD::from_shape_vec(IxDyn(&shape), decode(t.dtype, bytes))?;
    let mut one = Model::new();
    one.add_param(entry.name.clone(), t.kind, t.dtype, values)?;
    let original = t.picked.iter().any(|&p| p).then(|| one.clone());
    for (s, _) in steps.iter_mut().zip(&t.picked).filter(|(_, p)| **p) {
        let t0 = Instant::now();
        s.step.compress(&mut one)?;
        s.seconds += t0.elapsed().as_secs_f64();
    }
    if one.len() != 1 || one.params()[0].name() != entry.name || one.params()[0].shape() != shape {
        return Err(Error::invalid(
            "streamed compression",
            &entry.name,
            "steps that keep each parameter, its name and its shape",
        ));
    }
    let p = &one.params()[0];
    let (stored, held) = sink.param(entry, p, &one)?;
    let (mut chunk, diff, norm) = match &original {
        Some(o) => param_row(p, Some(&o.params()[0]), &stored)?,
        None => (unchanged_row(p, &stored), 0.0, 0.0),
    };
    // As `Report::describe_dense_file` says it for a file holding values decoded.
    if let Some(held) = held
        && chunk.form != held
    {
        chunk.form = format!("{held}, decoded from {}", chunk.form);
    }
    Ok((chunk, diff, norm))
}

/// Little-endian values of `dtype` as `f32`, on every core.
fn decode(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    use rayon::prelude::*;
    const BLOCK: usize = 1 << 16;
    let mut out = vec![0f32; bytes.len() / dtype.size()];
    out.par_chunks_mut(BLOCK)
        .zip(bytes.par_chunks(BLOCK * dtype.size()))
        .for_each(|(o, b)| o.copy_from_slice(&dtype.read_le(b)));
    out
}

/// How a parameter written densely (or as ggml blocks) is stored: `bytes` of values.
fn dense_stored(bytes: usize) -> Stored {
    Stored {
        bytes: StoredBytes {
            values: bytes,
            ..StoredBytes::default()
        },
        positions: None,
        coded: Default::default(),
    }
}
