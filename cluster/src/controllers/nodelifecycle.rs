//! Node lifecycle: a node whose heartbeat (its Lease in kube-node-lease, or its Ready
//! condition's lastHeartbeatTime) is older than the grace period gets Ready=Unknown and the
//! `node.kubernetes.io/unreachable:NoExecute` taint (`not-ready` when Ready=False); pods on
//! a NoExecute-tainted node are evicted unless they tolerate the taint, after their
//! tolerationSeconds. Pods without a toleration for not-ready/unreachable get the default
//! (300 s), as the DefaultTolerationSeconds admission plugin gives them in Kubernetes.
//! Evicted pods are deleted; their controllers create replacements elsewhere.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::scheduler::filter::tolerates;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a node may go without a heartbeat before it is Unknown (40 s by default).
    pub grace: Duration,
    /// How often nodes are checked (5 s).
    pub period: Duration,
    /// tolerationSeconds for pods with no not-ready/unreachable toleration (300 s).
    pub default_toleration: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            grace: Duration::from_secs(40),
            period: Duration::from_secs(5),
            default_toleration: Duration::from_secs(300),
        }
    }
}

pub async fn run(client: Client, timing: Timing) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match check(&client, &timing).await {
            Ok(()) => {
                backoff = Duration::from_millis(200);
                tokio::time::sleep(timing.period).await;
            }
            Err(e) => {
                tracing::warn!("node lifecycle: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn ready_status(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "Unknown".into())
}

/// The latest heartbeat of a node, in seconds since the epoch.
fn heartbeat(n: &Node, lease: Option<&Lease>) -> i64 {
    let from_lease = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0.as_second());
    let from_status = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0.as_second());
    let created = n
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    from_lease.max(from_status).or(created).unwrap_or(0)
}

async fn check(client: &Client, timing: &Timing) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease_by_node: HashMap<String, Lease> = leases
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|l| Some((l.metadata.name.clone()?, l)))
        .collect();
    let now = jiff::Timestamp::now();
    let mut tainted: HashMap<String, Vec<Taint>> = HashMap::new();
    for node in nodes.list(&ListParams::default()).await?.items {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut ready = ready_status(&node);
        let last = heartbeat(&node, lease_by_node.get(&name));
        if now.as_second() - last > timing.grace.as_secs() as i64 && ready != "Unknown" {
            tracing::warn!(
                "node {name}: no heartbeat for {}s, marking it Unknown",
                now.as_second() - last
            );
            let mut conditions = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            for c in conditions.iter_mut().filter(|c| {
                matches!(
                    c.type_.as_str(),
                    "Ready" | "MemoryPressure" | "DiskPressure" | "PIDPressure"
                )
            }) {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
            }
            nodes
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"conditions": conditions}})),
                )
                .await?;
            ready = "Unknown".into();
        }
        // The NoExecute taint that matches the Ready condition, and only that one.
        let want = match ready.as_str() {
            "True" => None,
            "False" => Some(NOT_READY),
            _ => Some(UNREACHABLE),
        };
        let mut taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let before = taints.len();
        taints.retain(|t| {
            !((t.key == UNREACHABLE || t.key == NOT_READY)
                && t.effect == "NoExecute"
                && Some(t.key.as_str()) != want)
        });
        let mut changed = taints.len() != before;
        if let Some(key) = want
            && !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoExecute")
        {
            taints.push(Taint {
                key: key.into(),
                effect: "NoExecute".into(),
                time_added: Some(Time(now)),
                value: None,
            });
            changed = true;
        }
        if changed {
            let rv = node.metadata.resource_version.clone();
            nodes
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"resourceVersion": rv}, "spec": {"taints": taints}}),
                    ),
                )
                .await?;
        }
        let no_execute: Vec<Taint> = taints
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        if !no_execute.is_empty() {
            tainted.insert(name, no_execute);
        }
    }
    if tainted.is_empty() {
        return Ok(());
    }
    let pods: Api<Pod> = Api::all(client.clone());
    for pod in pods.list(&ListParams::default()).await?.items {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let Some(taints) = tainted.get(&node) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if evict_due(&pod, taints, timing, now) {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            tracing::info!("evicting pod {ns}/{name} from node {node}");
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
            super::events::record(
                client,
                super::events::reference("v1", "Pod", &pod.metadata),
                "Normal",
                "TaintManagerEviction",
                &format!("Marking for deletion Pod {ns}/{name}"),
                "node-controller",
            )
            .await;
        }
    }
    Ok(())
}

/// Whether some taint is not tolerated, or tolerated for less time than has passed.
fn evict_due(pod: &Pod, taints: &[Taint], timing: &Timing, now: jiff::Timestamp) -> bool {
    let mut tolerations: Vec<Toleration> = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    for key in [NOT_READY, UNREACHABLE] {
        let has = tolerations.iter().any(|t| {
            tolerates(
                t,
                &Taint {
                    key: key.into(),
                    effect: "NoExecute".into(),
                    ..Default::default()
                },
            )
        });
        if !has {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(timing.default_toleration.as_secs() as i64),
                value: None,
            });
        }
    }
    taints.iter().any(|taint| {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return true;
        }
        // Forever, unless every matching toleration is bounded; then the shortest bound.
        let Some(secs) = matching
            .iter()
            .map(|t| t.toleration_seconds)
            .collect::<Option<Vec<i64>>>()
            .and_then(|v| v.into_iter().min())
        else {
            return false;
        };
        let added = taint
            .time_added
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0);
        now.as_second() >= added + secs
    })
}
