//! `kubectl exec` on the node: the WebSocket endpoint
//! `/exec/<namespace>/<pod>/<pod uid>/<container>?command=..&stdin=..&stdout=..&stderr=..&tty=..`
//! on the kubelet port, which the API server's `pods/exec` is proxied to. The command runs in
//! the container's running task through containerd ([`process`]); its streams travel in
//! Kubernetes' channel framing ([`channels`]) and the session ends with the exit status on the
//! error stream.
//!
//! The same port serves `kubectl attach` (`/attach/...`, [`attach`]) and `kubectl
//! port-forward` (`/portForward/...`, [`portforward`]), open to the API server alone too.

pub mod attach;
pub mod auth;
pub mod channels;
pub mod portforward;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::logs::ChannelBody;
use super::runtime::{ContainerRuntime, PodContainer, TaskState};
use channels::Outcome;
use process::{Exec, ExecRequest};

/// How long output may still drain after the process exited (a background child can keep
/// the streams open forever).
const DRAIN: Duration = Duration::from_secs(5);

/// Serves exec sessions for the containers this agent runs.
pub struct ExecEndpoint {
    runtime: ContainerRuntime,
    /// Where each exec's FIFOs live (one directory per exec, removed afterwards).
    exec_root: PathBuf,
    /// The agent root: the containers' log files and stdin FIFOs, for attach.
    agent_root: PathBuf,
}

pub(crate) type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The WebSocket upgrade exec and attach both need: the client's key and the channel
/// subprotocol chosen from its offer, or the 400 to answer with.
pub(super) fn websocket_upgrade<B>(
    req: &Request<B>,
    what: &str,
) -> Result<(String, Option<&'static str>), Response<ChannelBody>> {
    let hdr = |n: header::HeaderName| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let key = hdr(header::SEC_WEBSOCKET_KEY);
    if !hdr(header::UPGRADE).eq_ignore_ascii_case("websocket") || key.is_empty() {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            format!(
                "{what} needs a WebSocket upgrade (subprotocol v5.channel.k8s.io or v4.channel.k8s.io)\n"
            ),
        ));
    }
    let protocol = channels::negotiate(&hdr(header::SEC_WEBSOCKET_PROTOCOL))
        .map_err(|e| plain(StatusCode::BAD_REQUEST, format!("{e}\n")))?;
    Ok((key, protocol))
}

pub(crate) fn plain(code: StatusCode, msg: String) -> Response<ChannelBody> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Bytes::from(msg));
    let mut r = Response::new(ChannelBody(rx));
    *r.status_mut() = code;
    r
}

pub(crate) fn flag(v: &str) -> bool {
    matches!(v, "1" | "true" | "True")
}

/// The command and streams from the query (`command` repeats, one argument each).
pub fn parse_query(query: &str) -> ExecRequest {
    let mut r = ExecRequest {
        command: Vec::new(),
        stdin: false,
        stdout: false,
        stderr: false,
        tty: false,
    };
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "command" => r.command.push(v.into_owned()),
            "stdin" | "input" => r.stdin = flag(&v),
            "stdout" | "output" => r.stdout = flag(&v),
            "stderr" | "error" => r.stderr = flag(&v),
            "tty" => r.tty = flag(&v),
            _ => {}
        }
    }
    r
}

impl ExecEndpoint {
    pub fn new(runtime: ContainerRuntime, agent_root: &std::path::Path) -> Self {
        ExecEndpoint {
            runtime,
            exec_root: agent_root.join("exec"),
            agent_root: agent_root.to_path_buf(),
        }
    }

    /// Answers one request for `/exec/...`: an error, or `101 Switching Protocols` with the
    /// session running on the upgraded connection. `authorized`: the connection brought the
    /// API server's certificate ([`auth::may_exec`]).
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        authorized: bool,
    ) -> Response<ChannelBody> {
        if !authorized {
            return plain(
                StatusCode::FORBIDDEN,
                "exec on this node is open only to the API server (a client certificate from the cluster CA in system:masters)\n".into(),
            );
        }
        let path = req.uri().path().to_string();
        if path.starts_with("/attach/") {
            return attach::handle(self, req).await;
        }
        if path.starts_with("/portForward/") {
            return portforward::handle(&self.runtime, req).await;
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let ["exec", _ns, pod, uid, container] = parts.as_slice() else {
            return plain(StatusCode::NOT_FOUND, format!("no such endpoint: {path}\n"));
        };
        let (pod, uid, container) = (pod.to_string(), uid.to_string(), container.to_string());
        let exec = parse_query(req.uri().query().unwrap_or(""));
        if exec.command.is_empty() {
            return plain(
                StatusCode::BAD_REQUEST,
                "you must specify at least 1 command\n".into(),
            );
        }
        let (key, protocol) = match websocket_upgrade(&req, "exec") {
            Ok(v) => v,
            Err(refused) => return refused,
        };
        let container_id = match self.running_container(&uid, &container).await {
            Ok(c) => c.id,
            Err((code, msg)) => {
                return plain(
                    code,
                    format!("{msg} (container \"{container}\" of pod \"{pod}\")\n"),
                );
            }
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let runtime = self.runtime.clone();
        let exec_root = self.exec_root.clone();
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!("exec in {container_id}: upgrade failed: {e}");
                    return;
                }
            };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            tracing::info!(container = %container_id, command = ?exec.command, "exec");
            session(
                ws,
                protocol.unwrap_or(channels::V1),
                &runtime,
                &exec_root,
                &container_id,
                exec,
            )
            .await;
        });
        switching_protocols(&key, protocol)
    }

    /// The newest attempt of `container` in pod `uid`, if it runs.
    pub(crate) async fn running_container(
        &self,
        uid: &str,
        container: &str,
    ) -> Result<PodContainer, (StatusCode, String)> {
        let internal = |e: anyhow::Error| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
        let mut attempts: Vec<_> = self
            .runtime
            .list()
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|c| c.pod_uid == uid && c.name == container)
            .collect();
        if attempts.is_empty() {
            return Err((StatusCode::NOT_FOUND, "container not found".into()));
        }
        attempts.sort_by_key(|c| std::cmp::Reverse(c.attempt));
        for c in attempts {
            if self.runtime.task_state(&c.id).await.map_err(internal)? == TaskState::Running {
                return Ok(c);
            }
        }
        Err((StatusCode::BAD_REQUEST, "container not running".into()))
    }
}

/// The `101 Switching Protocols` answer to a WebSocket upgrade with `key`, naming the
/// negotiated subprotocol.
pub(crate) fn switching_protocols(key: &str, protocol: Option<&str>) -> Response<ChannelBody> {
    let mut r = Response::new(ChannelBody(mpsc::channel(1).1));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, "Upgrade".parse().expect("static"));
    h.insert(header::UPGRADE, "websocket".parse().expect("static"));
    if let Ok(v) = derive_accept_key(key.as_bytes()).parse() {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol.and_then(|p| p.parse().ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    r
}

pub(crate) fn binary(channel: u8, data: &[u8]) -> Message {
    Message::Binary(Bytes::from(channels::frame(channel, data)))
}

/// Runs one exec over `ws`: starts the process, relays its streams, reports how it ended on
/// the error stream, closes the connection and removes the process.
async fn session(
    ws: Ws,
    protocol: &'static str,
    runtime: &ContainerRuntime,
    exec_root: &std::path::Path,
    container_id: &str,
    r: ExecRequest,
) {
    let (mut sink, mut incoming) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        // client-go takes only a Normal close (1000) as the end of the streams.
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = sink.close().await;
    });
    // Like the kubelet: an empty message on the first writable stream tells the client the
    // session is up.
    let first = if r.stdout {
        channels::STDOUT
    } else if r.stderr {
        channels::STDERR
    } else {
        channels::ERROR
    };
    let _ = out.send(binary(first, &[])).await;
    let outcome = match Exec::start(runtime, exec_root, container_id, &r).await {
        Err(e) => Some(Outcome::Failed(format!("{e:#}"))),
        Ok(exec) => relay(exec, &r, &mut incoming, &out).await,
    };
    if let Some(outcome) = outcome {
        tracing::info!(container = %container_id, ?outcome, "exec ended");
        if let Some(msg) = channels::status_message(protocol, &r.command, &outcome) {
            let _ = out.send(binary(channels::ERROR, &msg)).await;
        }
    }
    drop(out);
    let _ = writer.await;
}

/// Copies the process's output to the client and the client's input, resizes and stdin
/// close to the process until it exits (its outcome) or the client goes away (None: the
/// process is killed).
async fn relay(
    mut exec: Exec,
    r: &ExecRequest,
    incoming: &mut futures_util::stream::SplitStream<Ws>,
    out: &mpsc::Sender<Message>,
) -> Option<Outcome> {
    let mut pumps = tokio::task::JoinSet::new();
    for (rx, channel, wanted) in [
        (exec.stdout.take(), channels::STDOUT, r.stdout),
        (exec.stderr.take(), channels::STDERR, r.stderr),
    ] {
        if let Some(rx) = rx {
            pumps.spawn(pump(rx, wanted.then_some(channel), out.clone()));
        }
    }
    let (mut stdin_tx, stdin_task) = match exec.stdin.take() {
        Some(w) => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(tokio::spawn(feed_stdin(w, rx))))
        }
        None => (None, None),
    };
    let mut stdin_task = stdin_task;
    let mut closing: Option<tokio::task::JoinHandle<()>> = None;
    let wait = exec.wait();
    tokio::pin!(wait);
    let ended = loop {
        tokio::select! {
            status = &mut wait => break Some(status),
            m = incoming.next() => {
                let data: Bytes = match m {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Text(t))) => Bytes::copy_from_slice(t.as_bytes()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                    Some(Ok(_)) => continue,
                };
                let Some((&channel, payload)) = data.split_first() else { continue };
                match channel {
                    channels::STDIN => {
                        if let Some(tx) = &stdin_tx {
                            let _ = tx.send(Bytes::copy_from_slice(payload));
                        }
                    }
                    channels::RESIZE => {
                        if let Some((w, h)) = channels::parse_resize(payload)
                            && let Err(e) = exec.resize(w, h).await
                        {
                            tracing::debug!("{e:#}");
                        }
                    }
                    channels::CLOSE if payload.first() == Some(&channels::STDIN) => {
                        // Once the queued input is written and our end closed, the shim
                        // closes its own; apart from this loop, which must see the exit.
                        stdin_tx = None;
                        let written = stdin_task.take();
                        let close = exec.close_stdin();
                        closing = Some(tokio::spawn(async move {
                            if let Some(t) = written {
                                let _ = t.await;
                            }
                            close.await;
                        }));
                    }
                    _ => {}
                }
            }
        }
    };
    drop(stdin_tx);
    let outcome = match ended {
        Some(Ok(code)) => {
            // The output the process wrote before exiting still goes out, then the status.
            let _ =
                tokio::time::timeout(DRAIN, async { while pumps.join_next().await.is_some() {} })
                    .await;
            Some(Outcome::Exited(code))
        }
        Some(Err(e)) => {
            exec.kill().await;
            Some(Outcome::Failed(format!("{e:#}")))
        }
        None => {
            exec.kill().await;
            let _ = tokio::time::timeout(DRAIN, &mut wait).await;
            None
        }
    };
    pumps.abort_all();
    for t in [stdin_task, closing].into_iter().flatten() {
        t.abort();
    }
    exec.finish().await;
    outcome
}

/// Sends what arrives on a FIFO to the client as stream `channel` (or drops it: None), until
/// EOF.
async fn pump(mut rx: pipe::Receiver, channel: Option<u8>, out: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(channel) = channel
                    && out.send(binary(channel, &buf[..n])).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Writes the client's input to the stdin FIFO; ends (closing it: EOF) when the client closes
/// stdin.
async fn feed_stdin(mut w: pipe::Sender, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    while let Some(b) = rx.recv().await {
        if w.write_all(&b).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_gives_the_command_in_order_and_the_streams() {
        let r =
            parse_query("command=sh&command=-c&command=echo+a%26b&stdin=true&stdout=1&tty=false");
        assert_eq!(r.command, vec!["sh", "-c", "echo a&b"]);
        assert!(r.stdin && r.stdout && !r.stderr && !r.tty);
    }
}
