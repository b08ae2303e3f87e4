//! Reading and writing models and data sets.
//!
//! - [`safetensors`]: load and save a [`Model`](crate::Model).
//! - [`idx`]: the gzip-compressed IDX files that MNIST and the digits set come in.
//! - [`gguf`]: llama.cpp's GGUF v3 files, read and written.
//! - [`synthetic`]: a synthetic Llama-shaped bf16 checkpoint in shards, for scale tests.

pub mod gguf;
mod gguf_model;
pub mod idx;

pub use gguf_model::GgufOptions;
pub mod safetensors;
pub mod synthetic;

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `write`'s output to `path` atomically: into a temporary file in the same
/// directory, renamed over `path` only once `write` has succeeded. Nothing is left
/// behind on failure.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("out.txt");
/// slimnn::io::write_atomically(&path, |tmp| {
///     std::fs::write(tmp, "done").map_err(|e| slimnn::Error::Io { path: tmp.into(), source: e })
/// })?;
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "done");
/// # Ok::<(), slimnn::Error>(())
/// ```
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".slimnn-").suffix(".tmp");
    // A temporary file is private (0600) by default; the result should not be.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let tmp = builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    write(tmp.path())?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Opens `path` for reading, refusing anything but a regular file (a device such as
/// `/dev/zero`, a pipe or a directory would be read without end or block), and gives its
/// size.
pub(crate) fn open_regular(path: &Path) -> Result<(std::fs::File, u64)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // The metadata of the opened file, not of the path, which may have changed since.
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    Ok((file, meta.len()))
}

/// Reads a whole regular file (see [`open_regular`]), at most the size it had when
/// opened: a file that grows meanwhile cannot make the reader allocate more.
pub(crate) fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    let len_usize = usize::try_from(len).map_err(|_| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "file too large"),
        )
    })?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len_usize).map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::OutOfMemory, e),
        )
    })?;
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}
