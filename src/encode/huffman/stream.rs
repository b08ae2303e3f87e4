//! [`BitStream`], and the encoding and table-driven decoding loops.

use crate::encode::wire::{Reader, put_u64};
use crate::error::{Error, Result};

use super::MAX_CODE_LEN;

/// Coded bits, MSB-first: bit `i` of the stream is bit `7 − i % 8` of byte `i / 8`. The
/// unused low bits of the last byte are 0.
///
/// Storage: the bit length (u64), then the `ceil(bit_len/8)` bytes: `64 + bit_len` bits.
///
/// ```
/// use slimnn::encode::huffman::BitStream;
///
/// let s = BitStream::from_parts(vec![0b1011_0000], 4)?;
/// let mut bytes = Vec::new();
/// s.write_to(&mut bytes);
/// assert_eq!(bytes.len(), s.storage_bits().div_ceil(8));
/// assert_eq!(BitStream::read_from(&mut &bytes[..])?, s);
/// assert!(BitStream::from_parts(vec![0b1011_1000], 4).is_err()); // a padding bit is set
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BitStream {
    bytes: Vec<u8>,
    bit_len: u64,
}

const FORMAT: &str = "bit stream";

impl BitStream {
    /// A stream of `bit_len` bits held in `bytes`.
    ///
    /// Fails with [`Error::InvalidFormat`] unless `bytes` has exactly `ceil(bit_len/8)`
    /// bytes and the unused bits of the last one are 0.
    pub fn from_parts(bytes: Vec<u8>, bit_len: u64) -> Result<BitStream> {
        check(&bytes, bit_len).map_err(|reason| Error::InvalidFormat {
            format: FORMAT,
            source_name: "<bytes>".into(),
            reason,
        })?;
        Ok(BitStream { bytes, bit_len })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The number of bits.
    pub fn bit_len(&self) -> u64 {
        self.bit_len
    }

    /// The exact storage of [`BitStream::write_to`]: `64 + bit_len` bits.
    pub fn storage_bits(&self) -> usize {
        64 + self.bit_len as usize
    }

    /// Appends the bit length (u64) and the bytes.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        put_u64(out, self.bit_len);
        out.extend_from_slice(&self.bytes);
    }

    /// Parses a stream written by [`BitStream::write_to`] from the front of `bytes` and
    /// advances `bytes` past it. Any inconsistency is an [`Error::InvalidFormat`].
    pub fn read_from(bytes: &mut &[u8]) -> Result<BitStream> {
        let mut r = Reader::new(bytes, FORMAT);
        let bit_len = r.u64()?;
        let n = usize::try_from(bit_len.div_ceil(8))
            .map_err(|_| r.error(format!("{bit_len} bits do not fit usize")))?;
        let data = r.take_items(n, 1, "bits")?.to_vec();
        check(&data, bit_len).map_err(|reason| r.error(reason))?;
        *bytes = r.rest();
        Ok(BitStream {
            bytes: data,
            bit_len,
        })
    }
}

fn check(bytes: &[u8], bit_len: u64) -> Result<(), String> {
    if bytes.len() as u64 != bit_len.div_ceil(8) {
        return Err(format!(
            "{} bytes for {bit_len} bits, not {}",
            bytes.len(),
            bit_len.div_ceil(8)
        ));
    }
    let used = (bit_len % 8) as u32;
    if let Some(&last) = bytes.last()
        && used != 0
        && last << used != 0
    {
        return Err("padding bits are set".into());
    }
    Ok(())
}

/// Codes `symbols` with the per-symbol table `codes` (`code << 8 | length`), or returns
/// the index of the first symbol without a code.
pub(super) fn encode(codes: &[u32], max_len: u8, symbols: &[u16]) -> Result<BitStream, usize> {
    let mut out = Vec::with_capacity((symbols.len() * max_len as usize).div_ceil(8) + 8);
    // The pending bits are the low `n` bits of `acc` (n < 32 between symbols).
    let (mut acc, mut n) = (0u64, 0u32);
    for (i, &s) in symbols.iter().enumerate() {
        let e = match codes.get(s as usize) {
            Some(&e) if e & 0xFF != 0 => e,
            _ => return Err(i),
        };
        let len = e & 0xFF;
        acc = acc << len | (e >> 8) as u64;
        n += len;
        if n >= 32 {
            n -= 32;
            out.extend_from_slice(&((acc >> n) as u32).to_be_bytes());
        }
    }
    let bit_len = out.len() as u64 * 8 + n as u64;
    if n > 0 {
        let tail = (acc << (64 - n)).to_be_bytes();
        out.extend_from_slice(&tail[..n.div_ceil(8) as usize]);
    }
    Ok(BitStream {
        bytes: out,
        bit_len,
    })
}

/// Bits peeked per table lookup: codes up to this length decode in one lookup. 2^11
/// entries of 4 bytes (8 KiB) stay in L1.
const TABLE_BITS: u32 = 11;

/// Decoding tables of a canonical code.
#[derive(Clone)]
pub(super) struct Decoder {
    /// Indexed by the next `TABLE_BITS` bits: `symbol << 8 | length` for codes of up to
    /// `TABLE_BITS` bits, 0 where the bits start a longer code or no code.
    table: Box<[u32; 1 << TABLE_BITS]>,
    /// Per length: the first canonical code, the number of codes, and where its symbols
    /// start in `sorted`.
    first: [u32; MAX_CODE_LEN as usize + 1],
    count: [u32; MAX_CODE_LEN as usize + 1],
    start: [u32; MAX_CODE_LEN as usize + 1],
    /// The symbols with a code, by (length, symbol): canonical order.
    sorted: Vec<u16>,
    max_len: u32,
}

impl Decoder {
    pub(super) fn new(
        lengths: &[u8],
        codes: &[u32],
        first: [u32; MAX_CODE_LEN as usize + 1],
        count: [u32; MAX_CODE_LEN as usize + 1],
    ) -> Decoder {
        let mut table = Box::new([0u32; 1 << TABLE_BITS]);
        let mut start = [0u32; MAX_CODE_LEN as usize + 1];
        for l in 1..=MAX_CODE_LEN as usize {
            start[l] = start[l - 1] + count[l - 1];
        }
        let mut sorted = vec![0u16; count.iter().sum::<u32>() as usize];
        let mut next = start;
        for (s, (&l, &e)) in lengths.iter().zip(codes).enumerate() {
            if l == 0 {
                continue;
            }
            sorted[next[l as usize] as usize] = s as u16;
            next[l as usize] += 1;
            let l = l as u32;
            if l <= TABLE_BITS {
                // Every TABLE_BITS-bit window that starts with this code.
                let lo = ((e >> 8) << (TABLE_BITS - l)) as usize;
                table[lo..lo + (1 << (TABLE_BITS - l))].fill((s as u32) << 8 | l);
            }
        }
        Decoder {
            table,
            first,
            count,
            start,
            sorted,
            max_len: lengths.iter().copied().max().unwrap_or(0) as u32,
        }
    }

    pub(super) fn decode(&self, stream: &BitStream, count: usize) -> Result<Vec<u16>> {
        let bad = |reason: String| Error::InvalidFormat {
            format: FORMAT,
            source_name: "<bytes>".into(),
            reason,
        };
        if count as u64 > stream.bit_len {
            return Err(bad(format!(
                "{count} symbols need at least {count} bits, the stream has {}",
                stream.bit_len
            )));
        }
        if count > 0 && self.max_len == 0 {
            return Err(bad("the code has no symbols".into()));
        }
        let mut out = vec![0u16; count];
        let mut bits = BitReader::new(&stream.bytes);
        let invalid = |bits: &BitReader| bad(format!("no code at bit {}", bits.consumed()));
        // A refill leaves at least 56 bits: three codes of up to 16 bits.
        let mut triples = out.chunks_exact_mut(3);
        for t in &mut triples {
            bits.refill();
            for o in t {
                *o = self.decode_one(&mut bits).ok_or_else(|| invalid(&bits))?;
            }
        }
        bits.refill();
        for o in triples.into_remainder() {
            *o = self.decode_one(&mut bits).ok_or_else(|| invalid(&bits))?;
        }
        if bits.consumed() != stream.bit_len {
            return Err(bad(format!(
                "{count} symbols take {} bits, the stream has {}",
                bits.consumed(),
                stream.bit_len
            )));
        }
        Ok(out)
    }

    /// The next symbol; needs at least `MAX_CODE_LEN` bits in the buffer.
    #[inline(always)]
    fn decode_one(&self, bits: &mut BitReader<'_>) -> Option<u16> {
        let e = self.table[(bits.buf >> (64 - TABLE_BITS)) as usize];
        let len = e & 0xFF;
        if len == 0 {
            return self.decode_long(bits);
        }
        bits.consume(len);
        Some((e >> 8) as u16)
    }

    /// A code longer than `TABLE_BITS`: canonical codes of length `l` are the
    /// consecutive values `first[l] .. first[l] + count[l]` of the next `l` bits.
    #[cold]
    fn decode_long(&self, bits: &mut BitReader<'_>) -> Option<u16> {
        let window = (bits.buf >> (64 - MAX_CODE_LEN as u32)) as u32;
        for l in TABLE_BITS + 1..=self.max_len {
            let code = window >> (MAX_CODE_LEN as u32 - l);
            let k = code.wrapping_sub(self.first[l as usize]);
            if k < self.count[l as usize] {
                bits.consume(l);
                return self
                    .sorted
                    .get((self.start[l as usize] + k) as usize)
                    .copied();
            }
        }
        None
    }
}

/// Reads an MSB-first stream through a 64-bit buffer refilled 8 bytes at a time (bytes
/// past the end read as 0; the caller checks how many bits were consumed).
struct BitReader<'a> {
    bytes: &'a [u8],
    /// The next byte to load.
    pos: usize,
    /// The valid bits are the top `n` of `buf`.
    buf: u64,
    n: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader {
            bytes,
            pos: 0,
            buf: 0,
            n: 0,
        }
    }

    /// Tops the buffer up to at least 56 valid bits, loading whole bytes: the bits below
    /// the valid ones hold the stream's next bits (or 0), so OR-ing them in again is safe.
    #[inline(always)]
    fn refill(&mut self) {
        let word = match self.bytes.get(self.pos..self.pos + 8) {
            Some(b) => u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            None => {
                let rest = self.bytes.get(self.pos..).unwrap_or(&[]);
                let mut w = [0u8; 8];
                w[..rest.len()].copy_from_slice(rest);
                u64::from_be_bytes(w)
            }
        };
        self.buf |= word >> self.n;
        self.pos += (63 - self.n as usize) >> 3;
        self.n |= 56;
    }

    #[inline(always)]
    fn consume(&mut self, len: u32) {
        self.buf <<= len;
        self.n -= len;
    }

    /// Bits consumed so far.
    fn consumed(&self) -> u64 {
        self.pos as u64 * 8 - self.n as u64
    }
}
