//! [`Rank`]: how many components a low-rank method keeps.

use crate::error::{Error, Result};

/// How the rank is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rank {
    /// Exactly this rank.
    Fixed(usize),
    /// The smallest rank whose components hold this fraction of the energy `Σσ²`
    /// (in `(0, 1]`).
    Energy(f64),
    /// The largest rank whose factors are at least this many times smaller than the
    /// dense weight (`> 1`).
    Compression(f64),
    /// The rank variational Bayesian matrix factorization finds: the components whose
    /// singular values rise above the noise level EVBMF estimates (Nakajima, Sugiyama,
    /// Babacan & Tomioka, "Global Analytic Solution of Fully-observed Variational
    /// Bayesian Matrix Factorization", JMLR 2013), as Kim et al. (ICLR 2016) choose
    /// Tucker ranks.
    Vbmf,
}

impl Rank {
    /// Fails for a rank of 0, an energy outside `(0, 1]` or a compression of 1 or less.
    pub fn check(self) -> Result<Rank> {
        match self {
            Rank::Fixed(0) => Err(Error::invalid("rank", 0, "at least 1")),
            Rank::Energy(e) if !(e > 0.0 && e <= 1.0) => {
                Err(Error::invalid("energy", e, "a fraction in (0, 1]"))
            }
            Rank::Compression(c) if !(c > 1.0 && c.is_finite()) => {
                Err(Error::invalid("compression", c, "a finite ratio above 1"))
            }
            r => Ok(r),
        }
    }

    /// The rank for a matrix of `rows × cols` with singular values `s` (descending; may
    /// be a prefix when only a sketch was computed, with `total_energy` = `‖W‖²_F`),
    /// where each component costs `cost_per_rank` parameters against `dense` for the
    /// whole weight.
    pub(crate) fn choose(
        self,
        s: &[f64],
        total_energy: f64,
        (rows, cols): (usize, usize),
        cost_per_rank: usize,
        dense: usize,
    ) -> Result<usize> {
        let max = rows.min(cols);
        let r = match self.check()? {
            Rank::Fixed(r) => {
                if r > max {
                    return Err(Error::invalid(
                        "rank",
                        r,
                        format!("at most min(rows, cols) = {max}"),
                    ));
                }
                r
            }
            Rank::Energy(e) => {
                let target = e * total_energy;
                let mut acc = 0.0;
                let mut r = 0;
                for &v in s {
                    if acc >= target * (1.0 - 1e-12) {
                        break;
                    }
                    acc += v * v;
                    r += 1;
                }
                if acc < target * (1.0 - 1e-12) {
                    return Err(Error::invalid(
                        "energy",
                        e,
                        format!(
                            "a fraction reachable with the {} computed components",
                            s.len()
                        ),
                    ));
                }
                r.max(1)
            }
            Rank::Compression(c) => {
                let r = (dense as f64 / (c * cost_per_rank as f64)).floor() as usize;
                if r == 0 {
                    return Err(Error::invalid(
                        "compression",
                        c,
                        format!(
                            "a ratio rank 1 can reach (at most {:.2})",
                            dense as f64 / cost_per_rank as f64
                        ),
                    ));
                }
                r.min(max)
            }
            Rank::Vbmf => vbmf_rank(s, rows, cols, total_energy).max(1),
        };
        // A spectrum, when given, may be shorter than min(rows, cols) (a truncated one).
        let known = if s.is_empty() { max } else { s.len() };
        Ok(r.min(max).min(known))
    }
}

/// EVBMF's rank: the number of singular values above the threshold
/// `√(M·σ²·(1 + τ̄)(1 + α/τ̄))`, with `σ²` the noise variance minimising the VB free
/// energy (Nakajima et al. 2013, Theorem 6 and §5; `L ≤ M` the matrix sides, `α = L/M`,
/// `τ̄ = 2.5129·√α`). `residual` is the energy beyond the given singular values. The
/// noise variance is the global minimiser of the free energy on the reference code's
/// interval; the reference's local (Brent) search can stop in a worse local minimum.
pub(crate) fn vbmf_rank(s: &[f64], rows: usize, cols: usize, total_energy: f64) -> usize {
    let (l, m) = (rows.min(cols) as f64, rows.max(cols) as f64);
    let h = s.len();
    if h == 0 {
        return 0;
    }
    let alpha = l / m;
    let tau_bar = 2.5129 * alpha.sqrt();
    let x_bar = (1.0 + tau_bar) * (1.0 + alpha / tau_bar);
    let energy: f64 = s.iter().map(|v| v * v).sum();
    let residual = (total_energy - energy).max(0.0);
    // The noise variance's search interval (the reference implementation's bounds).
    let eh_ub = ((l / (1.0 + alpha)).ceil() as usize)
        .saturating_sub(1)
        .min(h)
        .saturating_sub(1);
    let upper = (energy + residual) / (l * m);
    let tail = &s[(eh_ub + 1).min(h - 1)..];
    let lower = (tail[0] * tail[0] / (m * x_bar))
        .max(tail.iter().map(|v| v * v).sum::<f64>() / tail.len() as f64 / m);
    let tau = |x: f64| {
        0.5 * (x - (1.0 + alpha) + ((x - (1.0 + alpha)).powi(2) - 4.0 * alpha).max(0.0).sqrt())
    };
    let objective = |sigma2: f64| -> f64 {
        let mut obj = residual / (m * sigma2) + (l - h as f64) * sigma2.ln();
        for &v in s {
            let x = v * v / (m * sigma2);
            if x > x_bar {
                let t = tau(x);
                obj += x - t + ((t + 1.0) / x).ln() + alpha * (t / alpha + 1.0).ln();
            } else {
                obj += x - x.ln();
            }
        }
        obj
    };
    // The free energy is only piecewise smooth (a kink wherever an x crosses x̄) and can
    // have several local minima: scan a log grid, then refine in the best cell.
    let sigma2 = if lower > 0.0 && lower < upper {
        const CELLS: usize = 512;
        let step = (upper / lower).ln() / CELLS as f64;
        let at = |k: usize| lower * (step * k as f64).exp();
        let best = (0..=CELLS)
            .min_by(|&a, &b| objective(at(a)).total_cmp(&objective(at(b))))
            .unwrap_or(0);
        golden_min(
            objective,
            at(best.saturating_sub(1)),
            at((best + 1).min(CELLS)),
        )
    } else {
        upper
    };
    let threshold = (m * sigma2 * (1.0 + tau_bar) * (1.0 + alpha / tau_bar)).sqrt();
    s.iter().filter(|&&v| v > threshold).count()
}

/// The minimiser of a unimodal `f` on `[a, b]` by golden-section search.
fn golden_min(f: impl Fn(f64) -> f64, mut a: f64, mut b: f64) -> f64 {
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..200 {
        if (b - a).abs() <= 1e-12 * (a.abs() + b.abs()) {
            break;
        }
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    (a + b) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rank-5 signal plus Gaussian-like noise: EVBMF finds the 5.
    #[test]
    fn vbmf_finds_the_signal_rank() {
        use ndarray::Array2;
        let (m, n) = (60, 40);
        let mut state = 3u64;
        let mut noise = || {
            // Sum of uniforms: close enough to Gaussian for the test.
            (0..12)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (state >> 40) as f64 / (1u64 << 24) as f64
                })
                .sum::<f64>()
                - 6.0
        };
        let mut a = Array2::<f64>::zeros((m, n));
        for k in 0..5 {
            let u: Vec<f64> = (0..m).map(|_| noise()).collect();
            let v: Vec<f64> = (0..n).map(|_| noise()).collect();
            for i in 0..m {
                for j in 0..n {
                    a[[i, j]] += 3.0 * (5 - k) as f64 * u[i] * v[j] / 6.0;
                }
            }
        }
        a.mapv_inplace(|x| x + 0.5 * noise());
        let s = crate::lowrank::linalg::singular_values(a.view()).unwrap();
        let total: f64 = a.iter().map(|x| x * x).sum();
        assert_eq!(vbmf_rank(&s, m, n, total), 5);
    }

    #[test]
    fn energy_and_compression() {
        let s = [3.0, 2.0, 1.0, 0.5];
        let total: f64 = s.iter().map(|v| v * v).sum();
        assert_eq!(
            Rank::Energy(0.9).choose(&s, total, (4, 4), 8, 16).unwrap(),
            2
        );
        assert_eq!(
            Rank::Energy(1.0).choose(&s, total, (4, 4), 8, 16).unwrap(),
            4
        );
        assert_eq!(
            Rank::Compression(2.0)
                .choose(&s, total, (4, 4), 8, 16)
                .unwrap(),
            1
        );
        assert!(
            Rank::Compression(3.0)
                .choose(&s, total, (4, 4), 8, 16)
                .is_err()
        );
        assert!(Rank::Fixed(5).choose(&s, total, (4, 4), 8, 16).is_err());
    }
}
