//! Loading and saving a [`Model`] in the safetensors format.
//!
//! Floating-point tensors (F32, F64, F16, BF16) become parameters computed in `f32` and
//! are written back in their original dtype unless [`SaveOptions::dtype`] says otherwise.
//! Other tensors (integer buffers, booleans) are kept verbatim as [`RawTensor`]s.
//! Metadata (`__metadata__`) is kept.
//!
//! Pruning masks follow PyTorch's `torch.nn.utils.prune` convention on request: a pruned
//! `x.weight` is written as `x.weight_orig` plus a 0/1 `x.weight_mask`, and such a pair
//! is read back as one masked parameter.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::mask::Mask;
use crate::model::{DType, LayerKind, Model, RawTensor};

/// How masks are written when a model is saved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaskExport {
    /// Write the masked values under the parameter's own name (what an inference engine
    /// loads). The default.
    #[default]
    Apply,
    /// Write PyTorch's pair `<name>_orig` (unmasked values) and `<name>_mask` (0/1 in the
    /// parameter's dtype), so pruning can be resumed.
    PyTorch,
}

/// Options for [`Model::save`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaveOptions {
    /// Write every floating-point parameter in this dtype (`None`: each in its own).
    pub dtype: Option<DType>,
    /// How masks are written.
    pub masks: MaskExport,
}

impl Model {
    /// Loads a safetensors file.
    ///
    /// Corrupt, truncated or hostile files (headers claiming more data than the file
    /// holds, overlapping offsets, overflowing shapes) are an [`Error::InvalidFormat`];
    /// anything but a regular file (a device, a pipe) is an [`Error::Io`].
    ///
    /// The file is memory-mapped, not read whole. `path` may also be a Hugging Face
    /// sharded checkpoint: a directory holding `model.safetensors.index.json`, or that
    /// index file itself (any name ending in `.index.json`); its shards load as one
    /// model. A hostile index (a shard missing or outside the index's directory, a name
    /// the index puts in a shard that lacks it, a tensor in two shards or in none the
    /// index names) is an [`Error::InvalidFormat`] or, for a missing file, an
    /// [`Error::Io`].
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        if let Some(index) = sharded_index(path) {
            return load_sharded(&index);
        }
        let bytes = crate::kernels::mmap::map_regular(path)?;
        Model::from_safetensors(&bytes, &path.display().to_string())
    }

    /// Parses safetensors bytes; `source_name` names them in errors.
    pub fn from_safetensors(bytes: &[u8], source_name: &str) -> Result<Model> {
        let bad = |reason: String| invalid(source_name, reason);
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let views: Vec<(String, TensorView<'_>)> =
            st.iter().map(|(n, v)| (n.to_string(), v)).collect();
        let metadata = header.metadata().clone().unwrap_or_default();
        model_from_views(views, metadata)
    }
}

fn invalid(source_name: &str, reason: String) -> Error {
    Error::InvalidFormat {
        format: "safetensors",
        source_name: source_name.to_string(),
        reason,
    }
}

/// Writes `head` then `parts` to `file` and syncs it (`path` names it in errors).
fn write_synced<'a>(
    path: &Path,
    file: std::fs::File,
    head: &[u8],
    parts: impl Iterator<Item = &'a [u8]>,
) -> Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    w.write_all(head).map_err(|e| Error::io(path, e))?;
    for p in parts {
        w.write_all(p).map_err(|e| Error::io(path, e))?;
    }
    w.into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?
        .sync_all()
        .map_err(|e| Error::io(path, e))
}

/// Writes a sharded checkpoint of `n` shards into the directory `dir`: each shard
/// `model-0000K-of-0000N.safetensors` by `write(k, file)`, which gives the names and
/// data bytes of its tensors, then the index. The set is staged in a temporary
/// directory beside `dir`, renamed to `dir` only when complete (`dir` must be absent or
/// empty). Returns the shard paths.
pub(crate) fn write_sharded(
    dir: &Path,
    n: usize,
    mut write: impl FnMut(usize, std::fs::File) -> Result<Vec<(String, u64)>>,
) -> Result<Vec<PathBuf>> {
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the output directory exists and is not empty",
            ),
        ));
    }
    let parent = match dir.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".slimnn-")
        .suffix(".tmp")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    let mut weight_map = BTreeMap::new();
    let mut total_size = 0u64;
    let mut files = vec![];
    for k in 0..n {
        let file = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
        let path = tmp.path().join(&file);
        let created = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        for (name, bytes) in write(k, created)? {
            weight_map.insert(name, file.clone());
            total_size += bytes;
        }
        files.push(dir.join(&file));
    }
    let index = serde_json::json!({
        "metadata": { "total_size": total_size },
        "weight_map": weight_map,
    });
    let text = serde_json::to_string_pretty(&index).expect("a JSON value serializes");
    let index_path = tmp.path().join(INDEX_FILE);
    let created = std::fs::File::create(&index_path).map_err(|e| Error::io(&index_path, e))?;
    write_synced(&index_path, created, text.as_bytes(), std::iter::empty())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(tmp.path(), e))?;
    }
    // `rename` replaces an empty directory and fails on a non-empty one.
    let staged = tmp.keep();
    if let Err(e) = std::fs::rename(&staged, dir) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(Error::io(dir, e));
    }
    Ok(files)
}

/// The name of a sharded checkpoint's index inside its directory.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The index file if `path` names a sharded checkpoint (a directory, or a file whose
/// name ends in `.index.json`).
fn sharded_index(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        Some(path.join(INDEX_FILE))
    } else if path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".index.json"))
    {
        Some(path.to_path_buf())
    } else {
        None
    }
}

/// The files holding the checkpoint at `path`: the shards of a sharded checkpoint (see
/// [`Model::load`]), in the order of their names, or `path` itself. The index is read
/// and checked; the shards are not opened.
pub fn checkpoint_files(path: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let path = path.as_ref();
    match sharded_index(path) {
        Some(index) => Ok(read_index(&index)?.into_keys().collect()),
        None => Ok(vec![path.to_path_buf()]),
    }
}

/// The index's weight map grouped by shard: shard path → tensor names.
fn read_index(index: &Path) -> Result<BTreeMap<PathBuf, Vec<String>>> {
    let source = index.display().to_string();
    let bad = |reason: String| invalid(&source, reason);
    let bytes = super::read_regular(index)?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("index is not JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("index has no `weight_map` object".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("`{name}` maps to {file}, not a file name")))?;
        // Shards live beside the index: a plain file name, nothing that leaves the
        // directory (`..`, `/`, an absolute path).
        let mut parts = Path::new(file).components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(std::path::Component::Normal(_)), None)
        ) {
            return Err(bad(format!(
                "shard `{file}` of `{name}` is not a file name in the index's directory"
            )));
        }
        shards.entry(dir.join(file)).or_default().push(name.clone());
    }
    if shards.is_empty() {
        return Err(bad("index names no tensors".into()));
    }
    Ok(shards)
}

/// Loads the shards an index names as one model.
fn load_sharded(index: &Path) -> Result<Model> {
    let shards = read_index(index)?;
    let maps = shards
        .keys()
        .map(|p| crate::kernels::mmap::map_regular(p))
        .collect::<Result<Vec<_>>>()?;
    let (views, metadata) = shard_views(&shards, &maps)?;
    model_from_views(
        views.into_iter().map(|(n, _, v)| (n, v)).collect(),
        metadata,
    )
}

/// The tensors of every shard (name, shard number, view), checked against the index,
/// and the shards' metadata merged.
type ShardViews<'a> = (
    Vec<(String, usize, TensorView<'a>)>,
    HashMap<String, String>,
);

fn shard_views<'a>(
    shards: &BTreeMap<PathBuf, Vec<String>>,
    maps: &'a [memmap2::Mmap],
) -> Result<ShardViews<'a>> {
    let mut views = vec![];
    let mut metadata = HashMap::new();
    let mut owner: HashMap<String, &Path> = HashMap::new();
    for (k, ((path, names), bytes)) in shards.iter().zip(maps).enumerate() {
        let source = path.display().to_string();
        let bad = |reason: String| invalid(&source, reason);
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        if let Some(meta) = header.metadata() {
            metadata.extend(meta.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let listed: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
        for name in names {
            if st.tensor(name).is_err() {
                return Err(bad(format!(
                    "the index puts `{name}` in this shard, which does not hold it"
                )));
            }
        }
        for (name, view) in st.iter() {
            if let Some(first) = owner.insert(name.to_string(), path) {
                return Err(bad(format!(
                    "tensor `{name}` is also in {}",
                    first.display()
                )));
            }
            if !listed.contains(name) {
                return Err(bad(format!(
                    "tensor `{name}` is in this shard, but the index does not put it here"
                )));
            }
            views.push((name.to_string(), k, view));
        }
    }
    Ok((views, metadata))
}

/// One tensor of a checkpoint on disk, for reading it piece by piece.
pub(crate) struct Entry {
    /// Its name.
    pub(crate) name: String,
    /// Its dtype as stored.
    pub(crate) dtype: Dtype,
    /// Its shape.
    pub(crate) shape: Vec<usize>,
    /// The file it is in (an index into [`Checkpoint::files`]).
    pub(crate) file: usize,
    /// Where its bytes start in that file.
    pub(crate) offset: u64,
    /// How many bytes it has.
    pub(crate) len: usize,
}

impl Entry {
    /// Its dtype as a parameter's, if it is a float tensor.
    pub(crate) fn float_dtype(&self) -> Option<DType> {
        float_dtype(self.dtype)
    }

    /// Its dtype's name as safetensors writes it (`"BF16"`).
    pub(crate) fn dtype_name(&self) -> String {
        dtype_name(self.dtype)
    }
}

/// A checkpoint's tensors (one file or the shards of an index), checked as
/// [`Model::load`] checks them, in natural name order; nothing but headers is read.
pub(crate) struct Checkpoint {
    /// Its files.
    pub(crate) files: Vec<PathBuf>,
    /// Its tensors.
    pub(crate) entries: Vec<Entry>,
    /// Its metadata, merged over the shards.
    pub(crate) metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Opens the checkpoint at `path` (see [`Model::load`]).
    pub(crate) fn open(path: &Path) -> Result<Checkpoint> {
        let shards = match sharded_index(path) {
            Some(index) => read_index(&index)?,
            None => {
                let map = crate::kernels::mmap::map_regular(path)?;
                let st = SafeTensors::deserialize(&map)
                    .map_err(|e| invalid(&path.display().to_string(), e.to_string()))?;
                std::iter::once((
                    path.to_path_buf(),
                    st.names().into_iter().map(String::from).collect(),
                ))
                .collect()
            }
        };
        let maps = shards
            .keys()
            .map(|p| crate::kernels::mmap::map_regular(p))
            .collect::<Result<Vec<_>>>()?;
        let (views, metadata) = shard_views(&shards, &maps)?;
        let mut entries: Vec<Entry> = views
            .into_iter()
            .map(|(name, file, view)| Entry {
                name,
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                file,
                // Both point into the same map.
                offset: (view.data().as_ptr() as usize - maps[file].as_ptr() as usize) as u64,
                len: view.data().len(),
            })
            .collect();
        entries.sort_by(|a, b| natural_cmp(&a.name, &b.name));
        Ok(Checkpoint {
            files: shards.into_keys().collect(),
            entries,
            metadata: metadata.into_iter().collect(),
        })
    }

    /// Whether a pair `x_orig` / `x_mask` (PyTorch's pruning) is among the tensors.
    pub(crate) fn has_mask_pairs(&self) -> bool {
        let names: std::collections::HashSet<&str> =
            self.entries.iter().map(|e| e.name.as_str()).collect();
        self.entries.iter().any(|e| {
            e.name
                .strip_suffix("_orig")
                .is_some_and(|base| names.contains(format!("{base}_mask").as_str()))
        })
    }
}

/// Reads ranges of a checkpoint's tensors from its open files.
pub(crate) struct Reader {
    files: Vec<(PathBuf, std::fs::File)>,
}

impl Reader {
    /// Opens the files of `checkpoint`.
    pub(crate) fn new(checkpoint: &Checkpoint) -> Result<Reader> {
        let files = checkpoint
            .files
            .iter()
            .map(|p| Ok((p.clone(), super::open_regular(p)?.0)))
            .collect::<Result<_>>()?;
        Ok(Reader { files })
    }

    /// Bytes `range` (relative to the tensor's start) of `entry` into `out`.
    pub(crate) fn read(
        &mut self,
        entry: &Entry,
        range: std::ops::Range<usize>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let (path, file) = &mut self.files[entry.file];
        // Read into the buffer's spare capacity: no zeroing of the bytes first.
        out.clear();
        out.reserve(range.len());
        file.seek(SeekFrom::Start(entry.offset + range.start as u64))
            .and_then(|_| file.take(range.len() as u64).read_to_end(out))
            .and_then(|n| match n == range.len() {
                true => Ok(()),
                false => Err(std::io::ErrorKind::UnexpectedEof.into()),
            })
            .map_err(|e| Error::io(path.as_path(), e))
    }
}

/// Builds a model from tensors (of one file or of all shards).
fn model_from_views(
    mut views: Vec<(String, TensorView<'_>)>,
    metadata: HashMap<String, String>,
) -> Result<Model> {
    views.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    let names: HashMap<&str, usize> = views
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();

    let mut model = Model::new();
    model.metadata_mut().extend(metadata);
    for (name, view) in &views {
        // `x_mask` is consumed by its `x_orig`; `x_orig` becomes `x` with a mask.
        if let Some(base) = name.strip_suffix("_mask")
            && let Some(&orig) = names.get(format!("{base}_orig").as_str())
            && pairs(&views[orig].1, view)
            && !names.contains_key(base)
        {
            continue;
        }
        let paired_mask = name
            .strip_suffix("_orig")
            .filter(|base| !names.contains_key(base))
            .and_then(|base| {
                let mask = names.get(format!("{base}_mask").as_str())?;
                Some((base, &views[*mask].1))
            })
            .filter(|(_, m)| pairs(view, m));
        let (param_name, mask_view) = match paired_mask {
            Some((base, m)) => (base.to_string(), Some(m)),
            None => (name.clone(), None),
        };
        match float_dtype(view.dtype()) {
            Some(dtype) => {
                let value = decode(view, dtype);
                let kind = LayerKind::infer(&param_name, view.shape());
                let p = model.add_param(param_name, kind, dtype, value)?;
                if let Some(m) = mask_view {
                    p.set_mask(decode_mask(m))?;
                }
            }
            None => model.add_raw(RawTensor {
                name: name.clone(),
                dtype: dtype_name(view.dtype()),
                shape: view.shape().to_vec(),
                bytes: view.data().to_vec(),
            })?,
        }
    }
    Ok(model)
}

impl Model {
    /// Saves the model as a safetensors file, atomically: written to a temporary file
    /// beside `path` (mode 0644 less the umask on Unix, like every file slimnn writes)
    /// and renamed over it only when complete. The bytes are those of
    /// [`Model::to_safetensors`], streamed to the file rather than assembled in memory.
    pub fn save(&self, path: impl AsRef<Path>, options: &SaveOptions) -> Result<()> {
        let path = path.as_ref();
        let mut tensors = self.tensors_for_saving(options)?;
        let header = safetensors_header(&mut tensors, self.metadata());
        // Not `safetensors::serialize_to_file`: it renames its own private (0600)
        // temporary file over the target.
        crate::io::write_atomically(path, |tmp| {
            use std::io::Write;
            let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut write = |bytes: &[u8]| w.write_all(bytes).map_err(|e| Error::io(tmp, e));
            write(&(header.len() as u64).to_le_bytes())?;
            write(&header)?;
            for (_, t) in &tensors {
                write(&t.bytes)?;
            }
            w.into_inner()
                .map_err(|e| Error::io(tmp, e.into_error()))?
                .sync_all()
                .map_err(|e| Error::io(tmp, e))
        })
    }

    /// Saves the model as a Hugging Face sharded checkpoint in the directory `dir`:
    /// `model-0000N-of-0000M.safetensors` (tensors in natural name order, a shard filled
    /// up to `max_shard_bytes` of data; a larger tensor gets a shard of its own) and
    /// `model.safetensors.index.json`, which [`Model::load`] reads back.
    ///
    /// Atomic for the whole set: every file is written into a temporary directory
    /// beside `dir`, which is renamed to `dir` only when all are complete, so a failure
    /// leaves nothing behind. `dir` must not exist, or be an empty directory (an
    /// [`Error::Io`] otherwise). Returns the shard paths.
    pub fn save_sharded(
        &self,
        dir: impl AsRef<Path>,
        options: &SaveOptions,
        max_shard_bytes: u64,
    ) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        if max_shard_bytes == 0 {
            return Err(Error::invalid("max_shard_bytes", 0, "at least 1"));
        }
        let mut tensors = self.tensors_for_saving(options)?;
        tensors.sort_by(|a, b| natural_cmp(&a.0, &b.0));
        let mut shards: Vec<Vec<(String, Buffer)>> = vec![];
        let mut size = 0u64;
        for t in tensors {
            let bytes = t.1.bytes.len() as u64;
            match shards.last_mut() {
                Some(last) if size + bytes <= max_shard_bytes => last.push(t),
                _ => {
                    shards.push(vec![t]);
                    size = 0;
                }
            }
            size += bytes;
        }
        if shards.is_empty() {
            shards.push(vec![]);
        }
        let n = shards.len();
        write_sharded(dir, n, |k, file| {
            let shard = &mut shards[k];
            let header = safetensors_header(shard, self.metadata());
            let mut out = Vec::with_capacity(8 + header.len());
            out.extend_from_slice(&(header.len() as u64).to_le_bytes());
            out.extend_from_slice(&header);
            write_synced(
                dir,
                file,
                &out,
                shard.iter().map(|(_, t)| t.bytes.as_slice()),
            )?;
            Ok(shard
                .iter()
                .map(|(name, t)| (name.clone(), t.bytes.len() as u64))
                .collect())
        })
    }

    /// The model as safetensors bytes: the same bytes [`Model::save`] writes.
    pub fn to_safetensors(&self, options: &SaveOptions) -> Result<Vec<u8>> {
        let mut tensors = self.tensors_for_saving(options)?;
        let header = safetensors_header(&mut tensors, self.metadata());
        let data: usize = tensors.iter().map(|(_, t)| t.bytes.len()).sum();
        let mut out = Vec::with_capacity(8 + header.len() + data);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for (_, t) in &tensors {
            out.extend_from_slice(&t.bytes);
        }
        Ok(out)
    }

    fn tensors_for_saving(&self, options: &SaveOptions) -> Result<Vec<(String, Buffer)>> {
        let out = self.buffers(options)?;
        // `x_orig` / `x_mask` may collide with names already in the model.
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &out {
            if !seen.insert(name.as_str()) {
                return Err(Error::invalid(
                    "masks",
                    "MaskExport::PyTorch",
                    format!(
                        "unique tensor names, but `{name}` would be written twice (rename the parameter or save with masks applied)"
                    ),
                ));
            }
        }
        Ok(out)
    }

    fn buffers(&self, options: &SaveOptions) -> Result<Vec<(String, Buffer)>> {
        let mut out = Vec::with_capacity(self.len() + self.raw_tensors().len());
        for p in self.params() {
            let dtype = options.dtype.unwrap_or(p.dtype());
            match (p.mask(), options.masks) {
                (Some(mask), MaskExport::PyTorch) => {
                    out.push((
                        format!("{}_orig", p.name()),
                        Buffer::encode(p.value(), dtype),
                    ));
                    out.push((
                        format!("{}_mask", p.name()),
                        Buffer::encode(&mask.to_array::<f32>(), dtype),
                    ));
                }
                _ => out.push((p.name().to_string(), applied(p, dtype))),
            }
        }
        for r in self.raw_tensors() {
            let dtype = parse_dtype(&r.dtype).ok_or_else(|| Error::UnsupportedDtype {
                name: r.name.clone(),
                dtype: r.dtype.clone(),
                operation: "safetensors saving",
            })?;
            out.push((
                r.name.clone(),
                Buffer {
                    dtype,
                    shape: r.shape.clone(),
                    bytes: r.bytes.clone(),
                },
            ));
        }
        Ok(out)
    }
}

/// A parameter's buffer with its mask applied.
fn applied(p: &crate::model::Param, dtype: DType) -> Buffer {
    match p.mask() {
        Some(_) => Buffer::encode(&p.effective(), dtype),
        None => Buffer::encode(p.value(), dtype),
    }
}

/// The bytes [`Model::save`] writes for parameter `p` with masks applied, in `dtype`.
pub(crate) fn param_bytes(p: &crate::model::Param, dtype: DType) -> Vec<u8> {
    applied(p, dtype).bytes
}

/// The safetensors dtype of a parameter's dtype.
pub(crate) fn file_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
    }
}

/// The safetensors header (JSON, padded with spaces to a multiple of 8 bytes) for
/// `tensors`, which it sorts into the file's order: by descending dtype alignment, then
/// by name, as `safetensors::serialize` does. Unlike it (which writes `__metadata__` in
/// a `HashMap`'s random order), the metadata is written sorted, so the same model gives
/// the same bytes.
fn safetensors_header(
    tensors: &mut [(String, Buffer)],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    tensors.sort_by(|(ln, l), (rn, r)| r.dtype.cmp(&l.dtype).then(ln.cmp(rn)));
    let entries: Vec<HeaderEntry<'_>> = tensors
        .iter()
        .map(|(name, t)| HeaderEntry {
            name,
            dtype: t.dtype,
            shape: &t.shape,
            bytes: t.bytes.len(),
        })
        .collect();
    header_bytes(&entries, metadata)
}

/// One tensor's line in a safetensors header: its data follows the previous entry's.
pub(crate) struct HeaderEntry<'a> {
    pub(crate) name: &'a str,
    pub(crate) dtype: Dtype,
    pub(crate) shape: &'a [usize],
    pub(crate) bytes: usize,
}

/// The header for `entries` in the order given (the caller writes the data in that
/// order), padded with spaces to a multiple of 8 bytes, metadata sorted.
pub(crate) fn header_bytes(
    entries: &[HeaderEntry<'_>],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let json = |s: &str| serde_json::to_string(s).expect("a string is valid JSON");
    let mut out = String::from("{");
    if !metadata.is_empty() {
        out.push_str("\"__metadata__\":{");
        for (i, (k, v)) in metadata.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json(k));
            out.push(':');
            out.push_str(&json(v));
        }
        out.push('}');
    }
    let mut offset = 0;
    for (i, t) in entries.iter().enumerate() {
        if i > 0 || !metadata.is_empty() {
            out.push(',');
        }
        let start = offset;
        offset += t.bytes;
        let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        out.push_str(&format!(
            "{}:{{\"dtype\":{},\"shape\":[{}],\"data_offsets\":[{start},{offset}]}}",
            json(t.name),
            json(&dtype_name(t.dtype)),
            shape.join(","),
        ));
    }
    out.push('}');
    let mut bytes = out.into_bytes();
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    bytes
}

/// An owned tensor ready for serialization.
struct Buffer {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Buffer {
    fn encode(values: &ArrayD<f32>, dtype: DType) -> Buffer {
        let mut bytes = Vec::with_capacity(values.len() * dtype.size());
        dtype.write_le(values.iter().copied(), &mut bytes);
        Buffer {
            dtype: file_dtype(dtype),
            shape: values.shape().to_vec(),
            bytes,
        }
    }
}

/// For comparing with `safetensors::serialize` in tests.
#[cfg(test)]
impl safetensors::tensor::View for Buffer {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Whether `orig` and `mask` form PyTorch's pruning pair: a float tensor and a mask of
/// the same shape.
fn pairs(orig: &TensorView<'_>, mask: &TensorView<'_>) -> bool {
    float_dtype(orig.dtype()).is_some() && orig.shape() == mask.shape()
}

fn float_dtype(d: Dtype) -> Option<DType> {
    match d {
        Dtype::F32 => Some(DType::F32),
        Dtype::F64 => Some(DType::F64),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// The tensor's values in f32 (the crate validated its byte length against its shape).
fn decode(view: &TensorView<'_>, dtype: DType) -> ArrayD<f32> {
    let values = dtype.read_le(view.data());
    ArrayD::from_shape_vec(IxDyn(view.shape()), values).expect("safetensors checked the size")
}

/// A mask tensor of any dtype: non-zero bytes (bool/int) or non-zero values (float) keep.
fn decode_mask(view: &TensorView<'_>) -> Mask {
    match float_dtype(view.dtype()) {
        Some(d) => Mask::from_nonzero(&decode(view, d)),
        None => {
            let width = view.data().len() / view.shape().iter().product::<usize>().max(1);
            let chunks: Vec<bool> = view
                .data()
                .chunks(width.max(1))
                .map(|c| c.iter().any(|&b| b != 0))
                .collect();
            Mask::from_fn(view.shape(), |i| chunks.get(i).copied().unwrap_or(false))
        }
    }
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

/// Every dtype safetensors 0.8 defines.
const ALL_DTYPES: [Dtype; 22] = [
    Dtype::BOOL,
    Dtype::F4,
    Dtype::F6_E2M3,
    Dtype::F6_E3M2,
    Dtype::U8,
    Dtype::I8,
    Dtype::F8_E5M2,
    Dtype::F8_E4M3,
    Dtype::F8_E8M0,
    Dtype::F8_E4M3FNUZ,
    Dtype::F8_E5M2FNUZ,
    Dtype::I16,
    Dtype::U16,
    Dtype::F16,
    Dtype::BF16,
    Dtype::I32,
    Dtype::U32,
    Dtype::F32,
    Dtype::C64,
    Dtype::F64,
    Dtype::I64,
    Dtype::U64,
];

fn parse_dtype(name: &str) -> Option<Dtype> {
    ALL_DTYPES.into_iter().find(|d| dtype_name(*d) == name)
}

/// Orders names so that numbered parts sort by value: `layers.2` before `layers.10`.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na
                    .len()
                    .cmp(&nb.len())
                    .then_with(|| na.cmp(nb))
                    .then(da.cmp(&db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let z = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[z..]
}

#[cfg(test)]
mod tests {
    use super::natural_cmp;
    use std::cmp::Ordering;

    #[test]
    fn every_dtype_name_parses_back() {
        for d in super::ALL_DTYPES {
            assert_eq!(super::parse_dtype(&super::dtype_name(d)), Some(d));
        }
    }

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("layers.2.w", "layers.10.w"), Ordering::Less);
        assert_eq!(natural_cmp("fc1.bias", "fc1.weight"), Ordering::Less);
        assert_eq!(natural_cmp("a", "a.b"), Ordering::Less);
        assert_eq!(natural_cmp("x10", "x9"), Ordering::Greater);
    }

    /// The header slimnn writes itself gives the bytes of the reference serializer (with
    /// at most one metadata entry, where its `HashMap` order cannot differ).
    #[test]
    fn bytes_match_the_reference_serializer() {
        use super::{MaskExport, SaveOptions};
        use crate::{DType, LayerKind, Model, RawTensor};
        let mut m = Model::new();
        let a = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[3, 4]), |i| {
            i[0] as f32 - 0.5 * i[1] as f32
        });
        m.add_param("b.w\"q\u{e9}", LayerKind::Other, DType::F16, a.clone())
            .unwrap();
        m.add_param("a.weight", LayerKind::Linear, DType::F64, a.clone())
            .unwrap();
        m.add_param("c", LayerKind::Other, DType::BF16, a).unwrap();
        m.add_raw(RawTensor {
            name: "steps".into(),
            dtype: "I64".into(),
            shape: vec![],
            bytes: vec![7, 0, 0, 0, 0, 0, 0, 0],
        })
        .unwrap();
        m.metadata_mut().insert("format".into(), "pt\n".into());
        for masks in [MaskExport::Apply, MaskExport::PyTorch] {
            let options = SaveOptions { dtype: None, masks };
            let reference = safetensors::serialize(
                m.tensors_for_saving(&options).unwrap(),
                Some(m.metadata().clone().into_iter().collect()),
            )
            .unwrap();
            assert_eq!(m.to_safetensors(&options).unwrap(), reference);
        }
        m.metadata_mut().clear();
        let reference =
            safetensors::serialize(m.tensors_for_saving(&SaveOptions::default()).unwrap(), None)
                .unwrap();
        assert_eq!(
            m.to_safetensors(&SaveOptions::default()).unwrap(),
            reference
        );
    }
}
