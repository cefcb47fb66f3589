//! The scheduler in `cluster server`: a pod that fits nowhere reports why (PodScheduled=False
//! and a FailedScheduling Event) and is bound once a matching node appears; filters for
//! taints and resources; pods spread over nodes.

mod controllers_support;
mod kubectl_support;

use controllers_support::{add_node, client, node_of, wait_for};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kubectl_support::Server;
use serde_json::json;

fn pod(name: &str, spec: serde_json::Value) -> Pod {
    let mut p = json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    });
    json_patch::merge(&mut p["spec"], &spec);
    serde_json::from_value(p).unwrap()
}

fn scheduled_condition(p: &Pod) -> Option<(String, String, String)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_reports_then_binds_when_a_node_fits() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    add_node(&c, "plain", &[]).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("picky", json!({"nodeSelector": {"disk": "ssd"}})),
    )
    .await
    .unwrap();

    let (status, reason, message) = wait_for("PodScheduled=False", || async {
        scheduled_condition(&pods.get("picky").await.unwrap())
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Unschedulable")
    );
    assert!(
        message.contains("0/1 nodes are available") && message.contains("node affinity/selector"),
        "{message}"
    );
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    let ev = wait_for("a FailedScheduling event", || async {
        events
            .list(&ListParams::default().fields("involvedObject.name=picky"))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    let described = s.ok(&["describe", "pod", "picky"]);
    assert!(described.contains("FailedScheduling"), "{described}");
    // No busy loop: with nothing changing, the pod is reported once.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let failed = events
        .list(&ListParams::default().fields("involvedObject.name=picky"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
        .count();
    assert_eq!(failed, 1);

    // A matching node appears: the pod is bound to it.
    add_node(&c, "fast", &[("disk", "ssd")]).await;
    let node = wait_for("the pod bound", || async {
        node_of(&pods.get("picky").await.unwrap())
    })
    .await;
    assert_eq!(node, "fast");
    let scheduled = wait_for("a Scheduled event", || async {
        events
            .list(&ListParams::default().fields("involvedObject.name=picky"))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Scheduled"))
    })
    .await;
    assert!(scheduled.message.unwrap().contains("to fast"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_resources_and_cordons_are_respected() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    add_node(&c, "tainted", &[]).await;
    add_node(&c, "small", &[]).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.clone());
    nodes
        .patch(
            "tainted",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    // Each node has 4 cpus: two 3-cpu pods cannot share one.
    let big = |n: &str, tolerate: bool| {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "3"}}}]});
        if tolerate {
            spec["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]);
        }
        pod(n, spec)
    };
    pods.create(&PostParams::default(), &big("first", false))
        .await
        .unwrap();
    let n1 = wait_for("first bound", || async {
        node_of(&pods.get("first").await.unwrap())
    })
    .await;
    assert_eq!(
        n1, "small",
        "an untolerated taint keeps the pod off 'tainted'"
    );
    pods.create(&PostParams::default(), &big("second", false))
        .await
        .unwrap();
    let (_, _, msg) = wait_for("second unschedulable", || async {
        scheduled_condition(&pods.get("second").await.unwrap())
    })
    .await;
    assert!(
        msg.contains("Insufficient cpu") && msg.contains("untolerated taint"),
        "{msg}"
    );
    pods.create(&PostParams::default(), &big("third", true))
        .await
        .unwrap();
    let n3 = wait_for("third bound", || async {
        node_of(&pods.get("third").await.unwrap())
    })
    .await;
    assert_eq!(n3, "tainted");

    // Cordoning: kubectl cordon marks the node unschedulable.
    s.ok(&["cordon", "small"]);
    pods.create(&PostParams::default(), &pod("tiny", json!({})))
        .await
        .unwrap();
    let (_, _, msg) = wait_for("tiny unschedulable", || async {
        scheduled_condition(&pods.get("tiny").await.unwrap())
    })
    .await;
    assert!(
        msg.contains("unschedulable") && msg.contains("0/2"),
        "{msg}"
    );
    s.ok(&["uncordon", "small"]);
    let n = wait_for("tiny bound after uncordon", || async {
        node_of(&pods.get("tiny").await.unwrap())
    })
    .await;
    assert_eq!(n, "small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_anti_affinity_keeps_pods_apart_and_affinity_follows() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    add_node(&c, "left", &[]).await;
    add_node(&c, "right", &[]).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let apart = |name: &str| {
        let mut p = pod(
            name,
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "solo"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
        );
        p.metadata.labels = Some([("app".to_string(), "solo".to_string())].into());
        p
    };
    let mut placed = std::collections::BTreeSet::new();
    for name in ["solo-1", "solo-2"] {
        pods.create(&PostParams::default(), &apart(name))
            .await
            .unwrap();
        let node = wait_for("a solo pod bound", || async {
            node_of(&pods.get(name).await.unwrap())
        })
        .await;
        placed.insert(node);
    }
    assert_eq!(placed.len(), 2, "the two pods share a node: {placed:?}");
    pods.create(&PostParams::default(), &apart("solo-3"))
        .await
        .unwrap();
    let (status, reason, msg) = wait_for("solo-3 unschedulable", || async {
        scheduled_condition(&pods.get("solo-3").await.unwrap())
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Unschedulable")
    );
    assert!(
        msg.contains("0/2 nodes are available") && msg.contains("anti-affinity"),
        "{msg}"
    );
    assert_eq!(node_of(&pods.get("solo-3").await.unwrap()), None);

    // Required pod affinity: a pod that must sit next to solo-1 lands on solo-1's node.
    let solo1 = node_of(&pods.get("solo-1").await.unwrap()).unwrap();
    let mut follower = pod(
        "follower",
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "solo"}}, "topologyKey": "kubernetes.io/hostname"}]}},
            "nodeSelector": {"kubernetes.io/hostname": solo1.clone()}}),
    );
    follower.metadata.labels = Some([("app".to_string(), "follower".to_string())].into());
    pods.create(&PostParams::default(), &follower)
        .await
        .unwrap();
    let node = wait_for("follower bound", || async {
        node_of(&pods.get("follower").await.unwrap())
    })
    .await;
    assert_eq!(node, solo1);

    // Deleting solo-2 frees the other node for the third.
    let other = node_of(&pods.get("solo-2").await.unwrap()).unwrap();
    pods.delete(
        "solo-2",
        &kube::api::DeleteParams::default().grace_period(0),
    )
    .await
    .unwrap();
    let node = wait_for("solo-3 bound once a node is free", || async {
        node_of(&pods.get("solo-3").await.unwrap())
    })
    .await;
    assert_eq!(node, other);
}
