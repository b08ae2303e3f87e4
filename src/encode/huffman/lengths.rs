//! Code lengths: optimal Huffman lengths (two-queue build), and optimal length-limited
//! ones (package-merge) when the Huffman code would be too deep.

/// The used symbols (count > 0) as `(count, symbol)`, sorted by count, then symbol.
fn used_sorted(counts: &[u64]) -> Vec<(u64, usize)> {
    let mut used: Vec<(u64, usize)> = counts
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c > 0)
        .map(|(s, &c)| (c, s))
        .collect();
    used.sort_unstable();
    used
}

/// Optimal code lengths for `counts`, no longer than `limit`: the Huffman lengths when
/// they fit, else package-merge's. Unused symbols get 0; a single used symbol gets 1.
///
/// The caller guarantees `Σ counts` fits u64 and at most `2^limit` symbols are used.
pub(super) fn code_lengths(counts: &[u64], limit: u8) -> Vec<u8> {
    let used = used_sorted(counts);
    let mut lengths = vec![0u8; counts.len()];
    if let [(_, s)] = used[..] {
        lengths[s] = 1;
    } else if used.len() > 1 {
        let depths = huffman_depths(&used);
        let fit = depths.iter().all(|&d| d <= limit as usize);
        let depths = if fit {
            depths
        } else {
            package_merge(&used, limit)
        };
        for (&(_, s), d) in used.iter().zip(depths) {
            lengths[s] = d as u8;
        }
    }
    lengths
}

/// Huffman's code lengths of ≥ 2 leaves sorted by weight, by the two-queue method: the
/// merged nodes are created in increasing weight order, so the two lightest nodes are
/// always at the fronts of the leaf queue and the merged-node queue.
fn huffman_depths(leaves: &[(u64, usize)]) -> Vec<usize> {
    let n = leaves.len();
    // Node ids: leaves 0..n, merged nodes n..2n-1 (the root last).
    let mut weight: Vec<u64> = leaves.iter().map(|&(c, _)| c).collect();
    weight.reserve(n - 1);
    let mut parent = vec![0usize; 2 * n - 1];
    let (mut next_leaf, mut next_merged) = (0, n);
    let mut lightest = |weight: &[u64]| {
        let take_leaf = next_leaf < n
            && (next_merged >= weight.len() || weight[next_leaf] <= weight[next_merged]);
        if take_leaf {
            next_leaf += 1;
            next_leaf - 1
        } else {
            next_merged += 1;
            next_merged - 1
        }
    };
    for node in n..2 * n - 1 {
        let (a, b) = (lightest(&weight), lightest(&weight));
        weight.push(weight[a] + weight[b]);
        parent[a] = node;
        parent[b] = node;
    }
    // Depths from the root down: a parent's id is above its children's.
    let mut depth = vec![0usize; 2 * n - 1];
    for node in (0..2 * n - 2).rev() {
        depth[node] = depth[parent[node]] + 1;
    }
    depth.truncate(n);
    depth
}

/// Optimal code lengths of at most `limit` bits for ≥ 2 leaves sorted by weight (at most
/// `2^limit` of them), by package-merge (Larmore & Hirschberg 1990).
///
/// The coin collector's view: every leaf is a coin of each denomination `2^-l`, l =
/// 1..=limit. From the smallest denomination up, the list of a level is its leaves
/// merged with the pairs ("packages") of the level below, by weight. A leaf's length is
/// the number of levels at which it is among the items selected, starting from the
/// lightest `2n − 2` items of the top level; a selected package selects the two items
/// of the level below that it was made of, and those are always a prefix of that list.
fn package_merge(leaves: &[(u64, usize)], limit: u8) -> Vec<usize> {
    let n = leaves.len();
    let leaf_weights: Vec<u128> = leaves.iter().map(|&(c, _)| c as u128).collect();
    // For each level, deepest first: whether each item of its list is a leaf.
    let mut is_leaf: Vec<Vec<bool>> = vec![vec![true; n]];
    let mut list = leaf_weights.clone();
    for _ in 1..limit {
        let packages: Vec<u128> = list.chunks_exact(2).map(|p| p[0] + p[1]).collect();
        let (mut merged, mut flags) = (Vec::with_capacity(n + packages.len()), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < n || j < packages.len() {
            if j == packages.len() || (i < n && leaf_weights[i] <= packages[j]) {
                merged.push(leaf_weights[i]);
                flags.push(true);
                i += 1;
            } else {
                merged.push(packages[j]);
                flags.push(false);
                j += 1;
            }
        }
        is_leaf.push(flags);
        list = merged;
    }
    let mut lengths = vec![0usize; n];
    let mut selected = 2 * n - 2;
    for flags in is_leaf.iter().rev() {
        let leaves_selected = flags[..selected].iter().filter(|&&l| l).count();
        for len in &mut lengths[..leaves_selected] {
            *len += 1;
        }
        selected = 2 * (selected - leaves_selected);
    }
    lengths
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cost(leaves: &[(u64, usize)], lengths: &[usize]) -> u128 {
        leaves
            .iter()
            .zip(lengths)
            .map(|(&(c, _), &l)| c as u128 * l as u128)
            .sum()
    }

    fn kraft_ok(lengths: &[usize]) -> bool {
        lengths.iter().map(|&l| 1u128 << (64 - l)).sum::<u128>() <= 1u128 << 64
    }

    proptest! {
        /// With a limit that does not bind, package-merge finds Huffman's cost.
        #[test]
        fn package_merge_matches_huffman_when_unconstrained(counts in prop::collection::vec(1u64..1000, 2..60)) {
            let leaves = used_sorted(&counts);
            let h = huffman_depths(&leaves);
            let limit = *h.iter().max().unwrap() as u8;
            let pm = package_merge(&leaves, limit);
            prop_assert!(kraft_ok(&h) && kraft_ok(&pm));
            prop_assert_eq!(cost(&leaves, &pm), cost(&leaves, &h));
        }

        /// A binding limit is respected, Kraft holds, and the cost is no better than
        /// Huffman's.
        #[test]
        fn package_merge_respects_the_limit(counts in prop::collection::vec(1u64..1_000_000, 2..40), limit in 6u8..9) {
            let leaves = used_sorted(&counts);
            let pm = package_merge(&leaves, limit);
            prop_assert!(pm.iter().all(|&l| (1..=limit as usize).contains(&l)));
            prop_assert!(kraft_ok(&pm));
            prop_assert!(cost(&leaves, &pm) >= cost(&leaves, &huffman_depths(&leaves)));
        }
    }

    /// Fibonacci counts make Huffman's tree a chain; package-merge caps it, and matches
    /// the brute-force optimum on a small case.
    #[test]
    fn fibonacci_counts_are_limited() {
        let mut fib = vec![1u64, 1];
        while fib.len() < 30 {
            fib.push(fib[fib.len() - 1] + fib[fib.len() - 2]);
        }
        let lengths = code_lengths(&fib, 16);
        assert_eq!(*lengths.iter().max().unwrap(), 16);
        assert!(
            huffman_depths(&used_sorted(&fib))
                .into_iter()
                .max()
                .unwrap()
                > 16
        );
        // Counts 1, 1, 2, 3, 5 in at most 3 bits: Huffman's chain (4, 4, 3, 2, 1) costs 25;
        // the best limited lengths, (3, 3, 2, 2, 2) or (3, 3, 3, 3, 1), cost 26.
        let small = used_sorted(&[1, 1, 2, 3, 5]);
        assert_eq!(cost(&small, &huffman_depths(&small)), 25);
        let pm = package_merge(&small, 3);
        assert!(pm.iter().all(|&l| l <= 3));
        assert_eq!(cost(&small, &pm), 26);
    }
}
