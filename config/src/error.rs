//! Errors that name the field: `machine.network.interfaces[0].addresses[1]: reason`.

use std::fmt;

/// A dotted field path with `[i]` list indices; map keys that are not plain words are quoted
/// (`machine.sysctls["net.ipv4.ip_forward"]`) so the path stays unambiguous.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// The document root.
    pub fn root() -> Self {
        FieldPath(String::new())
    }

    /// A path from its rendered text.
    pub fn from_text(s: &str) -> Self {
        FieldPath(s.to_string())
    }

    /// The child field or map entry `k`.
    pub fn key(&self, k: &str) -> Self {
        let plain = k.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$')
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$');
        if !plain {
            FieldPath(format!("{}[{k:?}]", self.0))
        } else if self.0.is_empty() {
            FieldPath(k.to_string())
        } else {
            FieldPath(format!("{}.{k}", self.0))
        }
    }

    /// The list element `i`.
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` is `other` or lies inside it.
    pub fn is_within(&self, other: &FieldPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0)
                && matches!(
                    self.0.as_bytes().get(other.0.len()),
                    Some(b'.') | Some(b'[')
                ))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<document>")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: FieldPath,
    pub reason: String,
}

impl FieldError {
    pub fn new(path: FieldPath, reason: impl Into<String>) -> Self {
        FieldError {
            path,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every problem found in a document: decode problems (unknown fields, wrong types) first,
/// then invalid values and cross-field problems.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors {
    pub errors: Vec<FieldError>,
}

impl ValidationErrors {
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.errors.iter()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Why a config document was rejected. Display lists every problem, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not YAML at all (nothing else can be checked).
    #[error("<document>: {0}")]
    Syntax(String),
    /// The YAML has unknown fields, wrong types or invalid values.
    #[error("{0}")]
    Invalid(ValidationErrors),
}

impl ConfigError {
    /// Every problem as a field error (a syntax error becomes one at the document root).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            ConfigError::Syntax(msg) => vec![FieldError::new(FieldPath::root(), msg.clone())],
            ConfigError::Invalid(v) => v.errors.clone(),
        }
    }
}
