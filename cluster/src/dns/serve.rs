//! The listeners: UDP datagrams and TCP connections (two-byte length prefix, several
//! questions per connection) on the same address and port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::answer::Responder;
use super::udp_reply;

/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Binds UDP and TCP on `addr`; with port 0 both get the same free port.
pub async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("--dns-listen: binding UDP {addr}"))?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // With port 0 the UDP port may be taken for TCP: try another.
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(e).with_context(|| format!("--dns-listen: binding TCP {addr}")),
        }
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no port")))
    .with_context(|| format!("--dns-listen: no port free for both UDP and TCP on {addr}"))
}

pub async fn udp(socket: UdpSocket, responder: Arc<Responder>) {
    if let Err(e) = udp_reply::enable_destination_info(&socket) {
        // Without it replies still go out, but from the address the route picks.
        tracing::warn!("cluster DNS: cannot learn each question's destination address: {e}");
    }
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65535];
    loop {
        let question = match udp_reply::receive(&socket, &mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("cluster DNS: UDP receive: {e}");
                continue;
            }
        };
        let request = buf[..question.len].to_vec();
        let (socket, responder) = (socket.clone(), responder.clone());
        tokio::spawn(async move {
            let peer = question.peer;
            if let Some(reply) = responder.respond(&request, false).await
                && let Err(e) = udp_reply::send(&socket, &reply, peer, question.local).await
            {
                tracing::debug!("cluster DNS: answering {peer}: {e}");
            }
        });
    }
}

pub async fn tcp(listener: TcpListener, responder: Arc<Responder>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let responder = responder.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &responder).await {
                        tracing::debug!("cluster DNS: TCP {peer}: {e:#}");
                    }
                });
            }
            Err(e) => {
                tracing::debug!("cluster DNS: TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(mut stream: TcpStream, responder: &Responder) -> Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Ok(()),
        };
        let mut request = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut request))
            .await
            .context("reading a question")??;
        let Some(reply) = responder.respond(&request, true).await else {
            continue;
        };
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        stream.write_all(&framed).await?;
    }
}
