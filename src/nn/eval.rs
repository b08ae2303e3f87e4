//! Evaluation on a data set (accuracy, loss, confusion counts) and the loss.

use ndarray::{Array2, ArrayView1, ArrayView2, s};

use super::{Evaluation, Network};
use crate::error::{Error, Result};
use crate::io::idx::Dataset;
use crate::model::Model;

impl Network {
    /// Accuracy and loss over a data set, in batches of `batch` examples.
    pub fn evaluate(&self, model: &Model, data: &Dataset, batch: usize) -> Result<Evaluation> {
        evaluate_by(data, batch, |x| self.forward(model, x))
    }

    /// Confusion counts on `data`: entry `[true class, predicted class]` counts the
    /// examples of that class given that prediction (classes are the output units).
    ///
    /// ```
    /// use slimnn::Model;
    /// use slimnn::io::idx::Dataset;
    /// use slimnn::nn::Network;
    ///
    /// let mut model = Model::new();
    /// let net = Network::mlp(&mut model, &[4, 3], 1)?;
    /// let data = Dataset {
    ///     images: ndarray::Array2::from_elem((5, 4), 0.5),
    ///     labels: ndarray::array![0u8, 1, 2, 1, 0],
    ///     image_shape: vec![2, 2],
    /// };
    /// let counts = net.confusion(&model, &data, 2)?;
    /// assert_eq!(counts.dim(), (3, 3));
    /// assert_eq!(counts.sum(), 5);
    /// assert_eq!(counts.diag().sum(), net.evaluate(&model, &data, 2)?.correct);
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn confusion(&self, model: &Model, data: &Dataset, batch: usize) -> Result<Array2<usize>> {
        if data.is_empty() {
            return Err(Error::Empty {
                what: "evaluation data set".into(),
            });
        }
        let batch = batch.max(1);
        let mut counts: Option<Array2<usize>> = None;
        for start in (0..data.len()).step_by(batch) {
            let end = (start + batch).min(data.len());
            let logits = self.forward(model, data.images.slice(s![start..end, ..]))?;
            let classes = logits.ncols();
            let counts = counts.get_or_insert_with(|| Array2::zeros((classes, classes)));
            for (row, &y) in logits
                .rows()
                .into_iter()
                .zip(&data.labels.slice(s![start..end]))
            {
                let y = y as usize;
                if y >= classes {
                    return Err(Error::invalid(
                        "labels",
                        y,
                        format!("classes below the {classes} outputs"),
                    ));
                }
                counts[[y, argmax(&row)]] += 1;
            }
        }
        Ok(counts.unwrap_or_else(|| Array2::zeros((0, 0))))
    }
}

/// Accuracy and loss over a data set, in batches of `batch` examples, of the logits
/// `forward` gives for each batch.
pub(super) fn evaluate_by(
    data: &Dataset,
    batch: usize,
    forward: impl Fn(ArrayView2<'_, f32>) -> Result<Array2<f32>>,
) -> Result<Evaluation> {
    if data.is_empty() {
        return Err(Error::Empty {
            what: "evaluation data set".into(),
        });
    }
    let batch = batch.max(1);
    let (mut correct, mut loss) = (0usize, 0.0f64);
    for start in (0..data.len()).step_by(batch) {
        let end = (start + batch).min(data.len());
        let logits = forward(data.images.slice(s![start..end, ..]))?;
        let labels = data.labels.slice(s![start..end]);
        let (l, _) = softmax_cross_entropy(logits.view(), labels)?;
        loss += l as f64 * (end - start) as f64;
        correct += logits
            .rows()
            .into_iter()
            .zip(labels)
            .filter(|(row, y)| argmax(row) == **y as usize)
            .count();
    }
    Ok(Evaluation {
        accuracy: correct as f64 / data.len() as f64,
        loss: loss / data.len() as f64,
        correct,
        total: data.len(),
    })
}

fn argmax(row: &ndarray::ArrayView1<'_, f32>) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// Checks `n` labels, each below `classes`.
pub(crate) fn check_labels(labels: ArrayView1<'_, u8>, n: usize, classes: usize) -> Result<()> {
    if labels.len() != n {
        return Err(Error::ShapeMismatch {
            what: "labels".into(),
            expected: vec![n],
            got: vec![labels.len()],
        });
    }
    if let Some(&bad) = labels.iter().find(|&&y| y as usize >= classes) {
        return Err(Error::invalid(
            "label",
            bad,
            format!("a class below {classes}"),
        ));
    }
    Ok(())
}

/// Mean softmax cross-entropy over the rows of `logits`, and its gradient.
pub fn softmax_cross_entropy(
    logits: ArrayView2<'_, f32>,
    labels: ArrayView1<'_, u8>,
) -> Result<(f32, Array2<f32>)> {
    let (n, classes) = logits.dim();
    check_labels(labels, n, classes)?;
    let mut grad = Array2::zeros((n, classes));
    let mut loss = 0.0f64;
    for ((row, mut g), &y) in logits.rows().into_iter().zip(grad.rows_mut()).zip(labels) {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        let log_sum = sum.ln() + max;
        loss += (log_sum - row[y as usize]) as f64;
        for (gi, &v) in g.iter_mut().zip(row) {
            *gi = (v - log_sum).exp() / n as f32;
        }
        g[y as usize] -= 1.0 / n as f32;
    }
    Ok(((loss / n.max(1) as f64) as f32, grad))
}
