//! A stub upstream DNS server for the QEMU cluster test: it answers one name with one IPv4
//! address (and NXDOMAIN for everything else) from a UDP socket bound inside the cluster's
//! network namespace, so a name "outside the cluster" resolves without leaving the test's
//! namespace. Queries are counted, so the test can tell its answer came from here.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct StubDns {
    pub answered: Arc<AtomicUsize>,
}

impl StubDns {
    /// Serves `name` (e.g. "outside.test") as `addr` on `listen` inside namespace `netns`,
    /// from a thread that lives as long as the test process.
    pub fn start(netns: &str, listen: SocketAddr, name: &str, addr: Ipv4Addr) -> Self {
        let socket = imager::qemu::netns::in_namespace(netns, move || Ok(UdpSocket::bind(listen)?))
            .unwrap_or_else(|e| {
                panic!("binding the stub DNS server on {listen} in {netns}: {e:#}")
            });
        let answered = Arc::new(AtomicUsize::new(0));
        let counter = answered.clone();
        let wanted = name.trim_end_matches('.').to_ascii_lowercase();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                if let Some(reply) = reply(&buf[..n], &wanted, addr) {
                    if reply[7] == 1 {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Self { answered }
    }
}

/// The reply to one query: the header and question echoed, with one A record when the
/// question is `wanted`/A/IN, NXDOMAIN otherwise. None for what is not a single question.
fn reply(query: &[u8], wanted: &str, addr: Ipv4Addr) -> Option<Vec<u8>> {
    if query.len() < 12 || query[4..6] != [0, 1] {
        return None;
    }
    let (name, end) = question_name(query, 12)?;
    let question_end = end + 4;
    if query.len() < question_end {
        return None;
    }
    let qtype = u16::from_be_bytes([query[end], query[end + 1]]);
    let hit = name == wanted && qtype == 1;
    let mut out = query[..question_end].to_vec();
    // QR, the query's RD, RA; rcode 0 or 3 (NXDOMAIN). One question, no authority/additional.
    out[2] = 0x80 | (query[2] & 0x01);
    out[3] = if hit || name == wanted { 0x80 } else { 0x83 };
    out[6..12].copy_from_slice(&[0, u8::from(hit), 0, 0, 0, 0]);
    if hit {
        // Name: a pointer to the question's (offset 12); A, IN, TTL 60, 4 bytes of address.
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        out.extend_from_slice(&addr.octets());
    }
    Some(out)
}

/// The dotted, lower-case name starting at `at` (no compression in a question) and the
/// offset just past it.
fn question_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            return Some((labels.join("."), at));
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
}
