//! A DHCPv4 client: discover, request, bound, renew (T1, unicast), rebind (T2, broadcast),
//! expire. The wire format is small enough to encode here (the dhcproto crate would pull a
//! whole DNS library into the image).

use super::{RouteSpec, netlink};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

const COOKIE: [u8; 4] = [99, 130, 83, 99];
const HEADER: usize = 236;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
}

impl MsgType {
    fn from_u8(v: u8) -> Option<Self> {
        use MsgType::*;
        [Discover, Offer, Request, Decline, Ack, Nak, Release]
            .into_iter()
            .find(|t| *t as u8 == v)
    }
}

/// What the client sends.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: MsgType,
    pub xid: u32,
    pub mac: [u8; 6],
    pub ciaddr: Ipv4Addr,
    pub requested: Option<Ipv4Addr>,
    pub server: Option<Ipv4Addr>,
    pub broadcast: bool,
}

/// What a server answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub kind: Option<u8>,
    pub xid: u32,
    pub yiaddr: Option<Ipv4Addr>,
    pub mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    pub t1: Option<u32>,
    pub t2: Option<u32>,
}

pub fn encode(r: &Request) -> Vec<u8> {
    let mut b = vec![0u8; HEADER];
    b[0] = 1; // BOOTREQUEST
    b[1] = 1; // Ethernet
    b[2] = 6;
    b[4..8].copy_from_slice(&r.xid.to_be_bytes());
    if r.broadcast {
        b[10] = 0x80;
    }
    b[12..16].copy_from_slice(&r.ciaddr.octets());
    b[28..34].copy_from_slice(&r.mac);
    b.extend_from_slice(&COOKIE);
    b.extend_from_slice(&[53, 1, r.kind as u8]);
    let mut client_id = vec![61, 7, 1];
    client_id.extend_from_slice(&r.mac);
    b.extend_from_slice(&client_id);
    if let Some(ip) = r.requested {
        b.extend_from_slice(&[50, 4]);
        b.extend_from_slice(&ip.octets());
    }
    if let Some(ip) = r.server {
        b.extend_from_slice(&[54, 4]);
        b.extend_from_slice(&ip.octets());
    }
    // Subnet mask, router, DNS, lease time, server id, T1, T2.
    b.extend_from_slice(&[55, 7, 1, 3, 6, 51, 54, 58, 59]);
    b.push(255);
    while b.len() < 300 {
        b.push(0);
    }
    b
}

fn ip_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    let ip = Ipv4Addr::from(o);
    (!ip.is_unspecified()).then_some(ip)
}

fn ips(v: &[u8]) -> Vec<Ipv4Addr> {
    v.chunks_exact(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect()
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// Decodes a BOOTREPLY; `None` for anything else or a truncated packet.
pub fn decode(b: &[u8]) -> Option<Reply> {
    if b.len() < HEADER + 4 || b[0] != 2 || b[HEADER..HEADER + 4] != COOKIE {
        return None;
    }
    let mut r = Reply {
        xid: u32::from_be_bytes(b[4..8].try_into().ok()?),
        yiaddr: ip_at(b, 16),
        ..Default::default()
    };
    let mut i = HEADER + 4;
    while i < b.len() {
        let code = b[i];
        if code == 0 {
            i += 1;
            continue;
        }
        if code == 255 {
            break;
        }
        let len = *b.get(i + 1)? as usize;
        let v = b.get(i + 2..i + 2 + len)?;
        match code {
            1 => r.mask = ip_at(v, 0),
            3 => r.routers = ips(v),
            6 => r.dns = ips(v),
            51 => r.lease_secs = u32_of(v),
            53 => r.kind = v.first().copied(),
            54 => r.server = ip_at(v, 0),
            58 => r.t1 = u32_of(v),
            59 => r.t2 = u32_of(v),
            _ => {}
        }
        i += 2 + len;
    }
    Some(r)
}

/// A bound lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease: Duration,
    pub renew: Duration,
    pub rebind: Duration,
}

impl Lease {
    pub fn from_ack(r: &Reply) -> Option<Lease> {
        let lease = r.lease_secs.unwrap_or(3600);
        Some(Lease {
            address: r.yiaddr?,
            prefix: r
                .mask
                .map(|m| u32::from(m).count_ones() as u8)
                .unwrap_or(24),
            router: r.routers.first().copied(),
            dns: r.dns.clone(),
            server: r.server?,
            lease: Duration::from_secs(lease as u64),
            renew: Duration::from_secs(r.t1.unwrap_or(lease / 2) as u64),
            rebind: Duration::from_secs(r.t2.unwrap_or(lease / 8 * 7) as u64),
        })
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix)
    }
}

fn mac_of(link: &str) -> Result<[u8; 6], String> {
    let mac = netlink::hardware_address(link).map_err(|e| e.to_string())?;
    mac.as_slice()
        .try_into()
        .map_err(|_| format!("{link}: not an Ethernet address: {mac:?}"))
}

/// A UDP socket on port 68 bound to `link`, allowed to broadcast.
fn client_socket(link: &str) -> Result<tokio::net::UdpSocket, String> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    setsockopt(&fd, sockopt::Broadcast, &true).map_err(|e| format!("SO_BROADCAST: {e}"))?;
    setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(link))
        .map_err(|e| format!("SO_BINDTODEVICE {link}: {e}"))?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(0, 0, 0, 0, 68),
    )
    .map_err(|e| format!("bind :68: {e}"))?;
    let std_sock = std::net::UdpSocket::from(fd);
    tokio::net::UdpSocket::from_std(std_sock).map_err(|e| e.to_string())
}

/// Sends `req` to `to` and waits for a reply of one of `want` kinds with the same xid.
async fn exchange(
    sock: &tokio::net::UdpSocket,
    req: &Request,
    to: Ipv4Addr,
    want: &[MsgType],
    wait: Duration,
) -> Option<Reply> {
    let packet = encode(req);
    if let Err(e) = sock.send_to(&packet, SocketAddrV4::new(to, 67)).await {
        tracing::debug!("dhcp send to {to}: {e}");
        return None;
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 1500];
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return None,
        };
        if let Some(reply) = decode(&buf[..n])
            && reply.xid == req.xid
            && reply
                .kind
                .and_then(MsgType::from_u8)
                .is_some_and(|k| want.contains(&k))
        {
            return Some(reply);
        }
    }
}

/// Obtains a lease by DISCOVER/OFFER/REQUEST/ACK, retrying with backoff until it succeeds.
async fn acquire(sock: &tokio::net::UdpSocket, mac: [u8; 6], log: &dyn Fn(String)) -> Lease {
    let mut attempt = 0u32;
    loop {
        let xid = rand_xid();
        let base = Request {
            kind: MsgType::Discover,
            xid,
            mac,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: None,
            server: None,
            broadcast: true,
        };
        if let Some(offer) = exchange(
            sock,
            &base,
            Ipv4Addr::BROADCAST,
            &[MsgType::Offer],
            Duration::from_secs(4),
        )
        .await
        {
            let req = Request {
                kind: MsgType::Request,
                requested: offer.yiaddr,
                server: offer.server,
                ..base
            };
            let answer = exchange(
                sock,
                &req,
                Ipv4Addr::BROADCAST,
                &[MsgType::Ack, MsgType::Nak],
                Duration::from_secs(4),
            )
            .await;
            if let Some(ack) = answer.filter(|a| a.kind == Some(MsgType::Ack as u8))
                && let Some(lease) = Lease::from_ack(&ack)
            {
                return lease;
            }
        }
        attempt += 1;
        let delay = Duration::from_secs((1u64 << attempt.min(5)).min(30));
        log(format!(
            "no lease yet (attempt {attempt}); retrying in {delay:?}"
        ));
        tokio::time::sleep(delay).await;
    }
}

fn rand_xid() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    nanos ^ std::process::id().rotate_left(16)
}

/// Applies a lease: address and default route (the caller hears of it to use its resolvers).
fn apply(link: &str, lease: &Lease) -> Result<(), String> {
    netlink::add_addresses(link, &[lease.cidr()]).map_err(|e| e.to_string())?;
    if let Some(gw) = lease.router {
        let route = RouteSpec {
            link: link.to_string(),
            network: "0.0.0.0/0".into(),
            gateway: Some(gw.to_string()),
            metric: Some(1024),
        };
        netlink::add_routes(&[route]).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs the client on `link` forever (call on a dedicated runtime). `on_lease` hears of each
/// lease applied (resolvers, the address status) and of its loss (`None`).
pub async fn run(link: String, log: impl Fn(String), on_lease: impl Fn(Option<&Lease>)) {
    let log = |m: String| log(format!("dhcp {link}: {m}"));
    if let Err(e) = netlink::link_up(&link, None) {
        log(format!("cannot set the link up: {e}"));
    }
    let (mac, sock) = match mac_of(&link).and_then(|mac| Ok((mac, client_socket(&link)?))) {
        Ok(v) => v,
        Err(e) => {
            log(e);
            return;
        }
    };
    loop {
        let mut lease = acquire(&sock, mac, &log).await;
        loop {
            match apply(&link, &lease) {
                Ok(()) => {
                    on_lease(Some(&lease));
                    log(format!(
                        "bound {} via {:?} for {:?}",
                        lease.cidr(),
                        lease.router,
                        lease.lease
                    ))
                }
                Err(e) => log(format!("applying lease {}: {e}", lease.cidr())),
            }
            let bound_at = tokio::time::Instant::now();
            tokio::time::sleep(lease.renew).await;
            // Renew with the server that gave the lease, then rebind with anyone, until expiry.
            let mut renewed = None;
            while renewed.is_none() && bound_at.elapsed() < lease.lease {
                let rebinding = bound_at.elapsed() >= lease.rebind;
                let req = Request {
                    kind: MsgType::Request,
                    xid: rand_xid(),
                    mac,
                    ciaddr: lease.address,
                    requested: None,
                    server: None,
                    broadcast: rebinding,
                };
                let to = if rebinding {
                    Ipv4Addr::BROADCAST
                } else {
                    lease.server
                };
                let answer = exchange(
                    &sock,
                    &req,
                    to,
                    &[MsgType::Ack, MsgType::Nak],
                    Duration::from_secs(4),
                )
                .await;
                match answer {
                    Some(a) if a.kind == Some(MsgType::Ack as u8) => renewed = Lease::from_ack(&a),
                    Some(_) => break, // NAK: start over
                    None => tokio::time::sleep(Duration::from_secs(10)).await,
                }
            }
            match renewed {
                Some(next) => {
                    if next.cidr() != lease.cidr() {
                        let _ = netlink::del_address(&link, &lease.cidr());
                    }
                    lease = next;
                }
                None => {
                    log(format!("lease {} lost; starting over", lease.cidr()));
                    let _ = netlink::del_address(&link, &lease.cidr());
                    on_lease(None);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_packet(kind: MsgType, xid: u32, yiaddr: Ipv4Addr) -> Vec<u8> {
        let mut b = vec![0u8; HEADER];
        b[0] = 2;
        b[4..8].copy_from_slice(&xid.to_be_bytes());
        b[16..20].copy_from_slice(&yiaddr.octets());
        b.extend_from_slice(&COOKIE);
        b.extend_from_slice(&[
            53, 1, kind as u8, 0, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2,
        ]);
        b.extend_from_slice(&[
            6, 8, 10, 0, 2, 3, 1, 1, 1, 1, 51, 4, 0, 0, 0x0e, 0x10, 54, 4, 10, 0, 2, 2, 255,
        ]);
        b
    }

    #[test]
    fn request_encodes_fields_and_options() {
        let r = Request {
            kind: MsgType::Request,
            xid: 0x01020304,
            mac: [2, 0, 0, 0, 0, 9],
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: Some(Ipv4Addr::new(10, 0, 2, 15)),
            server: Some(Ipv4Addr::new(10, 0, 2, 2)),
            broadcast: true,
        };
        let b = encode(&r);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(b[10], 0x80);
        assert_eq!(&b[28..34], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(&b[236..240], &COOKIE);
        assert_eq!(&b[240..243], &[53, 1, 3]);
        assert!(b.windows(6).any(|w| w == [50, 4, 10, 0, 2, 15]));
        assert!(b.windows(6).any(|w| w == [54, 4, 10, 0, 2, 2]));
    }

    #[test]
    fn ack_decodes_into_a_lease() {
        let p = reply_packet(MsgType::Ack, 77, Ipv4Addr::new(10, 0, 2, 15));
        let r = decode(&p).unwrap();
        assert_eq!(r.kind, Some(5));
        assert_eq!(r.xid, 77);
        let lease = Lease::from_ack(&r).unwrap();
        assert_eq!(lease.cidr(), "10.0.2.15/24");
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(
            lease.dns,
            vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert_eq!(lease.lease, Duration::from_secs(3600));
        assert_eq!(lease.renew, Duration::from_secs(1800));
        assert!(decode(&p[..100]).is_none());
    }

    /// A veth pair in a private network namespace; a one-lease DHCP server on one end, our
    /// client on the other.
    #[test]
    fn client_gets_a_lease_over_a_veth_pair() {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("unshare(CLONE_NEWNET) failed: this test needs root");
                let ip = |args: &[&str]| {
                    let st = std::process::Command::new("ip").args(args).status().expect("`ip` (iproute2) is needed");
                    assert!(st.success(), "ip {args:?}");
                };
                ip(&["link", "add", "c0", "type", "veth", "peer", "name", "s0"]);
                ip(&["addr", "add", "10.77.0.1/24", "dev", "s0"]);
                ip(&["link", "set", "s0", "up"]);
                // Both ends share this namespace, so the client's packets carry the server's
                // address as source; a real link has no such local address.
                for dev in ["all", "c0", "s0"] {
                    std::fs::write(format!("/proc/sys/net/ipv4/conf/{dev}/accept_local"), "1").unwrap();
                }
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let server = tokio::net::UdpSocket::bind("0.0.0.0:67").await.unwrap();
                    server.set_broadcast(true).unwrap();
                    server.bind_device(Some(b"s0")).unwrap();
                    let serve = async {
                        let mut buf = [0u8; 1500];
                        loop {
                            let (n, _) = server.recv_from(&mut buf).await.unwrap();
                            let kind = buf[..n].windows(2).position(|w| w == [53, 1]).map(|i| buf[i + 2]);
                            let xid = u32::from_be_bytes(buf[4..8].try_into().unwrap());
                            let answer = match kind {
                                Some(1) => MsgType::Offer,
                                Some(3) => MsgType::Ack,
                                _ => continue,
                            };
                            let mut p = reply_packet(answer, xid, Ipv4Addr::new(10, 77, 0, 50));
                            p[236 + 4 + 12..236 + 4 + 16].copy_from_slice(&[10, 77, 0, 1]); // router
                            let last = p.len();
                            p[last - 5..last - 1].copy_from_slice(&[10, 77, 0, 1]); // server id
                            server.send_to(&p, "255.255.255.255:68").await.unwrap();
                        }
                    };
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    let client = run("c0".into(), move |m| { let _ = tx.send(m); }, |_| {});
                    let mut seen = Vec::new();
                    let bound = async {
                        while let Some(m) = rx.recv().await {
                            if m.contains("bound") {
                                return m;
                            }
                            seen.push(m);
                        }
                        String::new()
                    };
                    let msg = tokio::select! {
                        m = bound => m,
                        _ = client => format!("client ended: {:?}", rx.try_recv()),
                        _ = serve => String::from("server ended"),
                        _ = tokio::time::sleep(Duration::from_secs(30)) => String::from("timed out"),
                    };
                    assert!(msg.contains("bound 10.77.0.50/24"), "{msg}");
                });
                let out = std::process::Command::new("ip").args(["-4", "addr", "show", "dev", "c0"]).output().unwrap();
                assert!(String::from_utf8_lossy(&out.stdout).contains("10.77.0.50/24"));
                let routes = std::process::Command::new("ip").args(["-4", "route"]).output().unwrap();
                assert!(String::from_utf8_lossy(&routes.stdout).contains("default via 10.77.0.1 dev c0"));
            })
            .join()
            .expect("netns thread");
        });
    }
}
