//! Control planes as Nodes, through the agent's real registration code against `cluster
//! server` (no containerd needed: the agent's Node, status and Lease code is called directly):
//! - a control plane's identity registers its Node with the role label (ROLES control-plane in
//!   the real kubectl) and the NoSchedule taint; a worker's shows `<none>`;
//! - the scheduler keeps pods that do not tolerate the taint off it; DaemonSets place pods
//!   there only when they tolerate it; once the taint is dropped (scheduling allowed), the
//!   others follow;
//! - the Node's kubelet version is the API server's /version, with no kubectl skew warning;
//! - NodeRestriction: a worker's identity may not set role labels on its Node (create, label,
//!   patch), a control plane's only its own role; the agent refuses such `--node-label`s.

mod controllers_support;
mod kubectl_support;

use std::collections::BTreeMap;

use cluster::agent::node::{MachineInfo, NodeAgent, Taint, parse_taint};
use cluster::node_labels::{CONTROL_PLANE_LABEL, CONTROL_PLANE_NODES_GROUP};
use controllers_support::{active_pods, client, node_of, wait_for};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kubectl_support::Server;
use serde_json::{Value, json};

const NODES_GROUP: &str = "system:nodes";

fn machine(name: &str) -> MachineInfo {
    MachineInfo {
        cpus: 4,
        memory_kib: 8 * 1024 * 1024,
        kernel: "6.1.0".into(),
        os_image: "ros".into(),
        machine_id: format!("id-{name}"),
        boot_id: "boot".into(),
        hostname: name.into(),
    }
}

fn cp_taint() -> Taint {
    parse_taint(&format!("{CONTROL_PLANE_LABEL}:NoSchedule")).unwrap()
}

/// The agent of node `name` with a node identity in `groups`.
async fn agent(
    s: &Server,
    name: &str,
    groups: &[&str],
    control_plane: bool,
    taints: Vec<Taint>,
) -> NodeAgent {
    let kubeconfig = s.kubeconfig_for(&format!("system:node:{name}"), groups);
    NodeAgent {
        client: client(&kubeconfig).await,
        name: name.into(),
        ip: "127.0.0.1".into(),
        port: 10250,
        labels: BTreeMap::new(),
        taints,
        control_plane,
        machine: machine(name),
    }
}

/// Registers the node and reports it Ready, as the agent's first heartbeat does.
async fn join(a: &NodeAgent) {
    a.register().await.expect("register");
    a.post_status(&Ok("1.7.24".into()))
        .await
        .expect("node status");
    a.renew_lease().await.expect("node lease");
}

fn pod(name: &str, spec: Value) -> Pod {
    let mut p = json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    });
    json_patch::merge(&mut p["spec"], &spec);
    serde_json::from_value(p).unwrap()
}

fn daemonset(name: &str, tolerations: Value) -> String {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"ds": name}},
            "template": {
                "metadata": {"labels": {"ds": name}},
                "spec": {"tolerations": tolerations,
                         "containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    })
    .to_string()
}

/// The nodes the DaemonSet's pods are for, sorted, once there are `want` of them.
async fn daemon_nodes(c: &kube::Client, name: &str, want: usize) -> Vec<String> {
    wait_for(&format!("{want} pods of ds/{name}"), || async {
        let mut nodes: Vec<String> = active_pods(c, "default", &format!("ds={name}"))
            .await
            .iter()
            .filter_map(|p| node_of(p).or_else(|| affinity_node(p)))
            .collect();
        nodes.sort();
        (nodes.len() == want).then_some(nodes)
    })
    .await
}

/// A daemon pod not bound yet names its node in its required node affinity.
fn affinity_node(p: &Pod) -> Option<String> {
    let v = serde_json::to_value(p).ok()?;
    v["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
        .as_str()
        .map(String::from)
}

/// `kubectl get nodes` rows as (name, status, roles, version).
fn node_rows(s: &Server) -> Vec<(String, String, String, String)> {
    s.ok(&["get", "nodes"])
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].into(), f[1].into(), f[2].into(), f[4].into())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_planes_are_tainted_nodes_with_their_role() {
    let s = Server::start();
    let c = client(&s.kubeconfig).await;
    let cp = agent(
        &s,
        "cp-1",
        &[NODES_GROUP, CONTROL_PLANE_NODES_GROUP],
        true,
        vec![cp_taint()],
    )
    .await;
    let worker = agent(&s, "w-1", &[NODES_GROUP], false, vec![]).await;
    join(&cp).await;
    join(&worker).await;

    // ROLES comes from node-role.kubernetes.io/<role> labels; VERSION is the server's.
    let version: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/version"])).unwrap();
    let git_version = version["gitVersion"].as_str().unwrap().to_string();
    assert_eq!(git_version, cluster::version::git_version());
    let rows = wait_for("both nodes Ready", || async {
        let rows = node_rows(&s);
        (rows.len() == 2 && rows.iter().all(|r| r.1 == "Ready")).then_some(rows)
    })
    .await;
    assert_eq!(
        rows,
        [
            (
                "cp-1".into(),
                "Ready".into(),
                "control-plane".into(),
                git_version.clone()
            ),
            (
                "w-1".into(),
                "Ready".into(),
                "<none>".into(),
                git_version.clone()
            ),
        ]
    );
    let nodes: Api<Node> = Api::all(c.clone());
    let cp_node = serde_json::to_value(nodes.get("cp-1").await.unwrap()).unwrap();
    assert_eq!(cp_node["metadata"]["labels"][CONTROL_PLANE_LABEL], "");
    assert_eq!(
        cp_node["spec"]["taints"],
        json!([{"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"}])
    );
    let info = &cp_node["status"]["nodeInfo"];
    assert_eq!(info["kubeletVersion"], git_version.as_str());
    assert_eq!(info["kubeProxyVersion"], git_version.as_str());
    assert_eq!(version["minor"], cluster::version::KUBE_MINOR);
    // kubectl 1.32 against this server: within the supported skew, so no warning.
    let out = s.run(&["version"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("WARNING"), "{stderr}");

    // The scheduler: a plain pod goes to the worker; one tolerating the taint and selecting
    // control planes goes to the control plane.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for i in 0..3 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("plain-{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    pods.create(
        &PostParams::default(),
        &pod(
            "on-cp",
            json!({"nodeSelector": {CONTROL_PLANE_LABEL: ""},
                   "tolerations": [{"key": CONTROL_PLANE_LABEL, "operator": "Exists", "effect": "NoSchedule"}]}),
        ),
    )
    .await
    .unwrap();
    for i in 0..3 {
        let name = format!("plain-{i}");
        let node = wait_for(&format!("{name} bound"), || async {
            node_of(&pods.get(&name).await.unwrap())
        })
        .await;
        assert_eq!(node, "w-1", "{name}");
    }
    let node = wait_for("on-cp bound", || async {
        node_of(&pods.get("on-cp").await.unwrap())
    })
    .await;
    assert_eq!(node, "cp-1");

    // DaemonSets: only the one tolerating the taint runs on the control plane.
    s.ok_stdin(&["apply", "-f", "-"], &daemonset("workers-only", json!([])));
    s.ok_stdin(
        &["apply", "-f", "-"],
        &daemonset(
            "collector",
            json!([{"key": CONTROL_PLANE_LABEL, "operator": "Exists", "effect": "NoSchedule"}]),
        ),
    );
    assert_eq!(daemon_nodes(&c, "collector", 2).await, ["cp-1", "w-1"]);
    assert_eq!(daemon_nodes(&c, "workers-only", 1).await, ["w-1"]);
    // Still one a while later: the controller does not place it on the control plane.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(daemon_nodes(&c, "workers-only", 1).await, ["w-1"]);

    // allowSchedulingOnControlPlanes: the agent restarts without the taint, which it owns on a
    // control plane, so it is removed; the role label stays and the daemon follows.
    let open = agent(
        &s,
        "cp-1",
        &[NODES_GROUP, CONTROL_PLANE_NODES_GROUP],
        true,
        vec![],
    )
    .await;
    open.register().await.unwrap();
    let cp_node = serde_json::to_value(nodes.get("cp-1").await.unwrap()).unwrap();
    assert_eq!(cp_node["spec"]["taints"], Value::Null, "{cp_node}");
    assert_eq!(cp_node["metadata"]["labels"][CONTROL_PLANE_LABEL], "");
    assert_eq!(daemon_nodes(&c, "workers-only", 2).await, ["cp-1", "w-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_control_planes_identity_sets_its_role_label() {
    let s = Server::start_without_controllers();
    // A worker's identity (what the trust port signs) claiming the role at registration.
    let intruder = agent(&s, "w-2", &[NODES_GROUP], true, vec![]).await;
    let err = format!("{:#}", intruder.register().await.unwrap_err());
    assert!(
        err.contains(&format!(
            "node \"w-2\" is not allowed to set the following labels: {CONTROL_PLANE_LABEL}"
        )),
        "{err}"
    );
    assert!(s.fail(&["get", "node", "w-2"]).contains("NotFound"));

    let worker = agent(&s, "w-1", &[NODES_GROUP], false, vec![]).await;
    join(&worker).await;
    let as_w1 = s.kubeconfig_for("system:node:w-1", &[NODES_GROUP]);
    // Its own free labels: fine. Reserved ones, by label or by patch: refused.
    s.ok_with_kubeconfig(&as_w1, &["label", "node", "w-1", "tier=edge"]);
    let err = s.fail_with_kubeconfig(
        &as_w1,
        &["label", "node", "w-1", "node-role.kubernetes.io/worker="],
    );
    assert!(
        err.contains("is not allowed to modify labels: node-role.kubernetes.io/worker"),
        "{err}"
    );
    let err = s.fail_with_kubeconfig(
        &as_w1,
        &[
            "patch",
            "node",
            "w-1",
            "--type=json",
            "-p",
            r#"[{"op": "add", "path": "/metadata/labels/node-restriction.kubernetes.io~1pci", "value": "x"}]"#,
        ],
    );
    assert!(
        err.contains("is not allowed to modify labels: node-restriction.kubernetes.io/pci"),
        "{err}"
    );
    // Nor may it drop a role label an admin gave it.
    s.ok(&["label", "node", "w-1", "node-role.kubernetes.io/worker="]);
    let err = s.fail_with_kubeconfig(
        &as_w1,
        &["label", "node", "w-1", "node-role.kubernetes.io/worker-"],
    );
    assert!(err.contains("is not allowed to modify labels"), "{err}");

    // A control plane's identity: its own role label, and no other reserved one.
    let cp = agent(
        &s,
        "cp-1",
        &[NODES_GROUP, CONTROL_PLANE_NODES_GROUP],
        true,
        vec![cp_taint()],
    )
    .await;
    join(&cp).await;
    let as_cp = s.kubeconfig_for(
        "system:node:cp-1",
        &[NODES_GROUP, CONTROL_PLANE_NODES_GROUP],
    );
    let err = s.fail_with_kubeconfig(
        &as_cp,
        &["label", "node", "cp-1", "node-role.kubernetes.io/worker="],
    );
    assert!(err.contains("is not allowed to modify labels"), "{err}");

    // The agent refuses reserved --node-labels at once, as the kubelet does.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args(["agent", "--kubeconfig", "/nonexistent"])
        .arg(format!("--node-label={CONTROL_PLANE_LABEL}="))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--node-label")
            && stderr.contains("reserved")
            && stderr.contains("--control-plane"),
        "{stderr}"
    );
}
