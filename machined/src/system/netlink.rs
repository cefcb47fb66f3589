//! Links, addresses and routes through rtnetlink. The `System` trait is synchronous, so each
//! call runs on a short-lived thread with its own single-threaded runtime (callers may be
//! inside tokio; the thread also inherits the caller's network namespace, which tests use).

use super::{RouteSpec, SysResult, SystemError};
use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkLayerType};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};

/// Runs `f` with a fresh netlink connection on its own thread.
fn with_handle<T, F, Fut>(what: &str, f: F) -> Result<T, SystemError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, String>>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async {
                    let (conn, handle, _) =
                        rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
                    let task = tokio::spawn(conn);
                    let out = f(handle).await;
                    task.abort();
                    out
                })
            })
            .join()
            .unwrap_or_else(|_| Err("netlink thread panicked".to_string()))
    })
    .map_err(|e| SystemError::new(what, e))
}

async fn index_of(handle: &Handle, link: &str) -> Result<u32, String> {
    let mut links = handle.link().get().match_name(link.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(format!("no link named {link}")),
        Err(e) => Err(format!("no link named {link} ({e})")),
    }
}

/// Names of the Ethernet links (what DHCP runs on when the config names none).
pub fn ethernet_links() -> Result<Vec<String>, SystemError> {
    with_handle("links", |handle| async move {
        let mut out = Vec::new();
        let mut links = handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(|e| e.to_string())? {
            if msg.header.link_layer_type != LinkLayerType::Ether {
                continue;
            }
            for attr in &msg.attributes {
                if let LinkAttribute::IfName(name) = attr {
                    out.push(name.clone());
                }
            }
        }
        out.sort();
        Ok(out)
    })
}

/// Every address on every link as (link, `address/prefix`, is IPv6, scope), sorted.
pub fn list_addresses() -> Result<Vec<(String, String, bool, String)>, SystemError> {
    use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
    with_handle("addresses", |handle| async move {
        let mut names = std::collections::HashMap::new();
        let mut links = handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(|e| e.to_string())? {
            for attr in &msg.attributes {
                if let LinkAttribute::IfName(name) = attr {
                    names.insert(msg.header.index, name.clone());
                }
            }
        }
        let mut out = Vec::new();
        let mut addrs = handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.map_err(|e| e.to_string())? {
            // IPv4 puts the interface's own address in Local (Address is the peer on
            // point-to-point links); IPv6 only has Address.
            let mut addr = None;
            for attr in &msg.attributes {
                match attr {
                    AddressAttribute::Local(ip) => addr = Some(*ip),
                    AddressAttribute::Address(ip) if addr.is_none() => addr = Some(*ip),
                    _ => {}
                }
            }
            let Some(addr) = addr else { continue };
            let link = names
                .get(&msg.header.index)
                .cloned()
                .unwrap_or_else(|| format!("if{}", msg.header.index));
            let scope = match msg.header.scope {
                AddressScope::Universe => "global".to_string(),
                AddressScope::Site => "site".to_string(),
                AddressScope::Link => "link".to_string(),
                AddressScope::Host => "host".to_string(),
                other => format!("{other:?}").to_lowercase(),
            };
            out.push((
                link,
                format!("{addr}/{}", msg.header.prefix_len),
                addr.is_ipv6(),
                scope,
            ));
        }
        out.sort();
        Ok(out)
    })
}

/// The link's hardware (MAC) address.
pub fn hardware_address(link: &str) -> Result<Vec<u8>, SystemError> {
    let link = link.to_string();
    with_handle(
        &format!("hardware address of {link}"),
        |handle| async move {
            let mut links = handle.link().get().match_name(link.clone()).execute();
            let msg = links
                .try_next()
                .await
                .map_err(|e| format!("no link named {link} ({e})"))?;
            let msg = msg.ok_or_else(|| format!("no link named {link}"))?;
            msg.attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Address(mac) => Some(mac.clone()),
                    _ => None,
                })
                .ok_or_else(|| format!("{link} has no hardware address"))
        },
    )
}

pub fn link_up(link: &str, mtu: Option<u32>) -> SysResult {
    let link = link.to_string();
    with_handle(&format!("link {link}"), |handle| async move {
        let index = index_of(&handle, &link).await?;
        let mut msg = LinkUnspec::new_with_index(index).up();
        if let Some(mtu) = mtu {
            msg = msg.mtu(mtu);
        }
        handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(|e| e.to_string())
    })
}

/// `10.0.0.2/24` -> (address, prefix).
pub fn parse_cidr(cidr: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr}: expected ADDRESS/PREFIX"))?;
    let addr: IpAddr = addr.parse().map_err(|_| format!("{cidr}: bad address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| format!("{cidr}: bad prefix"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("{cidr}: prefix over {max}"));
    }
    Ok((addr, prefix))
}

/// Adds each address (replacing an identical one, so repeating is harmless).
pub fn add_addresses(link: &str, cidrs: &[String]) -> SysResult {
    let parsed: Vec<(IpAddr, u8)> = cidrs
        .iter()
        .map(|c| parse_cidr(c))
        .collect::<Result<_, _>>()
        .map_err(|e| SystemError::new("addresses", e))?;
    let link = link.to_string();
    with_handle(&format!("addresses of {link}"), |handle| async move {
        let index = index_of(&handle, &link).await?;
        for (addr, prefix) in parsed {
            handle
                .address()
                .add(index, addr, prefix)
                .replace()
                .execute()
                .await
                .map_err(|e| format!("{addr}/{prefix}: {e}"))?;
        }
        Ok(())
    })
}

/// Removes one address if present.
pub fn del_address(link: &str, cidr: &str) -> SysResult {
    let (addr, prefix) = parse_cidr(cidr).map_err(|e| SystemError::new("address", e))?;
    let link = link.to_string();
    with_handle(&format!("address {cidr} of {link}"), |handle| async move {
        let index = index_of(&handle, &link).await?;
        let mut found = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr)
            .set_prefix_length_filter(prefix)
            .execute();
        while let Some(msg) = found.try_next().await.map_err(|e| e.to_string())? {
            handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Adds (or replaces) IPv4 routes.
pub fn add_routes(routes: &[RouteSpec]) -> SysResult {
    let routes = routes.to_vec();
    with_handle("routes", |handle| async move {
        for r in routes {
            let index = index_of(&handle, &r.link).await?;
            let (dest, prefix) = parse_cidr(&r.network)?;
            let IpAddr::V4(dest) = dest else {
                return Err(format!(
                    "route {}: only IPv4 routes are supported yet",
                    r.network
                ));
            };
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dest, prefix)
                .output_interface(index);
            if let Some(gw) = &r.gateway {
                let gw: Ipv4Addr = gw
                    .parse()
                    .map_err(|_| format!("route {}: bad gateway {gw}", r.network))?;
                b = b.gateway(gw);
            }
            if let Some(metric) = r.metric {
                b = b.priority(metric);
            }
            handle
                .route()
                .add(b.build())
                .replace()
                .execute()
                .await
                .map_err(|e| {
                    format!(
                        "route {} via {:?} dev {}: {e}",
                        r.network, r.gateway, r.link
                    )
                })?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_checked() {
        assert_eq!(
            parse_cidr("10.0.0.2/24").unwrap(),
            ("10.0.0.2".parse().unwrap(), 24)
        );
        assert!(parse_cidr("10.0.0.2").is_err());
        assert!(parse_cidr("10.0.0.2/33").is_err());
        assert!(parse_cidr("fd00::1/64").is_ok());
    }

    /// Runs `f` on a thread inside a new network namespace (never the host's).
    fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("unshare(CLONE_NEWNET) failed: these tests need root (CAP_SYS_ADMIN)");
                f()
            })
            .join()
            .expect("netns thread")
        })
    }

    fn ip(args: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("the `ip` tool (iproute2) is needed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn link_address_and_route_in_a_private_netns() {
        in_new_netns(|| {
            link_up("lo", None).unwrap();
            add_addresses("lo", &["10.9.0.1/24".to_string()]).unwrap();
            // Repeating is harmless (idempotent controllers retry).
            add_addresses("lo", &["10.9.0.1/24".to_string()]).unwrap();
            let route = RouteSpec {
                link: "lo".into(),
                network: "10.10.0.0/16".into(),
                gateway: Some("10.9.0.2".into()),
                metric: Some(50),
            };
            add_routes(std::slice::from_ref(&route)).unwrap();
            add_routes(&[route]).unwrap();
            let addrs = ip(&["-4", "addr", "show", "dev", "lo"]);
            assert!(addrs.contains("inet 10.9.0.1/24"), "{addrs}");
            assert!(addrs.contains("UP"), "{addrs}");
            let routes = ip(&["-4", "route"]);
            assert!(
                routes.contains("10.10.0.0/16 via 10.9.0.2 dev lo"),
                "{routes}"
            );
            let listed = list_addresses().unwrap();
            assert!(
                listed.contains(&("lo".into(), "10.9.0.1/24".into(), false, "global".into())),
                "{listed:?}"
            );
            assert!(
                listed.contains(&("lo".into(), "127.0.0.1/8".into(), false, "host".into())),
                "{listed:?}"
            );
            del_address("lo", "10.9.0.1/24").unwrap();
            assert!(!ip(&["-4", "addr", "show", "dev", "lo"]).contains("10.9.0.1"));
            assert!(
                link_up("nonexistent0", None)
                    .unwrap_err()
                    .to_string()
                    .contains("no link named nonexistent0")
            );
            assert!(
                ethernet_links().unwrap().is_empty(),
                "a new netns has only lo"
            );
        });
    }
}
