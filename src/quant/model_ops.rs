//! Quantizing a [`Model`]'s selected parameters, with a report of what it cost and saved.

use std::fmt;

use super::{QuantContext, QuantizedTensor, Quantizer};
use crate::error::Result;
use crate::model::{LayerKind, Model, Selector};

impl Model {
    /// Quantizes each selected parameter (its values with the mask applied; the mask is
    /// passed on, so codebook methods fit the kept weights). Each parameter keeps its
    /// quantized form and takes its decoded values; masks stay. Either every selected
    /// parameter is quantized or, on error, none is.
    ///
    /// ```
    /// use ndarray::{Array, IxDyn};
    /// use slimnn::quant::{KMeansQuantizer, Quantizer};
    /// use slimnn::{Model, Selector};
    ///
    /// let mut model = Model::new();
    /// model.add("fc.weight", Array::from_shape_fn(IxDyn(&[32, 64]), |i| ((i[0] * 64 + i[1]) as f32 * 0.7).sin()))?;
    /// let report = model.quantize(&Selector::prunable(), &KMeansQuantizer::optimal(16)?)?;
    /// assert_eq!(report.rows[0].bits_per_weight.round(), 4.0);
    /// assert!(report.rows[0].relative_error < 0.1);
    /// assert!(model.get("fc.weight")?.quantized().is_some());
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn quantize<Q: Quantizer<f32> + ?Sized>(
        &mut self,
        selector: &Selector,
        quantizer: &Q,
    ) -> Result<QuantReport> {
        let names: Vec<String> = self
            .select(selector)?
            .into_iter()
            .map(String::from)
            .collect();
        let mut done: Vec<(QuantizedTensor, QuantRow)> = Vec::with_capacity(names.len());
        for name in &names {
            let p = self.get(name)?;
            let values = p.effective();
            let ctx = QuantContext {
                name: Some(name),
                kind: Some(p.kind()),
                mask: p.mask(),
            };
            let mut q = quantizer.quantize(&values, &ctx)?;
            crate::tensor::check_same_shape(p.shape(), q.shape(), || {
                format!("quantized form of `{name}`")
            })?;
            let mut decoded = q.dequantize::<f32>();
            // A quantizer that decodes pruned weights to something else than 0 needs
            // the mask stored with its codes.
            if let Some(m) = p.mask()
                && q.mask().is_none()
                && m.iter_pruned()
                    .any(|i| decoded.as_slice().is_some_and(|d| d[i] != 0.0))
            {
                q = q.with_mask(m.clone())?;
                m.apply(&mut decoded)?;
            }
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for (&a, &b) in values.iter().zip(decoded.iter()) {
                num += (a as f64 - b as f64).powi(2);
                den += (a as f64).powi(2);
            }
            let row = QuantRow {
                name: name.clone(),
                kind: p.kind(),
                numel: p.numel(),
                storage_bits: q.storage_bits(),
                bits_per_weight: q.bits_per_weight(),
                relative_error: if den > 0.0 {
                    (num / den).sqrt()
                } else {
                    num.sqrt()
                },
            };
            done.push((q, row));
        }
        let mut rows = Vec::with_capacity(done.len());
        for (name, (q, row)) in names.iter().zip(done) {
            self.get_mut(name)?.set_quantized(q)?;
            rows.push(row);
        }
        Ok(QuantReport { rows })
    }
}

/// One parameter's line in a [`QuantReport`].
#[derive(Clone, Debug, PartialEq)]
pub struct QuantRow {
    /// Parameter name.
    pub name: String,
    /// Its kind.
    pub kind: LayerKind,
    /// Number of weights.
    pub numel: usize,
    /// Exact storage of the quantized form, in bits (codes and everything to decode them).
    pub storage_bits: usize,
    /// `storage_bits / numel`.
    pub bits_per_weight: f64,
    /// `‖w − ŵ‖ / ‖w‖` over the (masked) values.
    pub relative_error: f64,
}

/// What quantization stored and what it cost, per parameter and in total.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantReport {
    /// One row per quantized parameter, in model order.
    pub rows: Vec<QuantRow>,
}

impl QuantReport {
    /// Total weights.
    pub fn total_numel(&self) -> usize {
        self.rows.iter().map(|r| r.numel).sum()
    }

    /// Total storage in bits.
    pub fn total_storage_bits(&self) -> usize {
        self.rows.iter().map(|r| r.storage_bits).sum()
    }

    /// 32-bit size over quantized size.
    pub fn compression(&self) -> f64 {
        (32 * self.total_numel()) as f64 / self.total_storage_bits().max(1) as f64
    }
}

impl fmt::Display for QuantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0)
            .max(9);
        writeln!(
            f,
            "{:<w$}  {:<9}  {:>10}  {:>9}  {:>12}  {:>10}",
            "parameter", "kind", "weights", "bits/w", "bytes", "rel. error"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<w$}  {:<9}  {:>10}  {:>9.3}  {:>12}  {:>10.5}",
                r.name,
                r.kind.to_string(),
                r.numel,
                r.bits_per_weight,
                r.storage_bits.div_ceil(8),
                r.relative_error
            )?;
        }
        write!(
            f,
            "{:<w$}  {:<9}  {:>10}  {:>9.3}  {:>12}  {:>9.1}x",
            "total",
            "",
            self.total_numel(),
            self.total_storage_bits() as f64 / self.total_numel().max(1) as f64,
            self.total_storage_bits().div_ceil(8),
            self.compression()
        )
    }
}
