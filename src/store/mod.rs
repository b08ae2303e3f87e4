//! The compressed model file: every parameter in its compressed form (sparse positions,
//! quantization codes and codebooks, Huffman streams, low-rank factors), versioned and
//! checksummed, loaded back exactly. The layout is in [`crate::guide::format`].
//!
//! How each parameter is stored is its [`Encoding`] ([`Param::encoding`](crate::Param::encoding), set by the
//! pipeline's [`Encode`](crate::pipeline::Encode) step): where its values are
//! ([`Positions`]) and whether codes and index gaps are Huffman-coded. The size a
//! [`Report`](crate::pipeline::Report) gives is computed by this same encoder, so it is
//! the file's size.
//!
//! ```
//! use ndarray::{Array, IxDyn};
//! use slimnn::prune::{MagnitudePruner, Statistics};
//! use slimnn::store::{self, Encoding, Positions};
//! use slimnn::{Model, Selector};
//!
//! let mut model = Model::new();
//! model.add("fc.weight", Array::from_shape_fn(IxDyn(&[32, 64]), |i| ((i[0] * 64 + i[1]) as f32 * 0.3).sin()))?;
//! model.prune(&Selector::prunable(), &MagnitudePruner::magnitude(0.9)?, &Statistics::new())?;
//! model.get_mut("fc.weight")?.set_encoding(Encoding { positions: Positions::Bitmask, huffman: false });
//! let bytes = store::to_bytes(&model)?;
//! assert!(bytes.len() < 32 * 64 * 4 / 3);
//! let back = store::from_bytes(&bytes)?;
//! assert_eq!(back.get("fc.weight")?.effective(), model.get("fc.weight")?.effective());
//! assert_eq!(back.get("fc.weight")?.mask(), model.get("fc.weight")?.mask());
//! # Ok::<(), slimnn::Error>(())
//! ```

mod decoding;
mod positions;
mod record;

use std::fmt;
use std::path::Path;

use crate::encode::wire::{Reader, Writer};

use crate::error::{Error, Result};
use crate::model::{Model, RawTensor};

/// Where a parameter's stored values are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Positions {
    /// The smallest of the others, per parameter.
    #[default]
    Auto,
    /// Every element stored, no index (a masked parameter keeps a bitmask instead: the
    /// mask is never lost).
    Dense,
    /// One bit per element.
    Bitmask,
    /// Compressed sparse rows of the weight seen as `[shape[0], rest]`.
    Csr,
    /// Deep Compression's relative index: the gap to the previous stored element in
    /// `bits` bits (1 to 8), with filler entries for longer gaps (Han, Mao & Dally 2016).
    RelativeIndex {
        /// Bits per gap.
        bits: u8,
    },
}

impl Positions {
    /// The concrete choices [`Positions::Auto`] compares.
    pub const CONCRETE: [Positions; 5] = [
        Positions::Dense,
        Positions::Bitmask,
        Positions::Csr,
        Positions::RelativeIndex { bits: 4 },
        Positions::RelativeIndex { bits: 8 },
    ];
}

/// How a parameter is stored in a compressed model file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Encoding {
    /// Where the stored values are.
    pub positions: Positions,
    /// Huffman-code the quantization codes and the relative index's gaps (each with its
    /// own canonical code, stored as code lengths).
    pub huffman: bool,
}

impl Encoding {
    /// Fails for a relative index of other than 1 to 8 bits.
    pub fn check(&self) -> Result<()> {
        match self.positions {
            Positions::RelativeIndex { bits } if !(1..=8).contains(&bits) => Err(Error::invalid(
                "bits",
                bits,
                "1 to 8 bits per relative index",
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.positions {
            Positions::Auto => write!(f, "smallest positions")?,
            Positions::Dense => write!(f, "dense")?,
            Positions::Bitmask => write!(f, "bitmask")?,
            Positions::Csr => write!(f, "CSR")?,
            Positions::RelativeIndex { bits } => write!(f, "{bits}-bit relative index")?,
        }
        if self.huffman {
            write!(f, " + Huffman")?;
        }
        Ok(())
    }
}

/// A parameter's bytes in the file, by what they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StoredBytes {
    /// Name, kind, dtype, shape and form tags; the file's directory entry.
    pub header: usize,
    /// Values, quantization codes or factors.
    pub values: usize,
    /// Sparse positions (bitmask, CSR indices and pointers, relative gaps).
    pub indices: usize,
    /// What decodes the codes: scales, zero points, codebooks.
    pub decoding: usize,
    /// Huffman code tables.
    pub tables: usize,
}

impl StoredBytes {
    /// All of them.
    pub fn total(&self) -> usize {
        self.header + self.values + self.indices + self.decoding + self.tables
    }

    fn header(&mut self) -> &mut usize {
        &mut self.header
    }

    fn values(&mut self) -> &mut usize {
        &mut self.values
    }

    fn indices(&mut self) -> &mut usize {
        &mut self.indices
    }

    fn decoding(&mut self) -> &mut usize {
        &mut self.decoding
    }
}

/// The end of the error for a file past its memory limit.
const RAISE_THE_LIMIT: &str =
    "if the file is trusted, raise the limit (LoadOptions, or --max-memory on the command line)";

/// What loading a compressed file may allocate.
///
/// A file states the shapes of its tensors; a hostile one can state shapes far larger
/// than its bytes. Before decoding anything the loader adds up what the file claims —
/// its own bytes, its header, its raw tensors, and
/// [`LoadOptions::BYTES_PER_ELEMENT`] bytes for every element of every parameter (the
/// decoded `f32` values and the decoder's buffers) — and refuses the file with
/// [`Error::InvalidFormat`] if the sum exceeds the limit. Decoding a low-rank form
/// checks its transient buffers against what is left of the limit.
///
/// By default the limit is [`LoadOptions::MEMORY_PER_FILE_BYTE`] bytes per byte of the
/// file plus [`LoadOptions::MEMORY_SLACK`]: room for models compressed about 100× against
/// `f32`. For files you trust that compress more, raise it.
///
/// ```
/// use slimnn::store::LoadOptions;
///
/// assert_eq!(LoadOptions::default().limit(1000), 256 * 1000 + (16 << 20));
/// assert_eq!(LoadOptions::new().with_max_memory(1 << 30).limit(1000), 1 << 30);
/// assert_eq!(LoadOptions::trusted().limit(1000), usize::MAX);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    max_memory: Option<usize>,
}

impl LoadOptions {
    /// Bytes a file may make the loader allocate per byte it holds, by default.
    pub const MEMORY_PER_FILE_BYTE: usize = 256;
    /// Bytes any file may make the loader allocate besides, by default (16 MiB).
    pub const MEMORY_SLACK: usize = 16 << 20;
    /// Bytes charged per element of a parameter.
    pub const BYTES_PER_ELEMENT: usize = 10;

    /// The default limit.
    pub fn new() -> Self {
        LoadOptions::default()
    }

    /// No limit beyond the format's own (for files from a trusted source).
    pub fn trusted() -> Self {
        LoadOptions {
            max_memory: Some(usize::MAX),
        }
    }

    /// A limit of `bytes` in all, whatever the file's size.
    pub fn with_max_memory(mut self, bytes: usize) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// The most bytes loading a file of `file_bytes` bytes may allocate.
    pub fn limit(&self, file_bytes: usize) -> usize {
        self.max_memory.unwrap_or_else(|| {
            file_bytes
                .saturating_mul(Self::MEMORY_PER_FILE_BYTE)
                .saturating_add(Self::MEMORY_SLACK)
        })
    }
}

const MAGIC: &[u8; 8] = b"SLIMNNCM";
/// The format's name in errors.
const FORMAT: &str = "slimnn compressed model";
const VERSION: u32 = 1;
/// Magic, version, header length.
const FIXED: usize = 8 + 4 + 8;

/// Bytes per directory entry besides the name: length prefix, offset, length, CRC-32.
const ENTRY: usize = 8 + 8 + 8 + 4;

/// What a record Huffman-coded: the tables' bytes, the streams' bits, and the Shannon
/// entropy of the streams' symbols in bits.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Coded {
    pub(crate) table_bytes: usize,
    pub(crate) stream_bits: u64,
    pub(crate) entropy_bits: f64,
}

impl Coded {
    fn add(&mut self, other: Coded) {
        self.table_bytes += other.table_bytes;
        self.stream_bits += other.stream_bits;
        self.entropy_bits += other.entropy_bits;
    }
}

/// How one parameter was stored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stored {
    /// What its share of the file holds (its directory entry counted in its header).
    pub(crate) bytes: StoredBytes,
    /// The positions format, if its values are stored sparsely.
    pub(crate) positions: Option<Positions>,
    /// What it Huffman-coded.
    pub(crate) coded: Coded,
}

/// The record of one parameter and how it was stored (its directory entry counted in
/// its header bytes).
pub(crate) fn encode_param(p: &crate::model::Param) -> Result<(Vec<u8>, Stored)> {
    let e = record::encode(p, p.encoding())?;
    let mut bytes = e.stored;
    bytes.header += ENTRY + p.name().len();
    Ok((
        e.bytes,
        Stored {
            bytes,
            positions: e.positions,
            coded: e.coded,
        },
    ))
}

/// Where a record or raw tensor is in the data section: name, offset, length, CRC-32.
pub(crate) struct Placed<'a> {
    pub(crate) name: &'a str,
    pub(crate) offset: usize,
    pub(crate) len: usize,
    pub(crate) crc: u32,
}

/// Everything before the data section: magic, version, header length, header (metadata,
/// the parameters' directory, the raw tensors' directory) and the header's CRC-32. Its
/// length depends on names and metadata only, so a streamed writer reserves it first.
pub(crate) fn prefix(
    metadata: &std::collections::BTreeMap<String, String>,
    params: &[Placed<'_>],
    raws: &[(&RawTensor, Placed<'_>)],
) -> Vec<u8> {
    let mut h = Writer::default();
    h.usize(metadata.len());
    for (k, v) in metadata {
        h.str(k);
        h.str(v);
    }
    h.usize(params.len());
    for p in params {
        h.str(p.name);
        h.usize(p.offset);
        h.usize(p.len);
        h.u32(p.crc);
    }
    h.usize(raws.len());
    for (t, p) in raws {
        h.str(&t.name);
        h.str(&t.dtype);
        h.dims(&t.shape);
        h.usize(p.offset);
        h.usize(p.len);
        h.u32(p.crc);
    }
    let mut out = Vec::with_capacity(FIXED + h.bytes.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(h.bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&h.bytes);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The file's bytes and how each parameter was stored.
pub(crate) fn encode_model(model: &Model) -> Result<(Vec<u8>, Vec<Stored>)> {
    let mut records = Vec::with_capacity(model.len());
    let mut stored = Vec::with_capacity(model.len());
    for p in model.params() {
        let (r, s) = encode_param(p)?;
        records.push(r);
        stored.push(s);
    }
    let mut offset = 0usize;
    let mut place = |name, bytes: &[u8]| {
        let placed = Placed {
            name,
            offset,
            len: bytes.len(),
            crc: crc32fast::hash(bytes),
        };
        offset += bytes.len();
        placed
    };
    let params: Vec<Placed<'_>> = model
        .params()
        .iter()
        .zip(&records)
        .map(|(p, r)| place(p.name(), r))
        .collect();
    let raws: Vec<(&RawTensor, Placed<'_>)> = model
        .raw_tensors()
        .iter()
        .map(|t| (t, place(&t.name, &t.bytes)))
        .collect();
    let mut out = prefix(model.metadata(), &params, &raws);
    out.reserve(offset);
    for r in &records {
        out.extend_from_slice(r);
    }
    for t in model.raw_tensors() {
        out.extend_from_slice(&t.bytes);
    }
    Ok((out, stored))
}

/// The compressed file's bytes for `model`.
pub fn to_bytes(model: &Model) -> Result<Vec<u8>> {
    Ok(encode_model(model)?.0)
}

/// Reads a model from a compressed file's bytes, checking the magic, the version, the
/// header's and every tensor's CRC-32, and every length and index against the input.
pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
    from_bytes_with(bytes, &LoadOptions::default())
}

/// [`from_bytes`] with a limit on what the model may claim (see [`LoadOptions`]).
pub fn from_bytes_with(bytes: &[u8], options: &LoadOptions) -> Result<Model> {
    parse(bytes, "<bytes>", options)
}

/// A parameter's directory entry and its record.
struct Entry<'b> {
    name: String,
    data: &'b [u8],
    /// The header reader's position after the entry, for errors.
    at: usize,
}

fn parse(bytes: &[u8], source: &str, options: &LoadOptions) -> Result<Model> {
    let mut r = Reader::at(bytes, FORMAT, source, 0);
    if r.take(8).ok() != Some(MAGIC.as_slice()) {
        return Err(r.error("not a slimnn compressed model (bad magic)"));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(r.error(format!(
            "version {version}; this slimnn reads version {VERSION}"
        )));
    }
    let header_len = r.count(1)?;
    let header = r.take(header_len)?;
    let crc = r.u32()?;
    if crc != crc32fast::hash(&bytes[..FIXED + header_len]) {
        return Err(r.error("the header's checksum does not match"));
    }
    let body = &bytes[FIXED + header_len + 4..];
    let limit = options.limit(bytes.len());
    // What the file claims before any record is decoded: its bytes, its header (as
    // strings and entries), its raw tensors, and every parameter's elements.
    let mut claimed = bytes.len().saturating_add(header_len.saturating_mul(4));
    let mut h = Reader::at(header, FORMAT, source, FIXED);
    let mut metadata = Vec::new();
    let n_meta = h.count(16)?;
    for _ in 0..n_meta {
        metadata.push((h.str()?, h.str()?));
    }
    let mut expected_offset = 0usize;
    let n_params = h.count(ENTRY)?;
    let mut params = Vec::with_capacity(n_params);
    for _ in 0..n_params {
        let name = h.str()?;
        let data = section(&mut h, body, &mut expected_offset, &name)?;
        let base = data.as_ptr() as usize - bytes.as_ptr() as usize;
        let elements = record::peek_elements(&mut Reader::at(data, FORMAT, source, base))
            .map_err(|e| in_record(&name, e, &h))?;
        claimed = claimed.saturating_add(elements.saturating_mul(LoadOptions::BYTES_PER_ELEMENT));
        if claimed > limit {
            return Err(h.error(format!(
                "`{name}` of {elements} elements takes the file's claim past {limit} bytes \
                 of memory ({} bytes of file); {RAISE_THE_LIMIT}",
                bytes.len()
            )));
        }
        params.push(Entry {
            name,
            data,
            at: h.pos(),
        });
    }
    let mut raws = Vec::new();
    let n_raw = h.count(ENTRY)?;
    for _ in 0..n_raw {
        let name = h.str()?;
        let dtype = h.str()?;
        let shape = h.dims()?;
        let data = section(&mut h, body, &mut expected_offset, &name)?;
        claimed = claimed.saturating_add(data.len());
        raws.push((name, dtype, shape, data));
    }
    if !h.is_empty() || expected_offset != body.len() {
        return Err(r.error("stray bytes after the last tensor"));
    }
    if claimed > limit {
        return Err(r.error(format!(
            "the file claims more than {limit} bytes of memory ({} bytes of file); \
             {RAISE_THE_LIMIT}",
            bytes.len()
        )));
    }
    let spare = limit - claimed;
    let mut model = Model::new();
    for (k, v) in metadata {
        model.metadata_mut().insert(k, v);
    }
    for Entry { name, data, at } in params {
        let mut h = Reader::at(header, FORMAT, source, FIXED);
        h.skip_to(at);
        if model.get(&name).is_ok() {
            return Err(h.error(format!("`{name}` appears twice")));
        }
        let base = data.as_ptr() as usize - bytes.as_ptr() as usize;
        let mut rec = Reader::at(data, FORMAT, source, base);
        let d = record::decode(&mut rec, spare).map_err(|e| in_record(&name, e, &h))?;
        if !rec.is_empty() {
            return Err(rec.error(format!("`{name}` has {} stray bytes", rec.remaining())));
        }
        // The record was checked, but what the model refuses is a fault of the file too.
        add_decoded(&mut model, name.clone(), d).map_err(|e| in_record(&name, e, &rec))?;
    }
    for (name, dtype, shape, data) in raws {
        if model.get(&name).is_ok() || model.raw_tensors().iter().any(|t| t.name == name) {
            return Err(r.error(format!("`{name}` appears twice")));
        }
        model
            .add_raw(RawTensor {
                name: name.clone(),
                dtype,
                shape,
                bytes: data.to_vec(),
            })
            .map_err(|e| r.error(format!("`{name}`: {e}")))?;
    }
    Ok(model)
}

/// An error in the record of `name`: a format error keeps its offset and gains the
/// name; any other becomes a format error at `r`'s position.
fn in_record(name: &str, e: Error, r: &Reader<'_>) -> Error {
    match e {
        Error::InvalidFormat {
            format: FORMAT,
            source_name,
            reason,
        } => Error::InvalidFormat {
            format: FORMAT,
            source_name,
            reason: format!("`{name}`: {reason}"),
        },
        e => r.error(format!("`{name}`: {e}")),
    }
}

/// Adds a decoded record to `model` as the parameter `name`.
fn add_decoded(model: &mut Model, name: String, d: record::Decoded) -> Result<()> {
    let p = model.add_param(name, d.kind, d.dtype, d.value)?;
    if let Some(q) = d.quantized {
        p.set_quantized(q)?;
    }
    if let Some(f) = d.factorization {
        if f.shape().len() == 4 {
            p.set_conv(f.conv_spec());
        }
        p.set_factorization(f)?;
    }
    if let Some(m) = d.mask {
        p.set_mask(m)?;
    }
    p.set_encoding(d.encoding);
    Ok(())
}

/// Decodes one parameter record as the file reader would, without the file around it
/// (for the fuzz target `decode_record`).
#[cfg(fuzzing)]
pub fn decode_record_for_fuzzing(bytes: &[u8]) -> Result<()> {
    let mut r = Reader::at(bytes, FORMAT, "<fuzz>", 0);
    let mut model = Model::new();
    let spare = LoadOptions::default().limit(bytes.len());
    record::peek_elements(&mut Reader::at(bytes, FORMAT, "<fuzz>", 0))?
        .checked_mul(LoadOptions::BYTES_PER_ELEMENT)
        .filter(|&b| b <= spare)
        .ok_or_else(|| r.error("too many elements"))?;
    add_decoded(&mut model, "p".into(), record::decode(&mut r, spare)?)?;
    to_bytes(&model).map(|_| ())
}

/// The next section of the body, as the directory entry at `h` describes it: it must
/// start where the previous one ended, lie within the body, and match its CRC-32.
fn section<'b>(
    h: &mut Reader<'_>,
    body: &'b [u8],
    expected_offset: &mut usize,
    name: &str,
) -> Result<&'b [u8]> {
    let (offset, len, crc) = (h.usize()?, h.usize()?, h.u32()?);
    let end = offset
        .checked_add(len)
        .filter(|&e| e <= body.len() && offset == *expected_offset);
    let Some(end) = end else {
        return Err(h.error(format!("`{name}` lies outside the file or out of order")));
    };
    *expected_offset = end;
    let data = &body[offset..end];
    if crc32fast::hash(data) != crc {
        return Err(h.error(format!("`{name}`'s checksum does not match")));
    }
    Ok(data)
}

impl Model {
    /// Writes the model as a compressed file (atomically: a temporary file renamed over
    /// `path` once complete).
    pub fn save_compressed(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = to_bytes(self)?;
        crate::io::write_atomically(path, |tmp| {
            std::fs::write(tmp, &bytes).map_err(|e| Error::io(tmp, e))
        })
    }

    /// Reads a compressed file written by [`Model::save_compressed`], refusing a file that
    /// claims more memory than [`LoadOptions::default`] allows (256 bytes per byte of
    /// the file, plus 16 MiB).
    pub fn load_compressed(path: impl AsRef<Path>) -> Result<Model> {
        Model::load_compressed_with(path, &LoadOptions::default())
    }

    /// [`Model::load_compressed`] with a limit on what the file may claim (see
    /// [`LoadOptions`]).
    pub fn load_compressed_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model> {
        let path = path.as_ref();
        let bytes = crate::io::read_regular(path)?;
        parse(&bytes, &path.display().to_string(), options)
    }
}
