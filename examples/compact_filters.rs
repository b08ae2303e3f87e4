//! Compact and transferred filters on MNIST: LeNet-5 (Caffe's, as in Deep Compression)
//! against variants whose convolutions have fewer parameters or multiply-adds —
//! conv2 converted into its optimal depthwise-separable pair (before and after
//! fine-tuning with the dense network as teacher), depthwise-separable trained from
//! scratch, CReLU with half the filters, tied flip/rotation banks, and a fire module.
//! Prints parameters, MACs, measured inference time over the 10,000 test images (batch 1
//! and 256, in the same run as the dense network) and test accuracy.
//!
//! ```text
//! cargo run --release --example compact_filters -- [--epochs N] [--seed S] [--json]
//! ```

#[path = "common/mnist.rs"]
mod mnist;

use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use slimnn::distill::{DistillConfig, Distillation, Teacher};
use slimnn::filters::{FireModule, SeparableBlock, Transforms};
use slimnn::io::idx::Dataset;
use slimnn::nn::{ConvSpec, Layer, Network, Sgd, train_epoch};
use slimnn::{DType, LayerKind, Model, Result, Selector};

struct Row {
    name: String,
    accuracy: f64,
    conv_params: usize,
    macs: usize,
    time_b1_s: f64,
    time_b256_s: f64,
}

impl Row {
    fn json(&self) -> String {
        format!(
            "{{\"name\": \"{}\", \"accuracy\": {:.4}, \"conv_params\": {}, \"macs\": {}, \
             \"time_b1_s\": {:.3}, \"time_b256_s\": {:.3}}}",
            self.name.trim(),
            self.accuracy,
            self.conv_params,
            self.macs,
            self.time_b1_s,
            self.time_b256_s
        )
    }
}

fn measure(name: &str, net: &Network, model: &Model, test: &Dataset) -> Result<Row> {
    let cost = net.costs(model)?;
    let t0 = Instant::now();
    let b1 = net.evaluate(model, test, 1)?;
    let time_b1_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let b256 = net.evaluate(model, test, 256)?;
    let time_b256_s = t0.elapsed().as_secs_f64();
    assert_eq!(b1.correct, b256.correct, "batch size changes no prediction");
    let row = Row {
        name: name.into(),
        accuracy: b256.accuracy,
        conv_params: cost.conv_params(),
        macs: cost.macs(),
        time_b1_s,
        time_b256_s,
    };
    println!(
        "{:<34} {:>8.2}% {:>11} {:>11} {:>9.2} s {:>9.3} s",
        row.name,
        100.0 * row.accuracy,
        row.conv_params,
        row.macs,
        row.time_b1_s,
        row.time_b256_s
    );
    Ok(row)
}

/// Adds `PREFIX.weight` `shape` and `PREFIX.bias` `[bias]`, PyTorch's initialisation.
fn param(model: &mut Model, prefix: &str, shape: &[usize], bias: usize, seed: u64) -> Result<()> {
    let fan_in: usize = shape[1..].iter().product();
    let bound = 1.0 / (fan_in as f32).sqrt();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
    };
    let w = ArrayD::from_shape_simple_fn(IxDyn(shape), &mut next);
    let b = ArrayD::from_shape_simple_fn(IxDyn(&[bias]), &mut next);
    model.add_param(format!("{prefix}.weight"), LayerKind::Conv2d, DType::F32, w)?;
    model.add_param(format!("{prefix}.bias"), LayerKind::Bias, DType::F32, b)?;
    Ok(())
}

fn conv(prefix: &str, spec: ConvSpec) -> Layer {
    Layer::Conv2d {
        weight: format!("{prefix}.weight"),
        bias: Some(format!("{prefix}.bias")),
        spec,
    }
}

fn pool() -> Layer {
    Layer::MaxPool2d {
        kernel: (2, 2),
        stride: (2, 2),
    }
}

/// LeNet-5 with `front` (from `[1, 28, 28]` to 50 maps of 8×8) replacing its
/// convolutions, then pool → flatten → fc1 (500) → ReLU → fc2 (10).
fn lenet_with(model: &mut Model, front: Vec<Layer>, seed: u64) -> Result<Network> {
    let mut fc = Model::new();
    Network::lenet5(&mut fc, seed)?;
    for name in ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"] {
        let p = fc.get(name)?;
        model.add_param(name, p.kind(), DType::F32, p.value().clone())?;
    }
    let mut layers = front;
    layers.extend([
        pool(),
        Layer::Flatten,
        Layer::Linear {
            weight: "fc1.weight".into(),
            bias: Some("fc1.bias".into()),
        },
        Layer::Relu,
        Layer::Linear {
            weight: "fc2.weight".into(),
            bias: Some("fc2.bias".into()),
        },
    ]);
    let net = Network::new(layers).with_input_shape(&[1, 28, 28]);
    net.check(model)?;
    Ok(net)
}

fn train(net: &Network, model: &mut Model, data: &Dataset, epochs: usize, seed: u64) -> Result<()> {
    let mut sgd = Sgd::new(0.01, 0.9, 5e-4)?;
    for epoch in 0..epochs {
        sgd.set_lr(if epoch >= epochs * 2 / 3 { 0.001 } else { 0.01 })?;
        let t0 = Instant::now();
        let loss = train_epoch(net, model, &mut sgd, data, 64, seed + epoch as u64)?;
        eprintln!(
            "    epoch {}: loss {loss:.4} ({:.1} s)",
            epoch + 1,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let argv: Vec<String> = std::env::args().filter(|a| a != "--json").collect();
    let mut epochs = 3usize;
    let mut seed = 1u64;
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), v) {
            ("--epochs", Some(v)) => epochs = v as usize,
            ("--seed", Some(v)) => seed = v,
            _ => {
                eprintln!("usage: compact_filters [--epochs N] [--seed S] [--json]");
                std::process::exit(2)
            }
        }
    }
    let (train_set, test) = mnist::load()?;
    let (model, net) = mnist::trained(mnist::Arch::Lenet5, &train_set, &test, epochs, seed, false)?;
    println!(
        "\n{:<34} {:>9} {:>11} {:>11} {:>11} {:>11}",
        "network", "accuracy", "conv params", "MACs", "time b1", "time b256"
    );
    let dense = measure("LeNet-5 (dense)", &net, &model, &test)?;
    let mut variants = Vec::new();

    // conv2 converted into its optimal depthwise-separable pair, run as real layers.
    let mut converted = model.clone();
    let (sep, report) =
        net.convert_depthwise_separable(&mut converted, &Selector::glob("conv2.weight"))?;
    eprintln!(
        "conv2 → depthwise-separable: relative error {:.3}",
        report.layers[0]
            .factorization
            .relative_error()
            .unwrap_or(f64::NAN)
    );
    variants.push(measure(
        "dw-separable conv2, converted",
        &sep,
        &converted,
        &test,
    )?);
    let mut kd = Distillation::new(
        DistillConfig {
            temperature: 4.0,
            alpha: 0.9,
            ..Default::default()
        },
        Teacher::new(net.clone(), model.clone())?,
        &sep,
        &converted,
    )?;
    let mut sgd = Sgd::new(0.001, 0.9, 5e-4)?;
    for epoch in 0..epochs.max(1) {
        kd.train_epoch(
            &sep,
            &mut converted,
            &mut sgd,
            &train_set,
            64,
            100 + epoch as u64,
        )?;
    }
    variants.push(measure(
        "  + fine-tuned (KD from dense)",
        &sep,
        &converted,
        &test,
    )?);

    // Depthwise-separable conv2 trained from scratch.
    let mut m = Model::new();
    param(&mut m, "conv1", &[20, 1, 5, 5], 20, seed)?;
    let mut front = vec![conv("conv1", ConvSpec::new()), pool()];
    front.extend(SeparableBlock::new(20, 50, 5).build(&mut m, "conv2", seed + 1)?);
    let n = lenet_with(&mut m, front, seed)?;
    train(&n, &mut m, &train_set, epochs, seed)?;
    variants.push(measure("dw-separable conv2, from scratch", &n, &m, &test)?);

    // CReLU with half the filters: 10 → 20 maps, 25 → 50 maps.
    let mut m = Model::new();
    param(&mut m, "conv1", &[10, 1, 5, 5], 10, seed)?;
    param(&mut m, "conv2", &[25, 20, 5, 5], 25, seed + 1)?;
    let front = vec![
        conv("conv1", ConvSpec::new()),
        Layer::CRelu,
        pool(),
        conv("conv2", ConvSpec::new()),
        Layer::CRelu,
    ];
    let n = lenet_with(&mut m, front, seed)?;
    train(&n, &mut m, &train_set, epochs, seed)?;
    variants.push(measure("CReLU, half the filters", &n, &m, &test)?);

    // Tied banks: conv1 5 filters × 4 rotations, conv2 25 filters × 2 flips.
    let mut m = Model::new();
    param(&mut m, "conv1", &[5, 1, 5, 5], 20, seed)?;
    param(&mut m, "conv2", &[25, 20, 5, 5], 50, seed + 1)?;
    let tied = |prefix: &str, transforms: Transforms| Layer::TiedConv2d {
        weight: format!("{prefix}.weight"),
        bias: Some(format!("{prefix}.bias")),
        spec: ConvSpec::new(),
        transforms,
    };
    let front = vec![
        tied("conv1", Transforms::rotations()),
        pool(),
        tied("conv2", Transforms::flips()),
    ];
    let n = lenet_with(&mut m, front, seed)?;
    train(&n, &mut m, &train_set, epochs, seed)?;
    variants.push(measure("tied banks (rotations, flips)", &n, &m, &test)?);

    // conv2 narrowed to 16 filters, then a fire module 16 → squeeze 8 → 25 + 25 maps.
    let mut m = Model::new();
    param(&mut m, "conv1", &[20, 1, 5, 5], 20, seed)?;
    param(&mut m, "conv2", &[16, 20, 5, 5], 16, seed + 1)?;
    let mut front = vec![
        conv("conv1", ConvSpec::new()),
        pool(),
        conv("conv2", ConvSpec::new()),
        Layer::Relu,
    ];
    front.extend(FireModule::new(16, 8, 25, 25).build(&mut m, "fire", seed + 2)?);
    let n = lenet_with(&mut m, front, seed)?;
    train(&n, &mut m, &train_set, epochs, seed)?;
    variants.push(measure("conv2 16 filters + fire module", &n, &m, &test)?);

    if json {
        let list: Vec<String> = variants.iter().map(Row::json).collect();
        let d = dense.json();
        let d = d.replacen("\"name\": \"LeNet-5 (dense)\", ", "", 1);
        println!("{{\"dense\": {d}, \"variants\": [{}]}}", list.join(", "));
    }
    Ok(())
}
