//! Pod networking. The agent calls [`PodNetwork::setup`] before it creates a pod's first
//! container and [`PodNetwork::teardown`] after the last one is removed; the containers'
//! OCI specs join the namespace `setup` returned.
//!
//! - `host`: pods share the node's network namespace (no setup at all).
//! - `bridge`: a namespace per pod, a veth pair from the pod's eth0 to the node bridge `ros0`
//!   (which holds the gateway, the first IP of the node's pod CIDR), an IP per pod from the
//!   pod CIDR (persisted under the agent root), host routes to the other nodes' pod CIDRs via
//!   their InternalIP, and masquerade for traffic leaving the cluster CIDR. Host routes (not
//!   VXLAN) because the nodes of a ros cluster share a layer-2 network (one QEMU bridge, one
//!   LAN); there is no encapsulation overhead and nothing to configure, at the price of not
//!   crossing routers.

pub mod bridge;
pub mod ipam;
pub mod links;
pub mod netns;
pub mod routes;

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Value, json};

/// The network a pod got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodNet {
    /// The network namespace its containers join (None: the node's own).
    pub netns_path: Option<PathBuf>,
    /// The pod IP (None: the node's IP).
    pub ip: Option<IpAddr>,
}

#[async_trait::async_trait]
pub trait PodNetwork: Send + Sync + 'static {
    /// Gives pod `uid` its network; idempotent (a second call returns the same result, also
    /// after an agent restart).
    async fn setup(&self, uid: &str, namespace: &str, name: &str) -> Result<PodNet>;
    /// Removes everything `setup` made for pod `uid`; absent is fine.
    async fn teardown(&self, uid: &str) -> Result<()>;
    /// The pods that have network state here (to clean up after pods deleted while the
    /// agent was away).
    async fn pods(&self) -> Result<Vec<String>>;
}

/// `--pod-network`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Host,
    Bridge,
}

/// Pods share the node's network namespace.
pub struct HostNetwork;

#[async_trait::async_trait]
impl PodNetwork for HostNetwork {
    async fn setup(&self, _uid: &str, _namespace: &str, _name: &str) -> Result<PodNet> {
        Ok(PodNet::default())
    }
    async fn teardown(&self, _uid: &str) -> Result<()> {
        Ok(())
    }
    async fn pods(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// Makes the OCI runtime spec join the pod's network namespace (when it has one).
pub fn join(spec: &mut Value, net: &PodNet) {
    let Some(path) = &net.netns_path else { return };
    if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
        ns.push(json!({"type": "network", "path": path}));
    }
}

/// Whether the pod asked for the node's network (`spec.hostNetwork`).
pub fn host_network(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_joins_the_pod_namespace_only_when_there_is_one() {
        let mut spec = json!({"linux": {"namespaces": [{"type": "pid"}]}});
        join(&mut spec, &PodNet::default());
        assert_eq!(spec["linux"]["namespaces"], json!([{"type": "pid"}]));
        let net = PodNet {
            netns_path: Some("/run/ros/netns/u1".into()),
            ip: Some("10.244.0.2".parse().unwrap()),
        };
        join(&mut spec, &net);
        join(&mut spec, &net);
        assert_eq!(
            spec["linux"]["namespaces"],
            json!([{"type": "pid"}, {"type": "network", "path": "/run/ros/netns/u1"}])
        );
    }
}
