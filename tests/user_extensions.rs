//! A researcher's own pruner and saliency, written here, used through the same entry
//! points as the built-in ones.

mod common;

use ndarray::{ArrayD, ArrayRef, IxDyn};
use slimnn::prune::{
    GlobalPruner, NmPruner, PruneContext, Pruner, Saliency, Statistics, UnstructuredPruner,
};
use slimnn::{Mask, Model, Result, Selector};

/// Prunes every weight in an odd column (a toy structured pattern).
struct OddColumns;

impl Pruner for OddColumns {
    fn mask(&self, w: &ArrayRef<f32, IxDyn>, _ctx: &PruneContext<'_, f32>) -> Result<Mask> {
        let cols = w.shape()[w.ndim() - 1];
        Ok(Mask::from_fn(w.shape(), |i| (i % cols).is_multiple_of(2)))
    }
}

/// Importance = closeness to 1.0 (a made-up criterion: weights near 1 matter most).
struct NearOne;

impl Saliency for NearOne {
    fn scores(
        &self,
        w: &ArrayRef<f32, IxDyn>,
        _ctx: &PruneContext<'_, f32>,
    ) -> Result<ArrayD<f32>> {
        Ok(w.mapv(|x| -(x - 1.0).abs()))
    }
}

fn model() -> Model {
    let mut m = Model::new();
    m.add("a.weight", common::normal(&[6, 8], 1)).unwrap();
    m.add("b.weight", common::normal(&[4, 6], 2)).unwrap();
    m.add("b.bias", common::normal(&[4], 3)).unwrap();
    m
}

#[test]
fn a_user_pruner_works_everywhere() {
    let mut m = model();
    let report = m
        .prune(&Selector::prunable(), &OddColumns, &Statistics::new())
        .unwrap();
    assert_eq!(report.total_zeros(), 24 + 12);
    // As a trait object, and on an engine's raw buffer.
    let boxed: Box<dyn Pruner> = Box::new(OddColumns);
    let mut buf = vec![1.0f32; 12];
    let mask = boxed
        .prune_slice(&mut buf, &[3, 4], &PruneContext::new())
        .unwrap();
    assert_eq!(buf, [1.0, 0.0, 1.0, 0.0].repeat(3));
    assert_eq!(mask.count_kept(), 6);
    // Monotone with a later built-in pruner.
    m.prune(
        &Selector::prunable(),
        &UnstructuredPruner::magnitude(0.75).unwrap(),
        &Statistics::new(),
    )
    .unwrap();
    let a = m.get("a.weight").unwrap().mask().unwrap();
    assert_eq!(a.count_pruned(), 36);
    assert!((0..48).filter(|i| i % 2 == 1).all(|i| !a.get(i)));
}

#[test]
fn a_user_saliency_works_with_every_saliency_pruner() {
    let w = ArrayD::from_shape_vec(IxDyn(&[1, 4]), vec![1.1f32, -3.0, 0.9, 5.0]).unwrap();
    let ctx = PruneContext::new();
    let m = UnstructuredPruner::new(NearOne, 0.5)
        .unwrap()
        .mask(&w, &ctx)
        .unwrap();
    assert_eq!(m.iter_kept().collect::<Vec<_>>(), vec![0, 2]);
    let m = NmPruner::new(NearOne, 1, 2)
        .unwrap()
        .mask(&w, &ctx)
        .unwrap();
    assert_eq!(m.iter_kept().collect::<Vec<_>>(), vec![0, 2]);

    let mut model = model();
    let report = model
        .prune_global(
            &Selector::prunable(),
            &GlobalPruner::new(NearOne, 0.5).unwrap(),
            &Statistics::new(),
        )
        .unwrap();
    assert_eq!(report.total_zeros(), 36);
    // Scores of the weights a mask keeps (`kept`) or prunes.
    let scores = |kept: bool| -> Vec<f32> {
        ["a.weight", "b.weight"]
            .iter()
            .flat_map(|n| {
                let p = model.get(n).unwrap();
                let mask = p.mask().unwrap();
                p.value()
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask.get(*i) == kept)
                    .map(|(_, &x)| -(x - 1.0).abs())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (kept_scores, pruned_scores) = (scores(true), scores(false));
    let min_kept = kept_scores.iter().copied().fold(f32::INFINITY, f32::min);
    assert!(pruned_scores.iter().all(|&s| s <= min_kept));
}

/// A user's own quantizer: rounds every weight to a multiple of 1/4, stored in 4 bits.
struct QuarterSteps;

impl slimnn::quant::Quantizer for QuarterSteps {
    fn quantize(
        &self,
        w: &ArrayRef<f32, IxDyn>,
        _ctx: &slimnn::quant::QuantContext<'_>,
    ) -> Result<slimnn::quant::QuantizedTensor> {
        use slimnn::quant::{Decoding, Granularity, Levels, PackedCodes, QuantizedTensor};
        let codes: Vec<u8> = w
            .iter()
            .map(|&x| ((x * 4.0).round().clamp(-8.0, 7.0) + 8.0) as u8)
            .collect();
        QuantizedTensor::new(
            w.shape(),
            PackedCodes::pack(&codes, 4)?,
            Decoding::Scalar {
                levels: Levels::Integers { min: -8, max: 7 },
                granularity: Granularity::PerTensor,
                scales: vec![0.25],
                zero_points: vec![],
                scale_bits: 32,
            },
        )
    }
}

#[test]
fn a_user_quantizer_works_everywhere() {
    use slimnn::quant::{QuantContext, Quantizer};
    let w = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![0.3f32, -1.1, 5.0, 0.0]).unwrap();
    let fake = QuarterSteps
        .fake_quantize(&w, &QuantContext::new())
        .unwrap();
    assert_eq!(fake.as_slice().unwrap(), &[0.25, -1.0, 1.75, 0.0]);
    let mut m = model();
    let report = m.quantize(&Selector::prunable(), &QuarterSteps).unwrap();
    assert_eq!(report.rows.len(), 2);
    assert!(
        report
            .rows
            .iter()
            .all(|r| r.storage_bits == 4 * r.numel + 32)
    );
    let p = m.get("a.weight").unwrap();
    assert_eq!(p.quantized().unwrap().dequantize::<f32>(), *p.value());
    let boxed: Box<dyn Quantizer> = Box::new(QuarterSteps);
    assert!(boxed.quantize(&w, &QuantContext::new()).is_ok());
}

/// A user's own low-rank method: every row replaced by the mean row (rank 1).
struct MeanRow;

impl slimnn::lowrank::LowRank for MeanRow {
    fn factorize(
        &self,
        w: &ArrayRef<f32, IxDyn>,
        _ctx: &slimnn::lowrank::LowRankContext<'_>,
    ) -> Result<slimnn::lowrank::Factorization> {
        use ndarray::{Array2, Axis, Ix2};
        use slimnn::lowrank::{Factorization, Factors};
        let m = w
            .view()
            .into_dimensionality::<Ix2>()
            .map_err(|_| slimnn::Error::BadShape {
                what: "weights".into(),
                shape: w.shape().to_vec(),
                reason: "a Linear weight is 2-D".into(),
            })?;
        let mean = m.mean_axis(Axis(0)).ok_or(slimnn::Error::Empty {
            what: "weights".into(),
        })?;
        let a = Array2::ones((m.nrows(), 1));
        let b = mean.insert_axis(Axis(0));
        Factorization::new(m.shape(), Factors::Linear { a, b })
    }
}

#[test]
fn a_user_low_rank_method_works_everywhere() {
    use slimnn::lowrank::{LowRank, LowRankContext};
    let w = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0f32, 2.0, 3.0, 3.0, 4.0, 5.0]).unwrap();
    let f = MeanRow.factorize(&w, &LowRankContext::new()).unwrap();
    assert_eq!(f.ranks(), vec![1]);
    assert_eq!(f.params(), 5);
    assert_eq!(
        f.reconstruct().as_slice().unwrap(),
        &[2.0, 3.0, 4.0, 2.0, 3.0, 4.0]
    );
    assert_eq!(f.relative_error(), None);
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![1.0f32, 0.0, -1.0]).unwrap();
    assert_eq!(f.forward(&x).unwrap().as_slice().unwrap(), &[-2.0, -2.0]);

    let mut m = model();
    let boxed: Box<dyn LowRank> = Box::new(MeanRow);
    let report = m.factorize(&Selector::prunable(), &boxed).unwrap();
    assert_eq!(report.layers.len(), 2);
    for l in &report.layers {
        let p = m.get(&l.name).unwrap();
        assert_eq!(*p.value(), l.factorization.reconstruct());
        assert_eq!(l.factorization.params(), p.shape()[0] + p.shape()[1]);
    }
}

/// Pipeline step labels keep the methods' settings; a user's method without a
/// `describe` gets its type name, and a boxed one forwards its own (issue 10).
#[test]
fn step_labels_say_the_settings() {
    use slimnn::pipeline::{Pipeline, Prune, PruneGlobal, Quantize};
    use slimnn::prune::{ChannelCriterion, StructuredPruner};
    use slimnn::quant::{Granularity, KMeansQuantizer, Quantizer, Scheme, UniformQuantizer};

    struct Named;
    impl Pruner for Named {
        fn mask(&self, w: &ArrayRef<f32, IxDyn>, _: &PruneContext<'_, f32>) -> Result<Mask> {
            Ok(Mask::from_fn(w.shape(), |_| true))
        }
        fn describe(&self) -> String {
            "keep everything".into()
        }
    }

    let all = Selector::prunable;
    let boxed: Box<dyn Pruner> = Box::new(OddColumns);
    let boxed_named: Box<dyn Pruner> = Box::new(Named);
    let boxed_q: Box<dyn Quantizer> = Box::new(QuarterSteps);
    let p = Pipeline::new()
        .then(Prune::new(
            all(),
            UnstructuredPruner::magnitude(0.5).unwrap(),
        ))
        .then(PruneGlobal::new(
            all(),
            GlobalPruner::magnitude(0.9).unwrap(),
        ))
        .then(Prune::new(all(), NmPruner::magnitude(2, 4).unwrap()))
        .then(Prune::new(
            all(),
            UnstructuredPruner::random(7, 0.25).unwrap(),
        ))
        .then(Prune::new(
            all(),
            StructuredPruner::new(ChannelCriterion::L1, 0.5).unwrap(),
        ))
        .then(Prune::new(all(), boxed))
        .then(Prune::new(all(), boxed_named))
        .then(Quantize::new(all(), KMeansQuantizer::optimal(16).unwrap()))
        .then(Quantize::new(
            all(),
            UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })
                .unwrap(),
        ))
        .then(Quantize::new(all(), boxed_q));
    assert_eq!(
        p.describe_steps(),
        [
            "prune: magnitude 50%",
            "prune globally: magnitude 90%",
            "prune: magnitude 2:4",
            "prune: random (seed 7) 25%",
            "prune: L1 50% of output channels",
            "prune: OddColumns",
            "prune: keep everything",
            "quantize: k-means 16 clusters (optimal)",
            "quantize: uniform 8-bit symmetric per channel (axis 0)",
            "quantize: QuarterSteps",
        ]
    );
}
