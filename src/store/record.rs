//! One parameter as bytes: its header, where its stored values are, and the values in
//! its form (dense, sparse, quantized codes, factors).

use ndarray::{ArrayD, IxDyn};

use super::decoding::{
    factorization_from, read_decoding, read_factorization, read_factors_head,
    reconstruction_elements, write_decoding, write_factorization, write_factors_head,
};
use super::positions::{read_codes, read_positions, write_codes, write_positions};
use super::{Coded, Encoding, Positions, StoredBytes};
use crate::encode::wire::{Reader, Writer};
use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::model::{DType, LayerKind, Param};
use crate::quant::{PackedCodes, QuantizedTensor};
use crate::tensor::row_major;

const KINDS: [LayerKind; 6] = [
    LayerKind::Linear,
    LayerKind::Conv2d,
    LayerKind::Embedding,
    LayerKind::Norm,
    LayerKind::Bias,
    LayerKind::Other,
];
const DTYPES: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];

const DENSE: u8 = 0;
const SPARSE: u8 = 1;
const QUANTIZED: u8 = 2;
const FACTORIZED: u8 = 3;
/// Factorized, each factor stored as its quantized form.
const QUANTIZED_FACTORS: u8 = 4;
/// Quantized, with a divisor per input column (AWQ) after the codes.
const QUANTIZED_SCALED: u8 = 5;

/// A parameter's record and the breakdown of its bytes.
pub(crate) struct Encoded {
    pub(crate) bytes: Vec<u8>,
    pub(crate) stored: StoredBytes,
    /// The positions format used, if the values are stored sparsely.
    pub(crate) positions: Option<Positions>,
    /// What was Huffman-coded.
    pub(crate) coded: Coded,
}

/// Counts the bytes each part of a record adds.
struct Sections {
    w: Writer,
    stored: StoredBytes,
    coded: Coded,
}

impl Sections {
    fn section(
        &mut self,
        part: fn(&mut StoredBytes) -> &mut usize,
        write: impl FnOnce(&mut Writer),
    ) {
        let before = self.w.bytes.len();
        write(&mut self.w);
        *part(&mut self.stored) += self.w.bytes.len() - before;
    }

    /// A section that may hold Huffman-coded streams: their tables are counted as
    /// tables rather than as `part`.
    fn coded_section(
        &mut self,
        part: fn(&mut StoredBytes) -> &mut usize,
        write: impl FnOnce(&mut Writer) -> Result<Coded>,
    ) -> Result<()> {
        let before = self.w.bytes.len();
        let coded = write(&mut self.w)?;
        *part(&mut self.stored) += self.w.bytes.len() - before - coded.table_bytes;
        self.stored.tables += coded.table_bytes;
        self.coded.add(coded);
        Ok(())
    }
}

/// The positions a parameter's stored values sit at: its mask (`true`: restore it as
/// the parameter's mask), or, when asked to store sparsely, its non-zeros (`false`).
fn positions_of(p: &Param, positions: Positions) -> Option<(Mask, bool)> {
    if let Some(m) = p.mask().or_else(|| p.quantized().and_then(|q| q.mask())) {
        return Some((m.clone(), p.mask().is_some()));
    }
    if positions == Positions::Dense {
        return None;
    }
    // Only +0.0 is left out, so that a stored −0.0 comes back bit for bit.
    let flat = row_major(p.value());
    let stored = |v: f32| v.to_bits() != 0;
    let has_zero = flat.iter().any(|&v| !stored(v));
    has_zero.then(|| (Mask::from_fn(p.shape(), |i| stored(flat[i])), false))
}

/// The record of `p` with `encoding`; [`Positions::Auto`] tries every concrete choice
/// and keeps the smallest.
pub(crate) fn encode(p: &Param, encoding: Encoding) -> Result<Encoded> {
    if encoding.positions != Positions::Auto {
        return encode_with(p, encoding);
    }
    let mut best: Option<Encoded> = None;
    for positions in Positions::CONCRETE {
        let e = encode_with(
            p,
            Encoding {
                positions,
                ..encoding
            },
        )?;
        if best.as_ref().is_none_or(|b| e.bytes.len() < b.bytes.len()) {
            best = Some(e);
        }
    }
    best.ok_or_else(|| Error::invalid("positions", "Auto", "a concrete choice"))
}

fn encode_with(p: &Param, encoding: Encoding) -> Result<Encoded> {
    encoding.check()?;
    let mut s = Sections {
        w: Writer::default(),
        stored: StoredBytes::default(),
        coded: Coded::default(),
    };
    let kind = KINDS.iter().position(|&k| k == p.kind()).unwrap_or(5) as u8;
    let dtype = DTYPES.iter().position(|&d| d == p.dtype()).unwrap_or(0) as u8;
    s.section(StoredBytes::header, |w| {
        w.u8(kind);
        w.u8(dtype);
        w.dims(p.shape());
    });
    if let Some(f) = p.factorization() {
        match f.quantized_factors() {
            None => {
                s.section(StoredBytes::header, |w| w.u8(FACTORIZED));
                s.section(StoredBytes::values, |w| write_factorization(w, f));
            }
            Some(factors) => {
                s.section(StoredBytes::header, |w| {
                    w.u8(QUANTIZED_FACTORS);
                    write_factors_head(w, f);
                });
                for q in factors {
                    write_quantized_factor(&mut s, q, encoding.huffman)?;
                }
            }
        }
        return Ok(Encoded {
            bytes: s.w.bytes,
            stored: s.stored,
            positions: None,
            coded: s.coded,
        });
    }
    // A mask never goes away: a masked parameter asked to be stored densely keeps a
    // bitmask (its quantized codes may not decode the pruned weights to zero).
    let positions = match encoding.positions {
        Positions::Dense
            if p.mask().is_some() || p.quantized().is_some_and(|q| q.mask().is_some()) =>
        {
            Positions::Bitmask
        }
        other => other,
    };
    let kept = positions_of(p, positions);
    let quantized = p.quantized();
    let form = match (quantized, &kept) {
        (Some(q), _) if q.input_scales().is_some() => QUANTIZED_SCALED,
        (Some(_), _) => QUANTIZED,
        (None, Some(_)) => SPARSE,
        (None, None) => DENSE,
    };
    s.section(StoredBytes::header, |w| {
        w.u8(form);
        w.u8(kept.as_ref().map_or(0, |(_, restore)| 1 + *restore as u8));
    });
    if let Some((mask, _)) = &kept {
        s.coded_section(StoredBytes::indices, |w| {
            write_positions(w, mask, positions, encoding.huffman)
        })?;
    }
    match quantized {
        Some(q) => {
            s.section(StoredBytes::decoding, |w| write_decoding(w, q.decoding()));
            // Element-wise codes are stored at the kept positions only; product codes
            // (one per subvector) all.
            let codes = q.codes().unpack();
            let (per_position, stored_codes): (bool, Vec<u8>) = match &kept {
                Some((mask, _)) if codes.len() == mask.len() => {
                    (true, mask.iter_kept().map(|i| codes[i]).collect())
                }
                _ => (false, codes),
            };
            s.coded_section(StoredBytes::values, |w| {
                w.u8(per_position as u8);
                w.usize(stored_codes.len());
                write_codes(w, &stored_codes, q.codes().bits(), encoding.huffman)
            })?;
            if let Some(scales) = q.input_scales() {
                s.section(StoredBytes::decoding, |w| w.f32s(scales));
            }
        }
        None => {
            let (dtype, flat) = (p.dtype(), row_major(p.value()));
            s.section(StoredBytes::values, |w| match &kept {
                Some((mask, _)) => dtype.write_le(mask.iter_kept().map(|i| flat[i]), &mut w.bytes),
                None => dtype.write_le(flat.iter().copied(), &mut w.bytes),
            });
        }
    }
    Ok(Encoded {
        bytes: s.w.bytes,
        stored: s.stored,
        positions: kept.map(|_| positions),
        coded: s.coded,
    })
}

/// One quantized factor: its dimensions, its decoding, an optional bitmask, and its
/// codes (all of them, each `bits` wide or Huffman-coded).
fn write_quantized_factor(s: &mut Sections, q: &QuantizedTensor, huffman: bool) -> Result<()> {
    s.section(StoredBytes::header, |w| w.dims(q.shape()));
    s.section(StoredBytes::decoding, |w| write_decoding(w, q.decoding()));
    s.section(StoredBytes::header, |w| w.u8(q.mask().is_some() as u8));
    if let Some(m) = q.mask() {
        s.coded_section(StoredBytes::indices, |w| {
            write_positions(w, m, Positions::Bitmask, false)
        })?;
    }
    let codes = q.codes().unpack();
    s.coded_section(StoredBytes::values, |w| {
        w.usize(codes.len());
        write_codes(w, &codes, q.codes().bits(), huffman)
    })
}

/// Reads what [`write_quantized_factor`] wrote, for a factor of `ndim` dimensions;
/// `budget` is what its decoded values may still take, in elements.
fn read_quantized_factor(
    r: &mut Reader<'_>,
    ndim: usize,
    budget: &mut usize,
) -> Result<(QuantizedTensor, bool)> {
    let dims = r.dims()?;
    if dims.len() != ndim {
        return Err(r.error(format!("a {ndim}-D factor has shape {dims:?}")));
    }
    let n = dims.iter().fold(1usize, |a, &d| a.saturating_mul(d));
    *budget = budget
        .checked_sub(n)
        .ok_or_else(|| r.error("the factors take more than the file may claim"))?;
    let decoding = read_decoding(r)?;
    let mask = match r.u8()? {
        0 => None,
        1 => Some(read_positions(r, &dims)?.0),
        t => return Err(r.error(format!("unknown mask flag {t}"))),
    };
    let count = r.usize()?;
    if count > n {
        return Err(r.error(format!("{count} codes for {n} elements")));
    }
    let (codes, bits, huffman) = read_codes(r, count)?;
    let packed = PackedCodes::pack(&codes, bits).map_err(|e| r.error(e.to_string()))?;
    let mut q = QuantizedTensor::new(&dims, packed, decoding)
        .map_err(|e| r.error(format!("inconsistent quantized factor: {e}")))?;
    if let Some(m) = mask {
        q = q.with_mask(m).map_err(|e| r.error(e.to_string()))?;
    }
    Ok((q, huffman))
}

fn read_values(r: &mut Reader<'_>, dtype: DType, n: usize) -> Result<Vec<f32>> {
    if n.saturating_mul(dtype.size()) > r.remaining() {
        return Err(r.error(format!("{n} values do not fit in the record")));
    }
    Ok(dtype.read_le(r.take(n * dtype.size())?))
}

/// A decoded record: the parameter's parts, for the model to take.
pub(crate) struct Decoded {
    pub(crate) kind: LayerKind,
    pub(crate) dtype: DType,
    pub(crate) value: ArrayD<f32>,
    pub(crate) mask: Option<Mask>,
    pub(crate) quantized: Option<QuantizedTensor>,
    pub(crate) factorization: Option<crate::lowrank::Factorization>,
    /// How the record was encoded: encoding the parameter again gives the same bytes.
    pub(crate) encoding: Encoding,
}

/// The kind, dtype and shape at the start of a record (a shape that fits the kind).
fn read_head(r: &mut Reader<'_>) -> Result<(LayerKind, DType, Vec<usize>)> {
    let kind = *KINDS
        .get(r.u8()? as usize)
        .ok_or_else(|| r.error("unknown layer kind"))?;
    let dtype = *DTYPES
        .get(r.u8()? as usize)
        .ok_or_else(|| r.error("unknown dtype"))?;
    let shape = r.dims()?;
    if let Some(ndim) = kind.ndim()
        && ndim != shape.len()
    {
        return Err(r.error(format!(
            "a {kind} parameter of shape {shape:?} ({kind} parameters have {ndim} dimensions)"
        )));
    }
    Ok((kind, dtype, shape))
}

/// The number of elements the record at `r` declares, read from its head only.
pub(crate) fn peek_elements(r: &mut Reader<'_>) -> Result<usize> {
    Ok(read_head(r)?.2.iter().product())
}

/// Decodes a record; the elements its head declares have been accounted for, and
/// `spare` bytes are left for the transient buffers of rebuilding a low-rank form.
pub(crate) fn decode(r: &mut Reader<'_>, spare: usize) -> Result<Decoded> {
    let (kind, dtype, shape) = read_head(r)?;
    let n: usize = shape.iter().product();
    let form = r.u8()?;
    let mut out = Decoded {
        kind,
        dtype,
        value: ArrayD::zeros(IxDyn(&[0])),
        mask: None,
        quantized: None,
        factorization: None,
        encoding: Encoding {
            positions: Positions::Dense,
            huffman: false,
        },
    };
    if form == FACTORIZED {
        let f = read_factorization(r, &shape)?;
        let transient = reconstruction_elements(f.factors(), &shape);
        if transient.saturating_mul(4) > spare {
            return Err(r.error(format!(
                "rebuilding the factors takes {transient} elements, more than the file may claim"
            )));
        }
        out.value = f.reconstruct();
        out.factorization = Some(f);
        return Ok(out);
    }
    if form == QUANTIZED_FACTORS {
        let head = read_factors_head(r)?;
        let mut budget = spare / 4;
        let mut factors = Vec::with_capacity(head.ndims.len());
        for &ndim in &head.ndims {
            let (q, huffman) = read_quantized_factor(r, ndim, &mut budget)?;
            out.encoding.huffman |= huffman;
            factors.push(q);
        }
        let values = factors.iter().map(|q| q.dequantize::<f32>()).collect();
        let f = factorization_from(r, &head, &shape, values)?;
        let transient = reconstruction_elements(f.factors(), &shape);
        if transient > budget {
            return Err(r.error(format!(
                "rebuilding the factors takes {transient} elements, more than the file may claim"
            )));
        }
        let f = f
            .with_quantized_factors(factors)
            .map_err(|e| r.error(format!("inconsistent quantized factors: {e}")))?;
        out.value = f.reconstruct();
        out.factorization = Some(f);
        return Ok(out);
    }
    let positions = r.u8()?;
    let kept = match positions {
        0 => None,
        1 | 2 => {
            let (mask, encoding) = read_positions(r, &shape)?;
            out.encoding = encoding;
            Some((mask, positions == 2))
        }
        t => return Err(r.error(format!("unknown positions flag {t}"))),
    };
    let stored = kept.as_ref().map_or(n, |(m, _)| m.count_kept());
    match form {
        DENSE | SPARSE => {
            if (form == SPARSE) != kept.is_some() {
                return Err(r.error("a sparse record without positions, or the reverse"));
            }
            let values = read_values(r, dtype, stored)?;
            let dense = match &kept {
                Some((mask, _)) => {
                    let mut dense = vec![0f32; n];
                    for (i, v) in mask.iter_kept().zip(values) {
                        dense[i] = v;
                    }
                    dense
                }
                None => values,
            };
            out.value =
                ArrayD::from_shape_vec(IxDyn(&shape), dense).map_err(|e| r.error(e.to_string()))?;
        }
        QUANTIZED | QUANTIZED_SCALED => {
            let decoding = read_decoding(r)?;
            let per_position = r.u8()? == 1;
            let count = r.usize()?;
            if count > n || (per_position && (kept.is_none() || count != stored)) {
                return Err(r.error(format!("{count} codes for {n} elements")));
            }
            let (codes, bits, huffman) = read_codes(r, count)?;
            out.encoding.huffman |= huffman;
            let all = match &kept {
                Some((mask, _)) if per_position => {
                    let mut all = vec![0u8; n];
                    for (i, c) in mask.iter_kept().zip(codes) {
                        all[i] = c;
                    }
                    all
                }
                _ => codes,
            };
            let packed = PackedCodes::pack(&all, bits).map_err(|e| r.error(e.to_string()))?;
            let mut q = QuantizedTensor::new(&shape, packed, decoding)
                .map_err(|e| r.error(format!("inconsistent quantized tensor: {e}")))?;
            if let Some((mask, _)) = &kept {
                q = q
                    .with_mask(mask.clone())
                    .map_err(|e| r.error(e.to_string()))?;
            }
            if form == QUANTIZED_SCALED {
                let scales = r.f32s()?;
                q = q
                    .with_input_scales(scales)
                    .map_err(|e| r.error(format!("inconsistent input scales: {e}")))?;
            }
            out.value = q.dequantize();
            out.quantized = Some(q);
        }
        t => return Err(r.error(format!("unknown record form {t}"))),
    }
    out.mask = kept.and_then(|(m, restore)| restore.then_some(m));
    Ok(out)
}
