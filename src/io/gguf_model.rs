//! A [`Model`] as a GGUF file and back ([`Model::to_gguf`], [`Model::from_gguf`]).

use std::path::Path;

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};

use super::gguf::{Gguf, GgufTensor, GgufType, GgufValue};
use crate::error::{Error, Result};
use crate::model::{DType, LayerKind, Model};
use crate::quant::{GgmlFormat, from_ggml_blocks, quantize_ggml, to_ggml_blocks};

/// Options for [`Model::to_gguf`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GgufOptions {
    /// Quantize dense parameters whose rows are a multiple of the format's block to this
    /// ggml format when writing (Q4_K, which has no in-memory quantized form, is reached
    /// this way; a parameter already quantized keeps its own form). Only weights of
    /// two or more dimensions are quantized, as llama.cpp does: biases and norms stay
    /// dense.
    pub quantize: Option<GgmlFormat>,
}

/// The ggml format a quantized tensor is in, if any of those GGUF holds.
fn ggml_form(q: &crate::quant::QuantizedTensor) -> Option<(GgmlFormat, Vec<u8>)> {
    [GgmlFormat::Q8_0, GgmlFormat::Q4_0, GgmlFormat::Q6_K]
        .into_iter()
        .find_map(|f| to_ggml_blocks(q, f).ok().map(|b| (f, b)))
}

impl Model {
    /// The model as GGUF content. Parameters quantized to Q8_0, Q4_0 or Q6_K are
    /// written as those ggml types, bit for bit; dense parameters in their dtype (F32,
    /// F16, BF16; F64 as F32), masks applied (pruned weights are zeros), or quantized
    /// on the way as [`GgufOptions::quantize`] says. Names are kept, and every
    /// `__metadata__` entry becomes a string key-value.
    ///
    /// Forms GGUF cannot hold are a typed error naming the parameter, before anything
    /// is written: other quantization schemes (k-means, uniform per channel, ...),
    /// low-rank factors, and non-float tensors kept verbatim.
    pub fn to_gguf(&self, options: &GgufOptions) -> Result<Gguf> {
        let mut g = Gguf::new();
        for (k, v) in self.metadata() {
            g.metadata.push((k.clone(), GgufValue::String(v.clone())));
        }
        g.alignment()?;
        let refuse = |name: &str, what: &str| {
            Error::invalid(
                "GGUF output",
                format!("`{name}` ({what})"),
                "parameters dense or quantized to q8_0, q4_0, q6_k (or q4_k on writing); \
                 write other forms as safetensors or slimnn's compressed format",
            )
        };
        if let Some(r) = self.raw_tensors().first() {
            return Err(refuse(&r.name, &format!("a verbatim {} tensor", r.dtype)));
        }
        for p in self.params() {
            let name = p.name();
            let shape = p.shape();
            if p.factorization().is_some() {
                return Err(refuse(name, "low-rank factors"));
            }
            if p.quantized().is_some_and(|q| q.input_scales().is_some()) {
                return Err(refuse(name, "per-input-column (AWQ) scales"));
            }
            let tensor = if let Some(q) = p.quantized() {
                let (f, blocks) = ggml_form(q)
                    .ok_or_else(|| refuse(name, "quantized in a scheme other than ggml's"))?;
                GgufTensor::new(name, shape, GgufType::Quant(f), blocks)?
            } else {
                let values = p.effective();
                let values = values.as_standard_layout();
                let values = values.as_slice().expect("standard layout");
                match options.quantize {
                    Some(f)
                        if shape.len() >= 2
                            && shape[shape.len() - 1].is_multiple_of(f.block_len()) =>
                    {
                        GgufTensor::new(
                            name,
                            shape,
                            GgufType::Quant(f),
                            quantize_ggml(values, shape, f)?,
                        )?
                    }
                    _ => match p.dtype() {
                        DType::F16 => GgufTensor::new(
                            name,
                            shape,
                            GgufType::F16,
                            values
                                .iter()
                                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                                .collect(),
                        )?,
                        DType::BF16 => GgufTensor::new(
                            name,
                            shape,
                            GgufType::BF16,
                            values
                                .iter()
                                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                                .collect(),
                        )?,
                        DType::F32 | DType::F64 => GgufTensor::from_f32(name, shape, values)?,
                    },
                }
            };
            g.tensors.push(tensor);
        }
        Ok(g)
    }

    /// Writes the model as a GGUF file ([`Model::to_gguf`]) atomically: nothing is
    /// written if any parameter cannot be, and never a half-written file.
    pub fn save_gguf(&self, path: impl AsRef<Path>, options: &GgufOptions) -> Result<()> {
        self.to_gguf(options)?.write(path)
    }

    /// A model from GGUF content: F32, F16 and BF16 tensors become dense parameters of
    /// that dtype; Q8_0, Q4_0 and Q6_K tensors quantized parameters (written back
    /// bit for bit); Q4_K tensors dense f32 parameters holding their decoded values.
    /// String key-values become metadata; other key-values are kept as their text
    /// (`U32(32)`, ...).
    pub fn from_gguf(g: &Gguf) -> Result<Model> {
        let mut m = Model::new();
        for (k, v) in &g.metadata {
            let text = match v {
                GgufValue::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            m.metadata_mut().insert(k.clone(), text);
        }
        for t in &g.tensors {
            let values = t.to_f32()?;
            let value = ArrayD::from_shape_vec(IxDyn(&t.shape), values)?;
            let kind = LayerKind::infer(&t.name, &t.shape);
            let dtype = match t.ty {
                GgufType::F16 => DType::F16,
                GgufType::BF16 => DType::BF16,
                _ => DType::F32,
            };
            let p = m.add_param(t.name.clone(), kind, dtype, value)?;
            if let GgufType::Quant(f @ (GgmlFormat::Q8_0 | GgmlFormat::Q4_0 | GgmlFormat::Q6_K)) =
                t.ty
            {
                p.set_quantized(from_ggml_blocks(&t.data, &t.shape, f)?)?;
            }
        }
        Ok(m)
    }

    /// Reads a GGUF file as a model ([`Model::from_gguf`]).
    pub fn load_gguf(path: impl AsRef<Path>) -> Result<Model> {
        Model::from_gguf(&Gguf::read(path)?)
    }
}
