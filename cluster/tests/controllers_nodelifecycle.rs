//! Node lifecycle: a node that stops heartbeating becomes Ready=Unknown with the unreachable
//! taint, its pods are evicted and their ReplicaSet replaces them on a healthy node.
//! The server's own controller uses the production 40 s grace; this test runs a second
//! node lifecycle controller with a 2 s grace and no default toleration time.

mod controllers_support;
mod kubectl_support;

use std::time::Duration;

use cluster::controllers::nodelifecycle::{self, Timing, UNREACHABLE};
use controllers_support::{Heartbeats, Kubelet, active_pods, add_node, client, node_of, wait_for};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kubectl_support::{Server, yaml_deployment};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_is_tainted_and_its_pods_move() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    add_node(&c, "alive", &[]).await;
    add_node(&c, "dying", &[]).await;
    let beats = Heartbeats::start(&c, &["alive", "dying"]);
    let kubelet = Kubelet::start(&c);
    let lifecycle = tokio::spawn(nodelifecycle::run(
        c.clone(),
        Timing {
            grace: Duration::from_secs(2),
            period: Duration::from_millis(200),
            default_toleration: Duration::ZERO,
        },
    ));

    s.ok_stdin(&["apply", "-f", "-"], &yaml_deployment("web", "nginx", 2));
    s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let pods = active_pods(&c, "default", "app=web").await;
    assert!(
        pods.iter().any(|p| node_of(p).as_deref() == Some("dying")),
        "spread onto both nodes"
    );
    // Healthy nodes stay Ready through several checks.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let nodes: Api<Node> = Api::all(c.clone());
    assert!(
        nodes
            .get("dying")
            .await
            .unwrap()
            .spec
            .unwrap()
            .taints
            .is_none()
    );

    beats.stop("dying");
    kubelet.stop_node("dying");
    let node = wait_for("the node tainted unreachable", || async {
        let n = nodes.get("dying").await.unwrap();
        n.spec
            .as_ref()?
            .taints
            .as_ref()?
            .iter()
            .any(|t| t.key == UNREACHABLE && t.effect == "NoExecute")
            .then_some(n)
    })
    .await;
    let ready = node
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("Unknown", Some("NodeStatusUnknown"))
    );
    wait_for("both pods running on the healthy node", || async {
        let pods = active_pods(&c, "default", "app=web").await;
        (pods.len() == 2 && pods.iter().all(|p| node_of(p).as_deref() == Some("alive")))
            .then_some(())
    })
    .await;
    s.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let alive = nodes.get("alive").await.unwrap();
    assert!(
        alive.spec.unwrap().taints.is_none(),
        "the healthy node is untouched"
    );
    lifecycle.abort();
}
