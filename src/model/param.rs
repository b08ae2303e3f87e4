//! [`Param`]: one named parameter and the forms it can take (dense, masked, quantized,
//! factorized) and be stored in.

use ndarray::{ArrayD, ArrayViewMutD};

use super::{DType, LayerKind};
use crate::error::{Error, Result};
use crate::lowrank::Factorization;
use crate::mask::Mask;
use crate::nn::ConvSpec;
use crate::quant::QuantizedTensor;
use crate::store::Encoding;
use crate::tensor::check_same_shape;

/// One named parameter of a [`Model`](crate::Model).
#[derive(Clone, Debug)]
pub struct Param {
    pub(super) name: String,
    pub(super) kind: LayerKind,
    dtype: DType,
    pub(super) value: ArrayD<f32>,
    mask: Option<Mask>,
    quantized: Option<QuantizedTensor>,
    factorization: Option<Factorization>,
    encoding: Encoding,
    conv: Option<ConvSpec>,
}

impl Param {
    /// A dense parameter (the caller checks the name and shape).
    pub(crate) fn new(name: String, kind: LayerKind, dtype: DType, value: ArrayD<f32>) -> Param {
        Param {
            name,
            kind,
            dtype,
            value,
            mask: None,
            quantized: None,
            factorization: None,
            encoding: Encoding::default(),
            conv: None,
        }
    }

    /// The parameter's name, e.g. `"fc1.weight"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the parameter is.
    pub fn kind(&self) -> LayerKind {
        self.kind
    }

    /// The element type it is stored in on disk.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Sets the element type it is written in.
    pub fn set_dtype(&mut self, dtype: DType) {
        self.dtype = dtype;
    }

    /// Its shape.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// Its number of elements.
    pub fn numel(&self) -> usize {
        self.value.len()
    }

    /// The stored values, without the mask applied (PyTorch's `weight_orig`).
    pub fn value(&self) -> &ArrayD<f32> {
        &self.value
    }

    /// The stored values, mutably (the shape is fixed; see [`Param::replace_value`]).
    /// Changing them drops the quantized or factorized form, which would no longer match.
    pub fn value_mut(&mut self) -> ArrayViewMutD<'_, f32> {
        self.quantized = None;
        self.factorization = None;
        self.value.view_mut()
    }

    /// The quantized form, if the parameter was quantized (its values are then the
    /// decoded ones).
    pub fn quantized(&self) -> Option<&QuantizedTensor> {
        self.quantized.as_ref()
    }

    /// Stores a quantized form and replaces the values by its decoding; the mask stays.
    /// A factorized parameter is refused with [`Error::FormConflict`] (its factors are
    /// quantized instead: [`Model::quantize`](crate::Model::quantize) does so).
    pub fn set_quantized(&mut self, q: QuantizedTensor) -> Result<()> {
        check_same_shape(self.value.shape(), q.shape(), || {
            format!("quantized form of `{}`", self.name)
        })?;
        self.check_can_quantize_whole()?;
        self.value = q.dequantize();
        self.quantized = Some(q);
        Ok(())
    }

    /// The form the parameter holds, in words, for errors.
    fn held(&self) -> &'static str {
        match (&self.factorization, &self.quantized, &self.mask) {
            (Some(_), _, _) => "factorized",
            (None, Some(q), m) if m.is_some() || q.mask().is_some() => "pruned and quantized",
            (None, Some(_), _) => "quantized",
            (None, None, Some(_)) => "pruned (masked)",
            (None, None, None) => "dense",
        }
    }

    fn conflict(&self, requested: &str, hint: &str) -> Error {
        Error::FormConflict {
            name: self.name.clone(),
            held: self.held().into(),
            requested: requested.into(),
            hint: hint.into(),
        }
    }

    /// Fails with [`Error::FormConflict`] unless a mask can be set: a factorized weight
    /// is dense, and its factors do not know a mask.
    pub(crate) fn check_can_mask(&self) -> Result<()> {
        if self.factorization.is_some() {
            return Err(self.conflict(
                "pruned",
                "prune and factorize different weights, e.g. with @SELECTION",
            ));
        }
        Ok(())
    }

    /// Fails with [`Error::FormConflict`] unless the parameter can take factors: a
    /// pruned weight would lose its mask, a quantized one its codes.
    pub(crate) fn check_can_factorize(&self) -> Result<()> {
        if self.mask.is_some() || self.quantized.as_ref().is_some_and(|q| q.mask().is_some()) {
            return Err(self.conflict(
                "factorized",
                "prune and factorize different weights, e.g. with @SELECTION",
            ));
        }
        if self.quantized.is_some() {
            return Err(self.conflict(
                "factorized",
                "factorize first, then quantize: the factors are quantized",
            ));
        }
        Ok(())
    }

    /// Fails with [`Error::FormConflict`] if the parameter is factorized (its factors,
    /// not its reconstruction, are what gets quantized).
    fn check_can_quantize_whole(&self) -> Result<()> {
        if self.factorization.is_some() {
            return Err(self.conflict(
                "quantized as a whole",
                "quantize its factors: Model::quantize does",
            ));
        }
        Ok(())
    }

    /// The factors, if the parameter was factorized (its values are then their
    /// reconstruction).
    pub fn factorization(&self) -> Option<&Factorization> {
        self.factorization.as_ref()
    }

    /// Stores a factorized form (replacing any earlier one) and replaces the values by
    /// its reconstruction. A pruned or quantized parameter is refused with
    /// [`Error::FormConflict`]: a low-rank weight is dense, and its factors would drop
    /// the mask or the codes.
    pub fn set_factorization(&mut self, f: Factorization) -> Result<()> {
        check_same_shape(self.value.shape(), f.shape(), || {
            format!("factorization of `{}`", self.name)
        })?;
        self.check_can_factorize()?;
        self.value = f.reconstruct();
        self.factorization = Some(f);
        Ok(())
    }

    /// The stride, padding and groups of the convolution this weight belongs to, if
    /// known ([`Model::set_conv_spec`](crate::Model::set_conv_spec),
    /// [`Network::record_conv_specs`](crate::nn::Network::record_conv_specs), or the
    /// factors of a loaded compressed file). A model has no graph: without it,
    /// factorizing assumes stride 1 and no padding.
    pub fn conv_spec(&self) -> Option<ConvSpec> {
        self.conv
    }

    pub(crate) fn set_conv(&mut self, spec: ConvSpec) {
        self.conv = Some(spec);
    }

    /// How the parameter is stored in a compressed model file.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Sets how the parameter is stored in a compressed model file.
    pub fn set_encoding(&mut self, encoding: Encoding) {
        self.encoding = encoding;
    }

    /// Drops the quantized form, keeping the decoded values.
    pub fn take_quantized(&mut self) -> Option<QuantizedTensor> {
        self.quantized.take()
    }

    /// Replaces the values (of any shape that fits the kind) and drops the mask, e.g.
    /// when a layer changes shape.
    pub fn replace_value(&mut self, value: ArrayD<f32>) -> Result<()> {
        if let Some(n) = self.kind.ndim()
            && n != value.ndim()
        {
            return Err(Error::bad_shape(
                format!("new value of `{}`", self.name),
                value.shape(),
                format!("{} parameters have {n} dimensions", self.kind),
            ));
        }
        self.value = value;
        self.mask = None;
        self.quantized = None;
        self.factorization = None;
        Ok(())
    }

    /// Replaces values and mask together (shapes already consistent).
    pub(crate) fn replace_with_mask(&mut self, value: ArrayD<f32>, mask: Option<Mask>) {
        debug_assert!(mask.as_ref().is_none_or(|m| m.shape() == value.shape()));
        self.value = value;
        self.mask = mask;
        self.quantized = None;
        self.factorization = None;
    }

    /// The mask, if the parameter has been pruned and not yet made permanent.
    pub fn mask(&self) -> Option<&Mask> {
        self.mask.as_ref()
    }

    /// Sets (or replaces) the mask; its shape must equal the parameter's.
    /// A quantized form gets the mask too, so that it decodes pruned weights to 0; a
    /// factorized parameter is refused with [`Error::FormConflict`] (its factors do not
    /// know a mask).
    pub fn set_mask(&mut self, mask: Mask) -> Result<()> {
        check_same_shape(self.value.shape(), mask.shape(), || {
            format!("mask of `{}`", self.name)
        })?;
        self.check_can_mask()?;
        if let Some(q) = self.quantized.take() {
            self.quantized = Some(q.with_mask(mask.clone())?);
        }
        self.mask = Some(mask);
        Ok(())
    }

    /// Removes and returns the mask without applying it.
    pub fn take_mask(&mut self) -> Option<Mask> {
        self.mask.take()
    }

    /// The values with the mask applied (a copy; pruned weights are zero).
    pub fn effective(&self) -> ArrayD<f32> {
        let mut v = self.value.clone();
        if let Some(m) = &self.mask {
            m.apply(&mut v).expect("mask shape is checked when set");
        }
        v
    }

    /// Applies the mask to the values and drops it, making pruning permanent.
    /// A quantized form keeps the mask, which its codes need to decode the zeros.
    pub fn make_permanent(&mut self) {
        if let Some(m) = self.mask.take() {
            m.apply(&mut self.value)
                .expect("mask shape is checked when set");
            if let Some(q) = self.quantized.take() {
                self.quantized = Some(q.with_mask(m).expect("mask shape is checked when set"));
            }
        }
    }

    /// The number of elements the mask prunes (0 without a mask).
    pub fn masked_count(&self) -> usize {
        self.mask.as_ref().map_or(0, Mask::count_pruned)
    }

    /// The number of zero elements in the effective values (masked or zero-valued).
    pub fn zeros(&self) -> usize {
        let zero = |v: &f32| *v == 0.0;
        match (&self.mask, self.value.as_slice()) {
            (None, _) => self.value.iter().filter(|v| zero(v)).count(),
            (Some(m), Some(values)) => {
                // Masked weights, plus the zero-valued ones among the kept, a word at a time.
                let kept_zeros: usize = values
                    .chunks(64)
                    .zip(m.words())
                    .map(|(chunk, &word)| {
                        chunk
                            .iter()
                            .enumerate()
                            .filter(|&(j, v)| word >> j & 1 == 1 && zero(v))
                            .count()
                    })
                    .sum();
                m.count_pruned() + kept_zeros
            }
            (Some(m), None) => self
                .value
                .iter()
                .enumerate()
                .filter(|&(i, v)| zero(v) || !m.get(i))
                .count(),
        }
    }
}
