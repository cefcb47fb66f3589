//! The server side of kubectl's port-forward protocol (`portforward.k8s.io`) on a SPDY
//! connection. For each local connection kubectl opens two streams with the same `port` and
//! `requestID` headers: `streamType: error` (which it half-closes at once and reads to the
//! end: text there is an error) and `streamType: data` (the bytes, both ways). Each pair is
//! served by dialling the port in the pod ([`Dial`]) and copying; when the pod side ends,
//! the data stream and then the error stream get FIN. PINGs (kubectl sends one every 10 s)
//! are echoed. There is no flow control: spdystream neither sends nor expects window
//! updates.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::spdy::{FLAG_FIN, Frame, FrameReader, FrameWriter, PROTOCOL_ERROR, header};

pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connection to a port in the pod.
pub type Conn = Box<dyn Io>;
/// Opens a connection to a port in the pod, or says why it cannot.
pub type Dial =
    Arc<dyn Fn(u16) -> Pin<Box<dyn Future<Output = Result<Conn, String>> + Send>> + Send + Sync>;

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
}

/// Serves one port-forward session on `io` until kubectl closes it.
pub async fn serve(io: impl Io + 'static, dial: Dial) {
    let (r, mut w) = tokio::io::split(io);
    let (out, mut out_rx) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(async move {
        let mut enc = FrameWriter::new();
        while let Some(f) = out_rx.recv().await {
            let bytes = enc.encode(&f);
            if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut frames = FrameReader::new(r);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Where the client's data for a data stream goes (dropped: EOF).
    let mut inbound: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut forwards = JoinSet::new();
    let mut by_stream: HashMap<u32, tokio::task::AbortHandle> = HashMap::new();
    loop {
        let frame = match frames.next().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("port-forward session: {e}");
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id, headers, ..
            } => {
                let kind = header(&headers, "streamtype").unwrap_or("");
                let port = header(&headers, "port").and_then(|p| p.parse::<u16>().ok());
                let request = header(&headers, "requestid").unwrap_or("").to_string();
                let (Some(port), "error" | "data") = (port.filter(|p| *p > 0), kind) else {
                    tracing::debug!(?headers, "port-forward: refusing a stream");
                    let _ = out
                        .send(Frame::RstStream {
                            stream_id,
                            status: PROTOCOL_ERROR,
                        })
                        .await;
                    continue;
                };
                let _ = out
                    .send(Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Vec::new(),
                    })
                    .await;
                let pair = pairs.entry(request.clone()).or_default();
                pair.port = port;
                if kind == "error" {
                    pair.error = Some(stream_id);
                } else {
                    pair.data = Some(stream_id);
                }
                if let (Some(error), Some(data)) = (pair.error, pair.data) {
                    let port = pair.port;
                    pairs.remove(&request);
                    let (tx, rx) = mpsc::channel(64);
                    inbound.insert(data, tx);
                    let handle =
                        forwards.spawn(forward(dial.clone(), port, error, data, rx, out.clone()));
                    by_stream.insert(data, handle);
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if !data.is_empty()
                    && let Some(tx) = inbound.get(&stream_id)
                    && tx.send(data).await.is_err()
                {
                    inbound.remove(&stream_id);
                }
                if flags & FLAG_FIN != 0 {
                    inbound.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                inbound.remove(&stream_id);
                if let Some(h) = by_stream.remove(&stream_id) {
                    h.abort();
                }
            }
            // Odd ids are the client's pings, which the server echoes.
            Frame::Ping { id } if id % 2 == 1 => {
                let _ = out.send(Frame::Ping { id }).await;
            }
            Frame::GoAway { .. } => break,
            _ => {}
        }
        // Forwards that finished need no abort handle any more.
        while forwards.try_join_next().is_some() {}
        by_stream.retain(|_, h| !h.is_finished());
    }
    forwards.abort_all();
    drop(out);
    let _ = writer.await;
}

/// Serves one forwarded connection: dials `port`, then copies both ways.
async fn forward(
    dial: Dial,
    port: u16,
    error: u32,
    data: u32,
    mut from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Frame>,
) {
    let fin = |stream_id| Frame::Data {
        stream_id,
        flags: FLAG_FIN,
        data: Bytes::new(),
    };
    let conn = match dial(port).await {
        Ok(c) => c,
        Err(msg) => {
            tracing::info!(port, "port-forward: {msg}");
            let _ = out
                .send(Frame::Data {
                    stream_id: error,
                    flags: 0,
                    data: Bytes::from(msg),
                })
                .await;
            let _ = out.send(fin(data)).await;
            let _ = out.send(fin(error)).await;
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(conn);
    let to_pod = async move {
        while let Some(b) = from_client.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        // kubectl closed its side: the pod's end reads EOF.
        let _ = wr.shutdown().await;
    };
    let out2 = out.clone();
    let from_pod = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let f = Frame::Data {
                        stream_id: data,
                        flags: 0,
                        data: Bytes::copy_from_slice(&buf[..n]),
                    };
                    if out2.send(f).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = out2.send(fin(data)).await;
        let _ = out2.send(fin(error)).await;
    };
    // The pod's side ending ends the connection (kubectl then closes its own); after the
    // client's EOF the pod's answer is still relayed.
    tokio::pin!(to_pod);
    tokio::pin!(from_pod);
    let mut input_done = false;
    loop {
        tokio::select! {
            _ = &mut from_pod => break,
            _ = &mut to_pod, if !input_done => input_done = true,
        }
    }
}
