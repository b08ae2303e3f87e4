//! The `encode` formats' readers and the Huffman decoder on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slimnn::encode::huffman::{BitStream, HuffmanCode};
use slimnn::encode::{BitmaskSparse, Csc, Csr, NmSparse, RelativeIndex, RelativeIndexSparse, SparseFormat};

/// Reads one format and, if its dense form is small, expands it.
fn read<F: SparseFormat>(mut bytes: &[u8]) {
    if let Ok(f) = F::read_from(&mut bytes) {
        let [rows, cols] = f.shape();
        if rows.saturating_mul(cols) <= 1 << 20 {
            let _ = f.to_dense();
            let _ = f.mask();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&tag, rest)) = data.split_first() else {
        return;
    };
    match tag % 7 {
        0 => read::<Csr>(rest),
        1 => read::<Csc>(rest),
        2 => read::<BitmaskSparse>(rest),
        3 => read::<NmSparse>(rest),
        4 => read::<RelativeIndexSparse>(rest),
        5 => {
            let mut bytes = rest;
            if let Ok(index) = RelativeIndex::read_from(&mut bytes)
                && index.len() <= 1 << 20
            {
                let _ = index.to_mask(&[index.len()]);
            }
        }
        _ => {
            let mut bytes = rest;
            if let (Ok(code), Ok(stream)) = (
                HuffmanCode::read_from(&mut bytes),
                BitStream::read_from(&mut bytes),
            ) {
                let count = bytes.first().map_or(0, |&c| c as usize * 64);
                let _ = code.decode(&stream, count);
            }
        }
    }
});
