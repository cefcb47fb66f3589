//! LoadBalancer services get the node addresses as their ingress (as k3s's servicelb does);
//! the proxy on every node makes the same choice, so the agents agree instead of fighting.

use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// The InternalIPs of all nodes, sorted.
pub fn node_addresses(nodes: &[Arc<Node>]) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = nodes
        .iter()
        .filter_map(|n| {
            n.status
                .as_ref()?
                .addresses
                .iter()
                .flatten()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The ingress IPs service `svc` should show, when it is a LoadBalancer without a
/// loadBalancerClass (another controller owns those) and they differ from its status.
pub fn wanted_ingress(svc: &Service, nodes: &[Ipv4Addr]) -> Option<Vec<Ipv4Addr>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
        return None;
    }
    let current: Vec<Ipv4Addr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    (current != nodes && !nodes.is_empty()).then(|| nodes.to_vec())
}

pub async fn set_ingress(client: &kube::Client, svc: &Service, ips: &[Ipv4Addr]) -> Result<()> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or("");
    let ingress: Vec<_> = ips
        .iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect();
    Api::<Service>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}})),
        )
        .await
        .with_context(|| format!("setting the load balancer status of service {ns}/{name}"))?;
    tracing::info!(service = %format!("{ns}/{name}"), ingress = ?ips, "load balancer addresses");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_classless_load_balancers_that_differ() {
        let nodes: Vec<Ipv4Addr> = vec!["10.5.0.2".parse().unwrap(), "10.5.0.3".parse().unwrap()];
        let lb: Service = serde_json::from_value(json!({
            "metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}}))
        .unwrap();
        assert_eq!(wanted_ingress(&lb, &nodes), Some(nodes.clone()));
        let done: Service = serde_json::from_value(json!({
            "metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.5.0.2"}, {"ip": "10.5.0.3"}]}}}))
        .unwrap();
        assert_eq!(wanted_ingress(&done, &nodes), None);
        let classed: Service = serde_json::from_value(json!({
            "metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "loadBalancerClass": "x/y"}}))
        .unwrap();
        assert_eq!(wanted_ingress(&classed, &nodes), None);
        let cip: Service = serde_json::from_value(json!({
            "metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}}))
        .unwrap();
        assert_eq!(wanted_ingress(&cip, &nodes), None);
    }
}
