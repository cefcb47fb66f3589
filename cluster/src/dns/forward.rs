//! Forwarding questions outside the cluster zone to the upstream resolvers, over the
//! transport the client used (a truncated UDP answer goes back truncated, so the client
//! retries over TCP, which is forwarded over TCP).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer before the next is tried.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The nameservers of a resolv.conf text, on port 53 (addresses only; a zone index such as
/// `fe80::1%eth0` is dropped).
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The nameservers of the file at `path` (none when it cannot be read).
pub fn nameservers_of(path: &Path) -> Vec<SocketAddr> {
    match std::fs::read_to_string(path) {
        Ok(text) => nameservers(&text),
        Err(e) => {
            tracing::debug!("cluster DNS: reading {}: {e}", path.display());
            Vec::new()
        }
    }
}

/// Upstream resolvers, tried in order: the given ones, else the nameservers of a
/// resolv.conf read again for each question (the node's may change, e.g. with DHCP).
#[derive(Debug, Clone)]
pub struct Forwarder {
    pub fixed: Vec<SocketAddr>,
    pub resolv_conf: Option<PathBuf>,
    /// Our own address: never forwarded to (a loop).
    pub own: SocketAddr,
}

/// Whether `upstream` is this server listening on `own`.
fn is_own(upstream: SocketAddr, own: SocketAddr) -> bool {
    upstream.port() == own.port()
        && (upstream.ip() == own.ip() || (own.ip().is_unspecified() && upstream.ip().is_loopback()))
}

impl Forwarder {
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        let all = match (&self.resolv_conf, self.fixed.is_empty()) {
            (Some(path), true) => nameservers_of(path),
            _ => self.fixed.clone(),
        };
        all.into_iter().filter(|u| !is_own(*u, self.own)).collect()
    }

    /// Sends `query` (a whole DNS message) to the first upstream that answers; the answer
    /// carries the query's own ID.
    pub async fn forward(&self, query: &[u8], tcp: bool) -> Result<Vec<u8>> {
        if query.len() < 12 {
            bail!("a DNS message of {} bytes is too short", query.len());
        }
        let upstreams = self.upstreams();
        if upstreams.is_empty() {
            bail!("no upstream resolvers (--dns-upstream, or nameservers in resolv.conf)");
        }
        let mut last = None;
        for upstream in &upstreams {
            let attempt = if tcp {
                tokio::time::timeout(TIMEOUT, over_tcp(*upstream, query)).await
            } else {
                tokio::time::timeout(TIMEOUT, over_udp(*upstream, query)).await
            };
            match attempt {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => last = Some(e.context(format!("upstream {upstream}"))),
                Err(_) => last = Some(anyhow::anyhow!("upstream {upstream}: no answer in time")),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no upstream answered")))
    }
}

/// `query` with a fresh random ID (so answers to someone else's question are not taken).
fn with_id(query: &[u8], id: u16) -> Vec<u8> {
    let mut q = query.to_vec();
    q[..2].copy_from_slice(&id.to_be_bytes());
    q
}

fn restore_id(mut answer: Vec<u8>, query: &[u8]) -> Vec<u8> {
    answer[..2].copy_from_slice(&query[..2]);
    answer
}

async fn over_udp(upstream: SocketAddr, query: &[u8]) -> Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)
        .await
        .context("binding a UDP socket")?;
    sock.connect(upstream).await.context("connecting")?;
    let id: u16 = rand::random();
    sock.send(&with_id(query, id)).await.context("sending")?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await.context("receiving")?;
        // A stray or late datagram with another ID is not our answer.
        if n >= 12 && buf[..2] == id.to_be_bytes() {
            return Ok(restore_id(buf[..n].to_vec(), query));
        }
    }
}

async fn over_tcp(upstream: SocketAddr, query: &[u8]) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await.context("connecting")?;
    let id: u16 = rand::random();
    let q = with_id(query, id);
    let len = u16::try_from(q.len()).context("query too long for TCP")?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed).await.context("sending")?;
    let n = stream.read_u16().await.context("reading the length")? as usize;
    let mut answer = vec![0u8; n];
    stream
        .read_exact(&mut answer)
        .await
        .context("reading the answer")?;
    if n < 12 || answer[..2] != id.to_be_bytes() {
        bail!("the answer does not match the question");
    }
    Ok(restore_id(answer, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_of_resolv_conf() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.2.3\nnameserver  fe80::1%eth0\noptions ndots:2\nnameserver bogus\n";
        assert_eq!(
            nameservers(text),
            [
                "10.0.2.3:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn upstreams_skip_this_server_and_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 127.0.0.1\nnameserver 192.0.2.1\n").unwrap();
        let f = Forwarder {
            fixed: Vec::new(),
            resolv_conf: Some(path.clone()),
            own: "0.0.0.0:53".parse().unwrap(),
        };
        assert_eq!(f.upstreams(), ["192.0.2.1:53".parse().unwrap()]);
        std::fs::write(&path, "nameserver 192.0.2.2\n").unwrap();
        assert_eq!(f.upstreams(), ["192.0.2.2:53".parse().unwrap()]);
        let fixed = Forwarder {
            fixed: vec!["127.0.0.1:5353".parse().unwrap()],
            ..f
        };
        assert_eq!(fixed.upstreams(), ["127.0.0.1:5353".parse().unwrap()]);
    }
}
