//! Steps from short text specifications, as the command line and configuration files
//! give them: `global:0.9`, `kmeans:32`, `svd:0.95`, `relative:4+huffman`, each with an
//! optional `@SELECTION` choosing the parameters (`global:0.9@fc*.weight`).
//!
//! | family | spec | step |
//! | --- | --- | --- |
//! | prune | `magnitude:F` | per-layer magnitude pruning of a fraction `F` |
//! | prune | `global:F` | global magnitude pruning (one threshold) |
//! | prune | `random:F[:SEED]` | random pruning |
//! | prune | `nm:N:M` | N:M semi-structured pruning along the input axis |
//! | prune | `structured:F` | remove (mask) the fraction `F` of output channels by L1 norm |
//! | quantize | `int8`, `int4`, … `int2` | symmetric, per output channel |
//! | quantize | `int4-group128` (any bits, any group) | affine, per group along rows |
//! | quantize | `kmeans:K`, `kmeans-optimal:K` | weight sharing, Lloyd (linear init) or exact |
//! | quantize | `pow2:B`, `ternary`, `binary` | logarithmic, TWN, XNOR (per channel) |
//! | quantize | `q8_0`, `q4_0`, `q6_k` | llama.cpp block formats (`q4_k`: GGUF output only) |
//! | prune (calibrated) | `wanda:F` | Wanda, `F` of every output row by `|w|·‖x_j‖` |
//! | prune (calibrated) | `sparsegpt:F`, `sparsegpt:N:M` | SparseGPT, a fraction `F` of each weight (adaptive mask per column block) or N:M, with weight updates |
//! | prune (calibrated) | `obs:F` | Optimal Brain Surgeon, `F` of every output row, with weight updates |
//! | quantize (calibrated) | `gptq:B`, `gptq:B:gG` | GPTQ at `B` bits (affine), per row or groups of `G` |
//! | quantize (calibrated) | `gptq:q8_0`, `gptq:q4_0` | GPTQ on llama.cpp's Q8_0 / Q4_0 blocks (GGUF-ready) |
//! | quantize (calibrated) | `awq:B`, `awq:B:gG` | AWQ at `B` bits, per row or groups of `G` |
//! | lowrank | `svd:R` or `svd:E` | truncated SVD, rank `R` (integer) or energy `E` (< 1) |
//! | lowrank | `svd:vbmf`, `rsvd:R` | VBMF rank; randomized SVD |
//! | lowrank | `tucker2:R` or `tucker2:E`, `cp:R`, `separable:R` | convolutions |
//! | lowrank | `budget:P` | SVD ranks for all Linear weights within `P` parameters |
//! | lowrank | `dwsep` | convolutions to optimal depthwise-separable pairs ([`DepthwiseSeparable`]) |
//! | encode | `auto`, `dense`, `bitmask`, `csr`, `relative:B`, each `+huffman` | storage |
//!
//! The selection after `@` is a [`Selector`] in its text form ([`Selector::parse`]):
//! comma-separated name globs, `!GLOB` exclusions and a `kind=K[|K2]` filter, e.g.
//! `int8@encoder.*,!*.LayerNorm.*` or `budget:500000@*.intermediate.*,*.output.dense.*`
//! (one step, so one threshold or budget over all the layers chosen).
//!
//! The calibrated methods need calibration statistics ([`CalibrationStats`]): build
//! them with [`calibrated_prune_step`] and [`calibrated_quantize_step`] (the command
//! line's `--calibration`); [`prune_step`] and [`quantize_step`] refuse them.
//!
//! Each method has default kinds: prune and quantize steps select Linear and Conv2d
//! weights, SVD methods Linear weights, convolution methods Conv2d weights, and encode
//! steps every parameter. A selection without `kind=` keeps the method's default kinds
//! (so `magnitude:0.5@encoder.*` leaves biases and norms alone); `kind=` replaces them
//! (`kind=any` for all kinds).

use std::sync::Arc;

use super::{
    Compressor, Encode, Factorize, FactorizeWithin, Prune, PruneCalibrated, PruneGlobal, Quantize,
    QuantizeCalibrated,
};
use crate::calib::{Awq, CalibrationStats, Gptq, Obs, SparseGpt, SparsityPattern};
use crate::error::{Error, Result};
use crate::filters::DepthwiseSeparable;
use crate::lowrank::{Budget, CpAls, RandomizedSvd, Rank, SpatialSeparable, TruncatedSvd, Tucker2};
use crate::model::{LayerKind, Selector};
use crate::prune::{
    ChannelCriterion, GlobalPruner, MagnitudePruner, NmPruner, StructuredPruner, UnstructuredPruner,
};
use crate::quant::{
    BinaryQuantizer, GgmlFormat, GgmlQuantizer, Granularity, KMeansInit, KMeansQuantizer,
    PowerOfTwoQuantizer, Scheme, TernaryQuantizer, UniformQuantizer,
};
use crate::store::{Encoding, Positions};

fn bad(family: &'static str, spec: &str, expected: &str) -> Error {
    Error::invalid(family, spec, expected.to_string())
}

/// The spec without its `@SELECTION`, and the selector: the parsed selection with the
/// `default` kinds unless it has a `kind=` filter, or `default` without a selection.
fn split(spec: &str, default: Selector) -> Result<(&str, Selector)> {
    match spec.split_once('@') {
        Some((s, text)) => {
            let mut selector = Selector::parse(text)?;
            if selector.kinds.is_empty() {
                selector.kinds = default.kinds;
            }
            Ok((s, selector))
        }
        None => Ok((spec, default)),
    }
}

/// The default selection of a method, by its name (the part of a spec before `:`).
fn default_selector(method: &str) -> Option<Selector> {
    let method = method.strip_suffix("+huffman").unwrap_or(method);
    Some(match method {
        "magnitude" | "global" | "random" | "nm" | "structured" | "kmeans" | "kmeans-optimal"
        | "pow2" | "ternary" | "binary" | "q8_0" | "q4_0" | "q6_k" | "wanda" | "sparsegpt"
        | "obs" | "gptq" | "awq" => Selector::prunable(),
        m if m.starts_with("int") => Selector::prunable(),
        "svd" | "rsvd" | "budget" => Selector::kinds(&[LayerKind::Linear]),
        "tucker2" | "cp" | "separable" | "dwsep" => Selector::kinds(&[LayerKind::Conv2d]),
        "auto" | "dense" | "bitmask" | "csr" | "relative" => Selector::all(),
        _ => return None,
    })
}

/// The parameters a step spec selects (`int8@encoder.*`: the selection with the
/// method's default kinds, as the step would use it), or, for text without `@`, a bare
/// selection (`encoder.*,!*.LayerNorm.*`, parsed by [`Selector::parse`]).
///
/// ```
/// use slimnn::pipeline::spec;
///
/// let sel = spec::selection("magnitude:0.5@encoder.*")?;
/// assert_eq!(sel.to_string(), "encoder.*,kind=linear|conv2d");
/// assert_eq!(spec::selection("encoder.*,!*.bias")?.to_string(), "encoder.*,!*.bias");
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn selection(text: &str) -> Result<Selector> {
    let Some((method, _)) = text.split_once('@') else {
        return Selector::parse(text);
    };
    let name = method.split(':').next().unwrap_or(method);
    let default = default_selector(name).ok_or_else(|| {
        bad(
            "selection",
            text,
            "SELECTION, or METHOD@SELECTION with a prune, lowrank, quantize or encode method",
        )
    })?;
    Ok(split(text, default)?.1)
}

fn number<T: std::str::FromStr>(
    family: &'static str,
    spec: &str,
    field: Option<&str>,
    what: &str,
) -> Result<T> {
    field
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| bad(family, spec, what))
}

/// The data-aware methods, which need calibration statistics.
const CALIBRATED_PRUNE: [&str; 3] = ["wanda", "sparsegpt", "obs"];
const CALIBRATED_QUANTIZE: [&str; 2] = ["gptq", "awq"];

fn method_of(spec: &str) -> &str {
    let s = spec.split('@').next().unwrap_or(spec);
    s.split(':').next().unwrap_or(s)
}

/// Whether a prune or quantize spec names a data-aware method (`wanda`, `sparsegpt`,
/// `obs`, `gptq`, `awq`), which needs calibration statistics.
pub fn is_calibrated(spec: &str) -> bool {
    let m = method_of(spec);
    CALIBRATED_PRUNE.contains(&m) || CALIBRATED_QUANTIZE.contains(&m)
}

fn needs_statistics(family: &'static str, spec: &str) -> Error {
    bad(
        family,
        spec,
        "calibration statistics for this data-aware method: pass --calibration \
         STATS.safetensors (library: spec::calibrated_prune_step / calibrated_quantize_step)",
    )
}

/// The parameters a data-aware step spec selects, after checking that every one has
/// calibration statistics of its width in `stats` (one error naming the first that
/// lacks them). For a data-free spec, only the selection.
pub fn check_calibrated(
    spec: &str,
    model: &crate::Model,
    stats: &CalibrationStats,
) -> Result<Selector> {
    let method = method_of(spec);
    let selector = selection(&format!(
        "{method}@{}",
        spec.split_once('@').map_or("*", |(_, sel)| sel)
    ))?;
    if is_calibrated(spec) {
        let name: &'static str = match method {
            "wanda" => "Wanda",
            "sparsegpt" => "SparseGPT",
            "obs" => "OBS",
            "gptq" => "GPTQ",
            _ => "AWQ",
        };
        super::check_calibration(model, &selector, stats, name)?;
    }
    Ok(selector)
}

/// A pruning step from its spec, with calibration statistics for the data-aware
/// methods (`wanda:F`, `sparsegpt:F`, `sparsegpt:N:M`, `obs:F`); other specs as
/// [`prune_step`].
///
/// ```
/// use std::sync::Arc;
/// use slimnn::calib::CalibrationStats;
/// use slimnn::pipeline::spec;
///
/// let stats = Arc::new(CalibrationStats::new());
/// let step = spec::calibrated_prune_step("sparsegpt:2:4@fc*", Arc::clone(&stats))?;
/// assert_eq!(step.describe(), "prune: SparseGPT 2:4");
/// assert!(spec::calibrated_prune_step("obs:1.5", stats).is_err());
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn calibrated_prune_step(
    spec: &str,
    stats: Arc<CalibrationStats>,
) -> Result<Box<dyn Compressor>> {
    const FAMILY: &str = "prune";
    let method = method_of(spec);
    if !CALIBRATED_PRUNE.contains(&method) {
        return prune_step(spec);
    }
    let (s, selector) = split(spec, Selector::prunable())?;
    let mut parts = s.split(':').skip(1);
    let step: Box<dyn Compressor> = match method {
        "wanda" => {
            let f: f64 = number(FAMILY, spec, parts.next(), "wanda:F, e.g. wanda:0.5")?;
            Box::new(
                PruneCalibrated::new(selector, UnstructuredPruner::wanda(f)?, stats, "Wanda")
                    .with_label(format!("prune: Wanda {f}")),
            )
        }
        "sparsegpt" => {
            let expected = "sparsegpt:F or sparsegpt:N:M, e.g. sparsegpt:0.5 or sparsegpt:2:4";
            let first = parts.next();
            let (pattern, label) = match parts.next() {
                None => {
                    let f: f64 = number(FAMILY, spec, first, expected)?;
                    (
                        SparsityPattern::Unstructured(f),
                        format!("prune: SparseGPT {f}"),
                    )
                }
                Some(m) => {
                    let n: usize = number(FAMILY, spec, first, expected)?;
                    let m: usize = number(FAMILY, spec, Some(m), expected)?;
                    (
                        SparsityPattern::NM { n, m },
                        format!("prune: SparseGPT {n}:{m}"),
                    )
                }
            };
            Box::new(
                PruneCalibrated::new(selector, SparseGpt::new(pattern)?, stats, "SparseGPT")
                    .with_label(label),
            )
        }
        _ => {
            let f: f64 = number(FAMILY, spec, parts.next(), "obs:F, e.g. obs:0.5")?;
            Box::new(
                PruneCalibrated::new(selector, Obs::new(f)?, stats, "OBS")
                    .with_label(format!("prune: OBS {f}")),
            )
        }
    };
    if parts.next().is_some() {
        return Err(bad(FAMILY, spec, "no more fields"));
    }
    Ok(step)
}

/// A quantization step from its spec, with calibration statistics for the data-aware
/// methods (`gptq:BITS[:gGROUP]`, `gptq:q8_0`, `gptq:q4_0`, `awq:BITS[:gGROUP]`); other
/// specs as [`quantize_step`].
///
/// ```
/// use std::sync::Arc;
/// use slimnn::calib::CalibrationStats;
/// use slimnn::pipeline::spec;
///
/// let stats = Arc::new(CalibrationStats::new());
/// let step = spec::calibrated_quantize_step("gptq:4:g128", Arc::clone(&stats))?;
/// assert_eq!(step.describe(), "quantize: gptq:4:g128");
/// assert!(spec::calibrated_quantize_step("gptq:9", stats).is_err());
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn calibrated_quantize_step(
    spec: &str,
    stats: Arc<CalibrationStats>,
) -> Result<Box<dyn Compressor>> {
    const FAMILY: &str = "quantize";
    let method = method_of(spec);
    if !CALIBRATED_QUANTIZE.contains(&method) {
        return quantize_step(spec);
    }
    let (s, selector) = split(spec, Selector::prunable())?;
    let label = format!("quantize: {s}");
    let ggml = match s {
        "gptq:q8_0" => Some(GgmlFormat::Q8_0),
        "gptq:q4_0" => Some(GgmlFormat::Q4_0),
        _ => None,
    };
    if let Some(format) = ggml {
        let gptq = Gptq::new(8)?.with_ggml(format)?;
        return Ok(Box::new(
            QuantizeCalibrated::new(selector, gptq, stats, "GPTQ").with_label(label),
        ));
    }
    let mut parts = s.split(':').skip(1);
    let expected = if method == "gptq" {
        "gptq:BITS, gptq:BITS:gGROUP (e.g. gptq:4:g128), gptq:q8_0 or gptq:q4_0".to_string()
    } else {
        format!("{method}:BITS or {method}:BITS:gGROUP, e.g. {method}:4:g128")
    };
    let expected = expected.as_str();
    let bits: u8 = number(FAMILY, spec, parts.next(), expected)?;
    let group = match parts.next() {
        Some(g) => Some(number(FAMILY, spec, g.strip_prefix('g'), expected)?),
        None => None,
    };
    if parts.next().is_some() {
        return Err(bad(FAMILY, spec, expected));
    }
    Ok(match method {
        "awq" => Box::new(
            QuantizeCalibrated::new(selector, Awq::new(bits, group)?, stats, "AWQ")
                .with_label(label),
        ),
        _ => {
            let mut gptq = Gptq::new(bits)?;
            if let Some(g) = group {
                gptq = gptq.with_group(g)?;
            }
            Box::new(QuantizeCalibrated::new(selector, gptq, stats, "GPTQ").with_label(label))
        }
    })
}

/// A pruning step from its spec (see the module's table).
pub fn prune_step(spec: &str) -> Result<Box<dyn Compressor>> {
    const FAMILY: &str = "prune";
    if CALIBRATED_PRUNE.contains(&method_of(spec)) {
        return Err(needs_statistics(FAMILY, spec));
    }
    let (s, selector) = split(spec, Selector::prunable())?;
    let mut parts = s.split(':');
    let method = parts.next().unwrap_or("");
    let fraction =
        |p: Option<&str>| -> Result<f64> { number(FAMILY, spec, p, "a fraction, e.g. global:0.9") };
    let step: Box<dyn Compressor> = match method {
        "magnitude" => {
            let f = fraction(parts.next())?;
            Box::new(
                Prune::new(selector, MagnitudePruner::magnitude(f)?)
                    .with_label(format!("prune: magnitude {f}")),
            )
        }
        "global" => {
            let f = fraction(parts.next())?;
            Box::new(
                PruneGlobal::new(selector, GlobalPruner::magnitude(f)?)
                    .with_label(format!("prune: global magnitude {f}")),
            )
        }
        "random" => {
            let f = fraction(parts.next())?;
            let seed = match parts.next() {
                Some(s) => number(FAMILY, spec, Some(s), "random:FRACTION[:SEED]")?,
                None => 0,
            };
            Box::new(
                Prune::new(selector, UnstructuredPruner::random(seed, f)?)
                    .with_label(format!("prune: random {f}")),
            )
        }
        "nm" => {
            let n: usize = number(FAMILY, spec, parts.next(), "nm:N:M, e.g. nm:2:4")?;
            let m: usize = number(FAMILY, spec, parts.next(), "nm:N:M, e.g. nm:2:4")?;
            Box::new(
                Prune::new(selector, NmPruner::magnitude(n, m)?)
                    .with_label(format!("prune: {n}:{m}")),
            )
        }
        "structured" => {
            let f = fraction(parts.next())?;
            Box::new(
                Prune::new(selector, StructuredPruner::new(ChannelCriterion::L1, f)?)
                    .with_label(format!("prune: {f} of output channels by L1")),
            )
        }
        _ => {
            return Err(bad(
                FAMILY,
                spec,
                "magnitude:F, global:F, random:F[:SEED], nm:N:M or structured:F",
            ));
        }
    };
    if parts.next().is_some() {
        return Err(bad(FAMILY, spec, "no more fields"));
    }
    Ok(step)
}

/// A quantization step from its spec (see the module's table).
pub fn quantize_step(spec: &str) -> Result<Box<dyn Compressor>> {
    const FAMILY: &str = "quantize";
    if CALIBRATED_QUANTIZE.contains(&method_of(spec)) {
        return Err(needs_statistics(FAMILY, spec));
    }
    let (s, selector) = split(spec, Selector::prunable())?;
    let per_row = Granularity::PerChannel { axis: 0 };
    let label = format!("quantize: {s}");
    let expected = "int8..int2, intB-groupG, kmeans:K, kmeans-optimal:K, pow2:B, ternary, binary, q8_0, q4_0 or q6_k";
    macro_rules! step {
        ($q:expr) => {
            Box::new(Quantize::new(selector, $q).with_label(label)) as Box<dyn Compressor>
        };
    }
    let (method, arg) = match s.split_once(':') {
        Some((m, a)) => (m, Some(a)),
        None => (s, None),
    };
    Ok(match (method, arg) {
        ("kmeans", a) => step!(KMeansQuantizer::lloyd(
            number(FAMILY, spec, a, "kmeans:K")?,
            KMeansInit::Linear
        )?),
        ("kmeans-optimal", a) => step!(KMeansQuantizer::optimal(number(
            FAMILY,
            spec,
            a,
            "kmeans-optimal:K"
        )?)?),
        ("pow2", a) => step!(PowerOfTwoQuantizer::new(
            number(FAMILY, spec, a, "pow2:BITS")?,
            per_row
        )?),
        ("ternary", None) => step!(TernaryQuantizer::new(per_row)),
        ("binary", None) => step!(BinaryQuantizer::new(per_row)),
        ("q8_0", None) => step!(GgmlQuantizer::new(GgmlFormat::Q8_0)),
        ("q4_0", None) => step!(GgmlQuantizer::new(GgmlFormat::Q4_0)),
        ("q6_k", None) => step!(GgmlQuantizer::new(GgmlFormat::Q6_K)),
        (m, None) if m.starts_with("int") => {
            let rest = &m[3..];
            match rest.split_once("-group") {
                Some((bits, group)) => {
                    let bits = number(FAMILY, spec, Some(bits), expected)?;
                    let size = number(FAMILY, spec, Some(group), expected)?;
                    step!(UniformQuantizer::new(
                        bits,
                        Scheme::Affine,
                        Granularity::PerGroup { size }
                    )?)
                }
                None => {
                    let bits = number(FAMILY, spec, Some(rest), expected)?;
                    step!(UniformQuantizer::new(bits, Scheme::Symmetric, per_row)?)
                }
            }
        }
        _ => return Err(bad(FAMILY, spec, expected)),
    })
}

/// A rank: an integer is a fixed rank, a number in (0, 1) an energy fraction, `vbmf` VBMF.
fn rank(spec: &str, field: Option<&str>) -> Result<Rank> {
    let f = field.ok_or_else(|| bad("lowrank", spec, "a rank, an energy fraction or vbmf"))?;
    if f == "vbmf" {
        return Ok(Rank::Vbmf);
    }
    if let Ok(r) = f.parse::<usize>() {
        return Rank::Fixed(r).check();
    }
    match f.parse::<f64>() {
        Ok(e) => Rank::Energy(e).check(),
        Err(_) => Err(bad("lowrank", spec, "a rank, an energy fraction or vbmf")),
    }
}

/// The selector of a lowrank step spec: its selection, or the method's default kinds.
fn lowrank_selection(spec: &str) -> Result<Selector> {
    let s = spec.split('@').next().unwrap_or(spec);
    let method = s.split(':').next().unwrap_or(s);
    let default = match method {
        "svd" | "rsvd" | "budget" => Selector::kinds(&[LayerKind::Linear]),
        _ => Selector::kinds(&[LayerKind::Conv2d]),
    };
    Ok(split(spec, default)?.1)
}

/// Refuses, before any work, prune and lowrank step specs that select the same
/// parameter of `model`: a factorized weight is dense, so a weight cannot be both
/// (see [`Error::FormConflict`]). Give them different layers with `@SELECTION`.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use slimnn::pipeline::spec;
/// use slimnn::Model;
///
/// let mut model = Model::new();
/// model.add("fc1.weight", ArrayD::zeros(IxDyn(&[8, 4])))?;
/// model.add("fc2.weight", ArrayD::zeros(IxDyn(&[2, 8])))?;
/// assert!(spec::check_prune_lowrank(&model, &["global:0.9".into()], &["svd:2".into()]).is_err());
/// spec::check_prune_lowrank(&model, &["global:0.9@fc1.*".into()], &["svd:2@fc2.*".into()])?;
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn check_prune_lowrank(
    model: &crate::Model,
    prune: &[String],
    lowrank: &[String],
) -> Result<()> {
    let params: Vec<(&str, LayerKind)> = model
        .params()
        .iter()
        .map(|p| (p.name(), p.kind()))
        .collect();
    prune_lowrank_conflict(&params, prune, lowrank)
}

/// [`check_prune_lowrank`] for a safetensors checkpoint on disk (a file, a directory of
/// shards or an index) before it is streamed: only the headers are read.
pub fn check_prune_lowrank_at(
    input: &std::path::Path,
    prune: &[String],
    lowrank: &[String],
) -> Result<()> {
    if prune.is_empty() || lowrank.is_empty() {
        return Ok(());
    }
    let checkpoint = crate::io::safetensors::Checkpoint::open(input)?;
    let params: Vec<(&str, LayerKind)> = checkpoint
        .entries
        .iter()
        .filter(|e| e.float_dtype().is_some())
        .map(|e| (e.name.as_str(), LayerKind::infer(&e.name, &e.shape)))
        .collect();
    prune_lowrank_conflict(&params, prune, lowrank)
}

/// The first parameter of `params` that a prune spec and a lowrank spec both select.
fn prune_lowrank_conflict(
    params: &[(&str, LayerKind)],
    prune: &[String],
    lowrank: &[String],
) -> Result<()> {
    let selected = |sel: &Selector| -> Vec<&str> {
        params
            .iter()
            .filter(|(n, k)| sel.matches(n, *k))
            .map(|(n, _)| *n)
            .collect()
    };
    let mut pruned = std::collections::HashSet::new();
    for s in prune {
        let (_, sel) = split(s, Selector::prunable())?;
        pruned.extend(selected(&sel));
    }
    for s in lowrank {
        let sel = lowrank_selection(s)?;
        if let Some(name) = selected(&sel).into_iter().find(|n| pruned.contains(n)) {
            return Err(Error::FormConflict {
                name: name.to_string(),
                held: "selected for pruning".into(),
                requested: format!("factorized (--lowrank {s})"),
                hint: "prune and factorize different weights, e.g. with @SELECTION".into(),
            });
        }
    }
    Ok(())
}

/// A low-rank step from its spec (see the module's table).
pub fn lowrank_step(spec: &str) -> Result<Box<dyn Compressor>> {
    const FAMILY: &str = "lowrank";
    let s = spec.split('@').next().unwrap_or(spec);
    let (method, arg) = match s.split_once(':') {
        Some((m, a)) => (m, Some(a)),
        None => (s, None),
    };
    let sel = lowrank_selection(spec)?;
    let label = format!("factorize: {s}");
    Ok(match method {
        "svd" => {
            Box::new(Factorize::new(sel, TruncatedSvd::new(rank(spec, arg)?)?).with_label(label))
        }
        "rsvd" => {
            Box::new(Factorize::new(sel, RandomizedSvd::new(rank(spec, arg)?)?).with_label(label))
        }
        "tucker2" => {
            let r = rank(spec, arg)?;
            Box::new(Factorize::new(sel, Tucker2::new(r, r)?).with_label(label))
        }
        "cp" => {
            let r: usize = number(FAMILY, spec, arg, "cp:RANK")?;
            Box::new(Factorize::new(sel, CpAls::new(r)?).with_label(label))
        }
        "separable" => Box::new(
            Factorize::new(sel, SpatialSeparable::new(rank(spec, arg)?)?).with_label(label),
        ),
        "dwsep" => {
            if arg.is_some() {
                return Err(bad(FAMILY, spec, "dwsep (it takes no argument)"));
            }
            Box::new(Factorize::new(sel, DepthwiseSeparable::new()).with_label(label))
        }
        "budget" => {
            let p: usize = number(FAMILY, spec, arg, "budget:PARAMETERS")?;
            Box::new(FactorizeWithin::new(sel, Budget::Params(p)))
        }
        _ => {
            return Err(bad(
                FAMILY,
                spec,
                "svd:R|E|vbmf, rsvd:R, tucker2:R|E, cp:R, separable:R, dwsep or budget:P",
            ));
        }
    })
}

/// An encoding step from its spec (see the module's table).
pub fn encode_step(spec: &str) -> Result<Box<dyn Compressor>> {
    let (s, selector) = split(spec, Selector::all())?;
    let (s, huffman) = match s.strip_suffix("+huffman") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let positions = match s.split_once(':') {
        None => match s {
            "auto" => Some(Positions::Auto),
            "dense" => Some(Positions::Dense),
            "bitmask" => Some(Positions::Bitmask),
            "csr" => Some(Positions::Csr),
            _ => None,
        },
        Some(("relative", b)) => Some(Positions::RelativeIndex {
            bits: number("encode", spec, Some(b), "relative:BITS")?,
        }),
        Some(_) => None,
    };
    let positions = positions.ok_or_else(|| {
        bad(
            "encode",
            spec,
            "auto, dense, bitmask, csr or relative:BITS, optionally +huffman",
        )
    })?;
    let encoding = Encoding { positions, huffman };
    encoding.check()?;
    Ok(Box::new(Encode::new(selector, encoding)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_spec_parses() {
        for s in [
            "magnitude:0.5",
            "global:0.9",
            "random:0.3",
            "random:0.3:7",
            "nm:2:4",
            "structured:0.25",
            "global:0.9@fc*.weight",
        ] {
            prune_step(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        for s in [
            "int8",
            "int2",
            "int4-group128",
            "kmeans:32",
            "kmeans-optimal:16",
            "pow2:4",
            "ternary",
            "binary",
            "q8_0",
            "q4_0",
            "q6_k",
            "kmeans:16@fc1.*",
        ] {
            quantize_step(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        for s in [
            "svd:64",
            "svd:0.95",
            "svd:vbmf",
            "rsvd:32",
            "tucker2:8",
            "tucker2:vbmf",
            "cp:16",
            "separable:0.99",
            "budget:100000",
            "svd:8@fc1.weight",
            "dwsep",
            "dwsep@conv*",
        ] {
            lowrank_step(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        for s in [
            "auto",
            "dense",
            "bitmask",
            "csr",
            "relative:4",
            "relative:8+huffman",
            "bitmask+huffman@fc*",
        ] {
            encode_step(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }

    #[test]
    fn calibrated_specs_parse_and_bad_ones_are_errors() {
        let stats = Arc::new(CalibrationStats::new());
        for (s, label) in [
            ("wanda:0.5", "prune: Wanda 0.5"),
            ("sparsegpt:0.5", "prune: SparseGPT 0.5"),
            ("sparsegpt:2:4@fc*", "prune: SparseGPT 2:4"),
            ("obs:0.25", "prune: OBS 0.25"),
        ] {
            let step =
                calibrated_prune_step(s, Arc::clone(&stats)).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(step.describe(), label);
        }
        for s in [
            "gptq:4",
            "gptq:3:g128",
            "awq:4:g32@fc1.*",
            "gptq:q4_0",
            "gptq:q8_0@fc1.*",
        ] {
            calibrated_quantize_step(s, Arc::clone(&stats)).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        for s in [
            "sparsegpt",
            "sparsegpt:x",
            "sparsegpt:1.5",
            "sparsegpt:2:4:1",
            "sparsegpt:0.5:4",
            "sparsegpt:4:4",
            "obs",
            "obs:0.5:1",
            "obs:-0.1",
        ] {
            assert!(calibrated_prune_step(s, Arc::clone(&stats)).is_err(), "{s}");
        }
        for s in [
            "gptq",
            "gptq:9",
            "gptq:4:128",
            "gptq:4:g0",
            "gptq:4:g8:1",
            "gptq:q4_k",
            "gptq:q4_0:g32",
            "awq:q4_0",
        ] {
            assert!(
                calibrated_quantize_step(s, Arc::clone(&stats)).is_err(),
                "{s}"
            );
        }
        assert!(prune_step("sparsegpt:0.5").is_err());
        assert!(quantize_step("gptq:4").is_err());
    }

    #[test]
    fn bad_specs_are_errors() {
        for s in [
            "",
            "magic:0.5",
            "global",
            "global:x",
            "global:1.5",
            "nm:4:2",
            "random:0.5:x",
            "magnitude:0.5:1",
        ] {
            assert!(prune_step(s).is_err(), "{s}");
        }
        for s in [
            "int9",
            "int",
            "int4-group",
            "kmeans",
            "kmeans:0",
            "ternary:2",
            "q5_0",
        ] {
            assert!(quantize_step(s).is_err(), "{s}");
        }
        for s in [
            "svd",
            "svd:0",
            "svd:1.5",
            "cp:x",
            "tucker3:4",
            "budget",
            "dwsep:2",
        ] {
            assert!(lowrank_step(s).is_err(), "{s}");
        }
        for s in ["relative:0", "relative:9", "relative", "zip", "csr+gzip"] {
            assert!(encode_step(s).is_err(), "{s}");
        }
    }

    #[test]
    fn a_glob_chooses_the_parameters() {
        let mut model = crate::Model::new();
        let w = |n| {
            ndarray::Array::from_shape_fn(ndarray::IxDyn(&[4, 8]), move |i| {
                (i[0] * 8 + i[1] + n) as f32
            })
        };
        model.add("fc1.weight", w(1)).unwrap();
        model.add("fc2.weight", w(2)).unwrap();
        prune_step("magnitude:0.5@fc2.*")
            .unwrap()
            .compress(&mut model)
            .unwrap();
        assert!(model.get("fc1.weight").unwrap().mask().is_none());
        assert!(model.get("fc2.weight").unwrap().mask().is_some());
    }

    fn bert_like() -> crate::Model {
        let mut model = crate::Model::new();
        let w = |shape: &[usize], scale: f32| {
            ndarray::Array::from_shape_fn(ndarray::IxDyn(shape), move |i| {
                let flat = ndarray::Dimension::slice(&i)
                    .iter()
                    .fold(0, |a, &b| a * 31 + b);
                scale * ((flat as f32) * 0.37).sin()
            })
        };
        model.add("encoder.0.fc1.weight", w(&[8, 16], 1.0)).unwrap();
        model.add("encoder.0.fc1.bias", w(&[8], 1.0)).unwrap();
        model.add("encoder.0.fc2.weight", w(&[16, 8], 4.0)).unwrap();
        model
            .add("encoder.0.LayerNorm.weight", w(&[16], 1.0))
            .unwrap();
        model
            .add("encoder.0.attn.weight", w(&[16, 16], 1.0))
            .unwrap();
        model.add("pooler.weight", w(&[16, 16], 1.0)).unwrap();
        model
    }

    fn touched(model: &crate::Model) -> Vec<&str> {
        model
            .params()
            .iter()
            .filter(|p| p.mask().is_some() || p.quantized().is_some())
            .map(|p| p.name())
            .collect()
    }

    #[test]
    fn a_selection_keeps_the_default_kinds_unless_it_names_some() {
        let mut model = bert_like();
        prune_step("magnitude:0.5@encoder.*")
            .unwrap()
            .compress(&mut model)
            .unwrap();
        assert_eq!(
            touched(&model),
            [
                "encoder.0.fc1.weight",
                "encoder.0.fc2.weight",
                "encoder.0.attn.weight"
            ]
        );
        let mut model = bert_like();
        quantize_step("int8@encoder.*,!*.attn.*,kind=linear|bias")
            .unwrap()
            .compress(&mut model)
            .unwrap();
        assert_eq!(
            touched(&model),
            [
                "encoder.0.fc1.weight",
                "encoder.0.fc1.bias",
                "encoder.0.fc2.weight"
            ]
        );
        assert_eq!(
            selection("int8@encoder.*,!*.attn.*").unwrap().to_string(),
            "encoder.*,!*.attn.*,kind=linear|conv2d"
        );
        assert_eq!(
            selection("budget:10@*.fc*").unwrap().to_string(),
            "*.fc*,kind=linear"
        );
        assert!(selection("magic:1@*").is_err());
        assert!(prune_step("global:0.5@fc1.*,,x").is_err());
    }

    #[test]
    fn several_globs_in_one_spec_share_one_global_threshold() {
        let mut model = bert_like();
        prune_step("global:0.5@*.fc1.*,*.fc2.*")
            .unwrap()
            .compress(&mut model)
            .unwrap();
        let zeros = |n: &str| model.get(n).unwrap().zeros();
        let (a, b) = (zeros("encoder.0.fc1.weight"), zeros("encoder.0.fc2.weight"));
        // fc2's weights are 4x larger: one threshold takes them far less.
        assert_eq!(a + b, 128);
        assert!(a > 2 * b, "{a} {b}");
        assert_eq!(touched(&model).len(), 2);
    }
}
