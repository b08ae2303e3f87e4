//! Fine-tuning factors: the gradient of each factor from the gradient of the dense
//! weight they reconstruct (the chain rule through the multilinear product), and the
//! factors as plain arrays to update.

use ndarray::{Array2, Array3, Array4, ArrayD, ArrayView2, ArrayViewD, Ix2, Ix4, IxDyn, s};

use super::factorization::cp_khatri_rao;
use super::{Factorization, Factors};
use crate::error::{Error, Result};
use crate::tensor::check_same_shape;

impl Factorization {
    /// `∂L/∂F_k` for every factor `F_k`, given `∂L/∂W` for the reconstructed weight `W`
    /// (in the order of [`Factorization::factor_values`]). The reconstruction is linear
    /// in each factor, so each gradient is the adjoint of that map applied to `∂L/∂W`:
    /// for `W = A·B`, `∂L/∂A = G·Bᵀ` and `∂L/∂B = Aᵀ·G`; Tucker-2, CP, separable and
    /// tensor-train factors contract `G` with all the other factors alike.
    ///
    /// Fine-tuning a factorized network this way (as Denton et al. 2014, Kim et al. 2016
    /// and Novikov et al. 2015 do after decomposing) is what [`Sgd`](crate::nn::Sgd)
    /// does for factorized parameters.
    ///
    /// ```
    /// use ndarray::{array, Array2};
    /// use slimnn::lowrank::{Factorization, Factors};
    ///
    /// let a = array![[1.0f32], [2.0]];
    /// let b = array![[3.0f32, 4.0, 5.0]];
    /// let f = Factorization::new(&[2, 3], Factors::Linear { a, b })?;
    /// let g = Array2::<f32>::ones((2, 3)).into_dyn();
    /// let grads = f.factor_gradients(&g)?;
    /// assert_eq!(grads[0], array![[12.0f32], [12.0]].into_dyn()); // G·Bᵀ
    /// assert_eq!(grads[1], array![[3.0f32, 3.0, 3.0]].into_dyn()); // Aᵀ·G
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    pub fn factor_gradients(&self, dense_grad: &ArrayD<f32>) -> Result<Vec<ArrayD<f32>>> {
        let shape = self.shape();
        check_same_shape(shape, dense_grad.shape(), || {
            "gradient of a factorized weight".into()
        })?;
        let g = dense_grad.as_standard_layout();
        let g = g.view();
        Ok(match self.factors() {
            Factors::Linear { a, b } => {
                let g = as_matrix(g, shape[0], shape[1]);
                vec![g.dot(&b.t()).into_dyn(), a.t().dot(&g).into_dyn()]
            }
            Factors::Tucker2 { u_out, core, u_in } => {
                let (ro, ri, kh, kw) = core.dim();
                let (c, k) = (u_in.nrows(), kh * kw);
                let g1 = as_matrix(g, shape[0], c * k); // [out, in·k]
                // core ×₂ U_in, unfolded on the first mode: [r_out, in·k].
                let mut mixed_in = Array2::<f32>::zeros((ro, c * k));
                for (p, slice) in core.outer_iter().enumerate() {
                    let m = u_in.dot(&slice.to_shape((ri, k)).expect("contiguous"));
                    mixed_in
                        .row_mut(p)
                        .assign(&m.to_shape(c * k).expect("same size"));
                }
                let d_out = g1.dot(&mixed_in.t());
                // Uₒᵤₜᵀ·G: [r_out, in·k]; then per output rank, contract the input mode.
                let m = u_out.t().dot(&g1);
                let mut d_core = Array4::<f32>::zeros((ro, ri, kh, kw));
                let mut d_in = Array2::<f32>::zeros((c, ri));
                for p in 0..ro {
                    let mp = m.row(p);
                    let mp = mp.to_shape((c, k)).expect("same size");
                    d_core
                        .slice_mut(s![p, .., .., ..])
                        .assign(&u_in.t().dot(&mp).to_shape((ri, kh, kw)).expect("size"));
                    let cp = core.slice(s![p, .., .., ..]);
                    let cp = cp.to_shape((ri, k)).expect("same size");
                    d_in += &mp.dot(&cp.t());
                }
                vec![d_out.into_dyn(), d_core.into_dyn(), d_in.into_dyn()]
            }
            Factors::Cp {
                out,
                input,
                rows,
                cols,
            } => {
                let [o, c, kh, kw] = [shape[0], shape[1], shape[2], shape[3]];
                let r = out.ncols();
                let g1 = as_matrix(g, o, c * kh * kw);
                let d_out = g1.dot(&cp_khatri_rao(input, rows, cols));
                let m = g1.t().dot(out); // [in·kh·kw, R]: G contracted with the output factor
                let (mut d_input, mut d_rows, mut d_cols) = (
                    Array2::<f32>::zeros((c, r)),
                    Array2::<f32>::zeros((kh, r)),
                    Array2::<f32>::zeros((kw, r)),
                );
                for ((ci, y, x), mrow) in indices(c, kh, kw).zip(m.rows()) {
                    for j in 0..r {
                        let v = mrow[j];
                        d_input[[ci, j]] += v * rows[[y, j]] * cols[[x, j]];
                        d_rows[[y, j]] += v * input[[ci, j]] * cols[[x, j]];
                        d_cols[[x, j]] += v * input[[ci, j]] * rows[[y, j]];
                    }
                }
                vec![
                    d_out.into_dyn(),
                    d_input.into_dyn(),
                    d_rows.into_dyn(),
                    d_cols.into_dyn(),
                ]
            }
            Factors::Separable {
                vertical,
                horizontal,
            } => {
                // W[o, c, y, x] = Σ_r H[o, r, 0, x]·V[r, c, y, 0], one product per column x.
                let (r, c, kh, _) = vertical.dim();
                let (o, _, _, kw) = horizontal.dim();
                let v = vertical.to_shape((r, c * kh)).expect("contiguous");
                let g4 = g
                    .view()
                    .into_dimensionality::<Ix4>()
                    .expect("shape checked");
                let mut d_h = Array4::<f32>::zeros((o, r, 1, kw));
                let mut d_v = Array2::<f32>::zeros((r, c * kh));
                for x in 0..kw {
                    let gx = g4.slice(s![.., .., .., x]);
                    let gx = gx.to_shape((o, c * kh)).expect("same size");
                    d_h.slice_mut(s![.., .., 0, x]).assign(&gx.dot(&v.t()));
                    let hx: ArrayView2<f32> = horizontal.slice(s![.., .., 0, x]);
                    d_v += &hx.t().dot(&gx);
                }
                vec![
                    d_v.into_shape_with_order((r, c, kh, 1))
                        .expect("same size")
                        .into_dyn(),
                    d_h.into_dyn(),
                ]
            }
            Factors::DepthwiseSeparable {
                depthwise,
                pointwise,
            } => {
                // W[o, c, y, x] = P[o, c]·D[c, y, x].
                let g4 = g
                    .view()
                    .into_dimensionality::<Ix4>()
                    .expect("shape checked");
                let (c, _, kh, kw) = depthwise.dim();
                let o = pointwise.dim().0;
                let mut d_d = Array4::<f32>::zeros((c, 1, kh, kw));
                let mut d_p = Array4::<f32>::zeros((o, c, 1, 1));
                for ((oi, ci, y, x), &gv) in g4.indexed_iter() {
                    d_p[[oi, ci, 0, 0]] += gv * depthwise[[ci, 0, y, x]];
                    d_d[[ci, 0, y, x]] += gv * pointwise[[oi, ci, 0, 0]];
                }
                vec![d_d.into_dyn(), d_p.into_dyn()]
            }
            Factors::TensorTrain { cores } => tt_gradients(cores, g, shape[0], shape[1]),
        })
    }

    /// The factors as arrays, in a fixed order: `[A, B]` (Linear), `[U_out, core, U_in]`
    /// (Tucker-2), `[out, input, rows, cols]` (CP), `[vertical, horizontal]` (separable),
    /// `[depthwise, pointwise]` (depthwise-separable), the cores (tensor train).
    pub fn factor_values(&self) -> Vec<ArrayD<f32>> {
        match self.factors() {
            Factors::Linear { a, b } => vec![a.clone().into_dyn(), b.clone().into_dyn()],
            Factors::Tucker2 { u_out, core, u_in } => vec![
                u_out.clone().into_dyn(),
                core.clone().into_dyn(),
                u_in.clone().into_dyn(),
            ],
            Factors::Cp {
                out,
                input,
                rows,
                cols,
            } => [out, input, rows, cols]
                .into_iter()
                .map(|f| f.clone().into_dyn())
                .collect(),
            Factors::Separable {
                vertical,
                horizontal,
            } => vec![vertical.clone().into_dyn(), horizontal.clone().into_dyn()],
            Factors::DepthwiseSeparable {
                depthwise,
                pointwise,
            } => vec![depthwise.clone().into_dyn(), pointwise.clone().into_dyn()],
            Factors::TensorTrain { cores } => cores.iter().map(|c| c.clone().into_dyn()).collect(),
        }
    }

    /// Replaces the factors by `values` of the same shapes, in the order of
    /// [`Factorization::factor_values`] (e.g. after a fine-tuning step). The recorded
    /// approximation error no longer applies and is dropped. Quantized factors are
    /// refused (their codes would no longer match the values; see
    /// [`Factorization::with_quantized_factors`]).
    pub fn set_factor_values(&mut self, values: Vec<ArrayD<f32>>) -> Result<()> {
        if self.quantized_factors().is_some() {
            return Err(Error::invalid(
                "factors",
                "quantized",
                "f32 factors (new values would not match the codes: quantize again with \
                 Factorization::with_quantized_factors)",
            ));
        }
        let old = self.factor_values();
        if values.len() != old.len() {
            return Err(Error::ShapeMismatch {
                what: "number of factors".into(),
                expected: vec![old.len()],
                got: vec![values.len()],
            });
        }
        for (k, (new, old)) in values.iter().zip(&old).enumerate() {
            check_same_shape(old.shape(), new.shape(), || format!("factor {k}"))?;
        }
        let mut it = values.into_iter();
        let it = &mut it;
        let factors = match self.factors() {
            Factors::Linear { .. } => Factors::Linear {
                a: take2(it),
                b: take2(it),
            },
            Factors::Tucker2 { .. } => Factors::Tucker2 {
                u_out: take2(it),
                core: take4(it),
                u_in: take2(it),
            },
            Factors::Cp { .. } => Factors::Cp {
                out: take2(it),
                input: take2(it),
                rows: take2(it),
                cols: take2(it),
            },
            Factors::Separable { .. } => Factors::Separable {
                vertical: take4(it),
                horizontal: take4(it),
            },
            Factors::DepthwiseSeparable { .. } => Factors::DepthwiseSeparable {
                depthwise: take4(it),
                pointwise: take4(it),
            },
            Factors::TensorTrain { .. } => Factors::TensorTrain {
                cores: it.map(into4).collect(),
            },
        };
        let spec = self.conv_spec();
        *self = Factorization::new(self.shape(), factors)?.with_conv_spec(spec)?;
        Ok(())
    }
}

fn into4(v: ArrayD<f32>) -> Array4<f32> {
    v.into_dimensionality::<Ix4>().expect("shape checked")
}

fn take4(it: &mut impl Iterator<Item = ArrayD<f32>>) -> Array4<f32> {
    into4(it.next().expect("count checked"))
}

fn take2(it: &mut impl Iterator<Item = ArrayD<f32>>) -> Array2<f32> {
    let v = it.next().expect("count checked");
    v.into_dimensionality::<Ix2>().expect("shape checked")
}

fn as_matrix(g: ArrayViewD<'_, f32>, rows: usize, cols: usize) -> ArrayView2<'_, f32> {
    g.into_shape_with_order((rows, cols))
        .expect("a standard-layout gradient of the checked shape")
}

/// `(c, y, x)` in row-major order.
fn indices(c: usize, kh: usize, kw: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..c).flat_map(move |ci| (0..kh).flat_map(move |y| (0..kw).map(move |x| (ci, y, x))))
}

/// Tensor-train core gradients: with `L_k` the product of the cores before `k` (a
/// `[M_<, N_<, r_{k−1}]` TT-matrix with its last rank open) and `R_k` the product of
/// those after (`[r_k, M_>, N_>]`),
/// `∂L/∂G_k[a, m, n, b] = Σ L_k[I_<, J_<, a] · G[(I_<, m, I_>), (J_<, n, J_>)] · R_k[b, I_>, J_>]`.
fn tt_gradients(
    cores: &[Array4<f32>],
    g: ArrayViewD<'_, f32>,
    rows: usize,
    cols: usize,
) -> Vec<ArrayD<f32>> {
    let d = cores.len();
    // lefts[k]: cores 0..k; rights[k]: cores k+1..d.
    let mut lefts = vec![Array3::<f32>::ones((1, 1, 1))];
    for core in &cores[..d - 1] {
        let l = lefts.last().expect("starts with one");
        let (lm, ln, ra) = l.dim();
        let (_, m, n, rb) = core.dim();
        let t = l
            .to_shape((lm * ln, ra))
            .expect("contiguous")
            .dot(&core.to_shape((ra, m * n * rb)).expect("contiguous"));
        let t = t
            .into_shape_with_order((lm, ln, m, n, rb))
            .expect("same size")
            .permuted_axes([0, 2, 1, 3, 4])
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((lm * m, ln * n, rb))
            .expect("contiguous");
        lefts.push(t);
    }
    let mut rights = vec![Array3::<f32>::ones((1, 1, 1))];
    for core in cores[1..].iter().rev() {
        let r = rights.last().expect("starts with one");
        let (rb, rm, rn) = r.dim();
        let (ra, m, n, _) = core.dim();
        let t = core
            .to_shape((ra * m * n, rb))
            .expect("contiguous")
            .dot(&r.to_shape((rb, rm * rn)).expect("contiguous"));
        let t = t
            .into_shape_with_order((ra, m, n, rm, rn))
            .expect("same size")
            .permuted_axes([0, 1, 3, 2, 4])
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((ra, m * rm, n * rn))
            .expect("contiguous");
        rights.push(t);
    }
    rights.reverse();
    cores
        .iter()
        .enumerate()
        .map(|(k, core)| {
            let (ra, m, n, rb) = core.dim();
            let (l, r) = (&lefts[k], &rights[k]);
            let (ml, nl) = (l.dim().0, l.dim().1);
            let (mr, nr) = (r.dim().1, r.dim().2);
            debug_assert_eq!((ml * m * mr, nl * n * nr), (rows, cols));
            // G as [M_<, m, M_>, N_<, n, N_>] → [(M_<, N_<), (m, n, M_>, N_>)].
            let g6 = g
                .view()
                .into_shape_with_order(IxDyn(&[ml, m, mr, nl, n, nr]))
                .expect("same size")
                .permuted_axes(IxDyn(&[0, 3, 1, 4, 2, 5]))
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((ml * nl, m * n * mr * nr))
                .expect("contiguous");
            let t = l.to_shape((ml * nl, ra)).expect("contiguous").t().dot(&g6); // [a, (m, n, M_>, N_>)]
            let t = t
                .into_shape_with_order((ra * m * n, mr * nr))
                .expect("contiguous");
            let rt = r.to_shape((rb, mr * nr)).expect("contiguous");
            t.dot(&rt.t())
                .into_shape_with_order((ra, m, n, rb))
                .expect("same size")
                .into_dyn()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    fn wave(shape: &[usize], seed: f32) -> ArrayD<f32> {
        let n: usize = shape.iter().product();
        Array1::from_iter((0..n).map(|i| ((i as f32 + seed) * 0.731).sin()))
            .into_shape_with_order(IxDyn(shape))
            .unwrap()
    }

    /// `L(F) = Σ G ⊙ W(F)` is linear in each factor, so central differences are exact
    /// up to rounding.
    fn check(f: &Factorization) {
        let g = wave(f.shape(), 3.0);
        let grads = f.factor_gradients(&g).unwrap();
        let loss = |f: &Factorization| -> f64 {
            f.reconstruct()
                .iter()
                .zip(g.iter())
                .map(|(&w, &g)| w as f64 * g as f64)
                .sum()
        };
        let values = f.factor_values();
        assert_eq!(grads.len(), values.len());
        for (k, (value, grad)) in values.iter().zip(&grads).enumerate() {
            assert_eq!(value.shape(), grad.shape(), "factor {k}");
            for i in 0..value.len() {
                let at = |delta: f32| {
                    let mut vs = values.clone();
                    vs[k].as_slice_mut().unwrap()[i] += delta;
                    let mut f2 = f.clone();
                    f2.set_factor_values(vs).unwrap();
                    loss(&f2)
                };
                let numeric = (at(0.5) - at(-0.5)) as f32;
                let analytic = grad.as_slice().unwrap()[i];
                assert!(
                    (numeric - analytic).abs() < 1e-3 * (1.0 + analytic.abs()),
                    "factor {k}[{i}]: {numeric} vs {analytic}"
                );
            }
        }
    }

    fn w2(r: usize, c: usize, seed: f32) -> Array2<f32> {
        wave(&[r, c], seed).into_dimensionality().unwrap()
    }

    fn w4(shape: [usize; 4], seed: f32) -> Array4<f32> {
        wave(&shape, seed).into_dimensionality().unwrap()
    }

    #[test]
    fn every_form_matches_finite_differences() {
        check(
            &Factorization::new(
                &[4, 5],
                Factors::Linear {
                    a: w2(4, 2, 0.0),
                    b: w2(2, 5, 1.0),
                },
            )
            .unwrap(),
        );
        check(
            &Factorization::new(
                &[4, 3, 2, 3],
                Factors::Tucker2 {
                    u_out: w2(4, 2, 0.0),
                    core: w4([2, 2, 2, 3], 1.0),
                    u_in: w2(3, 2, 2.0),
                },
            )
            .unwrap(),
        );
        check(
            &Factorization::new(
                &[4, 3, 2, 3],
                Factors::Cp {
                    out: w2(4, 2, 0.0),
                    input: w2(3, 2, 1.0),
                    rows: w2(2, 2, 2.0),
                    cols: w2(3, 2, 3.0),
                },
            )
            .unwrap(),
        );
        check(
            &Factorization::new(
                &[4, 3, 2, 3],
                Factors::Separable {
                    vertical: w4([2, 3, 2, 1], 0.0),
                    horizontal: w4([4, 2, 1, 3], 1.0),
                },
            )
            .unwrap(),
        );
        check(
            &Factorization::new(
                &[4, 3, 2, 3],
                Factors::DepthwiseSeparable {
                    depthwise: w4([3, 1, 2, 3], 0.0),
                    pointwise: w4([4, 3, 1, 1], 1.0),
                },
            )
            .unwrap(),
        );
        check(
            &Factorization::new(
                &[6, 12],
                Factors::TensorTrain {
                    cores: vec![
                        w4([1, 2, 3, 2], 0.0),
                        w4([2, 3, 2, 3], 1.0),
                        w4([3, 1, 2, 1], 2.0),
                    ],
                },
            )
            .unwrap(),
        );
    }

    #[test]
    fn bad_gradient_and_values_are_errors() {
        let mut f = Factorization::new(
            &[4, 5],
            Factors::Linear {
                a: w2(4, 2, 0.0),
                b: w2(2, 5, 1.0),
            },
        )
        .unwrap();
        assert!(f.factor_gradients(&wave(&[5, 4], 0.0)).is_err());
        assert!(f.set_factor_values(vec![wave(&[4, 2], 0.0)]).is_err());
        assert!(
            f.set_factor_values(vec![wave(&[4, 2], 0.0), wave(&[2, 4], 0.0)])
                .is_err()
        );
        let mut bad = f.factor_values();
        bad[0][[0, 0]] = f32::NAN;
        assert!(f.set_factor_values(bad).is_err());
        assert!(f.factor_gradients(&wave(&[4, 5], 0.0)).is_ok());
    }
}
