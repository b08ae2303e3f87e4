//! Quantization: fewer bits per weight.
//!
//! A [`Quantizer`] turns a weight view into a [`QuantizedTensor`]: codes packed at their
//! bit width ([`PackedCodes`], 1–8 bits) and the [`Decoding`] that maps them back
//! (scales and zero points per tensor, channel or group; or a codebook). Every
//! quantized tensor knows its exact storage.

mod binary;
mod calibrate;
mod fake;
pub(crate) mod ggml;
mod kmeans;
mod linear;
mod model_ops;
mod optimal_kmeans;
mod packed;
mod pow2;
mod product;
mod scheme;
mod tensor;
mod uniform;

use crate::calib::LayerStats;
use ndarray::{ArrayRef, IxDyn};

use crate::error::Result;
use crate::mask::Mask;
use crate::model::LayerKind;
use crate::tensor::{HalfFloat, HalfSlice, Scalar, narrow_from, subject, widen_array};
use half::{bf16, f16};

pub use binary::{BinaryQuantizer, TernaryQuantizer};
pub use calibrate::{
    Calibration, HistogramObserver, MinMaxObserver, MovingAverageObserver, Observer,
};
pub use fake::straight_through;
pub use ggml::{
    GgmlFormat, GgmlQuantizer, dequantize_ggml, from_ggml_blocks, quantize_ggml,
    quantize_ggml_half, to_ggml_blocks,
};
pub use kmeans::{KMeansInit, KMeansQuantizer, centroid_gradients};
pub use linear::{QuantizedLinear, group_matmul};
pub(crate) use linear::{check_input, check_input_slice, check_int8};
pub use model_ops::{QuantReport, QuantRow};
pub use packed::PackedCodes;
pub use pow2::PowerOfTwoQuantizer;
pub use product::ProductQuantizer;
pub use scheme::{Granularity, Rounding, Scheme};
pub use tensor::{Decoding, Int8Codes, Levels, QuantizedTensor};
pub use uniform::UniformQuantizer;

/// What a quantizer knows about the tensor besides its values.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuantContext<'a> {
    /// The parameter's name (for error messages).
    pub name: Option<&'a str>,
    /// The layer kind; `None`: inferred from the name and shape.
    pub kind: Option<LayerKind>,
    /// Weights already pruned (pass the weights with them zeroed, as
    /// [`Model::quantize`](crate::Model::quantize) does). Statistics (codebooks, binary
    /// and ternary scales, histogram ranges) come from the kept weights only, as Deep
    /// Compression quantizes the survivors of pruning. Schemes that represent 0 exactly
    /// (uniform, power-of-two, ggml) keep pruned weights at 0 by themselves; codebook
    /// schemes (k-means, binary, ternary, product) attach the mask to the result
    /// ([`QuantizedTensor::with_mask`]) so that pruned weights decode to 0.
    pub mask: Option<&'a Mask>,
    /// Calibration statistics of the layer's inputs (`Σ x xᵀ`, rows, magnitudes): what
    /// data-aware quantizers (AWQ, GPTQ, a user's own) read.
    pub layer_stats: Option<&'a LayerStats>,
}

impl<'a> QuantContext<'a> {
    /// A context with nothing known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the parameter name.
    pub fn with_name(mut self, name: &'a str) -> Self {
        self.name = Some(name);
        self
    }

    /// Sets the layer kind.
    pub fn with_kind(mut self, kind: LayerKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Sets the mask of pruned weights.
    pub fn with_mask(mut self, mask: &'a Mask) -> Self {
        self.mask = Some(mask);
        self
    }

    /// Sets the calibration statistics of the layer's inputs.
    pub fn with_layer_stats(mut self, stats: &'a LayerStats) -> Self {
        self.layer_stats = Some(stats);
        self
    }

    /// How error messages name the tensor.
    pub(crate) fn what(&self) -> String {
        subject(self.name, "weights")
    }

    /// `q` with this context's mask attached, if there is one.
    pub(crate) fn attach_mask(&self, q: QuantizedTensor) -> Result<QuantizedTensor> {
        match self.mask {
            Some(m) => q.with_mask(m.clone()),
            None => Ok(q),
        }
    }
}

/// Turns a tensor into a [`QuantizedTensor`].
///
/// Implement [`Quantizer::quantize`] to write your own; it then goes everywhere the
/// built-in quantizers go. [`Quantizer::fake_quantize`] (quantize, then dequantize) comes
/// for free.
///
/// ```
/// use slimnn::ndarray::{ArrayRef, IxDyn, array};
/// use slimnn::quant::{
///     Decoding, Granularity, Levels, PackedCodes, QuantContext, QuantizedTensor, Quantizer,
/// };
/// use slimnn::{Error, Model, Result, Selector};
///
/// /// Rounds every weight to a multiple of 1/4 in [−2, 1.75]: 4-bit codes, one scale.
/// struct QuarterSteps;
///
/// impl Quantizer for QuarterSteps {
///     fn quantize(&self, w: &ArrayRef<f32, IxDyn>, ctx: &QuantContext<'_>) -> Result<QuantizedTensor> {
///         if w.iter().any(|x| x.abs() > 2.0) {
///             let name = ctx.name.unwrap_or("weights");
///             return Err(Error::extension("QuarterSteps", format!("{name} exceeds ±2")));
///         }
///         let codes: Vec<u8> = w.iter().map(|&x| ((x * 4.0).round().clamp(-8.0, 7.0) + 8.0) as u8).collect();
///         let decoding = Decoding::Scalar {
///             levels: Levels::Integers { min: -8, max: 7 }, // code c stands for c − 8
///             granularity: Granularity::PerTensor,
///             scales: vec![0.25],
///             zero_points: vec![],
///             scale_bits: 32,
///         };
///         QuantizedTensor::new(w.shape(), PackedCodes::pack(&codes, 4)?, decoding)
///     }
///
///     fn describe(&self) -> String {
///         "quarter steps, 4-bit".into()
///     }
/// }
///
/// let w = array![[0.3f32, -1.1], [0.9, 1.6]].into_dyn();
/// let q = QuarterSteps.quantize(&w, &QuantContext::new())?;
/// assert_eq!(q.dequantize::<f32>(), array![[0.25f32, -1.0], [1.0, 1.5]].into_dyn());
/// assert_eq!(q.storage_bits(), 4 * 4 + 32);
///
/// // On a model, like any built-in quantizer.
/// let mut model = Model::new();
/// model.add("fc.weight", w)?;
/// let report = model.quantize(&Selector::prunable(), &QuarterSteps)?;
/// assert_eq!(report.rows[0].bits_per_weight, 12.0);
/// assert!(matches!(
///     QuarterSteps.quantize(&array![3.0f32].into_dyn(), &QuantContext::new()),
///     Err(Error::Extension { .. })
/// ));
/// # Ok::<(), slimnn::Error>(())
/// ```
pub trait Quantizer<T: Scalar = f32>: Send + Sync {
    /// Quantizes `weights`.
    fn quantize(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor>;

    /// A short description with the settings, for reports and pipeline step labels
    /// (e.g. `"k-means 16 clusters (optimal)"`). Default: the type's name without its
    /// path.
    fn describe(&self) -> String {
        crate::tensor::short_type_name::<Self>()
    }

    /// Whether each row (index of axis 0) is quantized on its own, so that quantizing
    /// row blocks of a tensor and concatenating them gives the codes of the whole (what
    /// lets a streamed compression work on a large tensor in row chunks). Default: false.
    fn rows_independent(&self) -> bool {
        false
    }

    /// The ggml block format this quantizer gives, if it is one of them
    /// ([`GgmlQuantizer`]): a streamed GGUF output then quantizes the checkpoint's 16-bit
    /// values straight to blocks, without the [`QuantizedTensor`] form. Default: `None`.
    fn ggml_format(&self) -> Option<GgmlFormat> {
        None
    }

    /// Quantizes and decodes at once: the values the quantized tensor stands for.
    fn fake_quantize(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<ndarray::ArrayD<T>> {
        Ok(self.quantize(weights, ctx)?.dequantize())
    }

    /// The 16-bit path behind [`HalfQuantizer::quantize_half_slice`]; the default
    /// widens the tensor once. Not part of the public API.
    #[doc(hidden)]
    fn quantize_half_hook(
        &self,
        weights: HalfSlice<'_>,
        shape: &[usize],
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        match weights {
            HalfSlice::F16(w) => self.quantize(&widen_array::<f16, T>(w, shape)?, ctx),
            HalfSlice::Bf16(w) => self.quantize(&widen_array::<bf16, T>(w, shape)?, ctx),
        }
    }
}

/// Quantization of an engine's 16-bit buffer (`half::f16` or `half::bf16`), for every
/// [`Quantizer`] (blanket-implemented; bring it into scope with `use
/// slimnn::quant::HalfQuantizer`).
///
/// The result equals [`Quantizer::quantize`] of the values widened to f32 (exact); NaN
/// and infinity, shape mismatches: the same typed errors. [`GgmlQuantizer`] reads the
/// 16-bit values a block of 4096 at a time (no f32 copy of the tensor); other quantizers
/// widen the tensor once.
///
/// ```
/// use slimnn::half::{bf16, f16};
/// use slimnn::quant::{
///     GgmlFormat, GgmlQuantizer, Granularity, HalfQuantizer, QuantContext, Scheme,
///     UniformQuantizer,
/// };
///
/// let w: Vec<f16> = [0.5f32, -1.0, 0.25, 1.0].map(f16::from_f32).to_vec();
/// let int8 = UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerTensor)?;
/// let q = int8.quantize_half_slice(&w, &[2, 2], &QuantContext::new())?;
/// assert_eq!(q.shape(), &[2, 2]);
/// assert_eq!(q.dequantize::<f32>()[[1, 1]], 1.0);
///
/// // Fake quantization in place: the decoded values, rounded back to bf16.
/// let mut w: Vec<bf16> = (0..64).map(|i| bf16::from_f32((i as f32 * 0.37).sin())).collect();
/// let q8 = GgmlQuantizer::new(GgmlFormat::Q8_0);
/// q8.fake_quantize_half_slice(&mut w, &[2, 32], &QuantContext::new())?;
/// assert!((w[5].to_f32() - (5.0f32 * 0.37).sin()).abs() < 0.01);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub trait HalfQuantizer {
    /// [`Quantizer::quantize`] of a row-major 16-bit buffer of `shape`.
    fn quantize_half_slice<H: HalfFloat>(
        &self,
        weights: &[H],
        shape: &[usize],
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor>;

    /// Quantizes a 16-bit buffer and writes the decoded values back in place, rounded to
    /// the buffer's type (nearest even): [`Quantizer::fake_quantize`] for 16-bit
    /// weights. Nothing is written unless quantization succeeds.
    fn fake_quantize_half_slice<H: HalfFloat>(
        &self,
        weights: &mut [H],
        shape: &[usize],
        ctx: &QuantContext<'_>,
    ) -> Result<()> {
        let q = self.quantize_half_slice(weights, shape, ctx)?;
        write_back(&q, weights);
        Ok(())
    }
}

impl<Q: Quantizer<f32> + ?Sized> HalfQuantizer for Q {
    fn quantize_half_slice<H: HalfFloat>(
        &self,
        weights: &[H],
        shape: &[usize],
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        self.quantize_half_hook(H::wrap(weights), shape, ctx)
    }
}

/// Decodes `q` into a 16-bit buffer of its length.
fn write_back<H: HalfFloat>(q: &QuantizedTensor, weights: &mut [H]) {
    let values = q.dequantize::<f32>();
    match values.as_slice() {
        Some(v) => narrow_from(v, weights),
        None => narrow_from(&values.iter().copied().collect::<Vec<_>>(), weights),
    }
}

impl<T: Scalar, Q: Quantizer<T> + ?Sized> Quantizer<T> for &Q {
    fn quantize(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        (**self).quantize(weights, ctx)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn quantize_half_hook(
        &self,
        weights: HalfSlice<'_>,
        shape: &[usize],
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        (**self).quantize_half_hook(weights, shape, ctx)
    }
    fn rows_independent(&self) -> bool {
        (**self).rows_independent()
    }
    fn ggml_format(&self) -> Option<GgmlFormat> {
        (**self).ggml_format()
    }
}

impl<T: Scalar, Q: Quantizer<T> + ?Sized> Quantizer<T> for Box<Q> {
    fn quantize(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        (**self).quantize(weights, ctx)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn quantize_half_hook(
        &self,
        weights: HalfSlice<'_>,
        shape: &[usize],
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        (**self).quantize_half_hook(weights, shape, ctx)
    }
    fn rows_independent(&self) -> bool {
        (**self).rows_independent()
    }
    fn ggml_format(&self) -> Option<GgmlFormat> {
        (**self).ggml_format()
    }
}
