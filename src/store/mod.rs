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

mod bytes;
mod decoding;
mod positions;
mod record;

use std::fmt;
use std::path::Path;

use bytes::{Reader, Writer};

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

const MAGIC: &[u8; 8] = b"SLIMNNCM";
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

/// The file's bytes and how each parameter was stored.
pub(crate) fn encode_model(model: &Model) -> Result<(Vec<u8>, Vec<Stored>)> {
    let mut records = Vec::with_capacity(model.len());
    let mut stored = Vec::with_capacity(model.len());
    for p in model.params() {
        let e = record::encode(p, p.encoding())?;
        let mut bytes = e.stored;
        bytes.header += ENTRY + p.name().len();
        records.push(e.bytes);
        stored.push(Stored {
            bytes,
            positions: e.positions,
            coded: e.coded,
        });
    }
    let mut h = Writer::default();
    h.usize(model.metadata().len());
    for (k, v) in model.metadata() {
        h.str(k);
        h.str(v);
    }
    let mut offset = 0usize;
    h.usize(records.len());
    for (p, r) in model.params().iter().zip(&records) {
        h.str(p.name());
        h.usize(offset);
        h.usize(r.len());
        h.u32(crc32fast::hash(r));
        offset += r.len();
    }
    h.usize(model.raw_tensors().len());
    for t in model.raw_tensors() {
        h.str(&t.name);
        h.str(&t.dtype);
        h.dims(&t.shape);
        h.usize(offset);
        h.usize(t.bytes.len());
        h.u32(crc32fast::hash(&t.bytes));
        offset += t.bytes.len();
    }
    let mut out = Vec::with_capacity(FIXED + h.bytes.len() + 4 + offset);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(h.bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&h.bytes);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
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
    parse(bytes, "<bytes>")
}

fn parse(bytes: &[u8], source: &str) -> Result<Model> {
    let mut r = Reader::new(bytes, source);
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
    let mut h = Reader::new(header, source);
    let mut model = Model::new();
    let n_meta = h.count(16)?;
    for _ in 0..n_meta {
        let (k, v) = (h.str()?, h.str()?);
        model.metadata_mut().insert(k, v);
    }
    let mut expected_offset = 0usize;
    let n_params = h.count(ENTRY)?;
    for _ in 0..n_params {
        let name = h.str()?;
        let data = section(&mut h, body, &mut expected_offset, &name)?;
        if model.get(&name).is_ok() {
            return Err(h.error(format!("`{name}` appears twice")));
        }
        let mut rec = Reader::new(data, source);
        let d = record::decode(&mut rec).map_err(|e| h.error(format!("`{name}`: {e}")))?;
        if !rec.is_empty() {
            return Err(h.error(format!("`{name}` has {} stray bytes", rec.remaining())));
        }
        // The record was checked, but what the model refuses is a fault of the file too.
        add_decoded(&mut model, name.clone(), d).map_err(|e| h.error(format!("`{name}`: {e}")))?;
    }
    let n_raw = h.count(ENTRY)?;
    for _ in 0..n_raw {
        let name = h.str()?;
        let dtype = h.str()?;
        let shape = h.dims()?;
        let data = section(&mut h, body, &mut expected_offset, &name)?;
        if model.get(&name).is_ok() || model.raw_tensors().iter().any(|t| t.name == name) {
            return Err(h.error(format!("`{name}` appears twice")));
        }
        model
            .add_raw(RawTensor {
                name: name.clone(),
                dtype,
                shape,
                bytes: data.to_vec(),
            })
            .map_err(|e| h.error(format!("`{name}`: {e}")))?;
    }
    if !h.is_empty() || expected_offset != body.len() {
        return Err(r.error("stray bytes after the last tensor"));
    }
    Ok(model)
}

/// Adds a decoded record to `model` as the parameter `name`.
fn add_decoded(model: &mut Model, name: String, d: record::Decoded) -> Result<()> {
    let p = model.add_param(name, d.kind, d.dtype, d.value)?;
    if let Some(q) = d.quantized {
        p.set_quantized(q)?;
    }
    if let Some(f) = d.factorization {
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
    let mut r = Reader::new(bytes, "<fuzz>");
    let mut model = Model::new();
    add_decoded(&mut model, "p".into(), record::decode(&mut r)?)?;
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

    /// Reads a compressed file written by [`Model::save_compressed`].
    pub fn load_compressed(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let bytes = crate::io::read_regular(path)?;
        parse(&bytes, &path.display().to_string())
    }
}
