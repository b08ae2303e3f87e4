//! Where a parameter's stored values sit (a sparse index), and its quantization codes,
//! as bytes; the relative index's gaps and the codes optionally Huffman-coded.

use super::{Coded, Encoding, Positions};
use crate::encode::RelativeIndex;
use crate::encode::compressed::{check_indices, check_pointers, pattern};
use crate::encode::huffman::{BitStream, HuffmanCode, entropy_bits, symbol_counts};
use crate::encode::wire::{Reader, Writer};
use crate::error::Result;
use crate::mask::Mask;
use crate::quant::PackedCodes;

const BITMASK: u8 = 1;
const CSR: u8 = 2;
const RELATIVE: u8 = 3;

/// Writes `symbols` as a Huffman table and bit stream.
fn write_huffman(w: &mut Writer, symbols: &[u16]) -> Result<Coded> {
    let counts = symbol_counts(symbols);
    let code = HuffmanCode::from_counts(&counts)?;
    let before = w.bytes.len();
    code.write_to(&mut w.bytes);
    let table_bytes = w.bytes.len() - before;
    let stream = code.encode(symbols)?;
    stream.write_to(&mut w.bytes);
    Ok(Coded {
        table_bytes,
        stream_bits: stream.bit_len(),
        entropy_bits: entropy_bits(&counts),
    })
}

/// Reads `count` symbols [`write_huffman`] wrote.
fn read_huffman(r: &mut Reader<'_>, count: usize) -> Result<Vec<u16>> {
    let code = r.parse(HuffmanCode::read_from)?;
    let stream = r.parse(BitStream::read_from)?;
    code.decode(&stream, count)
}

/// Writes the kept positions of `mask` in the format `positions` names; returns what
/// was Huffman-coded.
pub(crate) fn write_positions(
    w: &mut Writer,
    mask: &Mask,
    positions: Positions,
    huffman: bool,
) -> Result<Coded> {
    match positions {
        Positions::Bitmask | Positions::Dense | Positions::Auto => {
            w.u8(BITMASK);
            let bytes = mask.len().div_ceil(8);
            for (i, word) in mask.words().iter().enumerate() {
                let take = (bytes - 8 * i).min(8);
                w.bytes.extend_from_slice(&word.to_le_bytes()[..take]);
            }
            Ok(Coded::default())
        }
        Positions::Csr => {
            // Rows of the weight seen as [shape[0], rest]: u32 row pointers, then each
            // kept column in 16 bits when the rows are at most 65,536 wide, else 32.
            w.u8(CSR);
            let rows = mask.shape().first().copied().unwrap_or(1).max(1);
            let cols = mask.len() / rows;
            let wide = cols > 1 << 16;
            w.u8(if wide { 4 } else { 2 });
            let (row_ptr, col_idx, _) = pattern(mask, [rows, cols], false);
            for p in &row_ptr {
                w.u32(*p);
            }
            for &c in &col_idx {
                if wide {
                    w.u32(c);
                } else {
                    w.bytes.extend_from_slice(&(c as u16).to_le_bytes());
                }
            }
            Ok(Coded::default())
        }
        Positions::RelativeIndex { bits } => {
            w.u8(RELATIVE);
            let index = RelativeIndex::from_mask(mask, bits)?;
            w.u8(huffman as u8);
            if huffman {
                w.u8(bits);
                w.usize(index.symbols().len());
                let symbols: Vec<u16> = index.symbols().iter().map(|&s| s as u16).collect();
                write_huffman(w, &symbols)
            } else {
                index.write_to(&mut w.bytes);
                Ok(Coded::default())
            }
        }
    }
}

/// Reads the positions [`write_positions`] wrote, for a tensor of `shape`, and the
/// encoding they were written with.
pub(crate) fn read_positions(r: &mut Reader<'_>, shape: &[usize]) -> Result<(Mask, Encoding)> {
    let n: usize = shape.iter().product();
    let with = |positions, huffman| move |mask| (mask, Encoding { positions, huffman });
    match r.u8()? {
        BITMASK => {
            let raw = r.take(n.div_ceil(8))?;
            let words: Vec<u64> = raw
                .chunks(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b[..c.len()].copy_from_slice(c);
                    u64::from_le_bytes(b)
                })
                .collect();
            if !n.is_multiple_of(64) && words.last().is_some_and(|w| w >> (n % 64) != 0) {
                return Err(r.error("bits set past the end of a bitmask"));
            }
            Mask::from_words(shape, words)
                .map(with(Positions::Bitmask, false))
                .map_err(|e| r.error(e.to_string()))
        }
        CSR => {
            let rows = shape.first().copied().unwrap_or(1).max(1);
            let cols = n / rows;
            let width = r.u8()?;
            if width != 2 && width != 4 {
                return Err(r.error(format!("column indices of {width} bytes")));
            }
            if rows.saturating_add(1).saturating_mul(4) > r.remaining() {
                return Err(r.error(format!("{rows} row pointers do not fit")));
            }
            let row_ptr = (0..=rows).map(|_| r.u32()).collect::<Result<Vec<_>>>()?;
            check_pointers(&row_ptr).map_err(|e| r.error(format!("CSR positions: {e}")))?;
            let nnz = *row_ptr.last().unwrap_or(&0) as usize;
            let raw = r.take(nnz.saturating_mul(width as usize))?;
            let col_idx: Vec<u32> = if width == 2 {
                raw.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                    .collect()
            } else {
                raw.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            check_indices(&row_ptr, &col_idx, cols)
                .map_err(|e| r.error(format!("CSR positions: {e}")))?;
            let mut mask = Mask::zeros(shape);
            for (row, w) in row_ptr.windows(2).enumerate() {
                for &c in &col_idx[w[0] as usize..w[1] as usize] {
                    mask.set(row * cols + c as usize, true);
                }
            }
            Ok((
                mask,
                Encoding {
                    positions: Positions::Csr,
                    huffman: false,
                },
            ))
        }
        RELATIVE => {
            let huffman = r.u8()? == 1;
            let index = if huffman {
                let bits = r.u8()?;
                let count = r.usize()?;
                let symbols = read_huffman(r, count)?;
                let symbols = symbols
                    .into_iter()
                    .map(|s| u8::try_from(s).map_err(|_| r.error("a gap symbol above 255")))
                    .collect::<Result<Vec<u8>>>()?;
                RelativeIndex::from_symbols(n, bits, symbols)?
            } else {
                r.parse(RelativeIndex::read_from)?
            };
            let positions = Positions::RelativeIndex {
                bits: index.index_bits(),
            };
            index.to_mask(shape).map(with(positions, huffman))
        }
        t => Err(r.error(format!("unknown positions format {t}"))),
    }
}

/// Writes quantization codes of `bits` bits, packed or Huffman-coded; returns what was
/// Huffman-coded.
pub(crate) fn write_codes(w: &mut Writer, codes: &[u8], bits: u8, huffman: bool) -> Result<Coded> {
    w.u8(bits);
    w.u8(huffman as u8);
    if huffman && !codes.is_empty() {
        let symbols: Vec<u16> = codes.iter().map(|&c| c as u16).collect();
        return write_huffman(w, &symbols);
    }
    let packed = PackedCodes::pack(codes, bits)?;
    w.bytes.extend_from_slice(packed.bytes());
    Ok(Coded::default())
}

/// Reads `n` codes [`write_codes`] wrote, their bit width, and whether they were
/// Huffman-coded.
pub(crate) fn read_codes(r: &mut Reader<'_>, n: usize) -> Result<(Vec<u8>, u8, bool)> {
    let bits = r.u8()?;
    if !(1..=8).contains(&bits) {
        return Err(r.error(format!("codes of {bits} bits")));
    }
    let huffman = r.u8()?;
    let codes = match huffman {
        1 if n > 0 => read_huffman(r, n)?
            .into_iter()
            .map(|s| u8::try_from(s).map_err(|_| r.error("a code above 255")))
            .collect::<Result<Vec<u8>>>()?,
        0 | 1 => {
            let raw = r.take(n.saturating_mul(bits as usize).div_ceil(8))?;
            PackedCodes::from_bytes(raw.to_vec(), bits, n)
                .map_err(|e| r.error(e.to_string()))?
                .unpack()
        }
        t => return Err(r.error(format!("unknown code coding {t}"))),
    };
    if bits < 8 && codes.iter().any(|&c| c >> bits != 0) {
        return Err(r.error(format!("a code wider than {bits} bits")));
    }
    Ok((codes, bits, huffman == 1 && n > 0))
}
