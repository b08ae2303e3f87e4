//! [`Selector`]: which parameters of a model an operation applies to.

use super::LayerKind;

/// Chooses parameters by name glob and [`LayerKind`].
///
/// A parameter is selected when its name matches one of the `include` globs (or there are
/// none), matches none of the `exclude` globs, and its kind is one of `kinds` (or there are
/// none). Globs use `*` for any run of characters (dots included) and `?` for one.
///
/// ```
/// use slimnn::{LayerKind, Selector};
///
/// let sel = Selector::kinds(&[LayerKind::Linear]).exclude("classifier.*");
/// assert!(sel.matches("encoder.fc1.weight", LayerKind::Linear));
/// assert!(!sel.matches("classifier.weight", LayerKind::Linear));
/// assert!(!sel.matches("encoder.fc1.bias", LayerKind::Bias));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Name globs of which one must match (none: every name).
    pub include: Vec<String>,
    /// Name globs of which none may match.
    pub exclude: Vec<String>,
    /// Kinds of which one must match (none: every kind).
    pub kinds: Vec<LayerKind>,
}

impl Selector {
    /// Selects every parameter.
    pub fn all() -> Selector {
        Selector::default()
    }

    /// Selects parameters whose name matches `pattern`.
    pub fn glob(pattern: impl Into<String>) -> Selector {
        Selector::default().include(pattern)
    }

    /// Selects parameters of the given kinds.
    pub fn kinds(kinds: &[LayerKind]) -> Selector {
        Selector {
            kinds: kinds.to_vec(),
            ..Selector::default()
        }
    }

    /// The weights that pruning usually targets: Linear and Conv2d.
    pub fn prunable() -> Selector {
        Selector::kinds(&[LayerKind::Linear, LayerKind::Conv2d])
    }

    /// Adds a name glob of which one must match.
    pub fn include(mut self, pattern: impl Into<String>) -> Selector {
        self.include.push(pattern.into());
        self
    }

    /// Adds a name glob that must not match.
    pub fn exclude(mut self, pattern: impl Into<String>) -> Selector {
        self.exclude.push(pattern.into());
        self
    }

    /// Adds a kind of which one must match.
    pub fn kind(mut self, kind: LayerKind) -> Selector {
        self.kinds.push(kind);
        self
    }

    /// Whether a parameter with this name and kind is selected.
    pub fn matches(&self, name: &str, kind: LayerKind) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob_match(p, name)))
            && !self.exclude.iter().any(|p| glob_match(p, name))
            && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of characters and `?` any one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("fc*.weight", "fc1.weight"));
        assert!(glob_match("*.weight", "a.b.c.weight"));
        assert!(!glob_match("*.weight", "a.bias"));
        assert!(glob_match("layer?.*", "layer3.conv.weight"));
        assert!(!glob_match("layer?.*", "layer12.conv.weight"));
        assert!(glob_match("a*b*c", "aXXbYYbZc"));
        assert!(!glob_match("a*b*c", "aXXbYYbZ"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }
}
