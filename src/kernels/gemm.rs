//! The f32 × code dot product of the group-quantized product ([`dot_codes`]). The int8
//! Linear product lives in [`super::int8`].

use super::kernel;

#[inline(always)]
fn dot_codes_body(x: &[f32], codes: &[u8]) -> f32 {
    // Eight partial sums let the loop vectorize (float addition is not associative).
    let mut acc = [0.0f32; 8];
    let blocks = x.len() / 8 * 8;
    for (xs, cs) in x[..blocks]
        .chunks_exact(8)
        .zip(codes[..blocks].chunks_exact(8))
    {
        for l in 0..8 {
            acc[l] += xs[l] * cs[l] as f32;
        }
    }
    let tail: f32 = x[blocks..]
        .iter()
        .zip(&codes[blocks..])
        .map(|(&v, &c)| v * c as f32)
        .sum();
    acc.iter().sum::<f32>() + tail
}

kernel! {
    /// `Σ x[i]·codes[i]` in f32, over slices of equal length.
    fn dot_codes(x: &[f32], codes: &[u8]) -> f32 => dot_codes_body
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "x86_64")]
    use proptest::prelude::*;

    proptest! {
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn dot_codes_twins_agree(x in prop::collection::vec(-1.0f32..1.0, 0..100), seed in any::<u8>()) {
            if !crate::kernels::simd_in_use() {
                return Ok(());
            }
            let codes: Vec<u8> = (0..x.len()).map(|i| (i as u8).wrapping_mul(seed) % 16).collect();
            let fast = dot_codes(&x, &codes);
            let slow = dot_codes::scalar(&x, &codes);
            prop_assert!((fast - slow).abs() <= 1e-4 * (1.0 + slow.abs()));
        }
    }
}
