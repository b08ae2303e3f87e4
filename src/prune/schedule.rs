//! [`Schedule`]: how sparse to be at each training step.

use crate::error::{Error, Result};

/// The target sparsity at each training step, for prune-and-retrain loops.
///
/// Every schedule is non-decreasing, so with the monotone masks of
/// [`Model::prune`](crate::Model::prune) a pruned weight stays pruned.
///
/// ```
/// use slimnn::prune::Schedule;
///
/// // Zhu & Gupta's AGP: from 0 to 90% over 10 pruning steps, one every 100 steps from 1000.
/// let s = Schedule::agp(0.0, 0.9, 1000, 10, 100)?;
/// assert_eq!(s.sparsity_at(0), 0.0);
/// assert_eq!(s.sparsity_at(1000), 0.0);
/// assert!((s.sparsity_at(1100) - 0.2439).abs() < 1e-4);
/// assert_eq!(s.sparsity_at(1150), s.sparsity_at(1100)); // held between pruning steps
/// assert_eq!(s.sparsity_at(2000), 0.9);
/// assert_eq!(s.end(), 2000);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    OneShot {
        target: f64,
        at: usize,
    },
    Constant {
        sparsity: f64,
    },
    Agp {
        initial: f64,
        target: f64,
        start: usize,
        steps: usize,
        frequency: usize,
    },
}

fn fraction(name: &'static str, x: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(Error::invalid(name, x, "a sparsity in [0, 1]"))
    }
}

impl Schedule {
    /// Dense before step `at`, `target` from `at` on: prune once, then retrain.
    pub fn one_shot(target: f64, at: usize) -> Result<Schedule> {
        Ok(Schedule {
            kind: Kind::OneShot {
                target: fraction("target", target)?,
                at,
            },
        })
    }

    /// `sparsity` at every step (e.g. to keep re-applying a fixed level while training).
    pub fn constant(sparsity: f64) -> Result<Schedule> {
        Ok(Schedule {
            kind: Kind::Constant {
                sparsity: fraction("sparsity", sparsity)?,
            },
        })
    }

    /// Automated gradual pruning (Zhu & Gupta, "To prune, or not to prune", 2017):
    /// `s_t = s_f + (s_i − s_f)·(1 − (t − t₀)/(n·Δt))³` at the pruning steps
    /// `t = t₀, t₀ + Δt, …, t₀ + n·Δt`, held in between; 0 before `start`.
    ///
    /// `initial` = s_i ≤ `target` = s_f, `start` = t₀, `steps` = n ≥ 1 pruning steps,
    /// `frequency` = Δt ≥ 1 training steps between them.
    pub fn agp(
        initial: f64,
        target: f64,
        start: usize,
        steps: usize,
        frequency: usize,
    ) -> Result<Schedule> {
        let initial = fraction("initial", initial)?;
        let target = fraction("target", target)?;
        if initial > target {
            return Err(Error::invalid(
                "initial",
                initial,
                format!("at most the target sparsity {target}"),
            ));
        }
        if steps == 0 {
            return Err(Error::invalid("steps", steps, "at least one pruning step"));
        }
        if frequency == 0 {
            return Err(Error::invalid(
                "frequency",
                frequency,
                "at least 1 step between pruning steps",
            ));
        }
        if steps
            .checked_mul(frequency)
            .and_then(|s| s.checked_add(start))
            .is_none()
        {
            return Err(Error::invalid(
                "steps",
                steps,
                "start + steps·frequency within usize",
            ));
        }
        Ok(Schedule {
            kind: Kind::Agp {
                initial,
                target,
                start,
                steps,
                frequency,
            },
        })
    }

    /// The sparsity to hold at training step `step`.
    pub fn sparsity_at(&self, step: usize) -> f64 {
        match self.kind {
            Kind::OneShot { target, at } => {
                if step >= at {
                    target
                } else {
                    0.0
                }
            }
            Kind::Constant { sparsity } => sparsity,
            Kind::Agp {
                initial,
                target,
                start,
                steps,
                frequency,
            } => {
                if step < start {
                    return 0.0;
                }
                let done = ((step - start) / frequency).min(steps);
                if done == steps {
                    return target;
                }
                if done == 0 {
                    return initial;
                }
                let progress = done as f64 / steps as f64;
                target + (initial - target) * (1.0 - progress).powi(3)
            }
        }
    }

    /// Whether the sparsity may change at `step` (when to prune).
    pub fn is_pruning_step(&self, step: usize) -> bool {
        match self.kind {
            Kind::OneShot { at, .. } => step == at,
            Kind::Constant { .. } => true,
            Kind::Agp {
                start,
                steps,
                frequency,
                ..
            } => {
                step >= start
                    && (step - start).is_multiple_of(frequency)
                    && (step - start) / frequency <= steps
            }
        }
    }

    /// The first step at which the final sparsity holds.
    pub fn end(&self) -> usize {
        match self.kind {
            Kind::OneShot { at, .. } => at,
            Kind::Constant { .. } => 0,
            Kind::Agp {
                start,
                steps,
                frequency,
                ..
            } => start + steps * frequency,
        }
    }

    /// The final sparsity.
    pub fn target(&self) -> f64 {
        match self.kind {
            Kind::OneShot { target, .. } | Kind::Agp { target, .. } => target,
            Kind::Constant { sparsity } => sparsity,
        }
    }
}
