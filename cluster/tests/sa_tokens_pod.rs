//! A pod's service account credentials end to end, with a real containerd and the agent
//! running as a node identity (so the node authorizer and NodeRestriction apply): the
//! projected `kube-api-access-*` volume holds a token bound to the pod, the cluster CA and
//! the namespace; the token authenticates as `system:serviceaccount:<ns>:default`, the
//! container sees `KUBERNETES_SERVICE_HOST`/`PORT`, and deleting the pod invalidates the
//! token. Needs root and the Debian packages containerd, runc, busybox-static and kubectl.

mod agent_support;
#[path = "kubectl_support/mod.rs"]
mod kubectl_support;

use agent_support::{Agent, Containerd, IMAGE, wait_for};
use kubectl_support::Server;

const NODE: &str = "n1";
const DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Who `token` authenticates as, or kubectl's error.
fn whoami(s: &Server, token: &str) -> Result<String, String> {
    let out = std::process::Command::new(kubectl_support::KUBECTL)
        .args(["auth", "whoami", "--token", token])
        .args(["-o", "jsonpath={.status.userInfo.username}"])
        .env("KUBECONFIG", s.kubeconfig_without_user())
        .env("HOME", s.dir.path())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

#[test]
fn a_pod_reads_its_service_account_token() {
    // The agent is dropped first (explicitly), containerd last.
    let containerd = Containerd::start();
    containerd.import_test_image();
    let server = Server::start();
    let root = tempfile::tempdir().unwrap();
    let node_kubeconfig = server.kubeconfig_for(&format!("system:node:{NODE}"), &["system:nodes"]);
    let start_agent = || {
        Agent::start(
            &node_kubeconfig,
            &containerd,
            NODE,
            &root.path().join("agent"),
        )
    };
    let mut agent = start_agent();
    let context = |agent: &Agent| {
        format!(
            "agent log:\n{}\nserver log (tail):\n{}",
            agent.log(),
            server
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        )
    };

    server.ok(&["create", "namespace", "app"]);
    let script = format!(
        "d={DIR}; echo TOKEN $(cat $d/token); echo NS $(cat $d/namespace); cat $d/ca.crt; \
         if echo x > $d/x 2>/dev/null; then echo WRITABLE; else echo READONLY; fi; \
         env; exec sleep 3600"
    );
    let yaml = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: reader, namespace: app}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    command: [/bin/sh, -c, {script:?}]
"
    );
    server.ok_stdin(&["apply", "-f", "-"], &yaml);
    let logs = wait_for(
        "the pod's output",
        || context(&agent),
        || {
            let out = server.run(&["-n", "app", "logs", "reader"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (out.status.success() && text.contains("KUBERNETES_SERVICE_HOST")).then_some(text)
        },
    );
    let line = |prefix: &str| {
        logs.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{logs}"))
            .trim()
            .to_string()
    };
    assert_eq!(line("NS "), "app");
    let ca = std::fs::read_to_string(server.dir.path().join("data/pki/ca.crt")).unwrap();
    assert!(
        logs.contains(ca.trim()),
        "the cluster CA is not in:\n{logs}"
    );
    assert!(logs.contains("READONLY"), "{logs}");
    assert_eq!(line("KUBERNETES_SERVICE_HOST="), "10.96.0.1");
    assert_eq!(line("KUBERNETES_SERVICE_PORT="), "443");

    let token = line("TOKEN ");
    assert_eq!(
        whoami(&server, &token).unwrap(),
        "system:serviceaccount:app:default"
    );
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let uid = server.ok(&[
        "-n",
        "app",
        "get",
        "pod",
        "reader",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "reader");
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], uid.trim());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3607
    );

    // On the node the volume is an atomically swapped directory (..data link).
    let vol = server.ok(&[
        "-n",
        "app",
        "get",
        "pod",
        "reader",
        "-o",
        "jsonpath={.spec.volumes[0].name}",
    ]);
    let dir = root.path().join(format!(
        "agent/pods/app_reader_{}/_volumes/{}",
        uid.trim(),
        vol.trim()
    ));
    let data =
        std::fs::read_link(dir.join("..data")).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert!(data.to_string_lossy().starts_with(".."), "{data:?}");
    assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), token);

    // A restarted agent holds no token: it asks for a new one and swaps it in, and the
    // running container sees the new file.
    drop(agent);
    agent = start_agent();
    let renewed = wait_for(
        "a renewed token",
        || context(&agent),
        || {
            std::fs::read_to_string(dir.join("token"))
                .ok()
                .filter(|t| !t.is_empty() && *t != token)
        },
    );
    assert_ne!(std::fs::read_link(dir.join("..data")).unwrap(), data);
    assert_eq!(
        whoami(&server, &renewed).unwrap(),
        "system:serviceaccount:app:default"
    );
    let seen = server.ok(&[
        "-n",
        "app",
        "exec",
        "reader",
        "--",
        "cat",
        &format!("{DIR}/token"),
    ]);
    assert_eq!(seen, renewed);

    // Deleting the pod invalidates its token.
    server.ok(&[
        "-n",
        "app",
        "delete",
        "pod",
        "reader",
        "--wait=true",
        "--timeout=60s",
    ]);
    let err = whoami(&server, &token).unwrap_err();
    assert!(err.contains("Unauthorized"), "{err}");
    drop(agent);
}
