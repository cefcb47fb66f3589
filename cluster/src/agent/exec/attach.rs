//! `kubectl attach` on the node: the WebSocket endpoint
//! `/attach/<namespace>/<pod>/<pod uid>/<container>?stdin=..&stdout=..&stderr=..&tty=..&stdinOnce=..`
//! on the kubelet port (the API server's `pods/attach` is proxied to it).
//!
//! A container's stdout and stderr are appended by containerd's shim to its log file; attach
//! streams what is appended from the moment it attaches (as the kubelet does), until the
//! container exits or the client leaves. Both streams are in the one file, so they reach the
//! client as stdout. A container with `stdin: true` is created with a FIFO as its stdin
//! ([`stdin_fifo`]); the shim keeps a write end of it open, so the process sees EOF only when
//! stdin is closed on purpose: after the first session with `stdinOnce: true`. Without a
//! terminal in the container (`tty` is not given to the process yet), a `-t` session is a
//! plain one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::channels::{self, Outcome};
use super::{ExecEndpoint, Ws, binary, flag, plain, switching_protocols};
use crate::agent::logs::ChannelBody;
use crate::agent::runtime::ContainerRuntime;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{CloseIoRequest, WaitRequest};

/// How often the log file is checked for new output.
const POLL: Duration = Duration::from_millis(50);
/// After the container exited: output the shim still appends is sent until the file has
/// not grown for `SETTLE`, at most `DRAIN`.
const SETTLE: Duration = Duration::from_millis(300);
const DRAIN: Duration = Duration::from_secs(5);

/// The stdin FIFO of the container attempt whose log file is `log`.
pub fn stdin_fifo(log: &Path) -> PathBuf {
    log.with_extension("stdin")
}

/// Makes the stdin FIFO for the container attempt logging to `log` (kept when it exists:
/// the attempt's shim may hold it); its path.
pub fn create_stdin_fifo(log: &Path) -> Result<PathBuf> {
    let path = stdin_fifo(log);
    match nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(path),
        Err(e) => Err(e).with_context(|| format!("mkfifo {}", path.display())),
    }
}

/// The streams a client attaches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttachRequest {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// Close the container's stdin when this session's input ends (the container's
    /// `stdinOnce`, passed on by the API server).
    pub stdin_once: bool,
}

pub fn parse_query(query: &str) -> AttachRequest {
    let mut r = AttachRequest::default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "stdin" | "input" => r.stdin = flag(&v),
            "stdout" | "output" => r.stdout = flag(&v),
            "stderr" | "error" => r.stderr = flag(&v),
            "tty" => r.tty = flag(&v),
            "stdinOnce" => r.stdin_once = flag(&v),
            _ => {}
        }
    }
    r
}

/// The log file of attempt `attempt` (as the pod worker names it).
fn log_path(root: &Path, ns: &str, pod: &str, uid: &str, container: &str, attempt: u32) -> PathBuf {
    root.join("pods")
        .join(format!("{ns}_{pod}_{uid}"))
        .join(container)
        .join(format!("{attempt}.log"))
}

pub(super) async fn handle(ep: &ExecEndpoint, mut req: Request<Incoming>) -> Response<ChannelBody> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["attach", ns, pod, uid, container] = parts.as_slice() else {
        return plain(StatusCode::NOT_FOUND, format!("no such endpoint: {path}\n"));
    };
    let (ns, pod, uid, container) = (
        ns.to_string(),
        pod.to_string(),
        uid.to_string(),
        container.to_string(),
    );
    let r = parse_query(req.uri().query().unwrap_or(""));
    if !(r.stdin || r.stdout || r.stderr) {
        return plain(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr\n".into(),
        );
    }
    let (key, protocol) = match super::websocket_upgrade(&req, "attach") {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let c = match ep.running_container(&uid, &container).await {
        Ok(c) => c,
        Err((code, msg)) => {
            return plain(
                code,
                format!("{msg} (container \"{container}\" of pod \"{pod}\")\n"),
            );
        }
    };
    let log = log_path(&ep.agent_root, &ns, &pod, &uid, &container, c.attempt);
    let fifo = stdin_fifo(&log);
    let stdin = r.stdin && fifo.exists();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let runtime = ep.runtime.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!("attach to {}: upgrade failed: {e}", c.id);
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        tracing::info!(container = %c.id, ?r, "attach");
        let session = Session {
            runtime: &runtime,
            container_id: &c.id,
            log: &log,
            stdin: stdin.then_some(fifo.as_path()),
            r: &r,
        };
        session.run(ws, protocol.unwrap_or(channels::V1)).await;
    });
    switching_protocols(&key, protocol)
}

struct Session<'a> {
    runtime: &'a ContainerRuntime,
    container_id: &'a str,
    log: &'a Path,
    /// The container's stdin FIFO, when the client sends input and the container has one.
    stdin: Option<&'a Path>,
    r: &'a AttachRequest,
}

/// How a session ended.
enum End {
    ContainerExited,
    ClientLeft,
}

impl Session<'_> {
    async fn run(self, ws: Ws, protocol: &'static str) {
        let (mut sink, mut incoming) = ws.split();
        let (out, mut out_rx) = mpsc::channel::<Message>(16);
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
            let normal = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(normal))).await;
            let _ = sink.close().await;
        });
        let channel = if self.r.stdout {
            Some(channels::STDOUT)
        } else if self.r.stderr {
            Some(channels::STDERR)
        } else {
            None
        };
        let _ = out
            .send(binary(channel.unwrap_or(channels::ERROR), &[]))
            .await;
        let mut follow = Follow::start(self.log, channel).await;
        let mut stdin = match self.stdin {
            Some(p) => match pipe::OpenOptions::new().read_write(true).open_sender(p) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!("attach: opening {}: {e}", p.display());
                    None
                }
            },
            None => None,
        };
        let mut stdin_closed = false;
        let exited = self.wait();
        tokio::pin!(exited);
        let mut tick = tokio::time::interval(POLL);
        let end = loop {
            tokio::select! {
                _ = &mut exited => break End::ContainerExited,
                _ = tick.tick() => {
                    if !follow.send_new(&out).await {
                        break End::ClientLeft;
                    }
                }
                m = incoming.next() => {
                    let data: Bytes = match m {
                        Some(Ok(Message::Binary(b))) => b,
                        Some(Ok(Message::Text(t))) => Bytes::copy_from_slice(t.as_bytes()),
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break End::ClientLeft,
                        Some(Ok(_)) => continue,
                    };
                    let Some((&ch, payload)) = data.split_first() else { continue };
                    match ch {
                        channels::STDIN => {
                            if let Some(w) = &mut stdin
                                && let Err(e) = w.write_all(payload).await
                            {
                                tracing::debug!("attach stdin: {e}");
                                stdin = None;
                            }
                        }
                        channels::CLOSE if payload.first() == Some(&channels::STDIN) => {
                            stdin = None;
                            if !stdin_closed {
                                stdin_closed = true;
                                self.input_ended().await;
                            }
                        }
                        _ => {}
                    }
                }
            }
        };
        drop(stdin);
        match end {
            End::ContainerExited => {
                follow.drain(&out).await;
                tracing::info!(container = %self.container_id, "attach ended: the container exited");
                if let Some(msg) = channels::status_message(protocol, &[], &Outcome::Exited(0)) {
                    let _ = out.send(binary(channels::ERROR, &msg)).await;
                }
            }
            End::ClientLeft => {
                if !stdin_closed {
                    self.input_ended().await;
                }
            }
        }
        drop(out);
        let _ = writer.await;
    }

    /// The session's input is over: with `stdinOnce`, so is the container's.
    async fn input_ended(&self) {
        if !(self.r.stdin_once && self.stdin.is_some()) {
            return;
        }
        let request = req(
            self.runtime.namespace(),
            CloseIoRequest {
                container_id: self.container_id.to_string(),
                exec_id: String::new(),
                stdin: true,
            },
        );
        if let Err(s) = TasksClient::new(self.runtime.channel())
            .close_io(request)
            .await
        {
            tracing::debug!(
                "closing the stdin of {}: {}",
                self.container_id,
                s.message()
            );
        }
    }

    /// Resolves when the container's process exits (or containerd cannot say).
    fn wait(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut tasks = TasksClient::new(self.runtime.channel());
        let request = req(
            self.runtime.namespace(),
            WaitRequest {
                container_id: self.container_id.to_string(),
                exec_id: String::new(),
            },
        );
        async move {
            if let Err(s) = tasks.wait(request).await {
                tracing::debug!("waiting for the attached container: {}", s.message());
            }
        }
    }
}

fn req<T>(ns: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = ns.parse() {
        r.metadata_mut().insert("containerd-namespace", v);
    }
    r
}

/// Reads what is appended to the log file after the session started.
struct Follow {
    file: Option<tokio::fs::File>,
    offset: u64,
    /// The stream output goes to (None: the client wants no output).
    channel: Option<u8>,
}

impl Follow {
    async fn start(log: &Path, channel: Option<u8>) -> Follow {
        let file = tokio::fs::File::open(log).await.ok();
        let offset = match &file {
            Some(f) => f.metadata().await.map(|m| m.len()).unwrap_or(0),
            None => 0,
        };
        Follow {
            file,
            offset,
            channel,
        }
    }

    /// Sends the new output; false when the client is gone. Returns how much was sent.
    async fn send_new(&mut self, out: &mpsc::Sender<Message>) -> bool {
        self.read_new(out).await.is_some()
    }

    /// The number of new bytes sent, or None when the client is gone.
    async fn read_new(&mut self, out: &mpsc::Sender<Message>) -> Option<usize> {
        let (Some(channel), Some(f)) = (self.channel, &mut self.file) else {
            return Some(0);
        };
        let mut buf = Vec::new();
        if f.seek(std::io::SeekFrom::Start(self.offset)).await.is_err()
            || f.read_to_end(&mut buf).await.is_err()
        {
            return Some(0);
        }
        self.offset += buf.len() as u64;
        for chunk in buf.chunks(32 * 1024) {
            out.send(binary(channel, chunk)).await.ok()?;
        }
        Some(buf.len())
    }

    /// After the process exited: sends output until the file has settled.
    async fn drain(&mut self, out: &mpsc::Sender<Message>) {
        let deadline = tokio::time::Instant::now() + DRAIN;
        let mut quiet_since = tokio::time::Instant::now();
        while tokio::time::Instant::now() < deadline {
            match self.read_new(out).await {
                None => return,
                Some(0) if quiet_since.elapsed() >= SETTLE => return,
                Some(0) => {}
                Some(_) => quiet_since = tokio::time::Instant::now(),
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_the_streams_and_stdin_once() {
        let r = parse_query("stdin=true&stdout=1&stderr=false&tty=true&stdinOnce=true");
        assert_eq!(
            r,
            AttachRequest {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true,
                stdin_once: true
            }
        );
        assert_eq!(parse_query(""), AttachRequest::default());
    }

    #[test]
    fn the_stdin_fifo_sits_beside_the_log_and_survives_a_second_create() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let p = create_stdin_fifo(&log).unwrap();
        assert_eq!(p, dir.path().join("0.stdin"));
        assert_eq!(create_stdin_fifo(&log).unwrap(), p);
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&p).unwrap().file_type().is_fifo());
    }
}
