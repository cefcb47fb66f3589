//! The node's log endpoint (`/containerLogs/<ns>/<pod>/<container>`, HTTPS on the kubelet
//! port) over the log files the containers' stdout/stderr are appended to, and the client
//! the API server uses to proxy `pods/log` to it.
//!
//! Like kube-apiserver without --kubelet-certificate-authority, the client does not verify
//! the node's self-signed certificate; the endpoint does not authenticate the API server yet.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A response body fed by a channel; ends when the sender is dropped.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// The log files of container `container` of pod `ns/pod`, oldest attempt first.
pub fn attempts(root: &Path, ns: &str, pod: &str, container: &str) -> Vec<PathBuf> {
    let prefix = format!("{ns}_{pod}_");
    let mut out: Vec<(u32, PathBuf)> = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root.join("pods")) else {
        return out.into_iter().map(|(_, p)| p).collect();
    };
    for d in dirs.flatten() {
        if !d.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(d.path().join(container)) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if let Some(n) = name.strip_suffix(".log").and_then(|n| n.parse().ok()) {
                out.push((n, f.path()));
            }
        }
    }
    out.sort();
    out.into_iter().map(|(_, p)| p).collect()
}

/// The start of the last `n` lines of `data`.
pub fn tail_start(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

fn text(code: StatusCode, msg: String) -> Response<ChannelBody> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Bytes::from(msg));
    let mut r = Response::new(ChannelBody(rx));
    *r.status_mut() = code;
    r
}

async fn container_logs(root: &Path, path: &str, query: Option<&str>) -> Response<ChannelBody> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", ns, pod, container] = parts.as_slice() else {
        return text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}\n"));
    };
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let files = attempts(root, ns, pod, container);
    let pick = if flag("previous") {
        files.len().checked_sub(2).map(|i| files[i].clone())
    } else {
        files.last().cloned()
    };
    let Some(file) = pick else {
        let which = if flag("previous") {
            "previous terminated "
        } else {
            ""
        };
        return text(
            StatusCode::BAD_REQUEST,
            format!("{which}container \"{container}\" in pod \"{pod}\" has no logs\n"),
        );
    };
    let data = match tokio::fs::read(&file).await {
        Ok(d) => d,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}: {e}\n", file.display()),
            );
        }
    };
    let mut start = 0;
    if let Some(n) = q.get("tailLines").and_then(|v| v.parse().ok()) {
        start = tail_start(&data, n);
    }
    let mut first = data[start..].to_vec();
    if let Some(limit) = q.get("limitBytes").and_then(|v| v.parse::<usize>().ok()) {
        first.truncate(limit);
    }
    let (tx, rx) = mpsc::channel(16);
    let follow = flag("follow") && !flag("previous");
    let offset = data.len() as u64;
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        if follow {
            follow_file(&file, offset, &tx).await;
        }
    });
    Response::new(ChannelBody(rx))
}

/// Sends what is appended to `file` after `offset` until the client goes away, the file is
/// removed (pod deleted) or a newer attempt's file appears (container restarted).
async fn follow_file(file: &Path, mut offset: u64, tx: &mpsc::Sender<Bytes>) {
    let next = file
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse::<u32>().ok())
        .map(|n| file.with_file_name(format!("{}.log", n + 1)));
    loop {
        let Ok(mut f) = tokio::fs::File::open(file).await else {
            return;
        };
        let mut buf = Vec::new();
        if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
            && f.read_to_end(&mut buf).await.is_ok()
            && !buf.is_empty()
        {
            offset += buf.len() as u64;
            if tx.send(Bytes::from(buf)).await.is_err() {
                return;
            }
            continue;
        }
        if tx.is_closed() || next.as_ref().is_some_and(|n| n.exists()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TLS config with a fresh self-signed certificate for the node's names.
/// Client certificates are optional; those that come are verified against `client_ca` (the
/// API server's, which exec requires; see [`super::exec::auth`]).
pub fn self_signed(
    names: Vec<String>,
    client_ca: &[CertificateDer<'static>],
) -> Result<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(names)
        .context("making the log endpoint's certificate")?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let builder = if client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_cert_verifier(super::exec::auth::client_verifier(client_ca)?)
    };
    builder
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .context("loading the log endpoint's certificate")
}

/// Serves the log endpoint (and `/exec/...` through `exec`) on `listener` until the task is
/// dropped.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    root: PathBuf,
    exec: Arc<super::exec::ExecEndpoint>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let root = Arc::new(root);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let root = root.clone();
        let exec = exec.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let may_exec = super::exec::auth::may_exec(
                tls.get_ref().1.peer_certificates().and_then(|c| c.first()),
            );
            let service = service_fn(move |req: Request<Incoming>| {
                let root = root.clone();
                let exec = exec.clone();
                async move {
                    let path = req.uri().path();
                    let r = if ["/exec/", "/attach/", "/portForward/"]
                        .iter()
                        .any(|p| path.starts_with(p))
                    {
                        exec.handle(req, may_exec).await
                    } else if req.method() == http::Method::GET {
                        container_logs(&root, req.uri().path(), req.uri().query()).await
                    } else {
                        text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into())
                    };
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connection to a node's kubelet port (the node's certificate is not verified, see
/// the module comment).
/// `identity`: a client certificate chain and key to present.
pub async fn connect(
    host: &str,
    port: u16,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)));
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .context("the client certificate for the node agent")?,
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to the node agent at {host}:{port}"))?;
    let name =
        ServerName::try_from(host.to_string()).map_err(|e| anyhow!("node address {host}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS to the node agent at {host}:{port}"))?;
    Ok(tls)
}

/// GETs `path_and_query` from a node's log endpoint; the status and the body as a stream.
pub async fn fetch(
    host: &str,
    port: u16,
    path_and_query: &str,
) -> Result<(u16, mpsc::Receiver<Bytes>)> {
    let tls = connect(host, port, None).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .context("HTTP to the node agent")?;
    tokio::spawn(conn);
    let req = Request::get(path_and_query)
        .header(http::header::HOST, host)
        .body(http_body_util::Empty::<Bytes>::new())?;
    let resp = sender
        .send_request(req)
        .await
        .context("asking the node agent for logs")?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && tx.send(data).await.is_err()
            {
                return;
            }
        }
    });
    Ok((status, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_counts_lines_from_the_end() {
        let d = b"a\nb\nc\n";
        assert_eq!(&d[tail_start(d, 1)..], b"c\n");
        assert_eq!(&d[tail_start(d, 2)..], b"b\nc\n");
        assert_eq!(&d[tail_start(d, 10)..], b"a\nb\nc\n");
        assert_eq!(&d[tail_start(d, 0)..], b"");
        assert_eq!(&b"x\ny"[tail_start(b"x\ny", 1)..], b"y");
    }
}
