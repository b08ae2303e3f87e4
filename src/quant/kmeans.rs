//! Weight sharing by k-means ([`KMeansQuantizer`]): a codebook of `k` shared values and
//! one index per weight (Han, Mao & Dally, "Deep Compression", ICLR 2016).

use ndarray::{ArrayRef, IxDyn};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::binary::prepare;
use super::optimal_kmeans::{dedup_weighted, optimal_kmeans_1d};
use super::uniform::encode;
use super::{Decoding, Granularity, Levels, QuantContext, QuantizedTensor, Quantizer};
use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::tensor::{Scalar, check_same_shape, row_major};

/// Where Lloyd's algorithm starts (Deep Compression §3.2 compares the three).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KMeansInit {
    /// Centroids evenly spaced between the smallest and largest weight. Deep
    /// Compression's choice: it keeps centroids on the rare large weights.
    #[default]
    Linear,
    /// Centroids at evenly spaced quantiles (`(j + ½)/k`) of the weights.
    Density,
    /// `k` distinct weights drawn at random (Forgy), from the seed.
    Random {
        /// The seed.
        seed: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Lloyd { init: KMeansInit, max_iter: usize },
    Optimal,
}

/// Shares `k` values among all the weights of a tensor: each weight stores the
/// `⌈log₂ k⌉`-bit index of its nearest centroid.
///
/// Two ways to find the centroids:
/// - [`KMeansQuantizer::lloyd`]: Lloyd's algorithm from a chosen start, as Deep
///   Compression does. On sorted 1-D data each iteration costs `O(k log n)` (cluster
///   boundaries by binary search, means from prefix sums), after one sort.
/// - [`KMeansQuantizer::optimal`]: the exact minimum of the squared error, by dynamic
///   programming over the sorted weights (Wang & Song, "Ckmeans.1d.dp", R Journal 2011;
///   Grønlund et al., "Fast Exact k-Means, k-Medians and Bregman Divergence Clustering
///   in 1D", 2017), in `O(k·n)`.
///
/// With a mask in the context, the codebook is fitted to the kept weights only (Deep
/// Compression shares the weights that survive pruning).
///
/// ```
/// use ndarray::array;
/// use slimnn::quant::{KMeansInit, KMeansQuantizer, QuantContext, Quantizer};
///
/// let w = array![0.1f32, 0.12, 0.11, -0.5, -0.52, 0.9].into_dyn();
/// let q = KMeansQuantizer::optimal(3)?.quantize(&w, &QuantContext::new())?;
/// assert_eq!(q.codes().bits(), 2);
/// let back = q.dequantize::<f32>();
/// assert!((back[[0]] - 0.11).abs() < 1e-6 && (back[[3]] + 0.51).abs() < 1e-6 && back[[5]] == 0.9);
/// let lloyd = KMeansQuantizer::lloyd(3, KMeansInit::Linear)?.quantize(&w, &QuantContext::new())?;
/// assert_eq!(lloyd.dequantize::<f32>(), back);
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KMeansQuantizer {
    k: usize,
    method: Method,
}

fn check_k(k: usize) -> Result<()> {
    if (2..=256).contains(&k) {
        Ok(())
    } else {
        Err(Error::invalid(
            "k",
            k,
            "2 to 256 shared values (codes of at most 8 bits)",
        ))
    }
}

impl KMeansQuantizer {
    /// Lloyd's algorithm from `init`, at most 300 iterations (stops when no centroid
    /// moves).
    pub fn lloyd(k: usize, init: KMeansInit) -> Result<Self> {
        check_k(k)?;
        Ok(KMeansQuantizer {
            k,
            method: Method::Lloyd {
                init,
                max_iter: 300,
            },
        })
    }

    /// The optimal codebook (minimum squared error).
    pub fn optimal(k: usize) -> Result<Self> {
        check_k(k)?;
        Ok(KMeansQuantizer {
            k,
            method: Method::Optimal,
        })
    }

    /// Sets Lloyd's iteration budget (no effect on the optimal method).
    pub fn with_max_iter(mut self, max_iter: usize) -> Self {
        if let Method::Lloyd { init, .. } = self.method {
            self.method = Method::Lloyd {
                init,
                max_iter: max_iter.max(1),
            };
        }
        self
    }

    /// The codebook size.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bits per index.
    pub fn bits(&self) -> u8 {
        (usize::BITS - (self.k - 1).leading_zeros()).max(1) as u8
    }

    /// The sorted centroids for `values` (finite, non-empty).
    fn centroids(&self, values: &[f32]) -> Result<Vec<f64>> {
        let mut sorted: Vec<f32> = values.to_vec();
        sorted.par_sort_unstable_by(f32::total_cmp);
        let sorted: Vec<f64> = sorted.into_iter().map(f64::from).collect();
        let (x, w) = dedup_weighted(&sorted);
        if self.k > x.len() {
            return Err(Error::invalid(
                "k",
                self.k,
                format!("at most the number of distinct values ({})", x.len()),
            ));
        }
        Ok(match self.method {
            Method::Optimal => optimal_kmeans_1d(&x, Some(&w), self.k).centroids,
            Method::Lloyd { init, max_iter } => {
                lloyd(&x, &w, initial(&x, &w, self.k, init), max_iter)
            }
        })
    }
}

/// Starting centroids over distinct sorted values `x` with counts `w`.
fn initial(x: &[f64], w: &[f64], k: usize, init: KMeansInit) -> Vec<f64> {
    let (lo, hi) = (x[0], x[x.len() - 1]);
    match init {
        KMeansInit::Linear => (0..k)
            .map(|j| lo + (hi - lo) * j as f64 / (k - 1) as f64)
            .collect(),
        KMeansInit::Density => {
            let total: f64 = w.iter().sum();
            let mut acc = 0.0;
            let mut i = 0;
            (0..k)
                .map(|j| {
                    let target = (j as f64 + 0.5) / k as f64 * total;
                    while i + 1 < x.len() && acc + w[i] < target {
                        acc += w[i];
                        i += 1;
                    }
                    x[i]
                })
                .collect()
        }
        KMeansInit::Random { seed } => {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let total: f64 = w.iter().sum();
            let cum: Vec<f64> = w
                .iter()
                .scan(0.0, |a, &c| {
                    *a += c;
                    Some(*a)
                })
                .collect();
            let mut chosen = vec![false; x.len()];
            let mut picked = 0;
            // Draw weights (so repeated values are likelier), keep distinct ones.
            for _ in 0..64 * k {
                if picked == k {
                    break;
                }
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
                let i = cum.partition_point(|&c| c <= u).min(x.len() - 1);
                if !chosen[i] {
                    chosen[i] = true;
                    picked += 1;
                }
            }
            // A pathological draw: fill up with the first unchosen values.
            for c in chosen.iter_mut() {
                if picked == k {
                    break;
                }
                if !*c {
                    *c = true;
                    picked += 1;
                }
            }
            x.iter()
                .zip(&chosen)
                .filter(|(_, c)| **c)
                .map(|(v, _)| *v)
                .collect()
        }
    }
}

/// Lloyd's iterations on distinct sorted values `x` with counts `w`: cluster `j` holds
/// the values in `(b_{j−1}, b_j]`, `b` the midpoints of consecutive centroids; each
/// centroid moves to its cluster's mean. Empty clusters take the values farthest from
/// their centroids, which leave their clusters (scikit-learn's relocation), so no
/// codebook entry is wasted.
fn lloyd(x: &[f64], w: &[f64], mut c: Vec<f64>, max_iter: usize) -> Vec<f64> {
    let mut sw = vec![0.0; x.len() + 1];
    let mut sx = vec![0.0; x.len() + 1];
    for i in 0..x.len() {
        sw[i + 1] = sw[i] + w[i];
        sx[i + 1] = sx[i] + w[i] * x[i];
    }
    for _ in 0..max_iter {
        c.sort_by(f64::total_cmp);
        let mut next = c.clone();
        let mut start = 0;
        let mut ranges = Vec::with_capacity(c.len());
        for j in 0..c.len() {
            let end = if j + 1 == c.len() {
                x.len()
            } else {
                let b = (c[j] + c[j + 1]) / 2.0;
                x.partition_point(|&v| v <= b)
            };
            let end = end.max(start);
            if end > start {
                next[j] = (sx[end] - sx[start]) / (sw[end] - sw[start]);
            }
            ranges.push(start..end);
            start = end;
        }
        let empty: Vec<usize> = (0..c.len()).filter(|&j| ranges[j].is_empty()).collect();
        if !empty.is_empty() {
            // Values by distance to the centroid they were assigned to, farthest first;
            // each stands for `w[i]` samples.
            let mut far: Vec<(usize, usize)> = ranges
                .iter()
                .enumerate()
                .flat_map(|(j, r)| r.clone().map(move |i| (j, i)))
                .collect();
            far.sort_unstable_by(|a, b| {
                (x[b.1] - c[b.0]).abs().total_cmp(&(x[a.1] - c[a.0]).abs())
            });
            let mut left: Vec<f64> = w.to_vec();
            let mut samples = far
                .into_iter()
                .flat_map(|(j, i)| std::iter::repeat_n((j, i), w[i].max(1.0) as usize));
            let mut sums: Vec<(f64, f64)> = ranges
                .iter()
                .map(|r| (sx[r.end] - sx[r.start], sw[r.end] - sw[r.start]))
                .collect();
            for &e in &empty {
                // The farthest sample whose cluster can give it up (keeps at least one).
                let Some((donor, i)) = samples.find(|&(d, i)| left[i] >= 1.0 && sums[d].1 > 1.0)
                else {
                    break;
                };
                left[i] -= 1.0;
                next[e] = x[i];
                sums[donor] = (sums[donor].0 - x[i], sums[donor].1 - 1.0);
                next[donor] = sums[donor].0 / sums[donor].1;
            }
        }
        if next == c {
            break;
        }
        c = next;
    }
    c.sort_by(f64::total_cmp);
    c
}

impl<T: Scalar> Quantizer<T> for KMeansQuantizer {
    /// E.g. `"k-means 16 clusters (optimal)"`, `"k-means 32 clusters (Lloyd, linear
    /// init)"`.
    fn describe(&self) -> String {
        let method = match self.method {
            Method::Optimal => "optimal".to_string(),
            Method::Lloyd { init, .. } => match init {
                KMeansInit::Linear => "Lloyd, linear init".into(),
                KMeansInit::Density => "Lloyd, density init".into(),
                KMeansInit::Random { seed } => format!("Lloyd, random init, seed {seed}"),
            },
        };
        format!("k-means {} clusters ({method})", self.k)
    }

    fn quantize(
        &self,
        weights: &ArrayRef<T, IxDyn>,
        ctx: &QuantContext<'_>,
    ) -> Result<QuantizedTensor> {
        let (values, runs) = prepare(weights, Granularity::PerTensor, ctx)?;
        let fit: Vec<f32> = match ctx.mask {
            Some(m) => {
                check_same_shape(weights.shape(), m.shape(), || {
                    format!("mask of {}", ctx.what())
                })?;
                m.iter_kept().map(|i| values[i]).collect()
            }
            None => values.to_vec(),
        };
        if fit.is_empty() {
            return Err(Error::Empty {
                what: format!("kept weights of {}", ctx.what()),
            });
        }
        let centroids = self.centroids(&fit)?;
        let bounds: Vec<f32> = centroids
            .windows(2)
            .map(|p| ((p[0] + p[1]) / 2.0) as f32)
            .collect();
        let codes = encode(&values, runs, self.bits(), |_, x, c| {
            for (c, &v) in c.iter_mut().zip(x) {
                *c = bounds.partition_point(|&b| b < v) as u8;
            }
        });
        ctx.attach_mask(QuantizedTensor::new(
            weights.shape(),
            codes,
            Decoding::Scalar {
                levels: Levels::Table(centroids.iter().map(|&c| c as f32).collect()),
                granularity: Granularity::PerTensor,
                scales: vec![1.0],
                zero_points: Vec::new(),
                scale_bits: 32,
            },
        )?)
    }
}

/// `∂L/∂c_k = Σ_{i: code_i = k} ∂L/∂w_i · s_i`: the gradient of each shared value,
/// summed over the weights that share it (Deep Compression, Eq. 3; `s_i` is the weight's
/// group scale, 1 for k-means codebooks), skipping weights a mask (given, or attached to
/// `q`) prunes.
/// Subtract `lr ·` these from the codebook ([`QuantizedTensor::set_table`]) to fine-tune
/// a weight-shared network with its codes fixed.
///
/// ```
/// use ndarray::array;
/// use slimnn::quant::{KMeansQuantizer, QuantContext, Quantizer, centroid_gradients};
///
/// let w = array![0.1f32, 0.11, 0.9, 0.91].into_dyn();
/// let mut q = KMeansQuantizer::optimal(2)?.quantize(&w, &QuantContext::new())?;
/// let g = array![1.0f32, 2.0, -1.0, 0.5].into_dyn();
/// let grads = centroid_gradients(&q, &g, None)?;
/// assert_eq!(grads, vec![3.0, -0.5]);
/// let table = q.table().unwrap().iter().zip(&grads).map(|(c, g)| c - 0.01 * g).collect();
/// q.set_table(table)?;
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn centroid_gradients(
    q: &QuantizedTensor,
    grad: &ArrayRef<f32, IxDyn>,
    mask: Option<&Mask>,
) -> Result<Vec<f32>> {
    let table = q.table().ok_or_else(|| {
        Error::invalid(
            "quantized tensor",
            "uniform levels",
            "a codebook (Levels::Table)",
        )
    })?;
    check_same_shape(q.shape(), grad.shape(), || "gradient".into())?;
    if let Some(m) = mask {
        check_same_shape(q.shape(), m.shape(), || "mask".into())?;
    }
    // w = s_g·(t_c − z_g), so ∂w/∂t_c = s_g: scale each gradient by its group's scale.
    let Decoding::Scalar {
        granularity,
        scales,
        ..
    } = q.decoding()
    else {
        unreachable!("a table decoding is scalar")
    };
    let runs = super::scheme::Runs::new(q.shape(), *granularity)?;
    let codes = q.codes().unpack();
    let g = row_major(grad);
    let mut sums = vec![0.0f64; table.len()];
    let pruned = |i: usize| mask.or(q.mask()).is_some_and(|m| !m.get(i));
    for (i, (&c, &gi)) in codes.iter().zip(g.iter()).enumerate() {
        if !pruned(i) {
            sums[c as usize] += gi as f64 * scales[runs.group(i / runs.run_len)] as f64;
        }
    }
    Ok(sums.into_iter().map(|s| s as f32).collect())
}
