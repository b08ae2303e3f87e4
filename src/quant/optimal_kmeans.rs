//! Exact optimal 1-D k-means clustering (the `Ckmeans.1d.dp` problem).
//!
//! Given values `x_0 ≤ x_1 ≤ … ≤ x_{n-1}` with positive weights, find the partition into
//! `k` non-empty groups minimising the weighted sum of squared distances to the group
//! means. In one dimension an optimal partition always consists of contiguous runs of
//! the sorted values, so the problem is the dynamic programme of Wang & Song (2011):
//!
//! ```text
//! D[1][i] = cost(0, i)
//! D[m][i] = min_{m-1 ≤ j ≤ i}  D[m-1][j-1] + cost(j, i)
//! ```
//!
//! where `cost(j, i)` is the weighted SSE of `x_j..=x_i` around its mean. The cost satisfies
//! the quadrangle inequality, so each layer's matrix `M[i][j] = D[m-1][j-1] + cost(j, i)`
//! (with `+∞` for `j > i`) is totally monotone and its row minima are found in `O(n)` by
//! SMAWK (Aggarwal, Klawe, Moran, Shor & Wilber 1987), as in Grønlund, Larsen, Mathiasen,
//! Nielsen, Schneider & Song, "Fast Exact k-Means, k-Medians and Bregman Divergence
//! Clustering in 1D" (2017): `O(k·n)` time after sorting, with `O(1)` cluster costs from
//! prefix sums of `w`, `w·x` and `w·x²`.
//!
//! Two exact prunings, which change no result, roughly halve the work on typical data:
//!
//! - **Meet in the middle.** The first `⌊k/2⌋` clusters are solved by the programme above
//!   on prefixes, the other `⌈k/2⌉` by the same programme on the values in reverse order,
//!   i.e. on suffixes; the optimum is the best split `min_s F[s-1] + B[s]`.
//! - **Bound.** A cheap near-optimal partition (the programme on the values grouped into
//!   a few thousand runs, then Lloyd iterations at `O(k log n)` each) has a cost `U ≥`
//!   the optimum. `D[m][i]` never decreases in `i`, and every prefix of an optimal
//!   solution costs at most the optimum, so each layer stops at the last row with
//!   `D[m][i] ≤ U`. Layers with few clusters then cover only part of the rows: with the
//!   split, under half of the `(k-2)·n` rows remain for a Laplace sample and `k = 16`.
//!
//! The row minima are exact for the computed costs up to rounding: SMAWK relies on total
//! monotonicity, which rounding can break by an ulp, so in near-ties it may return a
//! partition whose SSE is a few ulps above the best one (never an invalid partition).
//!
//! Memory: a `u32` argmin table for the rows kept (at most `(k-2)·n` entries), 32 bytes of
//! prefix sums per value and a few `f64` rows.
//!
//! Repeated values: pass distinct values with their multiplicities as weights
//! (`dedup_weighted`). The programme is then smaller, and no cluster boundary can fall
//! between equal values.

/// Optimal partition of sorted values into k contiguous clusters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Clustering {
    /// Start index (into the sorted input) of each cluster; `starts[0] == 0`, strictly increasing.
    pub starts: Vec<usize>,
    /// Weighted mean of each cluster.
    pub centroids: Vec<f64>,
    /// Weighted sum of squared distances to the centroids (the minimum over all partitions).
    pub sse: f64,
}

/// Distinct values of `sorted` (non-decreasing, finite) and how many times each occurs.
///
/// The counts are meant as the `weights` of [`optimal_kmeans_1d`]: clustering the distinct
/// values with their counts gives the same optimum as clustering the raw values, on a
/// smaller programme, and never puts equal values in different clusters.
pub(crate) fn dedup_weighted(sorted: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut values: Vec<f64> = Vec::new();
    let mut counts: Vec<f64> = Vec::new();
    for &x in sorted {
        match values.last() {
            Some(&last) if last == x => {
                if let Some(c) = counts.last_mut() {
                    *c += 1.0;
                }
            }
            _ => {
                values.push(x);
                counts.push(1.0);
            }
        }
    }
    (values, counts)
}

/// Optimal (minimum weighted SSE) partition of `sorted` into `k` contiguous clusters.
///
/// `sorted`: values in non-decreasing order (finite). `weights`: None = all 1, else one
/// positive finite weight per value (multiplicities of repeated values). `k`: 1 ≤ k ≤
/// number of DISTINCT values (the caller checks and reports errors; this is only
/// `debug_assert`ed).
///
/// Callers with repeated values should deduplicate first ([`dedup_weighted`]) and pass the
/// counts as weights: the solve is then on fewer points, and equal values always share a
/// cluster. With raw repeated values the SSE is still optimal, but on ties a boundary may
/// fall inside a run of equal values.
///
/// Ties between equally good partitions are broken deterministically (the same input
/// always gives the same partition): the first cluster of the suffix half starts as early
/// as possible, the clusters before it each start as early as possible (from the last
/// backwards), and those after it each end as late as possible.
///
/// Outside the contract this does not panic either: an empty input gives an empty
/// clustering, `k` is clamped to `1..=n`, and a weight slice of the wrong length is
/// ignored in release builds (all weights 1). `|x|` beyond about `1e150` overflows the
/// sums of squares; cluster starts are kept as `u32`, so `n` must be below `2^32`.
pub(crate) fn optimal_kmeans_1d(sorted: &[f64], weights: Option<&[f64]>, k: usize) -> Clustering {
    solve_with(sorted, weights, k, true)
}

/// [`optimal_kmeans_1d`], with the bound pruning switchable (off: every row of every layer).
fn solve_with(sorted: &[f64], weights: Option<&[f64]>, k: usize, prune: bool) -> Clustering {
    debug_assert!(
        sorted.windows(2).all(|p| p[0] <= p[1]),
        "values must be sorted"
    );
    debug_assert!(
        sorted.iter().all(|x| x.is_finite()),
        "values must be finite"
    );
    debug_assert!(
        weights
            .is_none_or(|w| w.len() == sorted.len() && w.iter().all(|&v| v > 0.0 && v.is_finite())),
        "one positive finite weight per value"
    );
    debug_assert!(k >= 1, "k must be at least 1");
    debug_assert!(sorted.len() <= u32::MAX as usize, "at most 2^32 - 1 values");
    debug_assert!(
        k <= 1 + sorted.windows(2).filter(|p| p[0] != p[1]).count(),
        "k must not exceed the number of distinct values"
    );
    let n = sorted.len();
    let weights = weights.filter(|w| w.len() == n);
    if n == 0 {
        return Clustering {
            starts: Vec::new(),
            centroids: Vec::new(),
            sse: 0.0,
        };
    }
    let k = k.clamp(1, n);
    let starts = if k == 1 {
        vec![0]
    } else if k == n {
        (0..n).collect()
    } else {
        solve(sorted, weights, k, prune)
    };
    summarize(sorted, weights, starts)
}

/// Weight of value `i` (1 without weights).
#[inline]
fn weight_at(weights: Option<&[f64]>, i: usize) -> f64 {
    weights.map_or(1.0, |w| w[i])
}

/// Centroids and SSE of the partition of `sorted` given by `starts`, computed directly (two
/// passes per cluster) rather than from the prefix sums, for accuracy.
fn summarize(sorted: &[f64], weights: Option<&[f64]>, starts: Vec<usize>) -> Clustering {
    let mut centroids = Vec::with_capacity(starts.len());
    let mut sse = 0.0;
    for (c, &lo) in starts.iter().enumerate() {
        let hi = starts.get(c + 1).copied().unwrap_or(sorted.len());
        let (mut sw, mut swx) = (0.0, 0.0);
        for (i, &x) in sorted.iter().enumerate().take(hi).skip(lo) {
            let w = weight_at(weights, i);
            sw += w;
            swx += w * x;
        }
        // Clamp into the cluster's range: rounding must not move the mean outside it.
        let mean = (swx / sw).max(sorted[lo]).min(sorted[hi - 1]);
        for (i, &x) in sorted.iter().enumerate().take(hi).skip(lo) {
            let d = x - mean;
            sse += weight_at(weights, i) * d * d;
        }
        centroids.push(mean);
    }
    Clustering {
        starts,
        centroids,
        sse,
    }
}

/// Prefix sums up to (excluding) one index, plus the previous layer's optimum for a
/// cluster starting there. Kept together so one cost evaluation touches two cache lines.
#[derive(Clone, Copy, Debug, Default)]
#[repr(align(32))]
struct Node {
    /// Σ w over the prefix.
    w: f64,
    /// Σ w·x (shifted) over the prefix.
    s1: f64,
    /// Σ w·x² (shifted) over the prefix.
    s2: f64,
    /// `D[m-1][j-1]` for a cluster starting at this index, in the layer being filled.
    d: f64,
}

/// Weighted SSE of the values between prefixes `lo` and `hi` (`hi` after `lo`), as
/// `s2 - s1²/w`, with tiny negative results of cancellation clamped to 0.
#[inline(always)]
fn seg_cost(hi: &Node, lo: &Node) -> f64 {
    let w = hi.w - lo.w;
    let s1 = hi.s1 - lo.s1;
    let s2 = hi.s2 - lo.s2;
    let c = s2 - s1 * s1 / w;
    if c > 0.0 { c } else { 0.0 }
}

/// Fills `nodes` with the prefix sums (compensated) of `w`, `w·x`, `w·x²` over the `n`
/// points `point(t) = (x, w)` (in order), the values shifted by their weighted mean to limit
/// cancellation; entry `t` covers points `0..t`. The weight prefix is forced strictly
/// increasing so that every cluster's weight is positive. Returns the shift.
fn fill_prefix(nodes: &mut Vec<Node>, n: usize, point: impl Fn(usize) -> (f64, f64)) -> f64 {
    let (mut sw, mut swx) = (0.0, 0.0);
    for t in 0..n {
        let (x, w) = point(t);
        sw += w;
        swx += w * x;
    }
    let (lo, hi) = (point(0).0, point(n - 1).0);
    let shift = (swx / sw).max(lo.min(hi)).min(lo.max(hi));
    nodes.clear();
    nodes.reserve(n + 1);
    nodes.push(Node::default());
    let (mut a, mut b, mut c) = (Kahan::default(), Kahan::default(), Kahan::default());
    let mut last_w = 0.0f64;
    for t in 0..n {
        let (x, w) = point(t);
        let y = x - shift;
        let mut pw = a.add(w);
        if pw <= last_w {
            pw = last_w.next_up();
        }
        last_w = pw;
        let wy = w * y;
        nodes.push(Node {
            w: pw,
            s1: b.add(wy),
            s2: c.add(wy * y),
            d: 0.0,
        });
    }
    shift
}

/// Neumaier-compensated running sum.
#[derive(Default)]
struct Kahan {
    /// Rounded running sum.
    sum: f64,
    /// Accumulated rounding error.
    comp: f64,
}

impl Kahan {
    /// Adds `v` and returns the compensated running total.
    #[inline]
    fn add(&mut self, v: f64) -> f64 {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.comp += (self.sum - t) + v;
        } else {
            self.comp += (v - t) + self.sum;
        }
        self.sum = t;
        t + self.comp
    }
}

/// Makes `starts` (with `starts[0] == 0`) a valid partition of `n > starts.len()` points:
/// strictly increasing, every cluster non-empty.
fn repair_starts(starts: &mut [usize], n: usize) {
    let k = starts.len();
    starts[0] = 0;
    for m in 1..k {
        starts[m] = starts[m].max(starts[m - 1] + 1);
    }
    let mut next = n;
    for m in (1..k).rev() {
        starts[m] = starts[m].min(next - 1);
        next = starts[m];
    }
}

/// A good (not necessarily optimal) partition, used only for its cost, which bounds the
/// optimum: for large inputs the optimal partition of the values grouped into runs of
/// equal count (the programme on the runs' weighted means, on boundaries between runs),
/// else equal-weight clusters; then Lloyd iterations, each `O(k log n)` on the prefix sums.
/// (Lloyd alone can stall far from the optimum, e.g. with most of the weight in a narrow
/// peak, which would make the bound useless.)
fn heuristic_starts(sorted: &[f64], nodes: &[Node], shift: f64, k: usize) -> Vec<usize> {
    let n = sorted.len();
    let groups = (64 * k).max(4096);
    let mut starts: Vec<usize> = if n > 2 * groups {
        let bounds: Vec<usize> = (0..=groups).map(|g| g * n / groups).collect();
        let (means, weights): (Vec<f64>, Vec<f64>) = bounds
            .windows(2)
            .map(|b| {
                let (lo, hi) = (&nodes[b[0]], &nodes[b[1]]);
                ((hi.s1 - lo.s1) / (hi.w - lo.w) + shift, hi.w - lo.w)
            })
            .unzip();
        solve(&means, Some(&weights), k, false)
            .into_iter()
            .map(|g| bounds[g])
            .collect()
    } else {
        let total = nodes[n].w;
        (0..k)
            .map(|m| nodes[..n].partition_point(|nd| nd.w < total * m as f64 / k as f64))
            .collect()
    };
    repair_starts(&mut starts, n);
    let mut next = starts.clone();
    let mut centroids = vec![0.0; k];
    for _ in 0..100 {
        for (m, c) in centroids.iter_mut().enumerate() {
            let (lo, hi) = (
                &nodes[starts[m]],
                &nodes[starts.get(m + 1).copied().unwrap_or(n)],
            );
            *c = (hi.s1 - lo.s1) / (hi.w - lo.w) + shift;
        }
        for m in 1..k {
            let mid = 0.5 * (centroids[m - 1] + centroids[m]);
            next[m] = sorted.partition_point(|&x| x < mid);
        }
        repair_starts(&mut next, n);
        if next == starts {
            break;
        }
        std::mem::swap(&mut starts, &mut next);
    }
    starts
}

/// One direction of the split programme: layers `1..=layers` of the prefix programme on
/// `nodes`, each layer keeping only its rows up to the last one with value `≤ cut`.
struct Half {
    /// Values `D[layers][i]` of the last layer, for rows `i = layers-1 ..`.
    last: Vec<f64>,
    /// Argmins (cluster starts) of layers `2..=layers`, back to back; layer `m`'s first row
    /// is `m-1`.
    table: Vec<u32>,
    /// Offset in `table` of layer `m`, at index `m-2`.
    offsets: Vec<usize>,
}

impl Half {
    /// Start of each of the first `layers` clusters of the best `layers`-clustering of
    /// points `0..=row`, from the backtrack table.
    fn starts(&self, layers: usize, row: usize) -> Vec<usize> {
        let mut starts = vec![0usize; layers];
        let mut i = row;
        for m in (2..=layers).rev() {
            let j = self.table[self.offsets[m - 2] + (i - (m - 1))] as usize;
            starts[m - 1] = j;
            i = j - 1;
        }
        starts
    }
}

/// Layers `1..=layers` of the programme for a total of `k` clusters (layer `m` needs rows
/// `m-1 ..= n-k+m-1`), pruned at `cut`, on the `n = nodes.len() - 1` points of `nodes` in
/// order (`REV = false`: clusters of prefixes) or in reverse order (`REV = true`: clusters
/// of suffixes, point `t` of the programme being point `n-1-t` of `nodes`; the costs are
/// then bit-for-bit those of the same clusters forwards). `None` if some layer has no row
/// within the cut.
fn half_dp<const REV: bool>(
    nodes: &mut [Node],
    k: usize,
    layers: usize,
    cut: f64,
    smawk: &mut Smawk,
) -> Option<Half> {
    let n = nodes.len() - 1;
    // Programme points j..=i are the prefixes (col, row) forwards, (n-1-i, n-j) backwards;
    // the column's node carries D[m-1][j-1].
    let col_node = |j: usize| if REV { n - j } else { j };
    let first: Vec<f64> = if REV {
        (0..=n - k)
            .map(|i| seg_cost(&nodes[n], &nodes[n - 1 - i]))
            .collect()
    } else {
        (0..=n - k)
            .map(|i| seg_cost(&nodes[i + 1], &nodes[0]))
            .collect()
    };
    let mut cur = first;
    cur.truncate(cur.iter().rposition(|&v| v <= cut)? + 1);
    let mut next: Vec<f64> = Vec::with_capacity(cur.capacity());
    let mut table: Vec<u32> = Vec::new();
    let mut offsets = Vec::with_capacity(layers);
    for m in 2..=layers {
        // Column j (a cluster starting at j) carries D[m-1][j-1], kept for j - 1 ≤ b, the
        // previous layer's last row: columns m-1 ..= b+1.
        let cmin = m - 1;
        for (t, &d) in cur.iter().enumerate() {
            nodes[col_node(cmin + t)].d = d;
        }
        let cmax = cmin + cur.len() - 1;
        let (rmin, rmax) = (m - 1, n - k + m - 1);
        let nodes = &*nodes;
        let entry = |i: usize, j: usize| -> f64 {
            if j > i {
                f64::INFINITY
            } else if REV {
                let hi = &nodes[n - j];
                hi.d + seg_cost(hi, &nodes[n - 1 - i])
            } else {
                let lo = &nodes[j];
                lo.d + seg_cost(&nodes[i + 1], lo)
            }
        };
        let off = table.len();
        offsets.push(off);
        next.clear();
        // Rows up to b are within the cut for sure (D[m] ≤ D[m-1]); later ones are solved
        // in growing blocks until a block ends beyond the cut. Each block is its own
        // totally monotone submatrix: its minima lie right of the previous block's last.
        let (mut ra, mut rb) = (rmin, (cmax - 1).clamp(rmin, rmax));
        let mut clo = cmin;
        loop {
            let rows = rb + 1 - ra;
            let chi = rb.min(cmax);
            let base = ra - rmin;
            table.resize(off + base + rows, 0);
            next.resize(base + rows, 0.0);
            let (arg, val) = (&mut table[off + base..], &mut next[base..]);
            smawk.row_minima(ra, rows, clo, chi + 1 - clo, entry, arg, val);
            if rb == rmax || val[rows - 1] > cut {
                break;
            }
            clo = arg[rows - 1] as usize;
            // Guess how many more rows stay within the cut from D's recent slope (it grows
            // ever faster, so the guess tends high), plus some slack.
            let done = rb + 1 - rmin;
            let h = done.min(1024) - 1;
            let slope = (next[done - 1] - next[done - 1 - h]) / h.max(1) as f64;
            let guess = (cut - next[done - 1]) / slope;
            let more = if guess.is_finite() && guess >= 0.0 {
                ((guess * 1.25) as usize).saturating_add(1024)
            } else {
                done
            };
            // At least as many rows as the block has columns: a block costs O(rows + cols),
            // so the columns rescanned by each block are paid for by its rows.
            let more = more.max(cmax + 1 - clo);
            ra = rb + 1;
            rb = rb.saturating_add(more).min(rmax);
        }
        let keep = next.iter().rposition(|&v| v <= cut)? + 1;
        table.truncate(off + keep);
        next.truncate(keep);
        std::mem::swap(&mut cur, &mut next);
    }
    Some(Half {
        last: cur,
        table,
        offsets,
    })
}

/// The programme for `2 ≤ k < n`, split and pruned (see the module docs); returns the
/// cluster starts.
fn solve(sorted: &[f64], weights: Option<&[f64]>, k: usize, prune: bool) -> Vec<usize> {
    let n = sorted.len();
    let (k1, k2) = (k / 2, k - k / 2);
    let mut nodes = Vec::new();
    let shift = fill_prefix(&mut nodes, n, |t| (sorted[t], weight_at(weights, t)));
    let mut cut = f64::INFINITY;
    if prune {
        // The bound, summed exactly as each half sums along that partition (same cluster
        // costs, same order), so its prefixes are never cut; the margin absorbs SMAWK's
        // rounding.
        let h = heuristic_starts(sorted, &nodes, shift, k);
        let cost = |m: usize| seg_cost(&nodes[h.get(m + 1).copied().unwrap_or(n)], &nodes[h[m]]);
        let pf = (0..k1).fold(0.0, |acc, m| acc + cost(m));
        let pb = (k1..k).rev().fold(0.0, |acc, m| acc + cost(m));
        // Relative to the optimum and to the total scatter, the scale of the costs'
        // rounding errors (a few ulps of the prefix sums).
        let u = pf + pb;
        if u.is_finite() {
            cut = u + u * 1e-9 + nodes[n].s2.abs() * 1e-12;
        }
    }
    let mut smawk = Smawk::new();
    loop {
        let fwd = half_dp::<false>(&mut nodes, k, k1, cut, &mut smawk);
        let bwd = half_dp::<true>(&mut nodes, k, k2, cut, &mut smawk);
        if let (Some(fwd), Some(bwd)) = (fwd, bwd) {
            // Split: clusters 0..k1 on points 0..s (forward row s-1), clusters k1..k on
            // points s..n (backward row n-1-s). Smallest s on ties.
            let lo = k1.max((n + 1).saturating_sub(k2 + bwd.last.len()));
            let hi = (k1 - 1 + fwd.last.len()).min(n - k2);
            let mut best = (f64::INFINITY, 0usize);
            for s in lo..=hi {
                let v = fwd.last[s - k1] + bwd.last[n - s - k2];
                if v < best.0 {
                    best = (v, s);
                }
            }
            if best.0 < f64::INFINITY {
                let s = best.1;
                let mut starts = fwd.starts(k1, s - 1);
                // Backward clusters: layer m spans programme points j'..=i', which are
                // points n-1-i' ..= n-1-j'.
                let rev = bwd.starts(k2, n - 1 - s);
                let mut i = n - 1 - s;
                for m in (1..=k2).rev() {
                    starts.push(n - 1 - i);
                    if m > 1 {
                        i = rev[m - 1] - 1;
                    }
                }
                return starts;
            }
        }
        if cut == f64::INFINITY {
            // Unreachable for valid input: the unpruned programme always has a solution.
            debug_assert!(false, "no feasible split");
            let mut starts: Vec<usize> = (0..k).collect();
            repair_starts(&mut starts, n);
            return starts;
        }
        cut = f64::INFINITY;
    }
}

/// Reusable buffers for iterative SMAWK (no recursion, no allocation once grown).
///
/// Recursion level `l` works on the rows `first_l + t·2^l` (`t < count_l`) of the original
/// row range — rows are never materialised — and on a list of candidate columns kept in
/// `cols`, which also holds every level's list at once (`levels`).
///
/// (Copying each level's prefix sums next to each other, to turn the deep levels' strided
/// reads into streams, was tried: it made the deep levels faster but the whole slower.)
struct Smawk {
    /// Column lists of all levels, back to back.
    cols: Vec<u32>,
    /// REDUCE's stack cache: `cache[t]` is the entry of stack column `t` in stack row `t`.
    cache: Vec<f64>,
    /// Per level: (offset into `cols`, length, first row, row step, row count).
    levels: Vec<(usize, usize, usize, usize, usize)>,
}

impl Smawk {
    /// Empty buffers; they grow to the largest matrix seen.
    fn new() -> Self {
        Smawk {
            cols: Vec::new(),
            cache: Vec::new(),
            levels: Vec::with_capacity(usize::BITS as usize + 1),
        }
    }

    /// Leftmost row minima of the totally monotone matrix `entry(i, j)` over rows
    /// `r0..r0+nrows` and columns `c0..c0+ncols`: `arg[i - r0]` gets the column and
    /// `val[i - r0]` the minimum. `O(nrows + ncols)` entry evaluations.
    ///
    /// Total monotonicity is in the leftmost-minimum sense (`M[i][a] > M[i][b]` for
    /// `a < b` implies the same in every later row); `+∞` entries are allowed right of a
    /// staircase (`j > i` here), provided the first row is finite in column `c0`. Column
    /// indices must fit in `u32`.
    ///
    /// Whatever rounding does to total monotonicity, the result is safe to backtrack: the
    /// argmins never decrease down the rows (each even row is searched between its odd
    /// neighbours' minima), and each row's minimum is finite, at or left of the row's
    /// staircase (its search starts at the previous row's minimum, or at the first
    /// surviving column, which REDUCE only replaces by one finite in the first row).
    #[allow(clippy::too_many_arguments)]
    fn row_minima<F: Fn(usize, usize) -> f64>(
        &mut self,
        r0: usize,
        nrows: usize,
        c0: usize,
        ncols: usize,
        entry: F,
        arg: &mut [u32],
        val: &mut [f64],
    ) {
        if nrows == 0 || ncols == 0 {
            return;
        }
        if self.cols.len() < ncols + 2 * nrows {
            self.cols.resize(ncols + 2 * nrows, 0);
        }
        if self.cache.len() < nrows {
            self.cache.resize(nrows, 0.0);
        }
        for (slot, c) in self.cols[..ncols].iter_mut().zip(c0..) {
            *slot = c as u32;
        }
        self.levels.clear();
        // Forward: REDUCE each level's columns to at most as many as it has rows.
        let (mut in_off, mut in_len) = (0usize, ncols);
        let mut top = ncols;
        let (mut first, mut step, mut count) = (r0, 1usize, nrows);
        while count > 0 {
            if in_len > count {
                let (head, tail) = self.cols.split_at_mut(top);
                let src = &head[in_off..in_off + in_len];
                let len = reduce(
                    src,
                    &mut tail[..count],
                    &mut self.cache,
                    first,
                    step,
                    &entry,
                );
                in_off = top;
                in_len = len;
                top += len;
            }
            self.levels.push((in_off, in_len, first, step, count));
            first += step;
            step *= 2;
            count /= 2;
        }
        // Backward: INTERPOLATE the even rows of each level between the odd rows' minima.
        for &(off, len, first, step, count) in self.levels.iter().rev() {
            let list = &self.cols[off..off + len];
            let mut d = 0usize;
            let mut t = 0usize;
            while t < count {
                let r = first + t * step;
                let stop = if t + 1 < count {
                    arg[r + step - r0]
                } else {
                    list[len - 1]
                };
                let mut best_c = list[d];
                let mut best = entry(r, best_c as usize);
                while d + 1 < len && list[d] < stop {
                    d += 1;
                    let c = list[d];
                    let v = entry(r, c as usize);
                    if v < best {
                        best = v;
                        best_c = c;
                    }
                }
                arg[r - r0] = best_c;
                val[r - r0] = best;
                t += 2;
            }
        }
    }
}

/// SMAWK's REDUCE: keeps at most `dst.len()` columns of `src` (in order) that contain every
/// leftmost row minimum of rows `first + t·step`; returns how many were written to `dst`.
///
/// Stack column `t` is "alive" from row `t` on. A new column pops the top when it is
/// strictly smaller in the top's row: by total monotonicity it stays smaller in every later
/// row, and in earlier rows the top already lost (or tied) to the column below it. The
/// entry of each stack column in its own row is cached, so each step evaluates one entry.
#[inline(always)]
fn reduce<F: Fn(usize, usize) -> f64>(
    src: &[u32],
    dst: &mut [u32],
    cache: &mut [f64],
    first: usize,
    step: usize,
    entry: &F,
) -> usize {
    let rows = dst.len();
    let mut len = 0usize;
    // A column that fits nowhere (stack full, top not beaten) is dropped: it is not the
    // leftmost minimum of any row.
    for &c in src {
        let cu = c as usize;
        while len > 0 {
            let v = entry(first + (len - 1) * step, cu);
            if cache[len - 1] > v {
                len -= 1;
            } else {
                break;
            }
        }
        if len < rows {
            dst[len] = c;
            cache[len] = entry(first + len * step, cu);
            len += 1;
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Small deterministic generator (splitmix64), so the tests need only `std`.
    struct Rng(u64);

    impl Rng {
        /// Next 64 random bits.
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Uniform in 0..n.
        fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }

        /// Laplace(0, b) sample.
        fn laplace(&mut self, b: f64) -> f64 {
            let u = self.uniform() - 0.5;
            -b * u.signum() * (1.0 - 2.0 * u.abs()).max(f64::MIN_POSITIVE).ln()
        }
    }

    /// Weighted SSE of `x[lo..hi]` around its mean, computed directly.
    fn direct_cost(x: &[f64], w: &[f64], lo: usize, hi: usize) -> f64 {
        let sw: f64 = w[lo..hi].iter().sum();
        let mean = x[lo..hi]
            .iter()
            .zip(&w[lo..hi])
            .map(|(a, b)| a * b)
            .sum::<f64>()
            / sw;
        x[lo..hi]
            .iter()
            .zip(&w[lo..hi])
            .map(|(a, b)| b * (a - mean) * (a - mean))
            .sum()
    }

    /// Reference: the plain O(k·n²) programme with directly computed costs (O(k·n³) here).
    /// Returns (starts, sse).
    fn brute_force(x: &[f64], w: Option<&[f64]>, k: usize) -> (Vec<usize>, f64) {
        let n = x.len();
        let ones = vec![1.0; n];
        let w = w.unwrap_or(&ones);
        let mut cost = vec![vec![0.0; n + 1]; n + 1];
        for (lo, row) in cost.iter_mut().enumerate() {
            for (hi, c) in row.iter_mut().enumerate().skip(lo + 1) {
                *c = direct_cost(x, w, lo, hi);
            }
        }
        // d[m][e] = best SSE of m clusters on x[..e]; arg[m][e] = start of the last one.
        let mut d = vec![vec![f64::INFINITY; n + 1]; k + 1];
        let mut arg = vec![vec![0usize; n + 1]; k + 1];
        d[0][0] = 0.0;
        for m in 1..=k {
            for e in m..=n {
                for j in m - 1..e {
                    let v = d[m - 1][j] + cost[j][e];
                    if v < d[m][e] {
                        d[m][e] = v;
                        arg[m][e] = j;
                    }
                }
            }
        }
        let mut starts = vec![0; k];
        let mut e = n;
        for m in (1..=k).rev() {
            starts[m - 1] = arg[m][e];
            e = arg[m][e];
        }
        (starts, d[k][n])
    }

    /// Asserts that `c` is a valid k-partition of `x` whose centroids and SSE match it.
    fn check_valid(x: &[f64], w: Option<&[f64]>, k: usize, c: &Clustering) {
        let n = x.len();
        assert_eq!(c.starts.len(), k);
        assert_eq!(c.centroids.len(), k);
        assert_eq!(c.starts[0], 0);
        assert!(
            c.starts.windows(2).all(|p| p[0] < p[1]),
            "starts {:?}",
            c.starts
        );
        assert!(*c.starts.last().unwrap() < n);
        let ones = vec![1.0; n];
        let wv = w.unwrap_or(&ones);
        let mut sse = 0.0;
        for (m, &lo) in c.starts.iter().enumerate() {
            let hi = c.starts.get(m + 1).copied().unwrap_or(n);
            sse += direct_cost(x, wv, lo, hi);
            assert!(c.centroids[m] >= x[lo] && c.centroids[m] <= x[hi - 1]);
        }
        assert!(
            close(sse, c.sse, x),
            "reported sse {} vs recomputed {}",
            c.sse,
            sse
        );
    }

    /// SSEs equal within 1e-9 relative, or within 1e-9 of the data's total scatter (for
    /// optima near zero, where prefix-sum rounding sets the floor).
    fn close(a: f64, b: f64, x: &[f64]) -> bool {
        let mean = x.iter().sum::<f64>() / x.len() as f64;
        let scatter: f64 = x.iter().map(|v| (v - mean) * (v - mean)).sum();
        let magnitude: f64 = x.iter().map(|v| v * v).sum();
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12 * scatter + 1e-14 * magnitude
    }

    /// Weighted 1-D Lloyd from centroids spread evenly over [min, max]; returns its SSE.
    fn lloyd(x: &[f64], w: &[f64], k: usize) -> f64 {
        let (lo, hi) = (x[0], x[x.len() - 1]);
        let mut cent: Vec<f64> = (0..k)
            .map(|m| lo + (hi - lo) * (m as f64 + 0.5) / k as f64)
            .collect();
        let assign = |cent: &[f64], v: f64| -> usize {
            let mut best = 0;
            for m in 1..cent.len() {
                if (v - cent[m]).abs() < (v - cent[best]).abs() {
                    best = m;
                }
            }
            best
        };
        for _ in 0..1000 {
            let mut sw = vec![0.0; k];
            let mut swx = vec![0.0; k];
            for (&v, &wt) in x.iter().zip(w) {
                let m = assign(&cent, v);
                sw[m] += wt;
                swx[m] += wt * v;
            }
            let next: Vec<f64> = (0..k)
                .map(|m| if sw[m] > 0.0 { swx[m] / sw[m] } else { cent[m] })
                .collect();
            if next == cent {
                break;
            }
            cent = next;
        }
        x.iter()
            .zip(w)
            .map(|(&v, &wt)| {
                let d = v - cent[assign(&cent, v)];
                wt * d * d
            })
            .sum()
    }

    /// Number of distinct values of a sorted slice.
    fn distinct(x: &[f64]) -> usize {
        1 + x.windows(2).filter(|p| p[0] != p[1]).count()
    }

    #[test]
    fn hand_checked_two_groups() {
        let x = [1.0, 2.0, 3.0, 10.0, 11.0, 12.0];
        let c = optimal_kmeans_1d(&x, None, 2);
        assert_eq!(c.starts, vec![0, 3]);
        assert_eq!(c.centroids, vec![2.0, 11.0]);
        assert!((c.sse - 4.0).abs() < 1e-12);
        let c = optimal_kmeans_1d(&x, None, 3);
        assert_eq!(c.starts.len(), 3);
        assert!((c.sse - 2.5).abs() < 1e-12, "{}", c.sse);
    }

    #[test]
    fn hand_checked_small_cases() {
        // k = 1: the mean; k = n: every value alone.
        let x = [0.0, 1.0, 5.0, 6.0];
        let c = optimal_kmeans_1d(&x, None, 1);
        assert_eq!(c.starts, vec![0]);
        assert_eq!(c.centroids, vec![3.0]);
        assert!((c.sse - 26.0).abs() < 1e-12);
        let c = optimal_kmeans_1d(&x, None, 4);
        assert_eq!(c.starts, vec![0, 1, 2, 3]);
        assert_eq!(c.centroids, x.to_vec());
        assert_eq!(c.sse, 0.0);
        // Three clusters of four points: {0,1} {5} {6} and {0} {1} {5,6} both cost 0.5; the
        // tie goes to the earliest start of the last cluster.
        let c = optimal_kmeans_1d(&x, None, 3);
        assert_eq!(c.starts, vec![0, 1, 2]);
        assert!((c.sse - 0.5).abs() < 1e-12);
        // Equally spaced: {0} {1,2} and {0,1} {2} tie; the last cluster starts earliest.
        let c = optimal_kmeans_1d(&[0.0, 1.0, 2.0], None, 2);
        assert_eq!(c.starts, vec![0, 1]);
        assert!((c.sse - 0.5).abs() < 1e-12);
        // A single value.
        let c = optimal_kmeans_1d(&[7.5], None, 1);
        assert_eq!((c.starts, c.centroids, c.sse), (vec![0], vec![7.5], 0.0));
        // Weights pull the centroid: 0 (weight 3) and 4 (weight 1) → mean 1, SSE 3 + 9.
        let c = optimal_kmeans_1d(&[0.0, 4.0, 100.0], Some(&[3.0, 1.0, 2.0]), 2);
        assert_eq!(c.starts, vec![0, 2]);
        assert_eq!(c.centroids, vec![1.0, 100.0]);
        assert!((c.sse - 12.0).abs() < 1e-12);
        // Huge offset: the shift keeps the cost exact enough to split correctly.
        let base = 1e9;
        let x: Vec<f64> = [0.0, 0.001, 0.002, 1.0, 1.001, 1.002]
            .iter()
            .map(|v| base + v)
            .collect();
        let c = optimal_kmeans_1d(&x, None, 2);
        assert_eq!(c.starts, vec![0, 3]);
    }

    #[test]
    fn empty_and_out_of_contract_inputs_do_not_panic() {
        let c = optimal_kmeans_1d(&[], None, 1);
        assert!(c.starts.is_empty() && c.centroids.is_empty() && c.sse == 0.0);
    }

    #[test]
    fn dedup_counts_runs() {
        let (v, w) = dedup_weighted(&[1.0, 1.0, 2.0, 3.0, 3.0, 3.0]);
        assert_eq!(v, vec![1.0, 2.0, 3.0]);
        assert_eq!(w, vec![2.0, 1.0, 3.0]);
        assert_eq!(dedup_weighted(&[]), (vec![], vec![]));
        let (v, w) = dedup_weighted(&[1.0, 1.0, 1.0, 2.0, 2.0, 10.0]);
        let c = optimal_kmeans_1d(&v, Some(&w), 2);
        assert_eq!(c.starts, vec![0, 2]);
        assert_eq!(c.centroids, vec![1.4, 10.0]);
        assert!((c.sse - 1.2).abs() < 1e-12);
    }

    #[test]
    fn smawk_matches_brute_force_on_monge_matrices() {
        let mut rng = Rng(7);
        let mut smawk = Smawk::new();
        for case in 0..600 {
            let rows = 1 + rng.below(40) as usize;
            let cols = 1 + rng.below(40) as usize;
            // M[i][j] = a_i + b_j - Σ_{p ≤ i, q ≤ j} N[p][q] with N ≥ 0 is Monge; small
            // integers keep every entry exact, so ties are real. Every other case is
            // infinite above the diagonal, like the programme's layers.
            let triangular = case % 2 == 0;
            let n: Vec<Vec<f64>> = (0..rows)
                .map(|_| {
                    (0..cols)
                        .map(|_| {
                            if rng.below(3) == 0 {
                                rng.below(3) as f64
                            } else {
                                0.0
                            }
                        })
                        .collect()
                })
                .collect();
            let a: Vec<f64> = (0..rows).map(|_| rng.below(5) as f64).collect();
            let b: Vec<f64> = (0..cols).map(|_| rng.below(5) as f64).collect();
            let mut m = vec![vec![0.0; cols]; rows];
            for i in 0..rows {
                for j in 0..cols {
                    let s: f64 = n[..=i]
                        .iter()
                        .map(|row| row[..=j].iter().sum::<f64>())
                        .sum();
                    m[i][j] = if triangular && j > i {
                        f64::INFINITY
                    } else {
                        a[i] + b[j] - s
                    };
                }
            }
            let c0 = 3;
            let mut arg = vec![0u32; rows];
            let mut val = vec![0.0; rows];
            smawk.row_minima(
                c0,
                rows,
                c0,
                cols,
                |i, j| m[i - c0][j - c0],
                &mut arg,
                &mut val,
            );
            for i in 0..rows {
                let mut best = 0;
                for j in 1..cols {
                    if m[i][j] < m[i][best] {
                        best = j;
                    }
                }
                assert_eq!(arg[i] as usize, best + c0, "case {case} row {i}");
                assert_eq!(val[i], m[i][best]);
            }
        }
    }

    #[test]
    fn smawk_matches_brute_force_on_programme_layers() {
        // Real layers (random data, random D column offsets): same minima as a full scan.
        let mut rng = Rng(9);
        let mut smawk = Smawk::new();
        for _ in 0..200 {
            let n = 1 + rng.below(300) as usize;
            let mut x: Vec<f64> = (0..n).map(|_| rng.laplace(1.0)).collect();
            x.sort_by(f64::total_cmp);
            let mut nodes = Vec::new();
            fill_prefix(&mut nodes, n, |t| (x[t], 1.0));
            for node in &mut nodes {
                node.d = rng.uniform() * 3.0;
            }
            let entry = |i: usize, j: usize| {
                if j > i {
                    f64::INFINITY
                } else {
                    nodes[j].d + seg_cost(&nodes[i + 1], &nodes[j])
                }
            };
            let c0 = rng.below(n as u64) as usize;
            let rows = n - c0;
            let mut arg = vec![0u32; rows];
            let mut val = vec![0.0; rows];
            smawk.row_minima(c0, rows, c0, rows, entry, &mut arg, &mut val);
            for t in 0..rows {
                let i = c0 + t;
                let best = (c0..n).map(|j| entry(i, j)).fold(f64::INFINITY, f64::min);
                let j = arg[t] as usize;
                assert!(j >= c0 && j <= i);
                assert!(
                    val[t] <= best + 1e-12 * best.abs(),
                    "row {i}: {} vs {best}",
                    val[t]
                );
                assert_eq!(val[t], entry(i, j));
            }
        }
    }

    #[test]
    fn pruning_changes_nothing_on_large_inputs() {
        // Large enough for the bound to come from the grouped programme.
        let mut rng = Rng(17);
        for case in 0..4 {
            let n = 9000 + rng.below(8000) as usize;
            let mut x: Vec<f64> = (0..n)
                .map(|_| match case {
                    0 => rng.laplace(0.02),
                    1 if rng.uniform() < 0.7 => 0.01 * rng.uniform(),
                    1 => 1.0 + 0.2 * rng.uniform(),
                    2 => (std::f64::consts::PI * (rng.uniform() - 0.5) * 0.999).tan(),
                    _ => rng.uniform(),
                })
                .collect();
            x.sort_by(f64::total_cmp);
            let (v, w) = dedup_weighted(&x);
            for k in [2, 5, 16] {
                let a = solve_with(&v, Some(&w), k, true);
                let b = solve_with(&v, Some(&w), k, false);
                check_valid(&v, Some(&w), k, &a);
                assert!(
                    close(a.sse, b.sse, &v),
                    "case {case} k {k}: {} vs {}",
                    a.sse,
                    b.sse
                );
            }
        }
    }

    #[test]
    fn pruning_changes_nothing() {
        let mut rng = Rng(13);
        for case in 0..60 {
            let n = 20 + rng.below(3000) as usize;
            let mut x: Vec<f64> = (0..n)
                .map(|_| match case % 3 {
                    0 => rng.laplace(0.1),
                    1 => rng.uniform(),
                    _ => (rng.below(40) as f64).powi(3),
                })
                .collect();
            x.sort_by(f64::total_cmp);
            let (v, w) = dedup_weighted(&x);
            for k in [2, 3, 4, 7, 16] {
                let k = k.min(v.len());
                let a = solve_with(&v, Some(&w), k, true);
                let b = solve_with(&v, Some(&w), k, false);
                check_valid(&v, Some(&w), k, &a);
                assert!(
                    close(a.sse, b.sse, &v),
                    "case {case} k {k}: {} vs {}",
                    a.sse,
                    b.sse
                );
            }
        }
    }

    #[test]
    fn matches_brute_force_on_fixed_random_inputs() {
        let mut rng = Rng(11);
        for case in 0..300 {
            let n = 1 + rng.below(40) as usize;
            let mut x: Vec<f64> = (0..n)
                .map(|_| (rng.below(50) as f64) * 0.37 - 4.0)
                .collect();
            x.sort_by(f64::total_cmp);
            let weighted = case % 2 == 1;
            let w: Vec<f64> = (0..n).map(|_| 0.25 + rng.uniform() * 4.0).collect();
            let w = weighted.then_some(&w[..]);
            let kmax = distinct(&x).min(8);
            for k in 1..=kmax {
                let c = optimal_kmeans_1d(&x, w, k);
                check_valid(&x, w, k, &c);
                let (_, best) = brute_force(&x, w, k);
                assert!(
                    close(c.sse, best, &x),
                    "case {case} k {k}: {} vs {}",
                    c.sse,
                    best
                );
            }
        }
    }

    #[test]
    fn weights_equal_expanded_duplicates() {
        let mut rng = Rng(5);
        for _ in 0..100 {
            let n = 1 + rng.below(30) as usize;
            let mut v: Vec<f64> = (0..n).map(|_| rng.laplace(1.0)).collect();
            v.sort_by(f64::total_cmp);
            v.dedup();
            let counts: Vec<f64> = v.iter().map(|_| 1.0 + rng.below(5) as f64).collect();
            let expanded: Vec<f64> = v
                .iter()
                .zip(&counts)
                .flat_map(|(&x, &c)| std::iter::repeat_n(x, c as usize))
                .collect();
            let (dv, dc) = dedup_weighted(&expanded);
            assert_eq!((&dv, &dc), (&v, &counts));
            for k in 1..=v.len().min(8) {
                let a = optimal_kmeans_1d(&v, Some(&counts), k);
                let b = optimal_kmeans_1d(&expanded, None, k);
                check_valid(&v, Some(&counts), k, &a);
                check_valid(&expanded, None, k, &b);
                assert!(
                    close(a.sse, b.sse, &expanded),
                    "k {k}: {} vs {}",
                    a.sse,
                    b.sse
                );
            }
        }
    }

    #[test]
    fn never_worse_than_lloyd() {
        let mut rng = Rng(3);
        for case in 0..40 {
            let n = 50 + rng.below(2000) as usize;
            let mut x: Vec<f64> = (0..n)
                .map(|_| {
                    if case % 2 == 0 {
                        rng.laplace(0.05)
                    } else {
                        rng.uniform() * 10.0 - 3.0
                    }
                })
                .collect();
            x.sort_by(f64::total_cmp);
            let (v, w) = dedup_weighted(&x);
            for k in [2, 3, 5, 8, 16] {
                let k = k.min(v.len());
                let c = optimal_kmeans_1d(&v, Some(&w), k);
                check_valid(&v, Some(&w), k, &c);
                let l = lloyd(&v, &w, k);
                assert!(
                    c.sse <= l * (1.0 + 1e-12) + 1e-12,
                    "case {case} k {k}: {} > lloyd {}",
                    c.sse,
                    l
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn prop_matches_brute_force(
            raw in prop::collection::vec(-1000i32..1000, 1..=60),
            scale in prop::sample::select(vec![1e-3, 1.0, 1e3]),
            weights in prop::collection::vec(1u32..20, 60),
            weighted: bool,
            k_seed: usize,
        ) {
            let mut x: Vec<f64> = raw.iter().map(|&v| f64::from(v) * scale).collect();
            x.sort_by(f64::total_cmp);
            let w: Vec<f64> = weights[..x.len()].iter().map(|&v| f64::from(v) * 0.5).collect();
            let w = weighted.then_some(&w[..]);
            let k = 1 + k_seed % distinct(&x).min(8);
            let c = optimal_kmeans_1d(&x, w, k);
            check_valid(&x, w, k, &c);
            let (_, best) = brute_force(&x, w, k);
            prop_assert!(close(c.sse, best, &x), "k {}: {} vs {}", k, c.sse, best);
        }
    }
}
