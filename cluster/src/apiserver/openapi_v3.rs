//! /openapi/v3: one OpenAPI 3.0 document per served group-version, with the schemas of its
//! kinds (from k8s-openapi's schemars support) tagged with x-kubernetes-group-version-kind, as
//! `kubectl explain` reads them, and the patch merge keys `kubectl apply` reads.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api::{apps, batch, coordination, core, discovery as disc, networking, rbac};
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::registry;

fn register(generator: &mut SchemaGenerator, kind: &str) -> Option<Value> {
    let s = match kind {
        "Namespace" => generator.subschema_for::<core::v1::Namespace>(),
        "Node" => generator.subschema_for::<core::v1::Node>(),
        "Pod" => generator.subschema_for::<core::v1::Pod>(),
        "Service" => generator.subschema_for::<core::v1::Service>(),
        "Endpoints" => generator.subschema_for::<core::v1::Endpoints>(),
        "ConfigMap" => generator.subschema_for::<core::v1::ConfigMap>(),
        "Secret" => generator.subschema_for::<core::v1::Secret>(),
        "ServiceAccount" => generator.subschema_for::<core::v1::ServiceAccount>(),
        "Event" => generator.subschema_for::<core::v1::Event>(),
        "Deployment" => generator.subschema_for::<apps::v1::Deployment>(),
        "ReplicaSet" => generator.subschema_for::<apps::v1::ReplicaSet>(),
        "DaemonSet" => generator.subschema_for::<apps::v1::DaemonSet>(),
        "ControllerRevision" => generator.subschema_for::<apps::v1::ControllerRevision>(),
        "Job" => generator.subschema_for::<batch::v1::Job>(),
        "Lease" => generator.subschema_for::<coordination::v1::Lease>(),
        "EndpointSlice" => generator.subschema_for::<disc::v1::EndpointSlice>(),
        "Ingress" => generator.subschema_for::<networking::v1::Ingress>(),
        "Role" => generator.subschema_for::<rbac::v1::Role>(),
        "RoleBinding" => generator.subschema_for::<rbac::v1::RoleBinding>(),
        "ClusterRole" => generator.subschema_for::<rbac::v1::ClusterRole>(),
        "ClusterRoleBinding" => generator.subschema_for::<rbac::v1::ClusterRoleBinding>(),
        _ => return None,
    };
    Some(s.to_value())
}

/// The merge key `kubectl apply` should use for list `field` of definition `def` (the same
/// keys the server's strategic merge uses).
fn merge_key(def: &str, field: &str) -> Option<&'static str> {
    let container = def.ends_with(".Container") || def.ends_with(".EphemeralContainer");
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "env" if container => "name",
        "volumeMounts" if container => "mountPath",
        "volumeDevices" if container => "devicePath",
        "ports" if container => "containerPort",
        "ports" if def.ends_with(".ServiceSpec") => "port",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "conditions" => "type",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

fn add_patch_extensions(defs: &mut Map<String, Value>) {
    for (name, schema) in defs.iter_mut() {
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, prop) in props.iter_mut() {
            if let Some(key) = merge_key(name, field) {
                prop["x-kubernetes-patch-merge-key"] = json!(key);
                prop["x-kubernetes-patch-strategy"] = json!("merge");
            } else if name.ends_with(".ObjectMeta") && field == "finalizers" {
                prop["x-kubernetes-patch-strategy"] = json!("merge");
            }
        }
    }
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn build(group: &str, version: &str) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    for r in registry::resources_in(group, version) {
        if let Some(reference) = register(&mut generator, r.kind) {
            let name = reference["$ref"]
                .as_str()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            kinds.push((name, r.kind));
        }
    }
    let mut paths = Map::new();
    for r in registry::resources_in(group, version) {
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let base = format!("/{}", gv_path(group, version));
        let scope = if r.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let reference = json!({"$ref": format!("#/components/schemas/{}", kinds.iter().find(|(_, k)| *k == r.kind).map(|(n, _)| n.as_str()).unwrap_or(""))});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        paths.insert(
            format!("{base}{scope}/{}/{{name}}", r.plural),
            json!({
                "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk, "responses": ok},
                "put": {"x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk, "responses": ok, "parameters": [field_validation]},
                "patch": {"x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk, "responses": ok, "parameters": [field_validation]},
            }),
        );
    }
    let mut defs = generator.take_definitions(true);
    for (name, kind) in kinds {
        if let Some(s) = defs.get_mut(&name) {
            s["x-kubernetes-group-version-kind"] =
                json!([{"group": group, "kind": kind, "version": version}]);
        }
    }
    add_patch_extensions(&mut defs);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": super::discovery::version()["gitVersion"]},
        "paths": paths,
        "components": {"schemas": defs},
    })
}

/// The documents, built once: path ("api/v1", "apis/apps/v1"...) -> (document bytes, hash).
fn documents() -> &'static BTreeMap<String, (Vec<u8>, String)> {
    static DOCS: OnceLock<BTreeMap<String, (Vec<u8>, String)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut out = BTreeMap::new();
        for (group, versions) in registry::groups() {
            for version in versions {
                let bytes = serde_json::to_vec(&build(group, version)).unwrap_or_default();
                let hash = format!("{:016X}", fnv1a(&bytes));
                out.insert(gv_path(group, version), (bytes, hash));
            }
        }
        out
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// `/openapi/v3`: where each group-version's document is.
pub fn index() -> Value {
    let paths: Map<String, Value> = documents()
        .iter()
        .map(|(p, (_, hash))| {
            (
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// `/openapi/v3/<path>`: one group-version's document.
pub fn document(path: &str) -> Option<&'static [u8]> {
    documents()
        .get(path.trim_matches('/'))
        .map(|(b, _)| b.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_document_has_tagged_kinds_and_merge_keys() {
        let doc: Value = serde_json::from_slice(document("api/v1").unwrap()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert_eq!(
            schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        assert_eq!(
            schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"]["x-kubernetes-patch-merge-key"],
            "containerPort"
        );
        assert!(
            index()["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
        assert!(document("apis/nope/v1").is_none());
        let get = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["get"];
        assert_eq!(get["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert!(doc["paths"]["/api/v1/nodes/{name}"].is_object());
    }
}
