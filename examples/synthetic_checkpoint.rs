//! Writes a synthetic Llama-shaped bf16 checkpoint in shards, as Hugging Face does.
//!
//! ```text
//! cargo run --release --example synthetic_checkpoint -- --shape llama-3b --out DIR \
//!     [--max-shard-size 2G] [--seed 0]
//! ```
//!
//! `--shape` is `tiny` (a few MB, 2 layers) or `llama-3b` (7.2 GB in 4 shards of at most
//! 2 GB). See `slimnn::io::synthetic`.

use std::path::PathBuf;
use std::time::Instant;

use slimnn::io::synthetic::{LlamaShape, SyntheticOptions, write_checkpoint};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = SyntheticOptions::default();
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--shape" => {
                let name = value()?;
                options.shape = LlamaShape::named(&name)
                    .ok_or_else(|| format!("unknown shape `{name}` (tiny, llama-3b)"))?;
            }
            "--out" => out = Some(value()?.into()),
            "--seed" => options.seed = value()?.parse()?,
            "--max-shard-size" => options.max_shard_bytes = parse_bytes(&value()?)?,
            "-h" | "--help" => {
                println!(
                    "synthetic_checkpoint --shape tiny|llama-3b --out DIR [--max-shard-size 2G] [--seed N]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let out = out.ok_or("--out DIR is required")?;
    let start = Instant::now();
    let written = write_checkpoint(&out, &options)?;
    println!(
        "{} tensors, {} bytes of data in {} shard(s), index {} ({:.1} s)",
        written.tensors,
        written.total_size,
        written.shards.len(),
        written.index.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A byte count with an optional decimal suffix, as Hugging Face's `max_shard_size`:
/// `2000000`, `500M`, `2G` (powers of 1000).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let (digits, scale) = match text.chars().last() {
        Some('K' | 'k') => (&text[..text.len() - 1], 1_000),
        Some('M' | 'm') => (&text[..text.len() - 1], 1_000_000),
        Some('G' | 'g') => (&text[..text.len() - 1], 1_000_000_000),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{text}` is not a byte count such as 500M or 2G"))
}
