//! The node authorizer: what a node agent (kubelet + service proxy) needs, keyed on its
//! identity `system:node:<name>`. As upstream's node authorizer and NodeRestriction admission:
//! - read pods, services, endpoints, endpoint slices, nodes and ingresses;
//! - read a secret, config map or service account only when a pod bound to the node uses it;
//! - write only its own Node (and node status) and its own Lease in kube-node-lease;
//! - update the status of, and delete, only pods bound to it;
//! - create events, and publish LoadBalancer service addresses (services/status), because the
//!   agent is also the service load balancer.

use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::apiserver::auth::Attributes;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::storage;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";

fn is_read(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

pub async fn allows(api: &ApiServer, node: &str, a: &Attributes<'_>) -> ApiResult<bool> {
    let verb = a.verb;
    Ok(match (a.group, a.resource, a.subresource) {
        ("", "pods" | "services" | "endpoints" | "nodes", None)
        | ("discovery.k8s.io", "endpointslices", None)
        | ("networking.k8s.io", "ingresses", None)
            if is_read(verb) =>
        {
            true
        }
        ("", "nodes", None) if verb == "create" => true,
        ("", "nodes", None | Some("status"))
            if matches!(verb, "get" | "update" | "patch" | "delete") =>
        {
            a.name == Some(node)
        }
        ("coordination.k8s.io", "leases", None) => {
            a.namespace == Some(LEASE_NAMESPACE)
                && match verb {
                    // The body's name is checked at admission.
                    "create" => true,
                    "get" | "update" | "patch" | "delete" => a.name == Some(node),
                    _ => false,
                }
        }
        ("", "events", None) => matches!(verb, "create" | "update" | "patch"),
        // The agent also runs the service load balancer (as k3s's servicelb), which publishes
        // the node addresses in a LoadBalancer service's status. Upstream has no such rule:
        // there a separate controller identity does it.
        ("", "services", Some("status")) => matches!(verb, "get" | "update" | "patch"),
        ("", "pods", Some("status")) if matches!(verb, "get" | "update" | "patch") => {
            bound_pod(api, node, a).await?.is_some()
        }
        ("", "pods", None) if verb == "delete" => bound_pod(api, node, a).await?.is_some(),
        ("", "secrets" | "configmaps", None) if verb == "get" => {
            referenced(api, node, a, a.resource).await?
        }
        ("", "serviceaccounts", None) if verb == "get" => {
            referenced(api, node, a, "serviceaccounts").await?
        }
        ("", "serviceaccounts", Some("token")) if verb == "create" => {
            referenced(api, node, a, "serviceaccounts").await?
        }
        _ => false,
    })
}

/// NodeRestriction for TokenRequests: a node may only ask for tokens bound to a pod (named
/// with its uid) that is scheduled on it. Upstream's wording.
pub async fn admit_token_request(
    api: &ApiServer,
    node: &str,
    a: &Attributes<'_>,
    body: &Value,
) -> ApiResult<()> {
    let r = &body["spec"]["boundObjectRef"];
    let name = r["name"].as_str().unwrap_or("");
    let deny = |why: &str| {
        Err(ApiError::forbidden(format!(
            "serviceaccounts \"{}\" is forbidden: {why}",
            a.name.unwrap_or("")
        )))
    };
    if r["kind"].as_str() != Some("Pod")
        || r["apiVersion"].as_str() != Some("v1")
        || name.is_empty()
    {
        return deny("node requested token not bound to a pod");
    }
    let Some(uid) = r["uid"].as_str().filter(|u| !u.is_empty()) else {
        return deny("node requested token with a pod binding without a uid");
    };
    let pods = crate::apiserver::registry::lookup("", "v1", "pods").expect("pods are served");
    let Some(kv) = api
        .store
        .get(&storage::key(pods, a.namespace, name), None)
        .await?
    else {
        return Err(ApiError::not_found("", "pods", name));
    };
    let pod = storage::decode(&kv)?;
    if pod["metadata"]["uid"].as_str() != Some(uid) {
        return deny(&format!(
            "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
        ));
    }
    if pod["spec"]["nodeName"].as_str() != Some(node) {
        return deny("node requested token bound to a pod scheduled on a different node");
    }
    Ok(())
}

/// The pod `a` names, when it is bound to `node`.
async fn bound_pod(api: &ApiServer, node: &str, a: &Attributes<'_>) -> ApiResult<Option<Value>> {
    let (Some(ns), Some(name)) = (a.namespace, a.name) else {
        return Ok(None);
    };
    let pods = crate::apiserver::registry::lookup("", "v1", "pods").expect("pods are served");
    let Some(kv) = api
        .store
        .get(&storage::key(pods, Some(ns), name), None)
        .await?
    else {
        return Ok(None);
    };
    let pod = storage::decode(&kv)?;
    Ok((pod["spec"]["nodeName"].as_str() == Some(node)).then_some(pod))
}

/// Whether a pod bound to `node` in `a`'s namespace uses the object `a` names (a secret,
/// config map or service account).
async fn referenced(
    api: &ApiServer,
    node: &str,
    a: &Attributes<'_>,
    kind: &str,
) -> ApiResult<bool> {
    let (Some(ns), Some(name)) = (a.namespace, a.name) else {
        return Ok(false);
    };
    let pods = api
        .store
        .range(&format!("/registry/pods/{ns}/"), None, 0, None)
        .await?;
    for kv in &pods.kvs {
        let pod = storage::decode(kv)?;
        if pod["spec"]["nodeName"].as_str() != Some(node) {
            continue;
        }
        if references(&pod["spec"], kind).iter().any(|r| r == name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The names of the `kind` objects (secrets, configmaps, serviceaccounts) a pod spec uses.
pub fn references(spec: &Value, kind: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |v: &Value| {
        if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
            out.push(s.to_string());
        }
    };
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    if kind == "serviceaccounts" {
        // A pod without one runs as its namespace's `default` account.
        let sa = ["serviceAccountName", "serviceAccount"]
            .iter()
            .find_map(|f| spec[*f].as_str().filter(|s| !s.is_empty()))
            .unwrap_or("default");
        return vec![sa.to_string()];
    }
    let secret = kind == "secrets";
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|f| list(&spec[*f]));
    for c in containers {
        for e in list(&c["env"]) {
            let r = &e["valueFrom"];
            push(if secret {
                &r["secretKeyRef"]["name"]
            } else {
                &r["configMapKeyRef"]["name"]
            });
        }
        for e in list(&c["envFrom"]) {
            push(if secret {
                &e["secretRef"]["name"]
            } else {
                &e["configMapRef"]["name"]
            });
        }
    }
    for v in list(&spec["volumes"]) {
        if secret {
            push(&v["secret"]["secretName"]);
        } else {
            push(&v["configMap"]["name"]);
        }
        for s in list(&v["projected"]["sources"]) {
            push(if secret {
                &s["secret"]["name"]
            } else {
                &s["configMap"]["name"]
            });
        }
    }
    if secret {
        for s in list(&spec["imagePullSecrets"]) {
            push(&s["name"]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_cover_env_volumes_and_pull_secrets() {
        let spec = json!({
            "serviceAccountName": "robot",
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [{"name": "a",
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}},
                        {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "c1", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "s2"}}, {"configMapRef": {"name": "c2"}}]}],
            "volumes": [{"name": "v", "secret": {"secretName": "s3"}},
                        {"name": "w", "configMap": {"name": "c3"}},
                        {"name": "p", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}],
        });
        assert_eq!(
            references(&spec, "secrets"),
            ["s1", "s2", "s3", "pull"].map(String::from)
        );
        assert_eq!(
            references(&spec, "configmaps"),
            ["c1", "c2", "c3", "kube-root-ca.crt"].map(String::from)
        );
        assert_eq!(references(&spec, "serviceaccounts"), ["robot".to_string()]);
        assert_eq!(
            references(&json!({"containers": []}), "serviceaccounts"),
            ["default".to_string()]
        );
    }
}
