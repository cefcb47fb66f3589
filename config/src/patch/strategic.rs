//! Strategic-merge patches: a partial config merged into the document.
//!
//! Rules:
//! - maps merge key by key, recursively; a value of `null` deletes the key;
//! - scalars and lists of scalars are replaced by the patch's value, except the SAN lists in
//!   [`UNION_LISTS`], where the patch's entries are added to the existing ones;
//! - lists of named things (see [`MERGE_KEYS`]) merge element by element: an element of the
//!   patch updates the element with the same merge-key value, or is appended;
//! - `$patch: delete` in a map deletes that map (a key, or a list element matched by its merge
//!   key); `$patch: replace` replaces it instead of merging. Deleting something absent is an
//!   error, so a misspelt name does not go unnoticed.

use crate::document::kind_of;
use crate::error::{FieldError, FieldPath};
use serde_json::{Map, Value};

/// Lists merged element by element, by the first of these keys the element has. Paths use
/// `[]` for "any index".
pub const MERGE_KEYS: &[(&str, &[&str])] = &[
    (
        "machine.network.interfaces",
        &["interface", "deviceSelector"],
    ),
    ("machine.network.interfaces[].routes", &["network"]),
    ("machine.files", &["path"]),
    ("machine.logging.destinations", &["endpoint"]),
];

/// Lists of scalars where a patch adds entries (no duplicates) instead of replacing the list.
pub const UNION_LISTS: &[&str] = &["machine.certSANs", "cluster.apiServer.certSANs"];

const DIRECTIVE: &str = "$patch";

/// Merges `patch` (a map) into `doc`.
pub(super) fn apply(doc: &mut Value, patch: &Value) -> Result<(), FieldError> {
    if let Some(d) = directive(patch, &FieldPath::root())? {
        return Err(FieldError::new(
            FieldPath::root(),
            format!("`{DIRECTIVE}: {d}` cannot apply to the whole document"),
        ));
    }
    merge(doc, patch, &FieldPath::root(), "")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Delete,
    Replace,
}

impl std::fmt::Display for Directive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Directive::Delete => "delete",
            Directive::Replace => "replace",
        })
    }
}

fn directive(v: &Value, path: &FieldPath) -> Result<Option<Directive>, FieldError> {
    let Some(d) = v.as_object().and_then(|m| m.get(DIRECTIVE)) else {
        return Ok(None);
    };
    match d.as_str() {
        Some("delete") => Ok(Some(Directive::Delete)),
        Some("replace") => Ok(Some(Directive::Replace)),
        _ => Err(FieldError::new(
            path.key(DIRECTIVE),
            format!("{d} is not supported (use delete or replace)"),
        )),
    }
}

/// `value` without `$patch: replace` markers; `$patch: delete` inside new content is an error
/// (there is nothing there to delete).
fn materialize(value: &Value, path: &FieldPath) -> Result<Value, FieldError> {
    match value {
        Value::Object(m) => {
            if directive(value, path)? == Some(Directive::Delete) {
                return Err(FieldError::new(
                    path.clone(),
                    "nothing to delete: the config has no such entry",
                ));
            }
            let mut out = Map::new();
            for (k, v) in m {
                if k != DIRECTIVE {
                    out.insert(k.clone(), materialize(v, &path.key(k))?);
                }
            }
            Ok(Value::Object(out))
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| materialize(v, &path.index(i)))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

fn child_shape(shape: &str, key: &str) -> String {
    if shape.is_empty() {
        key.to_string()
    } else {
        format!("{shape}.{key}")
    }
}

fn merge(doc: &mut Value, patch: &Value, path: &FieldPath, shape: &str) -> Result<(), FieldError> {
    match patch {
        Value::Object(pm) => {
            if directive(patch, path)? == Some(Directive::Replace) {
                *doc = materialize(patch, path)?;
                return Ok(());
            }
            if doc.is_null() {
                *doc = materialize(patch, path)?;
                return Ok(());
            }
            let Value::Object(dm) = doc else {
                return Err(FieldError::new(
                    path.clone(),
                    format!(
                        "the patch has a map here but the config has {}",
                        kind_of(doc)
                    ),
                ));
            };
            for (k, pv) in pm {
                let kp = path.key(k);
                let ks = child_shape(shape, k);
                match directive(pv, &kp)? {
                    Some(Directive::Delete) => {
                        if dm.remove(k).is_none() {
                            return Err(FieldError::new(
                                kp,
                                "nothing to delete: the config has no such field",
                            ));
                        }
                    }
                    _ if pv.is_null() => {
                        dm.remove(k);
                    }
                    _ => match dm.get_mut(k) {
                        Some(dv) => merge(dv, pv, &kp, &ks)?,
                        None => {
                            dm.insert(k.clone(), materialize(pv, &kp)?);
                        }
                    },
                }
            }
            Ok(())
        }
        Value::Array(pa) => {
            let keys = MERGE_KEYS
                .iter()
                .find(|(s, _)| *s == shape)
                .map(|(_, k)| *k);
            match (doc, keys) {
                (Value::Array(da), Some(keys)) => merge_keyed(da, pa, path, shape, keys),
                (Value::Array(da), None) if UNION_LISTS.contains(&shape) => {
                    for v in pa {
                        if !da.contains(v) {
                            da.push(v.clone());
                        }
                    }
                    Ok(())
                }
                (doc, _) => {
                    *doc = materialize(patch, path)?;
                    Ok(())
                }
            }
        }
        scalar => {
            *doc = scalar.clone();
            Ok(())
        }
    }
}

fn merge_keyed(
    doc: &mut Vec<Value>,
    patch: &[Value],
    path: &FieldPath,
    shape: &str,
    keys: &[&str],
) -> Result<(), FieldError> {
    let key_list = keys
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(" or ");
    for (i, pe) in patch.iter().enumerate() {
        let ep = path.index(i);
        let Some(pm) = pe.as_object() else {
            return Err(FieldError::new(
                ep,
                format!(
                    "is {}; elements here are maps merged by {key_list}",
                    kind_of(pe)
                ),
            ));
        };
        let Some((key, want)) = keys.iter().find_map(|k| pm.get(*k).map(|v| (*k, v))) else {
            return Err(FieldError::new(
                ep,
                format!("has no {key_list}, so it cannot be matched to an existing element"),
            ));
        };
        let found = doc
            .iter()
            .position(|de| de.as_object().and_then(|m| m.get(key)) == Some(want));
        let elem_shape = format!("{shape}[]");
        match (directive(pe, &ep)?, found) {
            (Some(Directive::Delete), Some(j)) => {
                doc.remove(j);
            }
            (Some(Directive::Delete), None) => {
                return Err(FieldError::new(
                    ep,
                    format!("nothing to delete: no element has {key}: {want}"),
                ));
            }
            (Some(Directive::Replace), Some(j)) => doc[j] = materialize(pe, &ep)?,
            (None, Some(j)) => merge(&mut doc[j], pe, &ep, &elem_shape)?,
            (_, None) => doc.push(materialize(pe, &ep)?),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(mut doc: Value, patch: Value) -> Result<Value, String> {
        apply(&mut doc, &patch).map_err(|e| e.to_string())?;
        Ok(doc)
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let out = run(
            json!({"machine": {"a": 1, "b": {"c": 2, "d": 3}}}),
            json!({"machine": {"b": {"d": 4, "e": 5}, "a": null}}),
        )
        .unwrap();
        assert_eq!(out, json!({"machine": {"b": {"c": 2, "d": 4, "e": 5}}}));
    }

    #[test]
    fn interfaces_merge_by_name_and_selector() {
        let doc = json!({"machine": {"network": {"interfaces": [
            {"interface": "eth0", "dhcp": true, "routes": [{"network": "0.0.0.0/0", "gateway": "10.0.0.1"}]},
            {"deviceSelector": {"driver": "virtio_net"}, "mtu": 1500}
        ]}}});
        let patch = json!({"machine": {"network": {"interfaces": [
            {"interface": "eth0", "dhcp": false, "routes": [{"network": "0.0.0.0/0", "gateway": "10.0.0.254"}]},
            {"deviceSelector": {"driver": "virtio_net"}, "mtu": 9000},
            {"interface": "eth2", "dhcp": true}
        ]}}});
        let out = run(doc, patch).unwrap();
        assert_eq!(
            out,
            json!({"machine": {"network": {"interfaces": [
                {"interface": "eth0", "dhcp": false, "routes": [{"network": "0.0.0.0/0", "gateway": "10.0.0.254"}]},
                {"deviceSelector": {"driver": "virtio_net"}, "mtu": 9000},
                {"interface": "eth2", "dhcp": true}
            ]}}})
        );
    }

    #[test]
    fn delete_and_replace_directives() {
        let doc = json!({"machine": {"files": [{"path": "/a", "content": "x"}, {"path": "/b"}],
                                     "network": {"hostname": "h", "nameservers": ["1.1.1.1"]}}});
        let patch = json!({"machine": {"files": [{"path": "/a", "$patch": "delete"}],
                                       "network": {"$patch": "replace", "hostname": "n"}}});
        let out = run(doc, patch).unwrap();
        assert_eq!(
            out,
            json!({"machine": {"files": [{"path": "/b"}], "network": {"hostname": "n"}}})
        );
    }

    #[test]
    fn sans_are_unioned_other_lists_replaced() {
        let doc = json!({"machine": {"certSANs": ["a"], "network": {"nameservers": ["1.1.1.1"]}}});
        let patch =
            json!({"machine": {"certSANs": ["b", "a"], "network": {"nameservers": ["8.8.8.8"]}}});
        let out = run(doc, patch).unwrap();
        assert_eq!(
            out,
            json!({"machine": {"certSANs": ["a", "b"], "network": {"nameservers": ["8.8.8.8"]}}})
        );
    }

    #[test]
    fn failures_name_the_path() {
        let doc = json!({"machine": {"network": {"interfaces": [{"interface": "eth0"}]}}});
        let e = run(
            doc.clone(),
            json!({"machine": {"network": {"interfaces": [{"interface": "eth9", "$patch": "delete"}]}}}),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "machine.network.interfaces[0]: nothing to delete: no element has interface: \"eth9\""
        );
        let e = run(
            doc.clone(),
            json!({"machine": {"network": {"interfaces": [{"dhcp": true}]}}}),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "machine.network.interfaces[0]: has no `interface` or `deviceSelector`, so it cannot be matched to an existing element"
        );
        let e = run(
            json!({"machine": {"network": "x"}}),
            json!({"machine": {"network": {"hostname": "a"}}}),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "machine.network: the patch has a map here but the config has a string"
        );
    }
}
