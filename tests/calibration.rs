//! Calibration statistics through the public API: Wanda and a user's own data-aware
//! methods read them from the method's context, per layer, on a model.

use std::sync::Arc;

use ndarray::{ArrayD, ArrayRef, Dimension, IxDyn};
use slimnn::calib::{CalibrationStats, LayerStats};
use slimnn::prune::{PruneContext, Pruner, Statistics, UnstructuredPruner};
use slimnn::quant::{
    Granularity, QuantContext, QuantizedTensor, Quantizer, Scheme, UniformQuantizer,
};
use slimnn::{Error, Mask, Model, Result, Selector};

fn wave(shape: &[usize], phase: f32) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |i| {
        let k = i.slice().iter().fold(0usize, |a, &x| a * 31 + x);
        ((k as f32) * 0.61 + phase).sin() * (1.0 + (k % 5) as f32)
    })
}

/// Rows whose inputs have very different scales, so Wanda differs from magnitude.
fn stats(n_rows: usize, inputs: usize) -> LayerStats {
    let rows: Vec<f32> = (0..n_rows * inputs)
        .map(|i| ((i as f32) * 0.37).cos() * (1 + (i % inputs) * (i % inputs)) as f32)
        .collect();
    let mut s = LayerStats::new(inputs);
    s.observe(&rows, n_rows, inputs).unwrap();
    s
}

#[test]
fn wanda_reads_its_norms_from_layer_stats() {
    let w = wave(&[6, 8], 0.3);
    let s = stats(40, 8);
    let pruner = UnstructuredPruner::wanda(0.5).unwrap();
    let from_stats = pruner
        .mask(&w, &PruneContext::new().with_layer_stats(&s))
        .unwrap();
    let norms = s.activation_norms();
    let explicit = pruner
        .mask(&w, &PruneContext::new().with_activation_norms(norms.view()))
        .unwrap();
    assert_eq!(from_stats, explicit);
    let magnitude = UnstructuredPruner::magnitude(0.5)
        .unwrap()
        .mask(&w, &PruneContext::new())
        .unwrap();
    assert_ne!(from_stats, magnitude, "the statistics must matter");
    // Neither: the typed error names the statistic.
    let e = pruner.mask(&w, &PruneContext::new()).unwrap_err();
    assert!(matches!(e, Error::MissingStatistic { .. }), "{e}");
    // Statistics of the wrong width.
    let e = pruner
        .mask(&w, &PruneContext::new().with_layer_stats(&stats(4, 5)))
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
}

/// A user's own data-aware pruner: prunes the inputs that were never active.
struct DeadInputs;

impl Pruner for DeadInputs {
    fn mask(&self, w: &ArrayRef<f32, IxDyn>, ctx: &PruneContext<'_, f32>) -> Result<Mask> {
        let s = ctx
            .layer_stats
            .ok_or_else(|| Error::extension("DeadInputs", "needs calibration statistics"))?;
        let cols = w.shape()[1];
        let diag = s.sq_sum();
        Ok(Mask::from_fn(w.shape(), |i| diag[i % cols] > 0.0))
    }
}

#[test]
fn a_model_is_pruned_with_the_statistics_of_each_layer() {
    let mut model = Model::new();
    model.add("a.weight", wave(&[4, 3], 0.1)).unwrap();
    model.add("b.weight", wave(&[2, 4], 0.2)).unwrap();
    let mut cal = CalibrationStats::new();
    cal.observe("a.weight", &[1.0, 0.0, 2.0, 3.0, 0.0, -1.0], 2, 3)
        .unwrap();
    cal.observe("b.weight", &[0.0, 1.0, 1.0, 1.0], 1, 4)
        .unwrap();
    cal.observe("not.in.the.model", &[1.0], 1, 1).unwrap();
    let stats = Statistics::new().with_calibration(Arc::new(cal.clone()));
    let report = model
        .prune(&Selector::prunable(), &DeadInputs, &stats)
        .unwrap();
    // a: input 1 dead → 4 weights; b: input 0 dead → 2 weights.
    assert_eq!(report.total_zeros(), 6);

    let mut model2 = model.clone();
    model2
        .prune(
            &Selector::prunable(),
            &UnstructuredPruner::wanda(0.5).unwrap(),
            &stats,
        )
        .unwrap();
    let e = model
        .prune(
            &Selector::prunable(),
            &UnstructuredPruner::wanda(0.5).unwrap(),
            &Statistics::new(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::MissingStatistic { .. }), "{e}");
}

/// A user's own data-aware quantizer sees the statistics of the layer it quantizes.
struct NeedsRows(usize);

impl Quantizer for NeedsRows {
    fn quantize(
        &self,
        w: &ArrayRef<f32, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        let rows = ctx.layer_stats.map_or(0, |s| s.rows());
        if rows != self.0 as u64 {
            return Err(Error::extension("NeedsRows", format!("saw {rows} rows")));
        }
        UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })?
            .quantize(w, ctx)
    }
}

#[test]
fn quantizers_see_the_layer_stats() {
    let mut model = Model::new();
    model.add("a.weight", wave(&[4, 3], 0.1)).unwrap();
    let mut cal = CalibrationStats::new();
    cal.observe("a.weight", &[1.0; 9], 3, 3).unwrap();
    model
        .clone()
        .quantize_calibrated(&Selector::prunable(), &NeedsRows(3), &cal)
        .unwrap();
    assert!(
        model
            .quantize(&Selector::prunable(), &NeedsRows(3))
            .is_err()
    );
}

/// A one-Linear model quantized by AWQ (4 bits, groups of 32).
fn awq_model() -> Model {
    let mut model = Model::new();
    model.add("fc.weight", wave(&[16, 64], 0.3)).unwrap();
    let mut cal = CalibrationStats::new();
    cal.insert("fc.weight", stats(96, 64));
    model
        .quantize_calibrated(
            &Selector::prunable(),
            &slimnn::calib::Awq::new(4, Some(32)).unwrap(),
            &cal,
        )
        .unwrap();
    model
}

/// An AWQ weight keeps its codes and per-input scales in the compressed file (record
/// form 5): it loads back with the same values, scales and decoding, in fewer bytes.
#[test]
fn an_awq_weight_round_trips_through_the_compressed_file() {
    let model = awq_model();
    let q = model.get("fc.weight").unwrap().quantized().unwrap().clone();
    assert!(q.input_scales().is_some());
    let bytes = slimnn::store::to_bytes(&model).unwrap();
    assert!(bytes.len() < 16 * 64 * 4 / 2, "{} bytes", bytes.len());
    let back = slimnn::store::from_bytes(&bytes).unwrap();
    let p = back.get("fc.weight").unwrap();
    let r = p.quantized().expect("stored quantized, not decoded");
    assert_eq!(r.input_scales(), q.input_scales());
    assert_eq!(r.decoding(), q.decoding());
    assert_eq!(p.value(), model.get("fc.weight").unwrap().value());
}

/// The integer kernels do not apply AWQ's input scales: they refuse such a weight
/// instead of giving a wrong product.
#[test]
fn integer_kernels_refuse_awq_weights() {
    use slimnn::quant::{QuantizedLinear, group_matmul};
    let model = awq_model();
    let q = model.get("fc.weight").unwrap().quantized().unwrap().clone();
    let x = ndarray::Array2::<f32>::zeros((2, 64));
    assert!(matches!(
        group_matmul(&x, &q, None),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(QuantizedLinear::from_quantized(&q, None).is_err());
}
