//! Inverted dropout, with masks drawn reproducibly from a seed.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// Checks `0 ≤ p < 1`.
pub(super) fn check_p(p: f32) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::invalid("p", p, "a dropout probability in [0, 1)"))
    }
}

/// `len` factors: 0 with probability `p`, otherwise `1 / (1 − p)`, drawn from `seed`.
pub(super) fn mask(len: usize, p: f32, seed: u64) -> Vec<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let keep = 1.0 / (1.0 - p);
    // A uniform draw on the 2²⁴ multiples of 2⁻²⁴ in [0, 1): P(u < p) = p (to 2⁻²⁴).
    let threshold = (p as f64 * (1u64 << 24) as f64).ceil() as u64;
    (0..len)
        .map(|_| {
            if (rng.next_u64() >> 40) < threshold {
                0.0
            } else {
                keep
            }
        })
        .collect()
}

/// A seed for stream `index` of `seed` (SplitMix64's finaliser on both): different
/// layers and batches get unrelated masks.
pub(super) fn mix(seed: u64, index: u64) -> u64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    splitmix(seed ^ splitmix(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_drop_a_fraction_p_and_scale_the_rest() {
        for p in [0.0f32, 0.1, 0.5, 0.9] {
            let m = mask(100_000, p, 7);
            let zeros = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
            assert!((zeros - p as f64).abs() < 0.01, "p = {p}: dropped {zeros}");
            assert!(
                m.iter()
                    .all(|&v| v == 0.0 || (v - 1.0 / (1.0 - p)).abs() < 1e-6)
            );
            assert_eq!(m, mask(100_000, p, 7));
        }
        assert_ne!(mask(64, 0.5, 1), mask(64, 0.5, 2));
        assert_ne!(mix(1, 0), mix(1, 1));
        assert_ne!(mix(0, 1), mix(1, 0));
    }

    #[test]
    fn p_must_lie_in_zero_to_one() {
        for p in [-0.1f32, 1.0, 1.5, f32::NAN, f32::INFINITY] {
            assert!(matches!(check_p(p), Err(Error::InvalidParameter { .. })));
        }
        assert!(check_p(0.0).is_ok() && check_p(0.99).is_ok());
    }
}
