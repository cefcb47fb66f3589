//! For scheduler and controller tests: a kube client for a `cluster server`, simulated
//! nodes (Node objects with a Ready status, as a node agent would report) and a simulated
//! kubelet that marks bound pods Running/Ready with an IP and finishes deleted pods.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use serde_json::json;

pub async fn client(kubeconfig: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("reading the kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    Client::try_from(config).expect("kube client")
}

/// Creates a Ready node with `labels`, 4 cpus, 8Gi and 110 pods allocatable.
pub async fn add_node(c: &Client, name: &str, labels: &[(&str, &str)]) -> Node {
    let nodes: Api<Node> = Api::all(c.clone());
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("kubernetes.io/hostname".to_string(), name.to_string())])
        .collect();
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    set_node_ready(c, name, "True").await
}

pub async fn set_node_ready(c: &Client, name: &str, ready: &str) -> Node {
    let nodes: Api<Node> = Api::all(c.clone());
    let now = jiff::Timestamp::now().to_string();
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}],
            }})),
        )
        .await
        .unwrap()
}

/// Polls `check` every 100 ms until it returns `Some`; panics with `what` after 60 s.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pods not being deleted in `ns` with `selector`.
pub async fn active_pods(c: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    pods.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

pub fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

/// The simulated kubelet of every node: a bound pod becomes Running and (unless labelled
/// `sim/ready: "false"`) Ready with an IP; a pod marked for deletion is removed at once.
/// Stops when dropped.
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
    /// Nodes whose kubelet is "down": their pods are left alone.
    pub down: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Kubelet {
    pub fn start(c: &Client) -> Kubelet {
        let c = c.clone();
        let next_ip = Arc::new(AtomicU32::new(2));
        let down: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Default::default();
        let down2 = down.clone();
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::all(c.clone());
            watcher(pods, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .for_each(|p| {
                    let c = c.clone();
                    let next_ip = next_ip.clone();
                    let down = down2.clone();
                    async move {
                        if let Ok(p) = p
                            && !node_of(&p).is_some_and(|n| down.lock().unwrap().contains(&n))
                        {
                            handle(&c, &p, &next_ip).await;
                        }
                    }
                })
                .await;
        });
        Kubelet { task, down }
    }

    /// Stops acting for `node` (as if its machine died).
    pub fn stop_node(&self, node: &str) {
        self.down.lock().unwrap().insert(node.to_string());
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(c: &Client, p: &Pod, next_ip: &AtomicU32) {
    let Some(node) = node_of(p).filter(|n| !n.is_empty()) else {
        return;
    };
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let name = p.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(c.clone(), &ns);
    if p.metadata.deletion_timestamp.is_some() {
        // A pod still held by finalizers is finished once they are gone (another event).
        if p.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty())
        {
            return;
        }
        let _ = api
            .delete(&name, &DeleteParams::default().grace_period(0))
            .await;
        return;
    }
    let status = p.status.clone().unwrap_or_default();
    let ready = p
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("sim/ready"))
        .is_none_or(|v| v != "false");
    let want = if ready { "True" } else { "False" };
    let has = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str());
    if status.phase.as_deref() == Some("Running") && has == Some(want) {
        return;
    }
    let ip = status.pod_ip.clone().unwrap_or_else(|| {
        let n = next_ip.fetch_add(1, Ordering::Relaxed);
        format!("10.244.{}.{}", n / 250, n % 250 + 2)
    });
    let now = jiff::Timestamp::now().to_string();
    let _ = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "hostIP": "127.0.0.1",
                "startTime": now,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": want, "lastTransitionTime": now},
                    {"type": "Ready", "status": want, "lastTransitionTime": now},
                ],
            }})),
        )
        .await;
    let _ = node;
}

/// Renews each node's Lease in kube-node-lease every 200 ms (a kubelet heartbeat) until
/// dropped; `stop` ends one node's heartbeat.
pub struct Heartbeats {
    task: tokio::task::JoinHandle<()>,
    stopped: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Heartbeats {
    pub fn start(c: &Client, nodes: &[&str]) -> Heartbeats {
        use k8s_openapi::api::coordination::v1::Lease;
        let c = c.clone();
        let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        let stopped: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Default::default();
        let stopped2 = stopped.clone();
        let task = tokio::spawn(async move {
            let leases: Api<Lease> = Api::namespaced(c, "kube-node-lease");
            loop {
                for n in &nodes {
                    if stopped2.lock().unwrap().contains(n) {
                        continue;
                    }
                    let now = jiff::Timestamp::now().to_string();
                    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": n},
                        "spec": {"holderIdentity": n, "leaseDurationSeconds": 40, "renewTime": now}});
                    let _ = leases
                        .patch(
                            n,
                            &PatchParams::apply("sim-kubelet").force(),
                            &Patch::Apply(lease),
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Heartbeats { task, stopped }
    }

    pub fn stop(&self, node: &str) {
        self.stopped.lock().unwrap().insert(node.to_string());
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.task.abort();
    }
}
