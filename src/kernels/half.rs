//! Half precision ↔ f32 conversion of slices, in registers.
//!
//! Three tiers, chosen once at run time ([`tier`]):
//! - scalar: the `half` crate, element by element (the reference twin);
//! - AVX2: bf16 by integer arithmetic on 8 lanes (round to nearest even exactly as
//!   `half::bf16::from_f32`), f16 with F16C (`vcvtph2ps` / `vcvtps2ph`);
//! - AVX-512 BF16: f32 → bf16 with `vcvtneps2bf16` on 16 lanes. That instruction flushes
//!   subnormal inputs to zero, which `half` does not, so a block holding a subnormal is
//!   converted by the integer path instead: every tier gives the same bits.
//!
//! NaN: every tier keeps the sign and the high payload bits and sets the quiet bit, as
//! `half` does (f32 → bf16: `(x >> 16) | 0x40`; bf16 → f32: `(b | 0x40) << 16`).
//! `SLIMNN_FORCE_SCALAR=1` forces the scalar twin, `SLIMNN_FORCE_AVX2=1` caps at AVX2.
//!
//! [`for_each_chunk`] converts a long 16-bit slice block by block into a stack buffer, so
//! callers never hold a full f32 copy of a big tensor.

use std::sync::OnceLock;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::tensor::HalfFloat;

/// Elements converted per block by the chunked helpers (16 KiB of f32 on the stack; a
/// multiple of every ggml block length, 32 and 256).
pub(crate) const CHUNK: usize = 4096;

/// The conversion tier in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Tier {
    /// The `half` crate, element by element.
    Scalar,
    /// AVX2 integer arithmetic for bf16, F16C for f16.
    Avx2,
    /// As AVX2, plus AVX-512 BF16 `vcvtneps2bf16` for f32 → bf16.
    Avx512Bf16,
}

/// The tier in use, detected once (see the module documentation for the environment).
pub(crate) fn tier() -> Tier {
    static TIER: OnceLock<Tier> = OnceLock::new();
    *TIER.get_or_init(|| {
        let detected = detected();
        let capped =
            std::env::var_os("SLIMNN_FORCE_AVX2").is_some_and(|v| !v.is_empty() && v != "0");
        if super::level() == super::Level::Scalar {
            Tier::Scalar
        } else if capped {
            detected.min(Tier::Avx2)
        } else {
            detected
        }
    })
}

/// What the CPU supports, ignoring the environment.
pub(crate) fn detected() -> Tier {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") && has!("f16c") {
            if has!("avx512f") && has!("avx512vl") && has!("avx512bf16") {
                return Tier::Avx512Bf16;
            }
            return Tier::Avx2;
        }
    }
    Tier::Scalar
}

/// bf16 → f32 (exact; NaN gets its quiet bit set). Panics if the lengths differ.
pub(crate) fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "bf16_to_f32: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if tier() >= Tier::Avx2 {
        // SAFETY: the tier is at least AVX2 only if the CPU has AVX2, FMA and F16C.
        return unsafe { x86::bf16_to_f32_avx2(src, dst) };
    }
    scalar::bf16_to_f32(src, dst)
}

/// f32 → bf16, round to nearest even. Panics if the lengths differ.
pub(crate) fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_bf16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    match tier() {
        // SAFETY: the tiers are detected from the CPU's features (see `detected`).
        Tier::Avx512Bf16 => return unsafe { x86::f32_to_bf16_avx512(src, dst) },
        Tier::Avx2 => return unsafe { x86::f32_to_bf16_avx2(src, dst) },
        Tier::Scalar => {}
    }
    scalar::f32_to_bf16(src, dst)
}

/// f16 → f32 (exact). Panics if the lengths differ.
pub(crate) fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if tier() >= Tier::Avx2 {
        // SAFETY: the tier is at least AVX2 only if the CPU has F16C.
        return unsafe { x86::f16_to_f32_f16c(src, dst) };
    }
    scalar::f16_to_f32(src, dst)
}

/// f32 → f16, round to nearest even. Panics if the lengths differ.
pub(crate) fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_f16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if tier() >= Tier::Avx2 {
        // SAFETY: the tier is at least AVX2 only if the CPU has F16C.
        return unsafe { x86::f32_to_f16_f16c(src, dst) };
    }
    scalar::f32_to_f16(src, dst)
}

/// Calls `f(offset, block)` for consecutive blocks of at most [`CHUNK`] elements of
/// `src` widened to f32 (one stack buffer, no allocation); stops at the first error.
pub(crate) fn for_each_chunk<H: HalfFloat, E>(
    src: &[H],
    mut f: impl FnMut(usize, &[f32]) -> Result<(), E>,
) -> Result<(), E> {
    let mut buf = [0f32; CHUNK];
    for (i, c) in src.chunks(CHUNK).enumerate() {
        let b = &mut buf[..c.len()];
        H::widen_kernel(c, b);
        f(i * CHUNK, b)?;
    }
    Ok(())
}

/// `bytes` (little-endian 16-bit values, e.g. a tensor read from a file) as `H`, if
/// they are aligned for it (an allocator's buffer is) on a little-endian target;
/// `None` otherwise (the caller decodes them another way).
pub(crate) fn halves<H: HalfFloat>(bytes: &[u8]) -> Option<&[H]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: `H` is sealed to `half::f16` and `half::bf16`, `repr(transparent)` over
    // `u16`, for which every bit pattern is a value; `align_to` yields only the aligned
    // middle, whose bytes are the little-endian (= native) values.
    let (head, values, tail) = unsafe { bytes.align_to::<H>() };
    (head.is_empty() && tail.is_empty()).then_some(values)
}

/// Element types a block routine can read as f32: f32 itself (borrowed, no copy), f16
/// and bf16 (widened into a caller's buffer).
pub(crate) trait AsF32Block: Copy + Send + Sync + 'static {
    /// `f(block as f32)`; a 16-bit block (at most [`CHUNK`] long) is widened into a
    /// stack buffer.
    fn with_f32<R>(block: &[Self], f: impl FnOnce(&[f32]) -> R) -> R;
    /// One value as f32 (for error paths).
    fn to_f32(self) -> f32;
}

impl AsF32Block for f32 {
    #[inline]
    fn with_f32<R>(block: &[Self], f: impl FnOnce(&[f32]) -> R) -> R {
        f(block)
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}

impl<H: HalfFloat> AsF32Block for H {
    #[inline]
    fn with_f32<R>(block: &[Self], f: impl FnOnce(&[f32]) -> R) -> R {
        let mut buf = [0f32; CHUNK];
        let b = &mut buf[..block.len()];
        H::widen_kernel(block, b);
        f(b)
    }
    #[inline]
    fn to_f32(self) -> f32 {
        HalfFloat::to_f32(self)
    }
}

/// The scalar twins: the `half` crate.
pub(crate) mod scalar {
    use super::*;

    pub(crate) fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }

    pub(crate) fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = bf16::from_f32(s);
        }
    }

    pub(crate) fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }

    pub(crate) fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f16::from_f32(s);
        }
    }
}

/// bf16 → f32 on bit patterns, branch-free so it vectorizes: NaN gets its quiet bit.
#[inline(always)]
fn widen_bf16_bits(src: &[u16], dst: &mut [u32]) {
    for (d, &b) in dst.iter_mut().zip(src) {
        let quiet = if b & 0x7FFF > 0x7F80 { 0x0040 } else { 0 };
        *d = ((b | quiet) as u32) << 16;
    }
}

/// f32 → bf16 on bit patterns, round to nearest even (`half::bf16::from_f32` exactly),
/// branch-free so it vectorizes.
#[inline(always)]
fn narrow_bf16_bits(src: &[u32], dst: &mut [u16]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        let rounded = x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16;
        let nan = (x >> 16) | 0x0040;
        *d = (if x & 0x7FFF_FFFF > 0x7F80_0000 {
            nan
        } else {
            rounded
        }) as u16;
    }
}

fn f32_bits(s: &[f32]) -> &[u32] {
    // f32 and u32 have the same size and alignment, and every bit pattern is valid.
    bytemuck_cast(s)
}

fn bytemuck_cast(s: &[f32]) -> &[u32] {
    // SAFETY: f32 and u32 have identical size and alignment; any bits are a valid u32.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u32>(), s.len()) }
}

fn f32_bits_mut(s: &mut [f32]) -> &mut [u32] {
    // SAFETY: f32 and u32 have identical size and alignment; any bits are a valid f32.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u32>(), s.len()) }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256bh, __m256i, _MM_FROUND_TO_NEAREST_INT, _mm_loadu_si128, _mm_storeu_si128,
        _mm256_cvtph_ps, _mm256_cvtps_ph, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_storeu_si256,
        _mm512_castps_si512, _mm512_cvtneps_pbh, _mm512_loadu_ps, _mm512_set1_epi32,
        _mm512_test_epi32_mask, _mm512_testn_epi32_mask,
    };

    use super::*;

    /// bf16 → f32, integer arithmetic compiled for AVX2.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn bf16_to_f32_avx2(src: &[bf16], dst: &mut [f32]) {
        widen_bf16_bits(src.reinterpret_cast(), f32_bits_mut(dst))
    }

    /// f32 → bf16, integer arithmetic compiled for AVX2.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn f32_to_bf16_avx2(src: &[f32], dst: &mut [bf16]) {
        narrow_bf16_bits(f32_bits(src), dst.reinterpret_cast_mut())
    }

    /// f32 → bf16 with `vcvtneps2bf16`, 16 lanes; blocks holding a subnormal (which the
    /// instruction flushes to zero) take the integer path.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bf16")]
    pub(crate) fn f32_to_bf16_avx512(src: &[f32], dst: &mut [bf16]) {
        let (s16, d16) = (src.chunks_exact(16), dst.chunks_exact_mut(16));
        let tail = s16.remainder().len();
        let exp = _mm512_set1_epi32(0x7F80_0000);
        let man = _mm512_set1_epi32(0x007F_FFFF);
        for (s, d) in s16.zip(d16) {
            // SAFETY: `s` holds 16 f32 and `d` 16 bf16 (unaligned loads and stores).
            unsafe {
                let v = _mm512_loadu_ps(s.as_ptr());
                let x = _mm512_castps_si512(v);
                let subnormal = _mm512_testn_epi32_mask(x, exp) & _mm512_test_epi32_mask(x, man);
                if subnormal == 0 {
                    let b: __m256bh = _mm512_cvtneps_pbh(v);
                    _mm256_storeu_si256(
                        d.as_mut_ptr().cast::<__m256i>(),
                        std::mem::transmute::<__m256bh, __m256i>(b),
                    );
                } else {
                    narrow_bf16_bits(f32_bits(s), d.reinterpret_cast_mut());
                }
            }
        }
        let n = src.len() - tail;
        narrow_bf16_bits(f32_bits(&src[n..]), dst[n..].reinterpret_cast_mut());
    }

    /// f16 → f32 with F16C, 8 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn f16_to_f32_f16c(src: &[f16], dst: &mut [f32]) {
        let (s8, d8) = (src.chunks_exact(8), dst.chunks_exact_mut(8));
        let n = src.len() - s8.remainder().len();
        for (s, d) in s8.zip(d8) {
            // SAFETY: `s` holds 8 f16 (16 bytes) and `d` 8 f32 (unaligned).
            unsafe {
                let h = _mm_loadu_si128(s.as_ptr().cast::<__m128i>());
                _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
        scalar::f16_to_f32(&src[n..], &mut dst[n..]);
    }

    /// f32 → f16 with F16C (round to nearest even), 8 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn f32_to_f16_f16c(src: &[f32], dst: &mut [f16]) {
        let (s8, d8) = (src.chunks_exact(8), dst.chunks_exact_mut(8));
        let n = src.len() - s8.remainder().len();
        for (s, d) in s8.zip(d8) {
            // SAFETY: `s` holds 8 f32 and `d` 8 f16 (16 bytes, unaligned).
            unsafe {
                let v = _mm256_loadu_ps(s.as_ptr());
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm_storeu_si128(d.as_mut_ptr().cast::<__m128i>(), h);
            }
        }
        scalar::f32_to_f16(&src[n..], &mut dst[n..]);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Bit patterns weighted toward the special classes: zeros, subnormals, NaN (quiet and
    /// signalling, both signs, any payload), infinities, values near rounding ties and
    /// near the top of the range.
    fn f32_bits_strategy() -> impl Strategy<Value = u32> {
        prop_oneof![
            any::<u32>(),
            (any::<bool>(), 1u32..0x0080_0000).prop_map(|(s, m)| (s as u32) << 31 | m),
            (any::<bool>(), 1u32..0x0080_0000)
                .prop_map(|(s, m)| (s as u32) << 31 | 0x7F80_0000 | m),
            (any::<bool>(), 0u32..4)
                .prop_map(|(s, k)| (s as u32) << 31
                    | [0, 0x7F80_0000, 0x7F7F_FFFF, 0x3380_0000][k as usize]),
            // Exact ties and their neighbours for both bf16 (bit 15) and f16 (bit 12).
            (any::<u32>(), 0u32..3).prop_map(|(x, d)| (x & !0xFFFF | 0x8000) - 1 + d),
            (any::<u32>(), 0u32..3).prop_map(|(x, d)| (x & !0x1FFF | 0x1000) - 1 + d),
            // f16's subnormal and overflow ranges.
            (any::<bool>(), 0x3300_0000u32..0x3880_0000).prop_map(|(s, m)| (s as u32) << 31 | m),
            (any::<bool>(), 0x4770_0000u32..0x4780_0000).prop_map(|(s, m)| (s as u32) << 31 | m),
        ]
    }

    fn run_tiers<S: Copy + Default + PartialEq + std::fmt::Debug, D, K>(
        src: &[S],
        convert: impl Fn(Tier, &[S], &mut [D]),
        key: K,
    ) -> Vec<Vec<u32>>
    where
        D: Copy + Default,
        K: Fn(D) -> u32,
    {
        let mut tiers = vec![Tier::Scalar];
        if detected() >= Tier::Avx2 {
            tiers.push(Tier::Avx2);
        }
        if detected() >= Tier::Avx512Bf16 {
            tiers.push(Tier::Avx512Bf16);
        }
        tiers
            .into_iter()
            .map(|t| {
                let mut out = vec![D::default(); src.len()];
                convert(t, src, &mut out);
                out.into_iter().map(&key).collect()
            })
            .collect()
    }

    fn narrow_bf16_at(t: Tier, s: &[f32], d: &mut [bf16]) {
        match t {
            Tier::Scalar => scalar::f32_to_bf16(s, d),
            // SAFETY: only called for tiers the CPU has (`run_tiers`).
            Tier::Avx2 => unsafe { x86::f32_to_bf16_avx2(s, d) },
            Tier::Avx512Bf16 => unsafe { x86::f32_to_bf16_avx512(s, d) },
        }
    }

    fn widen_bf16_at(t: Tier, s: &[bf16], d: &mut [f32]) {
        match t {
            Tier::Scalar => scalar::bf16_to_f32(s, d),
            // SAFETY: only called for tiers the CPU has.
            _ => unsafe { x86::bf16_to_f32_avx2(s, d) },
        }
    }

    fn narrow_f16_at(t: Tier, s: &[f32], d: &mut [f16]) {
        match t {
            Tier::Scalar => scalar::f32_to_f16(s, d),
            // SAFETY: only called for tiers the CPU has.
            _ => unsafe { x86::f32_to_f16_f16c(s, d) },
        }
    }

    fn widen_f16_at(t: Tier, s: &[f16], d: &mut [f32]) {
        match t {
            Tier::Scalar => scalar::f16_to_f32(s, d),
            // SAFETY: only called for tiers the CPU has.
            _ => unsafe { x86::f16_to_f32_f16c(s, d) },
        }
    }

    /// A software oracle independent of F16C: f32 → f64 is exact, and `half`'s f64 → f16
    /// rounds once, in software.
    fn f16_oracle(x: f32) -> u16 {
        f16::from_f64(x as f64).to_bits()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn bf16_narrowing_tiers_agree(bits in prop::collection::vec(f32_bits_strategy(), 0..100)) {
            let src: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
            let outs = run_tiers(&src, narrow_bf16_at, |b: bf16| b.to_bits() as u32);
            for o in &outs[1..] {
                prop_assert_eq!(o, &outs[0]);
            }
        }

        #[test]
        fn bf16_widening_tiers_agree(bits in prop::collection::vec(any::<u16>(), 0..100)) {
            let src: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b)).collect();
            let outs = run_tiers(&src, widen_bf16_at, f32::to_bits);
            for o in &outs[1..] {
                prop_assert_eq!(o, &outs[0]);
            }
        }

        #[test]
        fn f16_narrowing_tiers_agree(bits in prop::collection::vec(f32_bits_strategy(), 0..100)) {
            let src: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
            let outs = run_tiers(&src, narrow_f16_at, |h: f16| h.to_bits() as u32);
            for o in &outs[1..] {
                prop_assert_eq!(o, &outs[0]);
            }
            for (x, &h) in src.iter().zip(&outs[outs.len() - 1]) {
                if !x.is_nan() {
                    prop_assert_eq!(h as u16, f16_oracle(*x), "{:08x}", x.to_bits());
                }
            }
        }

        #[test]
        fn f16_widening_tiers_agree(bits in prop::collection::vec(any::<u16>(), 0..100)) {
            let src: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
            let outs = run_tiers(&src, widen_f16_at, f32::to_bits);
            for o in &outs[1..] {
                prop_assert_eq!(o, &outs[0]);
            }
            for (h, &x) in src.iter().zip(&outs[outs.len() - 1]) {
                if !h.is_nan() {
                    prop_assert_eq!(f32::from_bits(x) as f64, h.to_f64());
                }
            }
        }
    }

    #[test]
    fn every_16_bit_pattern_widens_and_renarrows_alike() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        let b: Vec<bf16> = all.iter().map(|&x| bf16::from_bits(x)).collect();
        let h: Vec<f16> = all.iter().map(|&x| f16::from_bits(x)).collect();
        let wb = run_tiers(&b, widen_bf16_at, f32::to_bits);
        let wh = run_tiers(&h, widen_f16_at, f32::to_bits);
        assert!(wb.iter().all(|o| o == &wb[0]));
        assert!(wh.iter().all(|o| o == &wh[0]));
        let fb: Vec<f32> = wb[0].iter().map(|&x| f32::from_bits(x)).collect();
        let fh: Vec<f32> = wh[0].iter().map(|&x| f32::from_bits(x)).collect();
        let nb = run_tiers(&fb, narrow_bf16_at, |x: bf16| x.to_bits() as u32);
        let nh = run_tiers(&fh, narrow_f16_at, |x: f16| x.to_bits() as u32);
        // Round trips are exact except that signalling NaNs come back quiet.
        let expect = |nan_from: u16, quiet: u32| -> Vec<u32> {
            all.iter()
                .map(|&i| i as u32 | if i & 0x7FFF > nan_from { quiet } else { 0 })
                .collect()
        };
        let (want_b, want_h) = (expect(0x7F80, 0x0040), expect(0x7C00, 0x0200));
        assert!(nb.iter().all(|o| o == &want_b));
        assert!(nh.iter().all(|o| o == &want_h));
    }

    #[test]
    fn dispatch_and_chunks_cover_long_slices() {
        let src: Vec<f32> = (0..3 * CHUNK + 17)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let mut b = vec![bf16::ZERO; src.len()];
        f32_to_bf16(&src, &mut b);
        let mut seen = 0;
        for_each_chunk(&b, |off, c| {
            assert_eq!(off, seen);
            for (j, &x) in c.iter().enumerate() {
                assert_eq!(x, bf16::from_f32(src[off + j]).to_f32());
            }
            seen += c.len();
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(seen, src.len());
    }
}
