//! [`allocate_ranks`]: one parameter or FLOP budget spread over many layers.

use ndarray::{ArrayRef, IxDyn};

use super::linalg::singular_values;
use super::{LowRankContext, linear_weight};
use crate::error::{Error, Result};

/// What a layer's rank costs and buys: its singular values (descending; for Tucker-2 or
/// other forms, any per-component energies), its total energy `‖W‖²_F`, and the cost of
/// each component in parameters and FLOPs, against the dense layer's.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpectrum {
    /// Singular values, descending.
    pub singular_values: Vec<f64>,
    /// `‖W‖²_F`.
    pub energy: f64,
    /// Parameters one component costs (`out + in` for a Linear SVD).
    pub params_per_rank: usize,
    /// FLOPs one component costs per output position.
    pub flops_per_rank: usize,
    /// The dense layer's parameters: no rank is allocated past the break-even rank
    /// where the factors would cost as much, and a layer that reaches it stays dense.
    pub dense_params: usize,
    /// The dense layer's FLOPs per output position (the break-even of a FLOP budget).
    pub dense_flops: usize,
}

impl LayerSpectrum {
    /// The spectrum of a Linear weight `[out, in]` for a truncated SVD
    /// ([`TruncatedSvd`](super::TruncatedSvd)): its singular values, and `out + in`
    /// parameters and multiply-adds per component against `out·in`.
    pub fn linear(weights: &ArrayRef<f32, IxDyn>, ctx: &LowRankContext<'_>) -> Result<Self> {
        let w = linear_weight(weights, ctx, "a Linear spectrum")?;
        let (m, n) = w.dim();
        Ok(LayerSpectrum {
            singular_values: singular_values(w)?.into_iter().map(f64::from).collect(),
            energy: w.iter().map(|&v| (v as f64).powi(2)).sum(),
            params_per_rank: m + n,
            flops_per_rank: m + n,
            dense_params: m * n,
            dense_flops: m * n,
        })
    }

    /// The largest rank worth having: below the break-even with the dense layer under
    /// `budget`'s measure, at least 1, at most the spectrum's length.
    fn max_rank(&self, budget: Budget) -> usize {
        let (per_rank, dense) = match budget {
            Budget::Params(_) => (self.params_per_rank, self.dense_params),
            Budget::Flops(_) => (self.flops_per_rank, self.dense_flops),
        };
        (dense.saturating_sub(1) / per_rank.max(1))
            .max(1)
            .min(self.singular_values.len())
    }
}

/// The budget [`allocate_ranks`] meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// Total parameters of all the factorized layers.
    Params(usize),
    /// Total FLOPs per output position of all the factorized layers.
    Flops(usize),
}

/// Ranks for many layers under one budget, with the least total relative error: it
/// minimises `Σ_layers ‖W − Ŵ‖² / ‖W‖²` (each layer's discarded energy, relative to
/// its own) subject to the budget. Components are taken greedily by the relative energy
/// they recover per unit of cost; since each layer's singular values decrease, every
/// layer's gain per component decreases too, and the greedy choice is optimal up to the
/// last, partially affordable component. Every layer gets rank at least 1, and none
/// more than its break-even rank (the largest rank whose factors still cost less than
/// the dense layer).
///
/// A factorization at the break-even rank saves almost nothing (at most one component's
/// cost) and still loses accuracy, so a layer that reaches it goes on to stay **dense**
/// as its next step, when the budget affords the dense layer: that step costs the
/// difference and recovers all the remaining energy. A dense layer is returned as rank
/// **0** (it is not to be factorized; [`Model::factorize_within`](crate::Model::factorize_within)
/// leaves it as it is); a layer whose rank 1 already costs as much as the dense layer
/// starts dense.
///
/// ```
/// use slimnn::lowrank::{Budget, LayerSpectrum, allocate_ranks};
///
/// let layer = |s: Vec<f64>| LayerSpectrum {
///     energy: s.iter().map(|v| v * v).sum(),
///     singular_values: s,
///     params_per_rank: 10,
///     flops_per_rank: 10,
///     dense_params: 100,
///     dense_flops: 100,
/// };
/// // The second layer's spectrum is flat: its components are worth more.
/// let ranks = allocate_ranks(&[layer(vec![10.0, 1.0, 0.1]), layer(vec![1.0, 1.0, 1.0])], Budget::Params(40))?;
/// assert_eq!(ranks, vec![1, 3]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn allocate_ranks(layers: &[LayerSpectrum], budget: Budget) -> Result<Vec<usize>> {
    if layers.is_empty() {
        return Err(Error::Empty {
            what: "list of layers to allocate ranks to".into(),
        });
    }
    let cost = |l: &LayerSpectrum| match budget {
        Budget::Params(_) => l.params_per_rank,
        Budget::Flops(_) => l.flops_per_rank,
    };
    let limit = match budget {
        Budget::Params(p) | Budget::Flops(p) => p,
    };
    for (i, l) in layers.iter().enumerate() {
        if l.singular_values.is_empty() || cost(l) == 0 || l.energy.is_nan() || l.energy <= 0.0 {
            return Err(Error::invalid(
                "layers",
                format!("layer {i}"),
                "a non-empty spectrum, positive energy and a positive cost per component",
            ));
        }
    }
    let dense_cost = |l: &LayerSpectrum| match budget {
        Budget::Params(_) => l.dense_params,
        Budget::Flops(_) => l.dense_flops,
    };
    // A layer whose rank 1 costs as much as the dense layer is worth nothing factorized.
    let mut dense: Vec<bool> = layers.iter().map(|l| cost(l) >= dense_cost(l)).collect();
    let mut ranks = vec![1usize; layers.len()];
    let mut spent: usize = layers
        .iter()
        .zip(&dense)
        .map(|(l, &d)| if d { dense_cost(l) } else { cost(l) })
        .sum();
    if spent > limit {
        return Err(Error::invalid(
            "budget",
            limit,
            format!("at least {spent}, the cost of rank 1 in every layer"),
        ));
    }
    loop {
        // The next step of each layer, by relative energy per unit of cost: its next
        // component, or at its largest rank, staying dense (all the remaining energy).
        let best = layers
            .iter()
            .enumerate()
            .filter(|(i, _)| !dense[*i])
            .filter_map(|(i, l)| {
                let r = ranks[i];
                if r < l.max_rank(budget) {
                    let s = l.singular_values[r];
                    Some((i, cost(l), s * s / l.energy / cost(l) as f64))
                } else if l.max_rank(budget) < l.singular_values.len() {
                    let step = dense_cost(l).saturating_sub(r * cost(l)).max(1);
                    let rest: f64 = l.singular_values[r..].iter().map(|s| s * s).sum();
                    Some((i, step, rest / l.energy / step as f64))
                } else {
                    None
                }
            })
            .filter(|&(_, step, _)| spent + step <= limit)
            .max_by(|a, b| a.2.total_cmp(&b.2).then(b.0.cmp(&a.0)));
        match best {
            Some((i, step, gain)) if gain > 0.0 => {
                if ranks[i] < layers[i].max_rank(budget) {
                    ranks[i] += 1;
                } else {
                    dense[i] = true;
                }
                spent += step;
            }
            _ => break,
        }
    }
    for (r, d) in ranks.iter_mut().zip(dense) {
        if d {
            *r = 0;
        }
    }
    Ok(ranks)
}
