//! Garbage collection with kubectl's cascade modes: orphan keeps the dependents (without
//! their owner reference), foreground removes the dependents before the owner.

mod controllers_support;
mod kubectl_support;

use controllers_support::{Kubelet, active_pods, add_node, client, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kubectl_support::{Server, yaml_deployment};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_and_foreground_cascades() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    add_node(&c, "n1", &[]).await;
    let _kubelet = Kubelet::start(&c);
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");

    // Orphan: the Deployment goes, its ReplicaSet and pods stay, no longer owned.
    s.ok_stdin(&["apply", "-f", "-"], &yaml_deployment("keep", "nginx", 2));
    s.ok(&["rollout", "status", "deployment/keep", "--timeout=60s"]);
    s.ok(&["delete", "deployment", "keep", "--cascade=orphan"]);
    wait_for("the deployment gone", || async {
        deployments
            .get_opt("keep")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let sets = wait_for("the ReplicaSet orphaned", || async {
        let sets = rss
            .list(&ListParams::default().labels("app=keep"))
            .await
            .unwrap()
            .items;
        sets.iter()
            .all(|rs| {
                rs.metadata
                    .owner_references
                    .as_ref()
                    .is_none_or(|o| o.is_empty())
            })
            .then_some(sets)
    })
    .await;
    assert_eq!(sets.len(), 1);
    // The orphaned ReplicaSet keeps running its pods, and the collector leaves them alone.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(active_pods(&c, "default", "app=keep").await.len(), 2);

    // Foreground: dependents first, then the owner.
    s.ok_stdin(&["apply", "-f", "-"], &yaml_deployment("fg", "nginx", 2));
    s.ok(&["rollout", "status", "deployment/fg", "--timeout=60s"]);
    s.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    wait_for("everything of fg gone", || async {
        let d = deployments.get_opt("fg").await.unwrap();
        let sets = rss
            .list(&ListParams::default().labels("app=fg"))
            .await
            .unwrap()
            .items;
        let left = pods
            .list(&ListParams::default().labels("app=fg"))
            .await
            .unwrap()
            .items;
        // While dependents remain, the owner must still be there (marked for deletion).
        if !sets.is_empty() || !left.is_empty() {
            let d = d.expect("the owner went before its dependents");
            assert!(d.metadata.deletion_timestamp.is_some());
            return None;
        }
        d.is_none().then_some(())
    })
    .await;
}
