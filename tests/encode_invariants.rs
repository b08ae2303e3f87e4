//! Property tests of the storage formats and Huffman coding, through the public API.

use proptest::prelude::*;
use slimnn::Mask;
use slimnn::encode::huffman::{BitStream, HuffmanCode, MAX_CODE_LEN, entropy_bits, symbol_counts};
use slimnn::encode::{
    BitmaskSparse, Csc, Csr, NmSparse, RelativeIndex, RelativeIndexSparse, SparseFormat,
};

/// A dense matrix with many zeros, and maybe a mask (which also drops some non-zeros
/// and keeps some zeros).
#[derive(Debug, Clone)]
struct Case {
    shape: [usize; 2],
    values: Vec<f32>,
    mask: Option<Mask>,
}

impl Case {
    /// The positions a format must store.
    fn expected_mask(&self) -> Mask {
        match &self.mask {
            Some(m) => m.clone(),
            None => Mask::from_fn(&self.shape, |i| self.values[i] != 0.0),
        }
    }

    /// The masked dense values.
    fn expected_dense(&self) -> Vec<f32> {
        let m = self.expected_mask();
        (0..self.values.len())
            .map(|i| if m.get(i) { self.values[i] } else { 0.0 })
            .collect()
    }
}

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => Just(0.0f32),
        1 => Just(-0.0f32),
        4 => -3.0f32..3.0,
        1 => (-8i8..=8).prop_map(|x| x as f32 * 0.25),
    ]
}

fn case_with_cols(cols: impl Strategy<Value = usize>) -> impl Strategy<Value = Case> {
    (0usize..9, cols)
        .prop_flat_map(|(r, c)| {
            (
                Just([r, c]),
                prop::collection::vec(value(), r * c),
                prop::option::of(prop::collection::vec(any::<bool>(), r * c)),
            )
        })
        .prop_map(|(shape, values, keep)| Case {
            shape,
            values,
            mask: keep.map(|k| Mask::from_fn(&shape, |i| k[i])),
        })
}

fn case() -> impl Strategy<Value = Case> {
    case_with_cols(0usize..13)
}

/// The shared contract: dense values and mask round-trip, serialization round-trips in
/// exactly `storage_bits().div_ceil(8)` bytes and leaves what follows unread.
fn check_format<F: SparseFormat + PartialEq + std::fmt::Debug>(
    f: &F,
    case: &Case,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(f.shape(), case.shape);
    prop_assert_eq!(f.to_dense(), case.expected_dense());
    prop_assert_eq!(f.mask(), case.expected_mask());
    prop_assert_eq!(f.nnz(), case.expected_mask().count_kept());
    check_bytes(f)
}

fn check_bytes<F: SparseFormat + PartialEq + std::fmt::Debug>(f: &F) -> Result<(), TestCaseError> {
    let mut bytes = vec![];
    f.write_to(&mut bytes);
    prop_assert_eq!(bytes.len(), f.storage_bits().div_ceil(8));
    bytes.extend_from_slice(b"next");
    let mut rest = &bytes[..];
    let back = F::read_from(&mut rest).unwrap();
    prop_assert_eq!(rest, b"next");
    prop_assert_eq!(&back, f);
    Ok(())
}

/// An N:M case: `(n, m, case with a mask of at most n kept per group, full)`, where
/// `full` cases keep exactly n per group.
fn nm_case() -> impl Strategy<Value = (usize, usize, Case, bool)> {
    (
        (1usize..=8).prop_flat_map(|m| (1..=m, Just(m))),
        0usize..6,
        0usize..5,
        any::<bool>(),
    )
        .prop_flat_map(|((n, m), rows, groups, full)| {
            let sizes = if full { n..=n } else { 0..=n };
            (
                Just((n, m, full)),
                Just([rows, groups * m]),
                prop::collection::vec(
                    prop::sample::subsequence((0..m).collect::<Vec<_>>(), sizes),
                    rows * groups,
                ),
                prop::collection::vec(value(), rows * groups * m),
            )
        })
        .prop_map(|((n, m, full), shape, kept, values)| {
            let mut keep = vec![false; values.len()];
            for (g, js) in kept.iter().enumerate() {
                for &j in js {
                    keep[g * m + j] = true;
                }
            }
            let mask = Some(Mask::from_fn(&shape, |i| keep[i]));
            (
                n,
                m,
                Case {
                    shape,
                    values,
                    mask,
                },
                full,
            )
        })
}

/// A strictly increasing set of positions in `0..len` with long gaps, and `len`.
fn sparse_positions() -> impl Strategy<Value = (usize, Vec<usize>)> {
    prop::collection::vec(
        prop_oneof![
            1usize..4,
            1usize..300,
            Just(255),
            Just(256),
            Just(257),
            Just(511)
        ],
        0..30,
    )
    .prop_flat_map(|gaps| {
        let mut positions = vec![];
        let mut p: isize = -1;
        for g in gaps {
            p += g as isize;
            positions.push(p as usize);
        }
        let end = positions.last().map_or(0, |&p| p + 1);
        (end..end + 40).prop_map(move |len| (len, positions.clone()))
    })
}

/// A symbol sequence over a small alphabet with a skewed distribution.
fn symbols() -> impl Strategy<Value = Vec<u16>> {
    (1u16..70).prop_flat_map(|alphabet| {
        prop::collection::vec((0u16..alphabet, 0u16..alphabet), 0..400)
            .prop_map(|pairs| pairs.into_iter().map(|(a, b)| a.min(b)).collect())
    })
}

/// Counts spanning many orders of magnitude, so the 16-bit limit binds.
fn skewed_counts() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(
        prop_oneof![Just(0u64), (0u32..45).prop_map(|k| 1u64 << k)],
        2..80,
    )
}

fn is_prefix_free(code: &HuffmanCode) -> bool {
    let codes: Vec<(u16, u8)> = (0..code.alphabet_size())
        .filter_map(|s| code.code(s as u16))
        .collect();
    codes.iter().enumerate().all(|(i, &(a, la))| {
        codes
            .iter()
            .enumerate()
            .all(|(j, &(b, lb))| i == j || la > lb || (b >> (lb - la)) != a)
    })
}

fn kraft_sum(lengths: &[u8]) -> f64 {
    lengths
        .iter()
        .filter(|&&l| l > 0)
        .map(|&l| 0.5f64.powi(l as i32))
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn csr_round_trips(case in case()) {
        let csr = Csr::from_dense(&case.values, case.shape, case.mask.as_ref()).unwrap();
        check_format(&csr, &case)?;
        prop_assert_eq!(csr.row_ptr().len(), case.shape[0] + 1);
        prop_assert_eq!(csr.row_ptr()[case.shape[0]] as usize, csr.nnz());
        prop_assert_eq!(csr.col_idx().len(), csr.values().len());
        prop_assert_eq!(csr.storage_bits(), 64 + 32 * (case.shape[0] + 1) + 64 * csr.nnz());
        for r in 0..case.shape[0] {
            let (a, b) = (csr.row_ptr()[r] as usize, csr.row_ptr()[r + 1] as usize);
            prop_assert!(csr.col_idx()[a..b].windows(2).all(|w| w[0] < w[1]));
            for k in a..b {
                prop_assert_eq!(csr.values()[k], case.expected_dense()[r * case.shape[1] + csr.col_idx()[k] as usize]);
            }
        }
    }

    #[test]
    fn csc_round_trips(case in case()) {
        let csc = Csc::from_dense(&case.values, case.shape, case.mask.as_ref()).unwrap();
        check_format(&csc, &case)?;
        prop_assert_eq!(csc.col_ptr().len(), case.shape[1] + 1);
        prop_assert_eq!(csc.storage_bits(), 64 + 32 * (case.shape[1] + 1) + 64 * csc.nnz());
        for c in 0..case.shape[1] {
            let (a, b) = (csc.col_ptr()[c] as usize, csc.col_ptr()[c + 1] as usize);
            prop_assert!(csc.row_idx()[a..b].windows(2).all(|w| w[0] < w[1]));
            for k in a..b {
                prop_assert_eq!(csc.values()[k], case.expected_dense()[csc.row_idx()[k] as usize * case.shape[1] + c]);
            }
        }
    }

    #[test]
    fn bitmask_round_trips(case in case()) {
        let b = BitmaskSparse::from_dense(&case.values, case.shape, case.mask.as_ref()).unwrap();
        check_format(&b, &case)?;
        let n = case.shape[0] * case.shape[1];
        prop_assert_eq!(b.storage_bits(), 64 + n + 32 * b.nnz());
        let kept: Vec<f32> = case.expected_mask().iter_kept().map(|i| case.values[i]).collect();
        prop_assert_eq!(b.values(), &kept[..]);
    }

    #[test]
    fn relative_index_sparse_round_trips(case in case(), bits in 1u8..=8) {
        let s = RelativeIndexSparse::from_dense(&case.values, case.shape, case.mask.as_ref(), bits).unwrap();
        check_format(&s, &case)?;
        let idx = s.index();
        prop_assert_eq!(idx.nnz(), s.nnz());
        prop_assert_eq!(idx.len(), case.shape[0] * case.shape[1]);
        prop_assert_eq!(s.storage_bits(), 136 + bits as usize * idx.symbols().len() + 32 * s.nnz());
    }

    /// Positions round-trip for every width, long gaps included, with exactly
    /// `Σ floor((gap − 1) / F)` fillers of `F = 2^b − 1`.
    #[test]
    fn relative_index_positions_round_trip((len, positions) in sparse_positions()) {
        let mask = Mask::from_fn(&[len], |i| positions.binary_search(&i).is_ok());
        for bits in 1u8..=8 {
            let index = RelativeIndex::from_mask(&mask, bits).unwrap();
            let filler = (1usize << bits) - 1;
            prop_assert_eq!(index.filler() as usize, filler);
            prop_assert_eq!(index.positions().collect::<Vec<_>>(), positions.clone());
            prop_assert_eq!(index.to_mask(&[len]).unwrap(), mask.clone());
            let mut prev = -1isize;
            let mut fillers = 0;
            for &p in &positions {
                fillers += (p as isize - prev - 1) as usize / filler;
                prev = p as isize;
            }
            prop_assert_eq!(index.n_fillers(), fillers);
            prop_assert_eq!(index.nnz(), positions.len());
            prop_assert_eq!(index.symbols().len(), positions.len() + fillers);
            prop_assert!(index.symbols().iter().all(|&s| (s as usize) <= filler));
            prop_assert_eq!(index.storage_bits(), 136 + bits as usize * index.symbols().len());
            let again = RelativeIndex::from_symbols(len, bits, index.symbols().to_vec()).unwrap();
            prop_assert_eq!(&again, &index);
            let mut bytes = vec![];
            index.write_to(&mut bytes);
            prop_assert_eq!(bytes.len(), index.storage_bits().div_ceil(8));
            prop_assert_eq!(RelativeIndex::read_from(&mut &bytes[..]).unwrap(), index);
        }
    }

    /// N:M with at most N kept per group: exact dense values, N stored per group, the
    /// stored slots cover the kept positions, and equal them when every group is full.
    #[test]
    fn nm_round_trips((n, m, case, full) in nm_case()) {
        let [rows, cols] = case.shape;
        let mask = case.mask.clone().unwrap();
        let s = NmSparse::from_dense(&case.values, case.shape, Some(&mask), n, m).unwrap();
        prop_assert_eq!((s.n(), s.m()), (n, m));
        prop_assert_eq!(s.to_dense(), case.expected_dense());
        prop_assert_eq!(s.nnz(), rows * cols / m * n);
        prop_assert_eq!(s.values().len(), s.indices().len());
        for g in s.indices().chunks_exact(n) {
            prop_assert!(g.iter().all(|&j| (j as usize) < m) && g.windows(2).all(|w| w[0] < w[1]));
        }
        let stored = s.mask();
        prop_assert_eq!(stored.and(&mask).unwrap(), mask.clone());
        prop_assert_eq!(stored.count_kept(), s.nnz());
        if full {
            prop_assert_eq!(&stored, &mask);
        }
        let bits = (usize::BITS - (m - 1).leading_zeros()) as usize;
        prop_assert_eq!(s.index_bits() as usize, bits);
        prop_assert_eq!(s.storage_bits(), 80 + (32 + bits) * s.nnz());
        check_bytes(&s)?;
        // Without a mask, the non-zeros are stored.
        let dense = s.to_dense();
        let again = NmSparse::from_dense(&dense, case.shape, None, n, m).unwrap();
        prop_assert_eq!(again.to_dense(), dense);
    }

    /// decode(encode(x)) = x, and while the 16-bit limit cannot bind (fewer than
    /// Fib(19) ≈ 4181 symbols) the code is within 1 bit per symbol of the entropy.
    #[test]
    fn huffman_round_trips_within_a_bit_of_entropy(symbols in symbols()) {
        let counts = symbol_counts(&symbols);
        let code = HuffmanCode::from_counts(&counts).unwrap();
        let stream = code.encode(&symbols).unwrap();
        prop_assert_eq!(code.decode(&stream, symbols.len()).unwrap(), symbols.clone());
        let coded = code.coded_bits(&counts).unwrap();
        prop_assert_eq!(stream.bit_len(), coded);
        let h = entropy_bits(&counts);
        prop_assert!(coded as f64 >= h - 1e-6, "{} < entropy {}", coded, h);
        prop_assert!(coded as f64 <= h + symbols.len() as f64 + 1e-6, "{} > entropy {} + n", coded, h);
        prop_assert!(kraft_sum(code.lengths()) <= 1.0 + 1e-12);
        let used = counts.iter().filter(|&&c| c > 0).count();
        if used > 1 {
            prop_assert!((kraft_sum(code.lengths()) - 1.0).abs() < 1e-12, "Huffman codes are complete");
        }
        for (s, &c) in counts.iter().enumerate() {
            prop_assert_eq!(c > 0, code.lengths()[s] > 0);
        }
        prop_assert!(is_prefix_free(&code));
    }

    /// With a binding limit: lengths ≤ 16, Kraft holds, long codes decode (the table
    /// fallback), and the table and stream serialize exactly.
    #[test]
    fn huffman_limited_codes_round_trip(counts in skewed_counts(), picks in prop::collection::vec(any::<prop::sample::Index>(), 0..300)) {
        let code = HuffmanCode::from_counts(&counts).unwrap();
        prop_assert!(code.max_len() <= MAX_CODE_LEN);
        prop_assert!(kraft_sum(code.lengths()) <= 1.0 + 1e-12);
        prop_assert!(is_prefix_free(&code));
        let used: Vec<u16> = (0..counts.len() as u16).filter(|&s| counts[s as usize] > 0).collect();
        prop_assume!(!used.is_empty());
        // Symbols drawn uniformly from the used ones, so rare (long) codes show up.
        let symbols: Vec<u16> = picks.iter().map(|i| used[i.index(used.len())]).collect();
        let stream = code.encode(&symbols).unwrap();
        prop_assert_eq!(code.decode(&stream, symbols.len()).unwrap(), symbols.clone());
        prop_assert_eq!(HuffmanCode::from_lengths(code.lengths()).unwrap(), code.clone());

        let mut bytes = vec![];
        code.write_to(&mut bytes);
        prop_assert_eq!(bytes.len() * 8, code.storage_bits());
        stream.write_to(&mut bytes);
        let mut rest = &bytes[..];
        let code2 = HuffmanCode::read_from(&mut rest).unwrap();
        let stream2 = BitStream::read_from(&mut rest).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(stream2.storage_bits().div_ceil(8), bytes.len() - code.storage_bits() / 8);
        prop_assert_eq!(code2.decode(&stream2, symbols.len()).unwrap(), symbols);
    }

    /// Canonical codes: from_lengths(lengths()) gives the same codewords, and within each
    /// length codes increase with the symbol.
    #[test]
    fn canonical_codes_follow_from_lengths(counts in prop::collection::vec(0u64..50, 0..300)) {
        let code = HuffmanCode::from_counts(&counts).unwrap();
        let again = HuffmanCode::from_lengths(code.lengths()).unwrap();
        let codes: Vec<Option<(u16, u8)>> = (0..counts.len()).map(|s| code.code(s as u16)).collect();
        prop_assert_eq!(&codes, &(0..counts.len()).map(|s| again.code(s as u16)).collect::<Vec<_>>());
        let mut by_len: Vec<(u8, u16, u16)> = codes.iter().enumerate()
            .filter_map(|(s, c)| c.map(|(bits, len)| (len, s as u16, bits))).collect();
        by_len.sort();
        for w in by_len.windows(2) {
            let ((l0, _, c0), (l1, _, c1)) = (w[0], w[1]);
            // The next canonical code: one more, shifted to the longer length.
            prop_assert_eq!(c1 as u32, (c0 as u32 + 1) << (l1 - l0));
        }
    }
}

/// A large alphabet whose table is mostly runs of unused symbols.
#[test]
fn sparse_large_alphabet_round_trips() {
    let mut counts = vec![0u64; 65_536];
    for (k, s) in (0..65_536).step_by(977).enumerate() {
        counts[s] = 1 + (k as u64 % 7) * 100;
    }
    let code = HuffmanCode::from_counts(&counts).unwrap();
    let symbols: Vec<u16> = (0..65_536u32)
        .step_by(977)
        .rev()
        .map(|s| s as u16)
        .collect();
    let stream = code.encode(&symbols).unwrap();
    assert_eq!(code.decode(&stream, symbols.len()).unwrap(), symbols);
    let mut bytes = vec![];
    code.write_to(&mut bytes);
    // The alphabet size, 68 lengths, and 68 runs of unused symbols (3 bytes each).
    assert_eq!(bytes.len(), 4 + 68 + 68 * 3);
    assert_eq!(bytes.len() * 8, code.storage_bits());
    assert_eq!(HuffmanCode::read_from(&mut &bytes[..]).unwrap(), code);
}

/// Counts 2^0 .. 2^39 make Huffman's tree a chain 39 deep: the limit binds, and the
/// 12- to 16-bit codes decode through the table's fallback.
#[test]
fn limit_binds_on_exponential_counts() {
    let counts: Vec<u64> = (0..40).map(|k| 1u64 << k).collect();
    let code = HuffmanCode::from_counts(&counts).unwrap();
    assert_eq!(code.max_len(), MAX_CODE_LEN);
    assert!(kraft_sum(code.lengths()) <= 1.0);
    assert!(code.lengths().iter().filter(|&&l| l > 11).count() >= 10);
    let symbols: Vec<u16> = (0..40u16).chain((0..40).rev()).collect();
    let stream = code.encode(&symbols).unwrap();
    assert_eq!(code.decode(&stream, symbols.len()).unwrap(), symbols);
    // Even limited, the code stays within a bit per symbol of the entropy here.
    assert!(
        code.coded_bits(&counts).unwrap() as f64
            <= entropy_bits(&counts) + counts.iter().sum::<u64>() as f64
    );
}

/// One used symbol gets a 1-bit code; no used symbol gives an empty code.
#[test]
fn degenerate_codes() {
    let one = HuffmanCode::from_counts(&[0, 0, 9]).unwrap();
    assert_eq!(one.lengths(), &[0, 0, 1]);
    let stream = one.encode(&[2, 2, 2]).unwrap();
    assert_eq!(stream.bit_len(), 3);
    assert_eq!(one.decode(&stream, 3).unwrap(), [2, 2, 2]);

    for empty in [
        HuffmanCode::from_counts(&[0, 0]).unwrap(),
        HuffmanCode::from_counts(&[]).unwrap(),
    ] {
        assert_eq!(empty.max_len(), 0);
        let stream = empty.encode(&[]).unwrap();
        assert_eq!(stream.bit_len(), 0);
        assert_eq!(empty.decode(&stream, 0).unwrap(), Vec::<u16>::new());
        assert!(empty.encode(&[0]).is_err());
    }
}
