//! Little-endian writing and bounds-checked reading of the compressed file's fields.

use crate::error::{Error, Result};

/// Appends little-endian fields to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) bytes: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }

    pub(crate) fn f64(&mut self, v: f64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn str(&mut self, s: &str) {
        self.usize(s.len());
        self.bytes.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn f32s(&mut self, v: &[f32]) {
        self.usize(v.len());
        for x in v {
            self.bytes.extend_from_slice(&x.to_le_bytes());
        }
    }

    pub(crate) fn dims(&mut self, shape: &[usize]) {
        self.u8(shape.len() as u8);
        for &d in shape {
            self.usize(d);
        }
    }
}

/// Reads fields back, failing with [`Error::InvalidFormat`] instead of reading past the
/// end or allocating more than the input could hold.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    source: &'a str,
    /// Where `bytes` start in the file, for the offsets errors give.
    base: usize,
}

/// Tensors of more elements than this are refused (2⁴⁰: far above any real layer, far
/// below what would overflow the size arithmetic).
const MAX_ELEMENTS: usize = 1 << 40;

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], source: &'a str) -> Self {
        Reader {
            bytes,
            pos: 0,
            source,
            base: 0,
        }
    }

    /// A reader of `bytes`, which start at byte `base` of the file.
    pub(crate) fn at(bytes: &'a [u8], source: &'a str, base: usize) -> Self {
        Reader {
            base,
            ..Reader::new(bytes, source)
        }
    }

    pub(crate) fn error(&self, reason: impl Into<String>) -> Error {
        Error::InvalidFormat {
            format: super::FORMAT,
            source_name: self.source.to_string(),
            reason: format!("{} (at byte {})", reason.into(), self.base + self.pos),
        }
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

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(format!("{n} bytes needed, {} left", self.remaining())));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// Runs a parser that reads from the front of a slice and advances it (the
    /// `read_from` of the [`encode`](crate::encode) formats).
    pub(crate) fn parse<T>(&mut self, read: impl FnOnce(&mut &'a [u8]) -> Result<T>) -> Result<T> {
        let mut rest = &self.bytes[self.pos..];
        let before = rest.len();
        let value = read(&mut rest)?;
        self.pos += before - rest.len();
        Ok(value)
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

    /// A count of items of `item_bytes` bytes each that must still fit in the input.
    pub(crate) fn count(&mut self, item_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(item_bytes.max(1)) <= self.remaining());
        fits.ok_or_else(|| self.error(format!("a count of {n} does not fit in the input")))
    }

    /// A plain value that must fit a `usize` (sizes, ranks, axes).
    pub(crate) fn usize(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.error(format!("{n} is too large")))
    }

    pub(crate) fn str(&mut self) -> Result<String> {
        let n = self.count(1)?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.error("a string is not UTF-8"))
    }

    pub(crate) fn f32s(&mut self) -> Result<Vec<f32>> {
        let n = self.count(4)?;
        let raw = self.take(4 * n)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// A shape whose element count is at most [`MAX_ELEMENTS`].
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
}
