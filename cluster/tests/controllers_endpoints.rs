//! Endpoints and EndpointSlices follow a Service's ready pods; the namespace of a deleted
//! namespace is emptied; every node gets a pod CIDR.

mod controllers_support;
mod kubectl_support;

use controllers_support::{Kubelet, add_node, client, wait_for};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kubectl_support::Server;
use serde_json::json;

fn ips(list: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>) -> Vec<String> {
    let mut v: Vec<String> = list.iter().flatten().map(|a| a.ip.clone()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_list_only_ready_pods() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    add_node(&c, "node-a", &[]).await;
    let _kubelet = Kubelet::start(&c);
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: web
",
    );
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for (name, ready) in [
        ("ready-1", "true"),
        ("ready-2", "true"),
        ("starting", "false"),
    ] {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web", "sim/ready": ready}},
            "spec": {"containers": [{"name": "c", "image": "nginx",
                     "ports": [{"name": "web", "containerPort": 8080}]}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let ip_of = |p: &Pod| p.status.as_ref().and_then(|s| s.pod_ip.clone());
    let (ready_ips, starting_ip) = wait_for("pod IPs", || async {
        let mut ready = Vec::new();
        for n in ["ready-1", "ready-2"] {
            ready.push(ip_of(&pods.get(n).await.unwrap())?);
        }
        ready.sort();
        Some((ready, ip_of(&pods.get("starting").await.unwrap())?))
    })
    .await;
    let eps: Api<Endpoints> = Api::namespaced(c.clone(), "default");
    let ep = wait_for("endpoints with both ready pods", || async {
        let ep = eps.get_opt("web").await.unwrap()?;
        let subset = ep.subsets.clone()?.into_iter().next()?;
        (ips(&subset.addresses) == ready_ips
            && ips(&subset.not_ready_addresses) == [starting_ip.clone()])
        .then_some(subset)
    })
    .await;
    assert_eq!(ips(&ep.not_ready_addresses), vec![starting_ip.clone()]);
    let port = &ep.ports.unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));

    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "default");
    let slice = wait_for("an EndpointSlice", || async {
        slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|s| s.endpoints.len() == 3)
    })
    .await;
    let ready_in_slice: Vec<String> = slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .map(|e| e.addresses[0].clone())
        .collect();
    assert_eq!(ready_in_slice.len(), 2);

    // A pod that becomes ready moves to addresses; kubectl sees the endpoints.
    pods.patch(
        "starting",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sim/ready": "true"}}})),
    )
    .await
    .unwrap();
    wait_for("all three ready", || async {
        let ep = eps.get("web").await.unwrap();
        let s = ep.subsets?.into_iter().next()?;
        (s.addresses.as_ref()?.len() == 3 && s.not_ready_addresses.is_none()).then_some(())
    })
    .await;
    let out = s.ok(&["get", "endpoints", "web"]);
    assert!(out.contains(&starting_ip), "{out}");

    // Deleting the Service removes its Endpoints and slices (owner references).
    s.ok(&["delete", "service", "web"]);
    wait_for("endpoints collected", || async {
        let gone = eps.get_opt("web").await.unwrap().is_none();
        let none = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .unwrap()
            .items
            .is_empty();
        (gone && none).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_nodes_and_service_accounts() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    add_node(&c, "n1", &[]).await;
    add_node(&c, "n2", &[]).await;
    let _kubelet = Kubelet::start(&c);

    // Pod CIDRs: distinct /24s of 10.244.0.0/16.
    let nodes: Api<Node> = Api::all(c.clone());
    let cidrs = wait_for("pod CIDRs", || async {
        let mut v = Vec::new();
        for n in ["n1", "n2"] {
            v.push(nodes.get(n).await.unwrap().spec?.pod_cidr?);
        }
        Some(v)
    })
    .await;
    assert_ne!(cidrs[0], cidrs[1]);
    for cidr in &cidrs {
        assert!(
            cidr.starts_with("10.244.") && cidr.ends_with(".0/24"),
            "{cidr}"
        );
    }

    // A new namespace gets a default ServiceAccount; deleting it removes its workloads.
    s.ok(&["create", "namespace", "team"]);
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "team");
    wait_for("default service account", || async {
        sas.get_opt("default").await.unwrap()
    })
    .await;
    s.ok_stdin(
        &["apply", "-n", "team", "-f", "-"],
        &kubectl_support::yaml_deployment("app", "nginx", 2),
    );
    s.ok(&[
        "rollout",
        "status",
        "-n",
        "team",
        "deployment/app",
        "--timeout=60s",
    ]);
    s.ok(&["delete", "namespace", "team", "--timeout=60s"]);
    let namespaces: Api<Namespace> = Api::all(c.clone());
    wait_for("namespace gone", || async {
        namespaces
            .get_opt("team")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "team");
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
