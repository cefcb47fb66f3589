//! Subresources beyond status: scale, binding, and log/exec (served by the node agent).

use http::Response;
use serde_json::{Value, json};

use super::write::{Part, update_object};
use super::{Call, ok};
use crate::apiserver::http::Body;
use crate::apiserver::objects::{self, meta_mut, now_rfc3339};
use crate::apiserver::patch;
use crate::apiserver::selectors::LabelSelector;
use crate::apiserver::status::{ApiError, ApiResult};

/// The autoscaling/v1 Scale of a scalable object.
fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    let selector = LabelSelector::from_object(&obj["spec"]["selector"])
        .map(|s| s.to_string_form())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

pub async fn get_scale(call: &Call) -> ApiResult<Response<Body>> {
    let (obj, _) = call.current().await?;
    ok(200, &scale_of(&obj))
}

pub async fn update_scale(call: &Call, is_patch: bool) -> ApiResult<Response<Body>> {
    let kind = if is_patch {
        Some(patch::PatchKind::from_content_type(&call.content_type)?)
    } else {
        None
    };
    let body = if is_patch {
        None
    } else {
        Some(call.parse_body()?)
    };
    let obj = update_object(
        &call.api,
        call.def,
        &call.key(),
        Part::Main,
        call.query.write(),
        |old| {
            let current = scale_of(old);
            let wanted = match (&kind, &body) {
                (Some(k), _) => patch::apply(*k, "Scale", &current, &call.body)?,
                (None, Some(b)) => b.clone(),
                _ => current.clone(),
            };
            if let Some(rv) = wanted["metadata"]["resourceVersion"]
                .as_str()
                .filter(|s| !s.is_empty())
                && Some(rv) != old["metadata"]["resourceVersion"].as_str()
            {
                return Err(ApiError::stale(
                    call.def.group,
                    call.def.plural,
                    call.name(),
                ));
            }
            let replicas = &wanted["spec"]["replicas"];
            let n = match replicas {
                Value::Null => 0,
                v => v.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::invalid(
                        "autoscaling",
                        "Scale",
                        call.name(),
                        vec![crate::apiserver::status::Cause::invalid(
                            "spec.replicas",
                            v,
                            "must be greater than or equal to 0",
                        )],
                    )
                })?,
            };
            let mut new = old.clone();
            new["spec"]["replicas"] = json!(n);
            Ok(new)
        },
    )
    .await?;
    ok(200, &scale_of(&obj))
}

/// pods/binding: assigns a pod to a node (what the scheduler does).
pub async fn bind(call: &Call) -> ApiResult<Response<Body>> {
    let binding = objects::normalize("Binding", call.parse_body()?)
        .map_err(|e| ApiError::bad_request(format!("error decoding Binding: {e}")))?;
    let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            call.name(),
            vec![crate::apiserver::status::Cause::required("target.name")],
        ));
    }
    let pod_name = call.name().to_string();
    update_object(
        &call.api,
        call.def,
        &call.key(),
        Part::Main,
        call.query.write(),
        |old| {
            if old["metadata"]["deletionTimestamp"].is_string() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &pod_name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            if let Some(current) = old["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &pod_name,
                    &format!("pod {pod_name} is already assigned to node {current:?}"),
                ));
            }
            let mut new = old.clone();
            new["spec"]["nodeName"] = json!(node);
            Ok(new)
        },
    )
    .await?;
    // The PodScheduled condition is status: written through the status part.
    update_object(&call.api, call.def, &call.key(), Part::Status, call.query.write(), |old| {
        let mut new = old.clone();
        let mut conds: Vec<Value> = old["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conds.retain(|c| c["type"] != "PodScheduled");
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}));
        new["status"]["conditions"] = Value::Array(conds);
        meta_mut(&mut new);
        Ok(new)
    })
    .await?;
    ok(
        201,
        &crate::apiserver::status::success("", "pods", &pod_name, ""),
    )
}

/// pods/log: proxied to the log endpoint of the agent on the pod's node
/// (`/containerLogs/<ns>/<pod>/<container>` at the node's InternalIP and kubelet port).
pub async fn pod_log(call: &Call) -> ApiResult<Response<Body>> {
    let (pod, _) = call.current().await?;
    let node_name = pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {} is not scheduled to a node yet",
                call.name()
            ))
        })?;
    let container = match call.query.get("container") {
        Some(c) => c.to_string(),
        None => match pod["spec"]["containers"].as_array().map(Vec::as_slice) {
            Some([only]) => only["name"].as_str().unwrap_or("").to_string(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {}",
                    call.name()
                )));
            }
        },
    };
    let nodes = crate::apiserver::registry::lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not registered"))?;
    let kv = call
        .api
        .store
        .get(
            &crate::apiserver::storage::key(nodes, None, node_name),
            None,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("", "nodes", node_name))?;
    let node = crate::apiserver::storage::decode(&kv)?;
    let ip = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name} reports no InternalIP")))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(crate::agent::node::KUBELET_PORT);
    let query = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for k in [
            "follow",
            "previous",
            "tailLines",
            "limitBytes",
            "timestamps",
            "sinceSeconds",
        ] {
            if let Some(v) = call.query.get(k) {
                q.append_pair(k, v);
            }
        }
        q.finish()
    };
    let path = format!(
        "/containerLogs/{}/{}/{container}?{query}",
        call.ns().unwrap_or(""),
        call.name(),
    );
    let (status, mut rx) = crate::agent::logs::fetch(ip, port, &path)
        .await
        .map_err(|e| ApiError::unavailable(format!("{e:#}")))?;
    if status != 200 {
        let mut msg = Vec::new();
        while let Some(b) = rx.recv().await {
            msg.extend_from_slice(&b);
        }
        let msg = String::from_utf8_lossy(&msg).trim().to_string();
        return Err(if status < 500 {
            ApiError::bad_request(msg)
        } else {
            ApiError::internal(msg)
        });
    }
    Ok(crate::apiserver::http::streaming("text/plain", rx))
}

pub fn node_agent_missing(call: &Call) -> ApiError {
    ApiError::unavailable(format!(
        "pods/{} is not available: no node agent serves pod {}/{} (the cluster agent does not run yet)",
        call.subresource.as_deref().unwrap_or(""),
        call.ns().unwrap_or(""),
        call.name()
    ))
}

/// serviceaccounts/token: a TokenRequest answered with a signed token for the account.
pub async fn token(call: &Call) -> ApiResult<Response<Body>> {
    let req = call.parse_body()?;
    let (sa, _) = call.current().await?;
    let uid = sa["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let seconds = req["spec"]["expirationSeconds"].as_i64().unwrap_or(3600);
    if seconds < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            call.name(),
            vec![crate::apiserver::status::Cause::invalid(
                "spec.expirationSeconds",
                &json!(seconds),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let audiences: Vec<String> = req["spec"]["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    let audiences = if audiences.is_empty() {
        vec![crate::apiserver::tokens::ISSUER.to_string()]
    } else {
        audiences
    };
    let pod = crate::apiserver::tokens::bound_pod(&call.api, call.ns(), call.name(), &req["spec"])
        .await?;
    let (token, exp) = call.api.tokens.issue(
        call.ns().unwrap_or(""),
        call.name(),
        &uid,
        pod.as_ref()
            .map(|(name, uid)| crate::apiserver::tokens::BoundPod { name, uid }),
        &audiences,
        seconds,
    )?;
    let expires = jiff::Timestamp::from_second(exp)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut out = req.clone();
    out["apiVersion"] = json!("authentication.k8s.io/v1");
    out["kind"] = json!("TokenRequest");
    out["metadata"] =
        json!({"name": call.name(), "namespace": call.ns(), "creationTimestamp": now_rfc3339()});
    out["spec"]["audiences"] = json!(audiences);
    out["spec"]["expirationSeconds"] = json!(seconds);
    out["status"] = json!({"token": token, "expirationTimestamp": expires});
    ok(201, &out)
}
