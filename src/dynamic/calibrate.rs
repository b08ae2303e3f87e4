//! Routing samples through a chain of exits, and calibrating the exits' thresholds on
//! held-out data to meet an accuracy target relative to the final exit.

use super::policy::{ExitPolicy, PolicyKind, check_logits, score};
use crate::error::{Error, Result};

/// Which exit each sample leaves at, given every exit's logits (`exits[k]` is
/// `[n, classes]` row-major; the last is the final exit) and one policy per early exit
/// (`policies.len() == exits.len() − 1`): the first early exit whose policy admits the
/// sample, or the final exit (index `exits.len() − 1`).
///
/// This is what an early-exit network computes, from logits an engine produced itself;
/// [`EarlyExitNetwork`](super::EarlyExitNetwork) routes the same way while it runs.
///
/// ```
/// use slimnn::dynamic::{ExitPolicy, route};
///
/// let early = [5.0, 0.0, 0.2, 0.0]; // sample 0 is sure at the first exit
/// let last = [0.0, 1.0, 2.0, 0.0];
/// assert_eq!(route(&[&early, &last], 2, &[ExitPolicy::MaxProb(0.9)])?, vec![0, 1]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn route(exits: &[&[f32]], classes: usize, policies: &[ExitPolicy]) -> Result<Vec<usize>> {
    let n = check_exits(exits, classes)?;
    if policies.len() + 1 != exits.len() {
        return Err(Error::ShapeMismatch {
            what: "exit policies (one per early exit)".into(),
            expected: vec![exits.len() - 1],
            got: vec![policies.len()],
        });
    }
    for p in policies {
        p.check()?;
    }
    let last = exits.len() - 1;
    Ok((0..n)
        .map(|i| {
            policies
                .iter()
                .zip(exits)
                .position(|(p, x)| p.admits(score(p.kind(), &x[i * classes..(i + 1) * classes])))
                .unwrap_or(last)
        })
        .collect())
}

/// Calibration of the early exits' thresholds (BranchyNet's thresholds, chosen on a
/// held-out split): the loosest thresholds whose overall accuracy stays within
/// `max_drop_points` percentage points of the final exit's accuracy on the same data.
///
/// The search is greedy from the first exit to the last: each exit in turn takes the
/// loosest threshold (the most samples out) such that the whole chain, with the later
/// exits letting nothing out, still meets the target; earlier exits save the most
/// computation, so they are served first. Each threshold sits exactly at the score of
/// the most confident sample that stays, so the calibration data route as computed.
///
/// ```
/// use slimnn::dynamic::{ExitPolicy, PolicyKind, ThresholdCalibration, route};
///
/// // Three samples, two classes. The early exit is sure and right on sample 0, sure
/// // and wrong on sample 1, unsure on sample 2; the final exit is right on all three.
/// let early = [6.0, 0.0, /**/ 0.0, 3.0, /**/ 0.1, 0.0];
/// let last = [2.0, 0.0, /**/ 2.0, 0.0, /**/ 0.0, 2.0];
/// let labels = [0, 0, 1];
/// let cal = ThresholdCalibration::new(PolicyKind::MaxProb, 0.0)?;
/// let out = cal.calibrate(&[&early, &last], 2, &labels)?;
/// assert_eq!(out.final_accuracy, 1.0);
/// assert_eq!(out.accuracy, 1.0);
/// assert_eq!(out.exit_counts, vec![1, 2]); // only sample 0 leaves early
/// assert_eq!(route(&[&early, &last], 2, &out.policies)?, vec![0, 1, 1]);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThresholdCalibration {
    /// What the policies measure.
    pub kind: PolicyKind,
    /// How far (in percentage points, `≥ 0`) the overall accuracy may fall below the
    /// final exit's.
    pub max_drop_points: f64,
}

/// Thresholds found by [`ThresholdCalibration::calibrate`], with what they give on the
/// calibration data.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibrated {
    /// One policy per early exit.
    pub policies: Vec<ExitPolicy>,
    /// The accuracy of the chain with these policies (a fraction).
    pub accuracy: f64,
    /// The accuracy of the final exit alone (a fraction).
    pub final_accuracy: f64,
    /// How many samples leave at each exit (the final one last).
    pub exit_counts: Vec<usize>,
}

impl ThresholdCalibration {
    /// A calibration of `kind` policies allowing `max_drop_points` (checked).
    pub fn new(kind: PolicyKind, max_drop_points: f64) -> Result<ThresholdCalibration> {
        let c = ThresholdCalibration {
            kind,
            max_drop_points,
        };
        c.check()?;
        Ok(c)
    }

    /// Checks `0 ≤ max_drop_points ≤ 100`.
    pub fn check(&self) -> Result<()> {
        if (0.0..=100.0).contains(&self.max_drop_points) {
            Ok(())
        } else {
            Err(Error::invalid(
                "max_drop_points",
                self.max_drop_points,
                "percentage points in [0, 100]",
            ))
        }
    }

    /// Thresholds for the early exits from every exit's logits on held-out data
    /// (`exits[k]` is `[n, classes]` row-major, the final exit last) and the labels.
    /// Empty data, mismatched lengths, labels `≥ classes` and non-finite logits are typed
    /// errors.
    pub fn calibrate(
        &self,
        exits: &[&[f32]],
        classes: usize,
        labels: &[u32],
    ) -> Result<Calibrated> {
        self.check()?;
        let n = check_exits(exits, classes)?;
        if labels.len() != n {
            return Err(Error::ShapeMismatch {
                what: "calibration labels".into(),
                expected: vec![n],
                got: vec![labels.len()],
            });
        }
        if n == 0 {
            return Err(Error::Empty {
                what: "calibration data".into(),
            });
        }
        if let Some(&bad) = labels.iter().find(|&&y| y as usize >= classes) {
            return Err(Error::invalid(
                "label",
                bad,
                format!("a class below {classes}"),
            ));
        }
        let correct: Vec<Vec<bool>> = exits
            .iter()
            .map(|x| {
                x.chunks_exact(classes)
                    .zip(labels)
                    .map(|(row, &y)| argmax(row) == y as usize)
                    .collect()
            })
            .collect();
        let last = exits.len() - 1;
        let final_correct = correct[last].iter().filter(|&&c| c).count();
        // The fewest correct samples allowed (a small slack absorbs rounding).
        let need = final_correct as f64 - self.max_drop_points / 100.0 * n as f64 - 1e-9;
        let mut remaining: Vec<usize> = (0..n).collect();
        let mut done_correct = 0usize;
        let mut policies = Vec::with_capacity(last);
        for k in 0..last {
            let scores: Vec<f32> = exits[k]
                .chunks_exact(classes)
                .map(|row| score(self.kind, row))
                .collect();
            let better = |a: f32, b: f32| match self.kind {
                PolicyKind::Entropy => a < b,
                PolicyKind::MaxProb => a > b,
            };
            // Most confident first.
            remaining.sort_by(|&a, &b| {
                let (sa, sb) = (scores[a], scores[b]);
                if better(sa, sb) {
                    std::cmp::Ordering::Less
                } else if better(sb, sa) {
                    std::cmp::Ordering::Greater
                } else {
                    a.cmp(&b)
                }
            });
            let r = remaining.len();
            // Correct at the final exit among remaining[m..], for every m.
            let mut rest_final = vec![0usize; r + 1];
            for m in (0..r).rev() {
                rest_final[m] = rest_final[m + 1] + correct[last][remaining[m]] as usize;
            }
            let (mut best, mut early) = (0usize, 0usize);
            let mut early_at_best = 0usize;
            for m in 0..=r {
                if m > 0 {
                    early += correct[k][remaining[m - 1]] as usize;
                }
                // Only cut between different scores (a threshold cannot split ties).
                let cut = m == 0 || m == r || scores[remaining[m - 1]] != scores[remaining[m]];
                if cut && (done_correct + early + rest_final[m]) as f64 >= need {
                    best = m;
                    early_at_best = early;
                }
            }
            let policy = if best == 0 {
                ExitPolicy::never(self.kind)
            } else if best == r {
                match self.kind {
                    PolicyKind::Entropy => ExitPolicy::Entropy(f32::MAX),
                    PolicyKind::MaxProb => ExitPolicy::MaxProb(0.0),
                }
            } else {
                let t = scores[remaining[best]];
                match self.kind {
                    PolicyKind::Entropy => ExitPolicy::Entropy(t),
                    PolicyKind::MaxProb => ExitPolicy::MaxProb(t),
                }
            };
            policies.push(policy);
            done_correct += early_at_best;
            remaining.drain(..best);
        }
        let routes = route(exits, classes, &policies)?;
        let mut exit_counts = vec![0usize; exits.len()];
        let mut right = 0usize;
        for (i, &e) in routes.iter().enumerate() {
            exit_counts[e] += 1;
            right += correct[e][i] as usize;
        }
        Ok(Calibrated {
            policies,
            accuracy: right as f64 / n as f64,
            final_accuracy: final_correct as f64 / n as f64,
            exit_counts,
        })
    }
}

/// Checks every exit's logits (`[n, classes]`, the same `n`, finite); returns `n`.
fn check_exits(exits: &[&[f32]], classes: usize) -> Result<usize> {
    let first = exits.first().ok_or_else(|| Error::Empty {
        what: "exits (at least the final one)".into(),
    })?;
    check_logits(first, classes)?;
    let n = first.len() / classes;
    for (k, x) in exits.iter().enumerate().skip(1) {
        if x.len() != first.len() {
            return Err(Error::ShapeMismatch {
                what: format!("logits of exit {k}"),
                expected: vec![n, classes],
                got: vec![x.len()],
            });
        }
        check_logits(x, classes)?;
    }
    Ok(n)
}

/// The index of the first largest value.
pub(super) fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `n` samples, `exits` exits of `classes` classes, pseudo-random but seeded.
    fn data(n: usize, exits: usize, classes: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<u32>) {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        let labels: Vec<u32> = (0..n).map(|_| (next() * classes as f32) as u32).collect();
        let logits = (0..exits)
            .map(|k| {
                let mut x = Vec::with_capacity(n * classes);
                for &y in &labels {
                    for c in 0..classes {
                        // Later exits see the label more clearly.
                        let signal = if c as u32 == y { 1.0 + k as f32 } else { 0.0 };
                        x.push(signal + 3.0 * next());
                    }
                }
                x
            })
            .collect();
        (logits, labels)
    }

    #[test]
    fn calibration_meets_the_target_and_lets_more_out_as_it_widens() {
        let (logits, labels) = data(400, 3, 4, 1);
        let views: Vec<&[f32]> = logits.iter().map(Vec::as_slice).collect();
        for kind in [PolicyKind::Entropy, PolicyKind::MaxProb] {
            let mut prev_early = 0;
            for drop in [0.0, 1.0, 5.0, 100.0] {
                let out = ThresholdCalibration::new(kind, drop)
                    .unwrap()
                    .calibrate(&views, 4, &labels)
                    .unwrap();
                assert!(out.accuracy >= out.final_accuracy - drop / 100.0 - 1e-12);
                assert_eq!(out.exit_counts.iter().sum::<usize>(), 400);
                let early = out.exit_counts[0];
                assert!(
                    early >= prev_early,
                    "{kind:?} drop {drop}: {early} < {prev_early}"
                );
                prev_early = early;
                if drop == 100.0 {
                    assert_eq!(early, 400, "allowing any drop, everything exits first");
                }
            }
        }
    }

    #[test]
    fn bad_calibration_input_is_a_typed_error() {
        let (logits, labels) = data(10, 2, 3, 2);
        let views: Vec<&[f32]> = logits.iter().map(Vec::as_slice).collect();
        for drop in [-1.0, 101.0, f64::NAN] {
            assert!(matches!(
                ThresholdCalibration::new(PolicyKind::MaxProb, drop),
                Err(Error::InvalidParameter { .. })
            ));
        }
        let cal = ThresholdCalibration::new(PolicyKind::Entropy, 1.0).unwrap();
        assert!(matches!(
            cal.calibrate(&views, 3, &labels[1..]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            cal.calibrate(&[views[0], &views[1][3..]], 3, &labels),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            cal.calibrate(&[], 3, &[]),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            cal.calibrate(&[&[], &[]], 3, &[]),
            Err(Error::Empty { .. })
        ));
        let mut bad = labels.clone();
        bad[0] = 3;
        assert!(matches!(
            cal.calibrate(&views, 3, &bad),
            Err(Error::InvalidParameter { .. })
        ));
        let mut nan = logits[1].clone();
        nan[4] = f32::NAN;
        assert!(matches!(
            cal.calibrate(&[views[0], &nan], 3, &labels),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            route(&views, 3, &[]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            route(&views, 3, &[ExitPolicy::MaxProb(2.0)]),
            Err(Error::InvalidParameter { .. })
        ));
    }

    proptest! {
        #[test]
        fn the_calibrated_chain_never_falls_below_the_target(
            n in 1usize..60,
            exits in 1usize..4,
            classes in 2usize..5,
            seed in any::<u64>(),
            drop in 0.0f64..20.0,
            entropy in any::<bool>(),
        ) {
            let (logits, labels) = data(n, exits, classes, seed);
            let views: Vec<&[f32]> = logits.iter().map(Vec::as_slice).collect();
            let kind = if entropy { PolicyKind::Entropy } else { PolicyKind::MaxProb };
            let out = ThresholdCalibration::new(kind, drop)
                .unwrap()
                .calibrate(&views, classes, &labels)
                .unwrap();
            prop_assert_eq!(out.policies.len(), exits - 1);
            prop_assert!(out.accuracy >= out.final_accuracy - drop / 100.0 - 1e-9);
            // The counts are those of routing with the returned thresholds.
            let routes = route(&views, classes, &out.policies).unwrap();
            for (k, &c) in out.exit_counts.iter().enumerate() {
                prop_assert_eq!(routes.iter().filter(|&&e| e == k).count(), c);
            }
        }
    }
}
