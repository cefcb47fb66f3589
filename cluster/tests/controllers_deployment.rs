//! Deployments end to end against `cluster server` (its in-process scheduler and controller
//! manager), two simulated nodes and a simulated kubelet; driven by the real kubectl.

mod controllers_support;
mod kubectl_support;

use std::collections::BTreeSet;

use controllers_support::{Kubelet, active_pods, add_node, client, node_of, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kubectl_support::{Server, yaml_deployment};

fn revision(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision").cloned())
        .unwrap_or_default()
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_lifecycle_with_kubectl() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    add_node(&c, "node-a", &[]).await;
    add_node(&c, "node-b", &[]).await;
    let _kubelet = Kubelet::start(&c);

    // Create: 3 replicas, bound and spread over both nodes, and rollout status completes.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &yaml_deployment("web", "nginx:1.0", 3),
    );
    s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let pods = active_pods(&c, "default", "app=web").await;
    assert_eq!(pods.len(), 3, "{pods:?}");
    let nodes: BTreeSet<String> = pods.iter().filter_map(node_of).collect();
    assert_eq!(
        nodes.len(),
        2,
        "pods should spread over both nodes: {nodes:?}"
    );
    let wide = s.ok(&["get", "deployment", "web"]);
    assert!(wide.contains("3/3"), "{wide}");

    // Scale up and down.
    s.ok(&["scale", "deployment/web", "--replicas=5"]);
    s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(active_pods(&c, "default", "app=web").await.len(), 5);
    s.ok(&["scale", "deployment/web", "--replicas=2"]);
    wait_for("2 pods after scaling down", || async {
        (active_pods(&c, "default", "app=web").await.len() == 2).then_some(())
    })
    .await;
    s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);

    // A rolling update makes a second ReplicaSet and moves every pod to the new image.
    s.ok(&["set", "image", "deployment/web", "app=nginx:2.0"]);
    s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    let mut sets = rss
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    sets.sort_by_key(|rs| revision(&rs.metadata));
    assert_eq!(
        sets.len(),
        2,
        "{}",
        serde_json::to_string_pretty(&sets).unwrap()
    );
    assert_eq!(sets[0].spec.as_ref().unwrap().replicas, Some(0));
    assert_eq!(sets[1].spec.as_ref().unwrap().replicas, Some(2));
    let pods = wait_for("only new pods", || async {
        let pods = active_pods(&c, "default", "app=web").await;
        (pods.len() == 2 && pods.iter().all(|p| image(p) == "nginx:2.0")).then_some(pods)
    })
    .await;
    assert!(pods.iter().all(|p| {
        p.metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key("pod-template-hash")
    }));
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "default");
    assert_eq!(
        revision(&deployments.get("web").await.unwrap().metadata),
        "2"
    );
    let history = s.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo goes back to the first template (as revision 3) and reuses its ReplicaSet.
    s.ok(&["rollout", "undo", "deployment/web"]);
    s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    wait_for("pods back on the old image", || async {
        let pods = active_pods(&c, "default", "app=web").await;
        (pods.len() == 2 && pods.iter().all(|p| image(p) == "nginx:1.0")).then_some(())
    })
    .await;
    assert_eq!(
        revision(&deployments.get("web").await.unwrap().metadata),
        "3"
    );
    let sets = rss
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(
        sets.len(),
        2,
        "{}",
        serde_json::to_string_pretty(&sets).unwrap()
    );
    let d = deployments.get("web").await.unwrap();
    let status = d.status.unwrap();
    assert_eq!(status.observed_generation, d.metadata.generation);
    let conds: Vec<(String, String)> = status
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    assert!(
        conds.contains(&("Available".into(), "True".into())),
        "{conds:?}"
    );
    assert!(
        conds.contains(&("Progressing".into(), "True".into())),
        "{conds:?}"
    );

    // Deleting the Deployment garbage-collects its ReplicaSets and pods.
    s.ok(&["delete", "deployment", "web"]);
    wait_for("ReplicaSets and pods collected", || async {
        let sets = rss
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
        let left = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        (sets.is_empty() && left.is_empty()).then_some(())
    })
    .await;
}
