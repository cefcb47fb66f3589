//! DaemonSet: one pod per eligible node. As upstream, a daemon pod is created with a
//! required node affinity on `metadata.name` of its node and the default scheduler binds it;
//! the DaemonSet default tolerations are added to the pod. Template changes roll out with
//! RollingUpdate (at most maxUnavailable nodes without an available pod) or wait for the user
//! to delete pods (OnDelete). The status carries what `kubectl rollout status ds/x` reads.
//! Every template is recorded as a ControllerRevision (see `revisions`), so `kubectl rollout
//! history` and `rollout undo` work on DaemonSets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Node, NodeCondition, NodeStatus, Pod, PodSpec, PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::{Ctx, Error};
use crate::scheduler::filter;

/// The label carrying the template hash (upstream's ControllerRevision hash label).
pub const HASH_LABEL: &str = "controller-revision-hash";

pub async fn run(client: Client) {
    let ctx = Ctx::new(client.clone());
    let controller = Controller::new(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    );
    // Any node change may change which nodes are eligible for every DaemonSet.
    let sets = controller.store();
    let stream = controller
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .owns(
            Api::<ControllerRevision>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            Api::<Node>::all(client),
            watcher::Config::default(),
            move |_node: Node| {
                sets.state()
                    .iter()
                    .map(|ds| ObjectRef::from_obj(&**ds))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, error_policy, ctx);
    super::drain("daemonset", stream).await;
}

fn error_policy(ds: Arc<DaemonSet>, e: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!("daemonset {}: {e}", super::key_of(&ds.metadata));
    ctx.backoff.failed(&super::key_of(&ds.metadata))
}

/// The tolerations upstream adds to every daemon pod, so it stays on nodes that are not
/// ready, unreachable, under pressure or cordoned.
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut v = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        v.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    v
}

/// The template's pod spec with the default tolerations added (those it does not have).
fn daemon_pod_spec(template: &PodTemplateSpec) -> PodSpec {
    let mut spec = template.spec.clone().unwrap_or_default();
    let mut tols = spec.tolerations.take().unwrap_or_default();
    for d in default_tolerations(spec.host_network == Some(true)) {
        if !tols.contains(&d) {
            tols.push(d);
        }
    }
    spec.tolerations = Some(tols);
    spec
}

/// Whether a daemon pod belongs on `node`: nodeSelector, required node affinity, and no
/// untolerated NoSchedule/NoExecute taint. Readiness does not matter (a node that is not
/// ready still runs its daemons once it is).
pub fn eligible(spec: &PodSpec, node: &Node) -> bool {
    // The scheduler's checks, with readiness and capacity taken out.
    let probe = Node {
        metadata: node.metadata.clone(),
        spec: node.spec.clone(),
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    };
    let pod = Pod {
        spec: Some(PodSpec {
            containers: Vec::new(),
            ..spec.clone()
        }),
        ..Default::default()
    };
    filter::fits(&pod, &filter::NodeInfo::new(probe)).is_ok()
}

/// The node a daemon pod is for: its nodeName, or the node its affinity names.
pub fn target_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// The pod's spec pinned to `node` through a required node affinity term on
/// `metadata.name` (replacing any other matchFields, keeping the template's expressions).
fn pin_to_node(mut spec: PodSpec, node: &str) -> PodSpec {
    let field = json!({"key": "metadata.name", "operator": "In", "values": [node]});
    let mut affinity = serde_json::to_value(spec.affinity.take().unwrap_or_default())
        .unwrap_or_else(|_| json!({}));
    let req = &mut affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    let mut terms: Vec<serde_json::Value> = req["nodeSelectorTerms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if terms.is_empty() {
        terms.push(json!({}));
    }
    for t in &mut terms {
        t["matchFields"] = json!([field.clone()]);
    }
    *req = json!({"nodeSelectorTerms": terms});
    spec.affinity = serde_json::from_value(affinity).ok();
    spec
}

/// maxUnavailable as a node count of `desired` (percentages round up, at least 1 when
/// nothing may surge, as upstream validation requires).
fn max_unavailable(v: Option<&IntOrString>, desired: i32) -> i32 {
    let n = match v {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((desired as i64 * pct + 99) / 100) as i32
        }
        None => 1,
    };
    n.max(1)
}

fn pod_hash(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .map(String::as_str)
}

fn created(p: &Pod) -> i64 {
    p.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = super::key_of(&ds.metadata);
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let spec = ds
        .spec
        .clone()
        .ok_or_else(|| Error::Invalid("spec: Required value".into()))?;
    let selector = super::selector_string(&spec.selector)?;
    // The current template's revision (recorded first, as upstream does): its hash labels
    // the pods, so going back to an older template brings back that template's pods.
    let history = super::revisions::sync(&ctx.client, &ds, &selector).await?;
    let hash = history.hash();
    let pod_spec = daemon_pod_spec(&spec.template);

    let nodes = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pods = super::replicaset::owned_pods(&ctx.client, &ns, &selector, &uid).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    // Daemon pods by node; failed ones are deleted (and replaced on a later pass).
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    let mut deletes: Vec<String> = Vec::new();
    for p in &pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Failed" | "Succeeded")) {
            deletes.push(p.metadata.name.clone().unwrap_or_default());
            continue;
        }
        if let Some(n) = target_node(p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    // Pods being deleted still occupy their node until they are gone.
    let terminating: std::collections::HashSet<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .filter_map(target_node)
        .collect();

    let eligible_nodes: Vec<&Node> = nodes.iter().filter(|n| eligible(&pod_spec, n)).collect();
    let eligible_names: std::collections::HashSet<&str> = eligible_nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let mut creates: Vec<String> = Vec::new();
    let mut misscheduled = 0;
    for (node, ps) in &by_node {
        if !eligible_names.contains(node.as_str()) {
            misscheduled += 1;
            deletes.extend(
                ps.iter()
                    .map(|p| p.metadata.name.clone().unwrap_or_default()),
            );
        } else if ps.len() > 1 {
            // Keep the oldest updated pod (else the oldest); delete the rest.
            let mut sorted = ps.clone();
            sorted.sort_by_key(|p| (pod_hash(p) != Some(&hash), created(p)));
            deletes.extend(
                sorted[1..]
                    .iter()
                    .map(|p| p.metadata.name.clone().unwrap_or_default()),
            );
        }
    }
    for n in &eligible_nodes {
        let node = n.metadata.name.clone().unwrap_or_default();
        if !by_node.contains_key(&node) && !terminating.contains(&node) {
            creates.push(node);
        }
    }

    // Rolling update: old pods go, at most maxUnavailable nodes without an available pod.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let desired = eligible_nodes.len() as i32;
    let mut recheck: Option<Duration> = None;
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() != Some("OnDelete") {
        let budget = max_unavailable(
            strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.max_unavailable.as_ref()),
            desired,
        );
        let mut unavailable = 0;
        let mut old_available = Vec::new();
        for n in &eligible_nodes {
            let node = n.metadata.name.as_deref().unwrap_or("");
            let Some(ps) = by_node.get(node) else {
                unavailable += 1;
                continue;
            };
            let (avail, left) = ps
                .iter()
                .map(|p| super::pod_available(p, min_ready))
                .fold((false, None), |(a, l), (b, m)| (a || b, l.or(m)));
            if let Some(l) = left {
                recheck = Some(recheck.map_or(l, |r: Duration| r.min(l)));
            }
            let old: Vec<&&Pod> = ps.iter().filter(|p| pod_hash(p) != Some(&hash)).collect();
            if !avail {
                unavailable += 1;
                // An old pod that is not available anyway can go at once.
                deletes.extend(
                    old.iter()
                        .map(|p| p.metadata.name.clone().unwrap_or_default()),
                );
            } else if ps.len() == 1 && !old.is_empty() {
                old_available.push(old[0].metadata.name.clone().unwrap_or_default());
            }
        }
        old_available.sort();
        let room = (budget - unavailable).max(0) as usize;
        deletes.extend(old_available.into_iter().take(room));
    }

    deletes.sort();
    deletes.dedup();
    for victim in &deletes {
        match api.delete(victim, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let template_meta = spec.template.metadata.clone().unwrap_or_default();
    for node in &creates {
        let mut labels = template_meta.labels.clone().unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}-")),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: template_meta.annotations.clone(),
                owner_references: Some(vec![super::controller_ref(
                    "apps/v1",
                    "DaemonSet",
                    &ds.metadata,
                )]),
                ..Default::default()
            },
            spec: Some(pin_to_node(pod_spec.clone(), node)),
            status: None,
        };
        api.create(&PostParams::default(), &pod).await?;
    }

    // History beyond revisionHistoryLimit goes, except revisions live pods still run.
    let live_hashes: std::collections::HashSet<String> =
        pods.iter().filter_map(pod_hash).map(String::from).collect();
    super::revisions::cleanup(
        &ctx.client,
        &ns,
        history.old,
        spec.revision_history_limit.unwrap_or(10),
        &live_hashes,
    )
    .await?;

    // Status, from the pods as they were at the start of this pass (the next pass, woken by
    // the pod events this one caused, catches up).
    let mut current = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut updated = 0;
    for n in &eligible_nodes {
        let node = n.metadata.name.as_deref().unwrap_or("");
        let Some(ps) = by_node.get(node) else {
            continue;
        };
        current += 1;
        if ps.iter().any(|p| super::pod_ready(p)) {
            ready += 1;
        }
        if ps.iter().any(|p| super::pod_available(p, min_ready).0) {
            available += 1;
        }
        if ps.iter().any(|p| pod_hash(p) == Some(&hash)) {
            updated += 1;
        }
    }
    let old = ds.status.clone().unwrap_or_default();
    let status = DaemonSetStatus {
        current_number_scheduled: current,
        desired_number_scheduled: desired,
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_available: Some(available),
        number_unavailable: Some(desired - available).filter(|n| *n > 0),
        updated_number_scheduled: Some(updated),
        observed_generation: ds.metadata.generation,
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
    };
    if ds.status.as_ref() != Some(&status) {
        let dsapi: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        dsapi
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": super::merge_nulls(&status, &["numberUnavailable"])}),
                ),
            )
            .await?;
    }
    ctx.backoff.ok(&key);
    let busy = !deletes.is_empty() || !creates.is_empty();
    Ok(match recheck {
        Some(d) => Action::requeue(d + Duration::from_millis(100)),
        None if busy => Action::requeue(Duration::from_secs(5)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Taint;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn eligibility_follows_selector_and_taints() {
        let spec = daemon_pod_spec(&PodTemplateSpec::default());
        let plain = node(json!({"metadata": {"name": "a", "labels": {"role": "edge"}}}));
        assert!(eligible(&spec, &plain));
        // A node that is not ready or is cordoned still gets its daemon.
        let cordoned = node(
            json!({"metadata": {"name": "b"}, "spec": {"unschedulable": true,
            "taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]}}),
        );
        assert!(eligible(&spec, &cordoned));
        let tainted = node(
            json!({"metadata": {"name": "c"}, "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
        );
        assert!(!eligible(&spec, &tainted));
        let mut selective = spec.clone();
        selective.node_selector = Some([("role".to_string(), "edge".to_string())].into());
        assert!(eligible(&selective, &plain));
        assert!(!eligible(&selective, &cordoned));
        let unreachable = Taint {
            key: "node.kubernetes.io/unreachable".into(),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        assert!(filter::tolerated(&unreachable, &default_tolerations(false)));
    }

    #[test]
    fn control_planes_get_only_daemons_that_tolerate_their_taint() {
        let cp = node(json!({"metadata": {"name": "cp-1",
            "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}));
        let worker = node(json!({"metadata": {"name": "w-1"}}));
        let plain = daemon_pod_spec(&PodTemplateSpec::default());
        assert!(
            !eligible(&plain, &cp),
            "the default tolerations do not cover it"
        );
        assert!(eligible(&plain, &worker));
        let collector: PodTemplateSpec = serde_json::from_value(json!({"spec": {
            "containers": [],
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane",
                             "operator": "Exists", "effect": "NoSchedule"}]}}))
        .unwrap();
        let collector = daemon_pod_spec(&collector);
        assert!(eligible(&collector, &cp));
        assert!(eligible(&collector, &worker));
        // One meant for control planes only (by their role label).
        let mut cp_only = collector.clone();
        cp_only.node_selector = Some(
            [(
                "node-role.kubernetes.io/control-plane".to_string(),
                String::new(),
            )]
            .into(),
        );
        assert!(eligible(&cp_only, &cp));
        assert!(!eligible(&cp_only, &worker));
    }

    #[test]
    fn pinned_pods_name_their_node() {
        let spec = pin_to_node(PodSpec::default(), "n7");
        let pod = Pod {
            spec: Some(spec),
            ..Default::default()
        };
        assert_eq!(target_node(&pod).as_deref(), Some("n7"));
        let node = node(json!({"metadata": {"name": "n7"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
        let other = node_named("n8");
        assert!(filter::fits(&pod, &filter::NodeInfo::new(node)).is_ok());
        assert!(filter::fits(&pod, &filter::NodeInfo::new(other)).is_err());
        assert_eq!(
            max_unavailable(Some(&IntOrString::String("10%".into())), 15),
            2
        );
        assert_eq!(max_unavailable(None, 5), 1);
    }

    fn node_named(n: &str) -> Node {
        node(json!({"metadata": {"name": n},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
    }
}
