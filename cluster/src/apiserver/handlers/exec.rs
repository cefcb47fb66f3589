//! pods/exec and pods/attach: checked here (authorization as `create`, the pod, its
//! container, its node), then the client's WebSocket is proxied byte for byte to the
//! matching endpoint of the agent on the pod's node (`crate::agent::exec`), which answers the
//! upgrade itself. pods/portforward is checked the same way and served by
//! [`super::portforward`].
//!
//! Only WebSocket clients (`v5.channel.k8s.io`, `v4.channel.k8s.io`, `channel.k8s.io`; kubectl
//! 1.30 and newer) are served for exec and attach: SPDY upgrades get a 400 that says so.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::agent::exec::channels;
use crate::apiserver::ApiServer;
use crate::apiserver::auth::{Attributes, UserInfo};
use crate::apiserver::http::{Body, full};
use crate::apiserver::request::ResourceRequest;
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::{authz, registry, storage};

const STREAMING: [&str; 3] = ["exec", "attach", "portforward"];

/// Whether `r` is a streaming subresource of a pod (served here, on the raw request).
pub fn is_streaming(r: &ResourceRequest) -> bool {
    r.def.group.is_empty()
        && r.def.plural == "pods"
        && r.subresource
            .as_deref()
            .is_some_and(|s| STREAMING.contains(&s))
}

/// What the query asks for; `command` repeats, one argument each.
struct ExecOptions {
    command: Vec<String>,
    container: Option<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn exec_options(query: &str) -> ExecOptions {
    let mut o = ExecOptions {
        command: Vec::new(),
        container: None,
        stdin: false,
        stdout: false,
        stderr: false,
        tty: false,
    };
    let flag = |v: &str| matches!(v, "1" | "true" | "True");
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "command" => o.command.push(v.into_owned()),
            "container" if !v.is_empty() => o.container = Some(v.into_owned()),
            "stdin" => o.stdin = flag(&v),
            "stdout" => o.stdout = flag(&v),
            "stderr" => o.stderr = flag(&v),
            "tty" => o.tty = flag(&v),
            _ => {}
        }
    }
    o
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}

/// The container to exec in: the one asked for (a container or init container of the pod),
/// or the pod's only container.
fn pick_container(pod: &Value, pod_name: &str, asked: Option<&str>) -> ApiResult<String> {
    let containers = names(&pod["spec"]["containers"]);
    let init = names(&pod["spec"]["initContainers"]);
    match asked {
        Some(c) if containers.iter().chain(&init).any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

/// Refuses a completed pod (`what`: "exec into a container", ...).
pub(super) fn check_not_completed(pod: &Value, what: &str) -> ApiResult<()> {
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot {what} in a completed pod; current phase is {phase}"
        )));
    }
    Ok(())
}

/// Refuses containers that are not running (per the pod's status).
fn check_running(pod: &Value, pod_name: &str, container: &str, what: &str) -> ApiResult<()> {
    check_not_completed(pod, what)?;
    let status = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|k| pod["status"][*k].as_array().into_iter().flatten())
        .find(|s| s["name"] == container);
    let state = status.map(|s| &s["state"]);
    if state.is_some_and(|s| s["running"].is_object()) {
        return Ok(());
    }
    let why = match state {
        Some(s) if s["waiting"].is_object() => format!(
            "is waiting ({})",
            s["waiting"]["reason"].as_str().unwrap_or("unknown reason")
        ),
        Some(s) if s["terminated"].is_object() => format!(
            "has terminated ({})",
            s["terminated"]["reason"]
                .as_str()
                .unwrap_or("unknown reason")
        ),
        _ => "has not started".to_string(),
    };
    Err(ApiError::bad_request(format!(
        "container not running: container \"{container}\" in pod \"{pod_name}\" {why}"
    )))
}

/// The InternalIP and kubelet port the node reports.
pub(super) async fn kubelet_address(api: &ApiServer, node_name: &str) -> ApiResult<(String, u16)> {
    let nodes = registry::lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not registered"))?;
    let kv = api
        .store
        .get(&storage::key(nodes, None, node_name), None)
        .await?
        .ok_or_else(|| ApiError::not_found("", "nodes", node_name))?;
    let node = storage::decode(&kv)?;
    let ip = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name} reports no InternalIP")))?
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(crate::agent::node::KUBELET_PORT);
    Ok((ip, port))
}

/// The certificate chain and key the API server presents to node agents.
pub(super) fn node_client(
    api: &ApiServer,
) -> ApiResult<(
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = api
        .node_client
        .get()
        .ok_or_else(|| ApiError::internal("the API server has no client certificate for nodes"))?;
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::internal(format!("the node client certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| ApiError::internal(format!("the node client key: {e}")))?;
    Ok((chain, key))
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Serves pods/exec, pods/attach and pods/portforward for an authenticated `user`.
pub async fn serve(
    api: Arc<ApiServer>,
    user: &UserInfo,
    r: ResourceRequest,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let sub = r.subresource.as_deref().unwrap_or("");
    let (Some(ns), Some(name)) = (r.namespace.as_deref(), r.name.as_deref()) else {
        return Err(ApiError::path_not_found(&format!(
            "pods/{sub} without a namespace and a name"
        )));
    };
    // Opening a stream into a pod is `create` whatever the method (GET for WebSockets).
    authz::check(
        &api,
        user,
        &Attributes {
            verb: "create",
            group: "",
            resource: "pods",
            subresource: Some(sub),
            namespace: Some(ns),
            name: Some(name),
        },
    )
    .await?;
    if !matches!(*req.method(), Method::GET | Method::POST) {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} pods/{sub})",
            req.method()
        )));
    }
    let kv = api
        .store
        .get(&storage::key(r.def, Some(ns), name), None)
        .await?
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let pod = storage::decode(&kv)?;
    match sub {
        "portforward" => super::portforward::serve(api, &pod, req).await,
        "attach" => {
            let o = exec_options(req.uri().query().unwrap_or(""));
            if !(o.stdin || o.stdout || o.stderr) {
                return Err(ApiError::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr",
                ));
            }
            let container = pick_container(&pod, name, o.container.as_deref())?;
            let node_name = node_of(&pod, name)?;
            check_running(&pod, name, &container, "attach a container")?;
            let stdin_once = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(
                    pod["spec"]["initContainers"]
                        .as_array()
                        .into_iter()
                        .flatten(),
                )
                .find(|c| c["name"] == container.as_str())
                .is_some_and(|c| c["stdinOnce"] == true);
            let query = {
                let mut q = form_urlencoded::Serializer::new(String::new());
                for (k, v) in [
                    ("stdin", o.stdin),
                    ("stdout", o.stdout),
                    ("stderr", o.stderr),
                    ("tty", o.tty),
                    ("stdinOnce", stdin_once),
                ] {
                    q.append_pair(k, if v { "true" } else { "false" });
                }
                q.finish()
            };
            let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
            let path = format!("/attach/{ns}/{name}/{uid}/{container}?{query}");
            proxy_websocket(&api, node_name, "attach", &path, req).await
        }
        _ => {
            let o = exec_options(req.uri().query().unwrap_or(""));
            if o.command.is_empty() {
                return Err(ApiError::bad_request("you must specify at least 1 command"));
            }
            if !(o.stdin || o.stdout || o.stderr) {
                return Err(ApiError::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr",
                ));
            }
            let container = pick_container(&pod, name, o.container.as_deref())?;
            let node_name = node_of(&pod, name)?;
            check_running(&pod, name, &container, "exec into a container")?;
            let query = {
                let mut q = form_urlencoded::Serializer::new(String::new());
                for c in &o.command {
                    q.append_pair("command", c);
                }
                for (k, v) in [
                    ("stdin", o.stdin),
                    ("stdout", o.stdout),
                    ("stderr", o.stderr),
                    ("tty", o.tty),
                ] {
                    q.append_pair(k, if v { "true" } else { "false" });
                }
                q.finish()
            };
            let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
            let path = format!("/exec/{ns}/{name}/{uid}/{container}?{query}");
            proxy_websocket(&api, node_name, "exec", &path, req).await
        }
    }
}

/// The node the pod is bound to.
pub(super) fn node_of<'a>(pod: &'a Value, name: &str) -> ApiResult<&'a str> {
    pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))
}

/// Proxies the client's WebSocket upgrade to `path` on the kubelet port of `node_name`.
async fn proxy_websocket(
    api: &ApiServer,
    node_name: &str,
    sub: &str,
    path: &str,
    mut req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    if !header_str(&req, header::UPGRADE).eq_ignore_ascii_case("websocket") {
        let asked = header_str(&req, header::UPGRADE);
        return Err(ApiError::bad_request(format!(
            "pods/{sub} needs a WebSocket upgrade (subprotocol {} or {}){}; use kubectl 1.30 or newer",
            channels::V5,
            channels::V4,
            if asked.is_empty() {
                String::new()
            } else {
                format!(", not {asked}: SPDY is not served")
            }
        )));
    }
    let offered = header_str(&req, header::SEC_WEBSOCKET_PROTOCOL);
    channels::negotiate(&offered).map_err(ApiError::bad_request)?;
    let key = header_str(&req, header::SEC_WEBSOCKET_KEY);
    if key.is_empty() {
        return Err(ApiError::bad_request(
            "the WebSocket upgrade has no Sec-WebSocket-Key",
        ));
    }
    let (ip, port) = kubelet_address(api, node_name).await?;
    let unavailable = |e: &dyn std::fmt::Display| {
        ApiError::unavailable(format!("{sub} on node {node_name} ({ip}:{port}): {e}"))
    };
    let tls = crate::agent::logs::connect(&ip, port, Some(node_client(api)?))
        .await
        .map_err(|e| unavailable(&format!("{e:#}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unavailable(&e))?;
    tokio::spawn(conn.with_upgrades());
    let mut upstream = Request::get(path)
        .header(header::HOST, ip.as_str())
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, key);
    if !offered.is_empty() {
        upstream = upstream.header(header::SEC_WEBSOCKET_PROTOCOL, offered);
    }
    let upstream = upstream
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut resp = sender
        .send_request(upstream)
        .await
        .map_err(|e| unavailable(&e))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(node_refusal(node_name, sub, resp).await);
    }
    let mut answer = Response::new(full(Bytes::new()));
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for h in [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_ACCEPT,
        header::SEC_WEBSOCKET_PROTOCOL,
    ] {
        if let Some(v) = resp.headers().get(&h) {
            answer.headers_mut().insert(h, v.clone());
        }
    }
    let from_client = hyper::upgrade::on(&mut req);
    let from_node = hyper::upgrade::on(&mut resp);
    let sub = sub.to_string();
    tokio::spawn(async move {
        match tokio::try_join!(from_client, from_node) {
            Ok((client, node)) => {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(node),
                )
                .await;
            }
            Err(e) => tracing::debug!("pods/{sub} upgrade: {e}"),
        }
    });
    Ok(answer)
}

/// The error for a node agent's non-101 answer: its text, as a client error when the
/// request was at fault.
pub(super) async fn node_refusal(node_name: &str, sub: &str, resp: Response<Incoming>) -> ApiError {
    let code = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let msg = String::from_utf8_lossy(&body).trim().to_string();
    if matches!(code.as_u16(), 401 | 403) {
        ApiError::internal(format!("node {node_name} refused the API server: {msg}"))
    } else if code.is_client_error() {
        ApiError::bad_request(msg)
    } else {
        ApiError::internal(format!("{sub} on node {node_name}: {msg}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "state": {"running": {}}},
                {"name": "b", "state": {"waiting": {"reason": "ContainerCreating"}}},
            ]},
        })
    }

    #[test]
    fn a_container_is_named_or_the_only_one() {
        let p = pod();
        assert_eq!(pick_container(&p, "p", Some("b")).unwrap(), "b");
        assert_eq!(pick_container(&p, "p", Some("i")).unwrap(), "i");
        let e = pick_container(&p, "p", Some("x")).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "container x is not valid for pod p")
        );
        let e = pick_container(&p, "p", None).unwrap_err();
        assert!(e.message.contains("choose one of: [a b]"), "{}", e.message);
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(pick_container(&one, "p", None).unwrap(), "only");
    }

    #[test]
    fn only_running_containers_take_an_exec() {
        let mut p = pod();
        let what = "exec into a container";
        assert!(check_running(&p, "p", "a", what).is_ok());
        let e = check_running(&p, "p", "b", what).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.starts_with("container not running")
                && e.message.contains("ContainerCreating"),
            "{}",
            e.message
        );
        assert!(check_running(&p, "p", "i", what).is_err());
        p["status"]["phase"] = json!("Succeeded");
        let e = check_running(&p, "p", "a", what).unwrap_err();
        assert_eq!(
            e.message,
            "cannot exec into a container in a completed pod; current phase is Succeeded"
        );
    }

    #[test]
    fn options_keep_every_command_argument() {
        let o = exec_options(
            "command=sh&command=-c&command=exit+3&container=main&stdin=true&stdout=true&tty=1",
        );
        assert_eq!(o.command, vec!["sh", "-c", "exit 3"]);
        assert_eq!(o.container.as_deref(), Some("main"));
        assert!(o.stdin && o.stdout && !o.stderr && o.tty);
    }
}
