//! What the proxy programs, derived from Services and EndpointSlices: per service port its
//! virtual addresses (ClusterIPs, LoadBalancer ingress IPs), NodePort, session affinity and
//! the ready endpoints behind it. Pure functions, so the rules are testable without a kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kubernetes' default ClientIP affinity timeout (3 hours).
pub const DEFAULT_AFFINITY_SECONDS: i32 = 10800;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    /// `namespace/name/protocol/port`: unique, and usable in nft chain names.
    pub id: String,
    /// `tcp`, `udp` or `sctp` (nft's names).
    pub protocol: &'static str,
    pub port: u16,
    pub cluster_ips: Vec<Ipv4Addr>,
    pub load_balancer_ips: Vec<Ipv4Addr>,
    pub node_port: Option<u16>,
    /// ClientIP session affinity timeout in seconds (None: affinity None).
    pub affinity_seconds: Option<i32>,
    /// Ready endpoints (IP, port), sorted, without duplicates.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

fn nft_protocol(p: Option<&str>) -> Option<&'static str> {
    match p.unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

/// The service ports of all proxied services (headless and ExternalName ones have nothing to
/// proxy), each with its ready endpoints from `slices`.
pub fn service_ports(services: &[Service], slices: &[EndpointSlice]) -> Vec<ServicePort> {
    // (namespace, service) -> slices
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        by_service.entry((ns, svc.clone())).or_default().push(s);
    }
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cluster_ips: Vec<Ipv4Addr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if cluster_ips.is_empty() {
            continue; // headless ("None") or not allocated yet
        }
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let is_lb = spec.type_.as_deref() == Some("LoadBalancer");
        let load_balancer_ips: Vec<Ipv4Addr> = if is_lb {
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        } else {
            Vec::new()
        };
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let slices = by_service
            .get(&(ns.clone(), name.clone()))
            .cloned()
            .unwrap_or_default();
        for p in spec.ports.iter().flatten() {
            let Some(protocol) = nft_protocol(p.protocol.as_deref()) else {
                continue;
            };
            let port_name = p.name.clone().unwrap_or_default();
            let mut endpoints = BTreeSet::new();
            for s in &slices {
                let Some(target) = s.ports.iter().flatten().find(|sp| {
                    sp.name.clone().unwrap_or_default() == port_name
                        && nft_protocol(sp.protocol.as_deref()) == Some(protocol)
                }) else {
                    continue;
                };
                let Some(target_port) = target.port.and_then(|x| u16::try_from(x).ok()) else {
                    continue;
                };
                for e in &s.endpoints {
                    // kube-proxy semantics: only ready endpoints (unknown counts as ready).
                    let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    if let Some(ip) = e.addresses.first().and_then(|a| a.parse().ok()) {
                        endpoints.insert((ip, target_port));
                    }
                }
            }
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let node_port = if matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
                p.node_port.and_then(|n| u16::try_from(n).ok())
            } else {
                None
            };
            out.push(ServicePort {
                id: format!("{ns}/{name}/{protocol}/{port}"),
                protocol,
                port,
                cluster_ips: cluster_ips.clone(),
                load_balancer_ips: load_balancer_ips.clone(),
                node_port,
                affinity_seconds,
                endpoints: endpoints.into_iter().collect(),
            });
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    pub fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_ready_endpoints_with_the_named_port() {
        let s = svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]},
        }));
        let sl = slice(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"], "conditions": {"ready": false}},
                {"addresses": ["10.244.0.7"]},
            ],
        }));
        let other_ns = slice(json!({
            "metadata": {"name": "web-x", "namespace": "other",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 9999}],
            "endpoints": [{"addresses": ["10.244.9.9"]}],
        }));
        let ports = service_ports(&[s], &[sl, other_ns]);
        assert_eq!(ports.len(), 2);
        let http = ports.iter().find(|p| p.port == 80).unwrap();
        assert_eq!(http.id, "default/web/tcp/80");
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(
            http.endpoints,
            [
                ("10.244.0.5".parse().unwrap(), 8080),
                ("10.244.0.7".parse().unwrap(), 8080)
            ]
        );
        let dns = ports.iter().find(|p| p.port == 53).unwrap();
        assert_eq!(dns.protocol, "udp");
        assert!(dns.endpoints.is_empty(), "no slice port named dns");
    }

    #[test]
    fn headless_external_name_and_affinity() {
        let headless = svc(json!({"metadata": {"name": "h", "namespace": "d"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        let ext = svc(json!({"metadata": {"name": "e", "namespace": "d"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}));
        let sticky = svc(json!({"metadata": {"name": "s", "namespace": "d"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20", "sessionAffinity": "ClientIP",
                     "ports": [{"port": 80, "nodePort": 30001}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.5.0.2"}]}}}));
        let ports = service_ports(&[headless, ext, sticky], &[]);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].affinity_seconds, Some(DEFAULT_AFFINITY_SECONDS));
        assert_eq!(
            ports[0].load_balancer_ips,
            ["10.5.0.2".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(ports[0].node_port, Some(30001));
    }
}
