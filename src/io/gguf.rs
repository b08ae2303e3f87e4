//! GGUF v3, llama.cpp's model format (also read by candle and others): a header of
//! typed key-values, tensor infos and aligned tensor data.
//!
//! [`Gguf`] is the file's content: metadata key-values ([`GgufValue`], every GGUF value
//! type including nested arrays) and tensors ([`GgufTensor`]: a name, a row-major shape
//! and the bytes of one of the [`GgufType`]s F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K).
//! GGUF lists a tensor's dimensions innermost first (`ne[0]` is the row length); slimnn
//! keeps shapes row-major, outermost first, like safetensors and NumPy, and reverses
//! them on writing and reading.
//!
//! The reader is hardened like the safetensors loader: every count and length is checked
//! against the bytes that remain before anything is allocated, tensor data must lie in
//! the file, aligned and without overlap, so a file never makes it allocate more than a
//! small multiple of its size; corrupt, truncated or hostile bytes are an
//! [`Error::InvalidFormat`], never a panic.

use std::path::Path;

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::quant::{GgmlFormat, dequantize_ggml};

/// `GGUF` as a little-endian `u32`.
const MAGIC: &[u8; 4] = b"GGUF";
/// The version written (and the only one read).
const VERSION: u32 = 3;
/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// Deepest nesting of arrays in a value the reader accepts.
const MAX_DEPTH: usize = 8;
/// Most dimensions of a tensor (ggml's `GGML_MAX_DIMS`).
const MAX_DIMS: usize = 4;

/// A tensor element type of GGUF (ggml's `ggml_type`) that slimnn reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgufType {
    /// 32-bit floats (`GGML_TYPE_F32` = 0).
    F32,
    /// IEEE half precision (`GGML_TYPE_F16` = 1).
    F16,
    /// bfloat16 (`GGML_TYPE_BF16` = 30).
    BF16,
    /// ggml blocks (Q8_0 = 8, Q4_0 = 2, Q4_K = 12, Q6_K = 14).
    Quant(GgmlFormat),
}

impl GgufType {
    /// ggml's type id.
    pub fn id(self) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::BF16 => 30,
            GgufType::Quant(GgmlFormat::Q4_0) => 2,
            GgufType::Quant(GgmlFormat::Q8_0) => 8,
            GgufType::Quant(GgmlFormat::Q4_K) => 12,
            GgufType::Quant(GgmlFormat::Q6_K) => 14,
        }
    }

    /// The type of ggml id `id`, if slimnn supports it.
    pub fn from_id(id: u32) -> Option<GgufType> {
        Some(match id {
            0 => GgufType::F32,
            1 => GgufType::F16,
            30 => GgufType::BF16,
            2 => GgufType::Quant(GgmlFormat::Q4_0),
            8 => GgufType::Quant(GgmlFormat::Q8_0),
            12 => GgufType::Quant(GgmlFormat::Q4_K),
            14 => GgufType::Quant(GgmlFormat::Q6_K),
            _ => return None,
        })
    }

    /// Values per block (1 for the float types) and bytes per block.
    fn block(self) -> (usize, usize) {
        match self {
            GgufType::F32 => (1, 4),
            GgufType::F16 | GgufType::BF16 => (1, 2),
            GgufType::Quant(f) => (f.block_len(), f.block_bytes()),
        }
    }

    /// Bytes of a tensor of `shape` (row-major), or why it cannot be of this type.
    pub fn data_len(self, shape: &[usize]) -> std::result::Result<usize, String> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or("the element count overflows")?;
        let (per, bytes) = self.block();
        let row = shape.last().copied().unwrap_or(1);
        if n > 0 && !row.is_multiple_of(per) {
            return Err(format!(
                "rows of {row} values are not a multiple of {self:?}'s blocks of {per}"
            ));
        }
        (n / per)
            .checked_mul(bytes)
            .ok_or_else(|| "the byte count overflows".to_string())
    }
}

/// A GGUF metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    /// `GGUF_TYPE_UINT8`.
    U8(u8),
    /// `GGUF_TYPE_INT8`.
    I8(i8),
    /// `GGUF_TYPE_UINT16`.
    U16(u16),
    /// `GGUF_TYPE_INT16`.
    I16(i16),
    /// `GGUF_TYPE_UINT32`.
    U32(u32),
    /// `GGUF_TYPE_INT32`.
    I32(i32),
    /// `GGUF_TYPE_FLOAT32`.
    F32(f32),
    /// `GGUF_TYPE_BOOL`.
    Bool(bool),
    /// `GGUF_TYPE_STRING` (UTF-8).
    String(String),
    /// `GGUF_TYPE_ARRAY`: a homogeneous array.
    Array(GgufArray),
    /// `GGUF_TYPE_UINT64`.
    U64(u64),
    /// `GGUF_TYPE_INT64`.
    I64(i64),
    /// `GGUF_TYPE_FLOAT64`.
    F64(f64),
}

/// A homogeneous GGUF array, stored by element type (so a hostile array of a million
/// bytes costs a million bytes, not a million enum values).
#[derive(Clone, Debug, PartialEq)]
pub enum GgufArray {
    /// Of `u8`.
    U8(Vec<u8>),
    /// Of `i8`.
    I8(Vec<i8>),
    /// Of `u16`.
    U16(Vec<u16>),
    /// Of `i16`.
    I16(Vec<i16>),
    /// Of `u32`.
    U32(Vec<u32>),
    /// Of `i32`.
    I32(Vec<i32>),
    /// Of `f32`.
    F32(Vec<f32>),
    /// Of booleans.
    Bool(Vec<bool>),
    /// Of strings.
    String(Vec<String>),
    /// Of arrays (each of any element type).
    Array(Vec<GgufArray>),
    /// Of `u64`.
    U64(Vec<u64>),
    /// Of `i64`.
    I64(Vec<i64>),
    /// Of `f64`.
    F64(Vec<f64>),
}

impl GgufArray {
    /// The GGUF type id of the elements.
    fn element_type(&self) -> u32 {
        match self {
            GgufArray::U8(_) => 0,
            GgufArray::I8(_) => 1,
            GgufArray::U16(_) => 2,
            GgufArray::I16(_) => 3,
            GgufArray::U32(_) => 4,
            GgufArray::I32(_) => 5,
            GgufArray::F32(_) => 6,
            GgufArray::Bool(_) => 7,
            GgufArray::String(_) => 8,
            GgufArray::Array(_) => 9,
            GgufArray::U64(_) => 10,
            GgufArray::I64(_) => 11,
            GgufArray::F64(_) => 12,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::String(v) => v.len(),
            GgufArray::Array(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl GgufValue {
    /// The GGUF type id.
    fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    /// The string, for a [`GgufValue::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Checks that a tensor of `shape` and `ty` takes `len` bytes and has at most 4 dims.
pub(crate) fn check_tensor(name: &str, shape: &[usize], ty: GgufType, len: usize) -> Result<()> {
    if shape.len() > MAX_DIMS {
        return Err(Error::bad_shape(
            format!("GGUF tensor `{name}`"),
            shape,
            format!("GGUF tensors have at most {MAX_DIMS} dimensions"),
        ));
    }
    let want = ty
        .data_len(shape)
        .map_err(|r| Error::bad_shape(format!("GGUF tensor `{name}`"), shape, r))?;
    if len != want {
        return Err(Error::ShapeMismatch {
            what: format!("bytes of GGUF tensor `{name}` ({ty:?})"),
            expected: vec![want],
            got: vec![len],
        });
    }
    Ok(())
}

/// A tensor of a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensor {
    /// Its name (kept as given, e.g. `model.layers.0.mlp.gate_proj.weight`).
    pub name: String,
    /// Its shape, row-major (outermost first; the reverse of GGUF's `ne`).
    pub shape: Vec<usize>,
    /// Its element type.
    pub ty: GgufType,
    /// Its bytes, in `ty`'s layout ([`GgufType::data_len`] of them).
    pub data: Vec<u8>,
}

impl GgufTensor {
    /// A tensor, checking that `data` has the length `ty` and `shape` give.
    pub fn new(
        name: impl Into<String>,
        shape: &[usize],
        ty: GgufType,
        data: Vec<u8>,
    ) -> Result<Self> {
        let name = name.into();
        check_tensor(&name, shape, ty, data.len())?;
        Ok(GgufTensor {
            name,
            shape: shape.to_vec(),
            ty,
            data,
        })
    }

    /// An F32 tensor from values.
    pub fn from_f32(name: impl Into<String>, shape: &[usize], values: &[f32]) -> Result<Self> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        GgufTensor::new(name, shape, GgufType::F32, data)
    }

    /// Its values as f32: floats converted, ggml blocks dequantized bit for bit as the
    /// Python `gguf` package does.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        Ok(match self.ty {
            GgufType::F32 => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            GgufType::F16 => self
                .data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            GgufType::BF16 => self
                .data
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            GgufType::Quant(f) => dequantize_ggml(&self.data, &self.shape, f)?,
        })
    }
}

/// The content of a GGUF file: metadata key-values in file order, and tensors.
///
/// ```
/// use slimnn::io::gguf::{Gguf, GgufTensor, GgufValue};
///
/// let mut g = Gguf::new();
/// g.metadata.push(("general.name".into(), GgufValue::String("tiny".into())));
/// g.tensors.push(GgufTensor::from_f32("w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?);
/// let bytes = g.to_bytes()?;
/// let back = Gguf::from_bytes(&bytes, "<bytes>")?;
/// assert_eq!(back, g);
/// assert_eq!(back.tensors[0].shape, [2, 3]); // GGUF stores ne = [3, 2]
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gguf {
    /// Key-values, in order. `general.alignment` (a `u32`), if present, sets the data
    /// alignment on writing.
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensors, in order.
    pub tensors: Vec<GgufTensor>,
}

/// Little-endian writer.
struct Out(Vec<u8>);

impl Out {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn pad(&mut self, align: usize) {
        let n = self.0.len().next_multiple_of(align);
        self.0.resize(n, 0);
    }
    fn array(&mut self, a: &GgufArray) {
        self.u32(a.element_type());
        self.u64(a.len() as u64);
        let b = &mut self.0;
        match a {
            GgufArray::U8(v) => b.extend_from_slice(v),
            GgufArray::I8(v) => b.extend(v.iter().map(|&x| x as u8)),
            GgufArray::U16(v) => b.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            GgufArray::I16(v) => b.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            GgufArray::U32(v) => b.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            GgufArray::I32(v) => b.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            GgufArray::F32(v) => b.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            GgufArray::Bool(v) => b.extend(v.iter().map(|&x| x as u8)),
            GgufArray::U64(v) => b.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            GgufArray::I64(v) => b.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            GgufArray::F64(v) => b.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            GgufArray::String(v) => v.iter().for_each(|s| self.str(s)),
            GgufArray::Array(v) => v.iter().for_each(|a| self.array(a)),
        }
    }
    fn value(&mut self, v: &GgufValue) {
        self.u32(v.type_id());
        let b = &mut self.0;
        match v {
            GgufValue::U8(x) => b.push(*x),
            GgufValue::I8(x) => b.push(*x as u8),
            GgufValue::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
            GgufValue::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
            GgufValue::Bool(x) => b.push(*x as u8),
            GgufValue::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
            GgufValue::String(s) => self.str(s),
            GgufValue::Array(a) => self.array(a),
        }
    }
}

/// Little-endian reader over a file's bytes; every read is bounds-checked.
struct In<'a> {
    bytes: &'a [u8],
    at: usize,
    source: &'a str,
}

impl<'a> In<'a> {
    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::InvalidFormat {
            format: "GGUF",
            source_name: self.source.to_string(),
            reason: format!("{} (at byte {})", reason.into(), self.at),
        }
    }
    fn rest(&self) -> usize {
        self.bytes.len() - self.at
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.rest() {
            return Err(self.bad(format!("truncated: {n} bytes needed, {} left", self.rest())));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// A count of items of at least `min_bytes` each, checked against what is left.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        match usize::try_from(n) {
            Ok(n) if n.checked_mul(min_bytes).is_some_and(|b| b <= self.rest()) => Ok(n),
            _ => Err(self.bad(format!(
                "{what} count {n} exceeds the {} bytes left",
                self.rest()
            ))),
        }
    }
    fn str(&mut self) -> Result<String> {
        let n = self.count("string byte", 1)?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.bad("a string is not UTF-8"))
    }
    fn vec<T, const N: usize>(&mut self, n: usize, f: fn([u8; N]) -> T) -> Result<Vec<T>> {
        let raw = self.take(n * N)?;
        Ok(raw
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("N bytes")))
            .collect())
    }
    fn array(&mut self, depth: usize) -> Result<GgufArray> {
        if depth > MAX_DEPTH {
            return Err(self.bad(format!("arrays nested deeper than {MAX_DEPTH}")));
        }
        let ty = self.u32()?;
        let min = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 | 8 => 8,
            9 => 12,
            t => return Err(self.bad(format!("unknown array element type {t}"))),
        };
        let n = self.count("array element", min)?;
        Ok(match ty {
            0 => GgufArray::U8(self.take(n)?.to_vec()),
            1 => GgufArray::I8(self.vec(n, |b: [u8; 1]| b[0] as i8)?),
            2 => GgufArray::U16(self.vec(n, u16::from_le_bytes)?),
            3 => GgufArray::I16(self.vec(n, i16::from_le_bytes)?),
            4 => GgufArray::U32(self.vec(n, u32::from_le_bytes)?),
            5 => GgufArray::I32(self.vec(n, i32::from_le_bytes)?),
            6 => GgufArray::F32(self.vec(n, f32::from_le_bytes)?),
            7 => {
                let raw = self.take(n)?;
                if let Some(b) = raw.iter().find(|&&b| b > 1) {
                    return Err(self.bad(format!("boolean byte {b}")));
                }
                GgufArray::Bool(raw.iter().map(|&b| b == 1).collect())
            }
            8 => GgufArray::String((0..n).map(|_| self.str()).collect::<Result<_>>()?),
            9 => GgufArray::Array(
                (0..n)
                    .map(|_| self.array(depth + 1))
                    .collect::<Result<_>>()?,
            ),
            10 => GgufArray::U64(self.vec(n, u64::from_le_bytes)?),
            11 => GgufArray::I64(self.vec(n, i64::from_le_bytes)?),
            _ => GgufArray::F64(self.vec(n, f64::from_le_bytes)?),
        })
    }
    fn value(&mut self) -> Result<GgufValue> {
        let ty = self.u32()?;
        Ok(match ty {
            0 => GgufValue::U8(self.arr::<1>()?[0]),
            1 => GgufValue::I8(self.arr::<1>()?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.arr()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.arr()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.arr()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.arr()?)),
            7 => match self.arr::<1>()?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.bad(format!("boolean byte {b}"))),
            },
            8 => GgufValue::String(self.str()?),
            9 => GgufValue::Array(self.array(1)?),
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.arr()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.arr()?)),
            t => return Err(self.bad(format!("unknown value type {t}"))),
        })
    }
}

/// What the header says of one tensor: its data follows the previous tensor's,
/// aligned.
pub(crate) struct TensorInfo<'a> {
    pub(crate) name: &'a str,
    pub(crate) shape: &'a [usize],
    pub(crate) ty: GgufType,
    pub(crate) len: usize,
}

/// The bytes before the data section (magic to the padding after the tensor infos).
/// Its length depends on names, shapes and metadata only, not on types or data
/// lengths: a streamed writer reserves it first and fills it in at the end.
pub(crate) fn header(
    metadata: &[(String, GgufValue)],
    tensors: &[TensorInfo<'_>],
    align: usize,
) -> Vec<u8> {
    let mut out = Out(Vec::new());
    out.0.extend_from_slice(MAGIC);
    out.u32(VERSION);
    out.u64(tensors.len() as u64);
    out.u64(metadata.len() as u64);
    for (k, v) in metadata {
        out.str(k);
        out.value(v);
    }
    let mut offset = 0usize;
    for t in tensors {
        out.str(t.name);
        out.u32(t.shape.len() as u32);
        for &d in t.shape.iter().rev() {
            out.u64(d as u64);
        }
        out.u32(t.ty.id());
        out.u64(offset as u64);
        offset = (offset + t.len).next_multiple_of(align);
    }
    out.pad(align);
    out.0
}

impl Gguf {
    /// An empty file.
    pub fn new() -> Self {
        Gguf::default()
    }

    /// The value of metadata key `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The data alignment: `general.alignment` (a nonzero power of two `u32`), or 32.
    pub fn alignment(&self) -> Result<usize> {
        match self.get("general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(GgufValue::U32(a)) if a.is_power_of_two() => Ok(*a as usize),
            Some(v) => Err(Error::invalid(
                "general.alignment",
                format!("{v:?}"),
                "a u32 power of two",
            )),
        }
    }

    /// The file's bytes (GGUF v3). Tensor names must be unique and each tensor's data
    /// the length its type and shape give.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let align = self.alignment()?;
        let mut seen = std::collections::HashSet::new();
        for t in &self.tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(Error::invalid("tensor name", &t.name, "unique names"));
            }
            // Re-check what `GgufTensor::new` checks: the fields are public.
            check_tensor(&t.name, &t.shape, t.ty, t.data.len())?;
        }
        let mut keys = std::collections::HashSet::new();
        for (k, _) in &self.metadata {
            if !keys.insert(k.as_str()) {
                return Err(Error::invalid("metadata key", k, "unique keys"));
            }
        }
        let infos: Vec<TensorInfo<'_>> = self
            .tensors
            .iter()
            .map(|t| TensorInfo {
                name: &t.name,
                shape: &t.shape,
                ty: t.ty,
                len: t.data.len(),
            })
            .collect();
        let mut out = Out(header(&self.metadata, &infos, align));
        let offset = infos
            .iter()
            .fold(0, |o, t| (o + t.len).next_multiple_of(align));
        out.0.reserve(offset);
        for t in &self.tensors {
            out.0.extend_from_slice(&t.data);
            out.pad(align);
        }
        Ok(out.0)
    }

    /// Parses a GGUF v3 file's bytes; `source_name` names them in errors.
    pub fn from_bytes(bytes: &[u8], source_name: &str) -> Result<Gguf> {
        let mut r = In {
            bytes,
            at: 0,
            source: source_name,
        };
        if r.take(4).ok() != Some(MAGIC.as_slice()) {
            return Err(r.bad("not a GGUF file (no `GGUF` magic)"));
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(r.bad(format!("GGUF version {version}; slimnn reads version 3")));
        }
        // A tensor info takes at least 8 (name) + 4 + 4 + 8 bytes; a key-value 8 + 4 + 1.
        let n_tensors = r.count("tensor", 24)?;
        let n_kv = r.count("key-value", 13)?;
        let mut g = Gguf::new();
        let mut keys = std::collections::HashSet::new();
        for _ in 0..n_kv {
            let k = r.str()?;
            let v = r.value()?;
            if !keys.insert(k.clone()) {
                return Err(r.bad(format!("duplicate key `{k}`")));
            }
            g.metadata.push((k, v));
        }
        let align = g.alignment().map_err(|e| r.bad(e.to_string()))?;
        let mut infos = Vec::with_capacity(n_tensors);
        let mut names = std::collections::HashSet::new();
        for _ in 0..n_tensors {
            let name = r.str()?;
            if !names.insert(name.clone()) {
                return Err(r.bad(format!("duplicate tensor `{name}`")));
            }
            let n_dims = r.u32()? as usize;
            if n_dims > MAX_DIMS {
                return Err(r.bad(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut shape = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                let d = r.u64()?;
                shape.push(
                    usize::try_from(d).map_err(|_| r.bad(format!("dimension {d} of `{name}`")))?,
                );
            }
            shape.reverse();
            let id = r.u32()?;
            let ty = GgufType::from_id(id).ok_or_else(|| {
                r.bad(format!(
                    "tensor `{name}` has ggml type {id}, which slimnn does not read \
                     (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)"
                ))
            })?;
            let offset = r.u64()?;
            let len = ty
                .data_len(&shape)
                .map_err(|e| r.bad(format!("tensor `{name}` {shape:?}: {e}")))?;
            if !offset.is_multiple_of(align as u64) {
                return Err(r.bad(format!(
                    "tensor `{name}` offset {offset} is not aligned to {align}"
                )));
            }
            infos.push((name, shape, ty, offset, len));
        }
        let data_start = r.at.next_multiple_of(align);
        if data_start > bytes.len() && !infos.is_empty() {
            return Err(r.bad("truncated before the tensor data"));
        }
        let data = bytes.get(data_start..).unwrap_or(&[]);
        // Tensor data must lie in the file without overlap, so the tensors together
        // copy at most the file's size.
        let mut spans: Vec<(u64, u64)> = infos
            .iter()
            .map(|(_, _, _, off, len)| (*off, off.saturating_add(*len as u64)))
            .collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(r.bad("tensor data overlap"));
            }
        }
        for (name, shape, ty, offset, len) in infos {
            let range = usize::try_from(offset)
                .ok()
                .and_then(|o| Some(o..o.checked_add(len)?))
                .filter(|range| range.end <= data.len())
                .ok_or_else(|| {
                    r.bad(format!(
                        "tensor `{name}` data ({len} bytes at offset {offset}) lies beyond \
                         the file's {} bytes of data",
                        data.len()
                    ))
                })?;
            g.tensors.push(GgufTensor {
                name,
                shape,
                ty,
                data: data[range].to_vec(),
            });
        }
        Ok(g)
    }

    /// Reads a GGUF file (a regular file only, see [`Model::load`](crate::Model::load)).
    pub fn read(path: impl AsRef<Path>) -> Result<Gguf> {
        let path = path.as_ref();
        let bytes = super::read_regular(path)?;
        Gguf::from_bytes(&bytes, &path.display().to_string())
    }

    /// Writes the file atomically (a temporary file renamed into place: never a
    /// half-written file).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        super::write_atomically(path, |tmp| {
            std::fs::write(tmp, &bytes).map_err(|e| Error::io(tmp, e))
        })
    }
}
