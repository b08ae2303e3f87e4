//! The model-level pipeline: [`Compressor`] steps (prune, quantize, factorize, encode, or
//! your own) chained by a [`Pipeline`] over a [`Model`], and the [`Report`] of what they
//! gained and cost.
//!
//! Every method family has a step here: [`Prune`], [`PruneGlobal`], [`Quantize`],
//! [`Factorize`], [`FactorizeWithin`] and [`Encode`], each with its own [`Selector`](crate::Selector)
//! (by name glob and [`LayerKind`]); [`FoldBatchNorm`] folds BatchNorm
//! layers into the layers before them. The report is computed from the
//! model the steps leave, against the model they started from, and its stored sizes come
//! from the very encoder that writes the compressed file
//! ([`store`](crate::store)), so they are the bytes on disk. The user guide is
//! [`crate::guide::pipeline`].
//!
//! ```
//! use ndarray::{Array, IxDyn};
//! use slimnn::pipeline::{Encode, Pipeline, PruneGlobal, Quantize};
//! use slimnn::prune::GlobalPruner;
//! use slimnn::quant::{KMeansInit, KMeansQuantizer};
//! use slimnn::store::{Encoding, Positions};
//! use slimnn::{Model, Selector};
//!
//! let mut model = Model::new();
//! model.add("fc1.weight", Array::from_shape_fn(IxDyn(&[64, 128]), |i| ((i[0] * 128 + i[1]) as f32 * 0.37).sin()))?;
//! model.add("fc2.weight", Array::from_shape_fn(IxDyn(&[10, 64]), |i| ((i[0] * 64 + i[1]) as f32 * 0.11).cos()))?;
//! let weights = Selector::prunable();
//! let report = Pipeline::new()
//!     .then(PruneGlobal::new(weights.clone(), GlobalPruner::magnitude(0.9)?))
//!     .then(Quantize::new(weights.clone(), KMeansQuantizer::lloyd(32, KMeansInit::Linear)?))
//!     .then(Encode::new(weights, Encoding { positions: Positions::RelativeIndex { bits: 4 }, huffman: true }))
//!     .run(&mut model)?;
//! assert!(report.compression_rate() > 10.0);
//! println!("{report}");
//! # Ok::<(), slimnn::Error>(())
//! ```

mod fold;
mod report;
pub mod spec;
mod steps;
mod stream;

use std::time::Instant;

use crate::error::Result;
use crate::model::{LayerKind, Model};

pub use fold::FoldBatchNorm;
pub use report::{ParamReport, Report, SpeedupSource, StepRecord, Timing};
pub use steps::{
    Encode, Factorize, FactorizeWithin, Prune, PruneCalibrated, PruneGlobal, Quantize,
    QuantizeCalibrated, check_calibration,
};
pub use stream::StreamFormat;

/// One model-level compression step. Implement it for your own method and put it in a
/// [`Pipeline`] beside the built-in ones.
pub trait Compressor {
    /// A short description for the report, e.g. `"prune: global magnitude 90%"`.
    fn describe(&self) -> String;

    /// Applies the step to `model`. On error the model may be partly changed; a
    /// [`Pipeline`] runs its steps on a copy and keeps it only if all succeed.
    fn compress(&self, model: &mut Model) -> Result<()>;

    /// Whether the step can run one tensor at a time in a streamed compression
    /// ([`Pipeline::stream`]). Default: [`Streaming::WholeModel`].
    fn streaming(&self) -> Streaming<'_> {
        Streaming::WholeModel
    }

    /// Checks, before a streamed compression ([`Pipeline::stream`]) reads any value,
    /// that the step can compress a parameter it selects, from its name, kind and shape
    /// (e.g. that calibration statistics of its width are there), so that a mistake is
    /// an error before any work. Default: nothing to check. [`Pipeline::run`] does not
    /// call it: there `compress` sees the whole model and checks it first.
    fn check_selected(&self, name: &str, kind: LayerKind, shape: &[usize]) -> Result<()> {
        let _ = (name, kind, shape);
        Ok(())
    }

    /// The ggml block format the step quantizes each parameter it selects to, when that
    /// is all it does (a [`Quantize`] step with a [`GgmlQuantizer`](crate::quant::GgmlQuantizer)):
    /// a streamed GGUF output ([`Pipeline::stream`]) then quantizes the checkpoint's
    /// 16-bit values straight to blocks. Default: `None`.
    fn ggml_format(&self) -> Option<crate::quant::GgmlFormat> {
        None
    }
}

/// How a step can take part in a streamed compression ([`Pipeline::stream`]).
#[derive(Clone, Copy, Debug)]
pub enum Streaming<'a> {
    /// It needs the whole model (a global threshold or budget, a BatchNorm fold).
    WholeModel,
    /// It changes each parameter the selector picks on its own.
    PerTensor(&'a crate::model::Selector),
    /// As `PerTensor`, and each row (index of axis 0) on its own, so that a large
    /// parameter can run in row chunks.
    PerRows(&'a crate::model::Selector),
}

impl<C: Compressor + ?Sized> Compressor for Box<C> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn compress(&self, model: &mut Model) -> Result<()> {
        (**self).compress(model)
    }

    fn streaming(&self) -> Streaming<'_> {
        (**self).streaming()
    }

    fn check_selected(&self, name: &str, kind: LayerKind, shape: &[usize]) -> Result<()> {
        (**self).check_selected(name, kind, shape)
    }

    fn ggml_format(&self) -> Option<crate::quant::GgmlFormat> {
        (**self).ggml_format()
    }
}

/// Steps run in order on a model, all or nothing.
#[derive(Default)]
pub struct Pipeline {
    steps: Vec<Box<dyn Compressor>>,
}

impl Pipeline {
    /// An empty pipeline (running it only measures the model).
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// Appends a step.
    pub fn then(mut self, step: impl Compressor + 'static) -> Pipeline {
        self.steps.push(Box::new(step));
        self
    }

    /// Appends a boxed step.
    pub fn push(&mut self, step: Box<dyn Compressor>) {
        self.steps.push(step);
    }

    /// The steps' descriptions, in order.
    pub fn describe_steps(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.describe()).collect()
    }

    /// Runs every step on a copy of `model`; if all succeed, the copy replaces `model`
    /// and the report compares it with the original. On error, `model` is unchanged.
    pub fn run(&self, model: &mut Model) -> Result<Report> {
        self.run_with(model, |_, _| {})
    }

    /// As [`Pipeline::run`], calling `progress(step_index, description)` before each
    /// step (for a progress bar).
    pub fn run_with(
        &self,
        model: &mut Model,
        mut progress: impl FnMut(usize, &str),
    ) -> Result<Report> {
        let mut work = model.clone();
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let description = step.describe();
            progress(i, &description);
            let t0 = Instant::now();
            step.compress(&mut work)?;
            steps.push(StepRecord {
                description,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
        let report = Report::compare(model, &work, steps)?;
        *model = work;
        Ok(report)
    }
}

impl Compressor for Pipeline {
    fn describe(&self) -> String {
        format!("pipeline: {}", self.describe_steps().join(" → "))
    }

    fn compress(&self, model: &mut Model) -> Result<()> {
        self.run(model).map(|_| ())
    }
}
