//! Quantizing a [`Model`]'s selected parameters, with a report of what it cost and saved.

use std::fmt;

use super::{QuantContext, QuantizedTensor, Quantizer};
use crate::calib::CalibrationStats;
use crate::error::Result;
use crate::model::{LayerKind, Model, Selector};
use crate::tensor::{relative_from, squared_errors};

impl Model {
    /// Quantizes each selected parameter (its values with the mask applied; the mask is
    /// passed on, so codebook methods fit the kept weights). Each parameter keeps its
    /// quantized form and takes its decoded values; masks stay. A factorized parameter
    /// has its factors quantized, each on its own
    /// ([`Factorization::with_quantized_factors`](crate::lowrank::Factorization::with_quantized_factors));
    /// its row then counts the factors' elements. Either every selected parameter is
    /// quantized or, on error, none is.
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
        self.quantize_inner(selector, quantizer, None)
    }

    /// As [`Model::quantize`], with each parameter's calibration statistics in its
    /// [`QuantContext::layer_stats`] (for data-aware quantizers such as AWQ). Names of `stats` the model lacks are ignored.
    pub fn quantize_calibrated<Q: Quantizer<f32> + ?Sized>(
        &mut self,
        selector: &Selector,
        quantizer: &Q,
        stats: &CalibrationStats,
    ) -> Result<QuantReport> {
        self.quantize_inner(selector, quantizer, Some(stats))
    }

    fn quantize_inner<Q: Quantizer<f32> + ?Sized>(
        &mut self,
        selector: &Selector,
        quantizer: &Q,
        stats: Option<&CalibrationStats>,
    ) -> Result<QuantReport> {
        let names: Vec<String> = self
            .select(selector)?
            .into_iter()
            .map(String::from)
            .collect();
        let mut done: Vec<(Quantized, QuantRow)> = Vec::with_capacity(names.len());
        for name in &names {
            let p = self.get(name)?;
            if let Some(f) = p.factorization() {
                let mut codes = Vec::new();
                let (mut num, mut den) = (0.0f64, 0.0f64);
                for (i, values) in f.factor_values().iter().enumerate() {
                    let what = format!("{name} (factor {i})");
                    let ctx = QuantContext {
                        name: Some(&what),
                        kind: None,
                        mask: None,
                        layer_stats: None,
                    };
                    let q = quantizer.quantize(values, &ctx)?;
                    crate::tensor::check_same_shape(values.shape(), q.shape(), || {
                        format!("quantized form of {what}")
                    })?;
                    let (n, d) = squared_errors(values.iter(), q.dequantize::<f32>().iter());
                    (num, den) = (num + n, den + d);
                    codes.push(q);
                }
                let storage_bits = codes.iter().map(QuantizedTensor::storage_bits).sum();
                let f = f.clone().with_quantized_factors(codes)?;
                let row = QuantRow {
                    name: name.clone(),
                    kind: p.kind(),
                    numel: f.params(),
                    storage_bits,
                    bits_per_weight: storage_bits as f64 / f.params().max(1) as f64,
                    relative_error: relative_from(num, den),
                };
                done.push((Quantized::Factors(f), row));
                continue;
            }
            let values = p.effective();
            let ctx = QuantContext {
                name: Some(name),
                kind: Some(p.kind()),
                mask: p.mask(),
                layer_stats: stats.and_then(|s| s.get(name)),
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
            let (num, den) = squared_errors(values.iter(), decoded.iter());
            let row = QuantRow {
                name: name.clone(),
                kind: p.kind(),
                numel: p.numel(),
                storage_bits: q.storage_bits(),
                bits_per_weight: q.bits_per_weight(),
                relative_error: relative_from(num, den),
            };
            done.push((Quantized::Whole(q), row));
        }
        let mut rows = Vec::with_capacity(done.len());
        for (name, (q, row)) in names.iter().zip(done) {
            let p = self.get_mut(name)?;
            match q {
                Quantized::Whole(q) => p.set_quantized(q)?,
                Quantized::Factors(f) => p.set_factorization(f)?,
            }
            rows.push(row);
        }
        Ok(QuantReport { rows })
    }
}

/// What quantizing one parameter made.
enum Quantized {
    /// The parameter's quantized form.
    Whole(QuantizedTensor),
    /// Its factorization with quantized factors.
    Factors(crate::lowrank::Factorization),
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
    /// Exact size of the quantized form as held in memory
    /// ([`QuantizedTensor::storage_bits`]), in bits: a code for every element (pruned ones
    /// included), everything to decode them, and the mask if stored with the codes. Not
    /// the compressed file's size: that leaves out pruned weights' codes, stores
    /// positions sparsely and may Huffman-code (see [`crate::pipeline::Report`]).
    pub storage_bits: usize,
    /// `storage_bits / numel`: in-memory bits per weight.
    pub bits_per_weight: f64,
    /// `‖w − ŵ‖ / ‖w‖` over the (masked) values.
    pub relative_error: f64,
}

/// What quantization cost, per parameter and in total, counted on the quantized forms
/// **as held in memory** (what an engine that runs a [`QuantizedTensor`] keeps): dense
/// codes, decoding tables, stored masks.
///
/// It answers a different question than the pipeline's [`Report`](crate::pipeline::Report),
/// which counts the **compressed file** (only kept weights' codes, sparse positions,
/// Huffman coding, headers, against the original dtype). On a model pruned to 10% and
/// quantized to 4 bits, this report says about 5 bits per weight (4-bit codes for every
/// weight plus a 1-bit mask) where the file takes under 2; its printout labels its
/// columns "in-memory" and its ratio "vs f32" to say so.
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

    /// Total in-memory size of the quantized forms, in bits.
    pub fn total_storage_bits(&self) -> usize {
        self.rows.iter().map(|r| r.storage_bits).sum()
    }

    /// In-memory bits per weight over all rows.
    pub fn bits_per_weight(&self) -> f64 {
        self.total_storage_bits() as f64 / self.total_numel().max(1) as f64
    }

    /// The weights' size as f32 (32 bits each, whatever their stored dtype) over the
    /// in-memory size of their quantized forms. Not the compressed file's ratio
    /// ([`Report::compression_rate`](crate::pipeline::Report::compression_rate)).
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
            "{:<w$}  {:<9}  {:>10}  {:>14}  {:>15}  {:>10}",
            "parameter", "kind", "weights", "in-mem. bits/w", "in-memory bytes", "rel. error"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<w$}  {:<9}  {:>10}  {:>14.3}  {:>15}  {:>10.5}",
                r.name,
                r.kind.to_string(),
                r.numel,
                r.bits_per_weight,
                r.storage_bits.div_ceil(8),
                r.relative_error
            )?;
        }
        writeln!(
            f,
            "{:<w$}  {:<9}  {:>10}  {:>14.3}  {:>15}  {:>9.1}x vs f32",
            "total",
            "",
            self.total_numel(),
            self.bits_per_weight(),
            self.total_storage_bits().div_ceil(8),
            self.compression()
        )?;
        write!(
            f,
            "(quantized forms in memory: a code per weight, pruned ones included, decoding \
             tables and stored masks; the compressed file is smaller, see the pipeline's Report)"
        )
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array, IxDyn};

    use crate::pipeline::{Pipeline, PruneGlobal, Quantize};
    use crate::prune::{GlobalPruner, Statistics};
    use crate::quant::KMeansQuantizer;
    use crate::{Model, Selector};

    fn model() -> Model {
        let mut m = Model::new();
        let w = Array::from_shape_fn(IxDyn(&[64, 128]), |i| {
            ((i[0] * 128 + i[1]) as f32 * 0.7).sin()
        });
        m.add("fc.weight", w).unwrap();
        m
    }

    /// The quantization report and the pipeline report of the same model count
    /// different things; each says which (issue 10).
    #[test]
    fn quant_report_says_it_counts_in_memory_forms() {
        let mut m = model();
        m.prune_global(
            &Selector::prunable(),
            &GlobalPruner::magnitude(0.9).unwrap(),
            &Statistics::new(),
        )
        .unwrap();
        let report = m
            .quantize(
                &Selector::prunable(),
                &KMeansQuantizer::optimal(16).unwrap(),
            )
            .unwrap();
        // 4-bit codes for every weight, a 1-bit mask, the 16-entry codebook.
        let q = m.get("fc.weight").unwrap().quantized().unwrap();
        assert_eq!(report.total_storage_bits(), q.storage_bits());
        assert!(
            (report.bits_per_weight() - 5.0).abs() < 0.1,
            "{}",
            report.bits_per_weight()
        );
        let text = report.to_string();
        assert!(
            text.contains("in-memory bytes") && text.contains("x vs f32"),
            "{text}"
        );
        assert!(text.contains("compressed file is smaller"), "{text}");

        // The file of the same compression is far smaller, and its report says "file".
        let mut m = model();
        let file = Pipeline::new()
            .then(PruneGlobal::new(
                Selector::prunable(),
                GlobalPruner::magnitude(0.9).unwrap(),
            ))
            .then(Quantize::new(
                Selector::prunable(),
                KMeansQuantizer::optimal(16).unwrap(),
            ))
            .run(&mut m)
            .unwrap();
        let file_bits = 8.0 * file.file_bytes as f64 / file.total_params() as f64;
        assert!(file_bits < 0.5 * report.bits_per_weight(), "{file_bits}");
        assert!(file.to_string().contains("total (file)"));
    }
}
