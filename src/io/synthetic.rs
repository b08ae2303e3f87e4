//! A synthetic Llama-shaped bf16 checkpoint, written in shards as Hugging Face does, for
//! scale tests and benchmarks.
//!
//! [`write_checkpoint`] writes `DIR/model-0000N-of-0000M.safetensors` and
//! `DIR/model.safetensors.index.json` with Hugging Face Llama tensor names
//! (`model.embed_tokens.weight`, `model.layers.N.self_attn.q_proj.weight`, ...,
//! `lm_head.weight`). It streams: each file's header is written first from the known
//! shapes, then the tensors' bytes as they are generated, a bounded block of rows at a
//! time, so memory stays small whatever the model's size.
//!
//! The values imitate a trained model's: Gaussian weights with standard deviation
//! `gain / sqrt(fan_in)` (the gain depends on the projection and grows slowly with
//! depth), a few input channels of the residual stream scaled up 4–12× in every
//! projection reading it (the outlier features of real LLMs), rare heavy-tailed single
//! values, and norm weights around 1 (larger on the outlier channels). The output is a
//! function of the seed alone, not of the thread count.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use safetensors::tensor::Dtype;

use super::safetensors::{HeaderEntry, header_bytes};
use crate::error::{Error, Result};

/// The dimensions of a Llama-style decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LlamaShape {
    /// Width of the residual stream.
    pub hidden: usize,
    /// Width of the MLP.
    pub intermediate: usize,
    /// Number of decoder layers.
    pub layers: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
}

impl LlamaShape {
    /// A Llama 3.2 3B-like model: hidden 3072, intermediate 8192, 28 layers, vocabulary
    /// 128,256, 24 heads and 8 key/value heads (7.2 GB in bf16, with an untied `lm_head`).
    pub const LLAMA_3B: LlamaShape = LlamaShape {
        hidden: 3072,
        intermediate: 8192,
        layers: 28,
        vocab: 128_256,
        heads: 24,
        kv_heads: 8,
    };

    /// A few-megabyte model with the same structure (2 layers), for tests.
    pub const TINY: LlamaShape = LlamaShape {
        hidden: 256,
        intermediate: 688,
        layers: 2,
        vocab: 2048,
        heads: 4,
        kv_heads: 2,
    };

    /// The shape called `name`: `tiny` or `llama-3b`.
    pub fn named(name: &str) -> Option<LlamaShape> {
        match name {
            "tiny" => Some(Self::TINY),
            "llama-3b" => Some(Self::LLAMA_3B),
            _ => None,
        }
    }

    /// Every tensor with its shape, in Hugging Face's order.
    fn tensors(&self) -> Vec<Spec> {
        let (h, i) = (self.hidden, self.intermediate);
        let kv = h / self.heads * self.kv_heads;
        let mut out = vec![Spec::matrix(
            "model.embed_tokens.weight",
            Role::Embedding,
            self.vocab,
            h,
            0,
        )];
        for l in 0..self.layers {
            let name = |s: &str| format!("model.layers.{l}.{s}.weight");
            out.extend([
                Spec::matrix(&name("self_attn.q_proj"), Role::ReadsHidden(1.0), h, h, l),
                Spec::matrix(&name("self_attn.k_proj"), Role::ReadsHidden(1.0), kv, h, l),
                Spec::matrix(&name("self_attn.v_proj"), Role::ReadsHidden(0.5), kv, h, l),
                Spec::matrix(&name("self_attn.o_proj"), Role::Plain(0.5), h, h, l),
                Spec::matrix(&name("mlp.gate_proj"), Role::ReadsHidden(1.0), i, h, l),
                Spec::matrix(&name("mlp.up_proj"), Role::ReadsHidden(0.8), i, h, l),
                Spec::matrix(&name("mlp.down_proj"), Role::Plain(0.6), h, i, l),
                Spec::norm(&name("input_layernorm"), h),
                Spec::norm(&name("post_attention_layernorm"), h),
            ]);
        }
        out.push(Spec::norm("model.norm.weight", h));
        out.push(Spec::matrix(
            "lm_head.weight",
            Role::ReadsHidden(1.0),
            self.vocab,
            h,
            self.layers,
        ));
        out
    }

    fn check(&self) -> Result<()> {
        let dims = [
            self.hidden,
            self.intermediate,
            self.layers,
            self.vocab,
            self.heads,
            self.kv_heads,
        ];
        if dims.contains(&0) {
            return Err(Error::invalid(
                "shape",
                format!("{self:?}"),
                "every dimension at least 1",
            ));
        }
        if !self.hidden.is_multiple_of(self.heads) || !self.heads.is_multiple_of(self.kv_heads) {
            return Err(Error::invalid(
                "shape",
                format!("{self:?}"),
                "heads dividing hidden and kv_heads dividing heads",
            ));
        }
        Ok(())
    }
}

/// Options for [`write_checkpoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticOptions {
    /// The model's dimensions.
    pub shape: LlamaShape,
    /// Seed of every value.
    pub seed: u64,
    /// A shard holds tensors up to this many bytes of data (a larger tensor gets a
    /// shard of its own), as `max_shard_size` in Hugging Face's `save_pretrained`.
    pub max_shard_bytes: u64,
}

impl Default for SyntheticOptions {
    /// [`LlamaShape::TINY`], seed 0, shards of at most 2 GB.
    fn default() -> Self {
        SyntheticOptions {
            shape: LlamaShape::TINY,
            seed: 0,
            max_shard_bytes: 2_000_000_000,
        }
    }
}

/// What [`write_checkpoint`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticCheckpoint {
    /// The index file, `DIR/model.safetensors.index.json`.
    pub index: PathBuf,
    /// The shard files, in order.
    pub shards: Vec<PathBuf>,
    /// Bytes of tensor data (the index's `total_size`).
    pub total_size: u64,
    /// Number of tensors.
    pub tensors: usize,
}

/// Writes a synthetic bf16 Llama checkpoint into `dir` (created if missing): its shards
/// and its index, each file atomically. See the [module documentation](self).
pub fn write_checkpoint(dir: &Path, options: &SyntheticOptions) -> Result<SyntheticCheckpoint> {
    options.shape.check()?;
    if options.max_shard_bytes == 0 {
        return Err(Error::invalid("max_shard_bytes", 0, "at least 1"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let specs = options.shape.tensors();
    // Shards filled in order, as `save_pretrained` does.
    let mut shards: Vec<Vec<usize>> = vec![];
    let mut size = 0u64;
    for (i, s) in specs.iter().enumerate() {
        let bytes = s.bytes() as u64;
        match shards.last_mut() {
            Some(last) if size + bytes <= options.max_shard_bytes => last.push(i),
            _ => {
                shards.push(vec![i]);
                size = 0;
            }
        }
        size += bytes;
    }
    let outliers = outlier_channels(options.shape.hidden, options.seed);
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut paths = vec![];
    for (k, members) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
        let path = dir.join(&file);
        // The file order of the reference serializer: by name (one dtype).
        let mut order = members.clone();
        order.sort_by(|&a, &b| specs[a].name.cmp(&specs[b].name));
        write_shard(&path, &specs, &order, options.seed, &outliers)?;
        for &i in members {
            weight_map.insert(specs[i].name.clone(), file.clone());
        }
        paths.push(path);
    }
    let total_size: u64 = specs.iter().map(|s| s.bytes() as u64).sum();
    let index = serde_json::json!({
        "metadata": { "total_size": total_size },
        "weight_map": weight_map,
    });
    let index_path = dir.join("model.safetensors.index.json");
    let text = serde_json::to_string_pretty(&index).expect("a JSON value serializes");
    super::write_atomically(&index_path, |tmp| {
        std::fs::write(tmp, text.as_bytes()).map_err(|e| Error::io(tmp, e))
    })?;
    Ok(SyntheticCheckpoint {
        index: index_path,
        shards: paths,
        total_size,
        tensors: specs.len(),
    })
}

/// Rows generated per block (each block from its own seed, so blocks can be generated
/// in parallel), and blocks generated per parallel round.
const ROWS_PER_BLOCK: usize = 64;
const BLOCKS_PER_ROUND: usize = 32;

fn write_shard(
    path: &Path,
    specs: &[Spec],
    order: &[usize],
    seed: u64,
    outliers: &[(usize, f32)],
) -> Result<()> {
    let entries: Vec<HeaderEntry<'_>> = order
        .iter()
        .map(|&i| HeaderEntry {
            name: &specs[i].name,
            dtype: Dtype::BF16,
            shape: &specs[i].shape,
            bytes: specs[i].bytes(),
        })
        .collect();
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let header = header_bytes(&entries, &metadata);
    super::write_atomically(path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut write = |bytes: &[u8]| w.write_all(bytes).map_err(|e| Error::io(tmp, e));
        write(&(header.len() as u64).to_le_bytes())?;
        write(&header)?;
        for &i in order {
            let spec = &specs[i];
            let tensor_seed = mix(seed ^ mix(i as u64 + 1));
            let blocks = spec.rows().div_ceil(ROWS_PER_BLOCK);
            for round in (0..blocks).step_by(BLOCKS_PER_ROUND) {
                let end = (round + BLOCKS_PER_ROUND).min(blocks);
                let bytes: Vec<Vec<u8>> = (round..end)
                    .into_par_iter()
                    .map(|b| spec.block(b, tensor_seed, outliers))
                    .collect();
                for b in &bytes {
                    write(b)?;
                }
            }
        }
        w.into_inner()
            .map_err(|e| Error::io(tmp, e.into_error()))?
            .sync_all()
            .map_err(|e| Error::io(tmp, e))
    })
}

/// How a tensor's values are drawn.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// Token embeddings: N(0, 0.02²), outlier channels included.
    Embedding,
    /// A projection reading the residual stream (its input channels include the
    /// outliers), with this gain.
    ReadsHidden(f32),
    /// A projection with this gain and no outlier inputs.
    Plain(f32),
    /// A norm weight: around 1.
    Norm,
}

struct Spec {
    name: String,
    shape: Vec<usize>,
    role: Role,
    /// Layer index, for the depth-dependent gain.
    layer: usize,
}

impl Spec {
    fn matrix(name: &str, role: Role, rows: usize, cols: usize, layer: usize) -> Spec {
        Spec {
            name: name.to_string(),
            shape: vec![rows, cols],
            role,
            layer,
        }
    }

    fn norm(name: &str, len: usize) -> Spec {
        Spec {
            name: name.to_string(),
            shape: vec![len],
            role: Role::Norm,
            layer: 0,
        }
    }

    fn rows(&self) -> usize {
        if self.shape.len() == 1 {
            1
        } else {
            self.shape[0]
        }
    }

    fn cols(&self) -> usize {
        *self.shape.last().expect("1 or 2 dimensions")
    }

    fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * 2
    }

    /// The bf16 bytes of rows `[b·64, b·64 + 64)`.
    fn block(&self, b: usize, tensor_seed: u64, outliers: &[(usize, f32)]) -> Vec<u8> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix(tensor_seed ^ mix(b as u64)));
        let cols = self.cols();
        let rows = (self.rows() - b * ROWS_PER_BLOCK).min(ROWS_PER_BLOCK);
        let mut scale = vec![1.0f32; cols];
        let std = match self.role {
            Role::Norm => {
                let mut out = Vec::with_capacity(cols * 2);
                for &(c, f) in outliers {
                    scale[c] = f / 3.0;
                }
                for s in &scale {
                    let z: f32 = StandardNormal.sample(&mut rng);
                    let v = (s * (1.0 + 0.05 * z)).abs();
                    out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes());
                }
                return out;
            }
            Role::Embedding => 0.02,
            Role::ReadsHidden(g) | Role::Plain(g) => g / (cols as f32).sqrt(),
        };
        if !matches!(self.role, Role::Plain(_)) {
            for &(c, f) in outliers {
                scale[c] = f;
            }
        }
        let depth = 1.0 + 0.5 * self.layer as f32 / 32.0;
        let mut out = Vec::with_capacity(rows * cols * 2);
        for _ in 0..rows {
            for s in &scale {
                let z: f32 = StandardNormal.sample(&mut rng);
                // About one value in a thousand from a wider tail.
                let tail = if rng.next_u32() < (u32::MAX >> 10) {
                    6.0
                } else {
                    1.0
                };
                let v = z * std * depth * s * tail;
                out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes());
            }
        }
        out
    }
}

/// About 0.5% of the residual channels (at least one), each with its scale in [4, 12].
fn outlier_channels(hidden: usize, seed: u64) -> Vec<(usize, f32)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix(seed ^ 0x6f75_746c_6965_7273));
    let n = (hidden / 200).max(1);
    let mut out: Vec<(usize, f32)> = vec![];
    while out.len() < n {
        let c = (rng.next_u64() % hidden as u64) as usize;
        if out.iter().all(|&(o, _)| o != c) {
            let f = 4.0 + 8.0 * (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
            out.push((c, f));
        }
    }
    out
}

/// SplitMix64's finalizer: spreads nearby seeds apart.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_checkpoint_is_sharded_and_valid_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let options = SyntheticOptions {
            max_shard_bytes: 2_000_000,
            ..SyntheticOptions::default()
        };
        let written = write_checkpoint(dir.path(), &options).unwrap();
        assert!(written.shards.len() >= 3, "{:?}", written.shards);
        assert_eq!(written.tensors, 2 + 2 * 9 + 1);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&written.index).unwrap()).unwrap();
        assert_eq!(index["metadata"]["total_size"], written.total_size);
        let map = index["weight_map"].as_object().unwrap();
        assert_eq!(map.len(), written.tensors);
        let mut data = 0;
        for shard in &written.shards {
            let bytes = std::fs::read(shard).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let file = shard.file_name().unwrap().to_str().unwrap();
            for (name, view) in st.tensors() {
                assert_eq!(map[&name], file);
                assert_eq!(view.dtype(), Dtype::BF16);
                data += view.data().len() as u64;
            }
        }
        assert_eq!(data, written.total_size);
        let name = "model.layers.1.self_attn.k_proj.weight";
        let bytes = std::fs::read(dir.path().join(map[name].as_str().unwrap())).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor(name).unwrap().shape(), &[128, 256]);
    }

    #[test]
    fn values_do_not_depend_on_the_thread_count_and_look_trained() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let options = SyntheticOptions::default();
        write_checkpoint(a.path(), &options).unwrap();
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| write_checkpoint(b.path(), &options).unwrap());
        let file = "model-00001-of-00001.safetensors";
        let bytes = std::fs::read(a.path().join(file)).unwrap();
        assert_eq!(bytes, std::fs::read(b.path().join(file)).unwrap());

        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let values = |name: &str| -> Vec<f32> {
            st.tensor(name)
                .unwrap()
                .data()
                .chunks(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect()
        };
        let norm = values("model.layers.0.input_layernorm.weight");
        let mean = norm.iter().sum::<f32>() / norm.len() as f32;
        assert!((mean - 1.0).abs() < 0.2, "{mean}");
        // Plain projection: std ≈ gain / sqrt(fan_in).
        let down = values("model.layers.0.mlp.down_proj.weight");
        let rms = (down.iter().map(|v| v * v).sum::<f32>() / down.len() as f32).sqrt();
        let expected = 0.6 / (688f32).sqrt();
        assert!((rms / expected - 1.0).abs() < 0.2, "{rms} vs {expected}");
        // Outlier input channels: some column of q_proj is far larger than the median.
        let q = values("model.layers.0.self_attn.q_proj.weight");
        let mut col_rms: Vec<f32> = (0..256)
            .map(|c| (q.iter().skip(c).step_by(256).map(|v| v * v).sum::<f32>() / 256.0).sqrt())
            .collect();
        col_rms.sort_by(f32::total_cmp);
        assert!(col_rms[255] > 3.0 * col_rms[128], "{col_rms:?}");
    }
}
