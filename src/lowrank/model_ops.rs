//! Factorizing a [`Model`]'s selected weights, one method for all or one budget over all.

use std::fmt;

use super::{
    Budget, Factorization, LayerSpectrum, LowRank, LowRankContext, Rank, TruncatedSvd,
    allocate_ranks,
};
use crate::error::Result;
use crate::model::{LayerKind, Model, Selector};

impl Model {
    /// Factorizes each selected parameter with `method`. Each parameter keeps its
    /// factors and takes their reconstruction as its value, and the report holds the
    /// factorizations, to run as smaller layers. A low-rank weight is dense: a pruned or
    /// quantized parameter among the selected is refused with
    /// [`Error::FormConflict`](crate::Error::FormConflict) before any work (quantize
    /// after factorizing: the factors get quantized). Either every selected parameter
    /// is factorized or, on error, none.
    ///
    /// ```
    /// use ndarray::{Array, IxDyn};
    /// use slimnn::lowrank::{Rank, TruncatedSvd};
    /// use slimnn::{Model, Selector};
    ///
    /// let mut model = Model::new();
    /// model.add("fc.weight", Array::from_shape_fn(IxDyn(&[64, 32]), |i| ((i[0] * i[1]) as f32 * 0.01).cos()))?;
    /// let report = model.factorize(&Selector::prunable(), &TruncatedSvd::new(Rank::Energy(0.99))?)?;
    /// assert!(report.params() < report.dense_params());
    /// assert!(report.layers[0].factorization.relative_error().unwrap() <= 0.1);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn factorize<L: LowRank + ?Sized>(
        &mut self,
        selector: &Selector,
        method: &L,
    ) -> Result<LowRankReport> {
        let names = self.selected_names(selector)?;
        self.check_can_factorize(&names)?;
        self.factorize_each(names, |name, p| {
            // The convolution's geometry, if known (a model has no graph).
            let ctx = LowRankContext {
                name: Some(name),
                kind: Some(p.kind()),
                conv: p.conv_spec().unwrap_or_default(),
                ..LowRankContext::default()
            };
            method.factorize(&p.effective(), &ctx)
        })
    }

    /// Factorizes the selected Linear weights by truncated SVD with the ranks
    /// [`allocate_ranks`] chooses to meet one parameter or FLOP budget over all of them
    /// with the least total relative error; otherwise as [`Model::factorize`]. A layer
    /// whose factorization would reach its break-even rank, and so save almost nothing,
    /// stays dense when the budget affords it (it is then not in the report).
    ///
    /// ```
    /// use ndarray::{Array, IxDyn};
    /// use slimnn::lowrank::Budget;
    /// use slimnn::{Model, Selector};
    ///
    /// let mut model = Model::new();
    /// model.add("fc1.weight", Array::from_shape_fn(IxDyn(&[64, 32]), |i| ((i[0] + 2 * i[1]) as f32).sin()))?;
    /// model.add("fc2.weight", Array::from_shape_fn(IxDyn(&[10, 64]), |i| ((i[0] * i[1]) as f32).cos()))?;
    /// let report = model.factorize_within(&Selector::prunable(), Budget::Params(1000))?;
    /// assert!(report.params() <= 1000);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn factorize_within(
        &mut self,
        selector: &Selector,
        budget: Budget,
    ) -> Result<LowRankReport> {
        let names = self.selected_names(selector)?;
        self.check_can_factorize(&names)?;
        let mut spectra = Vec::with_capacity(names.len());
        for name in &names {
            let ctx = LowRankContext::new().with_name(name);
            spectra.push(LayerSpectrum::linear(&self.get(name)?.effective(), &ctx)?);
        }
        let ranks = allocate_ranks(&spectra, budget)?;
        // Rank 0: the layer stays dense (its factorization would save nothing).
        let (names, ranks): (Vec<String>, Vec<usize>) =
            names.into_iter().zip(ranks).filter(|&(_, r)| r > 0).unzip();
        let mut ranks = ranks.into_iter();
        self.factorize_each(names, |name, p| {
            let r = ranks.next().expect("one rank per name");
            let ctx = LowRankContext::new().with_name(name);
            TruncatedSvd::new(Rank::Fixed(r))?.factorize(&p.effective(), &ctx)
        })
    }

    /// Factorizes each named parameter with `factorize`, then, only if all succeeded,
    /// replaces their values by the reconstructions.
    fn factorize_each(
        &mut self,
        names: Vec<String>,
        mut factorize: impl FnMut(&str, &crate::model::Param) -> Result<Factorization>,
    ) -> Result<LowRankReport> {
        let mut layers = Vec::with_capacity(names.len());
        for name in names {
            let p = self.get(&name)?;
            let factorization = factorize(&name, p)?;
            crate::tensor::check_same_shape(p.shape(), factorization.shape(), || {
                format!("factorization of `{name}`")
            })?;
            layers.push(FactorizedLayer {
                kind: p.kind(),
                name,
                factorization,
            });
        }
        for l in &layers {
            self.get_mut(&l.name)?
                .set_factorization(l.factorization.clone())?;
        }
        Ok(LowRankReport { layers })
    }

    /// Fails with [`Error::FormConflict`](crate::Error::FormConflict) before any work
    /// if a named parameter cannot take factors (it is pruned or quantized).
    fn check_can_factorize(&self, names: &[String]) -> Result<()> {
        for n in names {
            self.get(n)?.check_can_factorize()?;
        }
        Ok(())
    }

    fn selected_names(&self, selector: &Selector) -> Result<Vec<String>> {
        Ok(self
            .select(selector)?
            .into_iter()
            .map(String::from)
            .collect())
    }
}

/// One factorized parameter of a [`LowRankReport`].
#[derive(Clone, Debug, PartialEq)]
pub struct FactorizedLayer {
    /// Parameter name.
    pub name: String,
    /// Its kind.
    pub kind: LayerKind,
    /// The factors, their counts and error.
    pub factorization: Factorization,
}

/// What factorization kept, saved and cost, per parameter and in total.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LowRankReport {
    /// One entry per factorized parameter, in model order.
    pub layers: Vec<FactorizedLayer>,
}

impl LowRankReport {
    /// Parameters in all the factors.
    pub fn params(&self) -> usize {
        self.layers.iter().map(|l| l.factorization.params()).sum()
    }

    /// Parameters of the dense weights they replace.
    pub fn dense_params(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.factorization.dense_params())
            .sum()
    }

    /// Multiply-adds per output position, summed over the layers.
    pub fn flops(&self) -> usize {
        self.layers.iter().map(|l| l.factorization.flops()).sum()
    }

    /// The dense layers' multiply-adds per output position.
    pub fn dense_flops(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.factorization.dense_flops())
            .sum()
    }
}

impl fmt::Display for LowRankReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(0)
            .max(9);
        writeln!(
            f,
            "{:<w$}  {:<9}  {:>12}  {:>12}  {:>10}  {:>10}",
            "parameter", "kind", "ranks", "params", "dense", "rel. error"
        )?;
        for l in &self.layers {
            let fac = &l.factorization;
            let ranks: Vec<String> = fac.ranks().iter().map(|r| r.to_string()).collect();
            writeln!(
                f,
                "{:<w$}  {:<9}  {:>12}  {:>12}  {:>10}  {:>10}",
                l.name,
                l.kind.to_string(),
                ranks.join("×"),
                fac.params(),
                fac.dense_params(),
                fac.relative_error()
                    .map_or("-".into(), |e| format!("{e:.5}"))
            )?;
        }
        write!(
            f,
            "{:<w$}  {:<9}  {:>12}  {:>12}  {:>10}  {:>9.2}x",
            "total",
            "",
            "",
            self.params(),
            self.dense_params(),
            self.dense_params() as f64 / self.params().max(1) as f64
        )
    }
}
