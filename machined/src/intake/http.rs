//! A minimal HTTP/1.0 GET for `ros.config=http://...` (the config server is on the local
//! network; a full client is not worth its size in the image).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub fn get(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: not an http:// URL"))?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:80")
    };
    let mut stream =
        TcpStream::connect(&addr).map_err(|e| format!("{url}: connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host_port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{url}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8(raw).map_err(|_| format!("{url}: response is not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: malformed response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{url}: {status}"));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn fetches_body_from_local_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/yaml\r\n\r\nversion: v1alpha1\n")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        });
        let body = get(&format!("http://127.0.0.1:{port}/cp.yaml")).unwrap();
        assert_eq!(body, "version: v1alpha1\n");
        assert!(server.join().unwrap().starts_with("GET /cp.yaml HTTP/1.0"));
    }
}
