//! Pod CIDR allocation: each node gets a free /prefix (default /24) of the cluster CIDR in
//! `spec.podCIDR` and `spec.podCIDRs`, once; it is never changed afterwards.

use std::collections::HashSet;
use std::sync::Arc;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::Mutex;

use super::Error;

struct Alloc {
    client: Client,
    cidr: Ipv4Net,
    prefix: u8,
    /// Serialises allocations so two nodes never get the same range.
    lock: Mutex<()>,
    backoff: super::Backoff,
}

pub async fn run(client: Client, cidr: Ipv4Net, prefix: u8) {
    let ctx = Arc::new(Alloc {
        client: client.clone(),
        cidr,
        prefix,
        lock: Mutex::new(()),
        backoff: super::Backoff::default(),
    });
    let stream = Controller::new(Api::<Node>::all(client), watcher::Config::default()).run(
        reconcile,
        error_policy,
        ctx,
    );
    super::drain("podcidr", stream).await;
}

fn error_policy(n: Arc<Node>, e: &Error, ctx: Arc<Alloc>) -> Action {
    tracing::warn!("pod CIDR for node {}: {e}", super::key_of(&n.metadata));
    ctx.backoff.failed(&super::key_of(&n.metadata))
}

/// The first subnet of `cidr` with `prefix` not in `used`.
pub fn next_free(cidr: Ipv4Net, prefix: u8, used: &HashSet<Ipv4Net>) -> Option<Ipv4Net> {
    cidr.subnets(prefix).ok()?.find(|s| !used.contains(s))
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Alloc>) -> Result<Action, Error> {
    let has = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty());
    if has || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let _guard = ctx.lock.lock().await;
    let api: Api<Node> = Api::all(ctx.client.clone());
    let used: HashSet<Ipv4Net> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok())
        .collect();
    let Some(free) = next_free(ctx.cidr, ctx.prefix, &used) else {
        return Err(Error::Invalid(format!(
            "cluster CIDR {} has no free /{} left",
            ctx.cidr, ctx.prefix
        )));
    };
    let name = node.metadata.name.clone().unwrap_or_default();
    let rv = node.metadata.resource_version.clone();
    // The resourceVersion makes this a compare-and-swap: a node changed meanwhile is retried.
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"resourceVersion": rv},
                             "spec": {"podCIDR": free.to_string(), "podCIDRs": [free.to_string()]}})),
    )
    .await?;
    tracing::info!("node {name}: pod CIDR {free}");
    ctx.backoff.ok(&super::key_of(&node.metadata));
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_free_subnet() {
        let cidr: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        let mut used = HashSet::new();
        assert_eq!(
            next_free(cidr, 24, &used).unwrap().to_string(),
            "10.244.0.0/24"
        );
        used.insert("10.244.0.0/24".parse().unwrap());
        assert_eq!(
            next_free(cidr, 24, &used).unwrap().to_string(),
            "10.244.1.0/24"
        );
        let tiny: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let all: HashSet<Ipv4Net> = tiny.subnets(25).unwrap().collect();
        assert!(next_free(tiny, 25, &all).is_none());
    }
}
