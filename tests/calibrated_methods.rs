//! GPTQ, SparseGPT and OBS as the crate's methods, through the public API: on a model
//! with its calibration statistics, on a Conv2d through a network, after pruning, on an
//! engine's buffer, in a pipeline; and their typed errors.

use std::sync::Arc;

use ndarray::{Array2, ArrayD, ArrayView2, IxDyn};
use slimnn::calib::{CalibrationStats, Gptq, LayerStats, Obs, SparseGpt, SparsityPattern};
use slimnn::half::f16;
use slimnn::nn::{ConvSpec, Layer, Network};
use slimnn::pipeline::{Pipeline, PruneCalibrated, QuantizeCalibrated};
use slimnn::prune::{
    HalfPruner, MagnitudePruner, NmPruner, PruneContext, Pruner, Scope, Statistics,
    UnstructuredPruner, Wanda,
};
use slimnn::quant::{
    Decoding, GgmlFormat, GgmlQuantizer, Granularity, QuantContext, Quantizer, Scheme,
    UniformQuantizer, from_ggml_blocks, to_ggml_blocks,
};
use slimnn::{Error, Mask, Model, Selector};

/// A deterministic value in [−1, 1) from a counter.
fn noise(k: usize, seed: usize) -> f32 {
    let x = (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (seed as u64 * 0xBF58_476D);
    let x = (x ^ (x >> 29)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// `n` rows of `d` correlated inputs (a shared factor) with an outlier channel every 7th.
fn rows(n: usize, d: usize, seed: usize) -> Vec<f32> {
    (0..n * d)
        .map(|k| {
            let (r, j) = (k / d, k % d);
            let shared = noise(r, seed + 1);
            let scale = if j % 7 == 3 { 8.0 } else { 1.0 };
            scale * (noise(k, seed) + 0.8 * shared * ((j % 3) as f32 - 1.0))
        })
        .collect()
}

fn weight(shape: &[usize], seed: usize) -> ArrayD<f32> {
    let mut k = 0;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        k += 1;
        noise(k, seed + 100)
    })
}

const LAYERS: [(&str, [usize; 2]); 2] = [("fc1.weight", [24, 48]), ("fc2.weight", [12, 24])];

fn model_and_stats() -> (Model, CalibrationStats) {
    let mut model = Model::new();
    let mut stats = CalibrationStats::new();
    for (i, (name, [out, inputs])) in LAYERS.into_iter().enumerate() {
        model.add(name, weight(&[out, inputs], i)).unwrap();
        stats
            .observe(name, &rows(8 * inputs, inputs, i), 8 * inputs, inputs)
            .unwrap();
    }
    (model, stats)
}

/// `Σ_r (w_r − ŵ_r)ᵀ H (w_r − ŵ_r)`, the layer output error on the calibration rows.
fn output_error(w: &ArrayD<f32>, w_hat: &ArrayD<f32>, h: ArrayView2<'_, f64>) -> f64 {
    let cols = h.nrows();
    let dw = Array2::from_shape_vec(
        (w.len() / cols, cols),
        w.iter().zip(w_hat).map(|(a, b)| (b - a) as f64).collect(),
    )
    .unwrap();
    (dw.dot(&h) * &dw).sum()
}

fn errors(original: &Model, compressed: &Model, stats: &CalibrationStats) -> Vec<f64> {
    LAYERS
        .iter()
        .map(|(name, _)| {
            output_error(
                original.get(name).unwrap().value(),
                &compressed.get(name).unwrap().effective(),
                stats.get(name).unwrap().xtx(),
            )
        })
        .collect()
}

#[test]
fn gptq_on_a_model_is_at_least_as_accurate_as_round_to_nearest() {
    let (model, stats) = model_and_stats();
    for bits in [2u8, 3, 4] {
        for group in [None, Some(12)] {
            let granularity = match group {
                Some(size) => Granularity::PerGroup { size },
                None => Granularity::PerChannel { axis: 0 },
            };
            let mut gptq = Gptq::new(bits).unwrap();
            if let Some(g) = group {
                gptq = gptq.with_group(g).unwrap();
            }
            let mut q = model.clone();
            let report = q
                .quantize_calibrated(&Selector::prunable(), &gptq, &stats)
                .unwrap();
            assert_eq!(report.rows.len(), 2);
            let mut r = model.clone();
            let rtn = UniformQuantizer::new(bits, Scheme::Affine, granularity).unwrap();
            r.quantize(&Selector::prunable(), &rtn).unwrap();
            for (name, _) in LAYERS {
                let (a, b) = (q.get(name).unwrap(), r.get(name).unwrap());
                // The same grid; GPTQ only chooses other codes.
                assert_eq!(
                    a.quantized().unwrap().decoding(),
                    b.quantized().unwrap().decoding()
                );
            }
            let (e_gptq, e_rtn) = (errors(&model, &q, &stats), errors(&model, &r, &stats));
            for (g, r) in e_gptq.iter().zip(&e_rtn) {
                assert!(g < r, "{bits} bits {group:?}: GPTQ {g} vs RTN {r}");
            }
        }
    }
}

#[test]
fn sparsegpt_on_a_model_is_at_least_as_accurate_as_magnitude_and_wanda() {
    let (model, stats) = model_and_stats();
    let with_stats = Statistics::new().with_calibration(Arc::new(stats.clone()));
    let pruned = |pruner: &dyn Pruner| {
        let mut m = model.clone();
        m.prune(&Selector::prunable(), &pruner, &with_stats)
            .unwrap();
        m
    };
    let cases: Vec<(SparsityPattern, Vec<Box<dyn Pruner>>)> = vec![
        (
            SparsityPattern::PerRow(0.5),
            vec![
                Box::new(
                    MagnitudePruner::magnitude(0.5)
                        .unwrap()
                        .with_scope(Scope::PerOutput),
                ),
                Box::new(UnstructuredPruner::wanda(0.5).unwrap()),
            ],
        ),
        (
            SparsityPattern::NM { n: 2, m: 4 },
            vec![
                Box::new(NmPruner::magnitude(2, 4).unwrap()),
                Box::new(NmPruner::new(Wanda, 2, 4).unwrap()),
            ],
        ),
        (
            SparsityPattern::Unstructured(0.7),
            vec![Box::new(MagnitudePruner::magnitude(0.7).unwrap())],
        ),
    ];
    for (pattern, others) in cases {
        let s = pruned(&SparseGpt::new(pattern).unwrap());
        let e_sparsegpt = errors(&model, &s, &stats);
        for other in &others {
            let o = pruned(other.as_ref());
            assert_eq!(
                s.sparsity(&Selector::prunable()).unwrap(),
                o.sparsity(&Selector::prunable()).unwrap(),
                "{pattern}"
            );
            for (a, b) in e_sparsegpt.iter().zip(errors(&model, &o, &stats)) {
                assert!(
                    *a < b,
                    "{pattern}: SparseGPT {a} vs {} {b}",
                    other.describe()
                );
            }
        }
        // The update reached the model: kept weights moved.
        let (before, after) = (
            model.get("fc1.weight").unwrap().value(),
            s.get("fc1.weight").unwrap(),
        );
        let mask = after.mask().unwrap();
        assert!(
            mask.iter_kept()
                .any(|i| before.as_slice().unwrap()[i] != after.value().as_slice().unwrap()[i])
        );
        assert!(
            mask.iter_pruned()
                .all(|i| after.value().as_slice().unwrap()[i] == 0.0)
        );
    }
}

#[test]
fn obs_prunes_every_row_and_beats_magnitude() {
    let (model, stats) = model_and_stats();
    let with_stats = Statistics::new().with_calibration(Arc::new(stats.clone()));
    let mut o = model.clone();
    o.prune(&Selector::prunable(), &Obs::new(0.5).unwrap(), &with_stats)
        .unwrap();
    let mut m = model.clone();
    m.prune(
        &Selector::prunable(),
        &MagnitudePruner::magnitude(0.5)
            .unwrap()
            .with_scope(Scope::PerOutput),
        &with_stats,
    )
    .unwrap();
    for (name, [out, inputs]) in LAYERS {
        let mask = o.get(name).unwrap().mask().unwrap().to_bools();
        for r in 0..out {
            let kept = (0..inputs).filter(|&j| mask[[r, j]]).count();
            assert_eq!(kept, inputs / 2, "{name} row {r}");
        }
    }
    for (a, b) in errors(&model, &o, &stats)
        .iter()
        .zip(errors(&model, &m, &stats))
    {
        assert!(*a < b, "OBS {a} vs magnitude {b}");
    }
}

/// A Conv2d layer `[4, 4, 3, 3]` alone in a network, its statistics from a run.
fn conv_net() -> (Model, Network, Array2<f32>) {
    let mut model = Model::new();
    model.add("conv.weight", weight(&[4, 4, 3, 3], 7)).unwrap();
    let net = Network::new(vec![
        Layer::Conv2d {
            weight: "conv.weight".into(),
            bias: None,
            spec: ConvSpec::new(),
        },
        Layer::Flatten,
    ])
    .with_input_shape(&[4, 6, 6]);
    let x = Array2::from_shape_vec((40, 4 * 36), rows(40 * 4, 36, 3)).unwrap();
    (model, net, x)
}

#[test]
fn a_conv_weight_is_solved_on_its_im2col_statistics() {
    let (model, net, x) = conv_net();
    let stats = net.calibration_stats(&model, x.view()).unwrap();
    assert_eq!(stats.get("conv.weight").unwrap().inputs(), 36);
    let dense = net.forward(&model, x.view()).unwrap();
    // The network's own output error: what the statistics' Σ x xᵀ stands for.
    let output_error = |m: &Model| {
        (&net.forward(m, x.view()).unwrap() - &dense)
            .mapv(|v| v * v)
            .sum()
    };
    let with_stats = Statistics::new().with_calibration(Arc::new(stats.clone()));
    let pruned = |p: &dyn Pruner| {
        let mut m = model.clone();
        m.prune(&Selector::prunable(), &p, &with_stats).unwrap();
        m
    };
    let s = pruned(&SparseGpt::new(SparsityPattern::PerRow(0.5)).unwrap());
    let mag = pruned(
        &MagnitudePruner::magnitude(0.5)
            .unwrap()
            .with_scope(Scope::PerOutput),
    );
    assert!(output_error(&s) < output_error(&mag));
    // N:M across input channels at each kernel position, as NmPruner's groups.
    let s24 = pruned(&SparseGpt::new(SparsityPattern::NM { n: 2, m: 4 }).unwrap());
    let nm = pruned(&NmPruner::magnitude(2, 4).unwrap());
    let kept = s24.get("conv.weight").unwrap().mask().unwrap().to_bools();
    for o in 0..4 {
        for (y, xx) in [(0, 0), (1, 2), (2, 1)] {
            assert_eq!((0..4).filter(|&c| kept[[o, c, y, xx]]).count(), 2);
        }
    }
    assert!(output_error(&s24) < output_error(&nm));
    let o = pruned(&Obs::new(0.5).unwrap());
    assert!(output_error(&o) < output_error(&mag));
    // GPTQ: the quantized tensor has the weight's shape.
    let mut g = model.clone();
    g.quantize_calibrated(&Selector::prunable(), &Gptq::new(3).unwrap(), &stats)
        .unwrap();
    assert_eq!(
        g.get("conv.weight").unwrap().quantized().unwrap().shape(),
        &[4, 4, 3, 3]
    );
    let mut r = model.clone();
    r.quantize(
        &Selector::prunable(),
        &UniformQuantizer::new(3, Scheme::Affine, Granularity::PerChannel { axis: 0 }).unwrap(),
    )
    .unwrap();
    assert!(output_error(&g) < output_error(&r));
}

/// `model` with a fraction `f` of each weight pruned by magnitude (masks kept).
fn magnitude_pruned(model: &Model, f: f64) -> Model {
    let mut m = model.clone();
    m.prune(
        &Selector::prunable(),
        &MagnitudePruner::magnitude(f).unwrap(),
        &Statistics::new(),
    )
    .unwrap();
    m
}

#[test]
fn gptq_after_pruning_keeps_the_pruned_weights_at_zero() {
    let (model, stats) = model_and_stats();
    let mut m = magnitude_pruned(&model, 0.5);
    let pruned = m.clone();
    let mut rtn = m.clone();
    m.quantize_calibrated(&Selector::prunable(), &Gptq::new(3).unwrap(), &stats)
        .unwrap();
    rtn.quantize(
        &Selector::prunable(),
        &UniformQuantizer::new(3, Scheme::Affine, Granularity::PerChannel { axis: 0 }).unwrap(),
    )
    .unwrap();
    for (name, _) in LAYERS {
        let p = m.get(name).unwrap();
        let decoded = p.quantized().unwrap().dequantize::<f32>();
        let mask = p.mask().unwrap();
        assert_eq!(mask.count_pruned(), p.numel() / 2);
        assert!(
            mask.iter_pruned()
                .all(|i| decoded.as_slice().unwrap()[i] == 0.0)
        );
    }
    // Against the pruned weights, GPTQ still beats round-to-nearest.
    for (a, b) in errors(&pruned, &m, &stats)
        .iter()
        .zip(errors(&pruned, &rtn, &stats))
    {
        assert!(*a < b, "GPTQ {a} vs RTN {b}");
    }
}

#[test]
fn sparsegpt_and_obs_keep_an_earlier_mask_and_count_it() {
    let (model, stats) = model_and_stats();
    let with_stats = Statistics::new().with_calibration(Arc::new(stats.clone()));
    let first = magnitude_pruned(&model, 0.3);
    let before = first.get("fc1.weight").unwrap().mask().unwrap().clone();
    // Targets: 60% of the tensor, or of every row (29 of 48).
    let solvers: [(Box<dyn Pruner>, usize); 3] = [
        (
            Box::new(SparseGpt::new(SparsityPattern::Unstructured(0.6)).unwrap()),
            691,
        ),
        (
            Box::new(SparseGpt::new(SparsityPattern::PerRow(0.6)).unwrap()),
            24 * 29,
        ),
        (Box::new(Obs::new(0.6).unwrap()), 24 * 29),
    ];
    for (solver, target) in &solvers {
        let mut m = first.clone();
        m.prune(&Selector::prunable(), solver, &with_stats).unwrap();
        let mask = m.get("fc1.weight").unwrap().mask().unwrap();
        assert_eq!(mask.and(&before).unwrap(), *mask, "{}", solver.describe());
        assert_eq!(mask.count_pruned(), *target, "{}", solver.describe());
    }
    // Fewer than already pruned: nothing more goes, nothing comes back.
    let mut m = first.clone();
    m.prune(
        &Selector::prunable(),
        &SparseGpt::new(SparsityPattern::Unstructured(0.1)).unwrap(),
        &with_stats,
    )
    .unwrap();
    assert_eq!(*m.get("fc1.weight").unwrap().mask().unwrap(), before);
    // 2:4 after 50% magnitude: every group keeps at most 2.
    let mut m = magnitude_pruned(&model, 0.5);
    let old = m.get("fc1.weight").unwrap().mask().unwrap().clone();
    m.prune(
        &Selector::prunable(),
        &SparseGpt::new(SparsityPattern::NM { n: 2, m: 4 }).unwrap(),
        &with_stats,
    )
    .unwrap();
    let mask = m.get("fc1.weight").unwrap().mask().unwrap().clone();
    assert_eq!(mask.and(&old).unwrap(), mask);
    let kept = mask.to_bools();
    for r in 0..24 {
        for g in 0..12 {
            assert!((0..4).filter(|&j| kept[[r, 4 * g + j]]).count() <= 2);
        }
    }
    // A quantized weight cannot take the update: refused, the model unchanged.
    let mut q = model.clone();
    q.quantize(
        &Selector::prunable(),
        &UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap(),
    )
    .unwrap();
    let e = q
        .prune(&Selector::prunable(), &Obs::new(0.5).unwrap(), &with_stats)
        .unwrap_err();
    assert!(matches!(e, Error::FormConflict { .. }), "{e}");
    assert!(q.get("fc1.weight").unwrap().mask().is_none());
}

#[test]
fn missing_or_wrong_statistics_are_typed_errors_naming_the_weight() {
    let (model, stats) = model_and_stats();
    let mut m = model.clone();
    let e = m
        .quantize(&Selector::prunable(), &Gptq::new(4).unwrap())
        .unwrap_err();
    assert!(
        matches!(e, Error::MissingStatistic { method: "GPTQ", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("fc1.weight"), "{e}");
    for (pruner, method) in [
        (
            Box::new(SparseGpt::new(SparsityPattern::PerRow(0.5)).unwrap()) as Box<dyn Pruner>,
            "SparseGPT",
        ),
        (Box::new(Obs::new(0.5).unwrap()), "OBS"),
    ] {
        let e = m
            .prune(&Selector::prunable(), &pruner, &Statistics::new())
            .unwrap_err();
        assert!(
            matches!(&e, Error::MissingStatistic { method: got, .. } if *got == method),
            "{e}"
        );
        assert!(e.to_string().contains("fc1.weight"), "{e}");
    }
    assert!(m.get("fc1.weight").unwrap().mask().is_none());
    // Statistics of another width.
    let mut wrong = CalibrationStats::new();
    wrong
        .observe("fc1.weight", &rows(100, 47, 1), 100, 47)
        .unwrap();
    let e = m
        .quantize_calibrated(&Selector::prunable(), &Gptq::new(4).unwrap(), &wrong)
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // A 1-D weight, a mask of another shape.
    let s = stats.get("fc2.weight").unwrap();
    let bias = ArrayD::<f32>::zeros(IxDyn(&[24]));
    let ctx = QuantContext::new().with_layer_stats(s);
    assert!(matches!(
        Quantizer::quantize(&Gptq::new(4).unwrap(), &bias, &ctx),
        Err(Error::BadShape { .. })
    ));
    let w = weight(&[12, 24], 1);
    let mask = Mask::ones(&[24, 12]);
    let ctx = PruneContext::new().with_layer_stats(s).with_mask(&mask);
    assert!(matches!(
        Obs::new(0.5).unwrap().mask(&w, &ctx),
        Err(Error::ShapeMismatch { .. })
    ));
    // N:M on a convolution whose channels m does not divide.
    let conv = weight(&[2, 3, 2, 2], 2);
    let mut cs = LayerStats::new(12);
    cs.observe(&rows(50, 12, 4), 50, 12).unwrap();
    let e = SparseGpt::new(SparsityPattern::NM { n: 2, m: 4 })
        .unwrap()
        .mask(&conv, &PruneContext::new().with_layer_stats(&cs))
        .unwrap_err();
    assert!(matches!(e, Error::BadShape { .. }), "{e}");
}

#[test]
fn an_engine_prunes_its_buffer_with_the_update() {
    let (model, stats) = model_and_stats();
    let s = stats.get("fc2.weight").unwrap();
    let w = model.get("fc2.weight").unwrap().value();
    let sparsegpt = SparseGpt::new(SparsityPattern::NM { n: 2, m: 4 }).unwrap();
    let solved = sparsegpt
        .prune(w.view().into_dimensionality().unwrap(), s.xtx(), s.rows())
        .unwrap();
    let ctx = PruneContext::new().with_layer_stats(s);
    let mut buffer: Vec<f32> = w.iter().copied().collect();
    let mask = sparsegpt.prune_slice(&mut buffer, &[12, 24], &ctx).unwrap();
    assert_eq!(mask, solved.mask);
    assert_eq!(buffer, solved.weights.iter().copied().collect::<Vec<_>>());
    assert_eq!(sparsegpt.mask(w, &ctx).unwrap(), solved.mask);
    // A 16-bit buffer gets the updated values, rounded.
    let mut half: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let mask = sparsegpt
        .prune_half_slice(&mut half, &[12, 24], &ctx)
        .unwrap();
    assert_eq!(mask.count_pruned(), 144);
    let moved = mask
        .iter_kept()
        .filter(|&i| half[i] != f16::from_f32(w.as_slice().unwrap()[i]))
        .count();
    assert!(moved > 0);
    assert!(mask.iter_pruned().all(|i| half[i] == f16::ZERO));
}

#[test]
fn pipeline_steps_carry_the_statistics() {
    let (model, stats) = model_and_stats();
    let stats = Arc::new(stats);
    let mut m = model.clone();
    Pipeline::new()
        .then(PruneCalibrated::new(
            Selector::prunable(),
            SparseGpt::new(SparsityPattern::NM { n: 2, m: 4 }).unwrap(),
            Arc::clone(&stats),
            "SparseGPT",
        ))
        .then(QuantizeCalibrated::new(
            Selector::prunable(),
            Gptq::new(4).unwrap(),
            Arc::clone(&stats),
            "GPTQ",
        ))
        .run(&mut m)
        .unwrap();
    let mut direct = model.clone();
    direct
        .prune(
            &Selector::prunable(),
            &SparseGpt::new(SparsityPattern::NM { n: 2, m: 4 }).unwrap(),
            &Statistics::new().with_calibration(Arc::clone(&stats)),
        )
        .unwrap();
    direct
        .quantize_calibrated(&Selector::prunable(), &Gptq::new(4).unwrap(), &stats)
        .unwrap();
    for (name, _) in LAYERS {
        assert_eq!(
            m.get(name).unwrap().effective(),
            direct.get(name).unwrap().effective()
        );
        let p = m.get(name).unwrap();
        assert_eq!(p.mask().unwrap().count_pruned(), p.numel() / 2);
    }
}

mod earlier_masks {
    use proptest::prelude::*;

    use super::*;

    /// Weights `[out, inputs]`, their statistics, and an earlier mask pruning about
    /// `density` of them.
    fn case(
        seed: usize,
        out: usize,
        inputs: usize,
        density: f64,
    ) -> (ArrayD<f32>, LayerStats, Mask) {
        let w = weight(&[out, inputs], seed);
        let mut s = LayerStats::new(inputs);
        s.observe(&rows(6 * inputs, inputs, seed), 6 * inputs, inputs)
            .unwrap();
        let mask = Mask::from_fn(&[out, inputs], |i| {
            (noise(i, seed + 7) as f64 + 1.0) / 2.0 >= density
        });
        (w, s, mask)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// SparseGPT and OBS keep an earlier mask's weights pruned, count them toward the
        /// target, write zeros where they prune, and `mask` agrees with `prune`; GPTQ
        /// decodes them to exactly 0.
        #[test]
        fn earlier_pruned_weights_stay_pruned_and_count(
            seed in 0usize..1000,
            out in 1usize..6,
            groups in 2usize..5,
            density in 0.0f64..0.9,
            sparsity in 0.0f64..1.0,
            which in 0usize..4,
        ) {
            let inputs = 4 * groups;
            let (w, stats, before) = case(seed, out, inputs, density);
            let mut effective = w.clone();
            before.apply(&mut effective).unwrap();
            let ctx = PruneContext::new().with_layer_stats(&stats).with_mask(&before);
            let pruner: Box<dyn Pruner> = match which {
                0 => Box::new(SparseGpt::new(SparsityPattern::Unstructured(sparsity)).unwrap()),
                1 => Box::new(SparseGpt::new(SparsityPattern::PerRow(sparsity)).unwrap()),
                2 => Box::new(SparseGpt::new(SparsityPattern::NM { n: 2, m: 4 }).unwrap()),
                _ => Box::new(Obs::new(sparsity).unwrap()),
            };
            let mut updated = effective.clone();
            let mask = pruner.prune(&mut updated, &ctx).unwrap();
            prop_assert_eq!(&pruner.mask(&effective, &ctx).unwrap(), &mask);
            prop_assert_eq!(mask.and(&before).unwrap(), mask.clone());
            prop_assert!(mask.iter_pruned().all(|i| updated.as_slice().unwrap()[i] == 0.0));
            let kept = mask.to_bools();
            let was = before.to_bools();
            let count = |m: &ArrayD<bool>, r: usize, cols: std::ops::Range<usize>| {
                cols.filter(|&j| !m[[r, j]]).count()
            };
            let round = |x: f64| x.round_ties_even() as usize;
            match which {
                0 => {
                    let target = round(sparsity * (out * inputs) as f64);
                    prop_assert_eq!(
                        mask.count_pruned(),
                        target.max(before.count_pruned())
                    );
                }
                2 => {
                    for r in 0..out {
                        for g in 0..groups {
                            let cols = 4 * g..4 * g + 4;
                            let fixed = count(&was, r, cols.clone());
                            prop_assert_eq!(count(&kept, r, cols), fixed.max(2));
                        }
                    }
                }
                _ => {
                    for r in 0..out {
                        let fixed = count(&was, r, 0..inputs);
                        let target = round(sparsity * inputs as f64);
                        prop_assert_eq!(count(&kept, r, 0..inputs), fixed.max(target));
                    }
                }
            }
            let qctx = QuantContext::new().with_layer_stats(&stats).with_mask(&before);
            let q = Quantizer::quantize(&Gptq::new(3).unwrap(), &effective, &qctx).unwrap();
            let decoded = q.dequantize::<f32>();
            prop_assert!(before.iter_pruned().all(|i| decoded.as_slice().unwrap()[i] == 0.0));
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    // Large enough for the lazy batched updates to run on two tasks.
    let (out, inputs) = (96, 384);
    let mut model = Model::new();
    model.add("big.weight", weight(&[out, inputs], 9)).unwrap();
    let mut stats = CalibrationStats::new();
    stats
        .observe(
            "big.weight",
            &rows(2 * inputs, inputs, 9),
            2 * inputs,
            inputs,
        )
        .unwrap();
    let stats = Arc::new(stats);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut m = model.clone();
                m.prune(
                    &Selector::prunable(),
                    &SparseGpt::new(SparsityPattern::Unstructured(0.5)).unwrap(),
                    &Statistics::new().with_calibration(Arc::clone(&stats)),
                )
                .unwrap();
                let mut ggml = m.clone();
                m.quantize_calibrated(
                    &Selector::prunable(),
                    &Gptq::new(4).unwrap().with_group(32).unwrap(),
                    &stats,
                )
                .unwrap();
                let q4_0 = Gptq::new(4).unwrap().with_ggml(GgmlFormat::Q4_0).unwrap();
                ggml.quantize_calibrated(&Selector::prunable(), &q4_0, &stats)
                    .unwrap();
                let p = m.get("big.weight").unwrap();
                let g = ggml.get("big.weight").unwrap().quantized().unwrap().clone();
                (p.mask().unwrap().clone(), p.quantized().unwrap().clone(), g)
            })
    };
    assert_eq!(run(1), run(3));
}

/// GPTQ on llama.cpp's Q8_0 and Q4_0 grids: the form `GgmlQuantizer` gives (its blocks
/// round-trip bit for bit), a smaller layer output error than round-to-nearest with the
/// same format, and the typed refusals.
#[test]
fn gptq_on_ggml_grids_beats_ggml_round_to_nearest_in_its_form() {
    let (out, inputs) = (16, 96);
    let w = weight(&[out, inputs], 7);
    let mut stats = CalibrationStats::new();
    stats
        .observe("w", &rows(8 * inputs, inputs, 7), 8 * inputs, inputs)
        .unwrap();
    let h = stats.get("w").unwrap().xtx();
    let w2 = w.view().into_dimensionality().unwrap();
    for format in [GgmlFormat::Q8_0, GgmlFormat::Q4_0] {
        let gptq = Gptq::new(4).unwrap().with_ggml(format).unwrap();
        assert_eq!(gptq.ggml(), Some(format));
        let q = gptq.quantize(w2, h, 8 * inputs as u64).unwrap();
        let rtn = GgmlQuantizer::new(format)
            .quantize(&w, &QuantContext::new())
            .unwrap();
        // The same form: groups of 32, the format's levels, f16 scales.
        let (
            Decoding::Scalar {
                levels,
                granularity,
                scale_bits,
                ..
            },
            Decoding::Scalar {
                levels: l2,
                granularity: g2,
                scale_bits: s2,
                ..
            },
        ) = (q.decoding(), rtn.decoding())
        else {
            panic!("scalar decodings");
        };
        assert_eq!((levels, granularity, scale_bits), (l2, g2, s2));
        let blocks = to_ggml_blocks(&q, format).unwrap();
        let back = from_ggml_blocks(&blocks, &[out, inputs], format).unwrap();
        assert_eq!(back.codes().unpack(), q.codes().unpack());
        assert_eq!(back.decoding(), q.decoding());
        let (e_gptq, e_rtn) = (
            output_error(&w, &q.dequantize::<f32>(), h),
            output_error(&w, &rtn.dequantize::<f32>(), h),
        );
        println!("{format:?}: GPTQ {e_gptq:.6e} vs round-to-nearest {e_rtn:.6e}");
        assert!(e_gptq < e_rtn, "{format:?}: GPTQ {e_gptq} vs RTN {e_rtn}");
    }
    // After pruning, the pruned weights stay exactly 0 on ggml's grids too.
    let mut model = Model::new();
    model.add("w", w.clone()).unwrap();
    let pruned = magnitude_pruned(&model, 0.5);
    for format in [GgmlFormat::Q8_0, GgmlFormat::Q4_0] {
        let mut m = pruned.clone();
        let gptq = Gptq::new(4).unwrap().with_ggml(format).unwrap();
        m.quantize_calibrated(&Selector::prunable(), &gptq, &stats)
            .unwrap();
        let p = m.get("w").unwrap();
        let decoded = p.quantized().unwrap().dequantize::<f32>();
        let mask = p.mask().unwrap();
        assert_eq!(mask.count_pruned(), p.numel() / 2);
        assert!(
            mask.iter_pruned()
                .all(|i| decoded.as_slice().unwrap()[i] == 0.0)
        );
    }
    for format in [GgmlFormat::Q4_K, GgmlFormat::Q6_K] {
        let err = Gptq::new(4).unwrap().with_ggml(format).unwrap_err();
        assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    }
    let refusal = |format, act_order, w: &ArrayD<f32>, h: ArrayView2<'_, f64>| {
        Gptq::new(4)
            .unwrap()
            .with_ggml(format)
            .unwrap()
            .with_act_order(act_order)
            .quantize(
                w.view().into_dimensionality().unwrap(),
                h,
                8 * inputs as u64,
            )
            .unwrap_err()
    };
    let err = refusal(GgmlFormat::Q4_0, true, &w, h);
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    let regrouped = Gptq::new(4)
        .unwrap()
        .with_ggml(GgmlFormat::Q4_0)
        .unwrap()
        .with_group(16)
        .unwrap();
    let err = regrouped.quantize(w2, h, 8 * inputs as u64).unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    // A block scale beyond f16 is an overflow, not an infinite scale.
    let err = refusal(GgmlFormat::Q8_0, false, &w.mapv(|v| v * 1e7), h);
    assert!(matches!(err, Error::Overflow { .. }), "{err}");
    // 48 inputs are no whole blocks of 32.
    let eye = Array2::<f64>::eye(48);
    let err = refusal(GgmlFormat::Q4_0, false, &weight(&[4, 48], 1), eye.view());
    assert!(matches!(err, Error::BadShape { .. }), "{err}");
}
