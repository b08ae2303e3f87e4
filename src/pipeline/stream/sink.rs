//! The output of a streamed compression: its header reserved first, tensors appended,
//! the header filled in at the end.

use std::io::{Seek, SeekFrom, Write};

use super::{StreamFormat, dense_stored};
use crate::error::{Error, Result};
use crate::io::gguf::{self, Gguf, GgufType, GgufValue, TensorInfo};
use crate::io::safetensors::{
    Checkpoint, Entry, HeaderEntry, MaskExport, SaveOptions, file_dtype, header_bytes, param_bytes,
};
use crate::model::{Model, Param, RawTensor};
use crate::store::{self, Placed, Stored};

/// The order the tensors (indices into the checkpoint's entries) are written in: the
/// order the whole-model writer gives, so both write the same bytes.
pub(super) fn order(checkpoint: &Checkpoint, format: StreamFormat) -> Result<Vec<usize>> {
    let entries = &checkpoint.entries;
    let (float, raw): (Vec<usize>, Vec<usize>) =
        (0..entries.len()).partition(|&i| entries[i].float_dtype().is_some());
    match format {
        StreamFormat::Gguf(_) => {
            if let Some(&i) = raw.first() {
                return Err(Error::invalid(
                    "GGUF output",
                    format!(
                        "`{}` (a verbatim {} tensor)",
                        entries[i].name,
                        entries[i].dtype_name()
                    ),
                    "parameters dense or quantized to q8_0, q4_0, q6_k (or q4_k on writing); \
                     write other forms as safetensors or slimnn's compressed format",
                ));
            }
            Ok(float)
        }
        StreamFormat::Compressed => Ok(float.into_iter().chain(raw).collect()),
        StreamFormat::Safetensors(options) => {
            if options.masks != MaskExport::Apply {
                return Err(Error::invalid(
                    "streamed safetensors output",
                    format!("{:?}", options.masks),
                    "masks applied (MaskExport::Apply)",
                ));
            }
            let mut all: Vec<usize> = (0..entries.len()).collect();
            sort_for_safetensors(checkpoint, &mut all, options);
            Ok(all)
        }
    }
}

/// Sorts tensors as `Model::save` writes them: by descending dtype alignment, then by
/// name.
pub(super) fn sort_for_safetensors(
    checkpoint: &Checkpoint,
    order: &mut [usize],
    options: SaveOptions,
) {
    let entries = &checkpoint.entries;
    order.sort_by(|&a, &b| {
        let (a, b) = (&entries[a], &entries[b]);
        let (da, db) = (planned(a, options).0, planned(b, options).0);
        db.cmp(&da).then(a.name.cmp(&b.name))
    });
}

/// The dtype and bytes a tensor has in a safetensors output.
pub(super) fn planned(e: &Entry, options: SaveOptions) -> (safetensors::tensor::Dtype, usize) {
    match (e.float_dtype(), options.dtype) {
        (Some(d), out) => {
            let out = out.unwrap_or(d);
            let n: usize = e.shape.iter().product();
            (file_dtype(out), n * out.size())
        }
        (None, _) => (e.dtype, e.len),
    }
}

/// Per format: what the header will say, filled in as tensors are written.
enum Layout {
    Gguf {
        options: crate::io::GgufOptions,
        metadata: Vec<(String, GgufValue)>,
        align: usize,
        /// Name, shape, type, bytes of each tensor written (the last one may be in
        /// progress).
        tensors: Vec<(String, Vec<usize>, Option<GgufType>, usize)>,
    },
    Safetensors {
        dtype: Option<crate::model::DType>,
        /// Bytes each tensor must have, in file order, and how many are written.
        expected: Vec<usize>,
        next: usize,
        written: usize,
    },
    Compressed {
        metadata: std::collections::BTreeMap<String, String>,
        /// Name, offset, length, CRC-32 of each parameter's record.
        params: Vec<(String, usize, usize, u32)>,
        raws: Vec<(RawTensor, usize, usize, u32)>,
    },
}

/// An output being written.
pub(super) struct Sink<'w, W: Write + Seek> {
    out: &'w mut W,
    base: u64,
    header: usize,
    data: usize,
    layout: Layout,
}

fn io(e: std::io::Error) -> Error {
    Error::io("<streamed output>", e)
}

impl<'w, W: Write + Seek> Sink<'w, W> {
    /// Reserves the header for `order`'s tensors of `checkpoint`.
    pub(super) fn begin(
        out: &'w mut W,
        checkpoint: &Checkpoint,
        order: &[usize],
        format: StreamFormat,
    ) -> Result<Self> {
        let base = out.stream_position().map_err(io)?;
        let entries = &checkpoint.entries;
        let (head, layout) = match format {
            StreamFormat::Gguf(options) => {
                let mut g = Gguf::new();
                for (k, v) in &checkpoint.metadata {
                    g.metadata.push((k.clone(), GgufValue::String(v.clone())));
                }
                let align = g.alignment()?;
                let infos: Vec<TensorInfo<'_>> = order
                    .iter()
                    .map(|&i| TensorInfo {
                        name: &entries[i].name,
                        shape: &entries[i].shape,
                        ty: GgufType::F32,
                        len: 0,
                    })
                    .collect();
                let head = gguf::header(&g.metadata, &infos, align);
                let layout = Layout::Gguf {
                    options,
                    metadata: g.metadata,
                    align,
                    tensors: Vec::with_capacity(order.len()),
                };
                (head, layout)
            }
            StreamFormat::Safetensors(options) => {
                let planned: Vec<(safetensors::tensor::Dtype, usize)> = order
                    .iter()
                    .map(|&i| planned(&entries[i], options))
                    .collect();
                let header_entries: Vec<HeaderEntry<'_>> = order
                    .iter()
                    .zip(&planned)
                    .map(|(&i, &(dtype, bytes))| HeaderEntry {
                        name: &entries[i].name,
                        dtype,
                        shape: &entries[i].shape,
                        bytes,
                    })
                    .collect();
                let json = header_bytes(&header_entries, &checkpoint.metadata);
                let mut head = (json.len() as u64).to_le_bytes().to_vec();
                head.extend_from_slice(&json);
                let layout = Layout::Safetensors {
                    dtype: options.dtype,
                    expected: planned.iter().map(|p| p.1).collect(),
                    next: 0,
                    written: 0,
                };
                (head, layout)
            }
            StreamFormat::Compressed => {
                let params: Vec<(String, usize, usize, u32)> = order
                    .iter()
                    .filter(|&&i| entries[i].float_dtype().is_some())
                    .map(|&i| (entries[i].name.clone(), 0, 0, 0))
                    .collect();
                let raws: Vec<(RawTensor, usize, usize, u32)> = order
                    .iter()
                    .filter(|&&i| entries[i].float_dtype().is_none())
                    .map(|&i| {
                        let e = &entries[i];
                        let raw = RawTensor {
                            name: e.name.clone(),
                            dtype: e.dtype_name(),
                            shape: e.shape.clone(),
                            bytes: Vec::new(),
                        };
                        (raw, 0, 0, 0)
                    })
                    .collect();
                let layout = Layout::Compressed {
                    metadata: checkpoint.metadata.clone(),
                    params: Vec::with_capacity(params.len()),
                    raws: Vec::with_capacity(raws.len()),
                };
                (
                    compressed_prefix(&checkpoint.metadata, &params, &raws),
                    layout,
                )
            }
        };
        out.write_all(&head).map_err(io)?;
        Ok(Sink {
            out,
            base,
            header: head.len(),
            data: 0,
            layout,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(io)?;
        self.data += bytes.len();
        Ok(())
    }

    /// Appends (a row chunk of) parameter `p` of `entry` (`one` holds it alone): how it
    /// is stored, and the dtype or block type it is held in when the file holds it
    /// decoded.
    pub(super) fn param(
        &mut self,
        entry: &Entry,
        p: &Param,
        one: &Model,
    ) -> Result<(Stored, Option<String>)> {
        match &mut self.layout {
            Layout::Gguf { options, .. } => {
                let mut g = one.to_gguf(options)?;
                let t = g.tensors.pop().expect("one parameter");
                let held = match t.ty {
                    GgufType::Quant(_) if p.quantized().is_some() => None,
                    GgufType::Quant(f) => Some(format!("{f:?}")),
                    other => Some(format!("{other:?}")),
                };
                self.gguf_data(entry, t.ty, &t.data)?;
                Ok((dense_stored(t.data.len()), held))
            }
            Layout::Safetensors { dtype, written, .. } => {
                let dtype = dtype.unwrap_or(p.dtype());
                let bytes = param_bytes(p, dtype);
                *written += bytes.len();
                self.write(&bytes)?;
                Ok((dense_stored(bytes.len()), Some(format!("{dtype:?}"))))
            }
            Layout::Compressed { params, .. } => {
                let (record, stored) = store::encode_param(p)?;
                params.push((
                    entry.name.clone(),
                    self.data,
                    record.len(),
                    crc32fast::hash(&record),
                ));
                self.write(&record)?;
                Ok((stored, None))
            }
        }
    }

    /// Appends `data` of (a row chunk of) `entry` in GGUF type `ty`, quantized already.
    pub(super) fn gguf_data(&mut self, entry: &Entry, ty: GgufType, data: &[u8]) -> Result<()> {
        let Layout::Gguf { tensors, .. } = &mut self.layout else {
            unreachable!("GGUF data for a GGUF output only")
        };
        match tensors.last_mut() {
            Some((name, _, t, len)) if *name == entry.name => {
                if *t != Some(ty) {
                    return Err(Error::invalid(
                        "streamed GGUF output",
                        &entry.name,
                        "row chunks of one tensor of one type",
                    ));
                }
                *len += data.len();
            }
            _ => tensors.push((
                entry.name.clone(),
                entry.shape.clone(),
                Some(ty),
                data.len(),
            )),
        }
        self.write(data)
    }

    /// Closes parameter `entry` after its last chunk.
    pub(super) fn end_param(&mut self, entry: &Entry) -> Result<()> {
        match &mut self.layout {
            Layout::Gguf { align, tensors, .. } => {
                let (_, shape, ty, len) = tensors.last().expect("a tensor was written");
                gguf::check_tensor(&entry.name, shape, ty.expect("typed"), *len)?;
                let pad = self.data.next_multiple_of(*align) - self.data;
                self.write(&vec![0; pad])
            }
            Layout::Safetensors { .. } => self.end_dense(entry),
            Layout::Compressed { .. } => Ok(()),
        }
    }

    fn end_dense(&mut self, entry: &Entry) -> Result<()> {
        if let Layout::Safetensors {
            expected,
            next,
            written,
            ..
        } = &mut self.layout
        {
            if expected.get(*next) != Some(written) {
                return Err(Error::invalid(
                    "streamed safetensors output",
                    &entry.name,
                    "the bytes its dtype and shape give",
                ));
            }
            *next += 1;
            *written = 0;
        }
        Ok(())
    }

    /// Appends a tensor kept verbatim.
    pub(super) fn raw(&mut self, entry: &Entry, bytes: &[u8]) -> Result<()> {
        match &mut self.layout {
            Layout::Gguf { .. } => unreachable!("`order` refuses raw tensors in GGUF"),
            Layout::Safetensors { written, .. } => {
                *written += bytes.len();
                self.write(bytes)?;
                self.end_dense(entry)
            }
            Layout::Compressed { raws, .. } => {
                let raw = RawTensor {
                    name: entry.name.clone(),
                    dtype: entry.dtype_name(),
                    shape: entry.shape.clone(),
                    bytes: Vec::new(),
                };
                raws.push((raw, self.data, bytes.len(), crc32fast::hash(bytes)));
                self.write(bytes)
            }
        }
    }

    /// Writes the header's final form over the reserved one; the file's bytes.
    pub(super) fn finish(self) -> Result<usize> {
        let head = match &self.layout {
            Layout::Gguf {
                metadata,
                align,
                tensors,
                ..
            } => {
                let infos: Vec<TensorInfo<'_>> = tensors
                    .iter()
                    .map(|(name, shape, ty, len)| TensorInfo {
                        name,
                        shape,
                        ty: ty.expect("typed"),
                        len: *len,
                    })
                    .collect();
                gguf::header(metadata, &infos, *align)
            }
            Layout::Safetensors { .. } => Vec::new(),
            Layout::Compressed {
                metadata,
                params,
                raws,
            } => compressed_prefix(metadata, params, raws),
        };
        if !head.is_empty() {
            if head.len() != self.header {
                return Err(Error::invalid(
                    "streamed output",
                    format!("a header of {} bytes", head.len()),
                    format!("the {} bytes reserved", self.header),
                ));
            }
            self.out.seek(SeekFrom::Start(self.base)).map_err(io)?;
            self.out.write_all(&head).map_err(io)?;
            self.out
                .seek(SeekFrom::Start(
                    self.base + (self.header + self.data) as u64,
                ))
                .map_err(io)?;
        }
        self.out.flush().map_err(io)?;
        Ok(self.header + self.data)
    }
}

/// The compressed file's prefix for these directory entries.
fn compressed_prefix(
    metadata: &std::collections::BTreeMap<String, String>,
    params: &[(String, usize, usize, u32)],
    raws: &[(RawTensor, usize, usize, u32)],
) -> Vec<u8> {
    let params: Vec<Placed<'_>> = params
        .iter()
        .map(|(name, offset, len, crc)| Placed {
            name,
            offset: *offset,
            len: *len,
            crc: *crc,
        })
        .collect();
    let raws: Vec<(&RawTensor, Placed<'_>)> = raws
        .iter()
        .map(|(t, offset, len, crc)| {
            let placed = Placed {
                name: &t.name,
                offset: *offset,
                len: *len,
                crc: *crc,
            };
            (t, placed)
        })
        .collect();
    store::prefix(metadata, &params, &raws)
}
