//! Health checks of running services: an HTTP(S) GET that must answer 2xx, polled while the
//! process runs. A service with a check counts as up for its dependants only once healthy.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// `http://host:port/path` or `https://host:port/path`.
    pub url: String,
    /// CA (PEM file) the HTTPS server's certificate must chain to; required for https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
}

fn default_interval() -> u64 {
    5
}

/// While checks fail, they are repeated this often (a starting service becomes healthy fast).
pub const STARTING_INTERVAL: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_secs(5);

struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!(
            "health url {url:?}: must start with http:// or https://"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("health url {url:?}: unclosed ["))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("health url {url:?}: bad port"))?,
                None => default_port,
            };
            (h.to_string(), port)
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| format!("health url {url:?}: bad port"))?,
            ),
            None => (authority.to_string(), default_port),
        },
    };
    Ok(Target {
        tls,
        host,
        port,
        path: path.to_string(),
    })
}

fn tls_connector(ca_file: &str) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(ca_file).map_err(|e| format!("health caFile {ca_file}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("health caFile {ca_file}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("health caFile {ca_file}: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Runs one check: Ok when the server answers with a 2xx status.
pub async fn check(hc: &HealthCheck) -> Result<(), String> {
    tokio::time::timeout(TIMEOUT, check_inner(hc))
        .await
        .unwrap_or_else(|_| Err(format!("{}: no answer within {TIMEOUT:?}", hc.url)))
}

async fn check_inner(hc: &HealthCheck) -> Result<(), String> {
    let t = parse_url(&hc.url)?;
    let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("{}: {e}", hc.url))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: machined-health\r\n\r\n",
        t.path, t.host
    );
    let mut answer = Vec::new();
    if t.tls {
        let ca = hc
            .ca_file
            .as_deref()
            .ok_or_else(|| format!("{}: https needs caFile", hc.url))?;
        let name = rustls::pki_types::ServerName::try_from(t.host.clone())
            .map_err(|e| format!("{}: {e}", hc.url))?;
        let mut stream = tls_connector(ca)?
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{}: TLS: {e}", hc.url))?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("{}: {e}", hc.url))?;
        read_status_line(&mut stream, &mut answer).await?;
    } else {
        let mut stream = tcp;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("{}: {e}", hc.url))?;
        read_status_line(&mut stream, &mut answer).await?;
    }
    let line = String::from_utf8_lossy(&answer);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("{}: not an HTTP answer: {line:?}", hc.url))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("{}: HTTP {status}", hc.url))
    }
}

/// Reads until the end of the first line (the status line).
async fn read_status_line(
    stream: &mut (impl AsyncReadExt + Unpin),
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut buf = [0u8; 256];
    while !out.contains(&b'\n') && out.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    if let Some(end) = out.iter().position(|b| *b == b'\n') {
        out.truncate(end);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve_once(answer: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    fn hc(port: u16, path: &str) -> HealthCheck {
        HealthCheck {
            url: format!("http://127.0.0.1:{port}{path}"),
            ca_file: None,
            interval_seconds: 1,
        }
    }

    #[tokio::test]
    async fn two_hundred_is_healthy_and_five_hundred_is_not() {
        let ok = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        check(&hc(ok, "/readyz")).await.unwrap();
        let bad = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let err = check(&hc(bad, "/readyz")).await.unwrap_err();
        assert!(err.contains("HTTP 503"), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_is_unhealthy() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(check(&hc(port, "/")).await.is_err());
    }

    #[test]
    fn urls() {
        let t = parse_url("https://[::1]:6443/readyz").unwrap();
        assert!(t.tls);
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 6443, "/readyz")
        );
        let t = parse_url("http://localhost").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        assert!(parse_url("ftp://x").is_err());
    }
}
