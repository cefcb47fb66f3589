//! `kubectl port-forward` on the node: `/portForward/<namespace>/<pod>/<pod uid>?port=N`
//! on the kubelet port, open to the API server alone. The API server terminates kubectl's
//! SPDY session and asks here once per forwarded connection: this end connects to
//! 127.0.0.1:N inside the pod's network namespace (the one of a running container's process,
//! so bridge and host networking are the same case) and answers `101 Switching Protocols`
//! (`Upgrade: ros-portforward`); from then on the connection carries the TCP stream's bytes
//! both ways. A connection that cannot be made is a plain error answer whose text kubectl
//! shows.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::plain;
use crate::agent::logs::ChannelBody;
use crate::agent::runtime::{ContainerRuntime, TaskState};
use containerd_client::services::v1::GetRequest;
use containerd_client::services::v1::tasks_client::TasksClient;

/// The `Upgrade` token of the API server's per-connection requests.
pub const UPGRADE: &str = "ros-portforward";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The path the API server asks for to reach `port` in pod `uid`.
pub fn path(ns: &str, pod: &str, uid: &str, port: u16) -> String {
    format!("/portForward/{ns}/{pod}/{uid}?port={port}")
}

pub(super) async fn handle(
    runtime: &ContainerRuntime,
    mut req: Request<Incoming>,
) -> Response<ChannelBody> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["portForward", _ns, pod, uid] = parts.as_slice() else {
        return plain(StatusCode::NOT_FOUND, format!("no such endpoint: {path}\n"));
    };
    let port = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "port")
        .and_then(|(_, v)| v.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let Some(port) = port else {
        return plain(
            StatusCode::BAD_REQUEST,
            "port-forward needs ?port= with a port number between 1 and 65535\n".into(),
        );
    };
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !upgrade.eq_ignore_ascii_case(UPGRADE) {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("port-forward needs Upgrade: {UPGRADE}\n"),
        );
    }
    let netns = match pod_netns(runtime, uid).await {
        Ok(p) => p,
        Err(msg) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("error forwarding port {port} to pod {pod}, uid {uid}: {msg}\n"),
            );
        }
    };
    let connected = tokio::task::spawn_blocking({
        let netns = netns.clone();
        move || {
            crate::agent::network::netns::run_in(Some(&netns), move || {
                let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                Ok(std::net::TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)?)
            })
        }
    })
    .await;
    let tcp = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!(
                    "error forwarding port {port} to pod {pod}, uid {uid}: failed to connect to localhost:{port} inside namespace {}: {e:#}\n",
                    netns.display()
                ),
            );
        }
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let tcp = match tcp
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(tcp))
    {
        Ok(t) => t,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let mut tcp = tcp;
        match on_upgrade.await {
            Ok(up) => {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(up), &mut tcp).await;
            }
            Err(e) => tracing::debug!("port-forward upgrade: {e}"),
        }
    });
    let mut r = Response::new(ChannelBody(tokio::sync::mpsc::channel(1).1));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut()
        .insert(header::CONNECTION, "Upgrade".parse().expect("static"));
    r.headers_mut()
        .insert(header::UPGRADE, UPGRADE.parse().expect("static"));
    r
}

/// The network namespace of pod `uid`: that of the process of one of its running
/// containers.
async fn pod_netns(runtime: &ContainerRuntime, uid: &str) -> Result<PathBuf, String> {
    let containers = runtime.list().await.map_err(|e| format!("{e:#}"))?;
    for c in containers.iter().filter(|c| c.pod_uid == uid) {
        if runtime.task_state(&c.id).await.ok() != Some(TaskState::Running) {
            continue;
        }
        let mut request = tonic::Request::new(GetRequest {
            container_id: c.id.clone(),
            exec_id: String::new(),
        });
        if let Ok(v) = runtime.namespace().parse() {
            request.metadata_mut().insert("containerd-namespace", v);
        }
        let pid = TasksClient::new(runtime.channel())
            .get(request)
            .await
            .ok()
            .and_then(|r| r.into_inner().process)
            .map(|p| p.pid)
            .filter(|p| *p > 0);
        if let Some(pid) = pid {
            return Ok(PathBuf::from(format!("/proc/{pid}/ns/net")));
        }
    }
    Err("the pod has no running container on this node".into())
}
