//! Little-endian reading and writing of the encoded formats and the compressed model
//! file. Every length read from the input is checked against the bytes that remain
//! before anything is allocated.

use crate::error::{Error, Result};
use crate::kernels::quant::{pack_codes, unpack_codes};

/// Tensors of more elements than this are refused (2⁴⁰: far above any real layer, far
/// below what would overflow the size arithmetic).
const MAX_ELEMENTS: usize = 1 << 40;

/// A cursor over untrusted bytes (the encoded formats and the compressed model file)
/// that turns every violation into an [`Error::InvalidFormat`] naming the format, the
/// source and the byte offset, instead of reading past the end or allocating more than
/// the input could hold.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    format: &'static str,
    source: &'a str,
    /// Where `bytes` start in the file, for the offsets errors give.
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `bytes` in `format`, from an unnamed source.
    pub(crate) fn new(bytes: &'a [u8], format: &'static str) -> Self {
        Reader::at(bytes, format, "<bytes>", 0)
    }

    /// A reader of `bytes` in `format` from `source`, which start at byte `base` of it.
    pub(crate) fn at(bytes: &'a [u8], format: &'static str, source: &'a str, base: usize) -> Self {
        Reader {
            bytes,
            pos: 0,
            format,
            source,
            base,
        }
    }

    /// An [`Error::InvalidFormat`] at the position reached.
    pub(crate) fn error(&self, reason: impl Into<String>) -> Error {
        Error::InvalidFormat {
            format: self.format,
            source_name: self.source.to_string(),
            reason: format!("{} (at byte {})", reason.into(), self.base + self.pos),
        }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }

    /// The position reached, in bytes from the start.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Moves to `pos` (at most the end).
    pub(crate) fn skip_to(&mut self, pos: usize) {
        self.pos = pos.min(self.bytes.len());
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(format!("{n} bytes needed, {} left", self.remaining())));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next `count` items of `size` bytes each, if that many bytes remain.
    pub(crate) fn take_items(&mut self, count: usize, size: usize, what: &str) -> Result<&'a [u8]> {
        match count.checked_mul(size) {
            Some(n) if n <= self.remaining() => self.take(n),
            _ => Err(self.error(format!(
                "{what}: {count} items of {size} bytes do not fit in the {} bytes left",
                self.remaining()
            ))),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// Runs a parser that reads from the front of a slice and advances it (the
    /// `read_from` of the [`encode`](crate::encode) formats).
    pub(crate) fn parse<T>(&mut self, read: impl FnOnce(&mut &'a [u8]) -> Result<T>) -> Result<T> {
        let mut rest = self.rest();
        let before = rest.len();
        let value = read(&mut rest)?;
        self.pos += before - rest.len();
        Ok(value)
    }

    /// A count (u64) of items of `item_bytes` bytes each that must still fit in the input.
    pub(crate) fn count(&mut self, item_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(item_bytes.max(1)) <= self.remaining());
        fits.ok_or_else(|| self.error(format!("a count of {n} does not fit in the input")))
    }

    /// A plain value (u64) that must fit a `usize` (sizes, ranks, axes).
    pub(crate) fn usize(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.error(format!("{n} is too large")))
    }

    /// A length-prefixed UTF-8 string.
    pub(crate) fn str(&mut self) -> Result<String> {
        let n = self.count(1)?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.error("a string is not UTF-8"))
    }

    /// A length-prefixed run of f32 values.
    pub(crate) fn f32s(&mut self) -> Result<Vec<f32>> {
        let n = self.count(4)?;
        Ok(f32s_le(self.take(4 * n)?))
    }

    /// A shape (rank byte, then u64 dimensions) whose element count is at most
    /// [`MAX_ELEMENTS`].
    pub(crate) fn dims(&mut self) -> Result<Vec<usize>> {
        let ndim = self.u8()? as usize;
        let shape = (0..ndim)
            .map(|_| self.usize())
            .collect::<Result<Vec<_>>>()?;
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n.is_none_or(|n| n > MAX_ELEMENTS) {
            return Err(self.error(format!("shape {shape:?} is too large")));
        }
        Ok(shape)
    }

    /// `count` u32 values.
    pub(crate) fn u32s(&mut self, count: usize, what: &str) -> Result<Vec<u32>> {
        let b = self.take_items(count, 4, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// `count` f32 values, each of which must be finite.
    pub(crate) fn finite_f32s(&mut self, count: usize, what: &str) -> Result<Vec<f32>> {
        let values = f32s_le(self.take_items(count, 4, what)?);
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(self.error(format!("{what}: non-finite value {} at {i}", values[i])));
        }
        Ok(values)
    }

    /// `count` codes of `bits` ≤ 8 bits, packed as [`put_packed`] writes them; the unused
    /// bits of the last byte must be 0.
    pub(crate) fn packed(&mut self, count: usize, bits: u8, what: &str) -> Result<Vec<u8>> {
        let n_bytes = count
            .checked_mul(bits as usize)
            .map(|b| b.div_ceil(8))
            .ok_or_else(|| self.error(format!("{what}: {count} codes overflow")))?;
        let bytes = self.take_items(n_bytes, 1, what)?;
        let mut codes = vec![0u8; count];
        if bits > 0 {
            let tail = (count * bits as usize) % 8;
            if let Some(&last) = bytes.last()
                && tail != 0
                && last >> tail != 0
            {
                return Err(self.error(format!("{what}: padding bits are set")));
            }
            unpack_codes(bytes, bits, 0, &mut codes);
        }
        Ok(codes)
    }
}

/// Little-endian f32 values of `raw` (a multiple of 4 bytes).
fn f32s_le(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Appends little-endian fields to a buffer (the compressed model file's writer; the
/// encoded formats append with the `put_*` functions).
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) bytes: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        put_u32(&mut self.bytes, v);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        put_u64(&mut self.bytes, v);
    }

    pub(crate) fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }

    pub(crate) fn f64(&mut self, v: f64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// A length-prefixed string ([`Reader::str`]).
    pub(crate) fn str(&mut self, s: &str) {
        self.usize(s.len());
        self.bytes.extend_from_slice(s.as_bytes());
    }

    /// A length-prefixed run of f32 values ([`Reader::f32s`]).
    pub(crate) fn f32s(&mut self, v: &[f32]) {
        self.usize(v.len());
        put_f32s(&mut self.bytes, v);
    }

    /// A shape ([`Reader::dims`]).
    pub(crate) fn dims(&mut self, shape: &[usize]) {
        self.u8(shape.len() as u8);
        for &d in shape {
            self.usize(d);
        }
    }
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32s(out: &mut Vec<u8>, v: &[u32]) {
    out.reserve(4 * v.len());
    for &x in v {
        put_u32(out, x);
    }
}

pub(crate) fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    out.reserve(4 * v.len());
    for &x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// Codes below 2^`bits` (`bits` ≤ 8; 0 writes nothing) as the crate's little-endian bit
/// stream (see [`crate::quant::PackedCodes`]): `ceil(len·bits/8)` bytes.
pub(crate) fn put_packed(out: &mut Vec<u8>, codes: &[u8], bits: u8) {
    if bits == 0 {
        return;
    }
    let start = out.len();
    out.resize(start + (codes.len() * bits as usize).div_ceil(8), 0);
    pack_codes(codes, bits, &mut out[start..]);
}
