//! llama.cpp / ggml block quantization formats Q8_0 and Q4_0, bit-exact with ggml's
//! reference quantizers (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref` and
//! `dequantize_row_q8_0` / `dequantize_row_q4_0` in `ggml/src/ggml-quants.c`) as
//! implemented by the Python `gguf` package (`gguf/quants.py`, classes `Q8_0` and
//! `Q4_0`), which the tests check byte for byte.
//!
//! Both formats cut a row into blocks of [`QK`] = 32 consecutive values and store per
//! block one f16 scale `d` (little-endian) followed by the quants; a value is restored
//! as `q · d`. All arithmetic is f32, in the reference's order, with no fused
//! multiply-add, so the results are identical bit for bit:
//!
//! | format | block bytes | bits/weight | scale `d` | quant `q` | restored |
//! |--------|-------------|-------------|-----------|-----------|----------|
//! | Q8_0 | 2 + 32 = 34 | 8.5 | `amax / 127` | `roundf(x · id)`, i8 | `q · d` |
//! | Q4_0 | 2 + 16 = 18 | 4.5 | `max / -8` | `min(15, trunc(x · id + 8.5))`, u4 | `(q − 8) · d` |
//!
//! where `amax` is the largest `|x|` in the block, `max` is the *signed* value of the
//! first element with `|x| == amax` (numpy's `argmax`), `id = 1 / d` computed from the
//! **f32** `d` (0 when `d == 0`), and `roundf` rounds half away from zero. `d` is
//! rounded to f16 (round to nearest, ties to even) only when it is stored, so the
//! quants use the unrounded scale while dequantization uses the rounded one. Q4_0
//! stores element `j` in the low nibble and element `j + 16` in the high nibble of
//! byte `j` of the 16 quant bytes.
//!
//! Inputs must be finite. Results are then exactly the reference's as long as the
//! scale fits in f16 (Q8_0: `amax ≤ 127 · 65504`; Q4_0: `amax ≤ 8 · 65504`; larger
//! scales are stored as `inf` and dequantize to `inf`/NaN) and `1 / d` is finite in f32
//! (`amax` above about `1e-36`; the reference's C code is undefined below that). Outside
//! those ranges, and for NaN or infinite inputs, the output is unspecified but the
//! functions neither panic nor misbehave.
//!
//! One known difference between ggml's C code and the `gguf` package, where this module
//! follows `gguf`: for a Q4_0 block of zeros whose first element is `-0.0`, C stores
//! `d = -0.0` (its running `max` starts at `+0.0` and is never replaced) while numpy's
//! `argmax` picks that first `-0.0` and stores `d = +0.0`. Both dequantize to zeros.
//! (A C build that fuses Q4_0's `x·id + 8.5` into one FMA, as compilers may under
//! `-ffp-contract=fast`, could also differ in rare cases; `gguf` and this module round
//! the product to f32 first.)

use half::f16;

/// Number of values per block in both formats (ggml's `QK8_0` and `QK4_0`).
pub(crate) const QK: usize = 32;

/// Bytes per Q8_0 block (ggml's `sizeof(block_q8_0)`): an f16 scale and 32 `i8` quants.
pub(crate) const Q8_0_BLOCK_BYTES: usize = 34;

/// Bytes per Q4_0 block (ggml's `sizeof(block_q4_0)`): an f16 scale and 32 4-bit quants.
pub(crate) const Q4_0_BLOCK_BYTES: usize = 18;

/// Bytes of the f16 scale at the start of every block (ggml's `ggml_half d`).
const SCALE_BYTES: usize = size_of::<f16>();

// The same layout checks as ggml's `static_assert`s in ggml-common.h.
const _: () = assert!(SCALE_BYTES == 2);
const _: () = assert!(Q8_0_BLOCK_BYTES == SCALE_BYTES + QK);
const _: () = assert!(Q4_0_BLOCK_BYTES == SCALE_BYTES + QK / 2);
const _: () = assert!(QK == 32); // the nibble packing and `block_amax`'s tree

/// Largest `|x|` of a block, as ggml's loop `amax = MAX(amax, fabsf(x[j]))` from
/// `amax = 0`. Without NaN the maximum does not depend on the order in which it is
/// taken, so it is computed as a tree (halves, quarters, ...) of elementwise maxima,
/// which vectorizes. (A NaN input, out of contract, may hide some other values.)
#[inline]
fn block_amax(x: &[f32; QK]) -> f32 {
    /// `a > b ? a : b` (not `f32::max`, which handles NaN): one `maxps` per register.
    #[inline(always)]
    fn max(a: f32, b: f32) -> f32 {
        if a > b { a } else { b }
    }
    let (lo, hi) = x.split_at(QK / 2);
    let m16: [f32; QK / 2] = std::array::from_fn(|i| max(lo[i].abs(), hi[i].abs()));
    let m8: [f32; QK / 4] = std::array::from_fn(|i| max(m16[i], m16[i + QK / 4]));
    let m4: [f32; QK / 8] = std::array::from_fn(|i| max(m8[i], m8[i + QK / 8]));
    max(max(m4[0], m4[2]), max(m4[1], m4[3]))
}

/// `1 / d`, or 0 when `d` is zero (ggml's `d ? 1.0f/d : 0.0f`).
#[inline]
pub(crate) fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// 2^23. For `0 <= a < 2^22`, the f32 sum `a + ROUND_MAGIC` is `a` rounded to an
/// integer `n` (ties to even, the default rounding), stored as `ROUND_MAGIC + n`: its
/// bit pattern is `ROUND_MAGIC`'s plus `n`. This rounds and converts to an integer
/// with an add and an integer subtract, which vectorize; `f32::round` and `f32::trunc`
/// are a libm call per element without SSE4.1, and the saturating `as` casts are
/// scalarized.
const ROUND_MAGIC: f32 = 8_388_608.0;

/// `a` (non-negative, below 2^22) rounded to the nearest integer, ties to even, as an
/// integer and as an f32 (exact). Other inputs give some value without panicking.
#[inline]
fn round_ties_even(a: f32) -> (i32, f32) {
    let r = a + ROUND_MAGIC;
    let n = r.to_bits().wrapping_sub(ROUND_MAGIC.to_bits()) as i32;
    (n, r - ROUND_MAGIC)
}

/// C's `roundf` (round half away from zero) of `y` as an integer, exact for
/// `|y| < 2^22` (in contract `|y| <= 127`). Larger magnitudes, infinities and NaN (out
/// of contract) give some value without panicking.
#[inline]
fn round_half_away(y: f32) -> i32 {
    let a = y.abs();
    let (n, nf) = round_ties_even(a);
    // `a - nf` is exact (|a - nf| <= 0.5 and Sterbenz), so this finds a tie that went
    // down to even; `roundf` takes it up, away from zero.
    let n = n + i32::from(a - nf == 0.5);
    if y < 0.0 { -n } else { n }
}

/// Q4_0 quant of `y = x · id`: C's `MIN(15, (int8_t)(y + 8.5f))`, with the sum rounded
/// to f32 before the truncation, as in the reference. In contract `y + 8.5` lies in
/// `[0, 16.5)`, where truncation is rounding down; anything else (out of contract)
/// still gives a value in `0..=15`.
#[inline]
pub(crate) fn quant4(y: f32) -> u8 {
    let s = y + 8.5;
    let (n, nf) = round_ties_even(s);
    (n - i32::from(nf > s)).clamp(0, 15) as u8
}

/// Q8_0's block scale `amax / 127` in f32 (before its rounding to f16), as
/// `quantize_row_q8_0_ref` computes it.
#[inline]
pub(crate) fn q8_0_scale(xb: &[f32; QK]) -> f32 {
    block_amax(xb) / 127.0
}

/// Q4_0's block scale `max / −8` in f32 (before its rounding to f16), `max` the signed
/// value of largest magnitude, as `quantize_row_q4_0_ref` computes it.
#[inline]
pub(crate) fn q4_0_scale(xb: &[f32; QK]) -> f32 {
    let amax = block_amax(xb);
    // The signed value of the first element of largest magnitude (numpy's argmax;
    // C's strict `amax < fabsf(v)` also keeps the first), found through a bit mask
    // rather than a data-dependent branch per element. The mask is empty only for
    // an all-NaN block.
    let ties = xb
        .iter()
        .enumerate()
        .fold(0u32, |m, (i, v)| m | (u32::from(v.abs() == amax) << i));
    let max = xb
        .get(ties.trailing_zeros() as usize)
        .copied()
        .unwrap_or(0.0);
    max / -8.0
}

/// Q8_0's quant of `y = x · id`: `roundf(y)`, clamped to the symmetric range
/// `−127..=127` (in contract `|y| ≤ 127` and the clamp changes nothing), as an `i8`.
#[inline]
pub(crate) fn quant8(y: f32) -> i8 {
    round_half_away(y).clamp(-127, 127) as i8
}

/// Splits a quantized block into its f16 scale (as f32) and its quant bytes.
#[cfg(test)]
#[inline]
fn scale_and_quants(block: &[u8]) -> (f32, &[u8]) {
    let (d, qs) = block.split_at(SCALE_BYTES);
    (f16::from_le_bytes([d[0], d[1]]).to_f32(), qs)
}

/// Quantizes `x` (len a multiple of 32, finite) into Q8_0 blocks appended to `out`.
///
/// Appends `x.len() / 32 * 34` bytes, identical to ggml's `quantize_row_q8_0_ref` and
/// `gguf.quants.quantize(x, GGMLQuantizationType.Q8_0)`. See the module documentation
/// for the rules and the ranges where they hold.
///
/// # Panics
/// If `x.len()` is not a multiple of [`QK`].
pub(crate) fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let (blocks, rest) = x.as_chunks::<QK>();
    assert!(
        rest.is_empty(),
        "Q8_0: input length {} is not a multiple of {QK}",
        x.len()
    );
    out.reserve(blocks.len() * Q8_0_BLOCK_BYTES);
    for xb in blocks {
        let mut block = [0u8; Q8_0_BLOCK_BYTES];
        let d = q8_0_scale(xb);
        let id = inverse_or_zero(d);
        let (scale, qs) = block.split_at_mut(SCALE_BYTES);
        scale.copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for (q, &v) in qs.iter_mut().zip(xb) {
            // In contract |v · id| <= 127 (+ rounding), so the clamp changes nothing.
            *q = quant8(v * id) as u8;
        }
        out.extend_from_slice(&block);
    }
}

/// Dequantizes Q8_0 `blocks` into `out`: value `j` of a block is `q[j] · d` in f32,
/// with `d` the stored f16 scale, as ggml's `dequantize_row_q8_0`.
///
/// # Panics
/// If `out.len()` is not a multiple of [`QK`] or `blocks.len() != out.len() / 32 * 34`.
#[cfg(test)]
pub(crate) fn dequantize_q8_0(blocks: &[u8], out: &mut [f32]) {
    let (dst, rest) = out.as_chunks_mut::<QK>();
    assert!(
        rest.is_empty(),
        "Q8_0: output length {} is not a multiple of {QK}",
        out.len()
    );
    assert_eq!(
        blocks.len(),
        dst.len() * Q8_0_BLOCK_BYTES,
        "Q8_0: {} bytes of blocks for {} outputs",
        blocks.len(),
        dst.len() * QK
    );
    let (src, _) = blocks.as_chunks::<Q8_0_BLOCK_BYTES>();
    for (block, y) in src.iter().zip(dst) {
        let (d, qs) = scale_and_quants(block);
        for (o, &q) in y.iter_mut().zip(qs) {
            *o = f32::from(q as i8) * d;
        }
    }
}

/// Quantizes `x` (len a multiple of 32, finite) into Q4_0 blocks appended to `out`.
///
/// Appends `x.len() / 32 * 18` bytes, identical to
/// `gguf.quants.quantize(x, GGMLQuantizationType.Q4_0)` and (but for the sign of a zero
/// scale, see the module documentation) to ggml's `quantize_row_q4_0_ref`.
///
/// # Panics
/// If `x.len()` is not a multiple of [`QK`].
pub(crate) fn quantize_q4_0(x: &[f32], out: &mut Vec<u8>) {
    let (blocks, rest) = x.as_chunks::<QK>();
    assert!(
        rest.is_empty(),
        "Q4_0: input length {} is not a multiple of {QK}",
        x.len()
    );
    out.reserve(blocks.len() * Q4_0_BLOCK_BYTES);
    for xb in blocks {
        let mut block = [0u8; Q4_0_BLOCK_BYTES];
        let d = q4_0_scale(xb);
        let id = inverse_or_zero(d);
        let (scale, qs) = block.split_at_mut(SCALE_BYTES);
        scale.copy_from_slice(&f16::from_f32(d).to_le_bytes());
        let (lo, hi) = xb.split_at(QK / 2);
        for ((q, &x0), &x1) in qs.iter_mut().zip(lo).zip(hi) {
            *q = quant4(x0 * id) | (quant4(x1 * id) << 4);
        }
        out.extend_from_slice(&block);
    }
}

/// Dequantizes Q4_0 `blocks` into `out`: value `j` of a block is `(q[j] − 8) · d` in
/// f32, with `d` the stored f16 scale, as ggml's `dequantize_row_q4_0`.
///
/// # Panics
/// If `out.len()` is not a multiple of [`QK`] or `blocks.len() != out.len() / 32 * 18`.
#[cfg(test)]
pub(crate) fn dequantize_q4_0(blocks: &[u8], out: &mut [f32]) {
    let (dst, rest) = out.as_chunks_mut::<QK>();
    assert!(
        rest.is_empty(),
        "Q4_0: output length {} is not a multiple of {QK}",
        out.len()
    );
    assert_eq!(
        blocks.len(),
        dst.len() * Q4_0_BLOCK_BYTES,
        "Q4_0: {} bytes of blocks for {} outputs",
        blocks.len(),
        dst.len() * QK
    );
    let (src, _) = blocks.as_chunks::<Q4_0_BLOCK_BYTES>();
    for (block, y) in src.iter().zip(dst) {
        let (d, qs) = scale_and_quants(block);
        let (lo, hi) = y.split_at_mut(QK / 2);
        for ((y0, y1), &q) in lo.iter_mut().zip(hi).zip(qs) {
            *y0 = f32::from(i16::from(q & 0x0F) - 8) * d;
            *y1 = f32::from(i16::from(q >> 4) - 8) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture written by `scripts/make_ggml_fixture.py` from the Python `gguf`
    /// package; its format is described there.
    const FIXTURE_BIN: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ggml_blocks.bin"
    );
    /// The fixture's JSON index (versions, offsets), checked only for the case names.
    const FIXTURE_JSON: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ggml_blocks.json"
    );

    /// One case of the fixture: the input and what `gguf` made of it.
    struct Case {
        name: String,
        input: Vec<f32>,
        q8_0: Vec<u8>,
        q4_0: Vec<u8>,
        q8_0_dequant: Vec<f32>,
        q4_0_dequant: Vec<f32>,
    }

    /// A cursor over the fixture's bytes.
    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn bytes(&mut self, n: usize) -> &'a [u8] {
            assert!(self.0.len() >= n, "fixture truncated");
            let (head, tail) = self.0.split_at(n);
            self.0 = tail;
            head
        }
        fn u32(&mut self) -> usize {
            u32::from_le_bytes(self.bytes(4).try_into().unwrap()) as usize
        }
        fn f32s(&mut self, n: usize) -> Vec<f32> {
            let (words, _) = self.bytes(4 * n).as_chunks::<4>();
            words.iter().map(|w| f32::from_le_bytes(*w)).collect()
        }
    }

    fn read_fixture() -> Vec<Case> {
        let data = std::fs::read(FIXTURE_BIN).expect("read tests/fixtures/ggml_blocks.bin");
        let mut r = Reader(&data);
        assert_eq!(r.bytes(8), b"GGMLQFX1", "fixture magic");
        assert_eq!(r.u32(), 1, "fixture format version");
        let n_cases = r.u32();
        let cases: Vec<Case> = (0..n_cases)
            .map(|_| {
                let name_len = r.u32();
                let name = String::from_utf8(r.bytes(name_len).to_vec()).unwrap();
                let n = r.u32();
                assert_eq!(n % QK, 0, "{name}: length {n}");
                Case {
                    input: r.f32s(n),
                    q8_0: r.bytes(n / QK * Q8_0_BLOCK_BYTES).to_vec(),
                    q4_0: r.bytes(n / QK * Q4_0_BLOCK_BYTES).to_vec(),
                    q8_0_dequant: r.f32s(n),
                    q4_0_dequant: r.f32s(n),
                    name,
                }
            })
            .collect();
        assert!(r.0.is_empty(), "trailing bytes in the fixture");
        cases
    }

    /// Index of the first differing block, for a readable failure.
    fn first_diff<T: PartialEq>(a: &[T], b: &[T], per_block: usize) -> Option<usize> {
        a.chunks(per_block)
            .zip(b.chunks(per_block))
            .position(|(x, y)| x != y)
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn matches_gguf_fixture_bit_for_bit() {
        let cases = read_fixture();
        assert!(
            cases.len() >= 9,
            "expected the fixture's 9 cases, found {}",
            cases.len()
        );
        let index = std::fs::read_to_string(FIXTURE_JSON).expect("read ggml_blocks.json");
        for case in &cases {
            let name = &case.name;
            assert!(
                index.contains(&format!("\"name\": \"{name}\"")),
                "{name} missing from the JSON index"
            );
            let n = case.input.len();

            let mut q8 = vec![0xAA]; // appends after existing content
            quantize_q8_0(&case.input, &mut q8);
            assert_eq!(q8[0], 0xAA);
            assert!(
                q8[1..] == case.q8_0[..],
                "{name}: Q8_0 bytes differ, first at block {:?}",
                first_diff(&q8[1..], &case.q8_0, Q8_0_BLOCK_BYTES)
            );
            let mut q4 = Vec::new();
            quantize_q4_0(&case.input, &mut q4);
            assert!(
                q4 == case.q4_0,
                "{name}: Q4_0 bytes differ, first at block {:?}",
                first_diff(&q4, &case.q4_0, Q4_0_BLOCK_BYTES)
            );

            // Dequantize the reference's blocks, so a failure here is the dequantizer's.
            let mut y = vec![f32::NAN; n];
            dequantize_q8_0(&case.q8_0, &mut y);
            let (got, want) = (bits(&y), bits(&case.q8_0_dequant));
            assert!(
                got == want,
                "{name}: Q8_0 dequant differs, first at block {:?}",
                first_diff(&got, &want, QK)
            );
            dequantize_q4_0(&case.q4_0, &mut y);
            let (got, want) = (bits(&y), bits(&case.q4_0_dequant));
            assert!(
                got == want,
                "{name}: Q4_0 dequant differs, first at block {:?}",
                first_diff(&got, &want, QK)
            );
        }
    }

    /// The public quantizer, decoding and block export agree with the fixture too.
    #[test]
    fn quantizer_and_export_match_the_fixture() {
        use crate::quant::{
            GgmlFormat, GgmlQuantizer, QuantContext, Quantizer, from_ggml_blocks, to_ggml_blocks,
        };
        for case in read_fixture() {
            let n = case.input.len();
            let x =
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[n / 64, 64]), case.input.clone())
                    .or_else(|_| {
                        ndarray::ArrayD::from_shape_vec(
                            ndarray::IxDyn(&[n / 32, 32]),
                            case.input.clone(),
                        )
                    })
                    .unwrap();
            for (format, blocks, dequant) in [
                (GgmlFormat::Q8_0, &case.q8_0, &case.q8_0_dequant),
                (GgmlFormat::Q4_0, &case.q4_0, &case.q4_0_dequant),
            ] {
                let q = GgmlQuantizer::new(format)
                    .quantize(&x, &QuantContext::new())
                    .unwrap();
                assert_eq!(
                    &to_ggml_blocks(&q, format).unwrap(),
                    blocks,
                    "{}: {format:?} blocks",
                    case.name
                );
                let back = q.dequantize::<f32>();
                assert_eq!(
                    bits(back.as_slice().unwrap()),
                    bits(dequant),
                    "{}: {format:?} values",
                    case.name
                );
                let loaded = from_ggml_blocks(blocks, x.shape(), format).unwrap();
                assert_eq!(loaded, q, "{}: {format:?} from blocks", case.name);
            }
        }
    }

    /// The fixture's edge cases, spelled out (they are also in the fixture).
    #[test]
    fn documented_rounding_rules() {
        // Q8_0: d = 127/127 = 1, roundf rounds half away from zero.
        let mut x = [0.0f32; QK];
        x[..6].copy_from_slice(&[127.0, 0.5, -0.5, 2.5, -2.5, 126.5]);
        let mut q = Vec::new();
        quantize_q8_0(&x, &mut q);
        assert_eq!(&q[..2], &f16::ONE.to_le_bytes());
        let qs: Vec<i8> = q[2..8].iter().map(|&b| b as i8).collect();
        assert_eq!(qs, [127, 1, -1, 3, -3, 127]);

        // Q4_0: max = -8 so d = 1; trunc(x + 8.5) after f32 rounding of the sum;
        // +8 (the opposite extreme) gives 16, clamped to 15.
        let mut x = [0.0f32; QK];
        let below_half = f32::from_bits(0.5f32.to_bits() - 1); // 0.49999997
        x[..6].copy_from_slice(&[-8.0, 0.5, -0.5, below_half, 8.0, 7.5]);
        let mut q = Vec::new();
        quantize_q4_0(&x, &mut q);
        assert_eq!(&q[..2], &f16::ONE.to_le_bytes());
        let nib: Vec<u8> = q[2..8].iter().map(|b| b & 0x0F).collect();
        assert_eq!(nib, [0, 9, 8, 9, 15, 15]);

        // Q4_0 ties: the first element of largest magnitude gives the sign of d.
        let mut x = [0.0f32; QK];
        x[3] = 1.0;
        x[20] = -1.0;
        q.clear();
        quantize_q4_0(&x, &mut q);
        assert_eq!(f16::from_le_bytes([q[0], q[1]]).to_f32(), -0.125);
        x[3] = -1.0;
        x[20] = 1.0;
        q.clear();
        quantize_q4_0(&x, &mut q);
        assert_eq!(f16::from_le_bytes([q[0], q[1]]).to_f32(), 0.125);

        // Zero blocks: Q8_0 stores +0; Q4_0 stores 0 / -8 = -0.0, all quants 8.
        let zeros = [0.0f32; QK];
        q.clear();
        quantize_q8_0(&zeros, &mut q);
        assert!(q.iter().all(|&b| b == 0));
        q.clear();
        quantize_q4_0(&zeros, &mut q);
        assert_eq!(&q[..2], &(-f16::ZERO).to_le_bytes());
        assert!(q[2..].iter().all(|&b| b == 0x88));
    }

    /// A plain transliteration of ggml's C reference (ggml-quants.c), element by
    /// element, to check the faster loops above on many random blocks, including the
    /// lane-wise maximum and the nibble order.
    fn reference_q8_0(x: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in x.chunks(QK) {
            let mut amax = 0.0f32;
            for &v in b {
                amax = if amax > v.abs() { amax } else { v.abs() };
            }
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
        }
        out
    }

    /// See [`reference_q8_0`]; C starts from `max = 0.0`, which only matters for zero
    /// blocks whose first element is `-0.0` (not generated by the random test).
    fn reference_q4_0(x: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in x.chunks(QK) {
            let (mut amax, mut max) = (0.0f32, 0.0f32);
            for &v in b {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            for j in 0..QK / 2 {
                let x0 = b[j] * id;
                let x1 = b[QK / 2 + j] * id;
                let xi0 = ((x0 + 8.5) as i8).min(15) as u8;
                let xi1 = ((x1 + 8.5) as i8).min(15) as u8;
                out.push(xi0 | (xi1 << 4));
            }
        }
        out
    }

    /// Deterministic pseudo-random f32s with varied magnitudes and exact ties (std only).
    fn random_values(n: usize, mut seed: u64) -> Vec<f32> {
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        (0..n)
            .map(|i| {
                let r = next();
                let unit = (r >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0; // [-1, 1)
                let scale = 10f32.powi((i / QK % 13) as i32 - 8); // per block, 1e-8..1e4
                match r & 31 {
                    0 => scale,  // ties at +-scale
                    1 => -scale, // and the opposite sign
                    2 => 0.0,
                    _ => unit * scale,
                }
            })
            .collect()
    }

    #[test]
    fn fast_loops_match_plain_reference() {
        let x = random_values(QK * 4000, 0x9E37_79B9_7F4A_7C15);
        let mut q8 = Vec::new();
        quantize_q8_0(&x, &mut q8);
        assert!(q8 == reference_q8_0(&x));
        let mut q4 = Vec::new();
        quantize_q4_0(&x, &mut q4);
        assert!(q4 == reference_q4_0(&x));

        let mut y = vec![0.0; x.len()];
        dequantize_q8_0(&q8, &mut y);
        for ((b, xs), ys) in q8
            .chunks(Q8_0_BLOCK_BYTES)
            .zip(x.chunks(QK))
            .zip(y.chunks(QK))
        {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            for (j, (&xv, &yv)) in xs.iter().zip(ys).enumerate() {
                assert_eq!(yv.to_bits(), (f32::from(b[2 + j] as i8) * d).to_bits());
                // |x - q·d| <= d/2 plus 127 times the f16 rounding of d (relative
                // 2^-11 while d is a normal f16; subnormal scales lose more).
                if d >= f16::MIN_POSITIVE.to_f32() {
                    assert!((xv - yv).abs() <= d * (0.5 + 128.0 / 2048.0) * 1.001);
                }
            }
        }
        dequantize_q4_0(&q4, &mut y);
        for (b, ys) in q4.chunks(Q4_0_BLOCK_BYTES).zip(y.chunks(QK)) {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            for (j, &yv) in ys.iter().enumerate() {
                let q = if j < QK / 2 {
                    b[2 + j] & 0x0F
                } else {
                    b[2 + j - QK / 2] >> 4
                };
                assert_eq!(yv.to_bits(), ((f32::from(q) - 8.0) * d).to_bits());
            }
        }
    }

    #[test]
    fn lengths_and_appending() {
        let mut out = vec![1, 2, 3];
        quantize_q8_0(&[], &mut out);
        quantize_q4_0(&[], &mut out);
        assert_eq!(out, [1, 2, 3]);
        dequantize_q8_0(&[], &mut []);
        dequantize_q4_0(&[], &mut []);
        quantize_q8_0(&[0.5; 2 * QK], &mut out);
        assert_eq!(out.len(), 3 + 2 * Q8_0_BLOCK_BYTES);
        quantize_q4_0(&[0.5; 2 * QK], &mut out);
        assert_eq!(out.len(), 3 + 2 * Q8_0_BLOCK_BYTES + 2 * Q4_0_BLOCK_BYTES);
    }

    #[test]
    #[should_panic(expected = "not a multiple of 32")]
    fn quantize_rejects_partial_block() {
        quantize_q4_0(&[0.0; QK + 1], &mut Vec::new());
    }

    #[test]
    #[should_panic(expected = "bytes of blocks")]
    fn dequantize_rejects_mismatched_lengths() {
        dequantize_q8_0(&[0; Q8_0_BLOCK_BYTES], &mut [0.0; 2 * QK]);
    }

    /// Out of contract (non-finite input, scales beyond f16, `1/d` overflowing f32):
    /// no panic, quants in range.
    #[test]
    fn out_of_contract_inputs_do_not_panic() {
        let mut x = [1e-40f32; QK];
        x[1] = 0.0;
        let mut blocks = [
            x,
            [f32::NAN; QK],
            [f32::INFINITY; QK],
            [1e9; QK],
            [-3e38; QK],
        ];
        blocks[1][0] = 1.0;
        blocks[2][5] = -1.0;
        let flat: Vec<f32> = blocks.concat();
        let mut q = Vec::new();
        quantize_q8_0(&flat, &mut q);
        quantize_q4_0(&flat, &mut q);
        let mut y = vec![0.0; flat.len()];
        dequantize_q8_0(&q[..flat.len() / QK * Q8_0_BLOCK_BYTES], &mut y);
        dequantize_q4_0(&q[flat.len() / QK * Q8_0_BLOCK_BYTES..], &mut y);
    }
}
