//! [`Selector`]: which parameters of a model an operation applies to.

use std::fmt;

use super::LayerKind;
use crate::error::{Error, Result};

/// Chooses parameters by name glob and [`LayerKind`].
///
/// A parameter is selected when its name matches one of the `include` globs (or there are
/// none), matches none of the `exclude` globs, and its kind is one of `kinds` (or there are
/// none). Globs use `*` for any run of characters (dots included) and `?` for one.
///
/// As text ([`Selector::parse`], and [`Display`](fmt::Display) prints the same syntax):
/// comma-separated items, each a name glob to include, `!GLOB` to exclude, or
/// `kind=K[|K2...]` to filter by kind (`linear`, `conv2d`, `embedding`, `norm`, `bias`,
/// `other`, or `any` for all of them), e.g. `encoder.*,!*.LayerNorm.*,kind=linear`.
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

    /// Parses the text form: comma-separated items, each a name glob to include,
    /// `!GLOB` to exclude, or `kind=K[|K2...]` to filter by kind (case-insensitive
    /// `linear`, `conv2d`, `embedding`, `norm`, `bias`, `other`, or `any`).
    ///
    /// ```
    /// use slimnn::{LayerKind, Selector};
    ///
    /// let sel = Selector::parse("encoder.*,!*.LayerNorm.*,kind=linear|conv2d")?;
    /// assert_eq!(sel.include, ["encoder.*"]);
    /// assert_eq!(sel.exclude, ["*.LayerNorm.*"]);
    /// assert_eq!(sel.kinds, [LayerKind::Linear, LayerKind::Conv2d]);
    /// assert_eq!(sel.to_string(), "encoder.*,!*.LayerNorm.*,kind=linear|conv2d");
    /// assert!(Selector::parse("encoder.*,,x").is_err());
    /// # Ok::<(), slimnn::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an empty text or item, an empty glob after `!`,
    /// or an unknown kind.
    pub fn parse(text: &str) -> Result<Selector> {
        let expected = "comma-separated GLOB, !GLOB and kind=K[|K2] items, e.g. \
                        encoder.*,!*.LayerNorm.*,kind=linear";
        let bad = || Error::invalid("selection", text, expected);
        if text.trim().is_empty() {
            return Err(bad());
        }
        let mut sel = Selector::default();
        for item in text.split(',').map(str::trim) {
            if let Some(kinds) = item.strip_prefix("kind=") {
                for k in kinds.split('|').map(str::trim) {
                    if k.eq_ignore_ascii_case("any") {
                        sel.kinds.extend_from_slice(&ALL_KINDS);
                        continue;
                    }
                    let kind = ALL_KINDS
                        .into_iter()
                        .find(|c| c.to_string().eq_ignore_ascii_case(k))
                        .ok_or_else(|| {
                            Error::invalid(
                                "selection",
                                text,
                                format!(
                                    "kinds among linear, conv2d, embedding, norm, bias, other \
                                     or any, not `{k}`"
                                ),
                            )
                        })?;
                    sel.kinds.push(kind);
                }
            } else if let Some(glob) = item.strip_prefix('!') {
                if glob.is_empty() {
                    return Err(bad());
                }
                sel.exclude.push(glob.to_string());
            } else if item.is_empty() {
                return Err(bad());
            } else {
                sel.include.push(item.to_string());
            }
        }
        let mut seen = Vec::new();
        sel.kinds.retain(|k| {
            let new = !seen.contains(k);
            seen.push(*k);
            new
        });
        Ok(sel)
    }

    /// Whether a parameter with this name and kind is selected.
    pub fn matches(&self, name: &str, kind: LayerKind) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob_match(p, name)))
            && !self.exclude.iter().any(|p| glob_match(p, name))
            && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

/// Every kind, in the order [`Selector::parse`] tries their names.
const ALL_KINDS: [LayerKind; 6] = [
    LayerKind::Linear,
    LayerKind::Conv2d,
    LayerKind::Embedding,
    LayerKind::Norm,
    LayerKind::Bias,
    LayerKind::Other,
];

/// The text form of [`Selector::parse`]; a selector of every parameter prints as `*`.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = self.include.clone();
        items.extend(self.exclude.iter().map(|g| format!("!{g}")));
        if !self.kinds.is_empty() {
            let kinds: Vec<String> = self
                .kinds
                .iter()
                .map(|k| k.to_string().to_ascii_lowercase())
                .collect();
            items.push(format!("kind={}", kinds.join("|")));
        }
        if items.is_empty() {
            return f.write_str("*");
        }
        f.write_str(&items.join(","))
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
    use super::{LayerKind, Selector, glob_match};

    #[test]
    fn parse_and_display_agree() {
        for text in [
            "encoder.*",
            "encoder.*,!*.LayerNorm.*,kind=linear",
            "a.*,b.*,!*.bias,!*norm*,kind=linear|conv2d",
            "!*.bias",
            "kind=embedding",
        ] {
            let sel = Selector::parse(text).unwrap();
            assert_eq!(sel.to_string(), text);
            assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel);
        }
        assert_eq!(Selector::all().to_string(), "*");
        assert_eq!(Selector::prunable().to_string(), "kind=linear|conv2d");
        let sel = Selector::parse(" fc* , kind=Linear|BIAS|linear ").unwrap();
        assert_eq!(sel.include, ["fc*"]);
        assert_eq!(sel.kinds, [LayerKind::Linear, LayerKind::Bias]);
        assert_eq!(Selector::parse("kind=any").unwrap().kinds.len(), 6);
        for bad in [
            "",
            " ",
            "a,,b",
            "a,",
            "!",
            "kind=",
            "kind=dense",
            "kind=linear|",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parsed_selections_combine_globs_exclusions_and_kinds() {
        let sel = Selector::parse("encoder.*,pooler.*,!*.LayerNorm.*,kind=linear").unwrap();
        assert!(sel.matches("encoder.0.fc.weight", LayerKind::Linear));
        assert!(sel.matches("pooler.dense.weight", LayerKind::Linear));
        assert!(!sel.matches("encoder.0.LayerNorm.weight", LayerKind::Linear));
        assert!(!sel.matches("encoder.0.fc.bias", LayerKind::Bias));
        assert!(!sel.matches("embeddings.weight", LayerKind::Linear));
    }

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
