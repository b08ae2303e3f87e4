//! CReLU (Shang et al. 2016): `[ReLU(x), ReLU(−x)]` on the channel axis.

use ndarray::{ArrayD, ArrayRef, Axis, IxDyn, Slice, concatenate};

use crate::error::{Error, Result};

/// Concatenated ReLU (Shang et al. 2016): for `x` `[n, c, …]`, the `[n, 2c, …]` tensor
/// `[ReLU(x), ReLU(−x)]` concatenated on axis 1 (channels of `[n, c, h, w]`, features of
/// `[n, f]`). A convolution with `k` filters followed by CReLU gives `2k` channels: the
/// negated filters' responses come for free, which is what the lower layers of trained
/// CNNs learn anyway (Shang et al. find pairs of opposite filters). In a
/// [`Network`](crate::nn::Network) it is [`Layer::CRelu`](crate::nn::Layer::CRelu).
///
/// ```
/// use ndarray::array;
/// use slimnn::filters::crelu;
///
/// let y = crelu(&array![[1.0f32, -2.0]].into_dyn())?;
/// assert_eq!(y, array![[1.0f32, 0.0, 0.0, 2.0]].into_dyn());
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn crelu(x: &ArrayRef<f32, IxDyn>) -> Result<ArrayD<f32>> {
    if x.ndim() < 2 {
        return Err(Error::bad_shape(
            "CReLU input",
            x.shape(),
            "CReLU takes [n, channels, …]",
        ));
    }
    let pos = x.mapv(|v| v.max(0.0));
    let neg = x.mapv(|v| (-v).max(0.0));
    Ok(concatenate(Axis(1), &[pos.view(), neg.view()])?)
}

/// The gradient of [`crelu`] with respect to its input `x`, given `grad` `[n, 2c, …]`:
/// `grad[:, :c]` where `x > 0`, `−grad[:, c:]` where `x < 0`, zero at `x = 0`.
pub fn crelu_backward(
    x: &ArrayRef<f32, IxDyn>,
    grad: &ArrayRef<f32, IxDyn>,
) -> Result<ArrayD<f32>> {
    let out = crelu_shape(x.shape())?;
    crate::tensor::check_same_shape(&out, grad.shape(), || "gradient of the CReLU output".into())?;
    let c = x.shape()[1];
    let gp = grad.slice_axis(Axis(1), Slice::from(..c));
    let gn = grad.slice_axis(Axis(1), Slice::from(c..));
    let mut dx = ArrayD::<f32>::zeros(x.raw_dim());
    ndarray::Zip::from(&mut dx)
        .and(x)
        .and(&gp)
        .and(&gn)
        .for_each(|d, &v, &p, &n| {
            *d = if v > 0.0 {
                p
            } else if v < 0.0 {
                -n
            } else {
                0.0
            }
        });
    Ok(dx)
}

/// A batch's shape after CReLU: `[n, c, …]` → `[n, 2c, …]`.
pub(crate) fn crelu_shape(shape: &[usize]) -> Result<Vec<usize>> {
    if shape.len() < 2 {
        return Err(Error::bad_shape(
            "CReLU input",
            shape,
            "CReLU takes [n, channels, …]",
        ));
    }
    let mut out = shape.to_vec();
    out[1] = out[1]
        .checked_mul(2)
        .ok_or_else(|| Error::bad_shape("CReLU input", shape, "twice the channels overflow"))?;
    Ok(out)
}

/// One example's shape `[c, …]` after CReLU.
pub(crate) fn crelu_example_shape(shape: &[usize]) -> Result<Vec<usize>> {
    let batched: Vec<usize> = std::iter::once(1).chain(shape.iter().copied()).collect();
    Ok(crelu_shape(&batched)?[1..].to_vec())
}
