//! Canonical Huffman coding of quantization codes and index gaps (Deep Compression's
//! last stage), length-limited to [`MAX_CODE_LEN`] bits, with table-driven decoding.
//!
//! Symbols are `u16` (an alphabet of up to 65,536). [`HuffmanCode::from_counts`] builds
//! optimal code lengths — Huffman's by the two-queue method, or, when those would exceed
//! [`MAX_CODE_LEN`], the optimal lengths under that limit by package-merge (Larmore &
//! Hirschberg) — and assigns canonical codes (as DEFLATE does: shorter codes first, then
//! by symbol), so the lengths alone define the code and are all a file stores.
//!
//! The bit stream is MSB-first: a code's first bit is the most significant bit of its
//! byte. Decoding peeks 11 bits into a table that gives the symbol and length of every
//! code of up to 11 bits; longer codes fall back to a canonical search over the lengths
//! 12 to 16.
//!
//! ```
//! use slimnn::encode::huffman::{HuffmanCode, entropy_bits, symbol_counts};
//!
//! let symbols: Vec<u16> = (0..1000u32).map(|i| [0, 0, 0, 0, 1, 1, 2, 3][i as usize % 8]).collect();
//! let counts = symbol_counts(&symbols);
//! let code = HuffmanCode::from_counts(&counts)?;
//! assert_eq!(code.lengths(), &[1, 2, 3, 3]);
//! let stream = code.encode(&symbols)?;
//! assert_eq!(stream.bit_len(), code.coded_bits(&counts)?);
//! assert_eq!(stream.bit_len() as f64, entropy_bits(&counts)); // a dyadic distribution
//! assert_eq!(code.decode(&stream, symbols.len())?, symbols);
//!
//! // The table is stored compactly and read back with validation.
//! let mut bytes = Vec::new();
//! code.write_to(&mut bytes);
//! assert_eq!(bytes.len() * 8, code.storage_bits());
//! assert_eq!(HuffmanCode::read_from(&mut &bytes[..])?, code);
//! # Ok::<(), slimnn::Error>(())
//! ```

mod lengths;
mod stream;

pub use stream::BitStream;

use std::fmt;

use super::wire::{Reader, put_u32};
use crate::error::{Error, Result};
use stream::Decoder;

/// The longest code [`HuffmanCode::from_counts`] builds and [`HuffmanCode::from_lengths`]
/// accepts. 16 bits suffice for the full alphabet of 65,536 symbols, keep every code
/// within one 64-bit refill of the decoder (three codes per refill), and cost little:
/// the limit only binds when a symbol is rarer than about 1/Fib(18) ≈ 1/4000 of the
/// total, where the extra bits are paid on rare symbols only.
pub const MAX_CODE_LEN: u8 = 16;

/// The largest alphabet: every `u16` symbol.
const MAX_ALPHABET: usize = 1 << 16;

/// A canonical prefix code over the symbols `0..alphabet_size()`; symbols with length 0
/// have no code. Built from counts or from code lengths; see the [module docs](self).
///
/// An alphabet with no used symbol gives an empty code: it encodes and decodes only
/// empty sequences. A single used symbol gets a 1-bit code.
#[derive(Clone)]
pub struct HuffmanCode {
    lengths: Vec<u8>,
    /// Per symbol: `code << 8 | length` (0 without a code).
    codes: Vec<u32>,
    decoder: Decoder,
}

impl HuffmanCode {
    /// The optimal code (at most [`MAX_CODE_LEN`] bits) for symbols seen `counts[s]`
    /// times; symbols with a zero count get no code.
    ///
    /// Fails with [`Error::InvalidParameter`] if there are more than 65,536 counts or
    /// their sum overflows u64.
    pub fn from_counts(counts: &[u64]) -> Result<HuffmanCode> {
        check_alphabet(counts.len())?;
        if counts
            .iter()
            .try_fold(0u64, |a, &c| a.checked_add(c))
            .is_none()
        {
            return Err(Error::invalid(
                "counts",
                "a sum above 2^64",
                "counts whose sum fits u64",
            ));
        }
        Ok(HuffmanCode::canonical(lengths::code_lengths(
            counts,
            MAX_CODE_LEN,
        )))
    }

    /// The canonical code with these code lengths (0 = no code), as
    /// [`HuffmanCode::lengths`] returns them.
    ///
    /// Fails with [`Error::InvalidFormat`] if a length exceeds [`MAX_CODE_LEN`], the
    /// lengths violate the Kraft inequality (Σ 2^−l > 1: no prefix code has them), or
    /// there are more than 65,536 of them.
    pub fn from_lengths(lengths: &[u8]) -> Result<HuffmanCode> {
        check_lengths(lengths).map_err(|reason| Error::InvalidFormat {
            format: TABLE_FORMAT,
            source_name: "<lengths>".into(),
            reason,
        })?;
        Ok(HuffmanCode::canonical(lengths.to_vec()))
    }

    /// Assigns canonical codes to valid lengths: within each length, consecutive codes in
    /// symbol order, each length's first code following the previous length's last.
    fn canonical(lengths: Vec<u8>) -> HuffmanCode {
        let mut per_len = [0u32; MAX_CODE_LEN as usize + 1];
        for &l in lengths.iter().filter(|&&l| l > 0) {
            per_len[l as usize] += 1;
        }
        let mut next = [0u32; MAX_CODE_LEN as usize + 1];
        for l in 1..=MAX_CODE_LEN as usize {
            next[l] = (next[l - 1] + per_len[l - 1]) << 1;
        }
        let first = next;
        let codes = lengths
            .iter()
            .map(|&l| {
                if l == 0 {
                    return 0;
                }
                let code = next[l as usize];
                next[l as usize] += 1;
                code << 8 | l as u32
            })
            .collect::<Vec<u32>>();
        let decoder = Decoder::new(&lengths, &codes, first, per_len);
        HuffmanCode {
            lengths,
            codes,
            decoder,
        }
    }

    /// The code length of every symbol (0 = no code).
    pub fn lengths(&self) -> &[u8] {
        &self.lengths
    }

    /// The number of symbols the code covers, with or without a code.
    pub fn alphabet_size(&self) -> usize {
        self.lengths.len()
    }

    /// The longest code length (0 for an empty code).
    pub fn max_len(&self) -> u8 {
        self.lengths.iter().copied().max().unwrap_or(0)
    }

    /// The code of `symbol` as `(bits, length)`, the bits right-aligned and read from the
    /// most significant one; `None` without a code.
    pub fn code(&self, symbol: u16) -> Option<(u16, u8)> {
        match self.codes.get(symbol as usize) {
            Some(&e) if e & 0xFF != 0 => Some(((e >> 8) as u16, e as u8)),
            _ => None,
        }
    }

    /// The bits of coding symbols seen `counts[s]` times: `Σ counts[s]·length[s]`
    /// (saturating at `u64::MAX`).
    ///
    /// Fails with [`Error::InvalidParameter`] if a symbol without a code has a non-zero
    /// count.
    pub fn coded_bits(&self, counts: &[u64]) -> Result<u64> {
        let mut bits = 0u64;
        for (s, &c) in counts.iter().enumerate().filter(|&(_, &c)| c > 0) {
            match self.lengths.get(s) {
                Some(&l) if l > 0 => bits = bits.saturating_add(c.saturating_mul(l as u64)),
                _ => {
                    return Err(Error::invalid(
                        "counts",
                        format!("{c} of symbol {s}"),
                        "counts only of symbols that have a code",
                    ));
                }
            }
        }
        Ok(bits)
    }

    /// Codes `symbols` into a bit stream.
    ///
    /// Fails with [`Error::InvalidParameter`] naming the first symbol without a code.
    pub fn encode(&self, symbols: &[u16]) -> Result<BitStream> {
        stream::encode(&self.codes, self.max_len(), symbols).map_err(|i| {
            Error::invalid(
                "symbols",
                format!("{} at index {i}", symbols[i]),
                "symbols that have a code",
            )
        })
    }

    /// Decodes exactly `count` symbols, which must use the whole stream.
    ///
    /// Fails with [`Error::InvalidFormat`] if the stream holds a bit pattern that is no
    /// code, ends before `count` symbols, or has bits left after them. `count` is checked
    /// against the stream's length (every code has at least 1 bit) before the output is
    /// allocated.
    pub fn decode(&self, stream: &BitStream, count: usize) -> Result<Vec<u16>> {
        self.decoder.decode(stream, count)
    }

    /// The exact size of the table as [`HuffmanCode::write_to`] stores it, in bits (a
    /// multiple of 8).
    pub fn storage_bits(&self) -> usize {
        8 * (4 + length_runs(&self.lengths).map(Run::bytes).sum::<usize>())
    }

    /// Appends the table: the alphabet size (u32), then the lengths: a byte `0..=16` is
    /// the length of the next symbol; the byte 17 followed by a u16 `r ≥ 1` is a run of
    /// `r` symbols without a code. (32 symbols cost 36 bytes; a 65,536-symbol alphabet
    /// with 100 scattered used symbols, about 4 + 100 + 3·101 bytes.)
    pub fn write_to(&self, out: &mut Vec<u8>) {
        put_u32(out, self.lengths.len() as u32);
        for run in length_runs(&self.lengths) {
            match run {
                Run::Length(l) => out.push(l),
                Run::Unused(r) => {
                    out.push(UNUSED_RUN);
                    out.extend_from_slice(&r.to_le_bytes());
                }
            }
        }
    }

    /// Parses a table written by [`HuffmanCode::write_to`] from the front of `bytes` and
    /// advances `bytes` past it. Any inconsistency (including lengths that are no prefix
    /// code) is an [`Error::InvalidFormat`].
    pub fn read_from(bytes: &mut &[u8]) -> Result<HuffmanCode> {
        let mut r = Reader::new(bytes, TABLE_FORMAT);
        let alphabet = r.u32()? as usize;
        if alphabet > MAX_ALPHABET {
            return Err(r.error(format!("alphabet of {alphabet} symbols exceeds 65536")));
        }
        let mut lengths = Vec::with_capacity(alphabet);
        while lengths.len() < alphabet {
            match r.u8()? {
                l if l <= MAX_CODE_LEN => lengths.push(l),
                UNUSED_RUN => {
                    let b = r.take_items(1, 2, "run")?;
                    let run = u16::from_le_bytes([b[0], b[1]]) as usize;
                    if run == 0 || lengths.len() + run > alphabet {
                        return Err(r.error(format!(
                            "a run of {run} unused symbols at symbol {} of {alphabet}",
                            lengths.len()
                        )));
                    }
                    lengths.resize(lengths.len() + run, 0);
                }
                other => return Err(r.error(format!("byte {other} is no code length"))),
            }
        }
        check_lengths(&lengths).map_err(|reason| r.error(reason))?;
        *bytes = r.rest();
        Ok(HuffmanCode::canonical(lengths))
    }
}

const TABLE_FORMAT: &str = "Huffman table";

/// The byte that starts a run of symbols without a code in a stored table.
const UNUSED_RUN: u8 = MAX_CODE_LEN + 1;

/// An item of a stored table.
#[derive(Clone, Copy)]
enum Run {
    Length(u8),
    Unused(u16),
}

impl Run {
    fn bytes(self) -> usize {
        match self {
            Run::Length(_) => 1,
            Run::Unused(_) => 3,
        }
    }
}

/// The items a table is stored as: runs of 4 or more unused symbols as runs (of at most
/// 65,535), every other length as its byte.
fn length_runs(lengths: &[u8]) -> impl Iterator<Item = Run> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let l = *lengths.get(i)?;
        let zeros = lengths[i..]
            .iter()
            .take(u16::MAX as usize)
            .take_while(|&&l| l == 0)
            .count();
        if zeros >= 4 {
            i += zeros;
            Some(Run::Unused(zeros as u16))
        } else {
            i += 1;
            Some(Run::Length(l))
        }
    })
}

/// Why `lengths` are not the lengths of a prefix code of at most [`MAX_CODE_LEN`] bits
/// over at most 65,536 symbols, if they are not.
fn check_lengths(lengths: &[u8]) -> Result<(), String> {
    if lengths.len() > MAX_ALPHABET {
        return Err(format!("{} symbols exceed 65536", lengths.len()));
    }
    if let Some(s) = lengths.iter().position(|&l| l > MAX_CODE_LEN) {
        return Err(format!(
            "symbol {s} has length {} above {MAX_CODE_LEN}",
            lengths[s]
        ));
    }
    let kraft: u64 = lengths
        .iter()
        .filter(|&&l| l > 0)
        .map(|&l| 1u64 << (MAX_CODE_LEN - l))
        .sum();
    if kraft > 1 << MAX_CODE_LEN {
        return Err(format!(
            "the lengths are not a prefix code (Kraft sum {kraft}/2^{MAX_CODE_LEN} > 1)"
        ));
    }
    Ok(())
}

fn check_alphabet(n: usize) -> Result<()> {
    if n > MAX_ALPHABET {
        return Err(Error::invalid("counts", n, "at most 65536 symbols (u16)"));
    }
    Ok(())
}

impl PartialEq for HuffmanCode {
    fn eq(&self, other: &Self) -> bool {
        // Everything else is derived from the lengths.
        self.lengths == other.lengths
    }
}

impl Eq for HuffmanCode {}

impl fmt::Debug for HuffmanCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.lengths.iter().filter(|&&l| l > 0).count();
        write!(
            f,
            "HuffmanCode {{ alphabet: {}, used: {used}, max_len: {} }}",
            self.lengths.len(),
            self.max_len()
        )
    }
}

/// The Shannon bound of coding symbols seen `counts[s]` times, in bits:
/// `Σ c·log2(total/c)`. A Huffman code needs less than one bit per symbol more.
///
/// ```
/// assert_eq!(slimnn::encode::huffman::entropy_bits(&[2, 1, 1, 0]), 6.0);
/// ```
pub fn entropy_bits(counts: &[u64]) -> f64 {
    let total: f64 = counts.iter().map(|&c| c as f64).sum();
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64 * (total / c as f64).log2())
        .sum()
}

/// How often each symbol occurs: `counts[s]`, for `s` up to the largest symbol present
/// (empty for no symbols).
///
/// ```
/// assert_eq!(slimnn::encode::huffman::symbol_counts(&[3, 0, 3]), [1, 0, 0, 2]);
/// ```
pub fn symbol_counts(symbols: &[u16]) -> Vec<u64> {
    let alphabet = symbols.iter().max().map_or(0, |&m| m as usize + 1);
    let mut counts = vec![0u64; alphabet];
    for &s in symbols {
        counts[s as usize] += 1;
    }
    counts
}
