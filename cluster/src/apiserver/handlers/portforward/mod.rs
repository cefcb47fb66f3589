//! pods/portforward (`kubectl port-forward`). The API server terminates kubectl's SPDY/3.1
//! session itself ([`spdy`], [`session`]), reached either way kubectl 1.30+ dials:
//! - a WebSocket with subprotocol `SPDY/3.1+portforward.k8s.io` whose binary messages carry
//!   the SPDY byte stream (client-go's tunnelling dialer, tried first), or
//! - a plain HTTP upgrade to `SPDY/3.1` with `X-Stream-Protocol-Version: portforward.k8s.io`
//!   (the fallback).
//!
//! Every forwarded connection becomes one HTTPS request to the pod node's kubelet port
//! (`/portForward/...`, the API server's client certificate as for exec), upgraded to a
//! raw byte stream that the agent connects to 127.0.0.1:<port> in the pod's network
//! namespace (`crate::agent::exec::portforward`).

mod session;
mod spdy;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::exec::{check_not_completed, kubelet_address, node_client, node_of};
use crate::agent::exec::portforward as agent_side;
use crate::apiserver::ApiServer;
use crate::apiserver::http::{Body, full};
use crate::apiserver::status::{ApiError, ApiResult};
use session::{Conn, Dial};

/// The port-forward protocol kubectl asks for.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunnelled in WebSocket messages.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
const SPDY: &str = "SPDY/3.1";
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// Every comma-separated value of header `name`, over all its occurrences.
fn header_values(req: &Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// How the client asked to talk.
#[derive(Debug, PartialEq)]
enum Transport {
    /// SPDY in WebSocket binary messages; the WebSocket key.
    WebSocket(String),
    Spdy,
}

/// Picks the transport from the upgrade request, or says what is missing.
fn negotiate(
    upgrade: &str,
    subprotocols: &[String],
    spdy_protocols: &[String],
    key: &str,
) -> Result<Transport, String> {
    if upgrade.eq_ignore_ascii_case("websocket") {
        if !subprotocols.iter().any(|p| p == TUNNEL_PROTOCOL) {
            return Err(format!(
                "pods/portforward over WebSocket needs subprotocol {TUNNEL_PROTOCOL} (offered: {})",
                subprotocols.join(", ")
            ));
        }
        if key.is_empty() {
            return Err("the WebSocket upgrade has no Sec-WebSocket-Key".into());
        }
        return Ok(Transport::WebSocket(key.to_string()));
    }
    if upgrade.eq_ignore_ascii_case(SPDY) {
        if !spdy_protocols.iter().any(|p| p == PROTOCOL) {
            return Err(format!(
                "pods/portforward needs X-Stream-Protocol-Version {PROTOCOL} (offered: {})",
                spdy_protocols.join(", ")
            ));
        }
        return Ok(Transport::Spdy);
    }
    Err(format!(
        "pods/portforward needs an upgrade: a WebSocket with subprotocol {TUNNEL_PROTOCOL} or {SPDY}{}",
        if upgrade.is_empty() {
            String::new()
        } else {
            format!(" (not {upgrade})")
        }
    ))
}

/// Serves pods/portforward for `pod` (already authorized).
pub async fn serve(
    api: Arc<ApiServer>,
    pod: &Value,
    mut req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let transport = negotiate(
        &upgrade,
        &header_values(&req, header::SEC_WEBSOCKET_PROTOCOL.as_str()),
        &header_values(&req, PROTOCOL_HEADER),
        &key,
    )
    .map_err(ApiError::bad_request)?;
    check_not_completed(pod, "forward ports to a container")?;
    tracing::info!(
        pod = %name,
        namespace = %ns,
        "pods/portforward over {}",
        if matches!(transport, Transport::Spdy) { "SPDY" } else { "WebSocket" }
    );
    let node_name = node_of(pod, name)?.to_string();
    let (ip, port) = kubelet_address(&api, &node_name).await?;
    let (chain, key_der) = node_client(&api)?;
    let (ns, name, uid) = (ns.to_string(), name.to_string(), uid.to_string());
    let dial: Dial = Arc::new(move |pod_port| {
        let (ip, chain, key) = (ip.clone(), chain.clone(), key_der.clone_key());
        let path = agent_side::path(&ns, &name, &uid, pod_port);
        let node = node_name.clone();
        Box::pin(async move {
            dial_agent(&ip, port, (chain, key), &path)
                .await
                .map_err(|e| format!("{e} (node {node})"))
        })
    });
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut answer = Response::new(full(Bytes::new()));
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = answer.headers_mut();
    h.insert(header::CONNECTION, "Upgrade".parse().expect("static"));
    match transport {
        Transport::WebSocket(key) => {
            h.insert(header::UPGRADE, "websocket".parse().expect("static"));
            if let Ok(v) = derive_accept_key(key.as_bytes()).parse() {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                TUNNEL_PROTOCOL.parse().expect("static"),
            );
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(up) => {
                        let ws =
                            WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None)
                                .await;
                        session::serve(tunnel(ws), dial).await;
                    }
                    Err(e) => tracing::debug!("pods/portforward upgrade: {e}"),
                }
            });
        }
        Transport::Spdy => {
            h.insert(header::UPGRADE, SPDY.parse().expect("static"));
            h.insert(PROTOCOL_HEADER, PROTOCOL.parse().expect("static"));
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(up) => session::serve(TokioIo::new(up), dial).await,
                    Err(e) => tracing::debug!("pods/portforward upgrade: {e}"),
                }
            });
        }
    }
    Ok(answer)
}

/// The byte stream carried in `ws`'s binary messages (each direction ends with the
/// WebSocket's close).
fn tunnel<S>(ws: WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut messages) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(ours);
        let inbound = async move {
            while let Some(Ok(m)) = messages.next().await {
                let data = match m {
                    Message::Binary(b) => b,
                    Message::Close(_) => break,
                    _ => continue,
                };
                if wr.write_all(&data).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let m = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                        if sink.send(m).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let normal = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(normal))).await;
            let _ = sink.close().await;
        };
        tokio::join!(inbound, outbound);
    });
    theirs
}

/// One connection to a port of the pod through the node agent.
async fn dial_agent(
    ip: &str,
    port: u16,
    identity: (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    path: &str,
) -> Result<Conn, String> {
    let tls = crate::agent::logs::connect(ip, port, Some(identity))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP to the node agent at {ip}:{port}: {e}"))?;
    tokio::spawn(conn.with_upgrades());
    let req = Request::get(path)
        .header(header::HOST, ip)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, agent_side::UPGRADE)
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("the node agent at {ip}:{port}: {e}"))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(String::from_utf8_lossy(&body).trim().to_string());
    }
    let up = hyper::upgrade::on(&mut resp)
        .await
        .map_err(|e| format!("the node agent's upgrade: {e}"))?;
    Ok(Box::new(TokioIo::new(up)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn both_of_kubectls_dialers_are_understood() {
        assert_eq!(
            negotiate("websocket", &v(&[TUNNEL_PROTOCOL]), &[], "k"),
            Ok(Transport::WebSocket("k".into()))
        );
        assert_eq!(
            negotiate("SPDY/3.1", &[], &v(&["portforward.k8s.io"]), ""),
            Ok(Transport::Spdy)
        );
        let e = negotiate("websocket", &v(&["v5.channel.k8s.io"]), &[], "k").unwrap_err();
        assert!(e.contains(TUNNEL_PROTOCOL), "{e}");
        let e = negotiate("SPDY/3.1", &[], &v(&["v4.channel.k8s.io"]), "").unwrap_err();
        assert!(e.contains("X-Stream-Protocol-Version"), "{e}");
        let e = negotiate("", &[], &[], "").unwrap_err();
        assert!(e.contains("needs an upgrade"), "{e}");
    }
}
