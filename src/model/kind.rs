//! [`LayerKind`]: what a parameter is, and which of its axes are channels.

use std::fmt;

/// What a parameter is, which fixes its output and input channel axes
/// (PyTorch layouts: Linear `[out, in]`, Conv2d `[out, in, kh, kw]`,
/// Embedding `[vocab, dim]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LayerKind {
    /// A fully connected weight `[out, in]`.
    Linear,
    /// A 2-D convolution weight `[out, in, kh, kw]`.
    Conv2d,
    /// An embedding table `[vocab, dim]`.
    Embedding,
    /// A normalisation scale or shift (1-D, one value per channel).
    Norm,
    /// A layer's bias (1-D, one value per output channel).
    Bias,
    /// Anything else (buffers, 3-D or 5-D weights, scalars).
    Other,
}

impl LayerKind {
    /// The axis that indexes output channels (filters, neurons, embedding features).
    pub fn output_axis(self) -> Option<usize> {
        match self {
            LayerKind::Linear | LayerKind::Conv2d | LayerKind::Norm | LayerKind::Bias => Some(0),
            LayerKind::Embedding => Some(1),
            LayerKind::Other => None,
        }
    }

    /// The axis that indexes input channels (Linear and Conv2d only).
    pub fn input_axis(self) -> Option<usize> {
        match self {
            LayerKind::Linear | LayerKind::Conv2d => Some(1),
            _ => None,
        }
    }

    /// The number of dimensions a tensor of this kind has, where it is fixed.
    pub fn ndim(self) -> Option<usize> {
        match self {
            LayerKind::Linear | LayerKind::Embedding => Some(2),
            LayerKind::Conv2d => Some(4),
            LayerKind::Norm | LayerKind::Bias => Some(1),
            LayerKind::Other => None,
        }
    }

    /// Guesses the kind of a parameter from its name and shape, as loading does.
    ///
    /// 4-D → Conv2d; 2-D → Embedding if the name mentions an embedding (`emb`, `wte`,
    /// `wpe`), else Linear; 1-D → Bias if the name ends in `bias`, Other for batch-norm
    /// running statistics, else Norm; anything else → Other.
    ///
    /// ```
    /// use slimnn::LayerKind;
    /// assert_eq!(LayerKind::infer("features.0.weight", &[64, 3, 3, 3]), LayerKind::Conv2d);
    /// assert_eq!(LayerKind::infer("fc1.weight", &[300, 784]), LayerKind::Linear);
    /// assert_eq!(LayerKind::infer("tok_embeddings.weight", &[32000, 4096]), LayerKind::Embedding);
    /// assert_eq!(LayerKind::infer("fc1.bias", &[300]), LayerKind::Bias);
    /// assert_eq!(LayerKind::infer("ln_f.weight", &[768]), LayerKind::Norm);
    /// ```
    pub fn infer(name: &str, shape: &[usize]) -> LayerKind {
        let lower = name.to_ascii_lowercase();
        let last = lower.rsplit('.').next().unwrap_or(&lower);
        match shape.len() {
            4 => LayerKind::Conv2d,
            2 if ["emb", "wte", "wpe"].iter().any(|k| lower.contains(k)) => LayerKind::Embedding,
            2 => LayerKind::Linear,
            1 if last.ends_with("bias") => LayerKind::Bias,
            1 if last.starts_with("running_") || last == "num_batches_tracked" => LayerKind::Other,
            1 => LayerKind::Norm,
            _ => LayerKind::Other,
        }
    }
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            LayerKind::Linear => "Linear",
            LayerKind::Conv2d => "Conv2d",
            LayerKind::Embedding => "Embedding",
            LayerKind::Norm => "Norm",
            LayerKind::Bias => "Bias",
            LayerKind::Other => "Other",
        };
        f.write_str(s)
    }
}
