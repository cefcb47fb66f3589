//! The netlink side of the bridge network: the node bridge, a veth per pod, the pod's
//! eth0 configuration and the routes to other nodes' pod CIDRs (rtnetlink throughout).

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};
use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::netns;

/// Routes the agent owns carry this protocol number, so stale ones can be found and removed.
pub const ROUTE_PROTOCOL: u8 = 114;

pub async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        // The kernel answers ENODEV for an unknown name.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
        Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
    }
}

/// Creates the bridge `name` (if missing) with `gateway/prefix` on it, and brings it up.
pub fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
    let name = name.to_string();
    netns::with_netlink(None, move |h| async move {
        let index = match index_of(&h, &name).await? {
            Some(i) => i,
            None => {
                h.link()
                    .add(LinkBridge::new(&name).build())
                    .execute()
                    .await
                    .with_context(|| format!("creating bridge {name}"))?;
                index_of(&h, &name)
                    .await?
                    .with_context(|| format!("bridge {name} vanished"))?
            }
        };
        h.address()
            .add(index, gateway.into(), prefix)
            .replace()
            .execute()
            .await
            .with_context(|| format!("address {gateway}/{prefix} on {name}"))?;
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .with_context(|| format!("bringing {name} up"))
    })
}

/// What a pod's interface gets.
pub struct PodLink<'a> {
    pub host_name: &'a str,
    pub bridge: &'a str,
    pub netns: &'a Path,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// Makes the veth pair: `host_name` on the bridge, the peer moved into the pod namespace as
/// eth0 with the pod IP and a default route via the gateway. A leftover pair of an earlier
/// attempt is replaced.
pub fn add_pod_link(l: &PodLink<'_>) -> Result<()> {
    let host = l.host_name.to_string();
    // The peer's name only needs to be unique in the node namespace until it is moved.
    let peer = format!("p{}", &host[1..]);
    let bridge = l.bridge.to_string();
    let ns_file = std::fs::File::open(l.netns)
        .with_context(|| format!("opening netns {}", l.netns.display()))?;
    let fd = ns_file.as_raw_fd();
    netns::with_netlink(None, move |h| async move {
        for old in [&host, &peer] {
            if let Some(i) = index_of(&h, old).await? {
                h.link().del(i).execute().await.ok();
            }
        }
        h.link()
            .add(LinkVeth::new(&host, &peer).build())
            .execute()
            .await
            .with_context(|| format!("creating veth pair {host}/{peer}"))?;
        let br = index_of(&h, &bridge)
            .await?
            .with_context(|| format!("no bridge {bridge}"))?;
        let hi = index_of(&h, &host).await?.context("veth vanished")?;
        h.link()
            .set(LinkUnspec::new_with_index(hi).controller(br).up().build())
            .execute()
            .await
            .with_context(|| format!("attaching {host} to {bridge}"))?;
        let pi = index_of(&h, &peer).await?.context("veth peer vanished")?;
        h.link()
            .set(LinkUnspec::new_with_index(pi).setns_by_fd(fd).build())
            .execute()
            .await
            .with_context(|| format!("moving {peer} into the pod netns"))
    })?;
    drop(ns_file);
    let (ip, prefix, gateway) = (l.ip, l.prefix, l.gateway);
    let peer = format!("p{}", &l.host_name[1..]);
    netns::with_netlink(Some(l.netns), move |h| async move {
        let lo = index_of(&h, "lo")
            .await?
            .context("no lo in the pod netns")?;
        h.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .context("bringing lo up")?;
        let i = index_of(&h, &peer)
            .await?
            .context("veth peer missing in the pod netns")?;
        h.link()
            .set(LinkUnspec::new_with_index(i).name("eth0").build())
            .execute()
            .await
            .context("renaming the pod's veth to eth0")?;
        h.address()
            .add(i, ip.into(), prefix)
            .replace()
            .execute()
            .await
            .with_context(|| format!("address {ip}/{prefix} on eth0"))?;
        h.link()
            .set(LinkUnspec::new_with_index(i).up().build())
            .execute()
            .await
            .context("bringing eth0 up")?;
        h.route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gateway)
                    .output_interface(i)
                    .build(),
            )
            .replace()
            .execute()
            .await
            .with_context(|| format!("default route via {gateway}"))
    })
}

pub fn link_exists(name: &str) -> Result<bool> {
    let name = name.to_string();
    netns::with_netlink(None, move |h| async move {
        Ok(index_of(&h, &name).await?.is_some())
    })
}

/// Deletes link `name` (its veth peer goes with it); absent is fine.
pub fn delete_link(name: &str) -> Result<()> {
    let name = name.to_string();
    netns::with_netlink(None, move |h| async move {
        if let Some(i) = index_of(&h, &name).await? {
            h.link()
                .del(i)
                .execute()
                .await
                .with_context(|| format!("deleting link {name}"))?;
        }
        Ok(())
    })
}

/// Makes the agent's routes exactly `want` (pod CIDR -> the node address it lives behind):
/// replaces each, and deletes routes with [`ROUTE_PROTOCOL`] that are no longer wanted.
pub fn sync_routes(want: &[(Ipv4Net, Ipv4Addr)]) -> Result<()> {
    let want = want.to_vec();
    netns::with_netlink(None, move |h| async move {
        let mut routes = h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let mut stale = Vec::new();
        while let Some(r) = routes.try_next().await.context("listing routes")? {
            if r.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
                continue;
            }
            let dest = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
                _ => None,
            });
            let gw = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                _ => None,
            });
            let net = dest.and_then(|d| Ipv4Net::new(d, r.header.destination_prefix_length).ok());
            if !matches!((net, gw), (Some(n), Some(g)) if want.contains(&(n, g))) {
                stale.push(r);
            }
        }
        for r in stale {
            h.route()
                .del(r)
                .execute()
                .await
                .context("deleting a stale pod CIDR route")?;
        }
        for (net, gw) in &want {
            h.route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(net.network(), net.prefix_len())
                        .gateway(*gw)
                        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
                        .build(),
                )
                .replace()
                .execute()
                .await
                .with_context(|| format!("route {net} via {gw}"))?;
        }
        Ok(())
    })
}
