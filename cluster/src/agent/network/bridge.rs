//! The `bridge` pod network (see the module doc of `network`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use super::ipam::{self, Ipam};
use super::{PodNet, PodNetwork, links, netns};
use crate::proxy::nft;

pub const BRIDGE: &str = "ros0";
/// nftables table with the pod network's own NAT rules (the service proxy has its own).
pub const NAT_TABLE: &str = "ros-net";

pub struct Config {
    pub node_name: String,
    /// Where the pods' namespace files are mounted.
    pub netns_dir: PathBuf,
    /// The IP allocations file.
    pub ipam_path: PathBuf,
    /// All pods of the cluster; traffic from it to elsewhere is masqueraded.
    pub cluster_cidr: Ipv4Net,
}

pub struct BridgeNetwork {
    cfg: Config,
    client: kube::Client,
    /// Set up on first use: the node's pod CIDR must have been assigned by then.
    ipam: Mutex<Option<Ipam>>,
    known: Mutex<HashMap<String, PodNet>>,
}

/// The host end of pod `uid`'s veth: stable and within the 15-byte interface name limit.
pub fn host_link_name(uid: &str) -> String {
    let h = ring::digest::digest(&ring::digest::SHA256, uid.as_bytes());
    format!("veth{}", &crate::agent::runtime::hex(h.as_ref())[..10])
}

/// The pod network's NAT: masquerade what leaves the cluster CIDR, and service traffic a pod
/// sent that the proxy turned back onto the bridge (without this, the reply would go
/// straight from pod to pod on the bridge and never be un-NATed).
pub fn nat_rules(bridge: &str, pod_cidr: Ipv4Net, cluster_cidr: Ipv4Net) -> String {
    format!(
        "  chain postrouting {{\n\
         \x20   type nat hook postrouting priority 100; policy accept;\n\
         \x20   oifname \"{bridge}\" ip saddr {pod_cidr} ct status dnat masquerade\n\
         \x20   ip saddr {cluster_cidr} ip daddr != {cluster_cidr} masquerade\n\
         \x20 }}\n"
    )
}

impl BridgeNetwork {
    pub fn new(cfg: Config, client: kube::Client) -> Arc<BridgeNetwork> {
        Arc::new(BridgeNetwork {
            cfg,
            client,
            ipam: Mutex::new(None),
            known: Mutex::new(HashMap::new()),
        })
    }

    /// Starts the route sync to the other nodes (runs until the returned task is aborted).
    pub fn spawn_routes(&self) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(super::routes::run(
            self.client.clone(),
            self.cfg.node_name.clone(),
        ))
    }

    async fn pod_cidr(&self) -> Result<Ipv4Net> {
        let node = Api::<Node>::all(self.client.clone())
            .get(&self.cfg.node_name)
            .await
            .with_context(|| format!("reading node {}", self.cfg.node_name))?;
        let cidr = node
            .spec
            .and_then(|s| s.pod_cidr)
            .with_context(|| format!("node {} has no spec.podCIDR yet", self.cfg.node_name))?;
        cidr.parse()
            .with_context(|| format!("node {} spec.podCIDR {cidr:?}", self.cfg.node_name))
    }

    /// Loads the IPAM state and makes the bridge, forwarding and NAT (once).
    async fn ensure_node(&self) -> Result<()> {
        if self.ipam.lock().unwrap().is_some() {
            return Ok(());
        }
        let cidr = self.pod_cidr().await?;
        let cluster = self.cfg.cluster_cidr;
        let ipam_path = self.cfg.ipam_path.clone();
        let ipam = tokio::task::spawn_blocking(move || -> Result<Ipam> {
            let ipam = Ipam::load(&ipam_path, cidr)?;
            links::ensure_bridge(BRIDGE, ipam::gateway(cidr), cidr.prefix_len())?;
            netns::sysctl("net.ipv4.ip_forward", "1")?;
            nft::apply(&nft::replace_table(
                NAT_TABLE,
                &nat_rules(BRIDGE, cidr, cluster),
            ))
            .context("pod network NAT rules")?;
            Ok(ipam)
        })
        .await??;
        tracing::info!(pod_cidr = %cidr, bridge = BRIDGE, "pod network ready");
        *self.ipam.lock().unwrap() = Some(ipam);
        Ok(())
    }

    fn netns_path(&self, uid: &str) -> PathBuf {
        self.cfg.netns_dir.join(uid)
    }
}

#[async_trait::async_trait]
impl PodNetwork for Arc<BridgeNetwork> {
    async fn setup(&self, uid: &str, namespace: &str, name: &str) -> Result<PodNet> {
        if let Some(n) = self.known.lock().unwrap().get(uid) {
            return Ok(n.clone());
        }
        self.ensure_node().await?;
        let this = self.clone();
        let uid_s = uid.to_string();
        let net = tokio::task::spawn_blocking(move || -> Result<PodNet> {
            let uid = uid_s.as_str();
            let mut guard = this.ipam.lock().unwrap();
            let ipam = guard.as_mut().context("pod network not initialised")?;
            let ip = ipam.allocate(uid)?;
            let cidr = ipam.cidr();
            drop(guard);
            let path = this.netns_path(uid);
            let host = host_link_name(uid);
            // Adopt what an earlier agent made; otherwise (re)make it.
            if !(netns::is_netns(&path) && links::link_exists(&host)?) {
                netns::create(&path)?;
                links::add_pod_link(&links::PodLink {
                    host_name: &host,
                    bridge: BRIDGE,
                    netns: &path,
                    ip,
                    prefix: cidr.prefix_len(),
                    gateway: ipam::gateway(cidr),
                })?;
            }
            Ok(PodNet {
                netns_path: Some(path),
                ip: Some(IpAddr::V4(ip)),
            })
        })
        .await?
        .with_context(|| format!("pod network of {namespace}/{name}"))?;
        tracing::info!(pod = %format!("{namespace}/{name}"), ip = ?net.ip, "pod network set up");
        self.known
            .lock()
            .unwrap()
            .insert(uid.to_string(), net.clone());
        Ok(net)
    }

    async fn teardown(&self, uid: &str) -> Result<()> {
        let _ = self.ensure_node().await;
        let this = self.clone();
        let uid_s = uid.to_string();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let uid = uid_s.as_str();
            links::delete_link(&host_link_name(uid))?;
            netns::remove(&this.netns_path(uid))?;
            if let Some(ipam) = this.ipam.lock().unwrap().as_mut() {
                ipam.release(uid)?;
            }
            Ok(())
        })
        .await?
        .with_context(|| format!("tearing down the pod network of pod {uid}"))?;
        if self.known.lock().unwrap().remove(uid).is_some() {
            tracing::info!(%uid, "pod network torn down");
        }
        Ok(())
    }

    async fn pods(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .ipam
            .lock()
            .unwrap()
            .as_ref()
            .map(|i| i.owners())
            .unwrap_or_default();
        if let Ok(dir) = std::fs::read_dir(&self.cfg.netns_dir) {
            out.extend(
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_are_short_stable_and_distinct() {
        let a = host_link_name("0b6f1a4e-1111-4c3a-9d1e-000000000001");
        assert_eq!(a, host_link_name("0b6f1a4e-1111-4c3a-9d1e-000000000001"));
        assert_ne!(a, host_link_name("0b6f1a4e-1111-4c3a-9d1e-000000000002"));
        assert!(a.len() <= 15 && a.starts_with("veth"));
    }

    #[test]
    fn nat_masquerades_leaving_traffic_and_bridge_hairpins() {
        let r = nat_rules(
            "ros0",
            "10.244.1.0/24".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
        );
        assert!(r.contains("ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade"));
        assert!(r.contains("oifname \"ros0\" ip saddr 10.244.1.0/24 ct status dnat masquerade"));
    }
}
