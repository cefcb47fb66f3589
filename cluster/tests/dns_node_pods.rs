//! Cluster DNS answers pods on its own node. The server listens on the wildcard address of a
//! node whose pods sit behind a bridge; a pod asks the node's address (as it does through the
//! kube-dns ClusterIP after DNAT). The reply must come from the address asked: the route back
//! to the pod would otherwise pick the bridge's gateway address, and the pod's resolver drops
//! an answer from an address it did not ask (found with nslookup in a one-node QEMU cluster).
//! The node and the pod are network namespaces this test makes; the client is the real `dig`.
//! Needs root, iproute2 and dig (Debian package dnsutils).

mod agent_support;
mod network_support;

use std::time::{Duration, Instant};

use network_support::{Netns, need, run_in, spawn_cluster};

const DIG: &str = "/usr/bin/dig";
const NODE_ADDRESS: &str = "10.5.0.2";
const DNS_PORT: &str = "5353";

/// `dig +short` from `ns` to `server`; the answer lines, or None on a timeout or failure.
fn dig_short(ns: &Netns, server: &str, name: &str) -> Option<String> {
    let out = run_in(
        &ns.path,
        DIG,
        &[
            &format!("@{server}"),
            "-p",
            DNS_PORT,
            "+short",
            "+time=2",
            "+tries=1",
            name,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty() && !text.starts_with(";;")).then_some(text)
}

#[test]
fn a_pod_on_the_node_gets_answers_from_the_address_it_asked() {
    need("ip", "iproute2");
    need(DIG, "dnsutils");
    let dir = tempfile::tempdir().unwrap();

    // The node: its own address on lo; the pod: behind a link whose node end is the gateway.
    let node = Netns::bare(dir.path(), "node");
    let pod = Netns::bare(dir.path(), "pod");
    pod.link_to("10.244.0.2/24", &node, "10.244.0.1/24");
    node.ip(&["addr", "add", &format!("{NODE_ADDRESS}/32"), "dev", "lo"]);
    pod.ip(&["route", "add", "default", "via", "10.244.0.1"]);

    let data = dir.path().join("server");
    let server = spawn_cluster(
        &node.path,
        &[
            "server",
            "--disable-controllers",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--dns-listen",
            &format!("0.0.0.0:{DNS_PORT}"),
            "--dns-advertise-address",
            NODE_ADDRESS,
            "--dns-upstream",
            "127.0.0.1:9",
        ],
        dir.path().join("server.log"),
    );

    // Ready once the node itself gets the kube-dns Service's address.
    let name = "kube-dns.kube-system.svc.cluster.local";
    let deadline = Instant::now() + Duration::from_secs(60);
    let from_node = loop {
        if let Some(answer) = dig_short(&node, NODE_ADDRESS, name) {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the DNS server did not answer on the node:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // The pod asks the node's address and must get the same answer, from that address.
    let from_pod = dig_short(&pod, NODE_ADDRESS, name);
    assert_eq!(
        from_pod.as_deref(),
        Some(from_node.as_str()),
        "a pod behind the node's bridge got no answer from {NODE_ADDRESS}:{DNS_PORT}\nserver log:\n{}",
        server.log()
    );
    // And the gateway address it reaches the node through answers too, from itself.
    assert_eq!(
        dig_short(&pod, "10.244.0.1", name).as_deref(),
        Some(from_node.as_str())
    );
}
