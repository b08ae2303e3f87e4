//! The direct depthwise convolution: `groups = channels`, each input channel feeding
//! its own `m ≥ 1` output channels (`out = m·in`), without an im2col product.
//!
//! Every (image, input channel) plane is copied once, zero-padded, into a buffer `q`
//! whose columns are split by stride phase: phase `p` holds padded columns `p, p + sw,
//! p + 2sw, …`. Padded column `oj·sw + kj` then sits at index `oj + kj / sw` of phase
//! `kj % sw`, so a row of outputs is a sum over the `kh·kw` taps of *contiguous*
//! source rows times scalar weights, whatever the stride
//! ([`taps`](crate::kernels::depthwise::taps)). The input gradient is the same sum
//! gathered from the zero-padded output gradient (a full correlation with the flipped
//! kernel, phase by phase); the weight gradient is one dot product per tap
//! ([`tap_dots`](crate::kernels::depthwise::tap_dots)).
//!
//! Planes run in parallel when the work is large; each plane is computed by one task
//! in a fixed order, and the weight gradient's per-image partial sums are added in
//! image order, so results do not depend on the number of threads.

use rayon::prelude::*;

use crate::kernels::depthwise::{BLOCK, tap_dots, taps};
use crate::nn::im2col::Geometry;

/// Multiply–adds below which the planes run on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;

/// The layout of the phase buffers of one convolution.
#[derive(Clone, Debug)]
struct Plan {
    geo: Geometry,
    /// Output channels per input channel.
    m: usize,
    /// Padded rows that some output reads: `(oh − 1)·sh + kh`.
    rows: usize,
    /// Phase row length: `(kw − 1) / sw` plus the output row length rounded up to
    /// [`BLOCK`] (what [`taps`] reads).
    qw: usize,
    /// Where tap `(ki, kj)` of output row 0 starts in `q`.
    starts: Vec<usize>,
}

impl Plan {
    fn new(geo: &Geometry) -> Plan {
        let (sh, sw) = geo.spec.stride;
        let rows = (geo.oh - 1) * sh + geo.kh;
        let owr = geo.ow.next_multiple_of(BLOCK);
        let qw = (geo.kw - 1) / sw + owr;
        let starts = (0..geo.kh)
            .flat_map(|ki| (0..geo.kw).map(move |kj| (ki, kj)))
            .map(|(ki, kj)| ((kj % sw) * rows + ki) * qw + kj / sw)
            .collect();
        Plan {
            geo: *geo,
            m: geo.o / geo.c,
            rows,
            qw,
            starts,
        }
    }

    fn kk(&self) -> usize {
        self.geo.kh * self.geo.kw
    }

    fn q_len(&self) -> usize {
        self.geo.spec.stride.1 * self.rows * self.qw
    }

    /// Multiply–adds of one image.
    fn work(&self) -> usize {
        self.geo.o * self.geo.positions() * self.kk()
    }

    /// Copies the input plane `x` (`[h, w]`) into the phase buffer `q`, zeros around.
    fn fill_q(&self, x: &[f32], q: &mut [f32]) {
        let g = &self.geo;
        let ((_, sw), (ph, pw)) = (g.spec.stride, g.spec.padding);
        q.fill(0.0);
        for r in ph..self.rows.min(ph + g.h) {
            let src = &x[(r - ph) * g.w..][..g.w];
            if sw == 1 {
                let n = g.w.min(self.qw.saturating_sub(pw));
                q[r * self.qw + pw..][..n].copy_from_slice(&src[..n]);
            } else {
                for (xi, &v) in src.iter().enumerate() {
                    let c = xi + pw;
                    if c / sw < self.qw {
                        q[((c % sw) * self.rows + r) * self.qw + c / sw] = v;
                    }
                }
            }
        }
    }
}

/// Runs `f` on every item with a scratch value from `init`: in parallel when `work` is
/// large, else in order on the calling thread.
fn run<I: Send, S>(
    items: Vec<I>,
    work: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, I) + Sync + Send,
) {
    if work >= PARALLEL_MIN && items.len() > 1 {
        items.into_par_iter().for_each_init(init, f);
    } else {
        let mut s = init();
        items.into_iter().for_each(|it| f(&mut s, it));
    }
}

/// The forward pass into `out` (`[n, o, oh, ow]`, every element written) for the input
/// `x` (`[n, c, h, w]`, standard layout), weights `w` (`[o, 1, kh, kw]`, standard layout).
pub(super) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, geo: &Geometry, out: &mut [f32]) {
    let p = Plan::new(geo);
    let (c, m, kk) = (geo.c, p.m, p.kk());
    let (sh, positions) = (geo.spec.stride.0, geo.positions());
    let n = x.len() / geo.image_len();
    let items: Vec<_> = out
        .chunks_exact_mut(m * positions)
        .zip(x.chunks_exact(geo.h * geo.w))
        .enumerate()
        .collect();
    let init = || (vec![0.0f32; p.q_len()], Vec::new());
    run(items, n * p.work(), init, |(q, tp), (i, (y, xp))| {
        let ci = i % c;
        p.fill_q(xp, q);
        for (j, yf) in y.chunks_exact_mut(positions).enumerate() {
            let f = ci * m + j;
            tp.clear();
            tp.extend(
                p.starts
                    .iter()
                    .copied()
                    .zip(w[f * kk..][..kk].iter().copied()),
            );
            let b = bias.map_or(0.0, |b| b[f]);
            taps(q, tp, sh * p.qw, b, yf, geo.ow);
        }
    });
}

/// Gradients of [`forward`]: the weight's `[o, 1, kh, kw]`, the bias's `[o]`, and (when
/// `dx` is given, `[n, c, h, w]`, every element written) the input's.
pub(super) fn backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    geo: &Geometry,
    dx: Option<&mut [f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let p = Plan::new(geo);
    let (c, m, kk) = (geo.c, p.m, p.kk());
    let ((sh, sw), (ph, pw)) = (geo.spec.stride, geo.spec.padding);
    let (oh, ow, positions, hw) = (geo.oh, geo.ow, geo.positions(), geo.h * geo.w);
    let n = x.len() / geo.image_len();
    let need_input = dx.is_some();
    // The output gradient, zero-padded: `[m, oh, dw_len]`, `d0` zeros before each row.
    let d0 = (geo.kw - 1) / sw;
    let tn = (pw + geo.w - 1) / sw + 1;
    let tr = tn.next_multiple_of(BLOCK);
    let dw_len = d0 + tr.max(ow);
    // Per plane: `m·kk` weight gradients, then `m` bias gradients.
    let per = m * kk + m;
    let mut partials = vec![0.0f32; n * c * per];
    let dx_chunks: Vec<Option<&mut [f32]>> = match dx {
        Some(d) => d.chunks_exact_mut(hw).map(Some).collect(),
        None => (0..n * c).map(|_| None).collect(),
    };
    let items: Vec<_> = partials
        .chunks_exact_mut(per)
        .zip(x.chunks_exact(hw))
        .zip(dy.chunks_exact(m * positions))
        .zip(dx_chunks)
        .enumerate()
        .collect();
    let init = || {
        (
            vec![0.0f32; p.q_len()],
            vec![0.0f32; m * oh * dw_len],
            vec![0.0f32; tn],
            Vec::new(),
        )
    };
    let work = n * p.work() * if need_input { 2 } else { 1 };
    run(
        items,
        work,
        init,
        |(q, dpad, row, tp), (i, (((part, xp), dyp), dxp))| {
            let ci = i % c;
            let (pdw, pdb) = part.split_at_mut(m * kk);
            p.fill_q(xp, q);
            for (j, dyf) in dyp.chunks_exact(positions).enumerate() {
                tap_dots(dyf, ow, q, sh * p.qw, &p.starts, &mut pdw[j * kk..][..kk]);
                pdb[j] = dyf.iter().sum::<f32>();
            }
            let Some(dxp) = dxp else { return };
            dpad.fill(0.0);
            for (dst, src) in dpad.chunks_exact_mut(dw_len).zip(dyp.chunks_exact(ow)) {
                dst[d0..d0 + ow].copy_from_slice(src);
            }
            // Padded row `r` = input row `r − ph`; phase `ph_` holds padded columns
            // `t·sw + ph_`, gathered from every output read of them.
            for (yi, dxr) in dxp.chunks_exact_mut(geo.w).enumerate() {
                let r = yi + ph;
                for phase in 0..sw {
                    tp.clear();
                    for j in 0..m {
                        let wf = &w[(ci * m + j) * kk..][..kk];
                        for ki in 0..geo.kh {
                            let Some(d) = r.checked_sub(ki) else { break };
                            if d % sh != 0 || d / sh >= oh {
                                continue;
                            }
                            let base = (j * oh + d / sh) * dw_len + d0;
                            for kj in (phase..geo.kw).step_by(sw) {
                                tp.push((base - kj / sw, wf[ki * geo.kw + kj]));
                            }
                        }
                    }
                    taps(dpad, tp, 0, 0.0, &mut row[..tn], tn);
                    if sw == 1 {
                        dxr.copy_from_slice(&row[pw..pw + geo.w]);
                    } else {
                        let first = (phase + sw - pw % sw) % sw;
                        for xi in (first..geo.w).step_by(sw) {
                            dxr[xi] = row[(xi + pw) / sw];
                        }
                    }
                }
            }
        },
    );
    let mut dw = vec![0.0f32; geo.o * kk];
    let mut db = vec![0.0f32; geo.o];
    for image in partials.chunks_exact(c * per) {
        for (ci, part) in image.chunks_exact(per).enumerate() {
            let (pdw, pdb) = part.split_at(m * kk);
            let dwc = &mut dw[ci * m * kk..][..m * kk];
            dwc.iter_mut().zip(pdw).for_each(|(a, b)| *a += b);
            let dbc = &mut db[ci * m..][..m];
            dbc.iter_mut().zip(pdb).for_each(|(a, b)| *a += b);
        }
    }
    (dw, db)
}

#[cfg(test)]
mod tests {
    use ndarray::Array4;
    use proptest::prelude::*;

    use super::super::{ConvSpec, backward_im2col, forward_im2col};
    use super::*;

    /// A depthwise convolution drawn at random: input `[n, c, h, w]`, multiplier,
    /// kernel, stride, padding (kernels always fit the padded input).
    #[derive(Clone, Debug)]
    struct Case {
        n: usize,
        c: usize,
        m: usize,
        hw: (usize, usize),
        k: (usize, usize),
        spec: ConvSpec,
        bias: bool,
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            (1usize..4, 1usize..5, 1usize..4),
            (1usize..12, 1usize..40),
            (1usize..6, 1usize..6),
            (1usize..4, 1usize..4),
            (0usize..3, 0usize..3),
            any::<bool>(),
        )
            .prop_filter_map("kernel fits", |((n, c, m), hw, k, s, p, bias)| {
                let fits = k.0 <= hw.0 + 2 * p.0 && k.1 <= hw.1 + 2 * p.1;
                fits.then(|| Case {
                    n,
                    c,
                    m,
                    hw,
                    k,
                    spec: ConvSpec::new()
                        .with_groups(c)
                        .with_stride(s.0, s.1)
                        .with_padding(p.0, p.1),
                    bias,
                })
            })
    }

    fn wave(len: usize, s: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * s).sin()).collect()
    }

    /// The geometry, input, weight, bias of a case.
    fn data(t: &Case) -> (Geometry, Vec<f32>, Array4<f32>, Option<Vec<f32>>) {
        let o = t.c * t.m;
        let geo = Geometry::new((t.c, t.hw.0, t.hw.1), (o, 1, t.k.0, t.k.1), t.spec).unwrap();
        let x = wave(t.n * geo.image_len(), 0.37);
        let w =
            Array4::from_shape_vec((o, 1, t.k.0, t.k.1), wave(o * t.k.0 * t.k.1, 0.71)).unwrap();
        let b = t.bias.then(|| wave(o, 0.53));
        (geo, x, w, b)
    }

    fn assert_close(
        what: &str,
        got: &[f32],
        want: &[f32],
    ) -> std::result::Result<(), TestCaseError> {
        prop_assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            prop_assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{what}[{i}]: {a} vs {b}"
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn direct_kernel_matches_the_im2col_path(t in case()) {
            let (geo, x, w, b) = data(&t);
            let ws = w.as_slice().unwrap();
            let mut got = vec![f32::NAN; t.n * geo.out_len()];
            forward(&x, ws, b.as_deref(), &geo, &mut got);
            let mut want = vec![f32::NAN; t.n * geo.out_len()];
            forward_im2col(&x, &w, b.as_deref(), &geo, &mut want);
            assert_close("y", &got, &want)?;

            let dy = wave(t.n * geo.out_len(), 0.43);
            let mut dx = vec![f32::NAN; x.len()];
            let (dw, db) = backward(&x, ws, &dy, &geo, Some(&mut dx));
            let g = backward_im2col(&x, &dy, &w, &geo, true);
            assert_close("dW", &dw, g.weight.as_slice().unwrap())?;
            assert_close("db", &db, g.bias.as_slice().unwrap())?;
            assert_close("dX", &dx, g.input.unwrap().as_slice().unwrap())?;
            let (dw2, db2) = backward(&x, ws, &dy, &geo, None);
            prop_assert_eq!(dw2, dw);
            prop_assert_eq!(db2, db);
        }
    }

    /// Large enough to run in parallel: the same bits in pools of 1, 2 and 3 threads.
    #[test]
    fn results_do_not_depend_on_the_number_of_threads() {
        let t = Case {
            n: 5,
            c: 6,
            m: 2,
            hw: (23, 19),
            k: (3, 3),
            spec: ConvSpec::new()
                .with_groups(6)
                .with_stride(2, 1)
                .with_padding(1, 1),
            bias: true,
        };
        let (geo, x, w, b) = data(&t);
        // Repeat the batch so that the work crosses the parallel threshold.
        let reps = PARALLEL_MIN / (t.n * Plan::new(&geo).work()) + 1;
        let x: Vec<f32> = x
            .iter()
            .cycle()
            .take(reps * x.len())
            .enumerate()
            .map(|(i, v)| v + i as f32 * 1e-3)
            .collect();
        let n = x.len() / geo.image_len();
        let dy = wave(n * geo.out_len(), 0.43);
        let ws = w.as_slice().unwrap();
        let run = || {
            let mut y = vec![0.0f32; n * geo.out_len()];
            forward(&x, ws, b.as_deref(), &geo, &mut y);
            let mut dx = vec![0.0f32; x.len()];
            let (dw, db) = backward(&x, ws, &dy, &geo, Some(&mut dx));
            [y, dx, dw, db]
                .concat()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<u32>>()
        };
        let pool = |k| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(k)
                .build()
                .unwrap()
        };
        let one = pool(1).install(run);
        assert_eq!(pool(2).install(run), one);
        assert_eq!(pool(3).install(run), one);
    }
}
