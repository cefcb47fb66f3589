//! One probe attempt: exec (a process in the container through containerd's task Exec,
//! success on exit 0), httpGet (a status from 200 to 399) or tcpSocket (a connection).

use std::time::Duration;

use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest, StartRequest,
    WaitRequest, containers_client::ContainersClient, tasks_client::TasksClient,
};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use prost_types::Any;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Request;

use crate::agent::runtime::ContainerRuntime;

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// `Err` carries why the probe failed, as the kubelet words it in events.
pub async fn run(
    probe: &Probe,
    runtime: &ContainerRuntime,
    id: &str,
    c: &Container,
    ip: &str,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(e) = &probe.exec {
        let command = e.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err("exec probe without a command".into());
        }
        return exec(runtime, id, &command, timeout).await;
    }
    if let Some(h) = &probe.http_get {
        let port = port(&h.port, c)?;
        let host = h
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or(ip.to_string());
        let path = h.path.clone().unwrap_or_else(|| "/".to_string());
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect();
        return tokio::time::timeout(timeout, http_get(&host, port, &path, &headers))
            .await
            .unwrap_or_else(|_| Err(format!("Get \"http://{host}:{port}{path}\": timeout")));
    }
    if let Some(t) = &probe.tcp_socket {
        let port = port(&t.port, c)?;
        let host = t
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or(ip.to_string());
        let addr = format!("{host}:{port}");
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
            Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
        };
    }
    Err("probe has no handler (exec, httpGet, tcpSocket)".into())
}

/// A port number, or a named port of the container.
fn port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n}: out of range")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|x| x.name.as_deref() == Some(name.as_str()))
            .and_then(|x| u16::try_from(x.container_port).ok())
            .ok_or_else(|| format!("port {name:?}: no such named port on the container")),
    }
}

async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let url = format!("http://{host}:{port}{path}");
    let mut s = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/{}\r\nAccept: */*\r\nConnection: close\r\n",
        crate::version::major_minor()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

fn req<T>(ns: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = ns.parse() {
        r.metadata_mut().insert("containerd-namespace", v);
    }
    r
}

/// Runs `command` in the container's task with the container's own process settings (user,
/// env, cwd, capabilities) and no stdio; success is exit code 0.
async fn exec(
    runtime: &ContainerRuntime,
    id: &str,
    command: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let ns = runtime.namespace().to_string();
    let channel = runtime.channel();
    let container = ContainersClient::new(channel.clone())
        .get(req(&ns, GetContainerRequest { id: id.to_string() }))
        .await
        .map_err(|s| format!("container {id}: {}", s.message()))?
        .into_inner()
        .container
        .ok_or_else(|| format!("container {id}: empty reply"))?;
    let spec: Value = container
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .unwrap_or(Value::Null);
    let mut process = spec["process"].clone();
    if !process.is_object() {
        process = serde_json::json!({"user": {"uid": 0, "gid": 0}, "cwd": "/"});
    }
    process["args"] = serde_json::json!(command);
    process["terminal"] = serde_json::json!(false);
    let exec_id = format!("probe-{:016x}", rand::random::<u64>());
    let mut tasks = TasksClient::new(channel);
    tasks
        .exec(req(
            &ns,
            ExecProcessRequest {
                container_id: id.to_string(),
                stdin: String::new(),
                stdout: String::new(),
                stderr: String::new(),
                terminal: false,
                spec: Some(Any {
                    type_url: PROCESS_TYPE_URL.to_string(),
                    value: serde_json::to_vec(&process).unwrap_or_default(),
                }),
                exec_id: exec_id.clone(),
            },
        ))
        .await
        .map_err(|s| format!("exec in {id}: {}", s.message()))?;
    let result = async {
        // Wait is registered before Start so a fast exit is not missed.
        let mut waiter = tasks.clone();
        let wait = tokio::spawn({
            let r = req(
                &ns,
                WaitRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.clone(),
                },
            );
            async move { waiter.wait(r).await }
        });
        tasks
            .start(req(
                &ns,
                StartRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.clone(),
                },
            ))
            .await
            .map_err(|s| format!("starting exec in {id}: {}", s.message()))?;
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(Ok(r))) => match r.into_inner().exit_status {
                0 => Ok(()),
                code => Err(format!("command {command:?} exited with {code}")),
            },
            Ok(Ok(Err(s))) => Err(format!("waiting for exec in {id}: {}", s.message())),
            Ok(Err(e)) => Err(format!("waiting for exec in {id}: {e}")),
            Err(_) => {
                let _ = tasks
                    .kill(req(
                        &ns,
                        KillRequest {
                            container_id: id.to_string(),
                            exec_id: exec_id.clone(),
                            signal: 9,
                            all: false,
                        },
                    ))
                    .await;
                Err(format!(
                    "command {command:?} timed out after {}s",
                    timeout.as_secs()
                ))
            }
        }
    }
    .await;
    let _ = tasks
        .delete_process(req(
            &ns,
            DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id,
            },
        ))
        .await;
    result
}
