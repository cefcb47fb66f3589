//! The proxy's nftables table (`ip ros`), rendered as nft script text from the service
//! ports. Layout (names follow kube-proxy's nftables mode):
//!
//! - `services`, jumped to from the nat prerouting and output hooks: the verdict map
//!   `service-ips` (ClusterIP or LoadBalancer IP . protocol . port) and, for packets to any
//!   local address, `service-nodeports` (protocol . port).
//! - `service-<id>`: picks an endpoint (`numgen random`), or the one a client is pinned to
//!   when sessionAffinity is ClientIP (a per-endpoint set of client IPs with a timeout).
//! - `external-<id>`: NodePort/LoadBalancer entry; marks for masquerade, then the service.
//! - `endpoint-<id>__<ip>/<port>`: DNAT; hairpin traffic (an endpoint reaching itself) is
//!   marked for masquerade.
//! - `postrouting` masquerades marked packets; `no-endpoints` rejects traffic to service
//!   ports that have no ready endpoint.

use std::fmt::Write;

use super::model::ServicePort;

pub const TABLE: &str = "ros";
const MASQ_MARK: &str = "0x00004000";

fn endpoint_chain(p: &ServicePort, ep: &(std::net::Ipv4Addr, u16)) -> String {
    format!("endpoint-{}__{}/{}", p.id, ep.0, ep.1)
}

fn affinity_set(p: &ServicePort, ep: &(std::net::Ipv4Addr, u16)) -> String {
    format!("affinity-{}__{}/{}", p.id, ep.0, ep.1)
}

fn elements(out: &mut String, items: &[String]) {
    if !items.is_empty() {
        let _ = writeln!(out, "    elements = {{ {} }}", items.join(", "));
    }
}

/// The body of table `ip ros` (see [`super::nft::replace_table`]).
pub fn table_body(ports: &[ServicePort]) -> String {
    let mut out = String::new();
    let mut service_ips = Vec::new();
    let mut node_ports = Vec::new();
    let mut no_endpoints = Vec::new();
    for p in ports {
        let has = !p.endpoints.is_empty();
        for ip in &p.cluster_ips {
            if has {
                service_ips.push(format!(
                    "{ip} . {} . {} : goto service-{}",
                    p.protocol, p.port, p.id
                ));
            } else {
                no_endpoints.push(format!("{ip} . {} . {}", p.protocol, p.port));
            }
        }
        for ip in &p.load_balancer_ips {
            if has {
                service_ips.push(format!(
                    "{ip} . {} . {} : goto external-{}",
                    p.protocol, p.port, p.id
                ));
            }
        }
        if let (Some(np), true) = (p.node_port, has) {
            node_ports.push(format!("{} . {np} : goto external-{}", p.protocol, p.id));
        }
    }
    out.push_str("  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict\n");
    elements(&mut out, &service_ips);
    out.push_str("  }\n");
    out.push_str("  map service-nodeports {\n    type inet_proto . inet_service : verdict\n");
    elements(&mut out, &node_ports);
    out.push_str("  }\n");
    out.push_str("  set no-endpoints {\n    type ipv4_addr . inet_proto . inet_service\n");
    elements(&mut out, &no_endpoints);
    out.push_str("  }\n");
    out.push_str(concat!(
        "  chain prerouting {\n",
        "    type nat hook prerouting priority -100; policy accept;\n",
        "    jump services\n",
        "  }\n",
        "  chain output {\n",
        "    type nat hook output priority -100; policy accept;\n",
        "    jump services\n",
        "  }\n",
        "  chain services {\n",
        "    ip daddr . meta l4proto . th dport vmap @service-ips\n",
        "    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports\n",
        "  }\n",
    ));
    let _ = write!(
        out,
        "  chain mark-for-masquerade {{\n    meta mark set meta mark | {MASQ_MARK}\n  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n\
         \x20   meta mark & {MASQ_MARK} == {MASQ_MARK} masquerade\n  }}\n"
    );
    for hook in ["forward", "output"] {
        let _ = write!(
            out,
            "  chain reject-{hook} {{\n    type filter hook {hook} priority -10; policy accept;\n\
             \x20   ip daddr . meta l4proto . th dport @no-endpoints reject\n  }}\n"
        );
    }
    for p in ports.iter().filter(|p| !p.endpoints.is_empty()) {
        service_chains(&mut out, p);
    }
    out
}

fn service_chains(out: &mut String, p: &ServicePort) {
    if let Some(timeout) = p.affinity_seconds {
        for ep in &p.endpoints {
            let _ = writeln!(
                out,
                "  set {} {{\n    type ipv4_addr\n    flags dynamic,timeout\n    timeout {timeout}s\n  }}",
                affinity_set(p, ep)
            );
        }
    }
    let _ = writeln!(out, "  chain service-{} {{", p.id);
    if p.affinity_seconds.is_some() {
        for ep in &p.endpoints {
            let _ = writeln!(
                out,
                "    ip saddr @{} goto {}",
                affinity_set(p, ep),
                endpoint_chain(p, ep)
            );
        }
    }
    let targets: Vec<String> = p
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| format!("{i} : goto {}", endpoint_chain(p, ep)))
        .collect();
    let _ = writeln!(
        out,
        "    numgen random mod {} vmap {{ {} }}\n  }}",
        p.endpoints.len(),
        targets.join(", ")
    );
    if p.node_port.is_some() || !p.load_balancer_ips.is_empty() {
        let _ = writeln!(
            out,
            "  chain external-{} {{\n    jump mark-for-masquerade\n    goto service-{}\n  }}",
            p.id, p.id
        );
    }
    for ep in &p.endpoints {
        let _ = writeln!(out, "  chain {} {{", endpoint_chain(p, ep));
        let _ = writeln!(out, "    ip saddr {} jump mark-for-masquerade", ep.0);
        if p.affinity_seconds.is_some() {
            let _ = writeln!(out, "    update @{} {{ ip saddr }}", affinity_set(p, ep));
        }
        let _ = writeln!(
            out,
            "    meta l4proto {} dnat to {}:{}\n  }}",
            p.protocol, ep.0, ep.1
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(endpoints: &[(&str, u16)]) -> ServicePort {
        ServicePort {
            id: "default/web/tcp/80".into(),
            protocol: "tcp",
            port: 80,
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            load_balancer_ips: vec![],
            node_port: None,
            affinity_seconds: None,
            endpoints: endpoints
                .iter()
                .map(|(ip, p)| (ip.parse().unwrap(), *p))
                .collect(),
        }
    }

    #[test]
    fn cluster_ip_load_balances_over_ready_endpoints() {
        let body = table_body(&[port(&[("10.244.0.5", 8080), ("10.244.0.7", 8080)])]);
        assert!(
            body.contains("elements = { 10.96.0.10 . tcp . 80 : goto service-default/web/tcp/80 }")
        );
        assert!(body.contains(
            "numgen random mod 2 vmap { 0 : goto endpoint-default/web/tcp/80__10.244.0.5/8080, \
             1 : goto endpoint-default/web/tcp/80__10.244.0.7/8080 }"
        ));
        assert!(body.contains("meta l4proto tcp dnat to 10.244.0.7:8080"));
        assert!(
            body.contains("ip saddr 10.244.0.5 jump mark-for-masquerade"),
            "hairpin"
        );
        assert!(!body.contains("affinity-"));
        assert!(!body.contains("external-"));
    }

    #[test]
    fn no_endpoints_rejects_instead_of_dnat() {
        let body = table_body(&[port(&[])]);
        assert!(body.contains("set no-endpoints {\n    type ipv4_addr . inet_proto . inet_service\n    elements = { 10.96.0.10 . tcp . 80 }"));
        assert!(!body.contains("chain service-default/web"));
        assert!(!body.contains("goto service-"));
    }

    #[test]
    fn node_port_load_balancer_and_affinity() {
        let mut p = port(&[("10.244.0.5", 8080)]);
        p.node_port = Some(30080);
        p.load_balancer_ips = vec!["10.5.0.2".parse().unwrap()];
        p.affinity_seconds = Some(60);
        let body = table_body(&[p]);
        assert!(body.contains("tcp . 30080 : goto external-default/web/tcp/80"));
        assert!(body.contains("10.5.0.2 . tcp . 80 : goto external-default/web/tcp/80"));
        assert!(body.contains(
            "chain external-default/web/tcp/80 {\n    jump mark-for-masquerade\n    goto service-default/web/tcp/80\n  }"
        ));
        assert!(body.contains(
            "set affinity-default/web/tcp/80__10.244.0.5/8080 {\n    type ipv4_addr\n    flags dynamic,timeout\n    timeout 60s\n  }"
        ));
        assert!(body.contains(
            "ip saddr @affinity-default/web/tcp/80__10.244.0.5/8080 goto endpoint-default/web/tcp/80__10.244.0.5/8080"
        ));
        assert!(body.contains("update @affinity-default/web/tcp/80__10.244.0.5/8080 { ip saddr }"));
    }

    /// The kernel (through nft, in a new network namespace) accepts the rendered table, and
    /// a second apply replaces it instead of adding to it.
    #[test]
    fn nft_accepts_the_rendered_table() {
        let mut sticky = port(&[("10.244.0.5", 8080), ("10.244.0.6", 8080)]);
        sticky.id = "default/sticky/tcp/80".into();
        sticky.cluster_ips = vec!["10.96.0.11".parse().unwrap()];
        sticky.node_port = Some(30080);
        sticky.load_balancer_ips = vec!["10.5.0.2".parse().unwrap()];
        sticky.affinity_seconds = Some(10800);
        let mut udp = port(&[("10.244.0.9", 53)]);
        udp.id = "kube-system/dns/udp/53".into();
        udp.protocol = "udp";
        udp.port = 53;
        udp.cluster_ips = vec!["10.96.0.53".parse().unwrap()];
        let empty = port(&[]);
        let first = table_body(&[sticky.clone(), udp, empty]);
        let second = table_body(&[sticky]);
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET): this test needs root");
            let apply = |body: &str| {
                crate::proxy::nft::apply(&crate::proxy::nft::replace_table(TABLE, body))
                    .expect("nft (Debian package nftables) must accept the ruleset")
            };
            apply(&first);
            let listed = crate::proxy::nft::list_table(TABLE).unwrap().unwrap();
            assert!(
                listed.contains("endpoint-kube-system/dns/udp/53__10.244.0.9/53"),
                "{listed}"
            );
            apply(&second);
            let listed = crate::proxy::nft::list_table(TABLE).unwrap().unwrap();
            assert!(
                !listed.contains("dns/udp"),
                "replaced, not merged: {listed}"
            );
            assert!(listed.contains("numgen random mod 2"), "{listed}");
            crate::proxy::nft::delete_table(TABLE).unwrap();
            assert!(crate::proxy::nft::list_table(TABLE).unwrap().is_none());
        })
        .join()
        .unwrap();
    }
}
