//! /openapi/v3: one OpenAPI 3.0 document per served group-version, shaped as kube-apiserver's:
//! every operation the server serves on it (`paths.rs`, parameters in `params.rs`) and the
//! schemas they refer to (`schemas.rs`), kinds tagged with x-kubernetes-group-version-kind as
//! `kubectl explain` reads them, with the patch merge keys `kubectl apply` reads.

mod params;
mod paths;
mod schemas;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::registry;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn build(group: &str, version: &str) -> Value {
    let mut schemas = schemas::Schemas::new();
    let base = format!("/{}", gv_path(group, version));
    let paths = paths::build(group, version, &base, &mut schemas);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": super::discovery::version()["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas.finish()},
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
        let item = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"];
        assert_eq!(
            item["get"]["x-kubernetes-group-version-kind"]["kind"],
            "Pod"
        );
        assert_eq!(item["get"]["operationId"], "readCoreV1NamespacedPod");
        let names: Vec<&str> = item["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["name", "namespace", "pretty"]);
        assert_eq!(
            item["put"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Pod"
        );
        assert!(
            item["patch"]["requestBody"]["content"]["application/strategic-merge-patch+json"]
                .is_object()
        );
        assert!(doc["paths"]["/api/v1/nodes/{name}"].is_object());
        let all = &doc["paths"]["/api/v1/pods"];
        assert_eq!(all["get"]["operationId"], "listCoreV1PodForAllNamespaces");
        assert!(all["delete"].is_null() && all["post"].is_null());
        assert_eq!(
            schemas["io.k8s.api.core.v1.PodList"]["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Pod"
        );
        let exec = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/exec"];
        assert_eq!(
            exec["post"]["operationId"],
            "connectCoreV1PostNamespacedPodExec"
        );
        let apps: Value = serde_json::from_slice(document("apis/apps/v1").unwrap()).unwrap();
        let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["put"]["operationId"],
            "replaceAppsV1NamespacedDeploymentScale"
        );
        assert_eq!(
            scale["get"]["x-kubernetes-group-version-kind"]["group"],
            "autoscaling"
        );
        assert!(apps["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"].is_object());
    }
}
