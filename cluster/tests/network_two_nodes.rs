//! Two nodes (two network namespaces joined by a veth pair, 10.99.0.1 and 10.99.0.2), each
//! with its own `cluster agent --pod-network bridge --service-proxy`, one `cluster server`
//! on the first: each agent routes the other node's pod CIDR via its InternalIP, so a pod
//! on one node reaches a pod on the other by pod IP and through a ClusterIP. Needs root and
//! the Debian packages containerd, runc, busybox-static, kubectl, iproute2, nftables.

mod agent_support;
mod network_support;

use std::path::Path;

use agent_support::{Containerd, IMAGE, wait_for};
use network_support::{Netns, Proc, Server, http_get, need, spawn_cluster};

fn agent(
    ns: &Netns,
    server: &Server,
    containerd: &Containerd,
    node: &str,
    ip: &str,
    dir: &Path,
) -> Proc {
    let root = dir.join(format!("agent-{node}"));
    let netns_dir = dir.join(format!("netns-{node}"));
    let args = [
        "agent",
        "--kubeconfig",
        server.kubeconfig.to_str().unwrap(),
        "--node-name",
        node,
        "--node-ip",
        ip,
        "--containerd-socket",
        containerd.socket.to_str().unwrap(),
        "--root-dir",
        root.to_str().unwrap(),
        "--kubelet-port",
        "0",
        "--pod-network",
        "bridge",
        "--netns-dir",
        netns_dir.to_str().unwrap(),
        "--service-proxy",
    ];
    spawn_cluster(&ns.path, &args, root.with_extension("log"))
}

struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for node in ["n1", "n2"] {
            network_support::unmount_all(&self.0.join(format!("netns-{node}")));
        }
    }
}

#[test]
fn pods_on_two_nodes_reach_each_other() {
    need("nft", "nftables");
    let dir = tempfile::Builder::new()
        .prefix("rosnet2")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path();
    let n1 = Netns::bare(d, "node1");
    let n2 = Netns::bare(d, "node2");
    n1.link_to("10.99.0.1/24", &n2, "10.99.0.2/24");
    let containerd = Containerd::start();
    containerd.import_test_image();
    let server = Server::start_on(&n1.path, d, "10.99.0.1:0");
    let _cleanup = Cleanup(d);
    let a1 = agent(&n1, &server, &containerd, "n1", "10.99.0.1", d);
    let a2 = agent(&n2, &server, &containerd, "n2", "10.99.0.2", d);
    let context = || {
        format!(
            "n1 routes:\n{}\nn2 routes:\n{}\nagent n1:\n{}\nagent n2:\n{}",
            n1.ip(&["route"]),
            n2.ip(&["route"]),
            a1.log(),
            a2.log()
        )
    };
    server.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  nodeName: n1
  terminationGracePeriodSeconds: 0
  containers:
  - name: httpd
    image: {IMAGE}
    command: ["/bin/sh", "-c", "mkdir -p /www && echo web > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: n2
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {IMAGE}
    command: ["/bin/sleep", "3600"]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    ));
    let running = |name: &str| -> (String, String) {
        wait_for(&format!("pod {name} running"), context, || {
            let p = server.get(&["pod", name])?;
            let ip = p["status"]["podIP"].as_str()?.to_string();
            (p["status"]["phase"] == "Running" && !ip.starts_with("10.99."))
                .then(|| (ip, p["metadata"]["uid"].as_str().unwrap().to_string()))
        })
    };
    let (web_ip, _) = running("web");
    let (_, client_uid) = running("client");
    let cidr = |node: &str| -> String {
        server.get(&["node", node]).unwrap()["spec"]["podCIDR"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (c1, c2) = (cidr("n1"), cidr("n2"));
    assert_ne!(c1, c2);
    // Host routes to the other node's pod CIDR, marked with the agent's route protocol.
    wait_for("routes between the nodes", context, || {
        (n1.ip(&["route"])
            .contains(&format!("{c2} via 10.99.0.2 dev eth0 proto 114"))
            && n2
                .ip(&["route"])
                .contains(&format!("{c1} via 10.99.0.1 dev eth0 proto 114")))
        .then_some(())
    });
    let client_ns = d.join("netns-n2").join(&client_uid);
    wait_for("pod on n2 -> pod on n1 by pod IP", context, || {
        (http_get(&client_ns, &format!("http://{web_ip}:8080/")).as_deref() == Some("web"))
            .then_some(())
    });
    let cluster_ip = server.get(&["service", "web"]).unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("pod on n2 -> ClusterIP -> pod on n1", context, || {
        (http_get(&client_ns, &format!("http://{cluster_ip}/")).as_deref() == Some("web"))
            .then_some(())
    });
}
