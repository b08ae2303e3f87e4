//! [`Amount`]: how much to prune, as a fraction or a count.

use crate::error::{Error, Result};

/// How much to prune: a fraction of the elements (or channels) in `[0, 1]`, or an exact
/// count. `0.9` and `Amount::Fraction(0.9)` are the same; so are `100usize` and
/// `Amount::Count(100)`. A fraction `s` of `n` prunes exactly `round(s·n)`, halves
/// rounded to even as Python's `round` does, so counts match PyTorch's `amount`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// A fraction in `[0, 1]`.
    Fraction(f64),
    /// An exact count.
    Count(usize),
}

impl From<f64> for Amount {
    fn from(f: f64) -> Self {
        Amount::Fraction(f)
    }
}

impl From<usize> for Amount {
    fn from(c: usize) -> Self {
        Amount::Count(c)
    }
}

/// `"50%"` for a fraction, the number for a count.
impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Amount::Fraction(x) => {
                let pct = format!("{:.2}", 100.0 * x);
                let pct = pct.trim_end_matches('0').trim_end_matches('.');
                write!(f, "{pct}%")
            }
            Amount::Count(c) => write!(f, "{c}"),
        }
    }
}

impl Amount {
    /// Fails unless a fraction is finite and within `[0, 1]`.
    pub fn check(self) -> Result<Amount> {
        match self {
            Amount::Fraction(f) if !(0.0..=1.0).contains(&f) => {
                Err(Error::invalid("sparsity", f, "a fraction in [0, 1]"))
            }
            a => Ok(a),
        }
    }

    /// How many of `n` items this amount prunes. Fails for a count above `n`.
    pub fn count_of(self, n: usize) -> Result<usize> {
        match self.check()? {
            Amount::Fraction(f) => Ok(((n as f64) * f).round_ties_even().min(n as f64) as usize),
            Amount::Count(c) if c > n => Err(Error::invalid(
                "amount",
                c,
                format!("a count of at most {n}, the number of items"),
            )),
            Amount::Count(c) => Ok(c),
        }
    }
}
