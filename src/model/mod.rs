//! [`Model`]: an ordered list of named parameters, each with its [`LayerKind`], its
//! stored dtype and, once pruned, its [`Mask`](crate::Mask).
//!
//! Masks live beside the weights (as `weight_orig` / `weight_mask` do in PyTorch):
//! [`Param::value`] keeps the original values and [`Param::effective`] gives the masked
//! ones, until [`Model::make_permanent`] applies and drops the masks.

mod kind;
mod param;
mod selector;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use half::{bf16, f16};
use ndarray::ArrayD;

use crate::error::{Error, Result};

pub use kind::LayerKind;
pub use param::Param;
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

    /// Appends `values` in this type, little-endian (rounded to it, as on save).
    pub(crate) fn write_le(self, values: impl Iterator<Item = f32>, out: &mut Vec<u8>) {
        match self {
            DType::F32 => values.for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            DType::F64 => values.for_each(|v| out.extend_from_slice(&(v as f64).to_le_bytes())),
            DType::F16 => {
                values.for_each(|v| out.extend_from_slice(&f32_to_f16_bits(v).to_le_bytes()))
            }
            DType::BF16 => {
                values.for_each(|v| out.extend_from_slice(&f32_to_bf16_bits(v).to_le_bytes()))
            }
        }
    }

    /// The little-endian values in `bytes`, in f32 (a trailing partial element is
    /// ignored; callers check the length).
    pub(crate) fn read_le(self, bytes: &[u8]) -> Vec<f32> {
        let chunks = bytes.chunks_exact(self.size());
        match self {
            DType::F32 => chunks
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F64 => chunks
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            DType::F16 => chunks
                .map(|c| f16_bits_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            DType::BF16 => chunks
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
        }
    }
}

// Loading and saving convert 16-bit values as the `half` crate does, except NaN: its
// payload is kept bit for bit both ways (no quiet bit added), so a tensor loaded and
// saved untouched is written back byte-identical, signalling NaNs included. (bf16 → f32
// is a plain shift.)

/// f16 bits → f32, NaN payloads kept as they are.
fn f16_bits_to_f32(b: u16) -> f32 {
    if b & 0x7C00 == 0x7C00 && b & 0x03FF != 0 {
        f32::from_bits(((b & 0x8000) as u32) << 16 | 0x7F80_0000 | ((b & 0x03FF) as u32) << 13)
    } else {
        f16::from_bits(b).to_f32()
    }
}

/// f32 → f16 bits (nearest even); a NaN keeps its sign and high payload bits, and only
/// gets the quiet bit when those are all zero (it would otherwise become infinity).
fn f32_to_f16_bits(x: f32) -> u16 {
    if x.is_nan() {
        let b = x.to_bits();
        let payload = ((b >> 13) & 0x03FF) as u16;
        ((b >> 16) as u16 & 0x8000) | 0x7C00 | if payload == 0 { 0x0200 } else { payload }
    } else {
        f16::from_f32(x).to_bits()
    }
}

/// f32 → bf16 bits (nearest even); a NaN as in [`f32_to_f16_bits`].
fn f32_to_bf16_bits(x: f32) -> u16 {
    if x.is_nan() {
        let t = (x.to_bits() >> 16) as u16;
        if t & 0x007F == 0 { t | 0x0040 } else { t }
    } else {
        bf16::from_f32(x).to_bits()
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
        self.params.push(Param::new(name, kind, dtype, value));
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

    /// Records the stride, padding and groups of the convolution whose weight is
    /// `name` (a `[out, in/groups, kh, kw]` parameter): [`Model::factorize`] then
    /// factorizes it for that geometry, and its factors run with the layer's output
    /// shape ([`Factorization::forward`](crate::lowrank::Factorization::forward)). A
    /// factorized weight takes the geometry at once. A stride of 0, or groups that do
    /// not divide the output channels, is an [`Error::InvalidParameter`].
    ///
    /// ```
    /// use ndarray::{ArrayD, IxDyn};
    /// use slimnn::nn::ConvSpec;
    /// use slimnn::Model;
    ///
    /// let mut model = Model::new();
    /// model.add("conv.weight", ArrayD::zeros(IxDyn(&[8, 3, 3, 3])))?;
    /// model.set_conv_spec("conv.weight", ConvSpec::new().with_stride(2, 2).with_padding(1, 1))?;
    /// assert_eq!(model.get("conv.weight")?.conv_spec().unwrap().stride, (2, 2));
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn set_conv_spec(&mut self, name: &str, spec: crate::nn::ConvSpec) -> Result<()> {
        let p = self.get_mut(name)?;
        if p.shape().len() != 4 {
            return Err(Error::bad_shape(
                format!("`{name}`"),
                p.shape(),
                "a convolution weight is [out, in/groups, kh, kw]",
            ));
        }
        let out = p.shape()[0];
        if spec.stride.0 == 0 || spec.stride.1 == 0 {
            return Err(Error::invalid(
                "stride",
                format!("{:?}", spec.stride),
                "at least 1 in each direction",
            ));
        }
        if spec.groups == 0 || out % spec.groups != 0 {
            return Err(Error::invalid(
                "groups",
                spec.groups,
                format!("a divisor of the {out} output channels of `{name}`"),
            ));
        }
        if let Some(f) = p.factorization() {
            let f = f.clone().with_conv_spec(spec)?;
            p.set_factorization(f)?;
        }
        p.set_conv(spec);
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

    /// Removes a raw tensor (see [`RawTensor`]), returning it if the model held it.
    pub fn remove_raw(&mut self, name: &str) -> Option<RawTensor> {
        let i = self.raw.iter().position(|r| r.name == name)?;
        Some(self.raw.remove(i))
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
                what: format!("the parameter selection `{selector}`"),
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
