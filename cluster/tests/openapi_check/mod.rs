//! Structural checks of an OpenAPI 3.0 document, the ones tools that read it (kubectl explain,
//! schemathesis, client generators) rely on: path templates match declared path parameters,
//! writes carry request bodies, operations are identified, every `$ref` resolves.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

pub const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];

/// Everything wrong with `doc`, one line each (empty when it is sound); `counts` gets the
/// number of operations per x-kubernetes-action.
pub fn problems(doc: &Value, counts: &mut BTreeMap<String, usize>) -> Vec<String> {
    let mut out = Vec::new();
    if !doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.0"))
    {
        out.push(format!("openapi is {}", doc["openapi"]));
    }
    let mut ids = BTreeSet::new();
    let Some(paths) = doc["paths"].as_object() else {
        return vec!["no paths".into()];
    };
    for (path, item) in paths {
        let templated: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split('}').next())
            .collect();
        let shared = declared(item, &mut out, path);
        for method in METHODS {
            let Some(op) = item.get(*method) else {
                continue;
            };
            let at = format!("{} {path}", method.to_uppercase());
            let mut in_path = shared.clone();
            in_path.extend(declared(op, &mut out, &at));
            if in_path != templated {
                out.push(format!(
                    "{at}: path parameters {in_path:?}, template needs {templated:?}"
                ));
            }
            match op["operationId"].as_str() {
                Some(id) if ids.insert(id.to_string()) => {}
                Some(id) => out.push(format!("{at}: operationId {id} is used twice")),
                None => out.push(format!("{at}: no operationId")),
            }
            match op["x-kubernetes-action"].as_str() {
                Some(action) => *counts.entry(action.to_string()).or_default() += 1,
                None if path.ends_with('/') => {}
                None => out.push(format!("{at}: no x-kubernetes-action")),
            }
            // A connect (exec, attach, port-forward) is a protocol upgrade, without a body.
            if matches!(*method, "post" | "put" | "patch") && op["x-kubernetes-action"] != "connect"
            {
                let body = &op["requestBody"];
                if body["required"] != true || !body["content"].is_object() {
                    out.push(format!("{at}: no required requestBody with content"));
                }
            }
            if *method == "patch" {
                for t in [
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                    "application/apply-patch+yaml",
                ] {
                    if !op["requestBody"]["content"][t]["schema"].is_object() {
                        out.push(format!("{at}: no {t} body"));
                    }
                }
            }
            let success = op["responses"].as_object().is_some_and(|r| {
                r.iter()
                    .any(|(code, v)| code.starts_with('2') && v["content"].is_object())
            });
            if !success {
                out.push(format!("{at}: no 2xx response with content"));
            }
            if let Some(gvk) = op.get("x-kubernetes-group-version-kind")
                && !(gvk["kind"].is_string() && gvk["version"].is_string())
            {
                out.push(format!(
                    "{at}: malformed x-kubernetes-group-version-kind {gvk}"
                ));
            }
        }
    }
    let schemas = &doc["components"]["schemas"];
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    for r in refs {
        let resolved = r
            .strip_prefix("#/components/schemas/")
            .is_some_and(|name| schemas.get(name).is_some());
        if !resolved {
            out.push(format!("$ref {r} does not resolve"));
        }
    }
    out
}

/// The path parameters a path item or operation declares (each must be required), checking
/// that every parameter has a name, a place and a schema.
fn declared<'a>(holder: &'a Value, out: &mut Vec<String>, at: &str) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for p in holder["parameters"].as_array().into_iter().flatten() {
        let (Some(name), Some(place)) = (p["name"].as_str(), p["in"].as_str()) else {
            out.push(format!("{at}: parameter without name or in: {p}"));
            continue;
        };
        if !p["schema"].is_object() {
            out.push(format!("{at}: parameter {name} has no schema"));
        }
        if place == "path" {
            if p["required"] != true {
                out.push(format!("{at}: path parameter {name} is not required"));
            }
            names.insert(name);
        }
    }
    names
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}
