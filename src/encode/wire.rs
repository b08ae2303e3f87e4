//! Little-endian reading and writing of the encoded formats. Every length read from the
//! input is checked against the bytes that remain before anything is allocated.

use crate::error::{Error, Result};
use crate::kernels::quant::{pack_codes, unpack_codes};

/// A cursor over untrusted bytes that turns every violation into an
/// [`Error::InvalidFormat`] naming the format.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    format: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], format: &'static str) -> Self {
        Reader {
            rest: bytes,
            format,
        }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// An [`Error::InvalidFormat`] of this reader's format.
    pub(crate) fn bad(&self, reason: impl Into<String>) -> Error {
        Error::InvalidFormat {
            format: self.format,
            source_name: "<bytes>".into(),
            reason: reason.into(),
        }
    }

    /// The next `count` items of `size` bytes each, if that many bytes remain.
    pub(crate) fn take(&mut self, count: usize, size: usize, what: &str) -> Result<&'a [u8]> {
        let n = count
            .checked_mul(size)
            .filter(|&n| n <= self.rest.len())
            .ok_or_else(|| {
                self.bad(format!(
                    "{what}: {count} items of {size} bytes do not fit in the {} bytes left",
                    self.rest.len()
                ))
            })?;
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, 1, what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(1, 4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(1, 8, what)?);
        Ok(u64::from_le_bytes(a))
    }

    /// A count or dimension stored as u64 that must also fit `usize`.
    pub(crate) fn len64(&mut self, what: &str) -> Result<usize> {
        let v = self.u64(what)?;
        usize::try_from(v).map_err(|_| self.bad(format!("{what} {v} does not fit usize")))
    }

    pub(crate) fn u32s(&mut self, count: usize, what: &str) -> Result<Vec<u32>> {
        let b = self.take(count, 4, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// `count` f32 values, each of which must be finite.
    pub(crate) fn finite_f32s(&mut self, count: usize, what: &str) -> Result<Vec<f32>> {
        let b = self.take(count, 4, what)?;
        let values: Vec<f32> = b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(self.bad(format!("{what}: non-finite value {} at {i}", values[i])));
        }
        Ok(values)
    }

    /// `count` codes of `bits` ≤ 8 bits, packed as [`put_packed`] writes them; the unused
    /// bits of the last byte must be 0.
    pub(crate) fn packed(&mut self, count: usize, bits: u8, what: &str) -> Result<Vec<u8>> {
        let n_bytes = count
            .checked_mul(bits as usize)
            .map(|b| b.div_ceil(8))
            .ok_or_else(|| self.bad(format!("{what}: {count} codes overflow")))?;
        let bytes = self.take(n_bytes, 1, what)?;
        let mut codes = vec![0u8; count];
        if bits > 0 {
            let tail = (count * bits as usize) % 8;
            if let Some(&last) = bytes.last()
                && tail != 0
                && last >> tail != 0
            {
                return Err(self.bad(format!("{what}: padding bits are set")));
            }
            unpack_codes(bytes, bits, 0, &mut codes);
        }
        Ok(codes)
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
