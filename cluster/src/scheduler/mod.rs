//! The scheduler: an API client that watches nodes and pods (kube-runtime reflectors), and
//! binds every pending pod to the best node it fits on through `pods/binding`. A pod that
//! fits nowhere gets `PodScheduled=False` and an Event, and is tried again when a node or
//! pod changes; a pass only writes what changed, so its own writes do not loop.

pub mod affinity;
pub mod filter;
pub mod quantity;
pub mod score;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Notify;

use crate::controllers::events;
use filter::NodeInfo;

pub const NAME: &str = "default-scheduler";

/// Binds in flight at once.
pub const BIND_PARALLELISM: usize = 16;

/// Counters a caller (the benchmark, tests) can read.
#[derive(Debug, Default)]
pub struct Stats {
    pub bound: std::sync::atomic::AtomicU64,
    pub unschedulable: std::sync::atomic::AtomicU64,
}

/// Runs the scheduler until the future is dropped.
pub async fn run(client: Client, stats: Arc<Stats>) {
    let kick = Arc::new(Notify::new());
    let nodes = reflect::<Node>(Api::all(client.clone()), kick.clone());
    let pods = reflect::<Pod>(Api::all(client.clone()), kick.clone());
    if nodes.wait_until_ready().await.is_err() || pods.wait_until_ready().await.is_err() {
        return;
    }
    let mut state = State::default();
    loop {
        let retry = state.pass(&client, &nodes, &pods, &stats).await;
        if retry {
            // A bind failed for a reason no watch event will report: try again soon.
            tokio::select! {
                _ = kick.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        } else {
            kick.notified().await;
        }
    }
}

/// A reflector whose every event wakes the scheduling loop.
fn reflect<K>(api: Api<K>, kick: Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(move |ev| {
            if let Err(e) = &ev {
                tracing::warn!("scheduler watch: {e}");
            }
            kick.notify_one();
            futures_util::future::ready(())
        });
    tokio::spawn(stream);
    reader
}

#[derive(Default)]
struct State {
    /// Pods bound in this process that the cache may not show bound yet: uid -> node.
    assumed: HashMap<String, String>,
    /// The last unschedulable message written per pod uid (so it is written once).
    reported: HashMap<String, String>,
    /// Placed pods with required anti-affinity, rebuilt each pass.
    anti: affinity::AntiIndex,
}

fn pending(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty)
        && p.metadata.deletion_timestamp.is_none()
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n == NAME)
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

impl State {
    /// One scheduling pass over every pending pod; true when a bind should be retried.
    async fn pass(
        &mut self,
        client: &Client,
        nodes: &Store<Node>,
        pods: &Store<Pod>,
        stats: &Stats,
    ) -> bool {
        let mut infos: BTreeMap<String, NodeInfo> = nodes
            .state()
            .iter()
            .map(|n| {
                let info = NodeInfo::from_shared(n.clone());
                (info.name().to_string(), info)
            })
            .collect();
        let all = pods.state();
        let mut waiting = Vec::new();
        let mut live = std::collections::HashSet::new();
        for p in &all {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            live.insert(uid.clone());
            let terminal = matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty());
            if let Some(node) = node {
                self.assumed.remove(&uid);
                self.reported.remove(&uid);
                if !terminal && let Some(info) = infos.get_mut(&node) {
                    info.add_shared(p.clone());
                }
            } else if let Some(node) = self.assumed.get(&uid) {
                if let Some(info) = infos.get_mut(node) {
                    info.add_shared(p.clone());
                }
            } else if pending(p) {
                waiting.push(p.clone());
            }
        }
        self.anti = affinity::anti_index(&infos);
        self.assumed.retain(|uid, _| live.contains(uid));
        self.reported.retain(|uid, _| live.contains(uid));
        waiting.sort_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
                .then(a.metadata.name.cmp(&b.metadata.name))
        });
        // Decisions are made one pod at a time against the assumed placements; the binds
        // (API calls) run concurrently, as kube-scheduler's binding cycle does.
        let mut inflight = futures_util::stream::FuturesUnordered::new();
        let mut retry = false;
        for pod in waiting {
            if let Some(node) = self.schedule_one(client, &pod, &mut infos, stats).await {
                let client = client.clone();
                inflight.push(async move {
                    let r = bind(&client, &pod, &node).await;
                    (pod, node, r)
                });
            }
            while inflight.len() >= BIND_PARALLELISM {
                if let Some((pod, node, r)) = inflight.next().await {
                    retry |= self.bound(client, &pod, &node, r, stats);
                }
            }
        }
        while let Some((pod, node, r)) = inflight.next().await {
            retry |= self.bound(client, &pod, &node, r, stats);
        }
        retry
    }

    /// Handles a bind's result; true when it failed in a way worth retrying.
    fn bound(
        &mut self,
        client: &Client,
        pod: &Pod,
        node: &str,
        r: kube::Result<()>,
        stats: &Stats,
    ) -> bool {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match r {
            Ok(()) => {
                stats
                    .bound
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let client = client.clone();
                let reference = events::reference("v1", "Pod", &pod.metadata);
                let msg = format!(
                    "Successfully assigned {}/{} to {node}",
                    ns_of(pod),
                    name_of(pod)
                );
                tokio::spawn(async move {
                    events::record(&client, reference, "Normal", "Scheduled", &msg, NAME).await;
                });
                false
            }
            // Gone, or bound meanwhile: the next pass sees what it is now.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                tracing::debug!("binding {}: {}", name_of(pod), e.message);
                self.assumed.remove(&uid);
                false
            }
            Err(e) => {
                tracing::warn!("binding {}/{} to {node}: {e}", ns_of(pod), name_of(pod));
                self.assumed.remove(&uid);
                true
            }
        }
    }

    async fn schedule_one(
        &mut self,
        client: &Client,
        pod: &Pod,
        infos: &mut BTreeMap<String, NodeInfo>,
        stats: &Stats,
    ) -> Option<String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut feasible = Vec::new();
        for info in infos.values() {
            match filter::fits(pod, info)
                .and_then(|()| affinity::check(pod, info, infos, &self.anti))
            {
                Ok(()) => feasible.push(info),
                Err(r) => *reasons.entry(r).or_default() += 1,
            }
        }
        let Some(best) = score::pick(pod, &feasible).map(|i| i.name().to_string()) else {
            let mut msg = format!("0/{} nodes are available", infos.len());
            if !reasons.is_empty() {
                let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
                msg.push_str(": ");
                msg.push_str(&parts.join(", "));
            }
            msg.push('.');
            // Written already (by this process, or by a scheduler before a restart).
            let on_pod = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
                .is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(&msg));
            if on_pod {
                self.reported.insert(uid.clone(), msg.clone());
            }
            if self.reported.get(&uid) != Some(&msg) {
                stats
                    .unschedulable
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match report_unschedulable(client, pod, &msg).await {
                    Ok(()) => {
                        self.reported.insert(uid, msg);
                    }
                    Err(e) => tracing::warn!(
                        "marking pod {}/{} unschedulable: {e}",
                        ns_of(pod),
                        name_of(pod)
                    ),
                }
            }
            return None;
        };
        self.assumed.insert(uid, best.clone());
        if let Some(info) = infos.get_mut(&best) {
            info.add(pod);
        }
        if !affinity::required_anti_affinity(pod).is_empty() {
            self.anti.push((best.clone(), affinity::Placed::of(pod)));
        }
        Some(best)
    }
}

fn ns_of(p: &Pod) -> &str {
    p.metadata.namespace.as_deref().unwrap_or("default")
}

fn name_of(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or("")
}

async fn bind(client: &Client, pod: &Pod, node: &str) -> kube::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns_of(pod));
    let binding = Binding {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    let _: serde_json::Value = api
        .create_subresource("binding", name_of(pod), &PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// Sets `PodScheduled=False` (reason Unschedulable) and records a FailedScheduling Event.
async fn report_unschedulable(client: &Client, pod: &Pod, msg: &str) -> kube::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns_of(pod));
    let mut conditions: Vec<PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.retain(|c| c.type_ != "PodScheduled");
    conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(msg.into()),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
        ..Default::default()
    });
    api.patch_status(
        name_of(pod),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Pending", "conditions": conditions}})),
    )
    .await?;
    events::record(
        client,
        events::reference("v1", "Pod", &pod.metadata),
        "Warning",
        "FailedScheduling",
        msg,
        NAME,
    )
    .await;
    Ok(())
}
