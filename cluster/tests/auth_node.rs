//! Authentication and the node authorizer through the real kubectl: a node identity
//! (`system:node:<name>` in `system:nodes`) writes only its own Node, Lease and the status of
//! pods bound to it, reads only the secrets its pods use; `kubectl auth can-i` agrees; a client
//! certificate from another CA gets 401. One server for the whole file.

mod kubectl_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kubectl_support::{KUBECTL, Server};

/// kubectl with `kubeconfig` and `input` on stdin; its raw output.
fn kubectl_stdin(s: &Server, kubeconfig: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(KUBECTL)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", s.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A kubeconfig for the server as `user` in `groups`, with a certificate from the CA kept in
/// `pki_dir` (created there if missing), written to `dir/file` (no colons: KUBECONFIG is a
/// colon-separated list).
fn kubeconfig(s: &Server, pki_dir: &Path, user: &str, groups: &[&str], file: &str) -> PathBuf {
    use base64::Engine;
    let pki = cluster::apiserver::pki::load_or_create(pki_dir, &[]).unwrap();
    let (crt, key) = cluster::apiserver::pki::issue_client_with(&pki, user, groups).unwrap();
    let mut k: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&s.kubeconfig).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    k["users"][0]["user"] = serde_json::json!({"client-certificate-data": b64.encode(crt), "client-key-data": b64.encode(key)});
    let path = s.dir.path().join(file);
    std::fs::write(&path, serde_yaml_ng::to_string(&k).unwrap()).unwrap();
    path
}

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Secret
metadata: {name: used, namespace: app}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Secret
metadata: {name: unused, namespace: app}
stringData: {password: other}
---
apiVersion: v1
kind: Pod
metadata: {name: mine, namespace: app}
spec:
  nodeName: n1
  containers:
  - name: c
    image: busybox
    env:
    - name: P
      valueFrom: {secretKeyRef: {name: used, key: password}}
---
apiVersion: v1
kind: Pod
metadata: {name: theirs, namespace: app}
spec:
  nodeName: n2
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Node
metadata: {name: n2}
"#;

fn node(name: &str) -> String {
    format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n")
}

#[test]
fn node_identity_and_client_certificates() {
    let s = Server::start_without_controllers();
    s.ok_stdin(&["apply", "-f", "-"], SETUP);
    let pki = s.dir.path().join("data/pki");
    let n1 = kubeconfig(
        &s,
        &pki,
        "system:node:n1",
        &["system:nodes"],
        "n1.kubeconfig",
    );
    let as_n1 = |args: &[&str]| s.ok_with_kubeconfig(&n1, args);
    let n1_fails = |args: &[&str]| s.fail_with_kubeconfig(&n1, args);

    // Its own Node: create and update; another node's: neither.
    let out = kubectl_stdin(&s, &n1, &["create", "-f", "-"], &node("n1"));
    assert!(out.status.success(), "{out:?}");
    let out = kubectl_stdin(&s, &n1, &["create", "-f", "-"], &node("n3"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("node \"n1\" is not allowed to modify node \"n3\""),
        "{err}"
    );
    as_n1(&["label", "node", "n1", "role=worker"]);
    let err = n1_fails(&["label", "node", "n2", "role=worker"]);
    assert!(
        err.contains(
            "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope"
        ),
        "{err}"
    );
    // Its Lease in kube-node-lease.
    let lease = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: n1, namespace: kube-node-lease}\nspec: {holderIdentity: n1}\n";
    let out = kubectl_stdin(&s, &n1, &["create", "-f", "-"], lease);
    assert!(out.status.success(), "{out:?}");

    // Pods: reads all, writes the status of its own only.
    assert!(as_n1(&["-n", "app", "get", "pods", "-o", "name"]).contains("pod/theirs"));
    let running = r#"{"status":{"phase":"Running"}}"#;
    as_n1(&[
        "-n",
        "app",
        "patch",
        "pod",
        "mine",
        "--subresource=status",
        "--type=merge",
        "-p",
        running,
    ]);
    let err = n1_fails(&[
        "-n",
        "app",
        "patch",
        "pod",
        "theirs",
        "--subresource=status",
        "--type=merge",
        "-p",
        running,
    ]);
    assert!(err.contains("Forbidden"), "{err}");
    n1_fails(&["-n", "app", "delete", "pod", "theirs"]);

    // Secrets: the one its pod uses, not the other, and no listing.
    assert!(as_n1(&["-n", "app", "get", "secret", "used", "-o", "name"]).contains("secret/used"));
    let err = n1_fails(&["-n", "app", "get", "secret", "unused"]);
    assert!(err.contains("cannot get resource \"secrets\""), "{err}");
    n1_fails(&["-n", "app", "get", "secrets"]);

    // `kubectl auth can-i` answers from the same authorizer (no = exit status 1).
    assert_eq!(
        as_n1(&["auth", "can-i", "update", "nodes/n1"]).trim(),
        "yes"
    );
    let no = n1_fails(&["auth", "can-i", "update", "nodes/n2"]);
    assert!(no.is_empty() || !no.contains("error"), "{no}");
    n1_fails(&["auth", "can-i", "list", "secrets", "-n", "app"]);
    n1_fails(&["auth", "can-i", "create", "deployments", "-n", "app"]);
    assert_eq!(s.ok(&["auth", "can-i", "*", "*"]).trim(), "yes");
    assert_eq!(s.ok(&["auth", "can-i", "delete", "nodes/n2"]).trim(), "yes");

    // A certificate from another CA: 401, not a TLS failure and not a user.
    let other = tempfile::tempdir().unwrap();
    let foreign = kubeconfig(
        &s,
        other.path(),
        "admin",
        &["system:masters"],
        "foreign.kubeconfig",
    );
    let err = s.fail_with_kubeconfig(&foreign, &["get", "ns"]);
    assert!(
        err.contains("Unauthorized") || err.contains("You must be logged in"),
        "{err}"
    );
}
