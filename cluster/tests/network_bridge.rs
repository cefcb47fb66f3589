//! The bridge pod network and the nftables service proxy, end to end: a real `cluster
//! server` and `cluster agent --pod-network bridge --service-proxy` inside a network
//! namespace the test makes (the "node", 10.99.0.1 on a dummy link), pods on a real
//! containerd. Checks pod-to-pod traffic by pod IP, ClusterIP to ready endpoints only,
//! NodePort and LoadBalancer on the node address, ClientIP affinity, cleanup of a deleted
//! pod's veth, netns, IP and rules, and removal of the rules when the agent stops.
//! Needs root and the Debian packages containerd, runc, busybox-static, kubectl, iproute2,
//! nftables.

mod agent_support;
mod network_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use agent_support::{Containerd, IMAGE, wait_for};
use network_support::{Netns, Proc, Server, http_get, need, run_in, spawn_cluster};
use serde_json::Value;

const NODE: &str = "n1";
const NODE_IP: &str = "10.99.0.1";

struct Harness {
    agent: Option<Proc>,
    server: Server,
    containerd: Containerd,
    node: Netns,
    netns_dir: PathBuf,
    agent_root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start() -> Harness {
        need("nft", "nftables");
        need(network_support::BUSYBOX, "busybox-static");
        let dir = tempfile::Builder::new()
            .prefix("rosnet")
            .tempdir_in("/tmp")
            .unwrap();
        let node = Netns::node(dir.path(), "node-ns", &format!("{NODE_IP}/24"));
        let containerd = Containerd::start();
        containerd.import_test_image();
        let server = Server::start(&node.path, dir.path());
        let netns_dir = dir.path().join("netns");
        let agent_root = dir.path().join("agent");
        let mut h = Harness {
            agent: None,
            server,
            containerd,
            node,
            netns_dir,
            agent_root,
            _dir: dir,
        };
        h.start_agent();
        h
    }

    fn start_agent(&mut self) {
        let args = [
            "agent",
            "--kubeconfig",
            self.server.kubeconfig.to_str().unwrap(),
            "--node-name",
            NODE,
            "--node-ip",
            NODE_IP,
            "--containerd-socket",
            self.containerd.socket.to_str().unwrap(),
            "--root-dir",
            self.agent_root.to_str().unwrap(),
            "--kubelet-port",
            "0",
            "--pod-network",
            "bridge",
            "--netns-dir",
            self.netns_dir.to_str().unwrap(),
            "--service-proxy",
        ];
        let log = self.agent_root.with_extension("log");
        self.agent = Some(spawn_cluster(&self.node.path, &args, log));
    }

    fn context(&self) -> String {
        let pods = self.server.kubectl(&["get", "pods", "-o", "wide"]);
        let mut logs = String::new();
        let glob = std::fs::read_dir(self.agent_root.join("pods"))
            .into_iter()
            .flatten();
        for pod in glob.flatten() {
            for c in std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                for f in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
                    let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                    logs.push_str(&format!("{}:\n{text}\n", f.path().display()));
                }
            }
        }
        format!(
            "pods:\n{}\ncontainer logs:\n{logs}\nagent log:\n{}\nserver log (tail):\n{}",
            String::from_utf8_lossy(&pods.stdout),
            self.agent.as_ref().map(|a| a.log()).unwrap_or_default(),
            self.server
                .proc
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn pod(&self, name: &str) -> Option<Value> {
        self.server.get(&["pod", name])
    }

    /// An HTTP server pod answering its own name on port 8080.
    fn web_pod(&self, name: &str) {
        self.server.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: httpd
    image: {IMAGE}
    command: ["/bin/sh", "-c", "mkdir -p /www && echo {name} > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]
"#
        ));
    }

    /// Waits until pod `name` runs and has a pod IP; returns (IP, UID).
    fn running(&self, name: &str) -> (String, String) {
        wait_for(
            &format!("pod {name} running with a pod IP"),
            || self.context(),
            || {
                let p = self.pod(name)?;
                let ip = p["status"]["podIP"].as_str()?.to_string();
                (p["status"]["phase"] == "Running" && ip != NODE_IP)
                    .then(|| (ip, p["metadata"]["uid"].as_str().unwrap().to_string()))
            },
        )
    }

    fn netns_of(&self, uid: &str) -> PathBuf {
        self.netns_dir.join(uid)
    }

    /// Answers of `n` requests to `url` from inside `ns` (failures as "<failed>").
    fn answers(&self, ns: &Path, url: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| http_get(ns, url).unwrap_or_else(|| "<failed>".to_string()))
            .collect()
    }

    fn service(&self, name: &str) -> Value {
        self.server.get(&["service", name]).unwrap()
    }

    fn ruleset(&self) -> String {
        let out = run_in(&self.node.path, "nft", &["list", "table", "ip", "ros"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        drop(self.agent.take());
        network_support::unmount_all(&self.netns_dir);
    }
}

/// Waits until `n` requests to `url` from `ns` all answer with one of `allowed` and together
/// cover `must_see` (the proxy may take a moment to program a change).
fn wait_answers(
    h: &Harness,
    ns: &Path,
    url: &str,
    allowed: &[&str],
    must_see: &[&str],
    n: usize,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got = h.answers(ns, url, n);
        let seen: BTreeSet<&str> = got.iter().map(String::as_str).collect();
        if seen.iter().all(|s| allowed.contains(s)) && must_see.iter().all(|s| seen.contains(s)) {
            return got;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{url} from {}: answers {got:?}, want only {allowed:?} and all of {must_see:?}\nrules:\n{}\n{}",
                ns.display(),
                h.ruleset(),
                h.context()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

#[test]
fn pod_network_and_service_proxy() {
    let mut h = Harness::start();
    h.web_pod("web1");
    h.web_pod("web2");
    h.server.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: {IMAGE}
    command: ["/bin/sleep", "3600"]
"#
    ));
    let (ip1, _uid1) = h.running("web1");
    let (ip2, uid2) = h.running("web2");
    let (ipc, uidc) = h.running("client");

    // Pod IPs come from the node's pod CIDR; the bridge holds its first address.
    let node = h.server.get(&["node", NODE]).unwrap();
    let cidr: ipnet::Ipv4Net = node["spec"]["podCIDR"].as_str().unwrap().parse().unwrap();
    for ip in [&ip1, &ip2, &ipc] {
        assert!(
            cidr.contains(&ip.parse::<std::net::Ipv4Addr>().unwrap()),
            "{ip} in {cidr}"
        );
    }
    assert_eq!(
        BTreeSet::from([&ip1, &ip2, &ipc]).len(),
        3,
        "distinct pod IPs"
    );
    let bridge = h.node.ip(&["-4", "addr", "show", "dev", "ros0"]);
    let gateway = std::net::Ipv4Addr::from(u32::from(cidr.network()) + 1);
    assert!(bridge.contains(&format!("inet {gateway}/24")), "{bridge}");

    // Pod to pod by pod IP: ICMP and HTTP, from the client pod's own namespace.
    let client_ns = h.netns_of(&uidc);
    let ping = run_in(
        &client_ns,
        network_support::BUSYBOX,
        &["ping", "-c", "1", "-W", "5", &ip1],
    );
    assert!(
        ping.status.success(),
        "ping {ip1}: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // (The servers may still be starting: Running means the process was started.)
    wait_answers(
        &h,
        &client_ns,
        &format!("http://{ip1}:8080/"),
        &["web1"],
        &["web1"],
        1,
    );
    wait_answers(
        &h,
        &client_ns,
        &format!("http://{ip2}:8080/"),
        &["web2"],
        &["web2"],
        1,
    );
    let eth0 = run_in(&client_ns, "ip", &["-4", "addr", "show", "dev", "eth0"]);
    assert!(String::from_utf8_lossy(&eth0.stdout).contains(&format!("inet {ipc}/24")));

    // Services: selector-based ClusterIP, NodePort, LoadBalancer with ClientIP affinity,
    // and a selector-less one whose slice the test writes (one ready, one unready endpoint).
    h.server.apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-np}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-lb}}
spec:
  type: LoadBalancer
  sessionAffinity: ClientIP
  selector: {{app: web}}
  ports: [{{port: 8081, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: manual}}
spec:
  ports: [{{port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-1
  labels: {{kubernetes.io/service-name: manual}}
addressType: IPv4
ports: [{{port: 8080, protocol: TCP}}]
endpoints:
- addresses: ["{ip1}"]
  conditions: {{ready: true}}
- addresses: ["{ip2}"]
  conditions: {{ready: false}}
"#
    ));
    let web_ip = h.service("web")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let manual_ip = h.service("manual")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let node_port = h.service("web-np")["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .unwrap();

    // ClusterIP balances over both ready endpoints.
    wait_answers(
        &h,
        &client_ns,
        &format!("http://{web_ip}/"),
        &["web1", "web2"],
        &["web1", "web2"],
        30,
    );
    // Only the ready endpoint of the hand-written slice.
    wait_answers(
        &h,
        &client_ns,
        &format!("http://{manual_ip}/"),
        &["web1"],
        &["web1"],
        12,
    );
    // Flip readiness: the proxy follows the slice.
    h.server.apply(&format!(
        r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-1
  labels: {{kubernetes.io/service-name: manual}}
addressType: IPv4
ports: [{{port: 8080, protocol: TCP}}]
endpoints:
- addresses: ["{ip1}"]
  conditions: {{ready: false}}
- addresses: ["{ip2}"]
  conditions: {{ready: true}}
"#
    ));
    wait_answers(
        &h,
        &client_ns,
        &format!("http://{manual_ip}/"),
        &["web2"],
        &["web2"],
        12,
    );

    // NodePort on the node's address, from the node namespace.
    wait_answers(
        &h,
        &h.node.path,
        &format!("http://{NODE_IP}:{node_port}/"),
        &["web1", "web2"],
        &["web1", "web2"],
        30,
    );

    // LoadBalancer: the node address as ingress, reachable there; ClientIP pins a client.
    let lb = wait_for(
        "load balancer ingress",
        || h.context(),
        || {
            h.service("web-lb")["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .map(String::from)
        },
    );
    assert_eq!(lb, NODE_IP);
    let pinned = wait_answers(
        &h,
        &client_ns,
        &format!("http://{lb}:8081/"),
        &["web1", "web2"],
        &[],
        10,
    );
    assert!(
        pinned.iter().all(|a| a == &pinned[0]),
        "ClientIP affinity: {pinned:?}"
    );
    let rules = h.ruleset();
    assert!(
        rules.contains("affinity-default/web-lb/tcp/8081__"),
        "{rules}"
    );

    // Deleting a pod removes its veth, namespace, IP allocation and endpoint rules.
    let veth = cluster::agent::network::bridge::host_link_name(&uid2);
    assert!(h.node.ip(&["link", "show"]).contains(&veth));
    assert!(h.ruleset().contains(&format!("dnat to {ip2}:8080")));
    // (The hand-written slice still lists web2's IP; drop its service first.)
    h.server.ok(&["delete", "service", "manual"]);
    h.server.ok(&["delete", "pod", "web2", "--wait=false"]);
    wait_for(
        "web2 gone",
        || h.context(),
        || h.pod("web2").is_none().then_some(()),
    );
    wait_for(
        "web2's rules gone",
        || h.ruleset(),
        || {
            let r = h.ruleset();
            (!r.contains(&format!("{ip2}:8080")) && r.contains(&format!("dnat to {ip1}:8080")))
                .then_some(())
        },
    );
    assert!(
        !h.node.ip(&["link", "show"]).contains(&veth),
        "veth removed"
    );
    assert!(!h.netns_of(&uid2).exists(), "netns file removed");
    let ipam = std::fs::read_to_string(h.agent_root.join("network/ipam.json")).unwrap();
    assert!(!ipam.contains(&uid2) && ipam.contains(&uidc), "{ipam}");
    wait_answers(
        &h,
        &client_ns,
        &format!("http://{web_ip}/"),
        &["web1"],
        &["web1"],
        10,
    );

    // The agent stops (SIGTERM): the proxy's table goes; the pods' network stays.
    h.agent.as_mut().unwrap().terminate();
    assert!(
        !h.ruleset().contains("table ip ros"),
        "rules removed on shutdown"
    );
    assert_eq!(
        http_get(&client_ns, &format!("http://{ip1}:8080/")).as_deref(),
        Some("web1")
    );

    // A restarted agent adopts the pods' network (same IPs, no duplicate) and reprograms.
    h.start_agent();
    wait_answers(
        &h,
        &client_ns,
        &format!("http://{web_ip}/"),
        &["web1"],
        &["web1"],
        5,
    );
    assert_eq!(h.running("client").0, ipc);
}
