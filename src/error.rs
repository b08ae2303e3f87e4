//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in slimnn. Each variant says what was wrong and where:
/// the parameter or argument name, the shape, the offending value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value (sparsity, N:M, rank, bits, ...) outside its valid range.
    #[error("invalid `{name}` = {value}: {expected}")]
    InvalidParameter {
        /// The configuration field or argument name.
        name: &'static str,
        /// The value given, formatted.
        value: String,
        /// What a valid value looks like.
        expected: String,
    },
    /// Two things that must have the same shape do not.
    #[error("shape mismatch for {what}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// What was being compared (e.g. "gradient of `fc1.weight`").
        what: String,
        /// The shape that was required.
        expected: Vec<usize>,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// A tensor whose shape does not fit the operation (wrong rank, indivisible size, ...).
    #[error("unsupported shape {shape:?} for {what}: {reason}")]
    BadShape {
        /// The tensor concerned.
        what: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Why the shape does not fit.
        reason: String,
    },
    /// A tensor (or a list of tensors) with no elements where some are needed.
    #[error("{what} is empty")]
    Empty {
        /// The tensor or list concerned.
        what: String,
    },
    /// A NaN or infinity where only finite numbers make sense.
    #[error("{what} holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// The tensor concerned.
        what: String,
        /// Row-major flat index of the first non-finite element.
        index: usize,
        /// The value found.
        value: f64,
    },
    /// A method needs a statistic (gradient, Hessian diagonal, ...) that was not supplied.
    #[error("{method} needs the statistic `{statistic}` for {what}, but none was supplied")]
    MissingStatistic {
        /// The method that needs it.
        method: &'static str,
        /// The statistic's name.
        statistic: &'static str,
        /// The tensor concerned.
        what: String,
    },
    /// A parameter name that the model does not hold.
    #[error("model has no parameter named `{0}`")]
    UnknownParameter(String),
    /// A parameter whose layer kind does not fit the operation.
    #[error("parameter `{name}` is {kind}, but {operation} needs {expected}")]
    WrongKind {
        /// The parameter name.
        name: String,
        /// Its layer kind, formatted.
        kind: String,
        /// The operation attempted.
        operation: &'static str,
        /// The kinds that would fit.
        expected: &'static str,
    },
    /// A file or byte buffer that is not valid in its format (corrupt, truncated, hostile).
    #[error("invalid {format} data in {source_name}: {reason}")]
    InvalidFormat {
        /// The format expected ("safetensors", "IDX", ...).
        format: &'static str,
        /// The file path, or `<bytes>` for an in-memory buffer.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor element type slimnn cannot compute with.
    #[error("tensor `{name}` has dtype {dtype}, which {operation} does not support")]
    UnsupportedDtype {
        /// The tensor name.
        name: String,
        /// Its dtype, formatted.
        dtype: String,
        /// The operation attempted.
        operation: &'static str,
    },
    /// An iterative method that did not reach its tolerance within its budget.
    #[error("{method} did not converge after {iterations} iterations (relative error {error})")]
    NotConverged {
        /// The method.
        method: &'static str,
        /// Iterations run.
        iterations: usize,
        /// The error reached, where known (NaN otherwise).
        error: f64,
    },
    /// An operating-system I/O error, with the path it concerned.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An ndarray shape error (e.g. from `ArrayViewD::from_shape` on a buffer of the wrong
    /// length), so `?` works on ndarray calls in functions returning slimnn's [`Result`].
    #[error("array shape error: {0}")]
    ArrayShape(#[from] ndarray::ShapeError),
    /// A failure of a method outside slimnn (a user's own [`Pruner`](crate::prune::Pruner),
    /// [`Quantizer`](crate::quant::Quantizer), [`Compressor`](crate::pipeline::Compressor),
    /// ...), in its own words. Build it with [`Error::extension`].
    #[error("{method}: {message}")]
    Extension {
        /// The method that failed (e.g. its type name).
        method: String,
        /// What went wrong.
        message: String,
    },
    /// Values too large for a computation in their type: a result would overflow it
    /// (e.g. the singular values of a matrix of values near `f32::MAX`).
    #[error("{what}: the values overflow ({reason})")]
    Overflow {
        /// The computation and its input.
        what: String,
        /// Which result would overflow, and how to avoid it.
        reason: String,
    },
    /// A parameter asked to take a form that cannot sit with the one it holds (a mask
    /// on a factorized weight, factors of a pruned one): refused before anything
    /// changes, never silently dropped.
    #[error("`{name}` is {held}; it cannot also be {requested} ({hint})")]
    FormConflict {
        /// The parameter.
        name: String,
        /// The form it holds, e.g. "pruned (masked)".
        held: String,
        /// The form asked for, e.g. "factorized".
        requested: String,
        /// What to do instead.
        hint: String,
    },
    /// A matrix that must be invertible (positive definite) is not, e.g. a layer Hessian
    /// `Σ x xᵀ` that stays singular after dampening.
    #[error("{what} is singular: {reason}")]
    Singular {
        /// The matrix and what it belongs to.
        what: String,
        /// Why, and what to change.
        reason: String,
    },
}

/// `Result` with slimnn's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Extension`]: `method` (a user's own method) failed for the reason
    /// `message`.
    ///
    /// ```
    /// let e = slimnn::Error::extension("MyQuantizer", "codebook did not converge");
    /// assert_eq!(e.to_string(), "MyQuantizer: codebook did not converge");
    /// ```
    pub fn extension(method: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Extension {
            method: method.into(),
            message: message.into(),
        }
    }

    /// An [`Error::InvalidParameter`] for `name` = `value`.
    pub(crate) fn invalid(
        name: &'static str,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidParameter {
            name,
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// An [`Error::BadShape`].
    pub(crate) fn bad_shape(
        what: impl Into<String>,
        shape: &[usize],
        reason: impl Into<String>,
    ) -> Self {
        Error::BadShape {
            what: what.into(),
            shape: shape.to_vec(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
