//! What a compressed file can make the loader allocate, measured by a counting global
//! allocator (one per test binary, hence a file of its own): crafted files that declare
//! huge tensors in a few bytes are refused before anything is allocated, and a file
//! that loads stays within `LoadOptions::limit` of its size.

#[path = "common/slim_file.rs"]
mod slim_file;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ndarray::{Array2, ArrayD, IxDyn};
use slim_file::SlimFile;
use slimnn::lowrank::{Factorization, Factors};
use slimnn::pipeline::{Compressor, Encode, PruneGlobal, Quantize};
use slimnn::prune::GlobalPruner;
use slimnn::quant::KMeansQuantizer;
use slimnn::store::{self, Encoding, LoadOptions, Positions};
use slimnn::{Error, Model, Selector};

/// Counts the bytes each thread holds and the most it held (tests run on threads of
/// their own, so each sees only its allocations).
struct Counting;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn track(grow: usize, shrink: usize) {
    let _ = CURRENT.try_with(|c| {
        let now = (c.get() + grow).saturating_sub(shrink);
        c.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// const-initialized thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size(), 0);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size(), 0);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        track(0, layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size, layout.size());
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// `f`'s result and the most bytes it held at once beyond what was held before.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    (r, PEAK.with(Cell::get) - start)
}

/// The 153-byte file of issue 10: a quantized record with CSR positions and no stored
/// element that declares a [1, 2²⁴] tensor (151 MiB of codes and values).
const CRAFTED: &str = "534c494d4e4e434d010000003600000000000000000000000000000001000000000000000200000000000000703000000000000000004b0000000000000078ad630b000000000000000023d0fc9705000201000000000000000000000100000000020102040000000000000000000080ffffff7f000000002001000000000000000000803f0100000000000000000100000000000000000800";

fn crafted() -> Vec<u8> {
    (0..CRAFTED.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&CRAFTED[i..i + 2], 16).unwrap())
        .collect()
}

/// Loads `bytes` with `options`; checks the peak against the limit.
fn load(bytes: &[u8], options: &LoadOptions) -> (Result<Model, Error>, usize) {
    let (r, peak) = peak_of(|| store::from_bytes_with(bytes, options));
    let limit = options.limit(bytes.len());
    assert!(
        peak <= limit,
        "{} bytes of file took {peak} bytes, the limit is {limit}",
        bytes.len()
    );
    (r, peak)
}

fn refused(r: Result<Model, Error>) {
    match r {
        Err(Error::InvalidFormat { reason, .. }) => {
            assert!(reason.contains("LoadOptions"), "{reason}")
        }
        other => panic!("expected the claim to be refused, got {other:?}"),
    }
}

#[test]
fn the_crafted_153_byte_file_is_refused() {
    let bytes = crafted();
    assert_eq!(bytes.len(), 153);
    let (r, peak) = load(&bytes, &LoadOptions::default());
    refused(r);
    assert!(peak < 64 << 10, "{peak}");
    // Trusted, it loads: what it declares is a real (if useless) model.
    let (r, _) = peak_of(|| store::from_bytes_with(&bytes, &LoadOptions::trusted()));
    assert_eq!(r.unwrap().params()[0].numel(), 1 << 24);
}

#[test]
fn sixteen_crafted_records_are_refused() {
    let one = SlimFile::parse(&crafted());
    let mut f = one.clone();
    f.params = (0..16)
        .map(|i| (format!("p{i:02}").into_bytes(), one.params[0].1.clone()))
        .collect();
    let bytes = f.to_bytes();
    assert!(bytes.len() < 2000);
    let (r, peak) = load(&bytes, &LoadOptions::default());
    refused(r);
    assert!(peak < 64 << 10, "{peak}");
    // A limit set by the user holds too.
    let options = LoadOptions::new().with_max_memory(100 << 20);
    let (r, _) = load(&bytes, &options);
    refused(r);
}

/// Models in many forms, each file loaded within its limit.
fn legit_models() -> Vec<Model> {
    let values = |shape: &[usize], seed: usize| {
        let n: usize = shape.iter().product();
        ArrayD::from_shape_vec(
            IxDyn(shape),
            (0..n)
                .map(|k| ((k * 7 + seed * 131) as f32 * 0.618).sin())
                .collect(),
        )
        .unwrap()
    };
    let mut out = Vec::new();
    for (sparsity, quantize, positions) in [
        (0.0, false, Positions::Dense),
        (0.9, false, Positions::Bitmask),
        (0.99, false, Positions::RelativeIndex { bits: 8 }),
        (0.99, true, Positions::Csr),
        (0.9, true, Positions::RelativeIndex { bits: 4 }),
    ] {
        let mut m = Model::new();
        m.add("fc1.weight", values(&[256, 512], 1)).unwrap();
        m.add("fc1.bias", values(&[256], 2)).unwrap();
        if sparsity > 0.0 {
            PruneGlobal::new(
                Selector::prunable(),
                GlobalPruner::magnitude(sparsity).unwrap(),
            )
            .compress(&mut m)
            .unwrap();
        }
        if quantize {
            Quantize::new(Selector::prunable(), KMeansQuantizer::optimal(4).unwrap())
                .compress(&mut m)
                .unwrap();
        }
        Encode::new(
            Selector::all(),
            Encoding {
                positions,
                huffman: true,
            },
        )
        .compress(&mut m)
        .unwrap();
        out.push(m);
    }
    // Rank 8 of a 512×512 layer: 32 elements per byte of factors.
    let mut m = Model::new();
    m.add("fc.weight", Array2::<f32>::zeros((512, 512)).into_dyn())
        .unwrap();
    let a = Array2::from_shape_fn((512, 8), |(i, j)| ((i + j) as f32).sin());
    let b = Array2::from_shape_fn((8, 512), |(i, j)| ((i * j) as f32).cos());
    let f = Factorization::new(&[512, 512], Factors::Linear { a, b }).unwrap();
    m.get_mut("fc.weight")
        .unwrap()
        .set_factorization(f)
        .unwrap();
    out.push(m);
    out
}

#[test]
fn files_that_load_stay_within_their_limit() {
    for m in legit_models() {
        let bytes = store::to_bytes(&m).unwrap();
        // A limit just above the claim: the charge per element covers what is used.
        let elements: usize = m.params().iter().map(|p| p.numel()).sum();
        let claim = 5 * bytes.len() + elements * LoadOptions::BYTES_PER_ELEMENT;
        let options = LoadOptions::new().with_max_memory(claim + (256 << 10));
        let (r, peak) = load(&bytes, &options);
        let back = r.unwrap();
        assert_eq!(back.len(), m.len());
        assert!(peak > elements * 4, "{peak}");
        let (r, _) = load(&bytes, &LoadOptions::default());
        r.unwrap();
    }
}

#[test]
fn a_file_that_claims_too_much_loads_when_trusted() {
    // Rank 1 of a 2048×2048 layer: 16 KiB of factors stand for 16 MiB of values.
    let mut m = Model::new();
    m.add("fc.weight", Array2::<f32>::zeros((2048, 2048)).into_dyn())
        .unwrap();
    let a = Array2::from_elem((2048, 1), 0.5f32);
    let b = Array2::from_elem((1, 2048), 0.25f32);
    let f = Factorization::new(&[2048, 2048], Factors::Linear { a, b }).unwrap();
    m.get_mut("fc.weight")
        .unwrap()
        .set_factorization(f)
        .unwrap();
    let bytes = store::to_bytes(&m).unwrap();
    assert!(bytes.len() < 20_000);
    let (r, peak) = load(&bytes, &LoadOptions::default());
    refused(r);
    assert!(peak < 1 << 20, "{peak}");
    let options = LoadOptions::new().with_max_memory(64 << 20);
    let (r, _) = load(&bytes, &options);
    assert_eq!(r.unwrap().get("fc.weight").unwrap().value()[[7, 9]], 0.125);
}
