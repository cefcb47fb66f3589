//! `kubectl port-forward` to a pod with its own network namespace (`--pod-network bridge`):
//! the agent connects to 127.0.0.1:<port> inside the pod's namespace, where the pod's
//! server listens and the node's own loopback has nothing. Everything runs inside a network
//! namespace the test makes (the "node"). Needs root and the Debian packages containerd,
//! runc, busybox-static, kubectl and iproute2.

mod agent_support;
mod network_support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use agent_support::{Containerd, IMAGE, wait_for};
use network_support::{KUBECTL, Netns, Proc, Server, command_in, http_get, spawn_cluster};

const NODE: &str = "n1";
const NODE_IP: &str = "10.98.0.1";

/// Drops the agent first (so it restarts nothing), then unmounts the pods' namespaces.
struct Harness {
    agent: Option<Proc>,
    server: Server,
    _containerd: Containerd,
    node: Netns,
    netns_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        drop(self.agent.take());
        network_support::unmount_all(&self.netns_dir);
    }
}

/// A kubectl child; killed by PID on drop.
struct Kubectl(Child, Arc<Mutex<String>>);

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn port_forward_enters_the_pods_network_namespace() {
    let dir = tempfile::Builder::new()
        .prefix("rospf")
        .tempdir_in("/tmp")
        .unwrap();
    let node = Netns::node(dir.path(), "node-ns", &format!("{NODE_IP}/24"));
    let containerd = Containerd::start();
    containerd.import_test_image();
    let server = Server::start(&node.path, dir.path());
    let netns_dir = dir.path().join("netns");
    let agent_root = dir.path().join("agent");
    let args = [
        "agent",
        "--kubeconfig",
        server.kubeconfig.to_str().unwrap(),
        "--node-name",
        NODE,
        "--node-ip",
        NODE_IP,
        "--containerd-socket",
        containerd.socket.to_str().unwrap(),
        "--root-dir",
        agent_root.to_str().unwrap(),
        "--kubelet-port",
        "0",
        "--pod-network",
        "bridge",
        "--netns-dir",
        netns_dir.to_str().unwrap(),
    ];
    let agent = spawn_cluster(&node.path, &args, agent_root.with_extension("log"));
    let h = Harness {
        agent: Some(agent),
        server,
        _containerd: containerd,
        node,
        netns_dir,
        _dir: dir,
    };
    let context = || {
        format!(
            "agent log:\n{}\nserver log:\n{}",
            h.agent.as_ref().map(|a| a.log()).unwrap_or_default(),
            h.server.proc.log()
        )
    };
    h.server.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 0
  containers:
  - name: httpd
    image: {IMAGE}
    command: ["/bin/sh", "-c", "mkdir -p /www && echo in-the-pod > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]
"#
    ));
    wait_for("pod web running with its own IP", context, || {
        let p = h.server.get(&["pod", "web"])?;
        let ip = p["status"]["podIP"].as_str()?;
        (p["status"]["phase"] == "Running" && ip != NODE_IP).then_some(())
    });
    let ip = h.server.get(&["pod", "web"]).unwrap()["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("httpd answering on the pod IP", context, || {
        http_get(&h.node.path, &format!("http://{ip}:8080/")).map(|_| ())
    });
    // Not on the node's loopback: only inside the pod's namespace.
    assert_eq!(http_get(&h.node.path, "http://127.0.0.1:8080/"), None);

    let mut child = command_in(&h.node.path, KUBECTL)
        .args(["port-forward", "pod/web", "18080:8080"])
        .env("KUBECONFIG", &h.server.kubeconfig)
        .env("HOME", h.server.dir.as_os_str())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl port-forward");
    let seen = Arc::new(Mutex::new(String::new()));
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut chunk = [0u8; 1024];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
    }
    let pf = Kubectl(child, seen);
    wait_for(
        "kubectl port-forward listening",
        || format!("kubectl: {}\n{}", pf.1.lock().unwrap(), context()),
        || {
            pf.1.lock()
                .unwrap()
                .contains("Forwarding from 127.0.0.1:18080")
                .then_some(())
        },
    );
    assert_eq!(
        http_get(&h.node.path, "http://127.0.0.1:18080/").as_deref(),
        Some("in-the-pod"),
        "kubectl: {}\n{}",
        pf.1.lock().unwrap(),
        context()
    );
    drop(pf);
}
