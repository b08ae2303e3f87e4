//! Helpers shared by the integration tests: random tensors and tiny reference layers.

#![allow(dead_code)]

use ndarray::{Array2, Array4, ArrayD, IxDyn};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Distribution, Normal};

/// A tensor of `shape` with N(0, 1) entries from `seed`.
pub fn normal(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let d = Normal::new(0.0f32, 1.0).unwrap();
    ArrayD::from_shape_simple_fn(IxDyn(shape), || d.sample(&mut rng))
}

/// Values with many ties (multiples of 1/4 in [-2, 2]) or continuous ones.
pub fn value() -> impl Strategy<Value = f32> {
    prop_oneof![(-8i8..=8).prop_map(|x| x as f32 * 0.25), -3.0f32..3.0]
}

/// A 2-D tensor of 1..12 × 1..12 values.
pub fn matrix() -> impl Strategy<Value = ArrayD<f32>> {
    (1usize..12, 1usize..12).prop_flat_map(|(r, c)| {
        prop::collection::vec(value(), r * c)
            .prop_map(move |v| ArrayD::from_shape_vec(IxDyn(&[r, c]), v).unwrap())
    })
}

/// `relu(x Wᵀ + b)` (no ReLU when `relu` is false).
pub fn linear(
    x: &Array2<f32>,
    w: &ArrayD<f32>,
    b: Option<&ArrayD<f32>>,
    relu: bool,
) -> Array2<f32> {
    let w = w.view().into_dimensionality::<ndarray::Ix2>().unwrap();
    let mut y = x.dot(&w.t());
    if let Some(b) = b {
        y += &b.view().into_dimensionality::<ndarray::Ix1>().unwrap();
    }
    if relu {
        y.mapv_inplace(|v| v.max(0.0));
    }
    y
}

/// A valid (no padding, stride 1) 2-D convolution of `x` `[n, c, h, w]` by `w`
/// `[o, c, kh, kw]` plus bias, then ReLU.
pub fn conv_relu(x: &Array4<f32>, w: &ArrayD<f32>, b: Option<&ArrayD<f32>>) -> Array4<f32> {
    let w = w.view().into_dimensionality::<ndarray::Ix4>().unwrap();
    let (n, c, h, wd) = x.dim();
    let (o, c2, kh, kw) = w.dim();
    assert_eq!(c, c2);
    let (oh, ow) = (h - kh + 1, wd - kw + 1);
    Array4::from_shape_fn((n, o, oh, ow), |(i, f, y, xx)| {
        let mut s = b.map_or(0.0, |b| b[[f]]);
        for ch in 0..c {
            for dy in 0..kh {
                for dx in 0..kw {
                    s += x[[i, ch, y + dy, xx + dx]] * w[[f, ch, dy, dx]];
                }
            }
        }
        s.max(0.0)
    })
}

/// The UCI 8×8 digits set bundled in `data/digits`: the first 1,437 images for
/// training, the last 360 for testing.
pub fn digits() -> (slimnn::io::idx::Dataset, slimnn::io::idx::Dataset) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits");
    let all = slimnn::io::idx::Dataset::from_idx(
        dir.join("digits-images-idx3-ubyte.gz"),
        dir.join("digits-labels-idx1-ubyte.gz"),
        16.0,
    )
    .unwrap();
    assert_eq!(all.len(), 1797);
    (all.slice(0..1437), all.slice(1437..1797))
}
