//! Pruning a [`Model`]: selected parameters, statistics by name, masks kept beside the
//! weights until made permanent, and a sparsity report.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use ndarray::{Array1, ArrayD, ArrayViewD};

use super::{GlobalPruner, PruneContext, Pruner, Saliency};
use crate::calib::CalibrationStats;
use crate::error::{Error, Result};
use crate::model::{LayerKind, Model, Param, Selector};

/// Statistics for saliency-based pruning, by parameter name (see [`PruneContext`]).
#[derive(Clone, Debug, Default)]
pub struct Statistics {
    /// ∂L/∂w per parameter.
    pub gradients: HashMap<String, ArrayD<f32>>,
    /// Hessian diagonal per parameter.
    pub hessian_diag: HashMap<String, ArrayD<f32>>,
    /// Input activation norms `‖X_j‖₂` per parameter.
    pub activation_norms: HashMap<String, Array1<f32>>,
    /// Accumulated scores (e.g. movement) per parameter.
    pub scores: HashMap<String, ArrayD<f32>>,
    /// Calibration statistics of the layers' inputs, by weight name (shared, as they can
    /// be large). Names the model lacks are ignored: a statistics file may cover more
    /// layers than are pruned.
    pub calibration: Option<Arc<CalibrationStats>>,
}

impl Statistics {
    /// No statistics (enough for magnitude, random and structured pruning).
    pub fn new() -> Statistics {
        Statistics::default()
    }

    /// Adds a gradient.
    pub fn with_gradient(mut self, name: impl Into<String>, g: ArrayD<f32>) -> Self {
        self.gradients.insert(name.into(), g);
        self
    }

    /// Adds a Hessian diagonal.
    pub fn with_hessian_diag(mut self, name: impl Into<String>, h: ArrayD<f32>) -> Self {
        self.hessian_diag.insert(name.into(), h);
        self
    }

    /// Adds input activation norms.
    pub fn with_activation_norms(mut self, name: impl Into<String>, n: Array1<f32>) -> Self {
        self.activation_norms.insert(name.into(), n);
        self
    }

    /// Adds accumulated scores.
    pub fn with_scores(mut self, name: impl Into<String>, s: ArrayD<f32>) -> Self {
        self.scores.insert(name.into(), s);
        self
    }

    /// Adds calibration statistics (for Wanda and the data-aware pruners).
    pub fn with_calibration(mut self, stats: Arc<CalibrationStats>) -> Self {
        self.calibration = Some(stats);
        self
    }

    /// Fails with [`Error::UnknownParameter`] for a statistic of a name the model lacks.
    fn check_names(&self, model: &Model) -> Result<()> {
        let names = self
            .gradients
            .keys()
            .chain(self.hessian_diag.keys())
            .chain(self.activation_norms.keys())
            .chain(self.scores.keys());
        for n in names {
            if !model.contains(n) {
                return Err(Error::UnknownParameter(n.clone()));
            }
        }
        Ok(())
    }

    fn context<'a>(&'a self, p: &'a Param) -> PruneContext<'a, f32> {
        let name = p.name();
        PruneContext {
            name: Some(name),
            kind: Some(p.kind()),
            seed: 0,
            mask: p.mask(),
            gradient: self.gradients.get(name).map(|a| a.view()),
            hessian_diag: self.hessian_diag.get(name).map(|a| a.view()),
            activation_norms: self.activation_norms.get(name).map(|a| a.view()),
            scores: self.scores.get(name).map(|a| a.view()),
            layer_stats: self.calibration.as_ref().and_then(|c| c.get(name)),
        }
    }
}

/// Whether `pruned` (a pruner's output) differs from `stored` at a weight `mask` keeps:
/// the pruner updated the kept weights.
fn changes_kept(pruned: &ArrayD<f32>, stored: &ArrayD<f32>, mask: &crate::Mask) -> bool {
    pruned
        .iter()
        .zip(stored.iter())
        .enumerate()
        .any(|(i, (a, b))| a.to_bits() != b.to_bits() && mask.get(i))
}

/// The values a pruner sees: the stored ones with the existing mask applied.
fn effective(p: &Param) -> Cow<'_, ArrayD<f32>> {
    match p.mask() {
        Some(_) => Cow::Owned(p.effective()),
        None => Cow::Borrowed(p.value()),
    }
}

impl Model {
    /// Prunes each selected parameter with `pruner` ([`Pruner::prune`]), keeping the
    /// masks beside the weights.
    ///
    /// Masks are monotone: a weight an earlier call pruned stays pruned, and built-in
    /// pruners count it toward their target. A pruner that updates the kept weights
    /// (SparseGPT, OBS) leaves the parameter its new values, pruned ones 0 (the values
    /// before are gone; others keep the values under the mask); on a quantized parameter
    /// that is refused with [`Error::FormConflict`] (prune before quantizing). Either
    /// every selected parameter gets its mask or, on error, none does; a factorized
    /// parameter among the selected is refused with [`Error::FormConflict`] before any
    /// work.
    ///
    /// ```
    /// use ndarray::{ArrayD, IxDyn};
    /// use slimnn::prune::{MagnitudePruner, Statistics};
    /// use slimnn::{Model, Selector};
    ///
    /// let mut model = Model::new();
    /// model.add("fc.weight", ArrayD::from_shape_fn(IxDyn(&[4, 5]), |i| (i[0] * 5 + i[1]) as f32))?;
    /// model.add("fc.bias", ArrayD::ones(IxDyn(&[4])))?;
    /// let report = model.prune(&Selector::prunable(), &MagnitudePruner::magnitude(0.75)?, &Statistics::new())?;
    /// assert_eq!(report.total_zeros(), 15);
    /// model.make_permanent(&Selector::all())?;
    /// assert_eq!(model.get("fc.weight")?.value()[[3, 4]], 19.0);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn prune<P: Pruner<f32> + ?Sized>(
        &mut self,
        selector: &Selector,
        pruner: &P,
        stats: &Statistics,
    ) -> Result<PruneReport> {
        stats.check_names(self)?;
        let names: Vec<String> = self
            .select(selector)?
            .into_iter()
            .map(String::from)
            .collect();
        self.check_can_mask(&names)?;
        let mut masks = Vec::with_capacity(names.len());
        let mut updated = Vec::new();
        for name in &names {
            let p = self.get(name)?;
            let mut values = p.effective();
            let ctx = stats.context(p);
            let mask = pruner.prune(&mut values, &ctx)?;
            crate::tensor::check_same_shape(p.shape(), mask.shape(), || {
                format!("mask the pruner gave `{name}`")
            })?;
            let mask = match p.mask() {
                Some(old) => old.and(&mask)?,
                None => mask,
            };
            if changes_kept(&values, p.value(), &mask) {
                if p.quantized().is_some() {
                    return Err(Error::FormConflict {
                        name: name.clone(),
                        held: "quantized".into(),
                        requested: format!("pruned with weight updates ({})", pruner.describe()),
                        hint: "prune before quantizing".into(),
                    });
                }
                updated.push((name.clone(), values));
            }
            masks.push(mask);
        }
        // Everything is checked before the model changes.
        for (name, values) in updated {
            self.get_mut(&name)?.value_mut().assign(&values);
        }
        self.set_masks(&names, masks)
    }

    /// Prunes the selected parameters together with one global threshold.
    ///
    /// Masks are monotone as with [`Model::prune`]; weights already pruned count toward
    /// the global target.
    pub fn prune_global<S: Saliency<f32>>(
        &mut self,
        selector: &Selector,
        pruner: &GlobalPruner<S>,
        stats: &Statistics,
    ) -> Result<PruneReport> {
        stats.check_names(self)?;
        let names: Vec<String> = self
            .select(selector)?
            .into_iter()
            .map(String::from)
            .collect();
        self.check_can_mask(&names)?;
        let params: Vec<&Param> = names.iter().map(|n| self.get(n)).collect::<Result<_>>()?;
        let values: Vec<Cow<'_, ArrayD<f32>>> = params.iter().map(|p| effective(p)).collect();
        let views: Vec<ArrayViewD<'_, f32>> = values.iter().map(|v| v.view()).collect();
        let ctxs: Vec<PruneContext<'_, f32>> = params.iter().map(|p| stats.context(p)).collect();
        let masks = pruner
            .masks(&views, &ctxs)?
            .into_iter()
            .zip(&params)
            .map(|(m, p)| match p.mask() {
                Some(old) => old.and(&m),
                None => Ok(m),
            })
            .collect::<Result<Vec<_>>>()?;
        self.set_masks(&names, masks)
    }

    /// Fails with [`Error::FormConflict`] before any work if a named parameter cannot
    /// take a mask (it is factorized).
    fn check_can_mask(&self, names: &[String]) -> Result<()> {
        for n in names {
            self.get(n)?.check_can_mask()?;
        }
        Ok(())
    }

    fn set_masks(&mut self, names: &[String], masks: Vec<crate::Mask>) -> Result<PruneReport> {
        for (name, mask) in names.iter().zip(masks) {
            self.get_mut(name)?.set_mask(mask)?;
        }
        self.report_of(names.iter().map(String::as_str))
    }

    /// For each selected weight with a mask, masks the bias entries of the output channels
    /// whose weights are all pruned: a removed neuron or filter then contributes nothing,
    /// and [`Model::remove_pruned_channels`] can drop it. Biases are found by name
    /// (`x.weight` → `x.bias`). Returns the number of bias entries masked.
    pub fn mask_biases_of_pruned_channels(&mut self, selector: &Selector) -> Result<usize> {
        let mut masked = 0;
        let mut new_masks = Vec::new();
        for name in self
            .select(selector)?
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
        {
            let p = self.get(&name)?;
            let (Some(mask), Some(axis), Some(bias)) =
                (p.mask(), p.kind().output_axis(), self.bias_of(&name))
            else {
                continue;
            };
            let dead = super::structured::zero_channels(&mask.to_array::<f32>(), axis);
            let bias = bias.to_string();
            let b = self.get(&bias)?;
            if b.shape() != [dead.len()] {
                return Err(Error::ShapeMismatch {
                    what: format!("bias `{bias}` of `{name}`"),
                    expected: vec![dead.len()],
                    got: b.shape().to_vec(),
                });
            }
            let old = b
                .mask()
                .cloned()
                .unwrap_or_else(|| crate::Mask::ones(&[dead.len()]));
            let new = old.and(&crate::Mask::from_fn(&[dead.len()], |c| !dead[c]))?;
            masked += old.count_kept() - new.count_kept();
            b.check_can_mask()?;
            new_masks.push((bias, new));
        }
        // Everything is checked before the model changes.
        for (bias, mask) in new_masks {
            self.get_mut(&bias)?.set_mask(mask)?;
        }
        Ok(masked)
    }

    /// Applies the masks of the selected parameters to their values and drops the masks
    /// (PyTorch's `prune.remove`). Returns the sparsity of what was selected.
    pub fn make_permanent(&mut self, selector: &Selector) -> Result<PruneReport> {
        let names: Vec<String> = self
            .select(selector)?
            .into_iter()
            .map(String::from)
            .collect();
        for n in &names {
            self.get_mut(n)?.make_permanent();
        }
        self.sparsity(selector)
    }

    /// The sparsity of the selected parameters (masked or zero-valued weights).
    pub fn sparsity(&self, selector: &Selector) -> Result<PruneReport> {
        self.report_of(self.select(selector)?.into_iter())
    }

    fn report_of<'n>(&self, names: impl Iterator<Item = &'n str>) -> Result<PruneReport> {
        let rows = names
            .map(|n| {
                let p = self.get(n)?;
                Ok(SparsityRow {
                    name: p.name().to_string(),
                    kind: p.kind(),
                    shape: p.shape().to_vec(),
                    numel: p.numel(),
                    zeros: p.zeros(),
                    masked: p.masked_count(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(PruneReport { rows })
    }
}

/// One parameter's line in a [`PruneReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparsityRow {
    /// Parameter name.
    pub name: String,
    /// Its kind.
    pub kind: LayerKind,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Number of weights.
    pub numel: usize,
    /// Number of zero weights: pruned by a mask, or zero-valued (which includes
    /// weights pruned earlier and made permanent).
    pub zeros: usize,
    /// Number of weights the attached mask prunes (0 without a mask).
    pub masked: usize,
}

/// Sparsity per parameter and in total; prints as an aligned table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// One row per parameter, in model order.
    pub rows: Vec<SparsityRow>,
}

impl PruneReport {
    /// Total weights.
    pub fn total_numel(&self) -> usize {
        self.rows.iter().map(|r| r.numel).sum()
    }

    /// Total zero weights.
    pub fn total_zeros(&self) -> usize {
        self.rows.iter().map(|r| r.zeros).sum()
    }

    /// Total weights pruned by attached masks.
    pub fn total_masked(&self) -> usize {
        self.rows.iter().map(|r| r.masked).sum()
    }

    /// Total zeros / total weights.
    pub fn sparsity(&self) -> f64 {
        self.total_zeros() as f64 / self.total_numel().max(1) as f64
    }
}

impl fmt::Display for PruneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = |s: &[usize]| s.iter().map(usize::to_string).collect::<Vec<_>>().join("x");
        let name_w = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0)
            .max(9);
        let shape_w = self
            .rows
            .iter()
            .map(|r| shape(&r.shape).len())
            .max()
            .unwrap_or(0)
            .max(5);
        writeln!(
            f,
            "{:<name_w$}  {:<9}  {:<shape_w$}  {:>12}  {:>12}  {:>8}",
            "parameter", "kind", "shape", "weights", "zeros", "sparsity"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<name_w$}  {:<9}  {:<shape_w$}  {:>12}  {:>12}  {:>7.2}%{}",
                r.name,
                r.kind.to_string(),
                shape(&r.shape),
                r.numel,
                r.zeros,
                100.0 * r.zeros as f64 / r.numel.max(1) as f64,
                if r.masked > 0 { "  (masked)" } else { "" }
            )?;
        }
        write!(
            f,
            "{:<name_w$}  {:<9}  {:<shape_w$}  {:>12}  {:>12}  {:>7.2}%",
            "total",
            "",
            "",
            self.total_numel(),
            self.total_zeros(),
            100.0 * self.sparsity()
        )
    }
}
