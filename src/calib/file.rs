//! The statistics file: safetensors holding, for each weight `NAME` of shape
//! `[out, in]`, `NAME.xtx` (`[in, in]`, F32 or F64: `Σ x xᵀ` over the calibration rows),
//! `NAME.rows` (the number of rows, one element of any numeric dtype) and optionally
//! `NAME.absmean` (`[in]`, F32 or F64: the mean `|x_j|`).

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array1, Array2};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{CalibrationStats, LayerStats};
use crate::error::{Error, Result};

/// The three tensor kinds of a statistics file, by the suffix after the weight name.
const XTX: &str = ".xtx";
const ROWS: &str = ".rows";
const ABSMEAN: &str = ".absmean";

fn invalid(source: &str, reason: impl Into<String>) -> Error {
    Error::InvalidFormat {
        format: "calibration statistics (safetensors)",
        source_name: source.to_string(),
        reason: reason.into(),
    }
}

/// The values of a float or integer tensor as `f64`, or `None` for another dtype
/// (bool, 8-bit floats, ...). The byte length is checked by the safetensors parser.
fn values(view: &TensorView<'_>) -> Option<Vec<f64>> {
    let d = view.data();
    macro_rules! le {
        ($t:ty, $n:literal, $conv:expr) => {
            d.chunks_exact($n)
                .map(|b| $conv(<$t>::from_le_bytes(b.try_into().expect("chunk size"))))
                .collect()
        };
    }
    Some(match view.dtype() {
        Dtype::F64 => le!(f64, 8, |v| v),
        Dtype::F32 => le!(f32, 4, f64::from),
        Dtype::F16 => le!(u16, 2, |v| half::f16::from_bits(v).to_f64()),
        Dtype::BF16 => le!(u16, 2, |v| half::bf16::from_bits(v).to_f64()),
        Dtype::I64 => le!(i64, 8, |v| v as f64),
        Dtype::I32 => le!(i32, 4, f64::from),
        Dtype::I16 => le!(i16, 2, f64::from),
        Dtype::I8 => le!(i8, 1, f64::from),
        Dtype::U64 => le!(u64, 8, |v| v as f64),
        Dtype::U32 => le!(u32, 4, f64::from),
        Dtype::U16 => le!(u16, 2, f64::from),
        Dtype::U8 => le!(u8, 1, f64::from),
        _ => return None,
    })
}

/// The exact integer value of a one-element `rows` tensor.
fn row_count(view: &TensorView<'_>, source: &str, name: &str) -> Result<u64> {
    let bad = |why: String| invalid(source, format!("`{name}{ROWS}` {why}"));
    if view.shape().iter().product::<usize>() != 1 {
        return Err(bad(format!(
            "must hold one element, not shape {:?}",
            view.shape()
        )));
    }
    let d = view.data();
    // Integers are read exactly (a u64 above 2^53 would not survive f64).
    let n: Option<u64> = match view.dtype() {
        Dtype::U64 => Some(u64::from_le_bytes(d.try_into().expect("8 bytes"))),
        Dtype::I64 => u64::try_from(i64::from_le_bytes(d.try_into().expect("8 bytes"))).ok(),
        _ => {
            let v = values(view)
                .ok_or_else(|| bad(format!("has dtype {:?}, not a number", view.dtype())))?[0];
            (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(63)).then_some(v as u64)
        }
    };
    match n {
        Some(0) => Err(bad(
            "is 0: statistics need at least one calibration row".into()
        )),
        Some(n) => Ok(n),
        None => Err(bad("is not a whole number of rows ≥ 1".into())),
    }
}

/// An F32 or F64 tensor's values.
fn float_values(view: &TensorView<'_>, source: &str, tensor: &str) -> Result<Vec<f64>> {
    match view.dtype() {
        Dtype::F32 | Dtype::F64 => Ok(values(view).expect("a float dtype")),
        d => Err(invalid(
            source,
            format!("`{tensor}` has dtype {d:?}; F32 or F64 expected"),
        )),
    }
}

impl CalibrationStats {
    /// Loads a statistics file (see the [calibration guide](crate::guide::calibration)).
    ///
    /// A corrupt or hostile file (truncated, sizes beyond the file, a tensor named
    /// otherwise than `NAME.xtx` / `NAME.rows` / `NAME.absmean`, an `xtx` that is not
    /// square, an `absmean` of the wrong length, a `NAME.xtx` without its `NAME.rows`,
    /// a wrong dtype) is an [`Error::InvalidFormat`]; a NaN or infinity is an
    /// [`Error::NonFinite`]; zero rows or a negative diagonal an
    /// [`Error::InvalidFormat`] or [`Error::InvalidParameter`]. The file is memory-mapped.
    pub fn load(path: impl AsRef<Path>) -> Result<CalibrationStats> {
        let path = path.as_ref();
        let bytes = crate::kernels::mmap::map_regular(path)?;
        CalibrationStats::from_safetensors(&bytes, &path.display().to_string())
    }

    /// Parses a statistics file's bytes; `source_name` names them in errors.
    pub fn from_safetensors(bytes: &[u8], source_name: &str) -> Result<CalibrationStats> {
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| invalid(source_name, e.to_string()))?;
        // name → (xtx, rows, absmean)
        type Parts<'a> = (
            Option<TensorView<'a>>,
            Option<TensorView<'a>>,
            Option<TensorView<'a>>,
        );
        let mut parts: BTreeMap<String, Parts<'_>> = BTreeMap::new();
        for (tensor, view) in st.iter() {
            let (name, slot) = if let Some(n) = tensor.strip_suffix(XTX) {
                (n, 0)
            } else if let Some(n) = tensor.strip_suffix(ROWS) {
                (n, 1)
            } else if let Some(n) = tensor.strip_suffix(ABSMEAN) {
                (n, 2)
            } else {
                return Err(invalid(
                    source_name,
                    format!("tensor `{tensor}` is none of NAME.xtx, NAME.rows, NAME.absmean"),
                ));
            };
            let entry = parts.entry(name.to_string()).or_default();
            let place = match slot {
                0 => &mut entry.0,
                1 => &mut entry.1,
                _ => &mut entry.2,
            };
            *place = Some(view);
        }
        let mut stats = CalibrationStats::new();
        for (name, (xtx, rows, absmean)) in parts {
            let (Some(xtx), Some(rows)) = (xtx, rows) else {
                return Err(invalid(
                    source_name,
                    format!("`{name}` needs both `{name}{XTX}` and `{name}{ROWS}`"),
                ));
            };
            let shape = xtx.shape();
            let n = match *shape {
                [a, b] if a == b => a,
                _ => {
                    return Err(invalid(
                        source_name,
                        format!("`{name}{XTX}` has shape {shape:?}; a square [in, in] expected"),
                    ));
                }
            };
            let rows = row_count(&rows, source_name, &name)?;
            let xtx = Array2::from_shape_vec((n, n), float_values(&xtx, source_name, &name)?)?;
            let abs_sum = match absmean {
                Some(a) => {
                    if a.shape() != [n] {
                        return Err(invalid(
                            source_name,
                            format!(
                                "`{name}{ABSMEAN}` has shape {:?}; [{n}] expected (one per input)",
                                a.shape()
                            ),
                        ));
                    }
                    let v = float_values(&a, source_name, &name)?;
                    Some(Array1::from(v).mapv(|m| m * rows as f64))
                }
                None => None,
            };
            stats.insert(
                name.clone(),
                LayerStats::from_parts(&format!("`{name}` in {source_name}"), xtx, rows, abs_sum)?,
            );
        }
        Ok(stats)
    }

    /// The statistics file's bytes: `NAME.xtx` in F64, `NAME.rows` as one U64,
    /// `NAME.absmean` in F64 where `Σ|x|` is known.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let le = |v: &mut dyn Iterator<Item = f64>| -> Vec<u8> {
            v.flat_map(|x| x.to_le_bytes()).collect()
        };
        let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, s) in self.iter() {
            let n = s.inputs();
            buffers.push((
                format!("{name}{XTX}"),
                Dtype::F64,
                vec![n, n],
                le(&mut s.xtx().iter().copied()),
            ));
            buffers.push((
                format!("{name}{ROWS}"),
                Dtype::U64,
                vec![1],
                s.rows().to_le_bytes().to_vec(),
            ));
            if s.abs_sum().is_some() {
                buffers.push((
                    format!("{name}{ABSMEAN}"),
                    Dtype::F64,
                    vec![n],
                    le(&mut s.abs_mean().iter().copied()),
                ));
            }
        }
        let views = buffers
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|v| (name.as_str(), v))
                    .map_err(|e| invalid("<output>", e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, None).map_err(|e| invalid("<output>", e.to_string()))
    }

    /// Writes the statistics file atomically (see [`to_safetensors`](Self::to_safetensors)).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_safetensors()?;
        crate::io::write_atomically(path, |tmp| {
            std::fs::write(tmp, &bytes).map_err(|e| Error::io(tmp, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let views: Vec<_> = tensors
            .iter()
            .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn round_trip_and_merge() {
        let mut s = CalibrationStats::new();
        s.observe("a.weight", &[1.0, -2.0, 0.5, 3.0, 0.0, 1.0], 2, 3)
            .unwrap();
        s.observe("b.weight", &[2.0; 8], 4, 2).unwrap();
        let back = CalibrationStats::from_safetensors(&s.to_safetensors().unwrap(), "t").unwrap();
        assert_eq!(back.len(), 2);
        for (name, l) in s.iter() {
            let b = back.get(name).unwrap();
            assert_eq!(b.xtx(), l.xtx());
            assert_eq!(b.rows(), l.rows());
            assert_eq!(b.abs_sum(), l.abs_sum());
        }
        let mut twice = back.clone();
        twice.merge(&back).unwrap();
        assert_eq!(twice.get("b.weight").unwrap().rows(), 8);
        assert_eq!(twice.get("b.weight").unwrap().xtx()[[0, 1]], 32.0);
    }

    #[test]
    fn f32_xtx_and_any_numeric_rows() {
        for (dtype, rows) in [
            (Dtype::I32, 7i32.to_le_bytes().to_vec()),
            (Dtype::F32, 7f32.to_le_bytes().to_vec()),
            (Dtype::U8, vec![7u8]),
            (Dtype::I64, 7i64.to_le_bytes().to_vec()),
        ] {
            let bytes = file(&[
                (
                    "fc.weight.xtx",
                    Dtype::F32,
                    vec![2, 2],
                    f32s(&[4.0, 1.0, 1.0, 9.0]),
                ),
                ("fc.weight.rows", dtype, vec![], rows),
                ("fc.weight.absmean", Dtype::F32, vec![2], f32s(&[0.5, 1.0])),
            ]);
            let s = CalibrationStats::from_safetensors(&bytes, "t").unwrap();
            let l = s.get("fc.weight").unwrap();
            assert_eq!(l.rows(), 7);
            assert_eq!(l.activation_norms().to_vec(), vec![2.0, 3.0]);
            assert_eq!(l.abs_mean().to_vec(), vec![0.5, 1.0]);
        }
    }

    #[test]
    fn hostile_files_are_typed_errors() {
        let xtx = |v: &[f32], shape: Vec<usize>| ("w.xtx", Dtype::F32, shape, f32s(v));
        let rows = |n: f32| ("w.rows", Dtype::F32, vec![1], f32s(&[n]));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (file(&[xtx(&[1.0; 6], vec![2, 3]), rows(4.0)]), "square"),
            (file(&[xtx(&[1.0; 4], vec![2, 2])]), "needs both"),
            (file(&[xtx(&[1.0; 4], vec![2, 2]), rows(0.0)]), "is 0"),
            (
                file(&[xtx(&[1.0; 4], vec![2, 2]), rows(2.5)]),
                "whole number",
            ),
            (
                file(&[xtx(&[1.0; 4], vec![2, 2]), rows(f32::NAN)]),
                "whole number",
            ),
            (
                file(&[
                    xtx(&[1.0; 4], vec![2, 2]),
                    ("w.rows", Dtype::F32, vec![2], f32s(&[1.0, 1.0])),
                ]),
                "one element",
            ),
            (
                file(&[
                    xtx(&[1.0; 4], vec![2, 2]),
                    rows(3.0),
                    ("w.absmean", Dtype::F32, vec![3], f32s(&[1.0; 3])),
                ]),
                "[2] expected",
            ),
            (
                file(&[
                    ("w.xtx", Dtype::I32, vec![1, 1], 1i32.to_le_bytes().to_vec()),
                    rows(3.0),
                ]),
                "F32 or F64",
            ),
            (
                file(&[
                    xtx(&[1.0; 4], vec![2, 2]),
                    rows(3.0),
                    ("w.other", Dtype::U8, vec![1], vec![1]),
                ]),
                "none of",
            ),
            (b"\xff\xff\xff\xff\xff\xff\xff\x7f{}".to_vec(), ""),
        ];
        for (bytes, reason) in cases {
            match CalibrationStats::from_safetensors(&bytes, "t") {
                Err(Error::InvalidFormat { reason: r, .. }) => assert!(r.contains(reason), "{r}"),
                other => panic!("{reason}: {other:?}"),
            }
        }
        let e = CalibrationStats::from_safetensors(
            &file(&[
                xtx(&[1.0, f32::INFINITY, f32::INFINITY, 1.0], vec![2, 2]),
                rows(3.0),
            ]),
            "t",
        )
        .unwrap_err();
        assert!(matches!(e, Error::NonFinite { index: 1, .. }), "{e}");
        let e = CalibrationStats::from_safetensors(
            &file(&[xtx(&[-1.0, 0.0, 0.0, 1.0], vec![2, 2]), rows(3.0)]),
            "t",
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidParameter { .. }), "{e}");
    }
}
