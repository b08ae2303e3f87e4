//! A parameter's forms (issue 14): combinations that cannot be represented are refused
//! before anything changes, low-rank factors can be quantized and stored as such, and a
//! factorized convolution keeps its geometry.

use ndarray::{ArrayD, IxDyn};
use slimnn::lowrank::{Rank, TruncatedSvd};
use slimnn::prune::{GlobalPruner, MagnitudePruner, Statistics};
use slimnn::{Error, Model, Selector};

fn wave(shape: &[usize], phase: f32) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let cols: usize = shape[1..].iter().product();
    let v = (0..n)
        .map(|k| ((k % cols) as f32 * 0.37 + phase).sin() + ((k / cols) as f32 * 0.11).cos())
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

fn model() -> Model {
    let mut m = Model::new();
    m.add("fc1.weight", wave(&[48, 64], 0.0)).unwrap();
    m.add("fc1.bias", wave(&[48], 0.5)).unwrap();
    m.add("fc2.weight", wave(&[10, 48], 1.0)).unwrap();
    m
}

/// Name, effective values, pruned count, quantized, factorized.
type Snapshot = (String, Vec<f32>, Option<usize>, bool, bool);

/// Everything observable about a parameter's form and values.
fn snapshot(m: &Model) -> Vec<Snapshot> {
    m.params()
        .iter()
        .map(|p| {
            (
                p.name().to_string(),
                p.effective().iter().copied().collect(),
                p.mask().map(|m| m.count_pruned()),
                p.quantized().is_some(),
                p.factorization().is_some(),
            )
        })
        .collect()
}

#[test]
fn prune_then_factorize_is_refused_before_any_change() {
    let mut m = model();
    m.prune(
        &Selector::parse("fc1.weight").unwrap(),
        &MagnitudePruner::magnitude(0.5).unwrap(),
        &Statistics::new(),
    )
    .unwrap();
    let before = snapshot(&m);
    let svd = TruncatedSvd::new(Rank::Fixed(4)).unwrap();
    // fc2 is factorized first in no order: the whole call is refused.
    let e = m.factorize(&Selector::prunable(), &svd).unwrap_err();
    assert!(
        matches!(e, Error::FormConflict { ref name, .. } if name == "fc1.weight"),
        "{e}"
    );
    assert_eq!(snapshot(&m), before);
    // The mask is still there, and a weight not pruned factorizes.
    m.factorize(&Selector::parse("fc2.weight").unwrap(), &svd)
        .unwrap();
    assert!(m.get("fc1.weight").unwrap().mask().is_some());
}

#[test]
fn factorize_then_prune_is_refused_before_any_change() {
    let mut m = model();
    let svd = TruncatedSvd::new(Rank::Fixed(4)).unwrap();
    m.factorize(&Selector::parse("fc2.weight").unwrap(), &svd)
        .unwrap();
    let before = snapshot(&m);
    let e = m
        .prune(
            &Selector::prunable(),
            &MagnitudePruner::magnitude(0.5).unwrap(),
            &Statistics::new(),
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::FormConflict { ref name, .. } if name == "fc2.weight"),
        "{e}"
    );
    assert_eq!(snapshot(&m), before);
    let e = m
        .prune_global(
            &Selector::prunable(),
            &GlobalPruner::magnitude(0.5).unwrap(),
            &Statistics::new(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::FormConflict { .. }), "{e}");
    assert_eq!(snapshot(&m), before);
    // Setting a mask by hand is refused too, and nothing was dropped.
    let mask = slimnn::Mask::ones(&[10, 48]);
    let p = m.get_mut("fc2.weight").unwrap();
    assert!(matches!(p.set_mask(mask), Err(Error::FormConflict { .. })));
    assert!(p.factorization().is_some());
}

#[test]
fn pipeline_prune_and_lowrank_on_one_weight_is_refused() {
    use slimnn::pipeline::spec;
    let m = model();
    let e = spec::check_prune_lowrank(&m, &["global:0.9".into()], &["svd:4".into()]).unwrap_err();
    assert!(matches!(e, Error::FormConflict { .. }), "{e}");
    spec::check_prune_lowrank(&m, &["global:0.9@fc1.*".into()], &["svd:4@fc2.*".into()]).unwrap();
    // The pipeline itself refuses too, and leaves the model as it was.
    let mut m = model();
    let before = snapshot(&m);
    let mut pipeline = slimnn::pipeline::Pipeline::new();
    pipeline.push(spec::prune_step("global:0.5").unwrap());
    pipeline.push(spec::lowrank_step("svd:4").unwrap());
    let e = pipeline.run(&mut m).unwrap_err();
    assert!(matches!(e, Error::FormConflict { .. }), "{e}");
    assert_eq!(snapshot(&m), before);
}

#[cfg(feature = "cli")]
#[test]
fn cli_prune_and_lowrank_on_one_weight_exits_with_an_error() {
    use slimnn::io::safetensors::SaveOptions;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.safetensors");
    model().save(&input, &SaveOptions::default()).unwrap();
    let out = dir.path().join("m.slim");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_slimnn"))
            .arg("compress")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .args(extra)
            .arg("--quiet")
            .output()
            .unwrap()
    };
    let o = run(&["--prune", "global:0.5", "--lowrank", "svd:4"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot also be factorized"), "{err}");
    assert!(!out.exists());
    // Per-tensor steps stream; the conflict is refused from the header, before a byte
    // is written, for one output file and for shards.
    let o = run(&["--prune", "magnitude:0.5", "--lowrank", "svd:4"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot also be factorized"), "{err}");
    assert!(!out.exists());
    let o = run(&[
        "--prune",
        "magnitude:0.5",
        "--lowrank",
        "svd:4",
        "--shard-size",
        "1000000",
    ]);
    assert!(!o.status.success());
    assert!(!out.exists());
    let o = run(&["--prune", "global:0.5@fc1.*", "--lowrank", "svd:4@fc2.*"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let back = Model::load_compressed(&out).unwrap();
    assert!(back.get("fc1.weight").unwrap().mask().is_some());
    assert!(back.get("fc2.weight").unwrap().factorization().is_some());
}

/// `--lowrank svd` then `--quantize int8`: the factors are quantized (not the
/// reconstruction), stored as codes, read back equal, and the report counts the bytes
/// written.
#[test]
fn lowrank_then_int8_quantizes_the_factors_and_stores_them() {
    use slimnn::pipeline::{Pipeline, spec};
    let mut m = model();
    let mut pipeline = Pipeline::new();
    pipeline.push(spec::lowrank_step("svd:8@fc1.weight").unwrap());
    pipeline.push(spec::quantize_step("int8").unwrap());
    let report = pipeline.run(&mut m).unwrap();

    let p = m.get("fc1.weight").unwrap();
    let f = p.factorization().expect("still factorized");
    let codes = f.quantized_factors().expect("quantized factors");
    assert_eq!(codes.len(), 2);
    assert_eq!(codes[0].shape(), &[48, 8]);
    assert_eq!(codes[1].shape(), &[8, 64]);
    assert!(codes.iter().all(|q| q.codes().bits() == 8));
    // The values are the reconstruction from the decoded factors.
    let a = codes[0].dequantize::<f32>();
    let b = codes[1].dequantize::<f32>();
    let a = a.into_dimensionality::<ndarray::Ix2>().unwrap();
    let b = b.into_dimensionality::<ndarray::Ix2>().unwrap();
    let product = a.dot(&b).into_dyn();
    let diff = (&product - p.value()).mapv(f32::abs);
    assert!(
        diff.iter().all(|&d| d < 1e-4),
        "{}",
        diff.fold(0.0f32, |m, &d| m.max(d))
    );

    // Round trip through the compressed file.
    let bytes = slimnn::store::to_bytes(&m).unwrap();
    let back = slimnn::store::from_bytes(&bytes).unwrap();
    let bp = back.get("fc1.weight").unwrap();
    assert_eq!(bp.factorization(), p.factorization());
    assert_eq!(bp.value(), p.value());
    assert_eq!(slimnn::store::to_bytes(&back).unwrap(), bytes);

    // The report counts the codes written: one byte per factor element, not four.
    let row = report
        .params
        .iter()
        .find(|r| r.name == "fc1.weight")
        .unwrap();
    let elements = 48 * 8 + 8 * 64;
    assert!(
        row.stored.values >= elements && row.stored.values < elements + 64,
        "{:?}",
        row.stored
    );
    assert!(row.stored.decoding > 0, "{:?}", row.stored);
    assert!(row.form.contains("quantized factors"), "{}", row.form);
    assert_eq!(report.file_bytes, bytes.len());
}

/// A factorized strided, padded convolution, stored and loaded, runs with the layer's
/// output shape.
#[test]
fn stored_factorized_strided_padded_conv_keeps_its_output_shape() {
    use slimnn::lowrank::Tucker2;
    use slimnn::nn::{ConvSpec, conv2d};
    let spec = ConvSpec::new().with_stride(2, 2).with_padding(1, 1);
    let mut m = Model::new();
    m.add("conv.weight", wave(&[8, 6, 3, 3], 0.2)).unwrap();
    m.set_conv_spec("conv.weight", spec).unwrap();
    let dense = m.get("conv.weight").unwrap().value().clone();
    m.factorize(
        &Selector::prunable(),
        &Tucker2::new(Rank::Fixed(6), Rank::Fixed(6)).unwrap(),
    )
    .unwrap();
    let back = slimnn::store::from_bytes(&slimnn::store::to_bytes(&m).unwrap()).unwrap();
    let f = back.get("conv.weight").unwrap().factorization().unwrap();
    assert_eq!(f.conv_spec(), spec);
    assert_eq!(back.get("conv.weight").unwrap().conv_spec(), Some(spec));
    let x = wave(&[2, 6, 9, 9], 0.7);
    let y = f.forward(&x).unwrap();
    let x4 = x.into_dimensionality::<ndarray::Ix4>().unwrap();
    let w4 = dense.into_dimensionality::<ndarray::Ix4>().unwrap();
    let want = conv2d(&x4, &w4, None, spec).unwrap();
    assert_eq!(y.shape(), want.shape());
    assert_eq!(y.shape(), &[2, 8, 5, 5]);
    // Full rank: the same outputs up to rounding.
    let err = (&y - &want.into_dyn())
        .mapv(f32::abs)
        .fold(0.0f32, |a, &b| a.max(b));
    assert!(err < 1e-3, "{err}");
}

/// A network records its convolutions' geometry in the model.
#[test]
fn network_records_conv_specs_for_factorizing() {
    use slimnn::lowrank::Tucker2;
    use slimnn::nn::{ConvSpec, Layer, Network};
    let spec = ConvSpec::new().with_stride(2, 1).with_padding(1, 0);
    let net = Network::new(vec![
        Layer::Conv2d {
            weight: "conv.weight".into(),
            bias: None,
            spec,
        },
        Layer::Flatten,
    ]);
    let mut m = Model::new();
    m.add("conv.weight", wave(&[4, 3, 3, 3], 0.1)).unwrap();
    assert_eq!(net.record_conv_specs(&mut m).unwrap(), 1);
    m.factorize(
        &Selector::prunable(),
        &Tucker2::new(Rank::Fixed(4), Rank::Fixed(3)).unwrap(),
    )
    .unwrap();
    let f = m.get("conv.weight").unwrap().factorization().unwrap();
    assert_eq!(f.conv_spec(), spec);
    let y = f.forward(&wave(&[1, 3, 7, 7], 0.0)).unwrap();
    assert_eq!(y.shape(), &[1, 4, 4, 5]);
    // A bad geometry is refused.
    let e = m.set_conv_spec("conv.weight", ConvSpec::new().with_stride(0, 1));
    assert!(e.is_err());
}

/// Quantizing and then factorizing would lose the codes: refused before any change. A
/// factorized weight quantized as a whole is refused too (its factors are quantized).
#[test]
fn quantize_then_factorize_is_refused_before_any_change() {
    use slimnn::quant::{Granularity, Scheme, UniformQuantizer};
    let int8 =
        UniformQuantizer::new(8, Scheme::Symmetric, Granularity::PerChannel { axis: 0 }).unwrap();
    let svd = TruncatedSvd::new(Rank::Fixed(4)).unwrap();
    let mut m = model();
    m.quantize(&Selector::parse("fc1.weight").unwrap(), &int8)
        .unwrap();
    let before = snapshot(&m);
    let e = m.factorize(&Selector::prunable(), &svd).unwrap_err();
    assert!(
        matches!(e, Error::FormConflict { ref name, .. } if name == "fc1.weight"),
        "{e}"
    );
    assert_eq!(snapshot(&m), before);

    let mut m = model();
    m.factorize(&Selector::parse("fc2.weight").unwrap(), &svd)
        .unwrap();
    let q = {
        use slimnn::quant::Quantizer;
        let p = m.get("fc2.weight").unwrap();
        int8.quantize(p.value(), &Default::default()).unwrap()
    };
    let p = m.get_mut("fc2.weight").unwrap();
    assert!(matches!(
        p.set_quantized(q),
        Err(Error::FormConflict { .. })
    ));
    assert!(p.factorization().is_some() && p.quantized().is_none());
}
