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
    // Checked first: libyaml's time grows with the square of the nesting depth.
    crate::yaml_depth::check(yaml.as_bytes(), crate::yaml_depth::MAX_DEPTH)
        .map_err(|e| format!("invalid YAML: {e}"))?;
    let de = serde_yaml_ng::Deserializer::from_str(yaml);
    let duplicate = std::rc::Rc::new(std::cell::RefCell::new(None));
    let root = Node {
        path: String::new(),
        duplicate: duplicate.clone(),
    };
    serde::de::DeserializeSeed::deserialize(root, de).map_err(|e| {
        // serde_yaml_ng would place the error at the mapping, not at the repeated key.
        match duplicate.borrow_mut().take() {
            Some(path) => format!("invalid YAML: {path}: duplicate key (it is already set above)"),
            None => format!("invalid YAML: {e}"),
        }
    })
}

/// Builds the document tree like `serde_json::Value`'s own decoding, except that a key given
/// twice in one mapping is an error naming its path (serde_json would keep the last one,
/// silently overriding the first).
struct Node {
    path: String,
    /// Where a repeated key was found.
    duplicate: std::rc::Rc<std::cell::RefCell<Option<String>>>,
}

impl Node {
    fn child(&self, key: &str) -> Node {
        Node {
            path: if self.path.is_empty() {
                key.to_string()
            } else {
                format!("{}.{key}", self.path)
            },
            duplicate: self.duplicate.clone(),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Node {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Node {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Node {
            path: format!("{}[{}]", self.path, items.len()),
            duplicate: self.duplicate.clone(),
        })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let child = self.child(&key);
            if out.contains_key(&key) {
                let message = format!("duplicate key {}", child.path);
                *self.duplicate.borrow_mut() = Some(child.path);
                return Err(serde::de::Error::custom(message));
            }
            let v = map.next_value_seed(child)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
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
