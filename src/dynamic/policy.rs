//! Exit policies: when a sample may leave at an early exit, decided from that exit's
//! logits alone (BranchyNet, Teerapittayanon et al. 2016).

use crate::error::{Error, Result};

/// What an exit policy measures on a row of logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// The entropy of the softmax, in nats (low = confident).
    Entropy,
    /// The largest softmax probability (high = confident).
    MaxProb,
}

/// When a sample leaves at an exit: a test on the softmax of that exit's logits.
///
/// - `Entropy(t)`: the sample exits if the softmax's entropy (in nats) is **below** `t`;
///   `t` is finite and `≥ 0`. `Entropy(0.0)` lets nothing out (an entropy is never
///   negative); a larger `t` lets more out.
/// - `MaxProb(t)`: the sample exits if the largest softmax probability is **above** `t`;
///   `0 ≤ t ≤ 1`. `MaxProb(1.0)` lets nothing out; a smaller `t` lets more out.
///
/// A stricter threshold never lets more samples out: the rows that exit at a stricter
/// threshold are a subset of those that exit at a looser one. Every entry point checks
/// the threshold first ([`ExitPolicy::check`]), so an invalid one is a typed error
/// ([`Error::InvalidParameter`]) before any work.
///
/// ```
/// use slimnn::dynamic::ExitPolicy;
///
/// // Two samples of three classes: a confident one and an unsure one.
/// let logits = [8.0, 0.0, 0.0, 0.1, 0.0, 0.2];
/// assert_eq!(ExitPolicy::MaxProb(0.9).exits(&logits, 3)?, vec![true, false]);
/// assert_eq!(ExitPolicy::Entropy(0.1).exits(&logits, 3)?, vec![true, false]);
/// assert_eq!(ExitPolicy::Entropy(0.0).exits(&logits, 3)?, vec![false, false]);
/// assert!(ExitPolicy::MaxProb(1.5).exits(&logits, 3).is_err());
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ExitPolicy {
    /// Exit when the softmax entropy (nats) is below the threshold (finite, `≥ 0`).
    Entropy(f32),
    /// Exit when the largest softmax probability is above the threshold (`[0, 1]`).
    MaxProb(f32),
}

impl ExitPolicy {
    /// The policy of `kind` that lets nothing out: `Entropy(0)` or `MaxProb(1)`.
    pub fn never(kind: PolicyKind) -> ExitPolicy {
        match kind {
            PolicyKind::Entropy => ExitPolicy::Entropy(0.0),
            PolicyKind::MaxProb => ExitPolicy::MaxProb(1.0),
        }
    }

    /// What the policy measures.
    pub fn kind(&self) -> PolicyKind {
        match self {
            ExitPolicy::Entropy(_) => PolicyKind::Entropy,
            ExitPolicy::MaxProb(_) => PolicyKind::MaxProb,
        }
    }

    /// The threshold.
    pub fn threshold(&self) -> f32 {
        match *self {
            ExitPolicy::Entropy(t) | ExitPolicy::MaxProb(t) => t,
        }
    }

    /// Checks the threshold: finite and `≥ 0` for `Entropy`, in `[0, 1]` for `MaxProb`.
    pub fn check(&self) -> Result<()> {
        match *self {
            ExitPolicy::Entropy(t) if !(t.is_finite() && t >= 0.0) => Err(Error::invalid(
                "entropy threshold",
                t,
                "a finite entropy in nats, ≥ 0 (0 lets nothing out)",
            )),
            ExitPolicy::MaxProb(t) if !(0.0..=1.0).contains(&t) => Err(Error::invalid(
                "max-probability threshold",
                t,
                "a probability in [0, 1] (1 lets nothing out)",
            )),
            _ => Ok(()),
        }
    }

    /// Whether a sample whose [`score`](ExitPolicy::scores) is `score` exits.
    pub fn admits(&self, score: f32) -> bool {
        match *self {
            ExitPolicy::Entropy(t) => score < t,
            ExitPolicy::MaxProb(t) => score > t,
        }
    }

    /// The measured value of each row of `logits` (`[n, classes]`, row-major): the
    /// softmax's entropy in nats for `Entropy`, its largest probability for `MaxProb`.
    /// Checks the shape and that every logit is finite (the threshold is not used).
    pub fn scores(&self, logits: &[f32], classes: usize) -> Result<Vec<f32>> {
        let kind = self.kind();
        check_logits(logits, classes)?;
        Ok(logits
            .chunks_exact(classes)
            .map(|row| score(kind, row))
            .collect())
    }

    /// Which rows of `logits` (`[n, classes]`, row-major) exit. The threshold, the shape
    /// and the logits (finite) are checked first; on error nothing is returned.
    pub fn exits(&self, logits: &[f32], classes: usize) -> Result<Vec<bool>> {
        self.check()?;
        Ok(self
            .scores(logits, classes)?
            .into_iter()
            .map(|s| self.admits(s))
            .collect())
    }
}

/// Checks `logits` is `[n, classes]` with `classes ≥ 1`, every value finite.
pub(super) fn check_logits(logits: &[f32], classes: usize) -> Result<()> {
    if classes == 0 {
        return Err(Error::invalid("classes", classes, "at least 1"));
    }
    if !logits.len().is_multiple_of(classes) {
        return Err(Error::bad_shape(
            "exit logits",
            &[logits.len()],
            format!("a whole number of rows of {classes} classes"),
        ));
    }
    crate::tensor::check_finite(logits, || "exit logits".into())
}

/// The entropy (nats) or the largest probability of the softmax of one finite row.
pub(super) fn score(kind: PolicyKind, row: &[f32]) -> f32 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    // Σ exp(z − max) ≥ 1 (the maximum's term is 1), so ln(sum) ≥ 0.
    let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
    match kind {
        PolicyKind::MaxProb => (1.0 / sum) as f32,
        PolicyKind::Entropy => {
            // H = Σ pᵢ·(lse − zᵢ), each term ≥ 0, so H ≥ 0 even after rounding.
            let ln_sum = sum.ln();
            row.iter()
                .map(|&v| {
                    let gap = (max - v) as f64 + ln_sum;
                    (-gap).exp() * gap
                })
                .sum::<f64>() as f32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scores_are_the_softmax_entropy_and_top_probability() {
        let uniform = [1.0f32; 4];
        let h = ExitPolicy::Entropy(0.5).scores(&uniform, 4).unwrap()[0];
        assert!((h - 4f32.ln()).abs() < 1e-6);
        let p = ExitPolicy::MaxProb(0.5).scores(&uniform, 4).unwrap()[0];
        assert!((p - 0.25).abs() < 1e-7);
        // [ln 3, 0]: probabilities 3/4, 1/4.
        let row = [3f32.ln(), 0.0];
        let h = ExitPolicy::Entropy(0.5).scores(&row, 2).unwrap()[0];
        let want = -(0.75f32 * 0.75f32.ln() + 0.25 * 0.25f32.ln());
        assert!((h - want).abs() < 1e-6);
        assert!((ExitPolicy::MaxProb(0.5).scores(&row, 2).unwrap()[0] - 0.75).abs() < 1e-6);
        // A one-hot softmax: entropy exactly 0, never negative.
        let hot = [1000.0f32, 0.0, -1000.0];
        assert_eq!(ExitPolicy::Entropy(0.0).scores(&hot, 3).unwrap()[0], 0.0);
    }

    #[test]
    fn bad_thresholds_shapes_and_logits_are_typed_errors() {
        for t in [-0.1f32, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                ExitPolicy::Entropy(t).exits(&[0.0, 1.0], 2),
                Err(Error::InvalidParameter { .. })
            ));
        }
        for t in [-0.1f32, 1.01, f32::NAN] {
            assert!(matches!(
                ExitPolicy::MaxProb(t).exits(&[0.0, 1.0], 2),
                Err(Error::InvalidParameter { .. })
            ));
        }
        assert!(matches!(
            ExitPolicy::MaxProb(0.5).exits(&[0.0, 1.0, 2.0], 2),
            Err(Error::BadShape { .. })
        ));
        assert!(matches!(
            ExitPolicy::MaxProb(0.5).exits(&[], 0),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            ExitPolicy::Entropy(0.5).exits(&[0.0, f32::NAN], 2),
            Err(Error::NonFinite { index: 1, .. })
        ));
        assert!(ExitPolicy::MaxProb(0.5).exits(&[], 3).unwrap().is_empty());
    }

    fn logits() -> impl Strategy<Value = (Vec<f32>, usize)> {
        (1usize..6, 0usize..20).prop_flat_map(|(classes, rows)| {
            (
                proptest::collection::vec(-20.0f32..20.0, classes * rows),
                Just(classes),
            )
        })
    }

    proptest! {
        #[test]
        fn a_stricter_threshold_never_lets_more_out(
            (x, classes) in logits(),
            a in 0.0f32..=1.0,
            b in 0.0f32..=1.0,
        ) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            // MaxProb: hi is stricter. Entropy (scaled to ln classes + 1): lo is stricter.
            let top = (classes as f32).ln() + 1.0;
            for (strict, loose) in [
                (ExitPolicy::MaxProb(hi), ExitPolicy::MaxProb(lo)),
                (ExitPolicy::Entropy(lo * top), ExitPolicy::Entropy(hi * top)),
            ] {
                let s = strict.exits(&x, classes).unwrap();
                let l = loose.exits(&x, classes).unwrap();
                prop_assert_eq!(s.len(), x.len() / classes);
                for (s, l) in s.iter().zip(&l) {
                    prop_assert!(!s | l, "a row exits at {:?} but not at {:?}", strict, loose);
                }
            }
        }

        #[test]
        fn the_never_thresholds_let_nothing_out((x, classes) in logits()) {
            for kind in [PolicyKind::Entropy, PolicyKind::MaxProb] {
                let out = ExitPolicy::never(kind).exits(&x, classes).unwrap();
                prop_assert!(out.iter().all(|&e| !e));
            }
        }

        #[test]
        fn a_nan_anywhere_is_a_typed_error((mut x, classes) in logits(), at in any::<usize>()) {
            prop_assume!(!x.is_empty());
            let i = at % x.len();
            x[i] = f32::NAN;
            for p in [ExitPolicy::Entropy(1.0), ExitPolicy::MaxProb(0.5)] {
                let is_non_finite_at_i = matches!(
                    p.exits(&x, classes),
                    Err(Error::NonFinite { index, .. }) if index == i
                );
                prop_assert!(is_non_finite_at_i);
            }
        }
    }
}
