//! The IDX format of MNIST (and of the 8×8 digits set bundled with slimnn), optionally
//! gzip-compressed: bytes `00 00 08 <ndim>`, `ndim` big-endian `u32` dimensions, then
//! the unsigned bytes in row-major order.

use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;
use ndarray::{Array1, Array2, ArrayD, IxDyn};

use crate::error::{Error, Result};

/// Reads an unsigned-byte IDX file; gzip-compressed if its name ends in `.gz`.
///
/// Hostile headers cannot make it allocate more than the file really holds: data is read
/// as it arrives, and a size mismatch is an [`Error::InvalidFormat`]. Only a regular file
/// is read (a device or a pipe is an [`Error::Io`]), and never more than it can hold: its
/// size, or for gzip the most that size can inflate to.
pub fn read_idx(path: impl AsRef<Path>) -> Result<ArrayD<u8>> {
    let path = path.as_ref();
    let (file, len) = super::open_regular(path)?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        // Deflate expands at most 1032:1.
        let most = len.saturating_mul(1032);
        Box::new(GzDecoder::new(BufReader::new(file)).take(most))
    } else {
        Box::new(BufReader::new(file).take(len))
    };
    parse_idx(reader, &path.display().to_string())
}

/// Parses IDX bytes (already decompressed) from any reader.
pub fn parse_idx(mut reader: impl Read, source_name: &str) -> Result<ArrayD<u8>> {
    let bad = |reason: String| Error::InvalidFormat {
        format: "IDX",
        source_name: source_name.to_string(),
        reason,
    };
    let io = |e: std::io::Error| bad(format!("read failed: {e}"));
    let mut magic = [0u8; 4];
    reader.read_exact(&mut magic).map_err(io)?;
    if magic[..3] != [0, 0, 0x08] {
        return Err(bad(format!(
            "magic {magic:02x?} is not an unsigned-byte IDX header"
        )));
    }
    let ndim = magic[3] as usize;
    if ndim == 0 {
        return Err(bad("zero dimensions".into()));
    }
    let mut shape = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        let mut d = [0u8; 4];
        reader.read_exact(&mut d).map_err(io)?;
        shape.push(u32::from_be_bytes(d) as usize);
    }
    let expected = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {shape:?} overflow")))?;
    let mut data = Vec::new();
    // Read at most one byte more than the header promises, so a short or long file shows.
    reader
        .take((expected as u64).saturating_add(1))
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() != expected {
        return Err(bad(format!(
            "dimensions {shape:?} need {expected} bytes of data, the file holds {}{}",
            data.len().min(expected),
            if data.len() > expected {
                " or more"
            } else {
                ""
            }
        )));
    }
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| bad(e.to_string()))
}

/// A labelled image data set: one row of features per example.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Features `[n, features]`, pixels scaled to `[0, 1]`.
    pub images: Array2<f32>,
    /// Class labels `[n]`.
    pub labels: Array1<u8>,
    /// The image shape of one example, e.g. `[28, 28]`.
    pub image_shape: Vec<usize>,
}

impl Dataset {
    /// Reads an images file and a labels file, scaling pixels by `1 / max_value`
    /// (255 for MNIST, 16 for the 8×8 digits).
    pub fn from_idx(
        images: impl AsRef<Path>,
        labels: impl AsRef<Path>,
        max_value: f32,
    ) -> Result<Dataset> {
        let img = read_idx(&images)?;
        let lab = read_idx(&labels)?;
        let name = images.as_ref().display().to_string();
        if img.ndim() < 2 || lab.ndim() != 1 || img.shape()[0] != lab.len() {
            return Err(Error::InvalidFormat {
                format: "IDX",
                source_name: name,
                reason: format!(
                    "images {:?} and labels {:?} do not pair up",
                    img.shape(),
                    lab.shape()
                ),
            });
        }
        let n = img.shape()[0];
        let image_shape = img.shape()[1..].to_vec();
        let features: usize = image_shape.iter().product();
        let scale = 1.0 / max_value;
        let images = img
            .into_shape_with_order((n, features))
            .expect("element count is unchanged")
            .mapv(|p| p as f32 * scale);
        let labels = lab.into_dimensionality().expect("checked 1-D above");
        Ok(Dataset {
            images,
            labels,
            image_shape,
        })
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The examples `range`, copied.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Dataset {
        Dataset {
            images: self.images.slice(ndarray::s![range.clone(), ..]).to_owned(),
            labels: self.labels.slice(ndarray::s![range]).to_owned(),
            image_shape: self.image_shape.clone(),
        }
    }
}
