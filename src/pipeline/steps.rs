//! The built-in steps: one per method family, each over its own selection.

use std::sync::Arc;

use super::{Compressor, Streaming};
use crate::calib::CalibrationStats;
use crate::error::Result;
use crate::lowrank::{Budget, LowRank};
use crate::model::{LayerKind, Model, Selector};
use crate::prune::{GlobalPruner, Pruner, Saliency, Statistics};
use crate::quant::{GgmlFormat, Quantizer};
use crate::store::Encoding;

use crate::tensor::short_type_name;

/// A step that applies one method to the selected parameters: the struct, `new`,
/// `with_label` and its [`Compressor`] impl, given how to apply the method.
macro_rules! method_step {
    (
        $(#[$doc:meta])*
        $name:ident<$m:ident: $bound:path>, $field:ident: $fty:ty, $verb:literal,
        describe |$d:ident| $describe:expr,
        stream |$s:ident| $stream:expr,
        $(ggml |$g:ident| $ggml:expr,)?
        |$model:ident, $selector:ident, $method:ident| $apply:expr
    ) => {
        $(#[$doc])*
        pub struct $name<$m> {
            selector: Selector,
            $field: $fty,
            label: Option<String>,
        }

        impl<$m: $bound> $name<$m> {
            /// The step.
            pub fn new(selector: Selector, $field: $fty) -> Self {
                $name {
                    selector,
                    $field,
                    label: None,
                }
            }

            /// Sets the description shown in reports (default: the verb and the
            /// method's own description with its settings).
            pub fn with_label(mut self, label: impl Into<String>) -> Self {
                self.label = Some(label.into());
                self
            }
        }

        impl<$m: $bound> Compressor for $name<$m> {
            fn describe(&self) -> String {
                self.label.clone().unwrap_or_else(|| {
                    let $d = &self.$field;
                    format!("{}: {}", $verb, $describe)
                })
            }

            fn compress(&self, $model: &mut Model) -> Result<()> {
                let ($selector, $method) = (&self.selector, &self.$field);
                $apply.map(|_| ())
            }

            fn streaming(&self) -> Streaming<'_> {
                let $s = self;
                $stream
            }

            $(
                fn ggml_format(&self) -> Option<GgmlFormat> {
                    let $g = self;
                    $ggml
                }
            )?
        }
    };
}

method_step! {
    /// Prunes each selected parameter with a [`Pruner`] ([`Model::prune`]; data-free, so
    /// with no statistics).
    Prune<P: Pruner<f32>>, pruner: P, "prune",
    describe |p| p.describe(),
    stream |s| Streaming::PerTensor(&s.selector),
    |model, selector, pruner| model.prune(selector, pruner, &Statistics::new())
}

method_step! {
    /// Prunes the selected parameters together with one threshold
    /// ([`Model::prune_global`]); `S` is the [`Saliency`] of the [`GlobalPruner`].
    PruneGlobal<S: Saliency<f32>>, pruner: GlobalPruner<S>, "prune globally",
    describe |p| p.describe(),
    stream |_s| Streaming::WholeModel,
    |model, selector, pruner| model.prune_global(selector, pruner, &Statistics::new())
}

method_step! {
    /// Quantizes the selected parameters ([`Model::quantize`]).
    Quantize<Q: Quantizer<f32>>, quantizer: Q, "quantize",
    describe |q| q.describe(),
    stream |s| if s.quantizer.rows_independent() {
        Streaming::PerRows(&s.selector)
    } else {
        Streaming::PerTensor(&s.selector)
    },
    ggml |s| s.quantizer.ggml_format(),
    |model, selector, quantizer| model.quantize(selector, quantizer)
}

method_step! {
    /// Factorizes the selected parameters with a [`LowRank`] method
    /// ([`Model::factorize`]).
    Factorize<L: LowRank>, method: L, "factorize",
    describe |_m| short_type_name::<L>(),
    stream |s| Streaming::PerTensor(&s.selector),
    |model, selector, method| model.factorize(selector, method)
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

    fn streaming(&self) -> Streaming<'_> {
        Streaming::PerTensor(&self.selector)
    }
}

/// Fails unless every weight `selector` picks has calibration statistics of its input
/// width in `stats` ([`Error::MissingStatistic`](crate::Error::MissingStatistic) or
/// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) naming it and `method`).
pub fn check_calibration(
    model: &Model,
    selector: &Selector,
    stats: &CalibrationStats,
    method: &'static str,
) -> Result<()> {
    for name in model.select(selector)? {
        check_layer_stats(stats, name, model.get(name)?.shape(), method)?;
    }
    Ok(())
}

/// Fails unless `stats` has statistics of the width of the weight `name` of `shape`
/// (its elements per output row).
fn check_layer_stats(
    stats: &CalibrationStats,
    name: &str,
    shape: &[usize],
    method: &'static str,
) -> Result<()> {
    let numel: usize = shape.iter().product();
    let cols = numel / shape.first().copied().unwrap_or(1).max(1);
    stats
        .require(name, method)?
        .check_for(&format!("`{name}`"), cols)
}

/// Prunes each selected parameter with a data-aware [`Pruner`] (Wanda, SparseGPT, OBS,
/// or a user's own), each weight with its calibration statistics
/// ([`PruneContext::layer_stats`](crate::prune::PruneContext::layer_stats)). Every
/// selected weight must have statistics ([`check_calibration`]), checked before any is
/// pruned. It streams tensor by tensor, the statistics checked before the first.
pub struct PruneCalibrated<P> {
    selector: Selector,
    pruner: P,
    stats: Arc<CalibrationStats>,
    method: &'static str,
    label: Option<String>,
}

impl<P: Pruner<f32>> PruneCalibrated<P> {
    /// The step; `method` names it in errors.
    pub fn new(
        selector: Selector,
        pruner: P,
        stats: Arc<CalibrationStats>,
        method: &'static str,
    ) -> Self {
        PruneCalibrated {
            selector,
            pruner,
            stats,
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

impl<P: Pruner<f32>> Compressor for PruneCalibrated<P> {
    fn describe(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("prune: {}", self.pruner.describe()))
    }

    fn compress(&self, model: &mut Model) -> Result<()> {
        check_calibration(model, &self.selector, &self.stats, self.method)?;
        let stats = Statistics::new().with_calibration(Arc::clone(&self.stats));
        model
            .prune(&self.selector, &self.pruner, &stats)
            .map(|_| ())
    }

    fn streaming(&self) -> Streaming<'_> {
        Streaming::PerTensor(&self.selector)
    }

    fn check_selected(&self, name: &str, _kind: LayerKind, shape: &[usize]) -> Result<()> {
        check_layer_stats(&self.stats, name, shape, self.method)
    }
}

/// Quantizes each selected parameter with a data-aware [`Quantizer`] (GPTQ, AWQ, or a
/// user's own), each weight with its calibration statistics
/// ([`Model::quantize_calibrated`]). Every selected weight must have statistics
/// ([`check_calibration`]), checked before any is quantized. It streams tensor by
/// tensor, the statistics checked before the first.
pub struct QuantizeCalibrated<Q> {
    selector: Selector,
    quantizer: Q,
    stats: Arc<CalibrationStats>,
    method: &'static str,
    label: Option<String>,
}

impl<Q: Quantizer<f32>> QuantizeCalibrated<Q> {
    /// The step; `method` names it in errors.
    pub fn new(
        selector: Selector,
        quantizer: Q,
        stats: Arc<CalibrationStats>,
        method: &'static str,
    ) -> Self {
        QuantizeCalibrated {
            selector,
            quantizer,
            stats,
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

impl<Q: Quantizer<f32>> Compressor for QuantizeCalibrated<Q> {
    fn describe(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("quantize: {}", self.quantizer.describe()))
    }

    fn compress(&self, model: &mut Model) -> Result<()> {
        check_calibration(model, &self.selector, &self.stats, self.method)?;
        model
            .quantize_calibrated(&self.selector, &self.quantizer, &self.stats)
            .map(|_| ())
    }

    fn streaming(&self) -> Streaming<'_> {
        Streaming::PerTensor(&self.selector)
    }

    fn check_selected(&self, name: &str, _kind: LayerKind, shape: &[usize]) -> Result<()> {
        check_layer_stats(&self.stats, name, shape, self.method)
    }
}
