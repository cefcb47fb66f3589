//! Raw HTTPS requests to a test's `cluster server`, for what kubectl cannot send: hostile
//! bodies, bogus query values, odd headers, half-sent requests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

/// Where the server is and how to reach it: as the kubeconfig's user, or with no certificate.
#[derive(Clone)]
pub struct Endpoint {
    pub authority: String,
    pub admin: Arc<rustls::ClientConfig>,
    pub anonymous: Arc<rustls::ClientConfig>,
}

/// A response: status code, headers (lowercase names) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

impl Endpoint {
    pub fn from_kubeconfig(kubeconfig: &Path) -> Endpoint {
        let k: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
        let b64 = |v: &Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap()
        };
        let cluster = &k["clusters"][0]["cluster"];
        let user = &k["users"][0]["user"];
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&b64(&cluster["certificate-authority-data"])) {
            roots.add(c.unwrap()).unwrap();
        }
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&b64(&user["client-certificate-data"]))
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_slice(&b64(&user["client-key-data"])).unwrap();
        let builder = || {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
        };
        Endpoint {
            authority: cluster["server"]
                .as_str()
                .unwrap()
                .trim_start_matches("https://")
                .to_string(),
            admin: Arc::new(builder().with_client_auth_cert(certs, key).unwrap()),
            anonymous: Arc::new(builder().with_no_client_auth()),
        }
    }

    /// A TLS connection (handshake done) with a read timeout, so a stuck server fails the
    /// test instead of hanging it.
    pub fn connect(
        &self,
        tls: &Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let tcp = self.tcp(timeout);
        let host = self.authority.rsplit_once(':').unwrap().0.to_string();
        let conn = rustls::ClientConnection::new(tls.clone(), ServerName::try_from(host).unwrap())
            .unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        stream
    }

    pub fn tcp(&self, timeout: Duration) -> TcpStream {
        let tcp = TcpStream::connect(&self.authority).unwrap();
        tcp.set_read_timeout(Some(timeout)).unwrap();
        tcp
    }

    /// One request on its own connection; `headers` are extra `Name: value` lines.
    pub fn request(
        &self,
        tls: &Arc<rustls::ClientConfig>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Reply {
        let mut s = self.connect(tls, timeout);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.authority,
            body.len()
        );
        for (k, v) in headers {
            head += &format!("{k}: {v}\r\n");
        }
        head += "\r\n";
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        s.flush().unwrap();
        let mut raw = Vec::new();
        if let Err(e) = s.read_to_end(&mut raw)
            && raw.is_empty()
        {
            panic!("{method} {path}: no answer: {e}");
        }
        parse_reply(&raw)
    }

    pub fn admin(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.request(
            &self.admin,
            method,
            path,
            headers,
            body,
            Duration::from_secs(30),
        )
    }

    pub fn anonymous(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.request(
            &self.anonymous,
            method,
            path,
            headers,
            body,
            Duration::from_secs(30),
        )
    }
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
}

/// Whether the server closed `stream` (end of file or reset) before `timeout` ran out.
pub fn closed_by_server(stream: &mut impl Read) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}
