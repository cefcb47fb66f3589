//! Checks of `machine.network`: interfaces, addresses, routes, and the rules between them.

use super::Checker;
use super::syntax::*;
use crate::error::FieldPath;
use crate::types::{Interface, NetworkConfig};
use ipnet::IpNet;

pub(crate) fn check(c: &mut Checker, p: &FieldPath, n: &NetworkConfig) {
    if let Some(h) = &n.hostname
        && !is_dns_name(h)
    {
        c.err(p.key("hostname"), format!("{h:?} is not a valid hostname"));
    }
    for (i, ns) in n.nameservers.iter().enumerate() {
        if parse_ip(ns).is_none() {
            c.err(
                p.key("nameservers").index(i),
                format!("{ns:?} is not an IP address"),
            );
        }
    }
    let ip = p.key("interfaces");
    for (i, iface) in n.interfaces.iter().enumerate() {
        check_interface(c, &ip.index(i), iface);
    }
    check_duplicates(c, &ip, &n.interfaces);
}

fn check_interface(c: &mut Checker, p: &FieldPath, iface: &Interface) {
    match (&iface.interface, &iface.device_selector) {
        (None, None) => c.err(p.clone(), "needs `interface` or `deviceSelector`"),
        (Some(_), Some(_)) => c.err(
            p.clone(),
            "has both `interface` and `deviceSelector`; use one",
        ),
        (Some(name), None) => {
            // Linux IFNAMSIZ is 16 including the NUL.
            let ok = !name.is_empty()
                && name.len() <= 15
                && !name.contains(['/', ':'])
                && !name.contains(char::is_whitespace);
            if !ok {
                c.err(
                    p.key("interface"),
                    format!("{name:?} is not a network interface name"),
                );
            }
        }
        (None, Some(sel)) => {
            let sp = p.key("deviceSelector");
            if sel.is_empty() {
                c.err(sp.clone(), "needs hardwareAddr, driver or busPath");
            }
            if let Some(mac) = &sel.hardware_addr
                && !is_hwaddr_pattern(mac)
            {
                c.err(
                    sp.key("hardwareAddr"),
                    format!("{mac:?} is not a MAC address (pattern)"),
                );
            }
            if let Some(d) = &sel.driver
                && d.is_empty()
            {
                c.err(sp.key("driver"), "is empty");
            }
            if let Some(b) = &sel.bus_path
                && b.is_empty()
            {
                c.err(sp.key("busPath"), "is empty");
            }
        }
    }

    if let Some(mtu) = iface.mtu
        && !(68..=65535).contains(&mtu)
    {
        c.err(p.key("mtu"), format!("{mtu} is outside 68..65535"));
    }

    let ap = p.key("addresses");
    let mut addrs: Vec<(usize, IpNet)> = Vec::new();
    for (i, a) in iface.addresses.iter().enumerate() {
        match parse_cidr(a) {
            None => c.err(ap.index(i), format!("{a:?} is not a valid CIDR")),
            Some(net) => {
                if let Some((j, _)) = addrs.iter().find(|(_, n)| n.addr() == net.addr()) {
                    c.err(
                        ap.index(i),
                        format!("{a:?} repeats the address of {}", ap.index(*j)),
                    );
                }
                addrs.push((i, net));
            }
        }
    }
    if iface.dhcp != Some(true) && iface.addresses.is_empty() {
        c.warn(
            p.clone(),
            "has neither dhcp: true nor addresses; the link only comes up",
        );
    }

    let rp = p.key("routes");
    for (i, r) in iface.routes.iter().enumerate() {
        let rpi = rp.index(i);
        let net = match parse_cidr(&r.network) {
            None => {
                c.err(
                    rpi.key("network"),
                    format!("{:?} is not a valid CIDR", r.network),
                );
                None
            }
            Some(n) if n.trunc() != n => {
                c.err(
                    rpi.key("network"),
                    format!(
                        "{:?} has host bits set; the network is {}",
                        r.network,
                        n.trunc()
                    ),
                );
                None
            }
            Some(n) => Some(n),
        };
        let Some(gw_text) = &r.gateway else { continue };
        let Some(gw) = parse_ip(gw_text) else {
            c.err(
                rpi.key("gateway"),
                format!("{gw_text:?} is not an IP address"),
            );
            continue;
        };
        if let Some(net) = net
            && net.addr().is_ipv4() != gw.is_ipv4()
        {
            c.err(
                rpi.key("gateway"),
                format!("{gw} is not in the address family of {net}"),
            );
            continue;
        }
        // With static addressing, a gateway must sit inside one of this interface's subnets,
        // otherwise the kernel cannot reach it (DHCP may supply other subnets, so skip then).
        let same_family: Vec<&IpNet> = addrs
            .iter()
            .map(|(_, n)| n)
            .filter(|n| n.addr().is_ipv4() == gw.is_ipv4())
            .collect();
        if iface.dhcp != Some(true) && !same_family.is_empty() {
            if !same_family.iter().any(|n| n.contains(&gw)) {
                let list: Vec<String> = same_family.iter().map(|n| n.to_string()).collect();
                c.err(
                    rpi.key("gateway"),
                    format!(
                        "{gw} is outside every address of this interface ({})",
                        list.join(", ")
                    ),
                );
            }
        } else if iface.dhcp != Some(true) && addrs.is_empty() && iface.addresses.is_empty() {
            c.err(
                rpi.key("gateway"),
                format!("{gw} cannot be reached: the interface has no address and no dhcp"),
            );
        }
    }
}

/// The same link configured twice (by name, or by an identical selector).
fn check_duplicates(c: &mut Checker, p: &FieldPath, ifaces: &[Interface]) {
    for (i, a) in ifaces.iter().enumerate() {
        for (j, b) in ifaces.iter().enumerate().take(i) {
            if let (Some(x), Some(y)) = (&a.interface, &b.interface)
                && x == y
            {
                c.err(
                    p.index(i).key("interface"),
                    format!("{x:?} is already configured by {}", p.index(j)),
                );
                break;
            }
            if let (Some(x), Some(y)) = (&a.device_selector, &b.device_selector)
                && x == y
                && !x.is_empty()
            {
                c.err(
                    p.index(i).key("deviceSelector"),
                    format!("selects the same device as {}", p.index(j)),
                );
                break;
            }
        }
    }
}
