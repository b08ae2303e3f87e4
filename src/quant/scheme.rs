//! What a quantization scheme is, separate from how it is computed: the granularity of
//! its parameters and the rounding it uses.

use crate::error::{Error, Result};

/// Which elements share a scale (and zero point).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole tensor.
    PerTensor,
    /// One scale per index of `axis` (axis 0: per output channel of a Linear or Conv2d).
    PerChannel {
        /// The channel axis.
        axis: usize,
    },
    /// One scale per run of `size` consecutive elements along each row (the tensor seen
    /// as `[shape[0], rest]`); `size` must divide the row length. llama.cpp's blocks
    /// and GPTQ/AWQ groups are of this kind.
    PerGroup {
        /// Elements per group.
        size: usize,
    },
}

/// `"per tensor"`, `"per channel (axis 0)"`, `"per group of 128"`.
impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Granularity::PerTensor => write!(f, "per tensor"),
            Granularity::PerChannel { axis } => write!(f, "per channel (axis {axis})"),
            Granularity::PerGroup { size } => write!(f, "per group of {size}"),
        }
    }
}

/// How a tensor of a given shape splits into groups: runs of `run_len` consecutive
/// (row-major) elements, run `r` belonging to group `r % groups`. One rule covers all
/// three granularities: per tensor is one run; per group, one run per group; per
/// channel, runs of the channel's stride cycling through the channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Runs {
    pub run_len: usize,
    pub groups: usize,
}

impl Runs {
    pub(crate) fn new(shape: &[usize], granularity: Granularity) -> Result<Runs> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                Error::bad_shape("weights", shape, "the element count overflows usize")
            })?;
        match granularity {
            // One group: any run length will do; 4096 lets the work split across cores.
            Granularity::PerTensor => Ok(Runs {
                run_len: n.clamp(1, 4096),
                groups: 1,
            }),
            Granularity::PerChannel { axis } => {
                if axis >= shape.len() {
                    return Err(Error::bad_shape(
                        "weights",
                        shape,
                        format!("per-channel axis {axis} is out of range"),
                    ));
                }
                Ok(Runs {
                    run_len: shape[axis + 1..].iter().product::<usize>().max(1),
                    groups: shape[axis],
                })
            }
            Granularity::PerGroup { size } => {
                let row = if shape.len() < 2 {
                    n
                } else {
                    n / shape[0].max(1)
                };
                if size == 0 || row % size != 0 {
                    return Err(Error::bad_shape(
                        "weights",
                        shape,
                        format!("group size {size} does not divide the row length {row}"),
                    ));
                }
                Ok(Runs {
                    run_len: size,
                    groups: n / size,
                })
            }
        }
    }

    /// The group of run `r`.
    #[inline]
    pub(crate) fn group(&self, r: usize) -> usize {
        r % self.groups
    }
}

/// How real values round to integer codes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rounding {
    /// Round to nearest, ties to even (IEEE 754's default).
    #[default]
    NearestEven,
    /// Round up with probability equal to the fractional part, so the expected code is
    /// the exact value (Gupta et al., "Deep Learning with Limited Numerical Precision",
    /// ICML 2015). Reproducible from the seed.
    Stochastic {
        /// The seed.
        seed: u64,
    },
}

/// Whether the integer grid is centred on zero or shifted by a zero point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheme {
    /// `x ≈ s·q`, zero point 0: cheap integer arithmetic, zero exact.
    #[default]
    Symmetric,
    /// `x ≈ s·(q − z)` with an integer zero point `z`: uses the whole range for skewed
    /// data (e.g. after ReLU); zero stays exact.
    Affine,
}
