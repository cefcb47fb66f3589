//! Endpoints for a selector-less Service whose backends are the control-plane servers
//! themselves (`kubernetes` in default, `kube-dns` in kube-system), like kube-apiserver's
//! lease endpoint reconciler.
//!
//! Each server announces its address with a Lease in kube-system (`<prefix><address>`,
//! label `<label>=true`) renewed every few seconds; the Endpoints and EndpointSlice(s) list
//! the addresses of the leases that have not expired, so with several control planes each
//! one is listed while it runs. Selector-less, so the endpoints controller leaves them alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// Where the announcement leases live, whatever the Service's namespace.
pub const LEASE_NAMESPACE: &str = "kube-system";
const PORT_ANNOTATION: &str = "ros.dev/announced-port";
const LEASE_SECONDS: i64 = 30;
/// How often a server renews its lease and rewrites the endpoints.
pub const RENEW: Duration = Duration::from_secs(10);

/// One Service's endpoints, published by each server running its backend.
#[derive(Debug, Clone)]
pub struct Announcement {
    /// The Service's namespace and name (also the Endpoints' and first EndpointSlice's).
    pub namespace: &'static str,
    pub service: &'static str,
    /// Lease name prefix, followed by the dashed address (`ros-dns-10-5-0-2`).
    pub lease_prefix: &'static str,
    /// The label (value `true`) the leases of this Service carry.
    pub label: &'static str,
    /// The endpoint ports (name, protocol), all on the announced port.
    pub ports: &'static [(&'static str, &'static str)],
    /// Extra labels of the Endpoints.
    pub endpoints_labels: &'static [(&'static str, &'static str)],
    /// The EndpointSlices' `endpointslice.kubernetes.io/managed-by`.
    pub managed_by: &'static str,
    /// This server's address and port.
    pub address: IpAddr,
    pub port: u16,
}

/// The `kubernetes` Service in default: its port `https` on each API server's address.
pub fn kubernetes(address: IpAddr, api_port: u16) -> Announcement {
    Announcement {
        namespace: "default",
        service: "kubernetes",
        lease_prefix: "ros-apiserver-",
        label: "apiserver.ros.dev/server",
        ports: &[("https", "TCP")],
        endpoints_labels: &[],
        managed_by: "apiserver.ros.dev",
        address,
        port: api_port,
    }
}

/// Renews this server's lease and writes the endpoints every [`RENEW`], until dropped.
pub async fn run(client: kube::Client, a: Announcement) {
    loop {
        match publish(&client, &a).await {
            Ok(()) => tokio::time::sleep(RENEW).await,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "endpoints of {}", a.service);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// The address of the interface the default route would use; no packet is sent.
pub fn default_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.255:9").ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// The address a server announces: the one given, else the listen address when it is a
/// specific one, else the default route's interface's.
pub fn advertise_address(given: Option<IpAddr>, listen: IpAddr) -> Option<IpAddr> {
    given
        .or_else(|| (!listen.is_unspecified()).then_some(listen))
        .or_else(default_ip)
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// One round: renew the lease, drop expired ones, write the endpoints of the live ones.
pub async fn publish(client: &kube::Client, a: &Announcement) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let name = format!(
        "{}{}",
        a.lease_prefix,
        a.address.to_string().replace(['.', ':'], "-")
    );
    let renew = now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE,
                     "labels": {a.label: "true"},
                     "annotations": {PORT_ANNOTATION: a.port.to_string()}},
        "spec": {"holderIdentity": a.address.to_string(), "leaseDurationSeconds": LEASE_SECONDS,
                 "renewTime": renew},
    }))?;
    let what = || format!("the {} lease {name}", a.service);
    if leases.get_opt(&name).await.with_context(what)?.is_some() {
        leases
            .patch(&name, &PatchParams::default(), &Patch::Merge(&lease))
            .await
            .with_context(what)?;
    } else {
        leases
            .create(&PostParams::default(), &lease)
            .await
            .with_context(what)?;
    }
    let all = leases
        .list(&ListParams::default().labels(&format!("{}=true", a.label)))
        .await
        .with_context(|| format!("listing the {} leases", a.service))?;
    let (mut servers, expired) = live_servers(&all.items, now().as_second(), a.port);
    servers.insert(a.address, a.port);
    for name in expired {
        let _ = leases.delete(&name, &DeleteParams::default()).await;
    }
    write_endpoints(client, a, &servers).await
}

/// The servers the leases name (address -> port; `default_port` when a lease has none)
/// that are still renewed at `now` (Unix seconds), and the names of the expired leases.
pub fn live_servers(
    leases: &[Lease],
    now: i64,
    default_port: u16,
) -> (BTreeMap<IpAddr, u16>, Vec<String>) {
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
            .unwrap_or(default_port);
        if let Ok(ip) = holder.parse() {
            servers.insert(ip, port);
        }
    }
    (servers, expired)
}

/// Endpoints and EndpointSlice(s) listing `servers` (address -> port). The first slice
/// (lowest port, IPv4 first) is named after the Service, further ones
/// `<service>-<family>-<port>` (servers started with different ports).
async fn write_endpoints(
    client: &kube::Client,
    a: &Announcement,
    servers: &BTreeMap<IpAddr, u16>,
) -> Result<()> {
    let mut by_port: BTreeMap<u16, BTreeSet<IpAddr>> = BTreeMap::new();
    for (ip, port) in servers {
        by_port.entry(*port).or_default().insert(*ip);
    }
    let ports = |port: u16| -> Vec<serde_json::Value> {
        a.ports
            .iter()
            .map(|(name, protocol)| json!({"name": name, "port": port, "protocol": protocol}))
            .collect()
    };
    let subsets: Vec<_> = by_port
        .iter()
        .map(|(port, ips)| {
            json!({"addresses": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
                   "ports": ports(*port)})
        })
        .collect();
    let mut labels: BTreeMap<&str, &str> = a.endpoints_labels.iter().copied().collect();
    // The EndpointSlices are written here; the mirroring controller must not copy them.
    labels.insert("endpointslice.kubernetes.io/skip-mirror", "true");
    let endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": a.service, "namespace": a.namespace, "labels": labels},
        "subsets": subsets,
    }))?;
    let api: Api<Endpoints> = Api::namespaced(client.clone(), a.namespace);
    upsert(&api, a.service, endpoints, |x, y| {
        x.subsets == y.subsets && x.metadata.labels == y.metadata.labels
    })
    .await
    .with_context(|| format!("writing the {} Endpoints", a.service))?;

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), a.namespace);
    let mut wanted = Vec::new();
    for (port, ips) in &by_port {
        for (family, is_v4) in [("IPv4", true), ("IPv6", false)] {
            let addrs: Vec<&IpAddr> = ips.iter().filter(|ip| ip.is_ipv4() == is_v4).collect();
            if addrs.is_empty() {
                continue;
            }
            let slice_name = if wanted.is_empty() {
                a.service.to_string()
            } else {
                format!("{}-{}-{port}", a.service, family.to_ascii_lowercase())
            };
            let slice: EndpointSlice = serde_json::from_value(json!({
                "metadata": {"name": slice_name, "namespace": a.namespace, "labels": {
                    "kubernetes.io/service-name": a.service,
                    "endpointslice.kubernetes.io/managed-by": a.managed_by}},
                "addressType": family,
                "endpoints": addrs.iter().map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>(),
                "ports": ports(*port),
            }))?;
            upsert(&slices, &slice_name, slice, |x, y| {
                x.endpoints == y.endpoints && x.ports == y.ports && x.address_type == y.address_type
            })
            .await
            .with_context(|| format!("writing the {} EndpointSlice", a.service))?;
            wanted.push(slice_name);
        }
    }
    let existing = slices
        .list(&ListParams::default().labels(&format!(
            "kubernetes.io/service-name={},endpointslice.kubernetes.io/managed-by={}",
            a.service, a.managed_by
        )))
        .await
        .with_context(|| format!("listing the {} EndpointSlices", a.service))?;
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
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
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
            // A stopped server: renewed 31 s ago, its 30 s are over.
            lease("c", "10.5.0.4", "2026-11-26T00:59:29.000000Z", None),
        ];
        let (servers, expired) = live_servers(&leases, now.as_second(), 53);
        assert_eq!(
            servers.into_iter().collect::<Vec<_>>(),
            [
                ("10.5.0.2".parse().unwrap(), 53),
                ("10.5.0.3".parse().unwrap(), 5353)
            ]
        );
        assert_eq!(expired, ["c"]);
        // Later, b has stopped renewing too.
        let later = now.as_second() + 2;
        let (servers, expired) = live_servers(&leases, later, 6443);
        assert_eq!(
            servers.into_iter().collect::<Vec<_>>(),
            [("10.5.0.2".parse().unwrap(), 6443)]
        );
        assert_eq!(expired, ["b", "c"]);
    }

    #[test]
    fn advertise_address_prefers_the_given_then_a_specific_listen_address() {
        let given: IpAddr = "10.5.0.7".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(advertise_address(Some(given), local), Some(given));
        assert_eq!(advertise_address(None, local), Some(local));
        assert_eq!(
            advertise_address(None, "0.0.0.0".parse().unwrap()),
            default_ip()
        );
    }
}
