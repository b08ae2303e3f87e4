//! [`Model`]: an ordered list of named parameters, each with its [`LayerKind`], its
//! stored dtype and, once pruned, its [`Mask`].
//!
//! Masks live beside the weights (as `weight_orig` / `weight_mask` do in PyTorch):
//! [`Param::value`] keeps the original values and [`Param::effective`] gives the masked
//! ones, until [`Model::make_permanent`] applies and drops the masks.

mod kind;
mod selector;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use ndarray::{ArrayD, ArrayViewMutD};

use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::quant::QuantizedTensor;
use crate::tensor::check_same_shape;

pub use kind::LayerKind;
pub use selector::{Selector, glob_match};

/// The element type a floating-point parameter is stored in on disk. slimnn computes
/// in `f32` and writes parameters back in this type unless asked otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 double precision (computed in f32: values are rounded on load).
    F64,
    /// IEEE 754 half precision.
    F16,
    /// bfloat16.
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        })
    }
}

/// One named parameter of a [`Model`].
#[derive(Clone, Debug)]
pub struct Param {
    name: String,
    kind: LayerKind,
    dtype: DType,
    value: ArrayD<f32>,
    mask: Option<Mask>,
    quantized: Option<QuantizedTensor>,
}

impl Param {
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
    /// Changing them drops the quantized form, which would no longer match.
    pub fn value_mut(&mut self) -> ArrayViewMutD<'_, f32> {
        self.quantized = None;
        self.value.view_mut()
    }

    /// The quantized form, if the parameter was quantized (its values are then the
    /// decoded ones).
    pub fn quantized(&self) -> Option<&QuantizedTensor> {
        self.quantized.as_ref()
    }

    /// Stores a quantized form and replaces the values by its decoding; the mask stays.
    pub fn set_quantized(&mut self, q: QuantizedTensor) -> Result<()> {
        check_same_shape(self.value.shape(), q.shape(), || {
            format!("quantized form of `{}`", self.name)
        })?;
        self.value = q.dequantize();
        self.quantized = Some(q);
        Ok(())
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
        Ok(())
    }

    /// Replaces values and mask together (shapes already consistent).
    pub(crate) fn replace_with_mask(&mut self, value: ArrayD<f32>, mask: Option<Mask>) {
        debug_assert!(mask.as_ref().is_none_or(|m| m.shape() == value.shape()));
        self.value = value;
        self.mask = mask;
        self.quantized = None;
    }

    /// The mask, if the parameter has been pruned and not yet made permanent.
    pub fn mask(&self) -> Option<&Mask> {
        self.mask.as_ref()
    }

    /// Sets (or replaces) the mask; its shape must equal the parameter's.
    /// A quantized form gets the mask too, so that it decodes pruned weights to 0.
    pub fn set_mask(&mut self, mask: Mask) -> Result<()> {
        check_same_shape(self.value.shape(), mask.shape(), || {
            format!("mask of `{}`", self.name)
        })?;
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

/// A tensor slimnn does not compute with (integer buffers such as batch-norm's
/// `num_batches_tracked`), kept verbatim so that saving writes it back unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTensor {
    /// The tensor's name.
    pub name: String,
    /// Its safetensors dtype name, e.g. `"I64"`.
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its little-endian bytes.
    pub bytes: Vec<u8>,
}

/// A model: ordered named parameters plus file metadata.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use slimnn::{LayerKind, Model, Selector};
///
/// let mut model = Model::new();
/// model.add("fc1.weight", ArrayD::zeros(IxDyn(&[300, 784])))?;
/// model.add("fc1.bias", ArrayD::zeros(IxDyn(&[300])))?;
/// assert_eq!(model.get("fc1.weight")?.kind(), LayerKind::Linear);
/// assert_eq!(model.get("fc1.bias")?.kind(), LayerKind::Bias);
/// assert_eq!(model.select(&Selector::prunable())?, vec!["fc1.weight"]);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Model {
    params: Vec<Param>,
    index: HashMap<String, usize>,
    raw: Vec<RawTensor>,
    metadata: BTreeMap<String, String>,
}

impl Model {
    /// An empty model.
    pub fn new() -> Model {
        Model::default()
    }

    /// Appends a parameter stored as f32, its kind inferred by [`LayerKind::infer`].
    pub fn add(&mut self, name: impl Into<String>, value: ArrayD<f32>) -> Result<&mut Param> {
        let name = name.into();
        let kind = LayerKind::infer(&name, value.shape());
        self.add_param(name, kind, DType::F32, value)
    }

    /// Appends a parameter of an explicit kind and stored dtype.
    pub fn add_param(
        &mut self,
        name: impl Into<String>,
        kind: LayerKind,
        dtype: DType,
        value: ArrayD<f32>,
    ) -> Result<&mut Param> {
        let name = name.into();
        if self.index.contains_key(&name) || self.raw.iter().any(|r| r.name == name) {
            return Err(Error::invalid(
                "name",
                &name,
                "a name not already in the model",
            ));
        }
        if let Some(n) = kind.ndim()
            && n != value.ndim()
        {
            return Err(Error::bad_shape(
                format!("`{name}`"),
                value.shape(),
                format!("{kind} parameters have {n} dimensions"),
            ));
        }
        self.index.insert(name.clone(), self.params.len());
        self.params.push(Param {
            name,
            kind,
            dtype,
            value,
            mask: None,
            quantized: None,
        });
        Ok(self.params.last_mut().expect("just pushed"))
    }

    /// Keeps a tensor slimnn does not compute with, to be written back unchanged.
    pub fn add_raw(&mut self, raw: RawTensor) -> Result<()> {
        if self.index.contains_key(&raw.name) || self.raw.iter().any(|r| r.name == raw.name) {
            return Err(Error::invalid(
                "name",
                &raw.name,
                "a name not already in the model",
            ));
        }
        self.raw.push(raw);
        Ok(())
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Result<&Param> {
        self.index
            .get(name)
            .map(|&i| &self.params[i])
            .ok_or_else(|| Error::UnknownParameter(name.into()))
    }

    /// The parameter called `name`, mutably.
    pub fn get_mut(&mut self, name: &str) -> Result<&mut Param> {
        match self.index.get(name) {
            Some(&i) => Ok(&mut self.params[i]),
            None => Err(Error::UnknownParameter(name.into())),
        }
    }

    /// Several distinct parameters, mutably, in the order named.
    pub fn get_many_mut(&mut self, names: &[&str]) -> Result<Vec<&mut Param>> {
        let mut idx = Vec::with_capacity(names.len());
        for n in names {
            let i = *self
                .index
                .get(*n)
                .ok_or_else(|| Error::UnknownParameter((*n).into()))?;
            if idx.contains(&i) {
                return Err(Error::invalid("names", n, "each parameter named once"));
            }
            idx.push(i);
        }
        let mut slots: Vec<Option<&mut Param>> = self.params.iter_mut().map(Some).collect();
        Ok(idx
            .iter()
            .map(|&i| slots[i].take().expect("indices are distinct"))
            .collect())
    }

    /// Overrides the inferred kind of a parameter.
    pub fn set_kind(&mut self, name: &str, kind: LayerKind) -> Result<()> {
        let p = self.get_mut(name)?;
        if let Some(n) = kind.ndim()
            && n != p.value.ndim()
        {
            return Err(Error::bad_shape(
                format!("`{name}`"),
                p.shape(),
                format!("{kind} parameters have {n} dimensions"),
            ));
        }
        p.kind = kind;
        Ok(())
    }

    /// The parameters, in order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The parameters, mutably, in order.
    pub fn params_mut(&mut self) -> impl Iterator<Item = &mut Param> {
        self.params.iter_mut()
    }

    /// The tensors kept verbatim (see [`RawTensor`]).
    pub fn raw_tensors(&self) -> &[RawTensor] {
        &self.raw
    }

    /// The number of parameters (raw tensors not counted).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the model has no parameters.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The total number of parameter elements.
    pub fn numel(&self) -> usize {
        self.params.iter().map(Param::numel).sum()
    }

    /// Whether the model holds a parameter called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The names of the selected parameters, in model order.
    ///
    /// Fails with [`Error::Empty`] if the selector matches no parameter, which is almost
    /// always a mistyped glob.
    pub fn select(&self, selector: &Selector) -> Result<Vec<&str>> {
        let names: Vec<&str> = self
            .params
            .iter()
            .filter(|p| selector.matches(&p.name, p.kind))
            .map(|p| p.name.as_str())
            .collect();
        if names.is_empty() {
            return Err(Error::Empty {
                what: format!("the parameter selection {selector:?}"),
            });
        }
        Ok(names)
    }

    /// The bias that belongs to weight `name` (`x.weight` → `x.bias`), if the model has it.
    pub fn bias_of(&self, name: &str) -> Option<&str> {
        let base = name.strip_suffix("weight")?;
        let bias = format!("{base}bias");
        self.index
            .get_key_value(bias.as_str())
            .map(|(k, _)| k.as_str())
    }

    /// Metadata carried with the model file (safetensors `__metadata__`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Metadata, mutably.
    pub fn metadata_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.metadata
    }

    /// Removes a parameter, returning it.
    pub fn remove(&mut self, name: &str) -> Result<Param> {
        let i = self
            .index
            .remove(name)
            .ok_or_else(|| Error::UnknownParameter(name.into()))?;
        let p = self.params.remove(i);
        for v in self.index.values_mut() {
            if *v > i {
                *v -= 1;
            }
        }
        Ok(p)
    }
}
