//! `metadata.managedFields`: which field manager set which fields (fieldsV1), recorded on
//! create, update, patch and server-side apply, and the conflicts of server-side apply: a
//! manager that applies a value to a field another manager owns gets 409 Conflict with one
//! `FieldManagerConflict` cause per field, unless it forces (`force=true`), which takes the
//! fields over. A field a manager stops applying is removed when no one else owns it.
//!
//! A field set is a set of paths; path elements are fieldsV1 keys: `f:<field>`, `k:<merge
//! key as JSON>` for an element of a list merged by key, `v:<value as JSON>` for an element of a
//! set-like list of scalars, and `.` for the list element itself.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::objects::now_rfc3339;
use super::patch::{merge_key, merges_scalars};
use super::status::ApiError;

pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Who writes, and how.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    /// `Some("status")` for writes to the status subresource.
    pub subresource: Option<&'a str>,
    pub kind: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: FieldSet,
}

impl Entry {
    fn is(&self, w: &Writer<'_>, operation: &str) -> bool {
        self.manager == w.manager
            && self.operation == operation
            && self.subresource.as_deref() == w.subresource
    }
}

/// Metadata fields the server owns; never tracked.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// The leaf paths `obj` sets, for a write to `subresource` (status only, or all but status).
pub fn leaves(kind: &str, obj: &Value, subresource: Option<&str>) -> FieldSet {
    let mut out = FieldSet::new();
    let Value::Object(m) = obj else {
        return out;
    };
    for (k, v) in m {
        let tracked = match k.as_str() {
            "apiVersion" | "kind" => false,
            "status" => subresource == Some("status"),
            _ => subresource.is_none(),
        };
        if !tracked {
            continue;
        }
        let mut path = vec![format!("f:{k}")];
        if k == "metadata" {
            if let Value::Object(meta) = v {
                for (mk, mv) in meta {
                    if SYSTEM_METADATA.contains(&mk.as_str()) {
                        continue;
                    }
                    path.push(format!("f:{mk}"));
                    walk(kind, "metadata", mk, mv, &mut path, &mut out);
                    path.pop();
                }
            }
            continue;
        }
        walk(kind, "", k, v, &mut path, &mut out);
    }
    out
}

fn walk(
    kind: &str,
    parent: &str,
    field: &str,
    v: &Value,
    path: &mut FieldPath,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                walk(kind, field, k, child, path, out);
                path.pop();
            }
        }
        Value::Array(items) if merges_scalars(parent, field) => {
            for item in items {
                path.push(format!("v:{item}"));
                out.insert(path.clone());
                path.pop();
            }
        }
        Value::Array(items) => {
            let key = merge_key(kind, parent, field);
            match key {
                Some(key) if items.iter().all(|i| i.get(key).is_some()) => {
                    for item in items {
                        path.push(format!("k:{}", json!({ key: item[key] })));
                        path.push(".".into());
                        out.insert(path.clone());
                        path.pop();
                        if let Value::Object(m) = item {
                            for (k, child) in m {
                                path.push(format!("f:{k}"));
                                walk(kind, field, k, child, path, out);
                                path.pop();
                            }
                        }
                        path.pop();
                    }
                }
                // A list without a merge key is atomic: one field.
                _ => {
                    out.insert(path.clone());
                }
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at `path` in `obj`.
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        cur = step(cur, el)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, el: &str) -> Option<&'a Value> {
    if el == "." {
        return Some(cur);
    }
    if let Some(f) = el.strip_prefix("f:") {
        return cur.get(f);
    }
    let items = cur.as_array()?;
    if let Some(k) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items
            .iter()
            .find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
    }
    let want: Value = serde_json::from_str(el.strip_prefix("v:")?).ok()?;
    items.iter().find(|i| **i == want)
}

/// Removes the field at `path` (a `.` path removes its list element).
fn remove(obj: &mut Value, path: &[String]) {
    let path = match path.last().map(String::as_str) {
        Some(".") => &path[..path.len() - 1],
        _ => path,
    };
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for el in parents {
        let next = match el.strip_prefix("f:") {
            Some(f) => cur.get_mut(f),
            None => {
                let idx = get_index(cur, el);
                match (idx, cur.as_array_mut()) {
                    (Some(i), Some(a)) => a.get_mut(i),
                    _ => None,
                }
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(i) = get_index(cur, last)
        && let Some(a) = cur.as_array_mut()
    {
        a.remove(i);
    }
}

fn get_index(list: &Value, el: &str) -> Option<usize> {
    let found = step(list, el)?;
    list.as_array()?.iter().position(|i| std::ptr::eq(i, found))
}

/// Upstream's way to print a path: `.spec.containers[name="app"].image`.
pub fn display(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

/// fieldsV1: the nested form of a field set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            cur = cur
                .entry(el.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn go(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, child) in m {
            path.push(k.clone());
            go(child, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

fn read(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Entry {
                manager: e["manager"].as_str()?.to_string(),
                operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
                time: e["time"].as_str().unwrap_or("").to_string(),
                subresource: e["subresource"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(String::from),
                fields: from_fields_v1(&e["fieldsV1"]),
            })
        })
        .collect()
}

fn write(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation,
                "apiVersion": e.api_version, "time": e.time, "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields)});
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Sets `w`'s entry (`operation`) to own `fields` now, replacing or adding it.
fn own(entries: &mut Vec<Entry>, w: &Writer<'_>, operation: &str, fields: FieldSet) {
    let time = now_rfc3339();
    match entries.iter_mut().find(|e| e.is(w, operation)) {
        Some(e) => {
            if e.fields != fields {
                e.fields = fields;
                e.time = time;
                e.api_version = w.api_version.to_string();
            }
        }
        None => entries.push(Entry {
            manager: w.manager.to_string(),
            operation: operation.to_string(),
            api_version: w.api_version.to_string(),
            time,
            subresource: w.subresource.map(String::from),
            fields,
        }),
    }
}

/// Records a create by `w`: it owns every field it set.
pub fn on_create(obj: &mut Value, w: &Writer<'_>, applied: Option<&Value>) {
    let (op, fields) = match applied {
        Some(config) => ("Apply", leaves(w.kind, config, None)),
        None => ("Update", leaves(w.kind, obj, None)),
    };
    let mut entries = Vec::new();
    own(&mut entries, w, op, fields);
    write(obj, &entries);
}

/// Records an update (PUT or a non-apply PATCH) by `w` from `old` to `new`: `w` takes the
/// fields whose values it changed; fields that are gone leave every owner.
pub fn on_update(old: &Value, new: &mut Value, w: &Writer<'_>) {
    let mut entries = read(old);
    let before = leaves(w.kind, old, w.subresource);
    let after = leaves(w.kind, new, w.subresource);
    let changed: FieldSet = after
        .iter()
        .filter(|p| get(old, p) != get(new, p))
        .cloned()
        .collect();
    let gone: FieldSet = before.difference(&after).cloned().collect();
    if changed.is_empty() && gone.is_empty() {
        write(new, &entries);
        return;
    }
    for e in entries.iter_mut() {
        e.fields
            .retain(|p| !changed.contains(p) && !gone.contains(p));
    }
    let mut mine = entries
        .iter()
        .find(|e| e.is(w, "Update"))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    mine.extend(changed);
    own(&mut entries, w, "Update", mine);
    entries.retain(|e| !e.fields.is_empty());
    write(new, &entries);
}

/// Server-side apply of `config` by `w`: `merged` is `old` with `config` merged in. Checks
/// conflicts with other managers (unless `force`), removes the fields `w` applied before
/// but no longer does (when no one else owns them), and records `w`'s Apply entry.
pub fn on_apply(
    old: &Value,
    mut merged: Value,
    config: &Value,
    w: &Writer<'_>,
    force: bool,
) -> Result<Value, ApiError> {
    let mut entries = read(old);
    let applied = leaves(w.kind, config, w.subresource);
    let mut conflicts: BTreeMap<(String, String), Vec<FieldPath>> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| !e.is(w, "Apply") && e.subresource.as_deref() == w.subresource)
    {
        for p in applied.intersection(&e.fields) {
            if p.last().is_some_and(|l| l == ".") {
                continue;
            }
            let current = get(old, p);
            if current.is_some() && current != get(config, p) {
                conflicts
                    .entry((e.manager.clone(), e.api_version.clone()))
                    .or_default()
                    .push(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    if force {
        for e in entries.iter_mut().filter(|e| !e.is(w, "Apply")) {
            e.fields.retain(|p| !applied.contains(p));
        }
    }
    let before = entries
        .iter()
        .find(|e| e.is(w, "Apply"))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !e.is(w, "Apply"))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    // Longest paths first, so an element's fields go before the element.
    let mut dropped: Vec<&FieldPath> = before.difference(&applied).collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        let prefix = match p.last().map(String::as_str) {
            Some(".") => &p[..p.len() - 1],
            _ => &p[..],
        };
        let owned = |q: &[String]| {
            others
                .iter()
                .chain(applied.iter())
                .any(|o| o.starts_with(q))
        };
        if owned(prefix) {
            continue;
        }
        remove(&mut merged, p);
        // Maps and lists left empty and owned by no one go too.
        let mut q = prefix;
        while q.len() > 1 {
            q = &q[..q.len() - 1];
            let empty = match get(&merged, q) {
                Some(Value::Object(m)) => m.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                _ => false,
            };
            if !empty || owned(q) {
                break;
            }
            remove(&mut merged, q);
        }
    }
    own(&mut entries, w, "Apply", applied);
    entries.retain(|e| !e.fields.is_empty());
    write(&mut merged, &entries);
    Ok(merged)
}

fn conflict_error(conflicts: &BTreeMap<(String, String), Vec<FieldPath>>) -> ApiError {
    let total: usize = conflicts.values().map(Vec::len).sum();
    let mut causes = Vec::new();
    let mut parts = Vec::new();
    for ((manager, api_version), paths) in conflicts {
        let with = format!("conflict with \"{manager}\" using {api_version}");
        if paths.len() == 1 {
            parts.push(format!("{with}: {}", display(&paths[0])));
        } else {
            let list: Vec<String> = paths.iter().map(|p| format!("- {}", display(p))).collect();
            parts.push(format!(
                "conflicts with \"{manager}\" using {api_version}:\n{}",
                list.join("\n")
            ));
        }
        for p in paths {
            causes.push(
                json!({"reason": "FieldManagerConflict", "message": with, "field": display(p)}),
            );
        }
    }
    ApiError {
        code: 409,
        reason: "Conflict",
        message: format!(
            "Apply failed with {total} conflict{}: {}",
            if total == 1 { "" } else { "s" },
            parts.join("\n")
        ),
        details: Some(json!({"causes": causes})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "apps/v1",
            subresource: None,
            kind: "Deployment",
        }
    }

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"app": "x"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "app", "image": image}]}}}})
    }

    #[test]
    fn fields_v1_round_trips_and_keys_list_items() {
        let set = leaves("Deployment", &deploy(1, "nginx"), None);
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"],
            json!({".": {}, "f:image": {}, "f:name": {}})
        );
        assert_eq!(v1["f:metadata"], json!({"f:labels": {"f:app": {}}}));
        assert_eq!(from_fields_v1(&v1), set);
        let p = vec![
            "f:spec".into(),
            "f:template".into(),
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"app\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(get(&deploy(1, "nginx"), &p), Some(&json!("nginx")));
        assert_eq!(
            display(&p),
            ".spec.template.spec.containers[name=\"app\"].image"
        );
    }

    #[test]
    fn apply_conflicts_unless_forced_and_drops_unapplied_fields() {
        let mut obj = deploy(1, "nginx");
        on_create(&mut obj, &w("alice"), Some(&deploy(1, "nginx")));
        // Bob applies another replica count: a conflict on .spec.replicas only.
        let bob = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 3}});
        let err = on_apply(&obj, obj.clone(), &bob, &w("bob"), false).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"alice\"")
                && err.message.contains(".spec.replicas"),
            "{}",
            err.message
        );
        assert_eq!(err.details.unwrap()["causes"][0]["field"], ".spec.replicas");
        // The same value is shared, not a conflict.
        let same = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 1}});
        let shared = on_apply(&obj, obj.clone(), &same, &w("bob"), false).unwrap();
        assert_eq!(
            shared["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        // Forced: bob owns replicas, alice no longer does.
        let mut merged = obj.clone();
        merged["spec"]["replicas"] = json!(3);
        let forced = on_apply(&obj, merged, &bob, &w("bob"), true).unwrap();
        let alice = &forced["metadata"]["managedFields"][0];
        assert_eq!(alice["manager"], "alice");
        assert!(alice["fieldsV1"]["f:spec"].get("f:replicas").is_none());
        // Alice stops applying her label: it is removed (no one else owns it).
        let mut less = deploy(1, "nginx");
        less["metadata"].as_object_mut().unwrap().remove("labels");
        less["spec"].as_object_mut().unwrap().remove("replicas");
        let out = on_apply(&forced, forced.clone(), &less, &w("alice"), false).unwrap();
        assert!(out["metadata"].get("labels").is_none(), "{out}");
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let mut obj = deploy(1, "nginx");
        on_create(&mut obj, &w("alice"), Some(&deploy(1, "nginx")));
        let mut new = obj.clone();
        new["spec"]["replicas"] = json!(5);
        on_update(&obj, &mut new, &w("kubectl-scale"));
        let mf = new["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[1]["operation"], "Update");
        assert_eq!(mf[1]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        assert!(mf[0]["fieldsV1"]["f:spec"].get("f:replicas").is_none());
        // An update that changes nothing leaves managedFields alone.
        let mut again = new.clone();
        on_update(&new, &mut again, &w("other"));
        assert_eq!(again, new);
    }
}
