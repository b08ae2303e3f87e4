//! The Linear layer's forward product `y = x·Wᵀ` on both cores, by the batch-invariant
//! kernel: a sample's output is the same bits in any batch (what early exits need to
//! give each sample the output it gets alone).

use ndarray::{Array2, ArrayRef, ArrayView2, Ix2};
use rayon::prelude::*;

use crate::kernels::dense;

/// Multiply-adds below which one thread does the whole product.
const SERIAL_WORK: usize = 1 << 18;

/// `x·wᵀ` for `x` `[m, k]` and `w` `[r, k]` (shapes checked by the caller).
pub(super) fn forward(x: ArrayView2<'_, f32>, w: &ArrayRef<f32, Ix2>) -> Array2<f32> {
    let (m, k) = x.dim();
    let r = w.nrows();
    let mut y = vec![0.0f32; m * r];
    if k == 0 || m == 0 || r == 0 {
        return Array2::from_shape_vec((m, r), y).expect("m × r");
    }
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let (xs, ws) = (
        x.as_slice().expect("standard layout"),
        w.as_slice().expect("standard layout"),
    );
    let threads = rayon::current_num_threads();
    if m * r * k < SERIAL_WORK || threads == 1 {
        dense::linear(xs, ws, k, &mut y);
    } else if m >= 2 * threads {
        // Whole samples per task.
        let per_task = m.div_ceil(4 * threads).max(1);
        y.par_chunks_mut(per_task * r)
            .zip(xs.par_chunks(per_task * k))
            .for_each(|(y, x)| dense::linear(x, ws, k, y));
    } else {
        // Few samples: weight rows per task, each into its own block, then placed.
        let per_task = r.div_ceil(4 * threads).max(1);
        let blocks: Vec<Vec<f32>> = ws
            .par_chunks(per_task * k)
            .map(|w| {
                let mut block = vec![0.0f32; m * (w.len() / k)];
                dense::linear(xs, w, k, &mut block);
                block
            })
            .collect();
        for (b, block) in blocks.iter().enumerate() {
            let (o0, width) = (b * per_task, block.len() / m);
            for (s, row) in block.chunks_exact(width).enumerate() {
                y[s * r + o0..s * r + o0 + width].copy_from_slice(row);
            }
        }
    }
    Array2::from_shape_vec((m, r), y).expect("m × r")
}
