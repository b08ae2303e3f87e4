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
//! Clustering in 1D" (2017). The whole solve is `O(k·n)` time after sorting, with `O(1)`
//! cluster costs from prefix sums of `w`, `w·x` and `w·x²`.
//!
//! Memory: a `u32` argmin table of `(k-2)·(n-k+1)` entries for the backtrack, the prefix
//! sums, and two `f64` rows of the programme — about `4·k·n + 56·n` bytes in all.
//!
//! Repeated values: pass distinct values with their multiplicities as weights
//! ([`dedup_weighted`]). The programme is then smaller, and no cluster boundary can fall
//! between equal values.

/// Optimal partition of sorted values into k contiguous clusters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Clustering {
    /// Start index (into the sorted input) of each cluster; starts[0] == 0, strictly increasing.
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
/// Ties between equally good partitions are broken deterministically: each cluster, from
/// the last one backwards, starts as early as possible.
///
/// Outside the contract this does not panic either: an empty input gives an empty
/// clustering, `k` is clamped to `1..=n`, and a mismatched weight slice is ignored in
/// release builds (all weights 1). `|x|` beyond about `1e150` overflows the sums of squares.
pub(crate) fn optimal_kmeans_1d(sorted: &[f64], weights: Option<&[f64]>, k: usize) -> Clustering {
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
        solve(sorted, weights, k)
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
        let mean = (swx / sw).clamp(sorted[lo], sorted[hi - 1]);
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

/// Entry `(i, j)` of a layer's matrix, `D[m-1][j-1] + cost(j, i)`, from the prefix after
/// row `i` and the prefix before column `j`; `+∞` when `j > i` (detected by the weight
/// prefixes, which strictly increase).
#[inline(always)]
fn entry(row: &Node, col: &Node) -> f64 {
    if row.w > col.w {
        col.d + seg_cost(row, col)
    } else {
        f64::INFINITY
    }
}

/// Prefix sums (compensated) of `w`, `w·x`, `w·x²` of the values shifted by their weighted
/// mean; entry `t` covers values `0..t`. The weight prefix is forced strictly increasing
/// so that every cluster's weight is positive.
fn prefix_nodes(sorted: &[f64], weights: Option<&[f64]>) -> Vec<Node> {
    let n = sorted.len();
    let (mut sw, mut swx) = (0.0, 0.0);
    for (i, &x) in sorted.iter().enumerate() {
        let w = weight_at(weights, i);
        sw += w;
        swx += w * x;
    }
    let shift = (swx / sw).clamp(sorted[0], sorted[n - 1]);
    let mut nodes = Vec::with_capacity(n + 1);
    nodes.push(Node::default());
    let (mut a, mut b, mut c) = (Kahan::default(), Kahan::default(), Kahan::default());
    let mut last_w = 0.0f64;
    for (i, &x) in sorted.iter().enumerate() {
        let w = weight_at(weights, i);
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
    nodes
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

/// The dynamic programme for `2 ≤ k < n`; returns the cluster starts.
fn solve(sorted: &[f64], weights: Option<&[f64]>, k: usize) -> Vec<usize> {
    let n = sorted.len();
    let mut nodes = prefix_nodes(sorted, weights);
    // Layer m (1-based) needs rows i in [m-1, n-k+m-1]: m clusters on 0..=i leave at least
    // k-m values for the rest. Every layer has the same number of rows.
    let rows = n - k + 1;
    // cur[i - (m-1)] = D[m][i].
    let mut cur: Vec<f64> = (0..rows)
        .map(|i| seg_cost(&nodes[i + 1], &nodes[0]))
        .collect();
    // Argmin tables of layers 2..=k-1 (layer 1 always starts at 0).
    let mut table = vec![0u32; (k - 2) * rows];
    let mut smawk = Smawk::new();
    for m in 2..k {
        let c0 = m - 1;
        // Column j (cluster starting at j) carries D[m-1][j-1]; j - 1 - (m-2) = j - c0.
        for (node, &d) in nodes[c0..c0 + rows].iter_mut().zip(&cur) {
            node.d = d;
        }
        let arg = &mut table[(m - 2) * rows..(m - 1) * rows];
        if std::env::var_os("KM_DC").is_some() {
            dc(
                c0,
                c0 + rows - 1,
                c0,
                c0 + rows - 1,
                &nodes,
                c0,
                arg,
                &mut cur,
            );
        } else {
            // Row i is keyed by the prefix after it, column j by the prefix before it.
            let row_keys = &nodes[c0 + 1..c0 + 1 + rows];
            let col_keys = &nodes[c0..c0 + rows];
            smawk.row_minima(row_keys, col_keys, c0 as u32, entry, arg, &mut cur);
        }
    }
    // Last layer: only row n-1 is needed.
    let c0 = k - 1;
    let last = &nodes[n];
    let mut best_j = c0;
    let mut best = f64::INFINITY;
    for (off, &d) in cur.iter().enumerate() {
        let j = c0 + off;
        let v = d + seg_cost(last, &nodes[j]);
        if v < best {
            best = v;
            best_j = j;
        }
    }
    // Backtrack.
    let mut starts = vec![0usize; k];
    starts[k - 1] = best_j;
    let mut i = best_j - 1;
    for m in (2..k).rev() {
        let j = table[(m - 2) * rows + (i - (m - 1))] as usize;
        starts[m - 1] = j;
        i = j - 1;
    }
    starts
}

/// D&C.
#[allow(clippy::too_many_arguments)]
fn dc(
    lo: usize,
    hi: usize,
    optlo: usize,
    opthi: usize,
    nodes: &[Node],
    r0: usize,
    arg: &mut [u32],
    val: &mut [f64],
) {
    let mid = (lo + hi) / 2;
    let end = opthi.min(mid);
    let h = &nodes[mid + 1];
    let mut best = f64::INFINITY;
    let mut bj = optlo;
    for (j, lo) in nodes[optlo..=end].iter().enumerate() {
        let v = lo.d + seg_cost(h, lo);
        if v < best {
            best = v;
            bj = j;
        }
    }
    let bj = bj + optlo;
    arg[mid - r0] = bj as u32;
    val[mid - r0] = best;
    if lo < mid {
        dc(lo, mid - 1, optlo, bj, nodes, r0, arg, val);
    }
    if mid < hi {
        dc(mid + 1, hi, bj, opthi, nodes, r0, arg, val);
    }
}

/// Where a level's rows or columns live: the caller's slices or the level buffers.
#[derive(Clone, Copy, Debug)]
enum Span {
    /// The whole input slice (level 0).
    Base,
    /// `len` entries from `off` in the level buffers.
    Buf {
        /// First entry.
        off: usize,
        /// Number of entries.
        len: usize,
    },
}

/// One SMAWK recursion level.
#[derive(Clone, Copy, Debug)]
struct Level {
    /// The level's candidate columns (after REDUCE).
    cols: Span,
    /// The level's rows.
    rows: Span,
    /// Position of its first row in the original row range.
    first: usize,
    /// Distance between its rows in the original row range.
    step: usize,
    /// Number of rows.
    count: usize,
}

/// Reusable buffers for iterative SMAWK on a matrix given by row keys `R`, column keys `C`
/// and an entry function of the two.
///
/// Level `l` of the recursion has the rows `first_l + t·2^l` (`t < count_l`) of the
/// original range. Every level's rows and reduced columns are copied into contiguous
/// buffers (keys, not indices), so each level streams through packed memory instead of
/// striding across the whole input: the matrix is far larger than the caches, and this
/// packing is what makes the solve fast.
struct Smawk<R, C> {
    /// Column ids of level 0 (`c0..c0+ncols`).
    base_ids: Vec<u32>,
    /// Column ids of the reduced lists of all levels, back to back.
    col_ids: Vec<u32>,
    /// Column keys matching `col_ids`.
    col_keys: Vec<C>,
    /// Row keys of levels 1.., back to back.
    row_keys: Vec<R>,
    /// REDUCE's stack cache: `cache[t]` is the entry of stack column `t` in row `t`.
    cache: Vec<f64>,
    /// The levels of the current call.
    levels: Vec<Level>,
}

impl<R: Copy + Default, C: Copy + Default> Smawk<R, C> {
    /// Empty buffers; they grow to the largest matrix seen.
    fn new() -> Self {
        Smawk {
            base_ids: Vec::new(),
            col_ids: Vec::new(),
            col_keys: Vec::new(),
            row_keys: Vec::new(),
            cache: Vec::new(),
            levels: Vec::with_capacity(usize::BITS as usize + 1),
        }
    }

    /// Leftmost row minima of the totally monotone matrix `entry(rows[i], cols[j])`:
    /// `arg[i]` gets `c0 + j` for the minimising `j` and `val[i]` the minimum.
    ///
    /// Total monotonicity is in the leftmost-minimum sense (`M[i][a] > M[i][b]` for
    /// `a < b` implies the same for every later row); `+∞` entries are allowed where
    /// they keep that, as in a matrix that is infinite above a staircase. Each row needs a
    /// finite entry at or left of the previous row's minimum, or in column 0 for row 0.
    /// Column ids must fit in `u32`.
    fn row_minima<F: Fn(&R, &C) -> f64>(
        &mut self,
        rows: &[R],
        cols: &[C],
        c0: u32,
        entry: F,
        arg: &mut [u32],
        val: &mut [f64],
    ) {
        let (nrows, ncols) = (rows.len(), cols.len());
        if nrows == 0 || ncols == 0 {
            return;
        }
        self.base_ids.clear();
        self.base_ids.extend((0..ncols).map(|t| c0 + t as u32));
        // Reduced lists hold at most as many columns as their level has rows: ≤ 2·nrows.
        if self.col_ids.len() < 2 * nrows {
            self.col_ids.resize(2 * nrows, 0);
            self.col_keys.resize(2 * nrows, C::default());
        }
        if self.cache.len() < nrows {
            self.cache.resize(nrows, 0.0);
        }
        self.row_keys.clear();
        self.row_keys.reserve(nrows);
        self.levels.clear();

        // Forward: REDUCE each level's columns to at most its row count, and pack the odd
        // rows as the next level's rows.
        let mut col_span = Span::Base;
        let mut in_len = ncols;
        let mut row_span = Span::Base;
        let mut top = 0usize;
        let (mut first, mut step, mut count) = (0usize, 1usize, nrows);
        while count > 0 {
            if in_len > count {
                let level_rows = match row_span {
                    Span::Base => rows,
                    Span::Buf { off, len } => &self.row_keys[off..off + len],
                };
                let (ids_head, ids_tail) = self.col_ids.split_at_mut(top);
                let (keys_head, keys_tail) = self.col_keys.split_at_mut(top);
                let (src_ids, src_keys) = match col_span {
                    Span::Base => (&self.base_ids[..], cols),
                    Span::Buf { off, len } => {
                        (&ids_head[off..off + len], &keys_head[off..off + len])
                    }
                };
                let len = reduce(
                    src_ids,
                    src_keys,
                    level_rows,
                    &mut ids_tail[..count],
                    &mut keys_tail[..count],
                    &mut self.cache,
                    &entry,
                );
                col_span = Span::Buf { off: top, len };
                in_len = len;
                top += len;
            }
            self.levels.push(Level {
                cols: col_span,
                rows: row_span,
                first,
                step,
                count,
            });
            let next = count / 2;
            if next > 0 {
                let off = self.row_keys.len();
                match row_span {
                    Span::Base => self.row_keys.extend(rows.iter().skip(1).step_by(2)),
                    Span::Buf { off: o, .. } => {
                        for t in (1..count).step_by(2) {
                            let key = self.row_keys[o + t];
                            self.row_keys.push(key);
                        }
                    }
                }
                row_span = Span::Buf { off, len: next };
            }
            first += step;
            step *= 2;
            count = next;
        }

        // Backward: INTERPOLATE each level's even rows between its odd rows' minima (found
        // one level deeper), scanning its column list once from left to right.
        for level in self.levels.iter().rev() {
            let level_rows = match level.rows {
                Span::Base => rows,
                Span::Buf { off, len } => &self.row_keys[off..off + len],
            };
            let (ids, keys) = match level.cols {
                Span::Base => (&self.base_ids[..], cols),
                Span::Buf { off, len } => (
                    &self.col_ids[off..off + len],
                    &self.col_keys[off..off + len],
                ),
            };
            let last = ids.len() - 1;
            let mut d = 0usize;
            for (t, row) in level_rows.iter().enumerate().step_by(2) {
                let pos = level.first + t * level.step;
                let stop = if t + 1 < level.count {
                    arg[pos + level.step]
                } else {
                    ids[last]
                };
                let mut best_id = ids[d];
                let mut best = entry(row, &keys[d]);
                while d < last && ids[d] < stop {
                    d += 1;
                    let v = entry(row, &keys[d]);
                    if v < best {
                        best = v;
                        best_id = ids[d];
                    }
                }
                arg[pos] = best_id;
                val[pos] = best;
            }
        }
    }
}

/// SMAWK's REDUCE: keeps at most `dst_ids.len()` columns of the source list (in order) that
/// contain every leftmost row minimum of `rows`; returns how many it wrote.
#[inline(always)]
fn reduce<R, C: Copy, F: Fn(&R, &C) -> f64>(
    src_ids: &[u32],
    src_keys: &[C],
    rows: &[R],
    dst_ids: &mut [u32],
    dst_keys: &mut [C],
    cache: &mut [f64],
    entry: &F,
) -> usize {
    let cap = dst_ids.len().min(rows.len());
    let mut len = 0usize;
    for (&id, key) in src_ids.iter().zip(src_keys) {
        // Pop stack columns that lose to this one in their own row: by total
        // monotonicity they lose in every later row too, and in earlier rows they already
        // lost to the column below them.
        while len > 0 {
            let v = entry(&rows[len - 1], key);
            if cache[len - 1] > v {
                len -= 1;
            } else {
                break;
            }
        }
        if len < cap {
            dst_ids[len] = id;
            dst_keys[len] = *key;
            cache[len] = entry(&rows[len], key);
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
        for lo in 0..n {
            for hi in lo + 1..=n {
                cost[lo][hi] = direct_cost(x, w, lo, hi);
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
        let mut smawk: Smawk<usize, usize> = Smawk::new();
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
            let row_keys: Vec<usize> = (0..rows).collect();
            let col_keys: Vec<usize> = (0..cols).collect();
            let c0 = 3;
            let mut arg = vec![0u32; rows];
            let mut val = vec![0.0; rows];
            smawk.row_minima(
                &row_keys,
                &col_keys,
                c0,
                |&i, &j| m[i][j],
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
                assert_eq!(arg[i], best as u32 + c0, "case {case} row {i}");
                assert_eq!(val[i], m[i][best]);
            }
        }
    }

    #[test]
    fn smawk_matches_brute_force_on_programme_layers() {
        // Real layers (random data, random D column offsets): same minima as a full scan.
        let mut rng = Rng(9);
        let mut smawk: Smawk<Node, Node> = Smawk::new();
        for _ in 0..200 {
            let n = 1 + rng.below(300) as usize;
            let mut x: Vec<f64> = (0..n).map(|_| rng.laplace(1.0)).collect();
            x.sort_by(f64::total_cmp);
            let mut nodes = prefix_nodes(&x, None);
            for node in &mut nodes {
                node.d = rng.uniform() * 3.0;
            }
            let c0 = rng.below(n as u64) as usize;
            let rows = n - c0;
            let mut arg = vec![0u32; rows];
            let mut val = vec![0.0; rows];
            let (row_keys, col_keys) = (&nodes[c0 + 1..c0 + 1 + rows], &nodes[c0..c0 + rows]);
            smawk.row_minima(row_keys, col_keys, c0 as u32, entry, &mut arg, &mut val);
            for (i, r) in row_keys.iter().enumerate() {
                let best = col_keys
                    .iter()
                    .map(|c| entry(r, c))
                    .fold(f64::INFINITY, f64::min);
                assert!(arg[i] as usize <= c0 + i);
                assert!(
                    val[i] <= best + 1e-12 * best.abs(),
                    "row {i}: {} vs {best}",
                    val[i]
                );
                assert_eq!(val[i], entry(r, &col_keys[arg[i] as usize - c0]));
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

    /// The codebook case: 1,000,000 Laplace-like weights, k = 16. Timing printed; run with
    /// `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing run; use --release --ignored --nocapture"]
    fn laplace_million_k16() {
        let mut rng = Rng(42);
        let mut x: Vec<f64> = (0..1_000_000).map(|_| rng.laplace(0.02)).collect();
        // As f32 network weights would be: some values repeat.
        let mut xf: Vec<f64> = x.iter().map(|&v| f64::from(v as f32)).collect();
        x.sort_by(f64::total_cmp);
        xf.sort_by(f64::total_cmp);
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let c = optimal_kmeans_1d(&x, None, 16);
            let dp = t.elapsed();
            let t = std::time::Instant::now();
            let (v, w) = dedup_weighted(&xf);
            let d = optimal_kmeans_1d(&v, Some(&w), 16);
            let both = t.elapsed();
            println!(
                "n=1e6 k=16: DP {dp:?} (sse {:.6e}); f32 data: dedup {} distinct + DP {both:?} (sse {:.6e})",
                c.sse,
                v.len(),
                d.sse
            );
            let l = lloyd(&v, &w, 16);
            println!("  lloyd sse {l:.6e}");
            assert!(d.sse <= l * (1.0 + 1e-12));
        }
    }
}
