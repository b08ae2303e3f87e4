//! [`PackedCodes`]: integer codes of 1 to 8 bits, packed densely.

use crate::error::{Error, Result};
use crate::kernels::quant::{pack_codes, unpack_codes};

/// Codes of `bits` bits each (1 ≤ bits ≤ 8), packed as a little-endian bit stream:
/// code `i` occupies bits `i·bits .. (i+1)·bits`, least significant bit first. So 8-bit
/// codes are plain bytes, 4-bit codes go two per byte (element `2j` in the low nibble
/// of byte `j`), 2-bit four per byte, 1-bit eight per byte, and 3-, 5-, 6- and 7-bit
/// codes cross byte boundaries without padding. Unused bits of the last byte are 0.
///
/// ```
/// use slimnn::quant::PackedCodes;
///
/// let codes = [1u8, 15, 0, 7, 9];
/// let packed = PackedCodes::pack(&codes, 4)?;
/// assert_eq!(packed.bytes(), &[0xF1, 0x70, 0x09]);
/// assert_eq!(packed.unpack(), codes);
/// assert_eq!(packed.storage_bits(), 20);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PackedCodes {
    bits: u8,
    len: usize,
    bytes: Vec<u8>,
}

impl PackedCodes {
    /// Packs `codes`, each of which must fit in `bits` bits.
    pub fn pack(codes: &[u8], bits: u8) -> Result<PackedCodes> {
        check_bits(bits)?;
        if bits < 8 {
            let limit = 1u16 << bits;
            if let Some((i, &c)) = codes.iter().enumerate().find(|&(_, &c)| c as u16 >= limit) {
                return Err(Error::invalid(
                    "codes",
                    format!("{c} at index {i}"),
                    format!("codes below 2^{bits} = {limit}"),
                ));
            }
        }
        let mut bytes = vec![0u8; byte_len(codes.len(), bits)];
        pack_codes(codes, bits, &mut bytes);
        Ok(PackedCodes {
            bits,
            len: codes.len(),
            bytes,
        })
    }

    /// Codes from their packed bytes, as [`PackedCodes::bytes`] returns them.
    pub fn from_bytes(bytes: Vec<u8>, bits: u8, len: usize) -> Result<PackedCodes> {
        check_bits(bits)?;
        let need = len
            .checked_mul(bits as usize)
            .map(|b| b.div_ceil(8))
            .ok_or_else(|| Error::invalid("len", len, "a code count whose bit size fits usize"))?;
        if bytes.len() != need {
            return Err(Error::invalid(
                "bytes",
                format!("{} bytes", bytes.len()),
                format!("{need} bytes for {len} codes of {bits} bits"),
            ));
        }
        let tail = (len * bits as usize) % 8;
        if tail != 0 && bytes[need - 1] >> tail != 0 {
            return Err(Error::invalid(
                "bytes",
                "set padding bits",
                "unused bits of the last byte clear",
            ));
        }
        Ok(PackedCodes { bits, len, bytes })
    }

    /// Codes already packed by the crate's own encoders (in range by construction).
    pub(crate) fn from_packed(bytes: Vec<u8>, bits: u8, len: usize) -> PackedCodes {
        debug_assert_eq!(bytes.len(), byte_len(len, bits));
        PackedCodes { bits, len, bytes }
    }

    /// Bits per code.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The number of codes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no codes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The exact storage of the codes: `len · bits`.
    pub fn storage_bits(&self) -> usize {
        self.len * self.bits as usize
    }

    /// The largest code (0 when there are none), computed on the packed bytes.
    pub fn max_code(&self) -> u8 {
        use rayon::prelude::*;
        let chunk_max = |bytes: &[u8]| -> u8 {
            match self.bits {
                8 => bytes.iter().copied().max().unwrap_or(0),
                4 => bytes
                    .iter()
                    .map(|b| (b & 0x0F).max(b >> 4))
                    .max()
                    .unwrap_or(0),
                _ => 0,
            }
        };
        match self.bits {
            // Unused bits of the last byte are 0, so they cannot raise the maximum.
            8 | 4 => self
                .bytes
                .par_chunks(1 << 16)
                .map(chunk_max)
                .max()
                .unwrap_or(0),
            _ => self.unpack().into_iter().max().unwrap_or(0),
        }
    }

    /// All codes, one per byte.
    pub fn unpack(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        self.unpack_into(0, &mut out);
        out
    }

    /// Codes `start .. start + out.len()` into `out`.
    ///
    /// # Panics
    /// If the range runs past the end.
    pub fn unpack_into(&self, start: usize, out: &mut [u8]) {
        assert!(
            start
                .checked_add(out.len())
                .is_some_and(|end| end <= self.len),
            "code range out of bounds"
        );
        unpack_codes(&self.bytes, self.bits, start, out);
    }
}

fn byte_len(len: usize, bits: u8) -> usize {
    (len * bits as usize).div_ceil(8)
}

pub(crate) fn check_bits(bits: u8) -> Result<()> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        Err(Error::invalid("bits", bits, "1 to 8 bits per code"))
    }
}
