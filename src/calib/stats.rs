//! [`LayerStats`]: what a calibration set says about one layer's inputs, and
//! [`CalibrationStats`], those of every layer by weight name.

use std::collections::BTreeMap;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::error::{Error, Result};

/// Rows converted to `f64` and multiplied at once: bounds the scratch memory of
/// [`LayerStats::observe`] (`ROWS_PER_PRODUCT · in · 8` bytes).
const ROWS_PER_PRODUCT: usize = 2048;

/// The statistics of one layer's inputs over a calibration set: `Σ x xᵀ` (`[in, in]`,
/// `f64`; the layer Hessian `2·XᵀX` of the squared output error up to its factor), the
/// number of rows, and per input `Σ|x_j|` and `Σx_j²` (the diagonal of `Σ x xᵀ`).
///
/// A row `x` is one input vector of a Linear layer `[out, in]`, or one im2col column of
/// a Conv2d layer `[out, in, kh, kw]` (`in·kh·kw` values, in the order of the weight's
/// flattened input dimension: channel, kernel row, kernel column). Statistics add:
/// observe more rows, or [`merge`](LayerStats::merge) statistics gathered apart.
///
/// ```
/// use slimnn::calib::LayerStats;
///
/// let mut s = LayerStats::new(2);
/// s.observe(&[1.0, 2.0, 3.0, -4.0], 2, 2)?; // rows [1, 2] and [3, -4]
/// assert_eq!(s.rows(), 2);
/// assert_eq!(s.xtx()[[0, 1]], 1.0 * 2.0 + 3.0 * -4.0);
/// assert_eq!(s.activation_norms()[1], 20f32.sqrt()); // ‖X_1‖₂ = √(2² + 4²)
/// assert_eq!(s.abs_mean()[1], 3.0); // (|2| + |−4|) / 2
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LayerStats {
    xtx: Array2<f64>,
    rows: u64,
    /// `Σ|x_j|`; `None` when the statistics came from a file without it.
    abs_sum: Option<Array1<f64>>,
}

impl LayerStats {
    /// Empty statistics of a layer with `inputs` inputs (zero rows).
    pub fn new(inputs: usize) -> LayerStats {
        LayerStats {
            xtx: Array2::zeros((inputs, inputs)),
            rows: 0,
            abs_sum: Some(Array1::zeros(inputs)),
        }
    }

    /// Statistics from their parts: `xtx` = `Σ x xᵀ` (`[in, in]`), `rows`, and optionally
    /// `Σ|x_j|` (`[in]`). `what` names them in errors.
    ///
    /// Fails with [`Error::BadShape`] if `xtx` is not square, [`Error::ShapeMismatch`] if
    /// `abs_sum` has the wrong length, [`Error::NonFinite`] for a NaN or infinity,
    /// [`Error::InvalidParameter`] for zero rows, a negative diagonal or a negative
    /// `Σ|x_j|`. `xtx` is made exactly symmetric (its upper triangle is kept).
    pub fn from_parts(
        what: &str,
        mut xtx: Array2<f64>,
        rows: u64,
        abs_sum: Option<Array1<f64>>,
    ) -> Result<LayerStats> {
        let (n, m) = xtx.dim();
        if n != m {
            return Err(Error::bad_shape(
                format!("Σ x xᵀ of {what}"),
                &[n, m],
                "must be square [in, in]",
            ));
        }
        check_finite(xtx.iter().copied(), || format!("Σ x xᵀ of {what}"))?;
        if rows == 0 {
            return Err(Error::invalid(
                "rows",
                format!("0 (statistics of {what})"),
                "at least one calibration row",
            ));
        }
        if let Some((j, d)) = xtx.diag().iter().enumerate().find(|(_, d)| **d < 0.0) {
            return Err(Error::invalid(
                "Σ x xᵀ",
                format!("diagonal entry {j} = {d} (statistics of {what})"),
                "a non-negative diagonal (sums of squares)",
            ));
        }
        if let Some(a) = &abs_sum {
            if a.len() != n {
                return Err(Error::ShapeMismatch {
                    what: format!("Σ|x| of {what}"),
                    expected: vec![n],
                    got: vec![a.len()],
                });
            }
            check_finite(a.iter().copied(), || format!("Σ|x| of {what}"))?;
            if let Some(v) = a.iter().find(|v| **v < 0.0) {
                return Err(Error::invalid(
                    "Σ|x|",
                    format!("{v} (statistics of {what})"),
                    "non-negative sums of magnitudes",
                ));
            }
        }
        symmetrize(&mut xtx);
        Ok(LayerStats { xtx, rows, abs_sum })
    }

    /// Adds `n_rows` rows of `n_cols` inputs, row-major in `rows` (an engine's buffer).
    ///
    /// Fails with [`Error::ShapeMismatch`] if `rows.len() != n_rows · n_cols` or
    /// `n_cols` is not this layer's input count, and with [`Error::NonFinite`] for a NaN
    /// or infinity (then nothing is added). The result does not depend on the number of
    /// threads.
    pub fn observe(&mut self, rows: &[f32], n_rows: usize, n_cols: usize) -> Result<()> {
        let expected = n_rows.checked_mul(n_cols).ok_or_else(|| {
            Error::bad_shape("calibration rows", &[n_rows, n_cols], "too many elements")
        })?;
        if rows.len() != expected {
            return Err(Error::ShapeMismatch {
                what: "calibration rows (n_rows · n_cols values)".into(),
                expected: vec![n_rows, n_cols],
                got: vec![rows.len()],
            });
        }
        let view = ArrayView2::from_shape((n_rows, n_cols), rows)?;
        self.observe_view(view)
    }

    /// Adds the rows of `x` (`[rows, in]`, any layout: an im2col matrix `[in, positions]`
    /// is passed as its transpose `cols.t()`).
    pub fn observe_view(&mut self, x: ArrayView2<'_, f32>) -> Result<()> {
        let (n_rows, n_cols) = x.dim();
        if n_cols != self.inputs() {
            return Err(Error::ShapeMismatch {
                what: "calibration rows (one value per layer input)".into(),
                expected: vec![n_rows, self.inputs()],
                got: vec![n_rows, n_cols],
            });
        }
        check_finite(x.iter().map(|&v| v as f64), || {
            "calibration rows".to_string()
        })?;
        let mut scratch = Array2::<f64>::zeros((ROWS_PER_PRODUCT.min(n_rows), n_cols));
        for chunk in x.axis_chunks_iter(Axis(0), ROWS_PER_PRODUCT) {
            let mut xd = scratch.slice_mut(ndarray::s![..chunk.nrows(), ..]);
            xd.zip_mut_with(&chunk, |d, &s| *d = s as f64);
            general_mat_mul(1.0, &xd.t(), &xd, 1.0, &mut self.xtx);
            if let Some(a) = &mut self.abs_sum {
                for row in xd.rows() {
                    a.zip_mut_with(&row, |s, v| *s += v.abs());
                }
            }
        }
        symmetrize(&mut self.xtx);
        self.rows += n_rows as u64;
        Ok(())
    }

    /// Adds `other`'s statistics (gathered on other rows) to these.
    ///
    /// Fails with [`Error::ShapeMismatch`] if the input counts differ. `Σ|x|` is kept
    /// only if both have it.
    pub fn merge(&mut self, other: &LayerStats) -> Result<()> {
        if other.inputs() != self.inputs() {
            return Err(Error::ShapeMismatch {
                what: "statistics merged (Σ x xᵀ)".into(),
                expected: vec![self.inputs(), self.inputs()],
                got: vec![other.inputs(), other.inputs()],
            });
        }
        self.xtx += &other.xtx;
        self.rows += other.rows;
        self.abs_sum = match (self.abs_sum.take(), &other.abs_sum) {
            (Some(mut a), Some(b)) => {
                a += b;
                Some(a)
            }
            _ => None,
        };
        Ok(())
    }

    /// The number of inputs (`in`; `in·kh·kw` for a Conv2d).
    pub fn inputs(&self) -> usize {
        self.xtx.nrows()
    }

    /// The number of rows observed.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// `Σ x xᵀ` over the rows, `[in, in]`, symmetric.
    pub fn xtx(&self) -> ArrayView2<'_, f64> {
        self.xtx.view()
    }

    /// `Σx_j²` per input: the diagonal of [`xtx`](LayerStats::xtx).
    pub fn sq_sum(&self) -> ArrayView1<'_, f64> {
        self.xtx.diag()
    }

    /// `Σ|x_j|` per input, if known (observed rows always; a file only with `absmean`).
    pub fn abs_sum(&self) -> Option<ArrayView1<'_, f64>> {
        self.abs_sum.as_ref().map(|a| a.view())
    }

    /// Mean magnitude `Σ|x_j| / rows` per input (AWQ's activation scale). Without
    /// `Σ|x_j|`, the root mean square `√(Σx_j² / rows)` stands in. Zero with no rows.
    pub fn abs_mean(&self) -> Array1<f64> {
        let n = self.rows.max(1) as f64;
        match &self.abs_sum {
            Some(a) => a.mapv(|v| v / n),
            None => self.sq_sum().mapv(|v| (v / n).sqrt()),
        }
    }

    /// Wanda's `‖X_j‖₂` per input: the square root of the diagonal of `Σ x xᵀ`, ready
    /// for [`PruneContext::activation_norms`](crate::prune::PruneContext::activation_norms).
    pub fn activation_norms(&self) -> Array1<f32> {
        self.sq_sum().mapv(|v| v.sqrt() as f32)
    }

    /// Checks the statistics before a method uses them for a weight of `in_features`
    /// inputs: at least one row, the right size. `what` names the weight.
    pub fn check_for(&self, what: &str, in_features: usize) -> Result<()> {
        if self.inputs() != in_features {
            return Err(Error::ShapeMismatch {
                what: format!("calibration statistics Σ x xᵀ of {what}"),
                expected: vec![in_features, in_features],
                got: vec![self.inputs(), self.inputs()],
            });
        }
        if self.rows == 0 {
            return Err(Error::invalid(
                "rows",
                format!("0 (statistics of {what})"),
                "at least one calibration row",
            ));
        }
        Ok(())
    }
}

/// Copies the upper triangle onto the lower one: a product `XᵀX` summed in a different
/// order on each side of the diagonal becomes exactly symmetric.
fn symmetrize(a: &mut Array2<f64>) {
    let n = a.nrows();
    for i in 0..n {
        for j in 0..i {
            a[[i, j]] = a[[j, i]];
        }
    }
}

/// [`Error::NonFinite`] at the first NaN or infinity of `values`.
fn check_finite(
    values: impl IntoIterator<Item = f64>,
    what: impl FnOnce() -> String,
) -> Result<()> {
    for (index, v) in values.into_iter().enumerate() {
        if !v.is_finite() {
            return Err(Error::NonFinite {
                what: what(),
                index,
                value: v,
            });
        }
    }
    Ok(())
}

/// The calibration statistics of a model: one [`LayerStats`] per weight name, fed by
/// a network run ([`Network::calibration_stats`](crate::nn::Network::calibration_stats)),
/// an engine ([`observe`](CalibrationStats::observe)) or a file
/// ([`CalibrationStats::load`]).
///
/// ```
/// use slimnn::calib::CalibrationStats;
///
/// let mut stats = CalibrationStats::new();
/// // An engine reports the input of `fc1.weight` (3 rows of 4 inputs) as it runs.
/// stats.observe("fc1.weight", &[0.5; 12], 3, 4)?;
/// stats.observe("fc1.weight", &[1.0; 4], 1, 4)?;
/// assert_eq!(stats.get("fc1.weight").unwrap().rows(), 4);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CalibrationStats {
    layers: BTreeMap<String, LayerStats>,
}

impl CalibrationStats {
    /// No statistics.
    pub fn new() -> CalibrationStats {
        CalibrationStats::default()
    }

    /// Adds `n_rows` rows of `n_cols` inputs (row-major) to the statistics of the weight
    /// `name`, creating them on first use. Errors as [`LayerStats::observe`] (a width
    /// other than the first call's is an [`Error::ShapeMismatch`]).
    pub fn observe(
        &mut self,
        name: &str,
        rows: &[f32],
        n_rows: usize,
        n_cols: usize,
    ) -> Result<()> {
        let layer = self
            .layers
            .entry(name.to_string())
            .or_insert_with(|| LayerStats::new(n_cols));
        layer.observe(rows, n_rows, n_cols).map_err(|e| match e {
            Error::ShapeMismatch {
                what,
                expected,
                got,
            } => Error::ShapeMismatch {
                what: format!("{what} of `{name}`"),
                expected,
                got,
            },
            e => e,
        })
    }

    /// Sets the statistics of the weight `name`, replacing any it had.
    pub fn insert(&mut self, name: impl Into<String>, stats: LayerStats) {
        self.layers.insert(name.into(), stats);
    }

    /// The statistics of the weight `name`.
    pub fn get(&self, name: &str) -> Option<&LayerStats> {
        self.layers.get(name)
    }

    /// The statistics of the weight `name`, to add to.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut LayerStats> {
        self.layers.get_mut(name)
    }

    /// The statistics of the weight `name`, or [`Error::MissingStatistic`] naming
    /// `method` if there are none.
    pub fn require(&self, name: &str, method: &'static str) -> Result<&LayerStats> {
        self.get(name).ok_or_else(|| Error::MissingStatistic {
            method,
            statistic: "calibration statistics (Σ x xᵀ)",
            what: format!("`{name}`"),
        })
    }

    /// Adds `other` into these: sums add for a name in both, other names are copied.
    /// Fails (changing nothing) if a name has different input counts in the two.
    pub fn merge(&mut self, other: &CalibrationStats) -> Result<()> {
        for (name, s) in &other.layers {
            if let Some(mine) = self.layers.get(name)
                && mine.inputs() != s.inputs()
            {
                return Err(Error::ShapeMismatch {
                    what: format!("statistics of `{name}` merged"),
                    expected: vec![mine.inputs(), mine.inputs()],
                    got: vec![s.inputs(), s.inputs()],
                });
            }
        }
        for (name, s) in &other.layers {
            match self.layers.get_mut(name) {
                Some(mine) => mine.merge(s)?,
                None => {
                    self.layers.insert(name.clone(), s.clone());
                }
            }
        }
        Ok(())
    }

    /// The weight names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.layers.keys().map(String::as_str)
    }

    /// `(name, statistics)` pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &LayerStats)> {
        self.layers.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// The number of layers with statistics.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no statistics.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
        (0..n * d)
            .map(|i| (((i as u64 * 2_654_435_761 + seed * 97) % 1000) as f32 / 250.0) - 2.0)
            .collect()
    }

    #[test]
    fn observe_is_x_transpose_x() {
        let (n, d) = (4100, 7); // more than one product chunk
        let x = rows(n, d, 1);
        let mut s = LayerStats::new(d);
        s.observe(&x, n, d).unwrap();
        let xm = Array2::from_shape_vec((n, d), x.iter().map(|&v| v as f64).collect()).unwrap();
        let want = xm.t().dot(&xm);
        for (a, b) in s.xtx().iter().zip(want.iter()) {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert_eq!(s.rows(), n as u64);
        let abs: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| (x[i * d + j] as f64).abs()).sum())
            .collect();
        for (a, b) in s.abs_sum().unwrap().iter().zip(&abs) {
            assert!((a - b).abs() <= 1e-9 * b.max(1.0));
        }
        assert_eq!(s.xtx(), s.xtx().t());
    }

    #[test]
    fn merge_equals_observing_everything() {
        let (d, a, b) = (5, rows(30, 5, 2), rows(20, 5, 3));
        let mut all = LayerStats::new(d);
        all.observe(&[a.clone(), b.clone()].concat(), 50, d)
            .unwrap();
        let mut s1 = LayerStats::new(d);
        s1.observe(&a, 30, d).unwrap();
        let mut s2 = LayerStats::new(d);
        s2.observe(&b, 20, d).unwrap();
        s1.merge(&s2).unwrap();
        assert_eq!(s1.rows(), 50);
        for (x, y) in s1.xtx().iter().zip(all.xtx().iter()) {
            assert!((x - y).abs() < 1e-9 * y.abs().max(1.0));
        }
    }

    #[test]
    fn results_do_not_depend_on_threads() {
        let (n, d) = (3000, 64);
        let x = rows(n, d, 4);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut s = LayerStats::new(d);
                    s.observe(&x, n, d).unwrap();
                    s
                })
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn bad_rows_are_typed_errors() {
        let mut s = LayerStats::new(3);
        assert!(matches!(
            s.observe(&[1.0; 5], 2, 3),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            s.observe(&[1.0; 4], 2, 2),
            Err(Error::ShapeMismatch { .. })
        ));
        let e = s.observe(&[1.0, f32::NAN, 0.0], 1, 3).unwrap_err();
        assert!(matches!(e, Error::NonFinite { index: 1, .. }), "{e}");
        assert_eq!(s.rows(), 0);
        assert!(matches!(
            LayerStats::from_parts("w", Array2::zeros((2, 3)), 1, None),
            Err(Error::BadShape { .. })
        ));
        assert!(matches!(
            LayerStats::from_parts("w", Array2::eye(2), 0, None),
            Err(Error::InvalidParameter { .. })
        ));
        let mut h = Array2::eye(2);
        h[[0, 1]] = f64::INFINITY;
        assert!(matches!(
            LayerStats::from_parts("w", h, 1, None),
            Err(Error::NonFinite { .. })
        ));
        let mut c = CalibrationStats::new();
        c.observe("a", &[1.0; 3], 1, 3).unwrap();
        let e = c.observe("a", &[1.0; 4], 1, 4).unwrap_err();
        assert!(e.to_string().contains("`a`"), "{e}");
        assert!(matches!(
            c.require("b", "GPTQ"),
            Err(Error::MissingStatistic { .. })
        ));
    }
}
