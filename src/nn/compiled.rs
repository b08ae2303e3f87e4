//! Running a network in the forms its weights are stored in: each Linear weight is
//! prepared once ([`CompiledLinear`]) for the kernel of its form — CSR for a sparse
//! weight, N:M for a semi-structured one, the int8 layer for 8-bit codes, the packed
//! codebook product for shared weights, the group product for int2–int8 groups, its
//! factor layers for a factorized one — instead of being decoded to a dense matrix.

use std::collections::HashMap;

use ndarray::{Array2, ArrayView2, Ix2, IxDyn};

use super::{Evaluation, Layer, Network, eval, graph};
use crate::encode::{Csr, NmSparse};
use crate::error::{Error, Result};
use crate::io::idx::Dataset;
use crate::lowrank::Factorization;
use crate::model::{Model, Param};
use crate::quant::{Decoding, Granularity, Levels, QuantizedLinear, QuantizedTensor};

/// Weights with at most this fraction kept run as CSR (or N:M); denser masks run dense.
const SPARSE_AT_MOST: f64 = 0.5;

/// A Linear weight `[out, in]` prepared for the kernel of the form it is stored in.
///
/// ```
/// use ndarray::{Array2, ArrayD, IxDyn};
/// use slimnn::nn::CompiledLinear;
/// use slimnn::prune::MagnitudePruner;
/// use slimnn::{Model, Selector};
///
/// let mut model = Model::new();
/// let w = ArrayD::from_shape_fn(IxDyn(&[8, 16]), |i| ((i[0] * 16 + i[1]) as f32 * 0.37).sin());
/// model.add("fc.weight", w)?;
/// model.prune(&Selector::all(), &MagnitudePruner::magnitude(0.75)?, &Default::default())?;
/// let layer = CompiledLinear::new(model.get("fc.weight")?)?;
/// assert_eq!(layer.form(), "CSR");
/// let x = Array2::from_elem((2, 16), 0.5f32);
/// let dense = x.dot(&model.get("fc.weight")?.effective().into_dimensionality::<ndarray::Ix2>().unwrap().t());
/// let y = layer.forward(x.view())?;
/// assert!((&y - &dense).iter().all(|d| d.abs() < 1e-5));
/// # Ok::<(), slimnn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct CompiledLinear {
    shape: [usize; 2],
    kernel: Kernel,
}

#[derive(Clone, Debug)]
enum Kernel {
    Dense(Array2<f32>),
    Csr(Csr),
    Nm(NmSparse),
    Int8(QuantizedLinear),
    Codebook {
        bits: u8,
        bytes: Vec<u8>,
        table: Vec<f32>,
    },
    Groups(QuantizedTensor),
    Factorized(Factorization),
}

impl CompiledLinear {
    /// Prepares the Linear weight `p` (2-D) for the kernel of its stored form:
    /// factorized → its factor layers; quantized to symmetric 8-bit codes → the int8
    /// layer; quantized in integer groups (unpruned) → the group product; a codebook of
    /// at most 256 entries (unpruned) → the packed codebook product; pruned to at most
    /// half kept → N:M where every group of 4 (or else 8) inputs keeps the same number
    /// (at most half), else CSR (values decoded once); anything else → dense.
    ///
    /// # Errors
    /// A weight that is not 2-D.
    pub fn new(p: &Param) -> Result<CompiledLinear> {
        let &[out, inputs] = p.shape() else {
            return Err(Error::bad_shape(
                format!("`{}`", p.name()),
                p.shape(),
                "a Linear weight [out, in]",
            ));
        };
        let shape = [out, inputs];
        let kernel = if let Some(f) = p.factorization() {
            Kernel::Factorized(f.clone())
        } else if let Some(k) = p.quantized().and_then(quantized_kernel) {
            k
        } else if let Some(k) = sparse_kernel(p, shape)? {
            k
        } else {
            Kernel::Dense(effective_2d(p)?)
        };
        Ok(CompiledLinear { shape, kernel })
    }

    /// `[out, in]`.
    pub fn shape(&self) -> [usize; 2] {
        self.shape
    }

    /// The kernel it runs: `"dense"`, `"CSR"`, `"N:M"`, `"int8"`, `"codebook"`,
    /// `"int groups"` or `"factorized"`.
    pub fn form(&self) -> &'static str {
        match self.kernel {
            Kernel::Dense(_) => "dense",
            Kernel::Csr(_) => "CSR",
            Kernel::Nm(_) => "N:M",
            Kernel::Int8(_) => "int8",
            Kernel::Codebook { .. } => "codebook",
            Kernel::Groups(_) => "int groups",
            Kernel::Factorized(_) => "factorized",
        }
    }

    /// `x Wᵀ` for `x` `[batch, in]`: `[batch, out]`.
    ///
    /// # Errors
    /// `x` without `in` columns.
    pub fn forward(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let [out, inputs] = self.shape;
        if x.ncols() != inputs {
            return Err(Error::ShapeMismatch {
                what: "Linear input [batch, in]".into(),
                expected: vec![x.nrows(), inputs],
                got: x.shape().to_vec(),
            });
        }
        let x = x.as_standard_layout();
        match &self.kernel {
            Kernel::Dense(w) => Ok(super::linear::forward(x.view(), w)),
            Kernel::Csr(c) => c.matmul(&x),
            Kernel::Nm(nm) => nm.matmul(&x),
            Kernel::Int8(l) => l.forward(&x),
            Kernel::Codebook { bits, bytes, table } => {
                crate::sparse_ops::packed_codebook_matmul([out, inputs], bytes, *bits, table, &x)
            }
            Kernel::Groups(q) => crate::quant::group_matmul(&x, q, None),
            Kernel::Factorized(f) => f
                .forward(&x.to_owned().into_dyn())?
                .into_dimensionality::<Ix2>()
                .map_err(|_| Error::bad_shape("factorized Linear output", &[out], "2-D")),
        }
    }
}

/// The kernel for a quantized weight, if one runs its codes directly.
fn quantized_kernel(q: &QuantizedTensor) -> Option<Kernel> {
    // Per-input divisors (AWQ) are not part of these kernels: such weights run decoded.
    if q.shape().len() != 2 || q.input_scales().is_some() {
        return None;
    }
    if let Ok(l) = QuantizedLinear::from_quantized(q, None) {
        return Some(Kernel::Int8(l));
    }
    if q.mask().is_some() {
        return None;
    }
    match q.decoding() {
        Decoding::Scalar {
            levels: Levels::Integers { .. },
            granularity: Granularity::PerGroup { .. },
            ..
        } => Some(Kernel::Groups(q.clone())),
        Decoding::Scalar {
            levels: Levels::Table(table),
            granularity: Granularity::PerTensor,
            scales,
            zero_points,
            ..
        } if zero_points.is_empty() && scales.len() == 1 && q.codes().bits() <= 8 => {
            Some(Kernel::Codebook {
                bits: q.codes().bits(),
                bytes: q.codes().bytes().to_vec(),
                table: table.iter().map(|&v| v * scales[0]).collect(),
            })
        }
        _ => None,
    }
}

/// N:M or CSR for a weight with at most [`SPARSE_AT_MOST`] of its entries nonzero.
fn sparse_kernel(p: &Param, shape: [usize; 2]) -> Result<Option<Kernel>> {
    let w = effective_2d(p)?;
    let values = w.as_slice().expect("standard layout");
    let kept = values.iter().filter(|&&v| v != 0.0).count();
    if kept as f64 > SPARSE_AT_MOST * values.len() as f64 {
        return Ok(None);
    }
    for m in [4usize, 8] {
        if !shape[1].is_multiple_of(m) {
            continue;
        }
        let most = values
            .chunks_exact(m)
            .map(|g| g.iter().filter(|&&v| v != 0.0).count())
            .max()
            .unwrap_or(0);
        // Only a weight pruned to the pattern (every group keeps `most`): a sparser
        // one runs better as CSR.
        if most > 0 && 2 * most <= m && kept == most * (values.len() / m) {
            return Ok(Some(Kernel::Nm(NmSparse::from_dense(
                values, shape, None, most, m,
            )?)));
        }
    }
    Ok(Some(Kernel::Csr(Csr::from_dense(values, shape, None)?)))
}

/// The weight as used (pruned entries 0, codes decoded), `[out, in]`.
fn effective_2d(p: &Param) -> Result<Array2<f32>> {
    p.effective()
        .into_dimensionality::<Ix2>()
        .map_err(|_| Error::bad_shape(format!("`{}`", p.name()), p.shape(), "2-D"))
}

/// A [`Network`] whose top-level Linear layers run in their stored forms
/// ([`Network::compile`]); every other layer runs as in [`Network::forward`].
#[derive(Clone, Debug)]
pub struct CompiledNetwork<'a> {
    network: &'a Network,
    model: &'a Model,
    linear: HashMap<String, CompiledLinear>,
}

impl Network {
    /// This network with the weights of `model`, its Linear layers prepared once for the
    /// kernels of their stored forms ([`CompiledLinear::new`]).
    ///
    /// # Errors
    /// A network that does not fit `model` (as [`Network::forward`] checks).
    pub fn compile<'a>(&'a self, model: &'a Model) -> Result<CompiledNetwork<'a>> {
        self.check(model)?;
        let mut linear = HashMap::new();
        for layer in &self.layers {
            if let Layer::Linear { weight, .. } = layer {
                linear.insert(weight.clone(), CompiledLinear::new(model.get(weight)?)?);
            }
        }
        Ok(CompiledNetwork {
            network: self,
            model,
            linear,
        })
    }
}

impl CompiledNetwork<'_> {
    /// The prepared Linear layers by weight name.
    pub fn linear_layers(&self) -> &HashMap<String, CompiledLinear> {
        &self.linear
    }

    /// Logits `[n, classes]` for a batch `[n, features]` (evaluation mode), as
    /// [`Network::forward`] gives them up to the rounding of the kernels' sums.
    pub fn forward(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let shape = self.network.check_input(self.model, x)?;
        let mut h = x
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&shape))
            .expect("the element count is checked");
        for (i, layer) in self.network.layers.iter().enumerate() {
            h = match layer {
                Layer::Linear { weight, bias } => {
                    let x = h.view().into_dimensionality::<Ix2>().expect("checked 2-D");
                    let mut y = self.linear[weight].forward(x)?;
                    if let Some(b) = bias {
                        y += &self
                            .model
                            .get(b)?
                            .effective()
                            .into_dimensionality::<ndarray::Ix1>()
                            .map_err(|_| Error::bad_shape(format!("`{b}`"), &[y.ncols()], "1-D"))?;
                    }
                    y.into_dyn()
                }
                _ => graph::forward(layer, self.model, h, graph::Mode::Eval, i, false)?.0,
            };
        }
        Ok(h.into_dimensionality::<Ix2>()
            .expect("checked [n, classes]"))
    }

    /// Accuracy and loss over a data set, in batches of `batch` examples.
    pub fn evaluate(&self, data: &Dataset, batch: usize) -> Result<Evaluation> {
        eval::evaluate_by(data, batch, |x| self.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Selector;
    use crate::prune::{MagnitudePruner, NmPruner, Statistics};
    use crate::quant::{KMeansInit, KMeansQuantizer, Scheme, UniformQuantizer};

    fn model() -> (Model, Network) {
        let mut model = Model::new();
        let net = Network::mlp(&mut model, &[32, 24, 8], 3).unwrap();
        (model, net)
    }

    fn agree(model: &Model, net: &Network, form: &str) {
        let c = net.compile(model).unwrap();
        assert!(
            c.linear_layers().values().all(|l| l.form() == form),
            "{form}"
        );
        let x = Array2::from_shape_fn((5, 32), |(i, j)| ((i * 32 + j) as f32 * 0.21).sin());
        let a = net.forward(model, x.view()).unwrap();
        let b = c.forward(x.view()).unwrap();
        let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = (&a - &b).iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(diff <= 1e-2 * scale, "{form}: {diff} vs {scale}");
    }

    #[test]
    fn every_form_runs_as_the_decoded_network() {
        let (m, net) = model();
        agree(&m, &net, "dense");
        let sel = Selector::kinds(&[crate::model::LayerKind::Linear]);
        let mut pruned = m.clone();
        pruned
            .prune(
                &sel,
                &MagnitudePruner::magnitude(0.8).unwrap(),
                &Statistics::new(),
            )
            .unwrap();
        agree(&pruned, &net, "CSR");
        let mut nm = m.clone();
        nm.prune(
            &sel,
            &NmPruner::magnitude(2, 4).unwrap(),
            &Statistics::new(),
        )
        .unwrap();
        agree(&nm, &net, "N:M");
        let mut q8 = m.clone();
        q8.quantize(
            &sel,
            &UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })
                .unwrap(),
        )
        .unwrap();
        agree(&q8, &net, "int8");
        let mut groups = m.clone();
        groups
            .quantize(
                &sel,
                &UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 8 })
                    .unwrap(),
            )
            .unwrap();
        agree(&groups, &net, "int groups");
        let mut shared = m.clone();
        shared
            .quantize(
                &sel,
                &KMeansQuantizer::lloyd(16, KMeansInit::Linear).unwrap(),
            )
            .unwrap();
        agree(&shared, &net, "codebook");
        let mut low = m.clone();
        low.factorize(
            &sel,
            &crate::lowrank::TruncatedSvd::new(crate::lowrank::Rank::Fixed(4)).unwrap(),
        )
        .unwrap();
        agree(&low, &net, "factorized");
    }
}
