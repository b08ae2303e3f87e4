//! Choosing the range `[lo, hi]` a uniform quantizer maps onto its integer grid: for
//! weights from the values themselves, for activations from a stream of batches seen by
//! an [`Observer`].

use ndarray::{ArrayRef, IxDyn};

use super::Scheme;
use crate::error::{Error, Result};
use crate::tensor::{check_finite, row_major};

/// How the range is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Calibration {
    /// The minimum and maximum seen: nothing clips.
    #[default]
    MinMax,
    /// Clip at a percentile of the values (e.g. `0.999`): outliers clip, the rest gets
    /// finer steps. Symmetric schemes take the percentile of `|x|`; affine ones clip
    /// both tails at `1 − p` and `p`.
    Percentile(f64),
    /// The clipping range that minimises the mean squared quantization error, searched
    /// over a histogram of the values.
    Mse,
    /// The clipping threshold that minimises the KL divergence between the histogram of
    /// the values and that of their quantized version: TensorRT's entropy calibration
    /// (Migacz, "8-bit Inference with TensorRT", GTC 2017).
    Kl,
}

impl Calibration {
    pub(crate) fn check(self) -> Result<Calibration> {
        match self {
            Calibration::Percentile(p) if !(p > 0.5 && p <= 1.0) => {
                Err(Error::invalid("percentile", p, "a fraction in (0.5, 1]"))
            }
            c => Ok(c),
        }
    }

    /// The range for `values` (finite, non-empty) quantized at `levels` steps.
    /// `magnitude`: calibrate `|x|` (signed symmetric grids) rather than `x`.
    pub(crate) fn range(self, values: &[f32], magnitude: bool, levels: usize) -> (f32, f32) {
        let (lo, hi) = min_max(values);
        if self == Calibration::MinMax || lo == hi {
            return (lo, hi);
        }
        let hist = Histogram::of(values, magnitude, HIST_BINS);
        hist.range(self, levels)
    }
}

/// Bins of the histograms calibration searches over (TensorRT uses 2048).
pub(crate) const HIST_BINS: usize = 2048;

pub(crate) fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// A histogram over `[lo, hi]` (symmetric schemes: of `|x|` over `[0, hi]`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Histogram {
    lo: f32,
    hi: f32,
    counts: Vec<f64>,
    magnitude: bool,
}

impl Histogram {
    pub(crate) fn empty(magnitude: bool, bins: usize) -> Histogram {
        Histogram {
            lo: 0.0,
            hi: 0.0,
            counts: vec![0.0; bins],
            magnitude,
        }
    }

    pub(crate) fn of(values: &[f32], magnitude: bool, bins: usize) -> Histogram {
        let mut h = Histogram::empty(magnitude, bins);
        h.add(values);
        h
    }

    fn width(&self) -> f64 {
        (self.hi as f64 - self.lo as f64) / self.counts.len() as f64
    }

    /// Adds values, widening the range (and re-binning what is there) as needed.
    pub(crate) fn add(&mut self, values: &[f32]) {
        if values.is_empty() {
            return;
        }
        let (lo, hi) = if self.magnitude {
            (0.0, values.iter().fold(0.0f32, |m, v| m.max(v.abs())))
        } else {
            min_max(values)
        };
        let total: f64 = self.counts.iter().sum();
        let (new_lo, new_hi) = if total == 0.0 {
            (lo, hi)
        } else {
            (self.lo.min(lo), self.hi.max(hi))
        };
        if total > 0.0 && (new_lo, new_hi) != (self.lo, self.hi) {
            self.rebin(new_lo, new_hi);
        }
        self.lo = new_lo;
        self.hi = new_hi;
        let bins = self.counts.len();
        let w = self.width();
        for &v in values {
            let v = if self.magnitude { v.abs() } else { v };
            let b = if w > 0.0 {
                ((v as f64 - self.lo as f64) / w) as usize
            } else {
                0
            };
            self.counts[b.min(bins - 1)] += 1.0;
        }
    }

    /// Spreads the counts over a wider range, each old bin proportionally over the new
    /// bins it overlaps.
    fn rebin(&mut self, lo: f32, hi: f32) {
        let bins = self.counts.len();
        let old_w = self.width();
        let new_w = (hi as f64 - lo as f64) / bins as f64;
        let mut counts = vec![0.0; bins];
        for (i, &c) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0.0) {
            let a = self.lo as f64 + i as f64 * old_w;
            let b = a + old_w;
            if old_w == 0.0 || new_w == 0.0 {
                let k = if new_w > 0.0 {
                    ((a - lo as f64) / new_w) as usize
                } else {
                    0
                };
                counts[k.min(bins - 1)] += c;
                continue;
            }
            let first = ((a - lo as f64) / new_w).floor().max(0.0) as usize;
            let mut k = first.min(bins - 1);
            loop {
                let (ka, kb) = (
                    lo as f64 + k as f64 * new_w,
                    lo as f64 + (k + 1) as f64 * new_w,
                );
                let overlap = (b.min(kb) - a.max(ka)).max(0.0);
                counts[k] += c * overlap / old_w;
                if kb >= b || k == bins - 1 {
                    break;
                }
                k += 1;
            }
        }
        self.counts = counts;
    }

    fn center(&self, i: usize) -> f64 {
        self.lo as f64 + (i as f64 + 0.5) * self.width()
    }

    /// The calibrated range.
    pub(crate) fn range(&self, method: Calibration, levels: usize) -> (f32, f32) {
        let full = if self.magnitude {
            (-self.hi, self.hi)
        } else {
            (self.lo, self.hi)
        };
        if self.hi == self.lo || self.counts.iter().sum::<f64>() == 0.0 {
            return full;
        }
        match method {
            Calibration::MinMax => full,
            Calibration::Percentile(p) => {
                if self.magnitude {
                    let t = self.quantile(p) as f32;
                    (-t, t)
                } else {
                    (self.quantile(1.0 - p) as f32, self.quantile(p) as f32)
                }
            }
            Calibration::Mse => self.mse_range(levels),
            Calibration::Kl => self.kl_range(levels),
        }
    }

    /// The value below which a fraction `p` of the counts lies (linear within a bin).
    fn quantile(&self, p: f64) -> f64 {
        let total: f64 = self.counts.iter().sum();
        let target = p.clamp(0.0, 1.0) * total;
        let mut acc = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            if acc + c >= target && c > 0.0 {
                let frac = (target - acc) / c;
                return self.lo as f64 + (i as f64 + frac) * self.width();
            }
            acc += c;
        }
        self.hi as f64
    }

    /// Clipping ranges shrinking from the full one by a common factor, scored by the
    /// squared error of quantizing the histogram's bin centres.
    fn mse_range(&self, levels: usize) -> (f32, f32) {
        let (full_lo, full_hi) = if self.magnitude {
            (-(self.hi as f64), self.hi as f64)
        } else {
            (self.lo as f64, self.hi as f64)
        };
        let steps = (levels.max(2) - 1) as f64;
        let mut best = (f64::INFINITY, full_lo, full_hi);
        for i in 0..100 {
            let f = 1.0 - i as f64 / 100.0;
            let (lo, hi) = ((full_lo * f).min(0.0), (full_hi * f).max(0.0));
            if hi - lo <= 0.0 {
                continue;
            }
            let s = (hi - lo) / steps;
            let err: f64 = self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0.0)
                .map(|(b, &c)| {
                    let x = self.center(b);
                    let q = ((x.clamp(lo, hi) - lo) / s).round() * s + lo;
                    c * (x - q) * (x - q)
                })
                .sum();
            if err < best.0 {
                best = (err, lo, hi);
            }
        }
        (best.1 as f32, best.2 as f32)
    }

    /// TensorRT's entropy calibration on a magnitude histogram: for each candidate
    /// threshold bin `i`, the reference distribution is the first `i` bins with the
    /// clipped tail added to the last; the candidate is that distribution merged into
    /// `levels / 2` quantization bins and expanded back over the non-empty bins; the
    /// threshold minimising KL(reference ‖ candidate) wins.
    fn kl_range(&self, levels: usize) -> (f32, f32) {
        let bins = self.counts.len();
        // A magnitude histogram holds one side of a symmetric grid.
        let q_bins = if self.magnitude { levels / 2 } else { levels }.max(1);
        let mut best = (f64::INFINITY, bins);
        for i in q_bins..=bins {
            let mut p: Vec<f64> = self.counts[..i].to_vec();
            let outliers: f64 = self.counts[i..].iter().sum();
            p[i - 1] += outliers;
            let total_p: f64 = p.iter().sum();
            if total_p == 0.0 {
                continue;
            }
            // Merge the first i bins (without the outliers) into q_bins, then expand.
            let src = &self.counts[..i];
            let mut q = vec![0.0; i];
            for j in 0..q_bins {
                let start = j * i / q_bins;
                let end = ((j + 1) * i / q_bins).max(start + 1).min(i);
                // Spread each merged bin's mass over the bins where the reference has mass.
                let sum: f64 = src[start..end].iter().sum();
                let nonzero = p[start..end].iter().filter(|c| **c > 0.0).count();
                if nonzero > 0 {
                    for k in start..end {
                        if p[k] > 0.0 {
                            q[k] = sum / nonzero as f64;
                        }
                    }
                }
            }
            let total_q: f64 = q.iter().sum();
            let kl: f64 = p
                .iter()
                .zip(&q)
                .filter(|(pi, _)| **pi > 0.0)
                .map(|(&pi, &qi)| {
                    let (pn, qn) = (pi / total_p, qi / total_q.max(f64::MIN_POSITIVE));
                    if qn > 0.0 {
                        pn * (pn / qn).ln()
                    } else {
                        pn * (pn / 1e-12).ln()
                    }
                })
                .sum();
            if kl < best.0 {
                best = (kl, i);
            }
        }
        let t = ((self.lo as f64 + best.1 as f64 * self.width()) as f32).min(self.hi);
        if self.magnitude {
            (-t, t)
        } else {
            (self.lo, t)
        }
    }
}

/// Sees activations batch after batch and says what range to quantize them to.
///
/// ```
/// use ndarray::{Array, IxDyn};
/// use slimnn::quant::{Calibration, HistogramObserver, MinMaxObserver, Observer, Scheme};
///
/// let mut minmax = MinMaxObserver::new();
/// let mut entropy = HistogramObserver::new(Calibration::Kl, Scheme::Symmetric, 8)?;
/// for b in 0..4 {
///     let batch = Array::from_shape_fn(IxDyn(&[64, 32]), |i| ((i[0] * 32 + i[1] + b) as f32 * 0.37).sin());
///     minmax.observe(&batch)?;
///     entropy.observe(&batch)?;
/// }
/// let (lo, hi) = minmax.range()?;
/// assert!(lo >= -1.0 && hi <= 1.0);
/// let (_, t) = entropy.range()?;
/// assert!(t > 0.0 && t <= hi.max(-lo));
/// # Ok::<(), slimnn::Error>(())
/// ```
pub trait Observer: Send {
    /// Takes in one batch. Fails on NaN/Inf or an empty batch.
    fn observe(&mut self, batch: &ArrayRef<f32, IxDyn>) -> Result<()>;
    /// The range to quantize to. Fails if nothing was observed.
    fn range(&self) -> Result<(f32, f32)>;
}

fn check_batch(batch: &ArrayRef<f32, IxDyn>) -> Result<std::borrow::Cow<'_, [f32]>> {
    let v = row_major(batch);
    if v.is_empty() {
        return Err(Error::Empty {
            what: "observed batch".into(),
        });
    }
    check_finite(&v, || "observed batch".into())?;
    Ok(v)
}

fn nothing_observed() -> Error {
    Error::Empty {
        what: "observer (no batch observed yet)".into(),
    }
}

/// The running minimum and maximum (PyTorch's `MinMaxObserver`).
#[derive(Clone, Debug, Default)]
pub struct MinMaxObserver {
    range: Option<(f32, f32)>,
}

impl MinMaxObserver {
    /// An observer that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Observer for MinMaxObserver {
    fn observe(&mut self, batch: &ArrayRef<f32, IxDyn>) -> Result<()> {
        let (lo, hi) = min_max(&check_batch(batch)?);
        self.range = Some(match self.range {
            Some((a, b)) => (a.min(lo), b.max(hi)),
            None => (lo, hi),
        });
        Ok(())
    }

    fn range(&self) -> Result<(f32, f32)> {
        self.range.ok_or_else(nothing_observed)
    }
}

/// An exponential moving average of each batch's minimum and maximum
/// (PyTorch's `MovingAverageMinMaxObserver`): `r ← r + c·(batch − r)`.
#[derive(Clone, Debug)]
pub struct MovingAverageObserver {
    constant: f32,
    range: Option<(f32, f32)>,
}

impl MovingAverageObserver {
    /// Averaging constant `c` in `(0, 1]` (PyTorch's default is 0.01).
    pub fn new(constant: f32) -> Result<Self> {
        if !(constant > 0.0 && constant <= 1.0) {
            return Err(Error::invalid(
                "averaging constant",
                constant,
                "a value in (0, 1]",
            ));
        }
        Ok(MovingAverageObserver {
            constant,
            range: None,
        })
    }
}

impl Observer for MovingAverageObserver {
    fn observe(&mut self, batch: &ArrayRef<f32, IxDyn>) -> Result<()> {
        let (lo, hi) = min_max(&check_batch(batch)?);
        let c = self.constant;
        self.range = Some(match self.range {
            Some((a, b)) => (a + c * (lo - a), b + c * (hi - b)),
            None => (lo, hi),
        });
        Ok(())
    }

    fn range(&self) -> Result<(f32, f32)> {
        self.range.ok_or_else(nothing_observed)
    }
}

/// A histogram of everything observed (re-binned as the range grows), calibrated by
/// percentile, MSE or KL divergence when the range is asked for.
#[derive(Clone, Debug)]
pub struct HistogramObserver {
    method: Calibration,
    levels: usize,
    hist: Histogram,
    seen: bool,
}

impl HistogramObserver {
    /// Calibrates for a `bits`-bit grid (2 to 16 bits) of `scheme` by `method`:
    /// symmetric grids calibrate `|x|` (signed, `2^bits − 1` levels), affine ones `x`
    /// (`2^bits` levels). Fails for bits out of range or a percentile outside (0.5, 1].
    pub fn new(method: Calibration, scheme: Scheme, bits: u8) -> Result<Self> {
        if !(2..=16).contains(&bits) {
            return Err(Error::invalid("bits", bits, "2 to 16 bits"));
        }
        let symmetric = scheme == Scheme::Symmetric;
        Ok(HistogramObserver {
            method: method.check()?,
            levels: (1usize << bits) - symmetric as usize,
            hist: Histogram::empty(symmetric, HIST_BINS),
            seen: false,
        })
    }
}

impl Observer for HistogramObserver {
    fn observe(&mut self, batch: &ArrayRef<f32, IxDyn>) -> Result<()> {
        self.hist.add(&check_batch(batch)?);
        self.seen = true;
        Ok(())
    }

    fn range(&self) -> Result<(f32, f32)> {
        if !self.seen {
            return Err(nothing_observed());
        }
        Ok(self.hist.range(self.method, self.levels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_a_uniform_histogram() {
        let v: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        let h = Histogram::of(&v, false, HIST_BINS);
        let (lo, hi) = h.range(Calibration::Percentile(0.99), 256);
        assert!(
            (lo - 0.01).abs() < 1e-3 && (hi - 0.99).abs() < 1e-3,
            "{lo} {hi}"
        );
    }

    #[test]
    fn rebinning_keeps_the_counts() {
        let mut h = Histogram::empty(false, 64);
        h.add(&[0.0, 0.5, 1.0]);
        h.add(&[-3.0, 4.0]);
        assert!((h.counts.iter().sum::<f64>() - 5.0).abs() < 1e-9);
        assert_eq!((h.lo, h.hi), (-3.0, 4.0));
    }

    #[test]
    fn mse_and_kl_clip_heavy_tails() {
        // Laplace-like values with a few huge outliers: both methods clip well inside.
        let mut v: Vec<f32> = (1..20_000)
            .map(|i| {
                let u = i as f32 / 20_000.0;
                -(1.0 - u).ln() * if i % 2 == 0 { 1.0 } else { -1.0 }
            })
            .collect();
        v.extend([60.0, -55.0]);
        // At 4 bits the steps cost more than clipping two outliers; KL ignores them at 8.
        for (m, levels) in [(Calibration::Mse, 16), (Calibration::Kl, 256)] {
            let (lo, hi) = Calibration::range(m, &v, true, levels);
            assert!(hi < 40.0 && hi > 3.0 && lo == -hi, "{m:?}: {lo} {hi}");
        }
    }
}
