//! Service account tokens through the real kubectl: `kubectl create token` (duration,
//! audience, binding to a pod), tokens that are expired, meant for another audience or
//! bound to a deleted pod get 401; NodeRestriction for a node's token requests; the
//! ServiceAccount admission (token volume and mounts, missing accounts refused); and
//! `kube-root-ca.crt` kept in every namespace. One server for the whole test.

mod kubectl_support;

use std::path::Path;
use std::time::{Duration, Instant};

use kubectl_support::Server;

/// Polls `check` every 100 ms for up to 30 s.
fn eventually(what: &str, s: &Server, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\nserver log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Who `token` authenticates as, or the error kubectl printed.
fn whoami(s: &Server, token: &str) -> Result<String, String> {
    let kc = s.kubeconfig_without_user();
    let out = std::process::Command::new(kubectl_support::KUBECTL)
        .args(["auth", "whoami", "--token", token])
        .args(["-o", "jsonpath={.status.userInfo.username}"])
        .env("KUBECONFIG", &kc)
        .env("HOME", s.dir.path())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

fn ca_of(s: &Server, ns: &str) -> String {
    s.ok(&[
        "-n",
        ns,
        "get",
        "cm",
        "kube-root-ca.crt",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ])
}

fn pod_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: app}}
spec:
{extra_spec}  initContainers:
  - {{name: init, image: testbox:1}}
  containers:
  - name: a
    image: testbox:1
  - name: b
    image: testbox:1
    volumeMounts:
    - {{name: own, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}}
  volumes:
  - {{name: own, emptyDir: {{}}}}
"
    )
}

#[test]
fn service_account_tokens_admission_and_root_ca() {
    let s = Server::start();
    let cluster_ca = std::fs::read_to_string(s.dir.path().join("data/pki/ca.crt")).unwrap();
    s.ok(&["create", "namespace", "app"]);

    // kube-root-ca.crt: present in a new namespace, put back when deleted or edited.
    eventually("kube-root-ca.crt in app", &s, || {
        s.run(&["-n", "app", "get", "cm", "kube-root-ca.crt"])
            .status
            .success()
    });
    assert_eq!(ca_of(&s, "app"), cluster_ca);
    s.ok(&["-n", "app", "delete", "cm", "kube-root-ca.crt"]);
    eventually("kube-root-ca.crt recreated", &s, || {
        s.run(&["-n", "app", "get", "cm", "kube-root-ca.crt"])
            .status
            .success()
    });
    assert_eq!(ca_of(&s, "app"), cluster_ca);
    s.ok(&[
        "-n",
        "app",
        "patch",
        "cm",
        "kube-root-ca.crt",
        "--type=merge",
        "-p",
        r#"{"data":{"ca.crt":"tampered"}}"#,
    ]);
    eventually("kube-root-ca.crt restored", &s, || {
        ca_of(&s, "app") == cluster_ca
    });

    // The default service account comes back too.
    s.ok(&["-n", "app", "delete", "sa", "default"]);
    eventually("the default service account recreated", &s, || {
        s.run(&["-n", "app", "get", "sa", "default"])
            .status
            .success()
    });

    // kubectl create token: authenticates as the account, with the asked-for lifetime.
    s.ok(&["-n", "app", "create", "serviceaccount", "robot"]);
    let token = s.ok(&["-n", "app", "create", "token", "robot", "--duration=20m"]);
    assert_eq!(
        whoami(&s, token.trim()).unwrap(),
        "system:serviceaccount:app:robot"
    );
    let payload = token.trim().split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        1200
    );
    let short = s.fail(&["-n", "app", "create", "token", "robot", "--duration=5m"]);
    assert!(short.contains("less than 10 minutes"), "{short}");
    // A token for another audience is not for the API server.
    let other = s.ok(&["-n", "app", "create", "token", "robot", "--audience=vault"]);
    let err = whoami(&s, other.trim()).unwrap_err();
    assert!(err.contains("Unauthorized"), "{err}");
    // An expired token (signed with the real key) is refused.
    let key = std::fs::read_to_string(s.dir.path().join("data/pki/sa.key")).unwrap();
    let der = rcgen::KeyPair::from_pem(&key).unwrap().serialize_der();
    let signer = cluster::apiserver::tokens::Signer::from_pkcs8(&der).unwrap();
    let uid = s.ok(&[
        "-n",
        "app",
        "get",
        "sa",
        "robot",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let aud = [cluster::apiserver::tokens::ISSUER.to_string()];
    let (expired, _) = signer
        .issue("app", "robot", &uid, None, &aud, -120)
        .unwrap();
    assert!(whoami(&s, &expired).unwrap_err().contains("Unauthorized"));
    let (fresh, _) = signer.issue("app", "robot", &uid, None, &aud, 600).unwrap();
    assert_eq!(
        whoami(&s, &fresh).unwrap(),
        "system:serviceaccount:app:robot"
    );
    // Deleting the account invalidates its tokens.
    s.ok(&["-n", "app", "delete", "sa", "robot"]);
    assert!(
        whoami(&s, token.trim())
            .unwrap_err()
            .contains("Unauthorized")
    );

    // Admission: the token volume, mounted where a container has nothing at that path.
    s.ok_stdin(&["apply", "-f", "-"], &pod_yaml("p", ""));
    let pod: serde_json::Value =
        serde_json::from_str(&s.ok(&["-n", "app", "get", "pod", "p", "-o", "json"])).unwrap();
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    let vol = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .unwrap_or_else(|| panic!("no token volume: {spec:#}"));
    let vname = vol["name"].as_str().unwrap();
    assert_eq!(vname.len(), "kube-api-access-".len() + 5);
    let sources = &vol["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(
        sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    let want_mount = serde_json::json!({"name": vname, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"});
    assert_eq!(spec["initContainers"][0]["volumeMounts"][0], want_mount);
    assert_eq!(spec["containers"][0]["volumeMounts"][0], want_mount);
    assert_eq!(
        spec["containers"][1]["volumeMounts"][0]["name"], "own",
        "a container's own mount at the path stays alone"
    );
    assert_eq!(
        spec["containers"][1]["volumeMounts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // automountServiceAccountToken: false, on the pod or on its account, adds nothing.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("q", "  automountServiceAccountToken: false\n"),
    );
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: quiet, namespace: app}\nautomountServiceAccountToken: false\n",
    );
    s.ok_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("r", "  serviceAccountName: quiet\n"),
    );
    for name in ["q", "r"] {
        let vols = s.ok(&[
            "-n",
            "app",
            "get",
            "pod",
            name,
            "-o",
            "jsonpath={.spec.volumes[*].name}",
        ]);
        assert_eq!(vols.trim(), "own", "pod {name}");
    }
    // A missing service account: refused, as upstream words it.
    let err = s.fail_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("x", "  serviceAccountName: ghost\n"),
    );
    assert!(
        err.contains(
            "error looking up service account app/ghost: serviceaccount \"ghost\" not found"
        ),
        "{err}"
    );

    // A token bound to a pod dies with the pod.
    let bound = s.ok(&[
        "-n",
        "app",
        "create",
        "token",
        "default",
        "--bound-object-kind=Pod",
        "--bound-object-name=q",
    ]);
    assert_eq!(
        whoami(&s, bound.trim()).unwrap(),
        "system:serviceaccount:app:default"
    );
    let wrong_sa = s.fail(&[
        "-n",
        "app",
        "create",
        "token",
        "quiet",
        "--bound-object-kind=Pod",
        "--bound-object-name=q",
    ]);
    assert!(wrong_sa.contains("different serviceaccount"), "{wrong_sa}");
    s.ok(&[
        "-n",
        "app",
        "delete",
        "pod",
        "q",
        "--grace-period=0",
        "--force",
    ]);
    eventually("pod q gone", &s, || {
        !s.run(&["-n", "app", "get", "pod", "q"]).status.success()
    });
    assert!(
        whoami(&s, bound.trim())
            .unwrap_err()
            .contains("Unauthorized")
    );

    node_restriction(&s);
}

/// A node asks for tokens only bound (with uid) to pods scheduled on it.
fn node_restriction(s: &Server) {
    let node = s.kubeconfig_for("system:node:n1", &["system:nodes"]);
    for (name, node_name) in [("on-n1", "n1"), ("on-n2", "n2")] {
        s.ok_stdin(
            &["apply", "-f", "-"],
            &pod_yaml(name, &format!("  nodeName: {node_name}\n")),
        );
    }
    let uid = |p: &str| {
        s.ok(&[
            "-n",
            "app",
            "get",
            "pod",
            p,
            "-o",
            "jsonpath={.metadata.uid}",
        ])
    };
    let request = |kc: &Path, pod: &str, with_uid: bool| {
        let mut args = vec![
            "-n".to_string(),
            "app".into(),
            "create".into(),
            "token".into(),
            "default".into(),
            "--bound-object-kind=Pod".into(),
            format!("--bound-object-name={pod}"),
        ];
        if with_uid {
            args.push(format!("--bound-object-uid={}", uid(pod)));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = std::process::Command::new(kubectl_support::KUBECTL)
            .args(&args)
            .env("KUBECONFIG", kc)
            .env("HOME", s.dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = request(&node, "on-n1", true);
    assert!(ok, "{out}");
    assert_eq!(
        whoami(s, out.trim()).unwrap(),
        "system:serviceaccount:app:default"
    );
    let (ok, out) = request(&node, "on-n2", true);
    assert!(
        !ok && out.contains("scheduled on a different node"),
        "{out}"
    );
    let (ok, out) = request(&node, "on-n1", false);
    assert!(!ok && out.contains("without a uid"), "{out}");
    let unbound = s.fail_with_kubeconfig(&node, &["-n", "app", "create", "token", "default"]);
    assert!(unbound.contains("not bound to a pod"), "{unbound}");
}
