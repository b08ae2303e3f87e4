//! The built-in steps: one per method family, each over its own selection.

use super::Compressor;
use crate::error::Result;
use crate::lowrank::{Budget, LowRank};
use crate::model::{Model, Selector};
use crate::prune::{GlobalPruner, Pruner, Saliency, Statistics};
use crate::quant::Quantizer;
use crate::store::Encoding;

/// The last segment of a type's path, for default descriptions.
fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// Prunes each selected parameter with a [`Pruner`] ([`Model::prune`]; data-free, so
/// with no statistics).
pub struct Prune<P> {
    selector: Selector,
    pruner: P,
    label: Option<String>,
}

impl<P: Pruner<f32>> Prune<P> {
    /// The step.
    pub fn new(selector: Selector, pruner: P) -> Self {
        Prune {
            selector,
            pruner,
            label: None,
        }
    }

    /// Sets the description shown in reports.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

impl<P: Pruner<f32>> Compressor for Prune<P> {
    fn describe(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("prune: {}", short_type_name::<P>()))
    }

    fn compress(&self, model: &mut Model) -> Result<()> {
        model
            .prune(&self.selector, &self.pruner, &Statistics::new())
            .map(|_| ())
    }
}

/// Prunes the selected parameters together with one threshold ([`Model::prune_global`]).
pub struct PruneGlobal<S> {
    selector: Selector,
    pruner: GlobalPruner<S>,
    label: Option<String>,
}

impl<S: Saliency<f32>> PruneGlobal<S> {
    /// The step.
    pub fn new(selector: Selector, pruner: GlobalPruner<S>) -> Self {
        PruneGlobal {
            selector,
            pruner,
            label: None,
        }
    }

    /// Sets the description shown in reports.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

impl<S: Saliency<f32>> Compressor for PruneGlobal<S> {
    fn describe(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("prune: global {}", short_type_name::<S>()))
    }

    fn compress(&self, model: &mut Model) -> Result<()> {
        model
            .prune_global(&self.selector, &self.pruner, &Statistics::new())
            .map(|_| ())
    }
}

/// Quantizes the selected parameters ([`Model::quantize`]).
pub struct Quantize<Q> {
    selector: Selector,
    quantizer: Q,
    label: Option<String>,
}

impl<Q: Quantizer<f32>> Quantize<Q> {
    /// The step.
    pub fn new(selector: Selector, quantizer: Q) -> Self {
        Quantize {
            selector,
            quantizer,
            label: None,
        }
    }

    /// Sets the description shown in reports.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

impl<Q: Quantizer<f32>> Compressor for Quantize<Q> {
    fn describe(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("quantize: {}", short_type_name::<Q>()))
    }

    fn compress(&self, model: &mut Model) -> Result<()> {
        model.quantize(&self.selector, &self.quantizer).map(|_| ())
    }
}

/// Factorizes the selected parameters with a [`LowRank`] method ([`Model::factorize`]).
pub struct Factorize<L> {
    selector: Selector,
    method: L,
    label: Option<String>,
}

impl<L: LowRank> Factorize<L> {
    /// The step.
    pub fn new(selector: Selector, method: L) -> Self {
        Factorize {
            selector,
            method,
            label: None,
        }
    }

    /// Sets the description shown in reports.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

impl<L: LowRank> Compressor for Factorize<L> {
    fn describe(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("factorize: {}", short_type_name::<L>()))
    }

    fn compress(&self, model: &mut Model) -> Result<()> {
        model.factorize(&self.selector, &self.method).map(|_| ())
    }
}

/// Factorizes the selected Linear weights by truncated SVD under one budget
/// ([`Model::factorize_within`]).
pub struct FactorizeWithin {
    selector: Selector,
    budget: Budget,
}

impl FactorizeWithin {
    /// The step.
    pub fn new(selector: Selector, budget: Budget) -> Self {
        FactorizeWithin { selector, budget }
    }
}

impl Compressor for FactorizeWithin {
    fn describe(&self) -> String {
        match self.budget {
            Budget::Params(p) => format!("factorize: SVD within {p} parameters"),
            Budget::Flops(f) => format!("factorize: SVD within {f} FLOPs"),
        }
    }

    fn compress(&self, model: &mut Model) -> Result<()> {
        model
            .factorize_within(&self.selector, self.budget)
            .map(|_| ())
    }
}

/// Chooses how the selected parameters are stored in the compressed file (sparse
/// positions, Huffman coding); changes no value.
pub struct Encode {
    selector: Selector,
    encoding: Encoding,
}

impl Encode {
    /// The step.
    pub fn new(selector: Selector, encoding: Encoding) -> Self {
        Encode { selector, encoding }
    }
}

impl Compressor for Encode {
    fn describe(&self) -> String {
        format!("encode: {}", self.encoding)
    }

    fn compress(&self, model: &mut Model) -> Result<()> {
        self.encoding.check()?;
        let names: Vec<String> = model
            .select(&self.selector)?
            .into_iter()
            .map(String::from)
            .collect();
        for name in names {
            model.get_mut(&name)?.set_encoding(self.encoding);
        }
        Ok(())
    }
}
