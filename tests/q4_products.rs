//! The 4-bit and 16-bit-index products of `slimnn::sparse_ops` against the dense
//! product of the decoded weights, and their answers to bad input.

use ndarray::Array2;
use slimnn::Error;
use slimnn::quant::{GgmlFormat, dequantize_ggml, quantize_ggml};
use slimnn::sparse_ops::{
    csr_matmul, csr16_matmul, int4_matmul, int4_matmul_into, q4_0_matmul, q4_0_matmul_into,
};

/// `[rows, cols]` values from a smooth pattern.
fn pattern(rows: usize, cols: usize, k: f32) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(r, c)| ((r * cols + c) as f32 * k).sin())
}

/// `|got − want| ≤ 1e−4·(1 + |want|)` everywhere.
fn assert_close(got: &Array2<f32>, want: &Array2<f32>) {
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
    }
}

#[test]
fn q4_0_matches_the_decoded_product_at_batch_1_and_batched() {
    let (rows, cols) = (37, 160);
    let w = pattern(rows, cols, 0.173);
    let blocks = quantize_ggml(w.as_slice().unwrap(), &[rows, cols], GgmlFormat::Q4_0).unwrap();
    let decoded = Array2::from_shape_vec(
        (rows, cols),
        dequantize_ggml(&blocks, &[rows, cols], GgmlFormat::Q4_0).unwrap(),
    )
    .unwrap();
    for batch in [1, 3, 70] {
        let x = pattern(batch, cols, 0.071);
        let want = x.dot(&decoded.t());
        assert_close(&q4_0_matmul([rows, cols], &blocks, &x).unwrap(), &want);
        let mut y = vec![0.0f32; batch * rows];
        q4_0_matmul_into([rows, cols], &blocks, x.as_slice().unwrap(), &mut y).unwrap();
        assert_close(&Array2::from_shape_vec((batch, rows), y).unwrap(), &want);
    }
}

#[test]
fn int4_groups_match_their_definition() {
    let (rows, cols, group) = (9, 128, 64);
    let codes: Vec<u8> = (0..rows * cols / 2).map(|i| (i * 37 % 256) as u8).collect();
    let groups = rows * cols / group;
    let scales: Vec<f32> = (0..groups).map(|g| 0.01 * (g + 1) as f32).collect();
    let zeros: Vec<f32> = (0..groups).map(|g| (g % 16) as f32).collect();
    let decoded = Array2::from_shape_fn((rows, cols), |(r, c)| {
        let i = r * cols + c;
        let q = if i % 2 == 0 {
            codes[i / 2] & 15
        } else {
            codes[i / 2] >> 4
        };
        scales[i / group] * (q as f32 - zeros[i / group])
    });
    for batch in [1, 17] {
        let x = pattern(batch, cols, 0.031);
        let want = x.dot(&decoded.t());
        let got = int4_matmul([rows, cols], &codes, group, &scales, Some(&zeros), &x).unwrap();
        assert_close(&got, &want);
    }
}

#[test]
fn csr16_matches_csr() {
    let (row_ptr, col_idx, values) = (
        [0u32, 2, 2, 5],
        [3u32, 0, 1, 2, 3],
        [1.0f32, -2.0, 0.5, 4.0, 3.0],
    );
    let narrow: Vec<u16> = col_idx.iter().map(|&c| c as u16).collect();
    for batch in [1, 9] {
        let x = pattern(batch, 4, 0.7);
        assert_eq!(
            csr16_matmul([3, 4], &row_ptr, &narrow, &values, &x).unwrap(),
            csr_matmul([3, 4], &row_ptr, &col_idx, &values, &x).unwrap()
        );
    }
}

#[test]
fn bad_input_gives_typed_errors() {
    let x = pattern(1, 64, 0.1);
    let blocks = vec![0u8; 2 * 18];
    assert!(matches!(
        q4_0_matmul([0, 64], &blocks, &x),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        q4_0_matmul([1, 48], &blocks, &x),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        q4_0_matmul([2, 64], &blocks, &x),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        q4_0_matmul([1, 64], &blocks, &pattern(1, 32, 0.1)),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut y = [0.0f32; 2];
    assert!(matches!(
        q4_0_matmul_into([1, 64], &blocks, &[0.0; 63], &mut y),
        Err(Error::BadShape { .. })
    ));
    let codes = vec![0u8; 32];
    for group in [0, 48, 128] {
        assert!(matches!(
            int4_matmul([1, 64], &codes, group, &[1.0], None, &x),
            Err(Error::InvalidParameter { .. })
        ));
    }
    assert!(matches!(
        int4_matmul([1, 64], &codes, 32, &[1.0], None, &x),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        int4_matmul([1, 64], &codes, 32, &[1.0; 2], Some(&[0.0]), &x),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        int4_matmul([1, 64], &codes[..31], 32, &[1.0; 2], None, &x),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        int4_matmul_into([1, 64], &codes, 32, &[1.0; 2], None, &[0.0; 64], &mut y),
        Err(Error::BadShape { .. })
    ));
    assert!(matches!(
        csr16_matmul([1, 4], &[0, 1], &[4], &[1.0], &pattern(1, 4, 0.1)),
        Err(Error::InvalidParameter { .. })
    ));
}
