//! What a compressed file can make the loader allocate, measured by a counting global
//! allocator (one per test binary, hence a file of its own): crafted files that declare
//! huge tensors in a few bytes are refused before anything is allocated, and a file
//! that loads stays within `LoadOptions::limit` of its size.

#[path = "common/slim_file.rs"]
mod slim_file;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayD, IxDyn};
use proptest::prelude::*;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};
use slim_file::SlimFile;
use slimnn::lowrank::{Factorization, Factors, Rank, TruncatedSvd, TtSvd, Tucker2};
use slimnn::pipeline::{Compressor, Encode, Factorize, Pipeline, PruneGlobal, Quantize};
use slimnn::prune::GlobalPruner;
use slimnn::quant::{
    GgmlFormat, GgmlQuantizer, Granularity, KMeansQuantizer, ProductQuantizer, Scheme,
    UniformQuantizer,
};
use slimnn::store::{self, Encoding, LoadOptions, Positions};
use slimnn::{DType, Error, LayerKind, Model, RawTensor, Selector};

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

// ---------------------------------------------------------------------------------
// Structure-aware mutation: records changed field by field (kinds, dtypes, shapes,
// forms, counts, lengths, bytes), names duplicated, records spliced, and every offset
// and checksum recomputed, so the mutated file reaches the record decoders. A load
// must give a model or a format error, never panic, and stay within its limit.
// (cargo-fuzz needs a nightly toolchain; `bounded_mutation_run` is the plain-Rust
// harness that runs in every `cargo test`.)

/// Small models in every form the format has: dense in four dtypes, each positions
/// format with and without Huffman, scalar, product and ggml quantization, and
/// low-rank factors; with raw tensors and metadata.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let base = || {
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
            let mut m = Model::new();
            m.add("fc1.weight", values(&[12, 32], 1)).unwrap();
            m.add("fc1.bias", values(&[12], 2)).unwrap();
            m.add_param(
                "conv.weight",
                LayerKind::Conv2d,
                DType::F16,
                values(&[4, 3, 3, 3], 3),
            )
            .unwrap();
            m.add_param(
                "fc2.weight",
                LayerKind::Linear,
                DType::BF16,
                values(&[6, 12], 4),
            )
            .unwrap();
            m.add_param(
                "fc3.weight",
                LayerKind::Linear,
                DType::F64,
                values(&[3, 6], 5),
            )
            .unwrap();
            m.add_raw(RawTensor {
                name: "steps".into(),
                dtype: "I64".into(),
                shape: vec![1],
                bytes: 7i64.to_le_bytes().to_vec(),
            })
            .unwrap();
            m.metadata_mut().insert("format".into(), "pt".into());
            m
        };
        let linear = Selector::kinds(&[LayerKind::Linear]);
        let steps: Vec<Box<dyn Compressor>> = vec![
            Box::new(Pipeline::new()),
            Box::new(Quantize::new(
                linear.clone(),
                KMeansQuantizer::optimal(4).unwrap(),
            )),
            Box::new(Quantize::new(
                linear.clone(),
                UniformQuantizer::new(4, Scheme::Affine, Granularity::PerGroup { size: 2 })
                    .unwrap(),
            )),
            Box::new(Quantize::new(
                linear.clone(),
                UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 })
                    .unwrap(),
            )),
            Box::new(Quantize::new(
                Selector::glob("fc1.weight"),
                ProductQuantizer::new(4, 8, 1).unwrap(),
            )),
            Box::new(Quantize::new(
                Selector::glob("fc1.weight"),
                GgmlQuantizer::new(GgmlFormat::Q4_0),
            )),
            Box::new(
                Pipeline::new()
                    .then(Factorize::new(
                        Selector::glob("fc1.weight"),
                        TruncatedSvd::new(Rank::Fixed(3)).unwrap(),
                    ))
                    .then(Factorize::new(
                        Selector::kinds(&[LayerKind::Conv2d]),
                        Tucker2::new(Rank::Fixed(2), Rank::Fixed(2)).unwrap(),
                    )),
            ),
            Box::new(Factorize::new(
                Selector::glob("fc1.weight"),
                TtSvd::new(vec![3, 4], vec![4, 8], Rank::Fixed(2)).unwrap(),
            )),
            // Quantized factors (record form 4).
            Box::new(
                Pipeline::new()
                    .then(Factorize::new(
                        Selector::glob("fc1.weight"),
                        TruncatedSvd::new(Rank::Fixed(3)).unwrap(),
                    ))
                    .then(Quantize::new(
                        Selector::glob("fc1.weight"),
                        UniformQuantizer::new(
                            8,
                            Scheme::Symmetric,
                            Granularity::PerChannel { axis: 0 },
                        )
                        .unwrap(),
                    )),
            ),
        ];
        let positions = [
            Positions::Dense,
            Positions::Bitmask,
            Positions::Csr,
            Positions::RelativeIndex { bits: 2 },
        ];
        let mut out = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            for (j, p) in positions.iter().enumerate() {
                let mut m = base();
                // A pruned weight cannot be factorized: factorizing steps get no pruning.
                if j > 0 && !step.describe().contains("factorize") {
                    PruneGlobal::new(Selector::prunable(), GlobalPruner::magnitude(0.7).unwrap())
                        .compress(&mut m)
                        .unwrap();
                }
                step.compress(&mut m).unwrap();
                let encoding = Encoding {
                    positions: *p,
                    huffman: (i + j) % 2 == 0,
                };
                Encode::new(Selector::all(), encoding)
                    .compress(&mut m)
                    .unwrap();
                out.push(store::to_bytes(&m).unwrap());
            }
        }
        out
    })
}

/// Values that hit the edges of counts, lengths, ranks and bit widths.
const U64S: [u64; 20] = [
    0,
    1,
    2,
    3,
    4,
    8,
    17,
    255,
    256,
    65_535,
    65_536,
    1 << 24,
    (1 << 31) - 1,
    u32::MAX as u64,
    1 << 32,
    1 << 40,
    (1 << 40) + 1,
    1 << 62,
    u64::MAX - 1,
    u64::MAX,
];

fn pick(rng: &mut impl Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

fn some_u64(rng: &mut impl Rng) -> u64 {
    match pick(rng, 4) {
        0 => rng.next_u64(),
        1 => rng.next_u64() % 64,
        _ => U64S[pick(rng, U64S.len())],
    }
}

/// Where a record's head fields are: kind, dtype, rank, dimensions, form, positions.
fn head_offsets(record: &[u8]) -> Vec<(usize, usize)> {
    let mut out = vec![(0, 1), (1, 1), (2, 1)];
    let rank = record.get(2).copied().unwrap_or(0) as usize;
    for d in 0..rank {
        out.push((3 + 8 * d, 8));
    }
    out.push((3 + 8 * rank, 1));
    out.push((4 + 8 * rank, 1));
    out
}

fn write_int(record: &mut [u8], at: usize, width: usize, value: u64) {
    let bytes = value.to_le_bytes();
    for (k, b) in bytes[..width].iter().enumerate() {
        if let Some(x) = record.get_mut(at + k) {
            *x = *b;
        }
    }
}

/// Changes `f` in one structure-aware way chosen by `rng`.
fn mutate(f: &mut SlimFile, rng: &mut impl Rng) {
    if f.params.is_empty() {
        return;
    }
    let i = pick(rng, f.params.len());
    let other = pick(rng, f.params.len());
    let len = f.params[i].1.len();
    let at = pick(rng, len + 1);
    let record = &mut f.params[i].1;
    match pick(rng, 12) {
        // A head field: small values (tags) or edge values (dimensions).
        0 | 1 => {
            let fields = head_offsets(record);
            let (at, width) = fields[pick(rng, fields.len())];
            let value = if width == 1 {
                rng.next_u64() % 8
            } else {
                some_u64(rng)
            };
            write_int(record, at, width, value);
        }
        // A count, a length or a dimension anywhere in the record.
        2 | 3 => write_int(record, at, 8, some_u64(rng)),
        // A row pointer, an alphabet size, an integer level.
        4 => write_int(record, at, 4, some_u64(rng)),
        // A tag, a bit width, a flag, a code length.
        5 | 6 => write_int(record, at, 1, rng.next_u64() % 20),
        7 => {
            let n = 1 + pick(rng, 16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            record.splice(at..at, bytes);
        }
        8 => {
            let end = (at + 1 + pick(rng, 16)).min(len);
            if at < end {
                record.drain(at..end);
            }
        }
        9 => record.truncate(at),
        // The head of one record with the rest of another.
        10 => {
            let tail = f.params[other].1.clone();
            let cut = pick(rng, tail.len() + 1);
            let record = &mut f.params[i].1;
            record.truncate(at);
            record.extend_from_slice(&tail[cut..]);
        }
        _ => {
            if pick(rng, 2) == 0 {
                f.params[i].0 = f.params[other].0.clone();
            } else {
                let copy = f.params[i].clone();
                f.params.push((b"copy".to_vec(), copy.1));
            }
        }
    }
}

/// Loads a mutated file: a model or a format error, within the limit; a model that
/// loads writes a file that loads again.
fn load_mutated(bytes: &[u8]) -> Result<(), String> {
    let (r, peak) = peak_of(|| store::from_bytes(bytes));
    let limit = LoadOptions::default().limit(bytes.len());
    if peak > limit {
        return Err(format!("{peak} bytes allocated, the limit is {limit}"));
    }
    match r {
        Ok(m) => {
            let again = store::to_bytes(&m).map_err(|e| format!("loaded, but: {e}"))?;
            store::from_bytes(&again).map_err(|e| format!("written again, but: {e}"))?;
            Ok(())
        }
        Err(Error::InvalidFormat { .. }) => Ok(()),
        Err(e) => Err(format!("not a format error: {e:?}")),
    }
}

fn mutated(seed: usize, rounds: &[u64]) -> Vec<u8> {
    let mut f = SlimFile::parse(&seeds()[seed % seeds().len()]);
    for &r in rounds {
        mutate(&mut f, &mut Xoshiro256PlusPlus::seed_from_u64(r));
    }
    f.to_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_records_are_models_or_format_errors(
        seed in 0usize..1000,
        rounds in proptest::collection::vec(any::<u64>(), 1..4),
    ) {
        let bytes = mutated(seed, &rounds);
        prop_assert_eq!(load_mutated(&bytes), Ok(()));
    }
}

/// The mutation harness for a bounded time (or number of files), in place of a
/// fuzzer: every seed file, mutated one to three times.
#[test]
fn bounded_mutation_run() {
    let start = Instant::now();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(10);
    let mut runs = 0;
    let mut loaded = 0;
    while runs < 20_000 && start.elapsed() < Duration::from_secs(4) {
        let rounds: Vec<u64> = (0..1 + pick(&mut rng, 3)).map(|_| rng.next_u64()).collect();
        let bytes = mutated(pick(&mut rng, seeds().len()), &rounds);
        if let Err(e) = load_mutated(&bytes) {
            panic!("run {runs}, rounds {rounds:?}: {e}");
        }
        loaded += store::from_bytes(&bytes).is_ok() as usize;
        runs += 1;
    }
    eprintln!(
        "{runs} mutated files in {:?}, {loaded} loaded",
        start.elapsed()
    );
    assert!(runs >= 100, "{runs} runs");
    // Mutations reach the decoders: some files still load, most are refused.
    assert!(loaded > 0 && loaded < runs, "{loaded} of {runs} loaded");
}
