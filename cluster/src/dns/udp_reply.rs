//! UDP that answers from the address a question was sent to.
//!
//! A socket bound to the wildcard address lets the kernel pick a reply's source by route. On a
//! node the route back to a local pod leaves through the pod bridge, so a question sent to the
//! node address (or to the kube-dns ClusterIP, DNAT-ed to it) would be answered from the
//! bridge's gateway address: the pod's resolver drops an answer from an address it did not ask,
//! and conntrack cannot undo the DNAT. With IP_PKTINFO / IPV6_RECVPKTINFO each datagram carries
//! the address it was sent to, and the reply names it as its source.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One question: its length in the buffer, who asked, and the local address it was sent to.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub peer: SocketAddr,
    pub local: Option<IpAddr>,
}

/// Asks the kernel to report each datagram's destination address.
pub fn enable_destination_info(socket: &UdpSocket) -> io::Result<()> {
    let result = match socket.local_addr()? {
        SocketAddr::V4(_) => setsockopt(socket, sockopt::Ipv4PacketInfo, &true),
        SocketAddr::V6(_) => setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true),
    };
    result.map_err(io::Error::from)
}

/// Receives one datagram into `buf`.
pub async fn receive(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    socket
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buf)];
            let mut cmsg = nix::cmsg_space!(nix::libc::in6_pktinfo);
            let msg = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)?;
            let peer = msg
                .address
                .as_ref()
                .and_then(socket_addr)
                .ok_or_else(|| io::Error::other("datagram without a source address"))?;
            let mut local = None;
            for c in msg.cmsgs().map_err(io::Error::from)? {
                match c {
                    ControlMessageOwned::Ipv4PacketInfo(info) => {
                        local = Some(IpAddr::from(info.ipi_addr.s_addr.to_ne_bytes()));
                    }
                    ControlMessageOwned::Ipv6PacketInfo(info) => {
                        local = Some(IpAddr::from(info.ipi6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            Ok(Received {
                len: msg.bytes,
                peer,
                local,
            })
        })
        .await
}

/// Sends `reply` to `peer`, from `local` when known.
pub async fn send(
    socket: &UdpSocket,
    reply: &[u8],
    peer: SocketAddr,
    local: Option<IpAddr>,
) -> io::Result<()> {
    let to = SockaddrStorage::from(peer);
    socket
        .async_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(reply)];
            let v4;
            let v6;
            let cmsgs: &[ControlMessage] = match local {
                Some(IpAddr::V4(ip)) if peer.is_ipv4() => {
                    v4 = nix::libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: nix::libc::in_addr {
                            s_addr: u32::from_ne_bytes(ip.octets()),
                        },
                        ipi_addr: nix::libc::in_addr { s_addr: 0 },
                    };
                    &[ControlMessage::Ipv4PacketInfo(&v4)]
                }
                Some(IpAddr::V6(ip)) if peer.is_ipv6() => {
                    v6 = nix::libc::in6_pktinfo {
                        ipi6_addr: nix::libc::in6_addr {
                            s6_addr: ip.octets(),
                        },
                        ipi6_ifindex: 0,
                    };
                    &[ControlMessage::Ipv6PacketInfo(&v6)]
                }
                _ => &[],
            };
            sendmsg(
                socket.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_DONTWAIT,
                Some(&to),
            )
            .map(|_| ())
            .map_err(io::Error::from)
        })
        .await
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}
