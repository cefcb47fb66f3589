//! Config patches: RFC 6902 JSON patches and strategic-merge patches, applied in order.
//!
//! A patch is given like `talosctl --config-patch`: `@file.yaml` (a file) or the text itself.
//! Its kind follows from its shape: a list is a JSON patch (operations), a map is a
//! strategic-merge patch (see `strategic` for the merge rules and list keys).
//!
//! After each patch the document is decoded and validated; a problem that was not there before
//! the patch is reported as the patch's, with the field path (`patch @net.yaml:
//! machine.network.interfaces[0].addresses[0]: "10.0.0.300/24" is not a valid CIDR`).

mod json;
mod strategic;

use crate::error::{FieldError, FieldPath};
use crate::{MachineConfig, check_value};
use serde_json::Value;
use std::fmt;

pub use strategic::{MERGE_KEYS, UNION_LISTS};

/// One patch, with the name used in errors (its file or its position).
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub name: String,
    pub kind: PatchKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PatchKind {
    /// RFC 6902 operations.
    Json(json_patch::Patch),
    /// A partial config merged into the document.
    StrategicMerge(Value),
}

/// A patch that could not be read or applied; lists every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError {
    /// The patch's name (file or `#N (inline)`).
    pub patch: String,
    pub errors: Vec<FieldError>,
}

impl PatchError {
    fn one(patch: &str, path: FieldPath, reason: impl Into<String>) -> Self {
        PatchError {
            patch: patch.to_string(),
            errors: vec![FieldError::new(path, reason)],
        }
    }
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if e.path == FieldPath::root() {
                write!(f, "patch {}: {}", self.patch, e.reason)?;
            } else {
                write!(f, "patch {}: {e}", self.patch)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for PatchError {}

impl Patch {
    /// Reads a patch argument: `@path` reads the file, anything else is the patch text.
    /// `position` (1-based) names inline patches in errors.
    pub fn load(arg: &str, position: usize) -> Result<Patch, PatchError> {
        match arg.strip_prefix('@') {
            Some(file) => {
                let name = format!("@{file}");
                let text = std::fs::read_to_string(file).map_err(|e| {
                    PatchError::one(&name, FieldPath::root(), format!("cannot read file: {e}"))
                })?;
                Patch::parse(&name, &text)
            }
            None => Patch::parse(&format!("#{position} (inline)"), arg),
        }
    }

    /// Parses patch text (YAML or JSON) named `name`.
    pub fn parse(name: &str, text: &str) -> Result<Patch, PatchError> {
        let value = crate::parse_yaml_value(text)
            .map_err(|e| PatchError::one(name, FieldPath::root(), e))?;
        let kind = match value {
            Value::Array(_) => PatchKind::Json(json::parse_ops(name, value)?),
            Value::Object(_) => PatchKind::StrategicMerge(value),
            other => {
                return Err(PatchError::one(
                    name,
                    FieldPath::root(),
                    format!(
                        "is {}; a patch is a map (strategic merge) or a list of RFC 6902 operations",
                        crate::kind_of(&other)
                    ),
                ));
            }
        };
        Ok(Patch {
            name: name.to_string(),
            kind,
        })
    }

    /// Applies this patch to a document tree, without checking the result.
    pub fn apply_to(&self, doc: &mut Value) -> Result<(), PatchError> {
        match &self.kind {
            PatchKind::Json(ops) => json::apply(&self.name, doc, ops),
            PatchKind::StrategicMerge(p) => strategic::apply(doc, p).map_err(|e| PatchError {
                patch: self.name.clone(),
                errors: vec![e],
            }),
        }
    }
}

/// Applies `patches` in order to a document tree. After each one the result is checked and
/// any problem the patch introduced fails with the patch's name.
pub fn apply_patches(mut doc: Value, patches: &[Patch]) -> Result<Value, PatchError> {
    let mut before = problems(&doc);
    for p in patches {
        p.apply_to(&mut doc)?;
        let after = problems(&doc);
        let new: Vec<FieldError> = after
            .iter()
            .filter(|e| !before.contains(e))
            .cloned()
            .collect();
        if !new.is_empty() {
            return Err(PatchError {
                patch: p.name.clone(),
                errors: new,
            });
        }
        before = after;
    }
    Ok(doc)
}

/// Applies `patches` to a config and returns the patched, validated config.
pub fn patch_config(cfg: &MachineConfig, patches: &[Patch]) -> Result<MachineConfig, PatchError> {
    let doc = serde_json::to_value(cfg).expect("a MachineConfig always serialises");
    let doc = apply_patches(doc, patches)?;
    crate::from_value(doc).map_err(|e| PatchError {
        patch: "(result)".to_string(),
        errors: e.field_errors(),
    })
}

fn problems(doc: &Value) -> Vec<FieldError> {
    check_value(doc.clone()).report.errors
}

/// A JSON pointer (`/machine/network/interfaces/0`) as a field path.
pub(crate) fn pointer_to_path(pointer: &str) -> FieldPath {
    let mut p = FieldPath::root();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        match token.parse::<usize>() {
            Ok(i) => p = p.index(i),
            Err(_) if token == "-" => p = FieldPath::from_text(&format!("{}[-]", p.as_str())),
            Err(_) => p = p.key(&token),
        }
    }
    p
}
