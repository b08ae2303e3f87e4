//! Read-only memory maps of input files (the one `unsafe` call outside the SIMD kernels).

use std::path::Path;

use crate::error::{Error, Result};

/// Maps the regular file at `path` read-only (see [`crate::io::open_regular`]): its pages
/// are read on demand, so a multi-gigabyte checkpoint costs address space, not memory.
pub(crate) fn map_regular(path: &Path) -> Result<memmap2::Mmap> {
    let (file, _) = crate::io::open_regular(path)?;
    // SAFETY: the map is read-only and private to this process. Another process that
    // truncates or rewrites the file while it is mapped could change the bytes under us
    // (or raise SIGBUS on truncation); every reader of a map treats its bytes as
    // untrusted input and checks them, and slimnn never writes to its inputs (outputs go
    // to a temporary file renamed into place, a new inode).
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}
