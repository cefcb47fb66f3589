//! The `kube-dns` Service in kube-system and its Endpoints and EndpointSlice, pointing at
//! the control-plane servers that run the DNS server, so the service proxy takes pods'
//! queries to the cluster DNS IP there.
//!
//! Each server announces its address with a Lease (`ros-dns-<address>`, label
//! [`ANNOUNCE_LABEL`]) renewed every few seconds; the endpoints are the addresses of the
//! leases that have not expired, so with several control planes each one is listed while it
//! runs. Selector-less, so the endpoints controller leaves them alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "kube-dns";
pub const ANNOUNCE_LABEL: &str = "dns.ros.dev/server";
const PORT_ANNOTATION: &str = "dns.ros.dev/port";
const LEASE_SECONDS: i64 = 30;
const RENEW: Duration = Duration::from_secs(10);

/// What this server publishes.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The Service's ClusterIP (the 10th address of the service range).
    pub cluster_ip: IpAddr,
    /// This server's address for the endpoints.
    pub address: IpAddr,
    /// The port the DNS server listens on (the endpoints' port; the Service's is 53).
    pub port: u16,
}

/// The 10th address of a service range (`10.43.0.0/16` -> `10.43.0.10`), as k3s uses.
pub fn cluster_dns_ip(service_cidr: ipnet::Ipv4Net) -> Option<IpAddr> {
    service_cidr.hosts().nth(9).map(IpAddr::V4)
}

/// Keeps the Service, the announcement and the endpoints up to date until dropped.
pub async fn run(client: kube::Client, publish: Publish) {
    let mut warned = false;
    loop {
        if let Err(e) = reconcile(&client, &publish, &mut warned).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "cluster DNS: the kube-dns service"
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        tokio::time::sleep(RENEW).await;
    }
}

/// The address of the interface the default route would use; no packet is sent.
pub fn default_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.255:9").ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

fn lease_name(address: IpAddr) -> String {
    format!("ros-dns-{}", super::zone::dashed(address))
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

async fn reconcile(client: &kube::Client, p: &Publish, warned: &mut bool) -> Result<()> {
    ensure_service(client, p, warned).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let name = lease_name(p.address);
    let renew = now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NAMESPACE,
                     "labels": {ANNOUNCE_LABEL: "true"},
                     "annotations": {PORT_ANNOTATION: p.port.to_string()}},
        "spec": {"holderIdentity": p.address.to_string(), "leaseDurationSeconds": LEASE_SECONDS,
                 "renewTime": renew},
    }))?;
    match leases
        .get_opt(&name)
        .await
        .context("reading the DNS lease")?
    {
        Some(_) => {
            leases
                .patch(&name, &PatchParams::default(), &Patch::Merge(&lease))
                .await
                .context("renewing the DNS lease")?;
        }
        None => {
            leases
                .create(&PostParams::default(), &lease)
                .await
                .context("creating the DNS lease")?;
        }
    }
    let all = leases
        .list(&ListParams::default().labels(&format!("{ANNOUNCE_LABEL}=true")))
        .await
        .context("listing the DNS leases")?;
    let (mut servers, expired) = live_servers(&all.items, now().as_second());
    servers.insert(p.address, p.port);
    for name in expired {
        let _ = leases.delete(&name, &DeleteParams::default()).await;
    }
    write_endpoints(client, &servers).await
}

/// The servers the announcement leases name (address -> DNS port) that are still renewed
/// at `now` (Unix seconds), and the names of the expired leases.
fn live_servers(leases: &[Lease], now: i64) -> (BTreeMap<IpAddr, u16>, Vec<String>) {
    let mut servers = BTreeMap::new();
    let mut expired = Vec::new();
    for l in leases {
        let Some(spec) = &l.spec else { continue };
        let (Some(holder), Some(renewed)) = (&spec.holder_identity, &spec.renew_time) else {
            continue;
        };
        let ttl = i64::from(spec.lease_duration_seconds.unwrap_or(0));
        if renewed.0.as_second() + ttl < now {
            expired.extend(l.metadata.name.clone());
            continue;
        }
        let port = l
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PORT_ANNOTATION))
            .and_then(|v| v.parse().ok())
            .unwrap_or(53);
        if let Ok(ip) = holder.parse() {
            servers.insert(ip, port);
        }
    }
    (servers, expired)
}

fn service_ports(port: u16) -> serde_json::Value {
    json!([
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port},
    ])
}

async fn ensure_service(client: &kube::Client, p: &Publish, warned: &mut bool) -> Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    match services
        .get_opt(NAME)
        .await
        .context("reading the kube-dns Service")?
    {
        None => {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {
                    "k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                    "kubernetes.io/name": "CoreDNS"}},
                "spec": {"clusterIP": p.cluster_ip.to_string(),
                         "clusterIPs": [p.cluster_ip.to_string()],
                         "ports": service_ports(p.port)},
            }))?;
            services
                .create(&PostParams::default(), &svc)
                .await
                .with_context(|| format!("creating the kube-dns Service on {}", p.cluster_ip))?;
            tracing::info!(
                "cluster DNS: created Service kube-system/kube-dns on {}",
                p.cluster_ip
            );
        }
        Some(cur) => {
            let spec = cur.spec.unwrap_or_default();
            if spec.cluster_ip.as_deref() != Some(p.cluster_ip.to_string().as_str()) && !*warned {
                *warned = true;
                tracing::warn!(
                    "cluster DNS: Service kube-system/kube-dns has clusterIP {:?}, not {} (pods are told {}); delete it to have it made again",
                    spec.cluster_ip,
                    p.cluster_ip,
                    p.cluster_ip
                );
            }
        }
    }
    Ok(())
}

/// Endpoints and EndpointSlice(s) listing `servers` (address -> DNS port).
async fn write_endpoints(client: &kube::Client, servers: &BTreeMap<IpAddr, u16>) -> Result<()> {
    // Ports differ only if servers were started with different --dns-listen ports; group by port.
    let mut by_port: BTreeMap<u16, BTreeSet<IpAddr>> = BTreeMap::new();
    for (ip, port) in servers {
        by_port.entry(*port).or_default().insert(*ip);
    }
    let ports = |port: u16| {
        json!([
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"},
        ])
    };
    let subsets: Vec<_> = by_port
        .iter()
        .map(|(port, ips)| {
            json!({"addresses": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
                   "ports": ports(*port)})
        })
        .collect();
    let endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"k8s-app": "kube-dns"}},
        "subsets": subsets,
    }))?;
    let api: Api<Endpoints> = Api::namespaced(client.clone(), NAMESPACE);
    upsert(&api, NAME, endpoints, |a, b| a.subsets == b.subsets)
        .await
        .context("writing the kube-dns Endpoints")?;

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let mut wanted = Vec::new();
    for (port, ips) in &by_port {
        for (family, is_v4) in [("IPv4", true), ("IPv6", false)] {
            let addrs: Vec<&IpAddr> = ips.iter().filter(|ip| ip.is_ipv4() == is_v4).collect();
            if addrs.is_empty() {
                continue;
            }
            let slice_name = format!("{NAME}-{}-{port}", family.to_ascii_lowercase());
            let slice: EndpointSlice = serde_json::from_value(json!({
                "metadata": {"name": slice_name, "namespace": NAMESPACE, "labels": {
                    "kubernetes.io/service-name": NAME,
                    "endpointslice.kubernetes.io/managed-by": "dns.ros.dev"}},
                "addressType": family,
                "endpoints": addrs.iter().map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>(),
                "ports": ports(*port),
            }))?;
            upsert(&slices, &slice_name, slice, |a, b| {
                a.endpoints == b.endpoints && a.ports == b.ports
            })
            .await
            .context("writing the kube-dns EndpointSlice")?;
            wanted.push(slice_name);
        }
    }
    let existing = slices
        .list(&ListParams::default().labels("endpointslice.kubernetes.io/managed-by=dns.ros.dev"))
        .await
        .context("listing the kube-dns EndpointSlices")?;
    for s in existing.items {
        let n = s.metadata.name.clone().unwrap_or_default();
        if !wanted.contains(&n) {
            let _ = slices.delete(&n, &DeleteParams::default()).await;
        }
    }
    Ok(())
}

/// Creates `obj`, or replaces the current one when `same` says it differs.
async fn upsert<K>(
    api: &Api<K>,
    name: &str,
    mut obj: K,
    same: impl Fn(&K, &K) -> bool,
) -> Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await? {
        None => {
            api.create(&PostParams::default(), &obj).await?;
        }
        Some(cur) if !same(&cur, &obj) => {
            obj.meta_mut().resource_version = cur.meta().resource_version.clone();
            api.replace(name, &PostParams::default(), &obj).await?;
        }
        Some(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_the_servers_whose_leases_are_renewed() {
        let lease = |name: &str, holder: &str, renewed: &str, port: Option<&str>| -> Lease {
            let mut l: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30,
                         "renewTime": renewed},
            }))
            .unwrap();
            if let Some(p) = port {
                l.metadata.annotations =
                    Some([(PORT_ANNOTATION.to_string(), p.to_string())].into());
            }
            l
        };
        let now: jiff::Timestamp = "2026-11-26T01:00:00Z".parse().unwrap();
        let leases = [
            lease("a", "10.5.0.2", "2026-11-26T00:59:50.000000Z", None),
            lease("b", "10.5.0.3", "2026-11-26T00:59:31.000000Z", Some("5353")),
            lease("c", "10.5.0.4", "2026-11-26T00:59:29.000000Z", None),
        ];
        let (servers, expired) = live_servers(&leases, now.as_second());
        assert_eq!(
            servers.into_iter().collect::<Vec<_>>(),
            [
                ("10.5.0.2".parse().unwrap(), 53),
                ("10.5.0.3".parse().unwrap(), 5353)
            ]
        );
        assert_eq!(expired, ["c"]);
    }

    #[test]
    fn cluster_dns_is_the_tenth_address() {
        assert_eq!(
            cluster_dns_ip("10.43.0.0/16".parse().unwrap()),
            Some("10.43.0.10".parse().unwrap())
        );
        assert_eq!(
            cluster_dns_ip("10.96.0.0/12".parse().unwrap()),
            Some("10.96.0.10".parse().unwrap())
        );
        assert_eq!(cluster_dns_ip("10.0.0.0/30".parse().unwrap()), None);
    }
}
