//! [`Factorization`]: a weight as a product of smaller factors, and the chain of small
//! layers that computes the same function.

use ndarray::{Array2, Array4, ArrayD, ArrayRef, ArrayView2, Ix2, Ix4, IxDyn, s};

use crate::error::{Error, Result};
use crate::nn::{ConvSpec, conv2d};
use crate::quant::QuantizedTensor;

/// The factors of a low-rank weight.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Factors {
    /// A Linear weight `W ≈ A·B`, `A` `[out, r]`, `B` `[r, in]`: two Linear layers,
    /// `in → r → out`.
    Linear {
        /// `[out, r]`.
        a: Array2<f32>,
        /// `[r, in]`.
        b: Array2<f32>,
    },
    /// A Conv2d weight `[out, in, kh, kw]` in Tucker-2 form: `W ≈ core ×₁ U_out ×₂ U_in`,
    /// run as a 1×1 convolution `in → r_in`, the `kh×kw` core `r_in → r_out` (with the
    /// layer's stride and padding), and a 1×1 convolution `r_out → out`.
    Tucker2 {
        /// `[out, r_out]`.
        u_out: Array2<f32>,
        /// `[r_out, r_in, kh, kw]`.
        core: Array4<f32>,
        /// `[in, r_in]`.
        u_in: Array2<f32>,
    },
    /// A Conv2d weight in CP form: `W[o, c, y, x] ≈ Σ_r out[o, r]·input[c, r]·rows[y, r]·cols[x, r]`,
    /// run as four convolutions: 1×1 `in → R`, depthwise `kh×1`, depthwise `1×kw`, and
    /// 1×1 `R → out`.
    Cp {
        /// `[out, R]`.
        out: Array2<f32>,
        /// `[in, R]`.
        input: Array2<f32>,
        /// `[kh, R]`.
        rows: Array2<f32>,
        /// `[kw, R]`.
        cols: Array2<f32>,
    },
    /// A Conv2d weight as a vertical `kh×1` convolution `in → r` followed by a
    /// horizontal `1×kw` convolution `r → out`.
    Separable {
        /// `[r, in, kh, 1]`.
        vertical: Array4<f32>,
        /// `[out, r, 1, kw]`.
        horizontal: Array4<f32>,
    },
    /// A Conv2d weight `[out, in, kh, kw]` as a depthwise `kh×kw` convolution (one
    /// filter per input channel, with the layer's stride and padding) followed by a
    /// pointwise 1×1 convolution `in → out` (MobileNet's depthwise-separable pair):
    /// `W[o, c, y, x] ≈ pointwise[o, c, 0, 0]·depthwise[c, 0, y, x]`, rank 1 per input
    /// channel. Made by [`DepthwiseSeparable`](crate::filters::DepthwiseSeparable).
    DepthwiseSeparable {
        /// `[in, 1, kh, kw]`.
        depthwise: Array4<f32>,
        /// `[out, in, 1, 1]`.
        pointwise: Array4<f32>,
    },
    /// A Linear weight `[out, in]` as a tensor train (TT-matrix): with
    /// `out = Π m_k` and `in = Π n_k`, `W[(i₁…i_d), (j₁…j_d)] = G₁[i₁, j₁] ⋯ G_d[i_d, j_d]`,
    /// each `G_k` a `[r_{k−1}, m_k, n_k, r_k]` core (`r₀ = r_d = 1`).
    TensorTrain {
        /// The cores `[r_{k−1}, m_k, n_k, r_k]`.
        cores: Vec<Array4<f32>>,
    },
}

/// A low-rank approximation of a weight: its factors, the original shape, for
/// convolutions the stride and padding the layer runs with, and optionally each
/// factor's quantized form ([`Factorization::with_quantized_factors`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Factorization {
    shape: Vec<usize>,
    factors: Factors,
    spec: ConvSpec,
    error: Option<f64>,
    /// Each factor's quantized form, in the order of [`Factorization::factor_values`];
    /// empty for `f32` factors. The factors then hold the decoded values.
    quantized: Vec<QuantizedTensor>,
}

fn all_finite<'a>(mut values: impl Iterator<Item = &'a f32>) -> bool {
    values.all(|v| v.is_finite())
}

fn mismatch(what: &str, expected: &[usize], got: &[usize]) -> Error {
    Error::ShapeMismatch {
        what: what.into(),
        expected: expected.to_vec(),
        got: got.to_vec(),
    }
}

impl Factorization {
    /// Checks that the factors fit each other and the original `shape`.
    pub fn new(shape: &[usize], factors: Factors) -> Result<Factorization> {
        match &factors {
            Factors::Linear { a, b } => {
                if shape.len() != 2 {
                    return Err(Error::bad_shape(
                        "factorized weight",
                        shape,
                        "Linear factors need [out, in]",
                    ));
                }
                if a.nrows() != shape[0] || b.ncols() != shape[1] || a.ncols() != b.nrows() {
                    return Err(mismatch(
                        "Linear factors [out, r]·[r, in]",
                        &[shape[0], a.ncols(), b.nrows(), shape[1]],
                        &[a.nrows(), a.ncols(), b.nrows(), b.ncols()],
                    ));
                }
                if !all_finite(a.iter().chain(b.iter())) {
                    return Err(Error::invalid("factors", "non-finite", "finite values"));
                }
            }
            Factors::Tucker2 { u_out, core, u_in } => {
                let [o, c, kh, kw] = conv_shape(shape)?;
                let (ro, ri, ckh, ckw) = core.dim();
                if u_out.dim() != (o, ro) || u_in.dim() != (c, ri) || (ckh, ckw) != (kh, kw) {
                    return Err(mismatch(
                        "Tucker-2 factors",
                        &[o, ro, c, ri, kh, kw],
                        &[
                            u_out.nrows(),
                            u_out.ncols(),
                            u_in.nrows(),
                            u_in.ncols(),
                            ckh,
                            ckw,
                        ],
                    ));
                }
                if !all_finite(u_out.iter().chain(core.iter()).chain(u_in.iter())) {
                    return Err(Error::invalid("factors", "non-finite", "finite values"));
                }
            }
            Factors::Cp {
                out,
                input,
                rows,
                cols,
            } => {
                let [o, c, kh, kw] = conv_shape(shape)?;
                let r = out.ncols();
                if out.nrows() != o
                    || input.dim() != (c, r)
                    || rows.dim() != (kh, r)
                    || cols.dim() != (kw, r)
                    || r == 0
                {
                    return Err(mismatch(
                        "CP factors",
                        &[o, c, kh, kw, r],
                        &[
                            out.nrows(),
                            input.nrows(),
                            rows.nrows(),
                            cols.nrows(),
                            out.ncols(),
                        ],
                    ));
                }
                if !all_finite(
                    out.iter()
                        .chain(input.iter())
                        .chain(rows.iter())
                        .chain(cols.iter()),
                ) {
                    return Err(Error::invalid("factors", "non-finite", "finite values"));
                }
            }
            Factors::Separable {
                vertical,
                horizontal,
            } => {
                let [o, c, kh, kw] = conv_shape(shape)?;
                let (r, vc, vkh, vkw) = vertical.dim();
                let (ho, hr, hkh, hkw) = horizontal.dim();
                if (vc, vkh, vkw) != (c, kh, 1) || (ho, hr, hkh, hkw) != (o, r, 1, kw) {
                    return Err(mismatch(
                        "separable factors",
                        &[r, c, kh, 1, o, r, 1, kw],
                        &[r, vc, vkh, vkw, ho, hr, hkh, hkw],
                    ));
                }
                if !all_finite(vertical.iter().chain(horizontal.iter())) {
                    return Err(Error::invalid("factors", "non-finite", "finite values"));
                }
            }
            Factors::DepthwiseSeparable {
                depthwise,
                pointwise,
            } => {
                let [o, c, kh, kw] = conv_shape(shape)?;
                let (dc, d1, dkh, dkw) = depthwise.dim();
                let (po, pc, p1, p2) = pointwise.dim();
                if (dc, d1, dkh, dkw) != (c, 1, kh, kw) || (po, pc, p1, p2) != (o, c, 1, 1) {
                    return Err(mismatch(
                        "depthwise-separable factors",
                        &[c, 1, kh, kw, o, c, 1, 1],
                        &[dc, d1, dkh, dkw, po, pc, p1, p2],
                    ));
                }
                if !all_finite(depthwise.iter().chain(pointwise.iter())) {
                    return Err(Error::invalid("factors", "non-finite", "finite values"));
                }
            }
            Factors::TensorTrain { cores } => {
                if shape.len() != 2 || cores.is_empty() {
                    return Err(Error::bad_shape(
                        "tensor-train weight",
                        shape,
                        "a Linear [out, in] and at least one core",
                    ));
                }
                let mut prev = 1;
                let (mut m, mut n) = (1usize, 1usize);
                for (k, g) in cores.iter().enumerate() {
                    let (r0, mk, nk, r1) = g.dim();
                    if r0 != prev || mk == 0 || nk == 0 || r1 == 0 {
                        return Err(mismatch(&format!("tensor-train core {k}"), &[prev], &[r0]));
                    }
                    m = m.saturating_mul(mk);
                    n = n.saturating_mul(nk);
                    prev = r1;
                    if !all_finite(g.iter()) {
                        return Err(Error::invalid("factors", "non-finite", "finite values"));
                    }
                }
                if prev != 1 || (m, n) != (shape[0], shape[1]) {
                    return Err(mismatch(
                        "tensor-train modes (Π m, Π n, last rank)",
                        &[shape[0], shape[1], 1],
                        &[m, n, prev],
                    ));
                }
            }
        }
        Ok(Factorization {
            shape: shape.to_vec(),
            factors,
            spec: ConvSpec::default(),
            error: None,
            quantized: Vec::new(),
        })
    }

    /// The factors quantized: `quantized` holds one quantized form per factor, in the
    /// order of [`Factorization::factor_values`] and of the same shapes (e.g. each
    /// factor quantized to int8 per row), and the factors take their decoded values.
    /// The factorization is then stored as the codes ([`crate::store`]). The recorded
    /// relative error stays the low-rank method's (before quantization).
    ///
    /// ```
    /// use ndarray::{Array, IxDyn};
    /// use slimnn::lowrank::{LowRank, LowRankContext, Rank, TruncatedSvd};
    /// use slimnn::quant::{Granularity, Quantizer, Scheme, UniformQuantizer};
    ///
    /// let w = Array::from_shape_fn(IxDyn(&[32, 24]), |i| ((i[0] * 24 + i[1]) as f32 * 0.3).sin());
    /// let f = TruncatedSvd::new(Rank::Fixed(4))?.factorize(&w, &LowRankContext::new())?;
    /// let int8 = UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })?;
    /// let codes = f
    ///     .factor_values()
    ///     .iter()
    ///     .map(|v| int8.quantize(v, &Default::default()))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// let q = f.clone().with_quantized_factors(codes)?;
    /// assert_eq!(q.quantized_factors().unwrap().len(), 2);
    /// let (a, b) = (f.reconstruct(), q.reconstruct());
    /// let err = (&a - &b).mapv(|v| v * v).sum().sqrt() / a.mapv(|v| v * v).sum().sqrt();
    /// assert!(err < 0.02, "{err}");
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn with_quantized_factors(
        mut self,
        quantized: Vec<QuantizedTensor>,
    ) -> Result<Factorization> {
        let values = quantized.iter().map(|q| q.dequantize::<f32>()).collect();
        let error = self.error;
        self.quantized.clear();
        self.set_factor_values(values)?;
        self.error = error;
        self.quantized = quantized;
        Ok(self)
    }

    /// Each factor's quantized form, in the order of [`Factorization::factor_values`],
    /// if the factors are quantized.
    pub fn quantized_factors(&self) -> Option<&[QuantizedTensor]> {
        (!self.quantized.is_empty()).then_some(self.quantized.as_slice())
    }

    /// Records the relative error `‖W − Ŵ‖_F / ‖W‖_F` the method reached.
    pub fn with_error(mut self, error: f64) -> Factorization {
        self.error = Some(error);
        self
    }

    /// `‖W − Ŵ‖_F / ‖W‖_F`, as the method that made the factorization measured it
    /// (`None` for factors built by hand).
    pub fn relative_error(&self) -> Option<f64> {
        self.error
    }

    /// The stride and padding a convolution runs with (stride ≥ 1, groups 1).
    pub fn with_conv_spec(mut self, spec: ConvSpec) -> Result<Factorization> {
        if spec.groups != 1 {
            return Err(Error::invalid(
                "groups",
                spec.groups,
                "1 (grouped convolutions are not factorized)",
            ));
        }
        if spec.stride.0 == 0 || spec.stride.1 == 0 {
            return Err(Error::invalid(
                "stride",
                format!("{:?}", spec.stride),
                "at least 1 in each direction",
            ));
        }
        self.spec = spec;
        Ok(self)
    }

    /// The original weight's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The factors.
    pub fn factors(&self) -> &Factors {
        &self.factors
    }

    /// The convolution's stride and padding.
    pub fn conv_spec(&self) -> ConvSpec {
        self.spec
    }

    /// The rank(s): `[r]` for Linear, CP and separable forms, `[r_out, r_in]` for
    /// Tucker-2, `[1]` (per input channel) for depthwise-separable, the inner ranks
    /// `[r₁, …, r_{d−1}]` of a tensor train.
    pub fn ranks(&self) -> Vec<usize> {
        match &self.factors {
            Factors::Linear { a, .. } => vec![a.ncols()],
            Factors::Tucker2 { core, .. } => vec![core.dim().0, core.dim().1],
            Factors::Cp { out, .. } => vec![out.ncols()],
            Factors::Separable { vertical, .. } => vec![vertical.dim().0],
            Factors::DepthwiseSeparable { .. } => vec![1],
            Factors::TensorTrain { cores } => {
                cores[..cores.len() - 1].iter().map(|g| g.dim().3).collect()
            }
        }
    }

    /// Parameters in the factors.
    pub fn params(&self) -> usize {
        match &self.factors {
            Factors::Linear { a, b } => a.len() + b.len(),
            Factors::Tucker2 { u_out, core, u_in } => u_out.len() + core.len() + u_in.len(),
            Factors::Cp {
                out,
                input,
                rows,
                cols,
            } => out.len() + input.len() + rows.len() + cols.len(),
            Factors::Separable {
                vertical,
                horizontal,
            } => vertical.len() + horizontal.len(),
            Factors::DepthwiseSeparable {
                depthwise,
                pointwise,
            } => depthwise.len() + pointwise.len(),
            Factors::TensorTrain { cores } => cores.iter().map(|g| g.len()).sum(),
        }
    }

    /// Parameters of the dense weight.
    pub fn dense_params(&self) -> usize {
        self.shape.iter().product()
    }

    /// Multiply-adds per output position of the factorized layers: per input row of a
    /// Linear layer, per output pixel of a convolution (counting each stage at the
    /// resolution it runs at, stride 1 stages at the output's).
    pub fn flops(&self) -> usize {
        match &self.factors {
            Factors::Linear { a, b } => a.len() + b.len(),
            Factors::Tucker2 { u_out, core, u_in } => {
                // The 1×1 input stage runs at the input resolution: stride² as many positions.
                let (sh, sw) = self.spec.stride;
                u_in.len() * sh * sw + core.len() + u_out.len()
            }
            Factors::Cp {
                out,
                input,
                rows,
                cols,
            } => {
                let (sh, sw) = self.spec.stride;
                input.len() * sh * sw + rows.len() * sw + cols.len() + out.len()
            }
            Factors::Separable {
                vertical,
                horizontal,
            } => vertical.len() * self.spec.stride.1 + horizontal.len(),
            // The depthwise stage carries the stride: both run at the output resolution.
            Factors::DepthwiseSeparable {
                depthwise,
                pointwise,
            } => depthwise.len() + pointwise.len(),
            Factors::TensorTrain { cores } => tt_flops(cores),
        }
    }

    /// Multiply-adds per output position of the dense layer.
    pub fn dense_flops(&self) -> usize {
        self.dense_params()
    }

    /// The dense weight the factors stand for, in standard (row-major) layout.
    pub fn reconstruct(&self) -> ArrayD<f32> {
        let w = self.reconstruct_any_layout();
        if w.is_standard_layout() {
            w
        } else {
            w.as_standard_layout().into_owned()
        }
    }

    fn reconstruct_any_layout(&self) -> ArrayD<f32> {
        match &self.factors {
            Factors::Linear { a, b } => a.dot(b).into_dyn(),
            Factors::Tucker2 { u_out, core, u_in } => {
                // core ×₂ U_in, one output-rank slice at a time: [r_out, in·k]; then ×₁ U_out.
                let (ro, ri, kh, kw) = core.dim();
                let (c, k) = (u_in.nrows(), kh * kw);
                let mut step = Array2::<f32>::zeros((ro, c * k));
                for (o, slice) in core.outer_iter().enumerate() {
                    let mixed = u_in.dot(&slice.to_shape((ri, k)).expect("same size"));
                    step.row_mut(o)
                        .assign(&mixed.to_shape(c * k).expect("same size"));
                }
                reshaped(u_out.dot(&step), &self.shape)
            }
            Factors::Cp {
                out,
                input,
                rows,
                cols,
            } => {
                let [o, c, kh, kw] = [self.shape[0], self.shape[1], self.shape[2], self.shape[3]];
                let kr = cp_khatri_rao(input, rows, cols);
                reshaped(out.dot(&kr.t()), &[o, c, kh, kw])
            }
            Factors::Separable {
                vertical,
                horizontal,
            } => {
                let (r, c, kh, _) = vertical.dim();
                let (o, _, _, kw) = horizontal.dim();
                let v = vertical
                    .to_shape((r, c * kh))
                    .expect("contiguous")
                    .to_owned();
                let mut w = Array4::<f32>::zeros((o, c, kh, kw));
                for x in 0..kw {
                    let h: ArrayView2<f32> = horizontal.slice(s![.., .., 0, x]); // [o, r]
                    let part: Array2<f32> = h.dot(&v);
                    w.slice_mut(s![.., .., .., x])
                        .assign(&part.to_shape((o, c, kh)).expect("same size"));
                }
                w.into_dyn()
            }
            Factors::DepthwiseSeparable {
                depthwise,
                pointwise,
            } => {
                let (c, _, kh, kw) = depthwise.dim();
                let o = pointwise.dim().0;
                Array4::from_shape_fn((o, c, kh, kw), |(oi, ci, y, x)| {
                    pointwise[[oi, ci, 0, 0]] * depthwise[[ci, 0, y, x]]
                })
                .into_dyn()
            }
            Factors::TensorTrain { cores } => {
                tt_dense(cores, self.shape[0], self.shape[1]).into_dyn()
            }
        }
    }

    /// The factorized layer's output for an input batch: `[n, in]` for Linear forms,
    /// `[n, in, h, w]` for convolutions (with the stride and padding of
    /// [`Factorization::with_conv_spec`]). Equals the dense layer's output with the
    /// reconstructed weight, up to rounding; no bias (add the layer's own).
    pub fn forward(&self, x: &ArrayRef<f32, IxDyn>) -> Result<ArrayD<f32>> {
        let conv_input = || -> Result<ndarray::ArrayView4<'_, f32>> {
            let v = x.view().into_dimensionality::<Ix4>().map_err(|_| {
                Error::bad_shape(
                    "input batch",
                    x.shape(),
                    "a convolution takes [n, in, h, w]",
                )
            })?;
            if v.dim().1 != self.shape[1] {
                return Err(mismatch("input channels", &[self.shape[1]], &[v.dim().1]));
            }
            Ok(v)
        };
        let (sh, sw) = self.spec.stride;
        let (ph, pw) = self.spec.padding;
        let one = ConvSpec::new();
        // A matrix as the weight of a 1×1 convolution.
        let as4 = |m: ArrayView2<'_, f32>| {
            m.as_standard_layout()
                .into_owned()
                .into_shape_with_order((m.nrows(), m.ncols(), 1, 1))
                .expect("standard layout")
        };
        Ok(match &self.factors {
            Factors::Linear { a, b } => {
                let v = x.view().into_dimensionality::<Ix2>().map_err(|_| {
                    Error::bad_shape("input batch", x.shape(), "a Linear layer takes [n, in]")
                })?;
                if v.ncols() != b.ncols() {
                    return Err(mismatch("input features", &[b.ncols()], &[v.ncols()]));
                }
                v.dot(&b.t()).dot(&a.t()).into_dyn()
            }
            Factors::TensorTrain { cores } => {
                let v = x.view().into_dimensionality::<Ix2>().map_err(|_| {
                    Error::bad_shape("input batch", x.shape(), "a Linear layer takes [n, in]")
                })?;
                if v.ncols() != self.shape[1] {
                    return Err(mismatch("input features", &[self.shape[1]], &[v.ncols()]));
                }
                tt_forward(cores, v, self.shape[0]).into_dyn()
            }
            Factors::Tucker2 { u_out, core, u_in } => {
                let v = conv_input()?;
                let h = conv2d(&v, &as4(u_in.t()), None, one)?;
                let h = conv2d(&h, core, None, self.spec)?;
                conv2d(&h, &as4(u_out.view()), None, one)?.into_dyn()
            }
            Factors::Cp {
                out,
                input,
                rows,
                cols,
            } => {
                let v = conv_input()?;
                let r = out.ncols();
                let h = conv2d(&v, &as4(input.t()), None, one)?;
                let vertical = as4(rows.t())
                    .into_shape_with_order((r, 1, rows.nrows(), 1))
                    .expect("r × kh");
                let h = conv2d(
                    &h,
                    &vertical,
                    None,
                    ConvSpec::new()
                        .with_stride(sh, 1)
                        .with_padding(ph, 0)
                        .with_groups(r),
                )?;
                let horizontal = as4(cols.t())
                    .into_shape_with_order((r, 1, 1, cols.nrows()))
                    .expect("r × kw");
                let h = conv2d(
                    &h,
                    &horizontal,
                    None,
                    ConvSpec::new()
                        .with_stride(1, sw)
                        .with_padding(0, pw)
                        .with_groups(r),
                )?;
                conv2d(&h, &as4(out.view()), None, one)?.into_dyn()
            }
            Factors::Separable {
                vertical,
                horizontal,
            } => {
                let v = conv_input()?;
                let h = conv2d(
                    &v,
                    vertical,
                    None,
                    ConvSpec::new().with_stride(sh, 1).with_padding(ph, 0),
                )?;
                conv2d(
                    &h,
                    horizontal,
                    None,
                    ConvSpec::new().with_stride(1, sw).with_padding(0, pw),
                )?
                .into_dyn()
            }
            Factors::DepthwiseSeparable {
                depthwise,
                pointwise,
            } => {
                let v = conv_input()?;
                let depth = ConvSpec {
                    groups: depthwise.dim().0,
                    ..self.spec
                };
                let h = conv2d(&v, depthwise, None, depth)?;
                conv2d(&h, pointwise, None, one)?.into_dyn()
            }
        })
    }
}

/// The Khatri–Rao product of a CP form's input and spatial factors,
/// `[in·kh·kw, R]` with rows in `(c, y, x)` order: the reconstruction is `out · KRᵀ`.
pub(super) fn cp_khatri_rao(
    input: &Array2<f32>,
    rows: &Array2<f32>,
    cols: &Array2<f32>,
) -> Array2<f32> {
    let (c, r) = input.dim();
    let (kh, kw) = (rows.nrows(), cols.nrows());
    let mut kr = Array2::<f32>::zeros((c * kh * kw, r));
    for ci in 0..c {
        for y in 0..kh {
            for x in 0..kw {
                let mut row = kr.row_mut((ci * kh + y) * kw + x);
                for j in 0..r {
                    row[j] = input[[ci, j]] * rows[[y, j]] * cols[[x, j]];
                }
            }
        }
    }
    kr
}

/// A product's result in the weight's shape (products may come out column-major).
fn reshaped(a: Array2<f32>, shape: &[usize]) -> ArrayD<f32> {
    a.to_shape(IxDyn(shape)).expect("same size").into_owned()
}

fn conv_shape(shape: &[usize]) -> Result<[usize; 4]> {
    match shape {
        &[o, c, kh, kw] => Ok([o, c, kh, kw]),
        _ => Err(Error::bad_shape(
            "factorized weight",
            shape,
            "convolution factors need [out, in, kh, kw]",
        )),
    }
}

/// The dense `[Π m, Π n]` matrix of a tensor train: the forward pass of the identity
/// gives `Wᵀ`.
fn tt_dense(cores: &[Array4<f32>], rows: usize, cols: usize) -> Array2<f32> {
    let eye = Array2::<f32>::eye(cols);
    tt_forward(cores, eye.view(), rows)
        .reversed_axes()
        .as_standard_layout()
        .into_owned()
}

/// `x Wᵀ` for a tensor-train `W`, core by core, never forming `W`: one matrix product
/// per core.
fn tt_forward(
    cores: &[Array4<f32>],
    x: ndarray::ArrayView2<'_, f32>,
    out_features: usize,
) -> Array2<f32> {
    let batch = x.nrows();
    let ns: Vec<usize> = cores.iter().map(|g| g.dim().2).collect();
    // After k cores, `t` holds per sample the indices (i₁…i_k, j_{k+1}…j_d, r_k) in
    // row-major order; it starts as (j₁…j_d, r₀ = 1).
    let mut t = x
        .as_standard_layout()
        .into_owned()
        .into_raw_vec_and_offset()
        .0;
    let mut done_out = 1usize;
    for (k, g) in cores.iter().enumerate() {
        let (r0, m, n, r1) = g.dim();
        let rest: usize = ns[k + 1..].iter().product();
        let p = batch * done_out;
        // [p, n, rest, r0] → [p, rest, n, r0] → [(p rest), (n r0)] · [(n r0), (m r1)]
        let lhs = ndarray::Array4::from_shape_vec((p, n, rest, r0), t)
            .expect("state size")
            .permuted_axes([0, 2, 1, 3])
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((p * rest, n * r0))
            .expect("contiguous");
        let gk = g
            .view()
            .permuted_axes([2, 0, 1, 3])
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((n * r0, m * r1))
            .expect("contiguous");
        // [p, rest, m, r1] → [p, m, rest, r1]
        t = lhs
            .dot(&gk)
            .into_shape_with_order((p, rest, m, r1))
            .expect("contiguous")
            .permuted_axes([0, 2, 1, 3])
            .as_standard_layout()
            .into_owned()
            .into_raw_vec_and_offset()
            .0;
        done_out *= m;
    }
    Array2::from_shape_vec((batch, out_features), t).expect("batch × out")
}

/// Multiply-adds per sample of [`tt_forward`].
fn tt_flops(cores: &[Array4<f32>]) -> usize {
    let ns: Vec<usize> = cores.iter().map(|g| g.dim().2).collect();
    let mut done_out = 1usize;
    let mut total = 0usize;
    for (k, g) in cores.iter().enumerate() {
        let (r0, m, n, r1) = g.dim();
        let rest: usize = ns[k + 1..].iter().product();
        total += done_out * rest * (n * r0) * (m * r1);
        done_out *= m;
    }
    total
}
