//! The `kube-dns` Service in kube-system and its Endpoints and EndpointSlice, pointing at
//! the control-plane servers that run the DNS server, so the service proxy takes pods'
//! queries to the cluster DNS IP there. The endpoints come from each server's announcement
//! lease ([`crate::announce`]).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::announce;

pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "kube-dns";
pub const ANNOUNCE_LABEL: &str = "dns.ros.dev/server";

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
    let announcement = announce::Announcement {
        namespace: NAMESPACE,
        service: NAME,
        lease_prefix: "ros-dns-",
        label: ANNOUNCE_LABEL,
        ports: &[("dns", "UDP"), ("dns-tcp", "TCP")],
        endpoints_labels: &[("k8s-app", "kube-dns")],
        managed_by: "dns.ros.dev",
        address: publish.address,
        port: publish.port,
    };
    let mut warned = false;
    loop {
        let round = async {
            ensure_service(&client, &publish, &mut warned).await?;
            announce::publish(&client, &announcement).await
        };
        if let Err(e) = round.await {
            tracing::warn!(
                error = format!("{e:#}"),
                "cluster DNS: the kube-dns service"
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        tokio::time::sleep(announce::RENEW).await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
