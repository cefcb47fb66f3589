//! The real kubectl (on PATH; v1.32 in CI) against `cluster server` on a random port.

mod kubectl_support;

use kubectl_support::{Server, yaml_deployment};

#[test]
fn namespaces_and_discovery() {
    let s = Server::start();
    let ns = s.ok(&["get", "ns", "-o", "name"]);
    for want in [
        "namespace/default",
        "namespace/kube-system",
        "namespace/kube-public",
        "namespace/kube-node-lease",
    ] {
        assert!(ns.lines().any(|l| l == want), "{want} missing from:\n{ns}");
    }
    let res = s.ok(&["api-resources", "--no-headers"]);
    let deploy = res
        .lines()
        .find(|l| l.starts_with("deployments "))
        .expect("deployments listed");
    assert!(
        deploy.contains("deploy") && deploy.contains("apps/v1") && deploy.contains("Deployment"),
        "{deploy}"
    );
    assert!(
        res.lines()
            .any(|l| l.starts_with("pods ") && l.contains(" po ")),
        "{res}"
    );
    let versions = s.ok(&["api-versions"]);
    for want in [
        "v1",
        "apps/v1",
        "batch/v1",
        "coordination.k8s.io/v1",
        "discovery.k8s.io/v1",
        "networking.k8s.io/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == want),
            "{want} missing from:\n{versions}"
        );
    }
    let version = s.ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&version).unwrap();
    // The one version (cluster::version): the compiled API types' release.
    assert_eq!(v["serverVersion"]["minor"], "33", "{version}");
    assert_eq!(
        v["serverVersion"]["gitVersion"],
        cluster::version::git_version(),
        "{version}"
    );
    // The kubernetes service holds the first service address.
    assert_eq!(
        s.ok(&[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}"
        ]),
        "10.96.0.1"
    );
}

#[test]
fn apply_twice_is_unchanged_and_a_changed_manifest_patches() {
    let s = Server::start();
    let manifest = yaml_deployment("web", "nginx:1.27", 2);
    assert!(
        s.ok_stdin(&["apply", "-f", "-"], &manifest)
            .contains("deployment.apps/web created")
    );
    assert!(
        s.ok_stdin(&["apply", "-f", "-"], &manifest)
            .contains("deployment.apps/web unchanged")
    );
    let changed = yaml_deployment("web", "nginx:1.28", 2);
    assert!(
        s.ok_stdin(&["apply", "-f", "-"], &changed)
            .contains("deployment.apps/web configured")
    );
    let out = s.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.metadata.generation}",
    ]);
    assert_eq!(out, "nginx:1.28 2");
    // The env list was merged by name, not duplicated.
    let env = s.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[*].name}",
    ]);
    assert_eq!(env, "MODE");
}

#[test]
fn output_formats() {
    let s = Server::start();
    s.ok_stdin(
        &["apply", "-f", "-"],
        &yaml_deployment("web", "nginx:1.27", 3),
    );
    let wide = s.ok(&["get", "deploy", "-o", "wide"]);
    let header = wide.lines().next().unwrap();
    for col in [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ] {
        assert!(header.contains(col), "{col} missing from {header}");
    }
    assert!(wide.lines().nth(1).unwrap().contains("0/3"), "{wide}");
    let plain = s.ok(&["get", "deploy"]);
    assert!(
        !plain.lines().next().unwrap().contains("IMAGES"),
        "wide columns only with -o wide: {plain}"
    );
    assert_eq!(
        s.ok(&["get", "deploy", "-o", "name"]).trim(),
        "deployment.apps/web"
    );
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "deploy", "web", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["replicas"], 3);
    assert!(
        json["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(json["metadata"]["resourceVersion"].as_str().is_some());
    let yaml = s.ok(&["get", "deploy", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 3"),
        "{yaml}"
    );
    let list = s.ok(&["get", "deploy", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(list, "web");
    // Label selectors and all namespaces.
    assert_eq!(
        s.ok(&["get", "deploy", "-l", "app=web", "-o", "name"])
            .trim(),
        "deployment.apps/web"
    );
    assert_eq!(
        s.ok(&["get", "deploy", "-l", "app!=web", "-o", "name"])
            .trim(),
        ""
    );
    let all = s.ok(&["get", "svc", "-A"]);
    assert!(
        all.lines().next().unwrap().starts_with("NAMESPACE"),
        "{all}"
    );
}

#[test]
fn label_annotate_patch_and_scale() {
    let s = Server::start();
    s.ok_stdin(
        &["apply", "-f", "-"],
        &yaml_deployment("web", "nginx:1.27", 1),
    );
    s.ok(&["label", "deploy", "web", "tier=front"]);
    s.ok(&["annotate", "deploy", "web", "note=hello"]);
    s.ok(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
    ]);
    assert_eq!(
        s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    s.ok(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ]);
    s.ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:2"}]}}}}"#,
    ]);
    let out = s.ok(&[
        "get", "deploy", "web", "-o",
        "jsonpath={.metadata.labels.tier} {.metadata.annotations.note} {.spec.minReadySeconds} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[0].name}",
    ]);
    assert_eq!(
        out, "front hello 5 nginx:2 MODE",
        "strategic merge keeps the other container fields"
    );
    assert!(
        s.ok(&["scale", "deploy", "web", "--replicas=5"])
            .contains("scaled")
    );
    assert_eq!(
        s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );
    // A bad JSON patch is an error, not a crash.
    let err = s.fail(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/nope"}]"#,
    ]);
    assert!(err.contains("nope") || err.contains("patch"), "{err}");
    s.ok(&["get", "deploy", "web"]);
}

#[test]
fn create_typed_objects_and_delete_with_wait() {
    let s = Server::start();
    // kubectl's typed clients send these as Kubernetes protobuf.
    s.ok(&["create", "namespace", "team"]);
    s.ok(&[
        "-n",
        "team",
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=b",
    ]);
    s.ok(&[
        "-n",
        "team",
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=p=q",
    ]);
    s.ok(&[
        "-n",
        "team",
        "create",
        "deployment",
        "api",
        "--image=nginx:1",
        "--port=80",
        "--replicas=2",
    ]);
    s.ok(&[
        "-n",
        "team",
        "create",
        "service",
        "clusterip",
        "api",
        "--tcp=80:8080",
    ]);
    assert_eq!(
        s.ok(&["-n", "team", "get", "cm", "cfg", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    assert_eq!(
        s.ok(&[
            "-n",
            "team",
            "get",
            "secret",
            "pw",
            "-o",
            "jsonpath={.data.p}"
        ]),
        "cQ=="
    );
    assert_eq!(
        s.ok(&[
            "-n",
            "team",
            "get",
            "deploy",
            "api",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].ports[0].containerPort}"
        ]),
        "2 80"
    );
    let ip = s.ok(&[
        "-n",
        "team",
        "get",
        "svc",
        "api",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(ip.starts_with("10.9") && ip != "10.96.0.1", "{ip}");
    // Creating it again is AlreadyExists.
    let err = s.fail(&[
        "-n",
        "team",
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=b",
    ]);
    assert!(
        err.contains("AlreadyExists") || err.contains("already exists"),
        "{err}"
    );
    assert!(
        s.ok(&["-n", "team", "delete", "deploy", "api", "--wait"])
            .contains("deleted")
    );
    let err = s.fail(&["-n", "team", "get", "deploy", "api"]);
    assert!(
        err.contains("NotFound") && err.contains("\"api\" not found"),
        "{err}"
    );
    // Deleting the namespace deletes its content, then the namespace.
    s.ok(&["delete", "namespace", "team", "--wait", "--timeout=60s"]);
    assert!(s.fail(&["get", "ns", "team"]).contains("not found"));
    let left = s.ok(&[
        "get",
        "cm",
        "-A",
        "-o",
        "custom-columns=NS:.metadata.namespace",
        "--no-headers",
    ]);
    assert!(
        !left.lines().any(|l| l == "team"),
        "content of the deleted namespace remains: {left}"
    );
}

#[test]
fn terminating_namespace_refuses_new_objects() {
    let s = Server::start();
    s.ok(&["create", "namespace", "old"]);
    s.ok_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: old\n  finalizers: [example.com/hold]\n");
    s.ok(&["delete", "namespace", "old", "--wait=false"]);
    assert_eq!(
        s.ok(&["get", "ns", "old", "-o", "jsonpath={.status.phase}"]),
        "Terminating"
    );
    let err = s.fail(&[
        "-n",
        "old",
        "create",
        "configmap",
        "new",
        "--from-literal=a=b",
    ]);
    assert!(err.contains("because it is being terminated"), "{err}");
    // Releasing the finalizer lets the namespace go.
    s.ok(&[
        "-n",
        "old",
        "patch",
        "configmap",
        "held",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    s.ok(&["wait", "--for=delete", "namespace/old", "--timeout=60s"]);
}

#[test]
fn invalid_manifests_get_clear_errors() {
    let s = Server::start();
    let no_image =
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n";
    let err = s.fail_stdin(&["apply", "-f", "-"], no_image);
    assert!(
        err.contains("is invalid") && err.contains("spec.containers[0].image: Required value"),
        "{err}"
    );
    let bad_name = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n";
    let err = s.fail_stdin(&["create", "-f", "-"], bad_name);
    assert!(
        err.contains("metadata.name: Invalid value: \"Bad_Name\""),
        "{err}"
    );
    let wrong_type = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: x\n    ports:\n    - containerPort: eighty\n";
    let err = s.fail_stdin(&["create", "-f", "-"], wrong_type);
    assert!(err.contains("containerPort"), "{err}");
    let selector_mismatch =
        yaml_deployment("d", "x:1", 1).replace("app: d\n    spec", "app: other\n    spec");
    let err = s.fail_stdin(&["create", "-f", "-"], &selector_mismatch);
    assert!(
        err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    // The server is still fine.
    s.ok(&["get", "ns"]);
}

#[test]
fn watch_prints_changes() {
    let s = Server::start();
    let mut w = s.spawn(&["get", "pods", "-w", "-o", "name"]);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: watched\nspec:\n  containers:\n  - name: c\n    image: busybox\n";
    s.ok_stdin(&["create", "-f", "-"], pod);
    w.wait_for_line("pod/watched");
    // Table output on a watch: the pods columns, one row per event.
    let mut t = s.spawn(&["get", "pods", "-w"]);
    t.wait_for_line("NAME");
    s.ok(&["label", "pod", "watched", "x=y"]);
    let row = t.wait_for_line("watched");
    assert!(row.contains("0/1") && row.contains("Pending"), "{row}");
}

#[test]
fn authentication_and_authorization() {
    let s = Server::start();
    let anon = s.kubeconfig_without_user();
    let err = s.fail_with_kubeconfig(&anon, &["get", "ns"]);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    let bob = s.kubeconfig_for("bob", &["developers"]);
    let who = s.ok_with_kubeconfig(&bob, &["auth", "whoami"]);
    assert!(who.contains("bob") && who.contains("developers"), "{who}");
    assert_eq!(s.ok(&["auth", "can-i", "delete", "pods"]).trim(), "yes");
    // `can-i` answers "no" with exit status 1.
    s.fail_with_kubeconfig(&bob, &["auth", "can-i", "delete", "pods"]);
    let err = s.fail_with_kubeconfig(&bob, &["get", "pods"]);
    assert!(
        err.contains("Forbidden") && err.contains("User \"bob\" cannot list resource \"pods\""),
        "{err}"
    );
}

#[test]
fn state_survives_a_restart() {
    let s = Server::start();
    s.ok_stdin(
        &["apply", "-f", "-"],
        &yaml_deployment("kept", "nginx:1", 2),
    );
    let uid = s.ok(&["get", "deploy", "kept", "-o", "jsonpath={.metadata.uid}"]);
    let ca = std::fs::read_to_string(s.dir.path().join("data/pki/ca.crt")).unwrap();
    let s = s.restart();
    assert_eq!(
        s.ok(&["get", "deploy", "kept", "-o", "jsonpath={.metadata.uid}"]),
        uid
    );
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("data/pki/ca.crt")).unwrap(),
        ca,
        "the CA is kept"
    );
    assert!(
        s.ok_stdin(
            &["apply", "-f", "-"],
            &yaml_deployment("kept", "nginx:1", 2)
        )
        .contains("unchanged")
    );
    assert_eq!(
        s.ok(&[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}"
        ]),
        "10.96.0.1"
    );
}

#[test]
fn service_account_tokens() {
    let s = Server::start();
    s.ok(&["create", "namespace", "app"]);
    // Every namespace starts with the default service account and the cluster CA.
    assert_eq!(
        s.ok(&["-n", "app", "get", "sa", "default", "-o", "name"])
            .trim(),
        "serviceaccount/default"
    );
    let ca = s.ok(&[
        "-n",
        "app",
        "get",
        "cm",
        "kube-root-ca.crt",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    s.ok(&["-n", "app", "create", "serviceaccount", "robot"]);
    let token = s.ok(&["-n", "app", "create", "token", "robot", "--duration=1h"]);
    let robot = s.kubeconfig_with_token("robot", token.trim());
    // A service account may do only what RBAC grants it.
    s.fail_with_kubeconfig(&robot, &["-n", "app", "get", "sa"]);
    s.ok(&[
        "-n",
        "app",
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=app:robot",
    ]);
    let own = s.ok_with_kubeconfig(&robot, &["-n", "app", "get", "sa", "-o", "name"]);
    assert!(own.contains("serviceaccount/robot"), "{own}");
    let err = s.fail_with_kubeconfig(&robot, &["-n", "default", "get", "sa"]);
    assert!(
        err.contains("User \"system:serviceaccount:app:robot\" cannot list"),
        "{err}"
    );
    // The token dies with its account.
    s.ok(&["-n", "app", "delete", "sa", "robot"]);
    let err = s.fail_with_kubeconfig(&robot, &["-n", "app", "get", "sa"]);
    assert!(err.contains("Unauthorized"), "{err}");
}

#[test]
fn explain_diff_strict_fields_and_logs() {
    let s = Server::start();
    let explain = s.ok(&["explain", "deployment.spec.template.spec.containers.ports"]);
    assert!(
        explain.contains("GROUP:      apps") && explain.contains("FIELD: ports <[]ContainerPort>"),
        "{explain}"
    );
    assert!(s.ok(&["explain", "pods"]).contains("KIND:       Pod"));
    // Unknown fields are an error with kubectl's default (strict) validation...
    let typo = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  lables: {a: b}\n";
    let err = s.fail_stdin(&["apply", "-f", "-"], typo);
    assert!(err.contains("unknown field \"metadata.lables\""), "{err}");
    // ...and dropped without it.
    s.ok_stdin(&["apply", "--validate=false", "-f", "-"], typo);
    assert_eq!(
        s.ok(&["get", "cm", "x", "-o", "jsonpath={.metadata.labels}"]),
        ""
    );
    // diff: server-side dry run shows the change and changes nothing.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &yaml_deployment("web", "nginx:1.27", 1),
    );
    let out = s.run_stdin_pub(
        &["diff", "-f", "-"],
        &yaml_deployment("web", "nginx:1.28", 1),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "kubectl diff exits 1 when there are differences"
    );
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.contains("-        image: nginx:1.27") && diff.contains("+        image: nginx:1.28"),
        "{diff}"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "nginx:1.27"
    );
    // Logs come from the node agent: a clear error, not a hang.
    s.ok_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox\n");
    let err = s.fail(&["logs", "p"]);
    // (An unscheduled pod has no node to ask; without the agent's log proxy the server says so.)
    assert!(
        err.contains("not scheduled to a node")
            || err.contains("no node agent serves pod default/p"),
        "{err}"
    );
}

#[test]
fn foreground_and_orphan_deletes_leave_a_finalizer_for_the_collector() {
    let s = Server::start_without_controllers();
    s.ok(&["create", "configmap", "fg", "--from-literal=a=b"]);
    s.ok(&[
        "delete",
        "configmap",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let out = s.ok(&[
        "get",
        "cm",
        "fg",
        "-o",
        "jsonpath={.metadata.finalizers} {.metadata.deletionTimestamp}",
    ]);
    assert!(out.starts_with("[\"foregroundDeletion\"] 20"), "{out}");
    s.ok(&["create", "configmap", "or", "--from-literal=a=b"]);
    s.ok(&[
        "delete",
        "configmap",
        "or",
        "--cascade=orphan",
        "--wait=false",
    ]);
    assert_eq!(
        s.ok(&["get", "cm", "or", "-o", "jsonpath={.metadata.finalizers}"]),
        "[\"orphan\"]"
    );
    // Removing the finalizer (what the garbage collector does) finishes the delete.
    s.ok(&[
        "patch",
        "cm",
        "or",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    assert!(s.fail(&["get", "cm", "or"]).contains("not found"));
    // A background delete (kubectl's default) is immediate.
    s.ok(&["create", "configmap", "bg", "--from-literal=a=b"]);
    s.ok(&["delete", "configmap", "bg", "--wait=false"]);
    assert!(s.fail(&["get", "cm", "bg"]).contains("not found"));
}
