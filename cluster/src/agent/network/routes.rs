//! Routes to the other nodes' pod CIDRs: `podCIDR via <InternalIP>` for every other Node,
//! kept in sync with the Node objects (watched) and re-applied periodically.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures_util::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

use super::links;

/// The routes this node wants: every other node's pod CIDR via its InternalIP.
pub fn wanted(nodes: &[Arc<Node>], me: &str) -> Vec<(Ipv4Net, Ipv4Addr)> {
    let mut out: Vec<(Ipv4Net, Ipv4Addr)> = nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(me))
        .filter_map(|n| {
            let cidr: Ipv4Net = n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
            let ip: Ipv4Addr = n
                .status
                .as_ref()?
                .addresses
                .iter()
                .flatten()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()?;
            Some((cidr, ip))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Watches Nodes and keeps the routes in sync until the task is dropped.
pub async fn run(client: kube::Client, me: String) -> Result<()> {
    let (reader, writer): (Store<Node>, _) = reflector::store();
    let changed = Arc::new(Notify::new());
    let notify = changed.clone();
    let api: Api<Node> = Api::all(client);
    let watch = tokio::spawn(async move {
        reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .for_each(|ev| {
                if let Err(e) = ev {
                    tracing::warn!(error = %e, "watching nodes for pod routes");
                }
                notify.notify_one();
                async {}
            })
            .await;
    });
    let _abort = AbortOnDrop(watch);
    let _ = reader.wait_until_ready().await;
    let mut applied: Option<Vec<(Ipv4Net, Ipv4Addr)>> = None;
    let mut ticks = 0u32;
    loop {
        let want = wanted(&reader.state(), &me);
        // Re-apply every 30 s even when unchanged (someone may have flushed the table).
        if applied.as_ref() != Some(&want) || ticks >= 30 {
            let w = want.clone();
            match tokio::task::spawn_blocking(move || links::sync_routes(&w)).await? {
                Ok(()) => {
                    if applied.as_ref() != Some(&want) {
                        tracing::info!(routes = ?want, "pod CIDR routes to other nodes");
                    }
                    applied = Some(want);
                    ticks = 0;
                }
                Err(e) => tracing::warn!(error = format!("{e:#}"), "pod CIDR routes"),
            }
        }
        ticks += 1;
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"podCIDR": cidr},
                "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn routes_go_to_other_nodes_with_a_pod_cidr() {
        let nodes = [
            node("a", Some("10.244.0.0/24"), "10.5.0.2"),
            node("b", Some("10.244.1.0/24"), "10.5.0.3"),
            node("c", None, "10.5.0.4"),
        ];
        assert_eq!(
            wanted(&nodes, "a"),
            [(
                "10.244.1.0/24".parse().unwrap(),
                "10.5.0.3".parse().unwrap()
            )]
        );
        assert_eq!(wanted(&nodes, "b").len(), 1);
    }
}
