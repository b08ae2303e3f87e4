//! Data-free neuron merging for Linear chains (Srinivas & Babu 2015).

use ndarray::{Array1, Array2, ArrayRef, Axis, Ix1, Ix2};

use super::Amount;
use crate::error::{Error, Result};
use crate::model::{LayerKind, Model};
use crate::tensor::{Scalar, check_finite, check_same_shape};

/// Two Linear layers after [`merge_neurons`].
#[derive(Clone, Debug, PartialEq)]
pub struct MergedLayers<T = f32> {
    /// First layer's weight `[hidden − removed, in]`.
    pub w1: Array2<T>,
    /// First layer's bias, if it had one.
    pub b1: Option<Array1<T>>,
    /// Second layer's weight `[out, hidden − removed]`, merged columns summed.
    pub w2: Array2<T>,
    /// Each removed neuron (original index) and the neuron it was merged into, in the
    /// order of removal.
    pub merges: Vec<(usize, usize)>,
}

/// Removes `amount` hidden neurons of `x → W1 x + b1 → h(·) → W2 ·` without data
/// (Srinivas & Babu, "Data-free Parameter Pruning for Deep Neural Networks", BMVC 2015).
///
/// Two neurons `i`, `j` with equal incoming weights (and bias) produce equal activations
/// under any `h`, so `j` can be dropped and its outgoing weights added to `i`'s, leaving
/// the output unchanged. For near-equal neurons the expected change is measured by the
/// saliency `s(i, j) = ⟨W2[:, j]²⟩ · ‖[W1|b1]_i − [W1|b1]_j‖²`; the neuron `j` of least
/// saliency (paired with its nearest `i`) is merged first, saliencies are updated, and
/// the process repeats.
///
/// ```
/// use ndarray::array;
/// use slimnn::prune::merge_neurons;
///
/// // Neurons 0 and 2 are duplicates: merging one into the other changes nothing.
/// let w1 = array![[1.0f32, 2.0], [0.5, -1.0], [1.0, 2.0]];
/// let w2 = array![[1.0f32, 1.0, 3.0]];
/// let merged = merge_neurons(&w1, None, &w2, 1usize)?;
/// assert_eq!(merged.merges, vec![(0, 2)]); // equal saliency 0: the lower index goes
/// assert_eq!(merged.w2, array![[1.0f32, 4.0]]);
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn merge_neurons<T: Scalar>(
    w1: &ArrayRef<T, Ix2>,
    b1: Option<&ArrayRef<T, Ix1>>,
    w2: &ArrayRef<T, Ix2>,
    amount: impl Into<Amount>,
) -> Result<MergedLayers<T>> {
    let (hidden, inputs) = w1.dim();
    check_same_shape(&[w2.nrows(), hidden], w2.shape(), || {
        "second layer weight (its inputs are the first layer's outputs)".into()
    })?;
    if let Some(b) = b1 {
        check_same_shape(&[hidden], b.shape(), || "first layer bias".into())?;
        check_finite(&b.to_vec(), || "first layer bias".into())?;
    }
    check_finite(&w1.iter().copied().collect::<Vec<_>>(), || {
        "first layer weight".into()
    })?;
    check_finite(&w2.iter().copied().collect::<Vec<_>>(), || {
        "second layer weight".into()
    })?;
    if hidden < 2 {
        return Err(Error::bad_shape(
            "first layer weight",
            w1.shape(),
            "needs at least 2 neurons to merge",
        ));
    }
    let remove = amount.into().count_of(hidden)?;
    if remove >= hidden {
        return Err(Error::invalid(
            "amount",
            remove,
            format!("fewer than the {hidden} neurons"),
        ));
    }

    // Incoming vectors [W1 | b1] in f64, their pairwise squared distances via the Gram matrix.
    let cols = inputs + b1.is_some() as usize;
    let v = Array2::from_shape_fn((hidden, cols), |(i, c)| match (c < inputs, b1) {
        (true, _) => w1[[i, c]].as_f64(),
        (false, Some(b)) => b[i].as_f64(),
        (false, None) => 0.0,
    });
    let gram = v.dot(&v.t());
    let dist = |i: usize, j: usize| (gram[[i, i]] + gram[[j, j]] - 2.0 * gram[[i, j]]).max(0.0);
    let mut out = w2.mapv(|x| x.as_f64());
    let outgoing = |out: &Array2<f64>, j: usize| {
        out.column(j).iter().map(|x| x * x).sum::<f64>() / out.nrows().max(1) as f64
    };
    let mut a2: Vec<f64> = (0..hidden).map(|j| outgoing(&out, j)).collect();
    let mut alive = vec![true; hidden];
    // The nearest other live neuron (there is one while two or more are alive).
    let nearest = |alive: &[bool], j: usize| -> Option<usize> {
        (0..hidden)
            .filter(|&i| i != j && alive[i])
            .min_by(|&a, &b| dist(a, j).total_cmp(&dist(b, j)).then(a.cmp(&b)))
    };
    let mut best: Vec<usize> = (0..hidden)
        .map(|j| nearest(&alive, j).unwrap_or(j))
        .collect();

    let mut merges = Vec::with_capacity(remove);
    for _ in 0..remove {
        let j = (0..hidden)
            .filter(|&j| alive[j])
            .min_by(|&a, &b| {
                (a2[a] * dist(best[a], a))
                    .total_cmp(&(a2[b] * dist(best[b], b)))
                    .then(a.cmp(&b))
            })
            .expect("neurons remain");
        let i = best[j];
        let moved = out.column(j).to_owned();
        out.column_mut(i).zip_mut_with(&moved, |x, &y| *x += y);
        a2[i] = outgoing(&out, i);
        alive[j] = false;
        merges.push((j, i));
        for k in 0..hidden {
            if alive[k] && best[k] == j {
                best[k] = nearest(&alive, k).unwrap_or(k);
            }
        }
    }

    let kept: Vec<usize> = (0..hidden).filter(|&i| alive[i]).collect();
    Ok(MergedLayers {
        w1: w1.select(Axis(0), &kept),
        b1: b1.map(|b| b.select(Axis(0), &kept)),
        w2: out.select(Axis(1), &kept).mapv(T::of),
        merges,
    })
}

impl Model {
    /// [`merge_neurons`] on two Linear weights of the model (`first` feeds `second`),
    /// replacing them, and `first`'s bias, by the merged layers. Existing masks are applied
    /// first and dropped. Returns the merges (removed neuron, kept neuron).
    pub fn merge_neurons(
        &mut self,
        first: &str,
        second: &str,
        amount: impl Into<Amount>,
    ) -> Result<Vec<(usize, usize)>> {
        for name in [first, second] {
            let p = self.get(name)?;
            if p.kind() != LayerKind::Linear {
                return Err(Error::WrongKind {
                    name: name.into(),
                    kind: p.kind().to_string(),
                    operation: "neuron merging",
                    expected: "Linear",
                });
            }
        }
        let two_d =
            |a: ndarray::ArrayD<f32>| a.into_dimensionality::<Ix2>().expect("Linear is 2-D");
        let w1 = two_d(self.get(first)?.effective());
        let w2 = two_d(self.get(second)?.effective());
        let bias_name = self.bias_of(first).map(str::to_string);
        let b1 = match &bias_name {
            Some(b) => Some(
                self.get(b)?
                    .effective()
                    .into_dimensionality::<Ix1>()
                    .map_err(|_| {
                        Error::bad_shape(
                            format!("`{b}`"),
                            self.get(b).map(|p| p.shape()).unwrap_or(&[]),
                            "a bias is 1-D",
                        )
                    })?,
            ),
            None => None,
        };
        let merged = merge_neurons(&w1, b1.as_deref(), &w2, amount)?;
        self.get_mut(first)?.replace_value(merged.w1.into_dyn())?;
        self.get_mut(second)?.replace_value(merged.w2.into_dyn())?;
        if let (Some(name), Some(b)) = (bias_name, merged.b1) {
            self.get_mut(&name)?.replace_value(b.into_dyn())?;
        }
        Ok(merged.merges)
    }
}
