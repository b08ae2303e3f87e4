//! Property tests of the pruning family's invariants, through the public API only.

mod common;

use approx::relative_eq;
use common::{matrix, normal, value};
use ndarray::{Array2, Array4, ArrayD, IxDyn};
use proptest::prelude::*;
use slimnn::prune::{
    Amount, ChannelAxis, ChannelCriterion, GlobalPruner, MagnitudePruner, NmPruner, PruneContext,
    Pruner, Schedule, Scope, Statistics, StructuredPruner, Taylor, UnstructuredPruner,
    channel_scores, merge_neurons,
};
use slimnn::{LayerKind, Mask, Model, Selector};

fn expected(n: usize, s: f64) -> usize {
    (n as f64 * s).round_ties_even() as usize
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Exact sparsity; kept weights are the largest and untouched; pruned ones are zero.
    #[test]
    fn magnitude_is_exact_and_keeps_the_largest(w in matrix(), s in 0.0f64..=1.0) {
        let mut pruned = w.clone();
        let mask = MagnitudePruner::magnitude(s).unwrap().prune(&mut pruned, &PruneContext::new()).unwrap();
        prop_assert_eq!(mask.count_pruned(), expected(w.len(), s));
        let (mut max_pruned, mut min_kept) = (f32::NEG_INFINITY, f32::INFINITY);
        for (i, (&orig, &now)) in w.iter().zip(&pruned).enumerate() {
            if mask.get(i) {
                prop_assert_eq!(orig, now);
                min_kept = min_kept.min(orig.abs());
            } else {
                prop_assert_eq!(now, 0.0);
                max_pruned = max_pruned.max(orig.abs());
            }
        }
        prop_assert!(max_pruned <= min_kept);
        // `mask` (pure) and `prune` (fused) agree.
        prop_assert_eq!(MagnitudePruner::magnitude(s).unwrap().mask(&w, &PruneContext::new()).unwrap(), mask);
    }

    /// Ties at the threshold go by position: an earlier weight is never kept while a
    /// later one of equal magnitude is pruned.
    #[test]
    fn ties_break_by_position(w in matrix(), s in 0.0f64..=1.0) {
        let mask = MagnitudePruner::magnitude(s).unwrap().mask(&w, &PruneContext::new()).unwrap();
        let flat: Vec<f32> = w.iter().copied().collect();
        for i in 0..flat.len() {
            for j in i + 1..flat.len() {
                if flat[i].abs() == flat[j].abs() {
                    prop_assert!(!mask.get(i) || mask.get(j));
                }
            }
        }
    }

    /// Global pruning equals thresholding all tensors at one value.
    #[test]
    fn global_is_one_threshold(ws in prop::collection::vec(matrix(), 1..4), s in 0.0f64..=1.0) {
        let views: Vec<_> = ws.iter().map(|w| w.view()).collect();
        let masks = GlobalPruner::magnitude(s).unwrap().masks(&views, &[]).unwrap();
        let n: usize = ws.iter().map(|w| w.len()).sum();
        prop_assert_eq!(masks.iter().map(Mask::count_pruned).sum::<usize>(), expected(n, s));
        let (mut max_pruned, mut min_kept) = (f32::NEG_INFINITY, f32::INFINITY);
        for (w, m) in ws.iter().zip(&masks) {
            for (i, &x) in w.iter().enumerate() {
                if m.get(i) { min_kept = min_kept.min(x.abs()) } else { max_pruned = max_pruned.max(x.abs()) }
            }
        }
        prop_assert!(max_pruned <= min_kept);
        // The in-place form gives the same masks and zeroes exactly the pruned weights.
        let mut copies = ws.clone();
        let mut views: Vec<_> = copies.iter_mut().map(|w| w.view_mut()).collect();
        let masks2 = GlobalPruner::magnitude(s).unwrap().prune(&mut views, &[]).unwrap();
        prop_assert_eq!(&masks, &masks2);
        for ((w, c), m) in ws.iter().zip(&copies).zip(&masks) {
            for (i, (&a, &b)) in w.iter().zip(c).enumerate() {
                prop_assert_eq!(b, if m.get(i) { a } else { 0.0 });
            }
        }
    }

    /// Per-output scope: every row loses the same exact count.
    #[test]
    fn per_output_rows_are_exact(w in matrix(), s in 0.0f64..=1.0) {
        let pruner = MagnitudePruner::magnitude(s).unwrap().with_scope(Scope::PerOutput);
        let mask = pruner.mask(&w, &PruneContext::new()).unwrap();
        let cols = w.shape()[1];
        for r in 0..w.shape()[0] {
            let pruned = (0..cols).filter(|&c| !mask.get(r * cols + c)).count();
            prop_assert_eq!(pruned, expected(cols, s));
        }
    }

    /// Every N:M group keeps exactly N, and they are its largest.
    #[test]
    fn nm_groups_keep_n(rows in 1usize..6, groups in 1usize..5, (n, m) in (2usize..9).prop_flat_map(|m| (1..m, Just(m))),
                        vals in prop::collection::vec(value(), 6 * 4 * 8)) {
        let cols = groups * m;
        let w = ArrayD::from_shape_vec(IxDyn(&[rows, cols]), vals[..rows * cols].to_vec()).unwrap();
        let mask = NmPruner::magnitude(n, m).unwrap().mask(&w, &PruneContext::new()).unwrap();
        for r in 0..rows {
            for g in 0..groups {
                let idx: Vec<usize> = (0..m).map(|t| r * cols + g * m + t).collect();
                let kept: Vec<&usize> = idx.iter().filter(|&&i| mask.get(i)).collect();
                prop_assert_eq!(kept.len(), n);
                let min_kept = kept.iter().map(|&&i| w.as_slice().unwrap()[i].abs()).fold(f32::INFINITY, f32::min);
                for &i in &idx {
                    if !mask.get(i) { prop_assert!(w.as_slice().unwrap()[i].abs() <= min_kept); }
                }
            }
        }
    }

    /// N:M on a conv groups input channels at each kernel position.
    #[test]
    fn nm_conv_groups_run_along_input_channels(seed in 0u64..1000) {
        let w = normal(&[3, 8, 2, 2], seed);
        let mask = NmPruner::magnitude(2, 4).unwrap().mask(&w, &PruneContext::new()).unwrap();
        let b = mask.to_bools();
        for o in 0..3 { for g in 0..2 { for y in 0..2 { for x in 0..2 {
            let kept = (0..4).filter(|&t| b[[o, g * 4 + t, y, x]]).count();
            prop_assert_eq!(kept, 2);
        }}}}
    }

    /// AGP is monotone, starts at 0 before its start and ends at its target.
    #[test]
    fn schedules_are_monotone(initial in 0.0f64..=1.0, extra in 0.0f64..=1.0, start in 0usize..50,
                              steps in 1usize..30, freq in 1usize..20) {
        let target = (initial + extra).min(1.0);
        let s = Schedule::agp(initial, target, start, steps, freq).unwrap();
        let mut prev = 0.0;
        for t in 0..start + steps * freq + 10 {
            let now = s.sparsity_at(t);
            prop_assert!(now >= prev && (0.0..=1.0).contains(&now));
            prev = now;
        }
        prop_assert_eq!(s.sparsity_at(s.end()), target);
        prop_assert_eq!(s.sparsity_at(start), if start == s.end() { target } else { initial });
    }

    /// Structured pruning removes whole channels, the right number, the least important.
    #[test]
    fn structured_removes_whole_channels(seed in 0u64..1000, frac in 0.0f64..=1.0, crit in 0usize..3, input in any::<bool>()) {
        let crit = [ChannelCriterion::L1, ChannelCriterion::L2, ChannelCriterion::GeometricMedian][crit];
        let w = normal(&[6, 5, 3, 3], seed);
        let (axis, tensor_axis) = if input { (ChannelAxis::Input, 1) } else { (ChannelAxis::Output, 0) };
        let pruner = StructuredPruner::new(crit, frac).unwrap().with_axis(axis);
        let mask = pruner.mask(&w, &PruneContext::new()).unwrap();
        let bools = mask.to_bools();
        let c = w.shape()[tensor_axis];
        let dead: Vec<bool> = bools.axis_iter(ndarray::Axis(tensor_axis)).map(|ch| {
            let all = ch.iter().all(|&k| !k);
            let none = ch.iter().all(|&k| k);
            assert!(all || none, "a channel is either removed or kept whole");
            all
        }).collect();
        prop_assert_eq!(dead.iter().filter(|&&d| d).count(), expected(c, frac));
        let scores = channel_scores(&w, tensor_axis, crit).unwrap();
        for i in 0..c { for j in 0..c {
            if dead[i] && !dead[j] { prop_assert!(scores[i] <= scores[j]); }
        }}
    }

    /// Pruning a model twice is monotone and counts earlier pruning toward the target.
    #[test]
    fn model_pruning_is_monotone(seed in 0u64..1000, a in 0.0f64..=1.0, b in 0.0f64..=1.0) {
        let (lo, hi) = (a.min(b), a.max(b));
        let mut model = Model::new();
        model.add("fc.weight", normal(&[9, 7], seed)).unwrap();
        let sel = Selector::prunable();
        // Structured first, then unstructured with a saliency: both monotone.
        model.prune(&sel, &UnstructuredPruner::random(seed, lo).unwrap(), &Statistics::new()).unwrap();
        let first = model.get("fc.weight").unwrap().mask().unwrap().clone();
        model.prune(&sel, &MagnitudePruner::magnitude(hi).unwrap(), &Statistics::new()).unwrap();
        let second = model.get("fc.weight").unwrap().mask().unwrap().clone();
        prop_assert_eq!(second.and(&first).unwrap(), second.clone());
        prop_assert_eq!(second.count_pruned(), expected(63, hi).max(first.count_pruned()));
        let g = normal(&[9, 7], seed + 1);
        model.prune(&sel, &UnstructuredPruner::new(Taylor, hi).unwrap(), &Statistics::new().with_gradient("fc.weight", g)).unwrap();
        let third = model.get("fc.weight").unwrap().mask().unwrap().clone();
        prop_assert_eq!(third.and(&second).unwrap(), third.clone());
        prop_assert_eq!(third.count_pruned(), second.count_pruned());
    }

    /// Physical removal computes the same function as masking (Linear chain).
    #[test]
    fn removal_matches_masking_linear(seed in 0u64..1000, frac in 0.0f64..0.9, input_side in any::<bool>()) {
        let mut model = Model::new();
        model.add("l1.weight", normal(&[8, 5], seed)).unwrap();
        model.add("l1.bias", normal(&[8], seed + 1)).unwrap();
        model.add("l2.weight", normal(&[6, 8], seed + 2)).unwrap();
        model.add("l2.bias", normal(&[6], seed + 3)).unwrap();
        model.add("l3.weight", normal(&[3, 6], seed + 4)).unwrap();
        if input_side {
            let p = StructuredPruner::new(ChannelCriterion::L2, frac).unwrap().with_axis(ChannelAxis::Input);
            model.prune(&Selector::glob("l2.weight").include("l3.weight"), &p, &Statistics::new()).unwrap();
        } else {
            let p = StructuredPruner::new(ChannelCriterion::L2, frac).unwrap();
            model.prune(&Selector::glob("l1.weight").include("l2.weight"), &p, &Statistics::new()).unwrap();
            model.mask_biases_of_pruned_channels(&Selector::all()).unwrap();
        }
        let x = normal(&[4, 5], seed + 5).into_dimensionality::<ndarray::Ix2>().unwrap();
        let forward = |m: &Model| -> Array2<f32> {
            let e = |n: &str| m.get(n).unwrap().effective();
            let h = common::linear(&x, &e("l1.weight"), Some(&e("l1.bias")), true);
            let h = common::linear(&h, &e("l2.weight"), Some(&e("l2.bias")), true);
            common::linear(&h, &e("l3.weight"), None, false)
        };
        let before = forward(&model);
        let report = model.remove_pruned_channels(&["l1.weight", "l2.weight", "l3.weight"]).unwrap();
        let after = forward(&model);
        prop_assert!(report.params_after <= report.params_before);
        prop_assert_eq!(report.layers[0].removed.len(), expected(8, frac));
        prop_assert_eq!(report.layers[1].removed.len(), expected(6, frac));
        for (a, b) in before.iter().zip(&after) {
            prop_assert!(relative_eq!(a, b, epsilon = 1e-4, max_relative = 1e-4), "{} vs {}", a, b);
        }
    }

    /// Physical removal computes the same function as masking (Conv → Conv → Linear).
    #[test]
    fn removal_matches_masking_conv(seed in 0u64..1000, frac in 0.0f64..0.9) {
        let mut model = Model::new();
        model.add("c1.weight", normal(&[6, 2, 3, 3], seed)).unwrap();
        model.add("c1.bias", normal(&[6], seed + 1)).unwrap();
        model.add("c2.weight", normal(&[5, 6, 2, 2], seed + 2)).unwrap();
        model.add("c2.bias", normal(&[5], seed + 3)).unwrap();
        model.add("fc.weight", normal(&[3, 5 * 3 * 3], seed + 4)).unwrap();
        let p = StructuredPruner::new(ChannelCriterion::GeometricMedian, frac).unwrap();
        model.prune(&Selector::kinds(&[LayerKind::Conv2d]), &p, &Statistics::new()).unwrap();
        model.mask_biases_of_pruned_channels(&Selector::all()).unwrap();
        let x = normal(&[2, 2, 6, 6], seed + 5).into_dimensionality::<ndarray::Ix4>().unwrap();
        let forward = |m: &Model| -> Array2<f32> {
            let e = |n: &str| m.get(n).unwrap().effective();
            let h = common::conv_relu(&x, &e("c1.weight"), Some(&e("c1.bias")));
            let h: Array4<f32> = common::conv_relu(&h, &e("c2.weight"), Some(&e("c2.bias")));
            let flat = h.to_shape((2, h.len() / 2)).unwrap().to_owned();
            common::linear(&flat, &e("fc.weight"), None, false)
        };
        let before = forward(&model);
        let report = model.remove_pruned_channels(&["c1.weight", "c2.weight", "fc.weight"]).unwrap();
        prop_assert_eq!(report.layers[0].removed.len(), expected(6, frac));
        prop_assert_eq!(report.layers[1].removed.len(), expected(5, frac));
        prop_assert_eq!(model.get("fc.weight").unwrap().shape(), &[3, (5 - expected(5, frac)) * 9]);
        let after = forward(&model);
        for (a, b) in before.iter().zip(&after) {
            prop_assert!(relative_eq!(a, b, epsilon = 1e-4, max_relative = 1e-4), "{} vs {}", a, b);
        }
    }

    /// Merging exact duplicate neurons leaves the output unchanged.
    #[test]
    fn merging_duplicates_is_exact(seed in 0u64..1000) {
        let base = normal(&[4, 6], seed).into_dimensionality::<ndarray::Ix2>().unwrap();
        let w1 = ndarray::concatenate(ndarray::Axis(0), &[base.view(), base.slice(ndarray::s![0..2, ..])]).unwrap();
        let b1 = ndarray::Array1::from_iter((0..6).map(|i| [0.1f32, -0.2, 0.3, 0.0, 0.1, -0.2][i]));
        let w2 = normal(&[3, 6], seed + 1).into_dimensionality::<ndarray::Ix2>().unwrap();
        let merged = merge_neurons(&w1, Some(&b1), &w2, 2usize).unwrap();
        let mut removed: Vec<usize> = merged.merges.iter().map(|m| m.0).collect();
        removed.sort();
        prop_assert!(removed == vec![0, 4] || removed == vec![4, 5] || removed == vec![0, 1] || removed == vec![1, 5] || removed == vec![0, 5] || removed == vec![1, 4]);
        let x = normal(&[5, 6], seed + 2).into_dimensionality::<ndarray::Ix2>().unwrap();
        let run = |w1: &ndarray::Array2<f32>, b1: &ndarray::Array1<f32>, w2: &ndarray::Array2<f32>| {
            let h = (x.dot(&w1.t()) + b1).mapv(|v: f32| v.max(0.0));
            h.dot(&w2.t())
        };
        let before = run(&w1, &b1, &w2);
        let after = run(&merged.w1, merged.b1.as_ref().unwrap(), &merged.w2);
        for (a, b) in before.iter().zip(&after) {
            prop_assert!(relative_eq!(a, b, epsilon = 1e-4, max_relative = 1e-4), "{} vs {}", a, b);
        }
    }

    /// Random pruning is exact and reproducible from its seed.
    #[test]
    fn random_is_exact_and_seeded(w in matrix(), s in 0.0f64..=1.0, seed in any::<u64>()) {
        let ctx = PruneContext::new().with_name("w");
        let a = UnstructuredPruner::random(seed, s).unwrap().mask(&w, &ctx).unwrap();
        let b = UnstructuredPruner::random(seed, s).unwrap().mask(&w, &ctx).unwrap();
        prop_assert_eq!(a.count_pruned(), expected(w.len(), s));
        prop_assert_eq!(a, b);
    }

    /// Mask: bools round-trip; and/or/not; kept indices.
    #[test]
    fn mask_round_trips(bits in prop::collection::vec(any::<bool>(), 1..300), other in prop::collection::vec(any::<bool>(), 300)) {
        let n = bits.len();
        let a = Mask::from_bools(&ndarray::Array1::from(bits.clone()));
        let b = Mask::from_bools(&ndarray::Array1::from(other[..n].to_vec()));
        prop_assert_eq!(a.to_bools().into_iter().collect::<Vec<_>>(), bits.clone());
        prop_assert_eq!(a.count_kept(), bits.iter().filter(|&&x| x).count());
        prop_assert_eq!(a.iter_kept().collect::<Vec<_>>(), (0..n).filter(|&i| bits[i]).collect::<Vec<_>>());
        prop_assert_eq!(a.iter_pruned().collect::<Vec<_>>(), (0..n).filter(|&i| !bits[i]).collect::<Vec<_>>());
        let and = a.and(&b).unwrap();
        let or = a.or(&b).unwrap();
        for i in 0..n {
            prop_assert_eq!(and.get(i), bits[i] && other[i]);
            prop_assert_eq!(or.get(i), bits[i] || other[i]);
        }
        prop_assert_eq!(a.not().not(), a.clone());
        prop_assert_eq!(Mask::from_words(&[n], a.words().to_vec()).unwrap(), a);
    }
}

#[test]
fn amounts_as_counts() {
    let w = normal(&[10, 10], 3);
    let m = MagnitudePruner::magnitude(37usize)
        .unwrap()
        .mask(&w, &PruneContext::new())
        .unwrap();
    assert_eq!(m.count_pruned(), 37);
    assert_eq!(Amount::from(0.25).count_of(10).unwrap(), 2); // 2.5 rounds to even, as in PyTorch
    assert_eq!(Amount::from(0.5).count_of(5).unwrap(), 2);
    assert_eq!(Amount::from(0.9).count_of(5).unwrap(), 4);
    assert_eq!(Amount::from(0.7).count_of(5).unwrap(), 4);
}

/// Every pruner works on f64 tensors too, with the same counts.
#[test]
fn f64_tensors() {
    let w: ArrayD<f64> = normal(&[8, 8, 3, 3], 9).mapv(f64::from);
    let ctx = PruneContext::<f64>::new();
    assert_eq!(
        MagnitudePruner::magnitude(0.9)
            .unwrap()
            .mask(&w, &ctx)
            .unwrap()
            .count_pruned(),
        518
    );
    let g: ArrayD<f64> = normal(&[8, 8, 3, 3], 10).mapv(f64::from);
    let taylor = UnstructuredPruner::new(Taylor, 0.5).unwrap();
    assert_eq!(
        taylor
            .mask(&w, &ctx.clone().with_gradient(g.view()))
            .unwrap()
            .count_pruned(),
        288
    );
    let s = StructuredPruner::new(ChannelCriterion::GeometricMedian, 0.25).unwrap();
    assert_eq!(s.mask(&w, &ctx).unwrap().count_pruned(), 2 * 72);
    assert_eq!(
        NmPruner::magnitude(1, 4)
            .unwrap()
            .mask(&w, &ctx)
            .unwrap()
            .count_pruned(),
        432
    );
    let mut a = w.clone();
    let masks = GlobalPruner::magnitude(0.5)
        .unwrap()
        .prune(&mut [a.view_mut()], &[])
        .unwrap();
    assert_eq!(masks[0].count_pruned(), 288);
    assert_eq!(a.iter().filter(|x| **x == 0.0).count(), 288);
}
