//! The `paths` of one group-version's OpenAPI v3 document, as kube-apiserver lays them out:
//! for every served resource its collection and item paths (and the cluster-wide list of a
//! namespaced one), then the subresources the server serves. Every operation carries its
//! operationId, x-kubernetes-action and x-kubernetes-group-version-kind, its parameters
//! (path parameters once on the path item), a request body where it takes one, and responses
//! with schema references, so clients and tools that read the document can call it.

use serde_json::{Map, Value, json};

use super::params;
use super::schemas::Schemas;
use crate::apiserver::registry::{self, ResourceDef, Subresource};

/// What the server answers with (it reads JSON, YAML and protobuf bodies, but declaring
/// JSON and YAML is what clients can produce).
const BODY_TYPES: &[&str] = &["application/json", "application/yaml"];
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// One operation, before it becomes JSON.
struct Op<'a> {
    action: &'a str,
    id: String,
    description: String,
    gvk: Value,
    query: &'a [&'a str],
    body: Option<Value>,
    responses: Value,
}

/// The document's paths, registering the schemas they refer to in `schemas`.
pub fn build(group: &str, version: &str, base: &str, schemas: &mut Schemas) -> Map<String, Value> {
    let doc = Doc {
        group,
        version,
        prefix: format!("{}{}", group_word(group), capitalize(version)),
        tag: tag(group, version),
    };
    let mut paths = Map::new();
    if let Some(list) = schemas.meta("APIResourceList") {
        let op = Op {
            action: "",
            id: format!("get{}APIResources", doc.prefix),
            description: "get available resources".into(),
            gvk: Value::Null,
            query: &[],
            body: None,
            responses: responses(&[("200", "OK")], &list, &["application/json"]),
        };
        paths.insert(format!("{base}/"), json!({"get": doc.operation(op)}));
    }
    for r in registry::resources_in(group, version) {
        doc.resource(r, base, schemas, &mut paths);
    }
    paths
}

struct Doc<'a> {
    group: &'a str,
    version: &'a str,
    /// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`: the middle of every operationId.
    prefix: String,
    tag: String,
}

impl Doc<'_> {
    fn operation(&self, op: Op) -> Value {
        let mut o = json!({
            "operationId": op.id,
            "description": op.description,
            "tags": [self.tag],
            "responses": op.responses,
        });
        if !op.action.is_empty() {
            o["x-kubernetes-action"] = json!(op.action);
        }
        if !op.gvk.is_null() {
            o["x-kubernetes-group-version-kind"] = op.gvk;
        }
        if !op.query.is_empty() {
            o["parameters"] = json!(params::queries(op.query));
        }
        if let Some(body) = op.body {
            o["requestBody"] = body;
        }
        o
    }

    fn resource(
        &self,
        r: &'static ResourceDef,
        base: &str,
        schemas: &mut Schemas,
        paths: &mut Map<String, Value>,
    ) {
        let (Some(object), Some(list)) = (
            schemas.kind(self.group, self.version, r.kind),
            schemas.list(self.group, self.version, r.kind),
        ) else {
            return;
        };
        let delete_options = schemas.meta("DeleteOptions").unwrap_or_default();
        let patch = schemas.meta("Patch").unwrap_or_default();
        let gvk = json!({"group": self.group, "version": self.version, "kind": r.kind});
        let kind = r.kind;
        let scope = if r.namespaced { "Namespaced" } else { "" };
        let id = |verb: &str, tail: &str| format!("{verb}{}{scope}{kind}{tail}", self.prefix);
        let can = |verb: &str| r.verbs().contains(&verb);
        let mut scope_params = Vec::new();
        let collection = if r.namespaced {
            scope_params.push(params::namespace());
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let item = format!("{collection}/{{name}}");
        let pretty = params::query("pretty");

        let mut ops = Map::new();
        let mut path_params = scope_params.clone();
        path_params.push(pretty.clone());
        ops.insert("parameters".into(), json!(path_params));
        if can("list") {
            let op = self.list_op(id("list", ""), kind, &gvk, &list);
            ops.insert("get".into(), self.operation(op));
        }
        if can("create") {
            let op = Op {
                action: "post",
                id: id("create", ""),
                description: format!("create a {kind}"),
                gvk: gvk.clone(),
                query: params::WRITE,
                body: Some(body(&object, BODY_TYPES, true)),
                responses: created(&object),
            };
            ops.insert("post".into(), self.operation(op));
        }
        if can("deletecollection") {
            let op = Op {
                action: "deletecollection",
                id: format!("delete{}Collection{scope}{kind}", self.prefix),
                description: format!("delete a collection of {kind}"),
                gvk: gvk.clone(),
                query: params::DELETE_COLLECTION,
                body: Some(body(&delete_options, &["application/json"], false)),
                responses: responses(&[("200", "OK")], &list, &["application/json"]),
            };
            ops.insert("delete".into(), self.operation(op));
        }
        paths.insert(collection, Value::Object(ops));

        let mut item_params = vec![params::name(kind)];
        item_params.extend(scope_params.iter().cloned());
        let mut ops = Map::new();
        let mut path_params = item_params.clone();
        path_params.push(pretty.clone());
        ops.insert("parameters".into(), json!(path_params));
        let item_ops = ItemOps {
            id_tail: "",
            what: kind.to_string(),
            object: &object,
            patch: &patch,
            gvk: &gvk,
        };
        self.get_put_patch(&item_ops, &id, |v| can(v), &mut ops);
        if can("delete") {
            let op = Op {
                action: "delete",
                id: id("delete", ""),
                description: format!("delete a {kind}"),
                gvk: gvk.clone(),
                query: params::DELETE,
                body: Some(body(&delete_options, &["application/json"], false)),
                responses: responses(
                    &[("200", "OK"), ("202", "Accepted")],
                    &object,
                    &["application/json"],
                ),
            };
            ops.insert("delete".into(), self.operation(op));
        }
        paths.insert(item.clone(), Value::Object(ops));

        if r.namespaced && can("list") {
            let op = self.list_op(
                format!("list{}{kind}ForAllNamespaces", self.prefix),
                kind,
                &gvk,
                &list,
            );
            paths.insert(
                format!("{base}/{}", r.plural),
                json!({"parameters": [pretty], "get": self.operation(op)}),
            );
        }

        for sub in r.subresources {
            let sub_path = format!("{item}/{}", sub.name);
            if let Some(ops) = self.subresource(r, sub, &item_params, &id, &patch, schemas) {
                paths.insert(sub_path, Value::Object(ops));
            }
        }
    }

    fn list_op(&self, id: String, kind: &str, gvk: &Value, list: &Value) -> Op<'static> {
        Op {
            action: "list",
            id,
            description: format!("list or watch objects of kind {kind}"),
            gvk: gvk.clone(),
            query: params::LIST,
            body: None,
            responses: responses(
                &[("200", "OK")],
                list,
                &["application/json", "application/json;stream=watch"],
            ),
        }
    }

    /// get (read), put (replace) and patch of an object or of its status/scale.
    fn get_put_patch(
        &self,
        o: &ItemOps,
        id: &dyn Fn(&str, &str) -> String,
        can: impl Fn(&str) -> bool,
        ops: &mut Map<String, Value>,
    ) {
        let what = &o.what;
        if can("get") {
            let op = Op {
                action: "get",
                id: id("read", o.id_tail),
                description: format!("read the specified {what}"),
                gvk: o.gvk.clone(),
                query: &[],
                body: None,
                responses: responses(&[("200", "OK")], o.object, &["application/json"]),
            };
            ops.insert("get".into(), self.operation(op));
        }
        if can("update") {
            let op = Op {
                action: "put",
                id: id("replace", o.id_tail),
                description: format!("replace the specified {what}"),
                gvk: o.gvk.clone(),
                query: params::WRITE,
                body: Some(body(o.object, BODY_TYPES, true)),
                responses: replaced(o.object),
            };
            ops.insert("put".into(), self.operation(op));
        }
        if can("patch") {
            let op = Op {
                action: "patch",
                id: id("patch", o.id_tail),
                description: format!("partially update the specified {what}"),
                gvk: o.gvk.clone(),
                query: params::PATCH,
                body: Some(body(o.patch, PATCH_TYPES, true)),
                responses: replaced(o.object),
            };
            ops.insert("patch".into(), self.operation(op));
        }
    }

    fn subresource(
        &self,
        r: &ResourceDef,
        sub: &Subresource,
        item_params: &[Value],
        id: &dyn Fn(&str, &str) -> String,
        patch: &Value,
        schemas: &mut Schemas,
    ) -> Option<Map<String, Value>> {
        let (group, version) = if sub.version.is_empty() {
            (self.group, self.version)
        } else {
            (sub.group, sub.version)
        };
        let gvk = json!({"group": group, "version": version, "kind": sub.kind});
        let tail = capitalize(sub.name);
        let mut ops = Map::new();
        let mut path_params = item_params.to_vec();
        let connect = matches!(sub.name, "exec" | "attach" | "portforward");
        if !connect {
            path_params.push(params::query("pretty"));
        }
        ops.insert("parameters".into(), json!(path_params));
        let can = |verb: &str| sub.verbs.contains(&verb);
        match sub.name {
            "status" | "scale" => {
                let object = schemas.kind(group, version, sub.kind)?;
                let o = ItemOps {
                    id_tail: &tail,
                    what: format!("{} of the specified {}", sub.name, r.kind),
                    object: &object,
                    patch,
                    gvk: &gvk,
                };
                self.get_put_patch(&o, id, can, &mut ops);
            }
            "finalize" => {
                let object = schemas.kind(group, version, sub.kind)?;
                let op = Op {
                    action: "put",
                    id: id("replace", &tail),
                    description: format!("replace finalize of the specified {}", r.kind),
                    gvk,
                    query: params::WRITE,
                    body: Some(body(&object, BODY_TYPES, true)),
                    responses: replaced(&object),
                };
                ops.insert("put".into(), self.operation(op));
            }
            "binding" | "token" => {
                let object = schemas.kind(group, version, sub.kind)?;
                let op = Op {
                    action: "post",
                    id: id("create", &tail),
                    description: format!("create {} of a {}", sub.name, r.kind),
                    gvk,
                    query: params::WRITE,
                    body: Some(body(&object, BODY_TYPES, true)),
                    responses: created(&object),
                };
                ops.insert("post".into(), self.operation(op));
            }
            "log" => {
                let op = Op {
                    action: "get",
                    id: id("read", &tail),
                    description: format!("read log of the specified {}", r.kind),
                    gvk,
                    query: params::LOG,
                    body: None,
                    responses: responses(
                        &[("200", "OK")],
                        &json!({"type": "string"}),
                        &["text/plain"],
                    ),
                };
                ops.insert("get".into(), self.operation(op));
            }
            _ if connect => {
                let query = match sub.name {
                    "exec" => params::EXEC,
                    "attach" => params::ATTACH,
                    _ => params::PORT_FORWARD,
                };
                for (method, word) in [("get", "Get"), ("post", "Post")] {
                    let op = Op {
                        action: "connect",
                        // connect<Group><Version><Method>...: the method after the version.
                        id: format!(
                            "connect{}{word}{}{}{tail}",
                            self.prefix,
                            if r.namespaced { "Namespaced" } else { "" },
                            r.kind
                        ),
                        description: format!(
                            "connect {} requests to {} of {}",
                            method.to_uppercase(),
                            sub.name,
                            r.kind
                        ),
                        gvk: gvk.clone(),
                        query,
                        body: None,
                        responses: responses(
                            &[("200", "OK")],
                            &json!({"type": "string"}),
                            &["*/*"],
                        ),
                    };
                    ops.insert(method.into(), self.operation(op));
                }
            }
            _ => return None,
        }
        Some(ops)
    }
}

/// The objects an item's get/put/patch read and write.
struct ItemOps<'a> {
    id_tail: &'a str,
    what: String,
    object: &'a Value,
    patch: &'a Value,
    gvk: &'a Value,
}

fn body(schema: &Value, types: &[&str], required: bool) -> Value {
    json!({"content": content(schema, types), "required": required})
}

fn content(schema: &Value, types: &[&str]) -> Value {
    let map: Map<String, Value> = types
        .iter()
        .map(|t| (t.to_string(), json!({"schema": schema})))
        .collect();
    Value::Object(map)
}

/// The given success codes answering `schema`, and 401 as every operation can.
fn responses(codes: &[(&str, &str)], schema: &Value, types: &[&str]) -> Value {
    let mut out = Map::new();
    for (code, description) in codes {
        out.insert(
            code.to_string(),
            json!({"description": description, "content": content(schema, types)}),
        );
    }
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

fn created(object: &Value) -> Value {
    responses(
        &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
        object,
        &["application/json"],
    )
}

fn replaced(object: &Value) -> Value {
    responses(
        &[("200", "OK"), ("201", "Created")],
        object,
        &["application/json"],
    )
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `Core`, `Apps`, `RbacAuthorization`: a group as operationIds spell it.
fn group_word(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(capitalize)
        .collect()
}

/// `core_v1`, `rbacAuthorization_v1`: the tag grouping a group-version's operations.
fn tag(group: &str, version: &str) -> String {
    let word = group_word(group);
    let mut c = word.chars();
    let lower: String = c
        .next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default();
    format!("{lower}_{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_spelled_as_upstream() {
        assert_eq!(group_word(""), "Core");
        assert_eq!(group_word("rbac.authorization.k8s.io"), "RbacAuthorization");
        assert_eq!(group_word("coordination.k8s.io"), "Coordination");
        assert_eq!(
            tag("rbac.authorization.k8s.io", "v1"),
            "rbacAuthorization_v1"
        );
        assert_eq!(tag("", "v1"), "core_v1");
    }
}
