//! Strict decoding of a YAML document into [`MachineConfig`], collecting every unknown field and
//! type error instead of stopping at the first one.
//!
//! serde stops at the first error, so decoding runs in a loop: record the error with its path,
//! remove the offending value from the document, and decode again. Indices of removed list
//! elements are mapped back so later errors still name the original positions.

use crate::error::{FieldError, FieldPath};
use crate::types::MachineConfig;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Enough for any real document; stops a pathological one from looping for long.
const MAX_ERRORS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

pub(crate) fn render(segs: &[Seg]) -> FieldPath {
    segs.iter().fold(FieldPath::root(), |p, s| match s {
        Seg::Key(k) => p.key(k),
        Seg::Index(i) => p.index(*i),
    })
}

/// Reads YAML text into a generic document tree (JSON data model: string keys only).
pub fn parse_yaml_value(yaml: &str) -> Result<Value, String> {
    let value: Value = serde_yaml_ng::from_str(yaml).map_err(|e| format!("invalid YAML: {e}"))?;
    Ok(value)
}

/// A word for the kind of a value, for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Outcome of a strict decode: the typed value when every error could be removed, and every
/// error found on the way.
pub(crate) struct Decoded<T> {
    pub value: Option<T>,
    pub errors: Vec<FieldError>,
    /// Whether list elements were dropped (later index-based checks would be misleading).
    pub dropped_elements: bool,
}

/// Decodes a document tree into `MachineConfig`, collecting every decode error.
pub(crate) fn decode_config(doc: Value) -> Decoded<MachineConfig> {
    decode_all(doc)
}

pub(crate) fn decode_all<T: DeserializeOwned>(mut doc: Value) -> Decoded<T> {
    let mut errors: Vec<FieldError> = Vec::new();
    // Original indices already removed, per list (keyed by the list's original path).
    let mut removed: Removed = Vec::new();
    let mut dropped_elements = false;

    while errors.len() < MAX_ERRORS {
        let err = match serde_path_to_error::deserialize::<_, T>(&doc) {
            Ok(v) => {
                return Decoded {
                    value: Some(v),
                    errors,
                    dropped_elements,
                };
            }
            Err(e) => e,
        };
        let Some(current) = segments(err.path()) else {
            errors.push(FieldError::new(FieldPath::root(), err.inner().to_string()));
            break;
        };
        let original = to_original(&current, &removed);
        let message = err.inner().to_string();

        if let Some((field, rest)) = backticked(&message, "unknown field `") {
            // The path usually already ends at the unknown key; make sure it does.
            let mut at = original.clone();
            let mut cur = current.clone();
            if current.last() != Some(&Seg::Key(field.clone())) {
                at.push(Seg::Key(field.clone()));
                cur.push(Seg::Key(field));
            }
            let reason = match rest.strip_prefix(", ") {
                Some(expected) if !expected.is_empty() => format!("unknown field, {expected}"),
                _ => "unknown field".to_string(),
            };
            errors.push(FieldError::new(render(&at), reason));
            if !remove(&mut doc, &cur) {
                break;
            }
            continue;
        }
        if let Some((field, _)) = backticked(&message, "missing field `") {
            let mut at = original.clone();
            at.push(Seg::Key(field));
            let path = render(&at);
            // A required field already reported (e.g. removed for a bad type) is not new.
            if !errors.iter().any(|e| e.path.is_within(&path)) {
                errors.push(FieldError::new(path, "is required"));
            }
            // Drop the incomplete map so decoding can go on to the rest of the document.
            if current.is_empty() || !remove(&mut doc, &current) {
                break;
            }
            note_removed(&original, &mut removed, &mut dropped_elements);
            continue;
        }
        errors.push(FieldError::new(render(&original), tidy(&message)));
        if current.is_empty() || !remove(&mut doc, &current) {
            break;
        }
        note_removed(&original, &mut removed, &mut dropped_elements);
    }
    Decoded {
        value: None,
        errors,
        dropped_elements,
    }
}

type Removed = Vec<(Vec<Seg>, Vec<usize>)>;

/// Records that the value at `original` was removed; for a list element, remembers its index
/// so later paths can be mapped back.
fn note_removed(original: &[Seg], removed: &mut Removed, dropped_elements: &mut bool) {
    if let Some(Seg::Index(i)) = original.last() {
        // Later elements moved up: index-based checks of the result would be misleading.
        *dropped_elements = true;
        let list = original[..original.len() - 1].to_vec();
        match removed.iter_mut().find(|(p, _)| *p == list) {
            Some((_, idx)) => idx.push(*i),
            None => removed.push((list, vec![*i])),
        }
    }
}

fn segments(path: &serde_path_to_error::Path) -> Option<Vec<Seg>> {
    use serde_path_to_error::Segment;
    let mut out = Vec::new();
    for s in path.iter() {
        match s {
            Segment::Seq { index } => out.push(Seg::Index(*index)),
            Segment::Map { key } => out.push(Seg::Key(key.clone())),
            Segment::Enum { .. } => {}
            Segment::Unknown => return None,
        }
    }
    Some(out)
}

/// Maps indices in the shrunken document back to the positions the user wrote.
fn to_original(current: &[Seg], removed: &Removed) -> Vec<Seg> {
    let mut out: Vec<Seg> = Vec::with_capacity(current.len());
    for s in current {
        match s {
            Seg::Key(k) => out.push(Seg::Key(k.clone())),
            Seg::Index(i) => {
                let gone: &[usize] = removed
                    .iter()
                    .find(|(p, _)| *p == out)
                    .map(|(_, v)| v.as_slice())
                    .unwrap_or(&[]);
                // The i-th original index that was not removed.
                let mut seen = 0;
                let mut orig = 0;
                loop {
                    if !gone.contains(&orig) {
                        if seen == *i {
                            break;
                        }
                        seen += 1;
                    }
                    orig += 1;
                }
                out.push(Seg::Index(orig));
            }
        }
    }
    out
}

fn remove(doc: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let mut cur = doc;
    for s in parent {
        cur = match (s, cur) {
            (Seg::Key(k), Value::Object(m)) => match m.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Seg::Key(k), Value::Object(m)) => m.remove(k).is_some(),
        (Seg::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// Splits "unknown field `x`, expected ..." into ("x", ", expected ...").
fn backticked(message: &str, prefix: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    Some((rest[..end].to_string(), rest[end + 1..].to_string()))
}

/// serde_json appends no position for tree input, but be safe about trailing noise.
fn tidy(message: &str) -> String {
    message.trim().to_string()
}
