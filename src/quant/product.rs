//! [`ProductQuantizer`]: vector quantization of a layer's rows, one codebook per slice of
//! columns.

use ndarray::{Array2, ArrayRef, Axis, IxDyn, s};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::binary::prepare;
use super::{Decoding, Granularity, PackedCodes, QuantContext, QuantizedTensor, Quantizer};
use crate::error::{Error, Result};
use crate::tensor::Scalar;

/// Product quantization of a weight matrix (Gong, Liu, Yang & Bourdev, "Compressing
/// Deep Convolutional Networks using Vector Quantization", 2014; Jégou, Douze & Schmid,
/// "Product Quantization for Nearest Neighbor Search", TPAMI 2011).
///
/// The weight, seen as `[rows, row_len]`, is cut column-wise into `row_len / sub_dim`
/// slices; in each slice the `rows` subvectors of `sub_dim` values are clustered by
/// k-means (k-means++ start, Lloyd's iterations, seeded) into `codewords` centroids, and
/// each subvector stores the `⌈log₂ codewords⌉`-bit index of its centroid. Storage:
/// `rows · slices · bits` plus the codebooks (`slices · codewords · sub_dim` f32).
///
/// ```
/// use ndarray::Array;
/// use slimnn::quant::{ProductQuantizer, QuantContext, Quantizer};
///
/// let w = Array::from_shape_fn(ndarray::IxDyn(&[64, 16]), |i| ((i[0] % 4) as f32) * (i[1] as f32 + 1.0));
/// let q = ProductQuantizer::new(4, 4, 7)?.quantize(&w, &QuantContext::new())?;
/// // Only 4 distinct rows: 4 codewords per slice reproduce the matrix exactly.
/// assert_eq!(q.dequantize::<f32>(), w);
/// assert_eq!(q.codes().len(), 64 * 4);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProductQuantizer {
    sub_dim: usize,
    codewords: usize,
    seed: u64,
    max_iter: usize,
}

impl ProductQuantizer {
    /// Subvectors of `sub_dim` values, `codewords` (2 to 256) centroids per slice,
    /// k-means seeded by `seed`, at most 50 iterations.
    pub fn new(sub_dim: usize, codewords: usize, seed: u64) -> Result<Self> {
        if sub_dim == 0 {
            return Err(Error::invalid("sub_dim", sub_dim, "at least 1"));
        }
        if !(2..=256).contains(&codewords) {
            return Err(Error::invalid("codewords", codewords, "2 to 256"));
        }
        Ok(ProductQuantizer {
            sub_dim,
            codewords,
            seed,
            max_iter: 50,
        })
    }

    /// Sets the iteration budget of each slice's k-means.
    pub fn with_max_iter(mut self, max_iter: usize) -> Self {
        self.max_iter = max_iter.max(1);
        self
    }

    fn bits(&self) -> u8 {
        (usize::BITS - (self.codewords - 1).leading_zeros()).max(1) as u8
    }
}

impl<T: Scalar> Quantizer<T> for ProductQuantizer {
    /// E.g. `"product quantization, 256 codewords of 4 elements"`.
    fn describe(&self) -> String {
        format!(
            "product quantization, {} codewords of {} elements",
            self.codewords, self.sub_dim
        )
    }

    fn quantize(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        let shape = weights.shape();
        if shape.len() < 2 {
            return Err(Error::bad_shape(
                ctx.what(),
                shape,
                "product quantization needs rows (at least 2 dimensions)",
            ));
        }
        let (values, _) = prepare(weights, Granularity::PerTensor, ctx)?;
        let rows = shape[0];
        let row_len = values.len() / rows;
        if !row_len.is_multiple_of(self.sub_dim) {
            return Err(Error::bad_shape(
                ctx.what(),
                shape,
                format!(
                    "subvector length {} does not divide the row length {row_len}",
                    self.sub_dim
                ),
            ));
        }
        if rows < self.codewords {
            return Err(Error::invalid(
                "codewords",
                self.codewords,
                format!(
                    "at most the number of rows ({rows}), the points each codebook is fitted to"
                ),
            ));
        }
        let matrix = Array2::from_shape_vec((rows, row_len), values.to_vec()).expect("row-major");
        let slices = row_len / self.sub_dim;
        // Each slice needs as many distinct subvectors as codewords, as k-means needs
        // as many distinct values as centroids.
        for j in 0..slices {
            let mut seen: Vec<Vec<u32>> = matrix
                .slice(s![.., j * self.sub_dim..(j + 1) * self.sub_dim])
                .rows()
                .into_iter()
                .map(|r| r.iter().map(|v| v.to_bits()).collect())
                .collect();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() < self.codewords {
                return Err(Error::invalid(
                    "codewords",
                    self.codewords,
                    format!(
                        "at most the {} distinct subvectors of column slice {j}",
                        seen.len()
                    ),
                ));
            }
        }
        let fitted: Vec<(Array2<f32>, Vec<u8>)> = (0..slices)
            .into_par_iter()
            .map(|j| {
                let points = matrix
                    .slice(s![.., j * self.sub_dim..(j + 1) * self.sub_dim])
                    .to_owned();
                kmeans(
                    &points,
                    self.codewords,
                    self.max_iter,
                    self.seed ^ (j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                )
            })
            .collect();
        let mut codebooks = Vec::with_capacity(slices * self.codewords * self.sub_dim);
        for (c, _) in &fitted {
            codebooks.extend(c.iter());
        }
        let codes: Vec<u8> = (0..rows)
            .flat_map(|r| fitted.iter().map(move |(_, a)| a[r]))
            .collect();
        ctx.attach_mask(QuantizedTensor::new(
            shape,
            PackedCodes::pack(&codes, self.bits())?,
            Decoding::Product {
                sub_dim: self.sub_dim,
                codewords: self.codewords,
                codebooks,
            },
        )?)
    }
}

/// Squared distances `[points, centroids]` through `‖x‖² − 2x·c + ‖c‖²`.
fn distances(points: &Array2<f32>, centroids: &Array2<f32>) -> Array2<f32> {
    let pn = points.map_axis(Axis(1), |r| r.dot(&r));
    let cn = centroids.map_axis(Axis(1), |r| r.dot(&r));
    let mut d = points.dot(&centroids.t());
    for ((i, j), v) in d.indexed_iter_mut() {
        *v = (pn[i] - 2.0 * *v + cn[j]).max(0.0);
    }
    d
}

fn nearest(d: &Array2<f32>) -> Vec<u8> {
    d.rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f32::INFINITY),
                    |b, (j, &v)| if v < b.1 { (j, v) } else { b },
                )
                .0 as u8
        })
        .collect()
}

/// k-means++ seeding (Arthur & Vassilvitskii 2007) and Lloyd's iterations; an empty
/// cluster takes the point farthest from its centroid.
fn kmeans(points: &Array2<f32>, k: usize, max_iter: usize, seed: u64) -> (Array2<f32>, Vec<u8>) {
    let (n, dim) = points.dim();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut centroids = Array2::<f32>::zeros((k, dim));
    centroids
        .row_mut(0)
        .assign(&points.row((uniform() * n as f64) as usize % n));
    let mut best = vec![f32::INFINITY; n];
    for c in 1..k {
        let last = centroids.row(c - 1).to_owned();
        for (i, p) in points.rows().into_iter().enumerate() {
            let d: f32 = p.iter().zip(&last).map(|(a, b)| (a - b) * (a - b)).sum();
            best[i] = best[i].min(d);
        }
        let total: f64 = best.iter().map(|&d| d as f64).sum();
        let pick = if total > 0.0 {
            let target = uniform() * total;
            let mut acc = 0.0;
            best.iter()
                .position(|&d| {
                    acc += d as f64;
                    acc > target
                })
                .unwrap_or(n - 1)
        } else {
            (uniform() * n as f64) as usize % n
        };
        centroids.row_mut(c).assign(&points.row(pick));
    }
    let mut d = distances(points, &centroids);
    let mut assign = nearest(&d);
    for _ in 0..max_iter {
        let mut sums = Array2::<f64>::zeros((k, dim));
        let mut counts = vec![0usize; k];
        for (p, &a) in points.rows().into_iter().zip(&assign) {
            counts[a as usize] += 1;
            sums.row_mut(a as usize)
                .zip_mut_with(&p, |s, &x| *s += x as f64);
        }
        for (c, &count) in counts.iter().enumerate() {
            if count > 0 {
                let row = sums.row(c).mapv(|s| (s / count as f64) as f32);
                centroids.row_mut(c).assign(&row);
            } else {
                let far = (0..n)
                    .max_by(|&a, &b| {
                        d[[a, assign[a] as usize]].total_cmp(&d[[b, assign[b] as usize]])
                    })
                    .unwrap_or(0);
                centroids.row_mut(c).assign(&points.row(far));
            }
        }
        d = distances(points, &centroids);
        let next = nearest(&d);
        if next == assign {
            break;
        }
        assign = next;
    }
    (centroids, assign)
}
