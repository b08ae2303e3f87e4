//! Training Caffe's LeNet-5 (the 431K-parameter network of Deep Compression's Table 1)
//! on the bundled MNIST, timing each epoch and the evaluation of the test set.
//!
//! ```text
//! cargo run --release --example lenet5_mnist [-- --epochs 1 --seed 1]
//! ```

#[path = "common/mnist.rs"]
#[allow(dead_code)] // only the loader and the arguments are used here
mod mnist;

use std::time::Instant;

use slimnn::nn::{Network, Sgd, train_epoch};
use slimnn::{Model, Result};

fn main() -> Result<()> {
    let args = mnist::parse_args("lenet5_mnist");
    let epochs = if std::env::args().any(|a| a == "--epochs") {
        args.epochs
    } else {
        1
    };
    let (train, test) = mnist::load()?;
    let mut model = Model::new();
    let net = Network::lenet5(&mut model, args.seed)?;
    let mut sgd = Sgd::new(0.05, 0.9, 1e-4)?;
    println!(
        "LeNet-5 ({} parameters), SGD 0.05, momentum 0.9, batch 64, {} threads",
        model.numel(),
        rayon::current_num_threads()
    );
    for epoch in 0..epochs {
        let t0 = Instant::now();
        let loss = train_epoch(
            &net,
            &mut model,
            &mut sgd,
            &train,
            64,
            args.seed + epoch as u64,
        )?;
        let train_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let eval = net.evaluate(&model, &test, 1000)?;
        println!(
            "  epoch {}: loss {loss:.4}, test accuracy {:.2}%; training {train_s:.1} s, \
             evaluating the {} test images {:.2} s",
            epoch + 1,
            100.0 * eval.accuracy,
            eval.total,
            t1.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
