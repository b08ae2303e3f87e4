//! Bad and hostile input to the storage formats and Huffman coding: typed errors, never
//! panics, never allocations sized by untrusted lengths.

use proptest::prelude::*;
use slimnn::encode::huffman::{BitStream, HuffmanCode, symbol_counts};
use slimnn::encode::{
    BitmaskSparse, Csc, Csr, NmSparse, RelativeIndex, RelativeIndexSparse, SparseFormat,
};
use slimnn::{Error, Mask};

/// A 3×8 matrix with a few non-zeros (at most 2 per group of 4).
fn dense() -> Vec<f32> {
    let mut d = vec![0f32; 24];
    for (i, v) in [
        (1, 0.5),
        (3, -1.0),
        (4, 2.0),
        (9, 0.25),
        (14, -3.0),
        (22, 1.5),
    ] {
        d[i] = v;
    }
    d
}

fn bytes_of(f: &impl SparseFormat) -> Vec<u8> {
    let mut b = vec![];
    f.write_to(&mut b);
    b
}

/// The serialization of every format (and the Huffman pieces), with a reader that
/// reports whether the bytes parsed.
/// Parses bytes and re-encodes what it parsed.
type Reread = fn(&[u8]) -> Result<Vec<u8>, Error>;

fn encodings() -> Vec<(&'static str, Vec<u8>, Reread)> {
    fn reread<F: SparseFormat>(mut b: &[u8]) -> Result<Vec<u8>, Error> {
        F::read_from(&mut b).map(|f| bytes_of(&f))
    }
    let d = dense();
    let index = RelativeIndex::from_mask(&Mask::from_fn(&[300], |i| i % 97 == 3), 3).unwrap();
    let symbols: Vec<u16> = (0..200u32).map(|i| (i * i % 13) as u16).collect();
    let code = HuffmanCode::from_counts(&symbol_counts(&symbols)).unwrap();
    let stream = code.encode(&symbols).unwrap();
    let mut index_bytes = vec![];
    index.write_to(&mut index_bytes);
    let (mut code_bytes, mut stream_bytes) = (vec![], vec![]);
    code.write_to(&mut code_bytes);
    stream.write_to(&mut stream_bytes);
    vec![
        (
            "csr",
            bytes_of(&Csr::from_dense(&d, [3, 8], None).unwrap()),
            reread::<Csr>,
        ),
        (
            "csc",
            bytes_of(&Csc::from_dense(&d, [3, 8], None).unwrap()),
            reread::<Csc>,
        ),
        (
            "bitmask",
            bytes_of(&BitmaskSparse::from_dense(&d, [3, 8], None).unwrap()),
            reread::<BitmaskSparse>,
        ),
        (
            "nm",
            bytes_of(&NmSparse::from_dense(&d, [3, 8], None, 2, 4).unwrap()),
            reread::<NmSparse>,
        ),
        (
            "relative",
            bytes_of(&RelativeIndexSparse::from_dense(&d, [3, 8], None, 2).unwrap()),
            reread::<RelativeIndexSparse>,
        ),
        ("index", index_bytes, |mut b| {
            RelativeIndex::read_from(&mut b).map(|i| {
                let mut o = vec![];
                i.write_to(&mut o);
                o
            })
        }),
        ("huffman table", code_bytes, |mut b| {
            HuffmanCode::read_from(&mut b).map(|c| {
                let mut o = vec![];
                c.write_to(&mut o);
                o
            })
        }),
        ("bit stream", stream_bytes, |mut b| {
            BitStream::read_from(&mut b).map(|s| {
                let mut o = vec![];
                s.write_to(&mut o);
                o
            })
        }),
    ]
}

fn is_format_error<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::InvalidFormat { .. }))
}

/// Every proper prefix of a valid encoding is an error.
#[test]
fn truncated_bytes_at_every_cut_point() {
    for (name, bytes, read) in encodings() {
        assert_eq!(
            read(&bytes).unwrap(),
            bytes,
            "{name} re-encodes identically"
        );
        for cut in 0..bytes.len() {
            assert!(
                is_format_error(read(&bytes[..cut])),
                "{name} cut at {cut} of {}",
                bytes.len()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes never panic; what parses re-encodes to the bytes it was read from
    /// (Huffman tables may use runs differently, so only their value is checked).
    #[test]
    fn garbage_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        for (name, _, read) in encodings() {
            if let Ok(again) = read(&bytes)
                && name != "huffman table"
            {
                prop_assert_eq!(&bytes[..again.len()], &again[..], "{}", name);
            }
        }
    }

    /// Valid encodings with a few bytes changed never panic either.
    #[test]
    fn corrupted_encodings_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        for (_, mut bytes, read) in encodings() {
            for (at, v) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *v;
            }
            let _ = read(&bytes);
        }
    }

    /// Random symbol streams decode to symbols or fail cleanly, with any count.
    #[test]
    fn garbage_streams_never_panic(data in prop::collection::vec(any::<u8>(), 0..64), count in 0usize..600, lengths in prop::collection::vec(0u8..=16, 0..40)) {
        let bit_len = data.len() as u64 * 8;
        let stream = BitStream::from_parts(data, bit_len).unwrap();
        if let Ok(code) = HuffmanCode::from_lengths(&lengths)
            && let Ok(symbols) = code.decode(&stream, count)
        {
            prop_assert_eq!(symbols.len(), count);
            prop_assert_eq!(code.encode(&symbols).unwrap(), stream);
        }
    }
}

fn csr_bytes(rows: u32, cols: u32, ptr: &[u32], idx: &[u32], values: &[f32]) -> Vec<u8> {
    let mut b = vec![];
    for v in [rows, cols].iter().chain(ptr).chain(idx) {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for v in values {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

#[test]
fn hand_made_csr_violations() {
    let ok = csr_bytes(2, 3, &[0, 1, 2], &[2, 0], &[1.0, 2.0]);
    assert!(Csr::read_from(&mut &ok[..]).is_ok());
    let bad = [
        (
            "first pointer",
            csr_bytes(2, 3, &[1, 1, 2], &[2, 0], &[1.0, 2.0]),
        ),
        (
            "decreasing",
            csr_bytes(2, 3, &[0, 2, 1], &[2, 0], &[1.0, 2.0]),
        ),
        (
            "index out of range",
            csr_bytes(2, 3, &[0, 1, 2], &[3, 0], &[1.0, 2.0]),
        ),
        (
            "unsorted row",
            csr_bytes(1, 3, &[0, 2], &[2, 1], &[1.0, 2.0]),
        ),
        ("duplicate", csr_bytes(1, 3, &[0, 2], &[1, 1], &[1.0, 2.0])),
        (
            "NaN",
            csr_bytes(2, 3, &[0, 1, 2], &[2, 0], &[1.0, f32::NAN]),
        ),
        (
            "infinity",
            csr_bytes(2, 3, &[0, 1, 2], &[2, 0], &[f32::INFINITY, 1.0]),
        ),
        (
            "nnz past the end",
            csr_bytes(2, 3, &[0, 1, 1 << 30], &[2, 0], &[1.0, 2.0]),
        ),
        ("rows past the end", csr_bytes(u32::MAX, 3, &[0], &[], &[])),
    ];
    for (what, b) in bad {
        assert!(is_format_error(Csr::read_from(&mut &b[..])), "{what}");
        assert!(
            is_format_error(Csc::read_from(&mut &b[..])),
            "{what} (as CSC)"
        );
    }
    // Dimensions whose dense size cannot be addressed.
    let huge = csr_bytes(u32::MAX, u32::MAX, &[], &[], &[]);
    assert!(is_format_error(BitmaskSparse::read_from(&mut &huge[..])));
    assert!(is_format_error(RelativeIndexSparse::read_from(
        &mut &huge[..]
    )));
}

#[test]
fn absurd_counts_do_not_allocate() {
    // A relative index claiming 2^60 symbols, a bit stream of 2^60 bits, a bitmask of
    // 2^31 × 2^31 positions: all rejected against the few bytes present.
    let mut b = vec![];
    b.extend_from_slice(&1000u64.to_le_bytes());
    b.push(4);
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    assert!(is_format_error(RelativeIndex::read_from(&mut &b[..])));
    let mut s = (1u64 << 60).to_le_bytes().to_vec();
    s.extend_from_slice(&[0; 16]);
    assert!(is_format_error(BitStream::read_from(&mut &s[..])));
    let m = csr_bytes(1 << 31, 1 << 31, &[], &[], &[]);
    assert!(is_format_error(BitmaskSparse::read_from(&mut &m[..])));
    let nm = [&csr_bytes(1 << 20, 1 << 20, &[], &[], &[])[..], &[2, 4]].concat();
    assert!(is_format_error(NmSparse::read_from(&mut &nm[..])));
    // Decoding 2^60 symbols from a short stream fails before allocating the output.
    let code = HuffmanCode::from_counts(&[5, 3, 1]).unwrap();
    let stream = code.encode(&[0, 1, 2, 0]).unwrap();
    assert!(is_format_error(code.decode(&stream, 1 << 60)));
    // A Huffman table claiming 2^32 − 1 symbols.
    let t = u32::MAX.to_le_bytes();
    assert!(is_format_error(HuffmanCode::read_from(&mut &t[..])));
}

#[test]
fn non_prefix_huffman_tables() {
    for lengths in [&[1u8, 1, 1][..], &[1, 2, 2, 2], &[2, 2, 2, 2, 3]] {
        assert!(
            is_format_error(HuffmanCode::from_lengths(lengths)),
            "{lengths:?}"
        );
        let mut b = (lengths.len() as u32).to_le_bytes().to_vec();
        b.extend_from_slice(lengths);
        assert!(
            is_format_error(HuffmanCode::read_from(&mut &b[..])),
            "{lengths:?}"
        );
    }
    assert!(
        is_format_error(HuffmanCode::from_lengths(&[17, 1])),
        "length above 16"
    );
    assert!(
        is_format_error(HuffmanCode::from_lengths(&vec![16u8; 65_537])),
        "alphabet"
    );
    // Table bytes: a byte that is no length, an empty run, a run past the alphabet.
    for bad in [
        &[2, 0, 0, 0, 18, 1][..],
        &[2, 0, 0, 0, 17, 0, 0],
        &[2, 0, 0, 0, 17, 3, 0],
    ] {
        assert!(
            is_format_error(HuffmanCode::read_from(&mut &bad[..])),
            "{bad:?}"
        );
    }
    // Incomplete codes are prefix codes: allowed.
    assert!(HuffmanCode::from_lengths(&[1, 2]).is_ok());
}

#[test]
fn huffman_streams_that_do_not_fit() {
    let code = HuffmanCode::from_counts(&[5, 3, 1, 0]).unwrap(); // lengths 1, 2, 2
    let stream = code.encode(&[0, 1, 2, 0]).unwrap();
    assert_eq!(stream.bit_len(), 6);
    assert!(code.decode(&stream, 4).is_ok());
    assert!(is_format_error(code.decode(&stream, 5)), "ends early");
    assert!(is_format_error(code.decode(&stream, 3)), "bits left over");
    assert!(matches!(
        code.encode(&[0, 3]),
        Err(Error::InvalidParameter {
            name: "symbols",
            ..
        })
    ));
    assert!(code.encode(&[7]).is_err(), "past the alphabet");
    assert!(
        code.coded_bits(&[1, 1, 1, 1]).is_err(),
        "a count of a symbol without code"
    );
    // An incomplete code (one symbol, code "0"): the bit 1 is no code.
    let one = HuffmanCode::from_counts(&[0, 4]).unwrap();
    let ones = BitStream::from_parts(vec![0b0100_0000], 2).unwrap();
    assert!(is_format_error(one.decode(&ones, 2)));
    // An empty code decodes nothing.
    let empty = HuffmanCode::from_counts(&[0, 0]).unwrap();
    assert!(is_format_error(empty.decode(&ones, 1)));
    // Stream parts that disagree.
    assert!(is_format_error(BitStream::from_parts(vec![0, 0], 7)));
    assert!(is_format_error(BitStream::from_parts(vec![0b0000_0001], 7)));
    // Too many counts, or counts whose sum overflows.
    assert!(matches!(
        HuffmanCode::from_counts(&vec![1; 65_537]),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(HuffmanCode::from_counts(&[u64::MAX, 1]).is_err());
}

/// Stored NaN or infinity is rejected at build (a pruned one is not stored: allowed).
#[test]
fn non_finite_values() {
    let mut d = dense();
    d[5] = f32::NAN;
    let shape = [3, 8];
    assert!(matches!(
        Csr::from_dense(&d, shape, None),
        Err(Error::NonFinite { index: 5, .. })
    ));
    assert!(matches!(
        Csc::from_dense(&d, shape, None),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        BitmaskSparse::from_dense(&d, shape, None),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        RelativeIndexSparse::from_dense(&d, shape, None, 4),
        Err(Error::NonFinite { .. })
    ));
    d[5] = f32::NEG_INFINITY;
    d[4] = 0.0; // keep the 2:4 groups within 2 non-zeros
    assert!(matches!(
        NmSparse::from_dense(&d, shape, None, 2, 4),
        Err(Error::NonFinite { .. })
    ));
    let pruned = Mask::from_fn(&shape, |i| i != 5);
    assert!(Csr::from_dense(&d, shape, Some(&pruned)).is_ok());
    assert!(BitmaskSparse::from_dense(&d, shape, Some(&pruned)).is_ok());
}

#[test]
fn shapes_that_do_not_fit() {
    let d = dense();
    // Values and shape disagree.
    assert!(matches!(
        Csr::from_dense(&d, [4, 8], None),
        Err(Error::ShapeMismatch { .. })
    ));
    // Masks of another shape; a reshape that keeps the first axis is fine.
    let wrong = Mask::ones(&[8, 3]);
    assert!(matches!(
        Csr::from_dense(&d, [3, 8], Some(&wrong)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        NmSparse::from_dense(&d, [3, 8], Some(&Mask::ones(&[24])), 2, 4),
        Err(Error::ShapeMismatch { .. })
    ));
    let conv = Mask::from_fn(&[3, 2, 2, 2], |i| d[i] != 0.0);
    let csr = Csr::from_dense(&d, [3, 8], Some(&conv)).unwrap();
    assert_eq!(csr.to_dense(), d);
    assert_eq!(csr.mask().shape(), &[3, 8]);
    // Dimensions that do not fit u32.
    let big = [1usize << 33, 0];
    assert!(matches!(
        Csr::from_dense(&[], big, None),
        Err(Error::BadShape { .. })
    ));
}

#[test]
fn nm_patterns_that_do_not_fit() {
    let d = dense();
    // 3 kept in the first group of 4: too many for 2:4.
    let mask = Mask::from_fn(&[3, 8], |i| i < 3);
    assert!(matches!(
        NmSparse::from_dense(&d, [3, 8], Some(&mask), 2, 4),
        Err(Error::InvalidParameter { name: "mask", .. })
    ));
    let mut full = d.clone();
    full[0] = 1.0; // 0.5 at 1, -1.0 at 3 and now 1.0 at 0
    assert!(matches!(
        NmSparse::from_dense(&full, [3, 8], None, 2, 4),
        Err(Error::InvalidParameter { name: "values", .. })
    ));
    assert!(matches!(
        NmSparse::from_dense(&d, [3, 8], None, 2, 3),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        NmSparse::from_dense(&d, [3, 8], None, 5, 4),
        Err(Error::InvalidParameter { name: "n", .. })
    ));
    assert!(matches!(
        NmSparse::from_dense(&d, [3, 8], None, 0, 4),
        Err(Error::InvalidParameter { name: "n", .. })
    ));
    assert!(matches!(
        NmSparse::from_dense(&d, [3, 8], None, 1, 0),
        Err(Error::InvalidParameter { name: "m", .. })
    ));
    assert!(matches!(
        NmSparse::from_dense(&d, [3, 256], None, 1, 256),
        Err(Error::InvalidParameter { name: "m", .. })
    ));
    // Stored bytes: N > M, M not dividing the columns, indices out of order.
    let ok = bytes_of(&NmSparse::from_dense(&d, [3, 8], None, 2, 4).unwrap());
    for (at, v, what) in [
        (8, 5, "n > m"),
        (9, 3, "m does not divide"),
        (8, 0, "n = 0"),
    ] {
        let mut b = ok.clone();
        b[at] = v;
        assert!(is_format_error(NmSparse::read_from(&mut &b[..])), "{what}");
    }
    let mut swapped = ok.clone();
    let last = swapped.len() - 3; // the packed indices: 12 two-bit codes in 3 bytes
    swapped[last] = 0b0000_0001; // group 0 indices (1, 0)
    assert!(is_format_error(NmSparse::read_from(&mut &swapped[..])));
}

#[test]
fn index_bits_out_of_range() {
    let d = dense();
    let mask = Mask::ones(&[4]);
    for bits in [0u8, 9] {
        assert!(matches!(
            RelativeIndexSparse::from_dense(&d, [3, 8], None, bits),
            Err(Error::InvalidParameter {
                name: "index_bits",
                ..
            })
        ));
        assert!(RelativeIndex::from_mask(&mask, bits).is_err());
        assert!(RelativeIndex::from_symbols(4, bits, vec![0]).is_err());
        let mut b = 4u64.to_le_bytes().to_vec();
        b.push(bits);
        b.extend_from_slice(&0u64.to_le_bytes());
        assert!(is_format_error(RelativeIndex::read_from(&mut &b[..])));
    }
}

#[test]
fn relative_index_symbols_that_do_not_fit() {
    // 3 bits: filler 7.
    assert!(RelativeIndex::from_symbols(20, 3, vec![1, 7, 2]).is_ok());
    assert!(
        is_format_error(RelativeIndex::from_symbols(20, 3, vec![1, 7])),
        "trailing filler"
    );
    assert!(
        is_format_error(RelativeIndex::from_symbols(20, 3, vec![8])),
        "symbol above filler"
    );
    assert!(
        is_format_error(RelativeIndex::from_symbols(10, 3, vec![6, 3])),
        "position 10 of 10"
    );
    assert!(
        is_format_error(RelativeIndex::from_symbols(10, 3, vec![2, 7, 0])),
        "filler past the end"
    );
    assert!(
        is_format_error(RelativeIndex::from_symbols(0, 3, vec![0])),
        "nothing to index"
    );
    // Stored: set padding bits after the packed symbols.
    let index = RelativeIndex::from_mask(&Mask::from_fn(&[30], |i| i == 4), 3).unwrap();
    let mut b = vec![];
    index.write_to(&mut b);
    *b.last_mut().unwrap() |= 0x80;
    assert!(is_format_error(RelativeIndex::read_from(&mut &b[..])));
    // The index of a mask of another element count.
    assert!(matches!(
        index.to_mask(&[5, 5]),
        Err(Error::ShapeMismatch { .. })
    ));
}
