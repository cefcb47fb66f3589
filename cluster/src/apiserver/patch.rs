//! Patches: JSON patch (RFC 6902), merge patch (RFC 7386) and strategic merge patch (what
//! `kubectl apply` sends: lists of structs merged by a key, `$patch` and other directives).

use serde_json::{Map, Value};

use super::status::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchKind::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Applies a JSON, merge or strategic merge patch `body` to `old` (an object of `kind`).
pub fn apply(kind: PatchKind, obj_kind: &str, old: &Value, body: &[u8]) -> ApiResult<Value> {
    match kind {
        PatchKind::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
            let mut doc = old.clone();
            json_patch::patch(&mut doc, &p).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: format!("the JSON patch could not be applied: {e}"),
                details: None,
            })?;
            Ok(doc)
        }
        PatchKind::Merge => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding merge patch: {e}")))?;
            if !p.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            let mut doc = old.clone();
            json_patch::merge(&mut doc, &p);
            Ok(doc)
        }
        PatchKind::Strategic | PatchKind::Apply => {
            let p: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("error decoding strategic merge patch: {e}"))
            })?;
            strategic_merge(obj_kind, old, &p)
        }
    }
}

/// The merge key of a list of structs, from the field's name and its parent's (the subset of
/// Kubernetes' patchMergeKey tags the served kinds use). `None`: the list is replaced.
pub(crate) fn merge_key(obj_kind: &str, parent: &str, field: &str) -> Option<&'static str> {
    Some(match (parent, field) {
        (_, "containers" | "initContainers" | "ephemeralContainers") => "name",
        (_, "env" | "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates") => {
            "name"
        }
        (_, "volumeMounts") => "mountPath",
        (_, "volumeDevices") => "devicePath",
        ("spec", "ports") if obj_kind == "Service" => "port",
        (_, "ports") if parent != "spec" => "containerPort",
        (_, "hostAliases") => "ip",
        (_, "topologySpreadConstraints") => "topologyKey",
        (_, "conditions") => "type",
        ("metadata", "ownerReferences") => "uid",
        _ => return None,
    })
}

/// Lists of scalars that merge (union) instead of being replaced.
pub(crate) fn merges_scalars(parent: &str, field: &str) -> bool {
    matches!((parent, field), ("metadata", "finalizers"))
}

/// Applies a strategic merge patch.
pub fn strategic_merge(obj_kind: &str, old: &Value, patch: &Value) -> ApiResult<Value> {
    let Value::Object(p) = patch else {
        return Err(ApiError::bad_request(
            "a strategic merge patch must be a JSON object",
        ));
    };
    let mut out = old.clone();
    if !out.is_object() {
        out = Value::Object(Map::new());
    }
    merge_map(
        obj_kind,
        "",
        out.as_object_mut().expect("made an object above"),
        p,
    )?;
    Ok(out)
}

fn merge_map(
    obj_kind: &str,
    parent: &str,
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> ApiResult<()> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut p = patch.clone();
            p.remove("$patch");
            *target = strip_directives(&p);
            return Ok(());
        }
        Some("delete") => {
            target.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown patch directive {other:?}"
            )));
        }
    }
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, pv) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (target.get_mut(field), pv.as_array())
            {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            target.remove(key);
            continue;
        }
        match (target.get_mut(key), pv) {
            (Some(Value::Object(t)), Value::Object(p)) => {
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    target.remove(key);
                } else {
                    merge_map(obj_kind, key, t, p)?;
                }
            }
            (Some(Value::Array(t)), Value::Array(p)) => {
                let merged = merge_list(obj_kind, parent, key, t, p)?;
                *t = merged;
            }
            (_, Value::Object(p)) if p.get("$patch").and_then(Value::as_str) == Some("delete") => {
                target.remove(key);
            }
            (_, pv) => {
                target.insert(key.clone(), strip_directives_value(pv));
            }
        }
    }
    // $setElementOrder only orders elements that exist; apply it after merging.
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(list)), Some(order)) =
                (target.get_mut(field), order.as_array())
        {
            reorder(list, order, merge_key(obj_kind, parent, field));
        }
    }
    Ok(())
}

fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let id = |v: &Value| match key {
        Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
        None => v.clone(),
    };
    let mut ordered = Vec::with_capacity(list.len());
    let mut rest: Vec<Value> = std::mem::take(list);
    for o in order {
        let want = match (key, o) {
            (Some(k), Value::Object(m)) => m.get(k).cloned().unwrap_or(Value::Null),
            _ => o.clone(),
        };
        if let Some(i) = rest.iter().position(|v| id(v) == want) {
            ordered.push(rest.remove(i));
        }
    }
    ordered.extend(rest);
    *list = ordered;
}

fn merge_list(
    obj_kind: &str,
    parent: &str,
    field: &str,
    target: &[Value],
    patch: &[Value],
) -> ApiResult<Vec<Value>> {
    // A `{"$patch": "replace"}` element replaces the whole list with the other elements.
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .map(strip_directives_value)
            .collect());
    }
    if merges_scalars(parent, field) {
        let mut out = target.to_vec();
        for e in patch {
            if !out.contains(e) {
                out.push(e.clone());
            }
        }
        return Ok(out);
    }
    let Some(key) = merge_key(obj_kind, parent, field) else {
        return Ok(patch.iter().map(strip_directives_value).collect());
    };
    let mut out = target.to_vec();
    for pe in patch {
        let Value::Object(pm) = pe else {
            return Err(ApiError::bad_request(format!(
                "{field}: a list merged by {key:?} must hold objects"
            )));
        };
        let id = pm.get(key);
        let pos = id.and_then(|id| out.iter().position(|t| t.get(key) == Some(id)));
        let delete = pm.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                if let Value::Object(t) = &mut out[i] {
                    merge_map(obj_kind, field, t, pm)?;
                }
            }
            (None, false) => out.push(strip_directives_value(pe)),
        }
    }
    Ok(out)
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), strip_directives_value(v)))
        .collect()
}

fn strip_directives_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives_value).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> Value {
        json!({"metadata": {"name": "d", "labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"containerPort": 80}]},
                {"name": "side", "image": "busybox"}]}}}})
    }

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let p = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "nginx:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}]}}}});
        let out = strategic_merge("Deployment", &deploy(), &p).unwrap();
        let c = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 2, "side container kept");
        assert_eq!(c[0]["image"], "nginx:2");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(c[0]["ports"][0]["containerPort"], 80);
    }

    #[test]
    fn directives_delete_replace_and_order() {
        let p = json!({"metadata": {"labels": {"a": null, "b": "2"}, "finalizers": ["y"]},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
                "containers": [{"name": "app", "$patch": "delete"}]}}}});
        let out = strategic_merge("Deployment", &deploy(), &p).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        let c = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0]["name"], "side");
        let p = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}}});
        let out = strategic_merge("Deployment", &deploy(), &p).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
    }

    #[test]
    fn service_ports_merge_by_port_and_unknown_lists_replace() {
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}], "externalIPs": ["1.1.1.1"]}});
        let p = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}], "externalIPs": ["2.2.2.2"]}});
        let out = strategic_merge("Service", &svc, &p).unwrap();
        assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(out["spec"]["externalIPs"], json!(["2.2.2.2"]));
    }

    #[test]
    fn json_and_merge_patches() {
        let old = json!({"metadata": {"labels": {"a": "1"}}});
        let out = apply(
            PatchKind::Json,
            "Pod",
            &old,
            br#"[{"op":"add","path":"/metadata/labels/b","value":"2"}]"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"]["b"], "2");
        let err = apply(
            PatchKind::Json,
            "Pod",
            &old,
            br#"[{"op":"remove","path":"/nope"}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        let out = apply(
            PatchKind::Merge,
            "Pod",
            &old,
            br#"{"metadata":{"labels":{"a":null}}}"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({}));
        assert_eq!(
            apply(PatchKind::Merge, "Pod", &old, b"{").unwrap_err().code,
            400
        );
    }
}
