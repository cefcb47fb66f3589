//! What probing the API server with hostile clients found (issue 23), each reproduced the way
//! it was found, against a real `cluster server` on 127.0.0.1: deeply nested YAML bodies,
//! half-open connections, deleting system namespaces, impersonation headers, the store's file
//! modes, limits and query parameters as upstream has them, and OpenAPI v3 documents that
//! declare every operation completely.

mod https_support;
mod kubectl_support;
mod openapi_check;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use https_support::{Endpoint, closed_by_server};
use kubectl_support::Server;

/// 200,000 nested `[` (200 KB): libyaml needs time quadratic in the depth for this.
fn nested_yaml() -> Vec<u8> {
    vec![b'['; 200_000]
}

#[test]
fn deeply_nested_yaml_is_refused_while_the_server_keeps_answering() {
    let s = Server::start_without_controllers();
    let ep = Endpoint::from_kubeconfig(&s.kubeconfig);
    s.ok(&["create", "configmap", "target", "-n", "default"]);
    let body = nested_yaml();
    // Several at once, as in the probe that froze the server: each is refused on its own.
    let requests: Vec<(&str, &str, &str)> = vec![
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/yaml",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/yaml",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/target?fieldManager=probe",
            "application/apply-patch+yaml",
        ),
        (
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            "application/yaml",
        ),
    ];
    std::thread::scope(|scope| {
        let handles: Vec<_> = requests
            .iter()
            .map(|&(method, path, ct)| {
                let (ep, body) = (&ep, &body);
                scope.spawn(move || ep.admin(method, path, &[("Content-Type", ct)], body))
            })
            .collect();
        // /healthz answers while (or after) the bodies are handled; the generous read
        // timeout of the helper only fails a stalled server.
        let health = ep.anonymous("GET", "/healthz", &[], b"");
        assert_eq!((health.status, health.text().as_str()), (200, "ok"));
        for (h, (method, path, _)) in handles.into_iter().zip(&requests) {
            let r = h.join().unwrap();
            assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
            let status = r.json();
            assert_eq!(status["reason"], "BadRequest");
            let message = status["message"].as_str().unwrap();
            assert!(
                message.contains("nests deeper than 128 levels (line 1, column 129)"),
                "{message}"
            );
        }
    });
    // The same shape within the limit is still ordinary YAML.
    let ok = ep.admin(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("Content-Type", "application/yaml")],
        b"metadata: {name: flowy}\ndata: {a: \"[[[x\", b: '{{'}\n",
    );
    assert_eq!(ok.status, 201, "{}", ok.text());
}

#[test]
fn half_open_connections_are_closed_after_the_header_timeout() {
    let s = Server::start_with_args(&[
        "--header-read-timeout",
        "1",
        "--max-pending-connections",
        "3",
    ]);
    let ep = Endpoint::from_kubeconfig(&s.kubeconfig);
    let wait = Duration::from_secs(15);

    // TCP only, no TLS handshake.
    let mut tcp = ep.tcp(wait);
    // TLS done, nothing sent (the server has not even seen which HTTP version it is).
    let mut silent = ep.connect(&ep.anonymous, wait);
    // Half a request: no blank line ending the headers.
    let mut half = ep.connect(&ep.admin, wait);
    std::io::Write::write_all(&mut half, b"GET /version HTTP/1.1\r\nHost: x\r\nAccept: ").unwrap();
    std::io::Write::flush(&mut half).unwrap();

    // With every pending slot taken, a new client waits, then gets in as they are closed.
    let version = s.ok(&["get", "--raw", "/version"]);
    assert!(version.contains("gitVersion"), "{version}");

    assert!(
        closed_by_server(&mut tcp),
        "a connection without a handshake stayed open"
    );
    assert!(
        closed_by_server(&mut silent),
        "a silent TLS connection stayed open"
    );
    assert!(
        closed_by_server(&mut half),
        "a half-sent request stayed open"
    );

    // A kept-alive connection that goes idle is closed too, after its request was answered.
    let mut idle = ep.connect(&ep.admin, wait);
    std::io::Write::write_all(&mut idle, b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::io::Write::flush(&mut idle).unwrap();
    assert!(
        closed_by_server(&mut idle),
        "an idle keep-alive connection stayed open"
    );
}

#[test]
fn system_namespaces_cannot_be_deleted() {
    let s = Server::start_without_controllers();
    for ns in ["kube-system", "default", "kube-public", "kube-node-lease"] {
        let err = s.fail(&["delete", "namespace", ns, "--wait=false"]);
        assert!(
            err.contains(&format!(
                "namespace \"{ns}\" is forbidden: this namespace may not be deleted"
            )),
            "{ns}: {err}"
        );
        let phase = s.ok(&["get", "namespace", ns, "-o", "jsonpath={.status.phase}"]);
        assert_eq!(phase, "Active", "{ns}");
    }
    // Other namespaces still go.
    s.ok(&["create", "namespace", "scratch"]);
    s.ok(&["delete", "namespace", "scratch", "--wait=false"]);
}

const IMPERSONATION: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot, namespace: a}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: a}
stringData: {k: v}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: a}
data: {k: v}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonate-bob}
rules:
- apiGroups: [""]
  resources: [users]
  verbs: [impersonate]
  resourceNames: [bob]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: alice-impersonates-bob}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: impersonate-bob}
subjects:
- {kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cm-reader, namespace: a}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bob-reads, namespace: a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-reader}
subjects:
- {kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}
"#;

#[test]
fn impersonation_runs_as_the_impersonated_user_when_allowed() {
    let s = Server::start_without_controllers();
    s.ok_stdin(&["apply", "-f", "-"], IMPERSONATION);

    // The admin may impersonate anyone; the request then has the robot's rights (none).
    let robot = "system:serviceaccount:a:robot";
    let err = s.fail(&["get", "secrets", "-n", "a", &format!("--as={robot}")]);
    assert!(
        err.contains(&format!(
            "secrets is forbidden: User \"{robot}\" cannot list resource \"secrets\""
        )),
        "{err}"
    );
    let answer = s.run(&[
        "auth",
        "can-i",
        "get",
        "secrets",
        "-n",
        "a",
        &format!("--as={robot}"),
    ]);
    assert_eq!(String::from_utf8_lossy(&answer.stdout).trim(), "no");
    let answer = s.ok(&["auth", "can-i", "get", "secrets", "-n", "a"]);
    assert_eq!(answer.trim(), "yes");
    let whoami = s.ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
        &format!("--as={robot}"),
    ]);
    assert_eq!(whoami, robot);

    // alice may impersonate bob only, and only as a user (not a group).
    let alice = s.kubeconfig_for("alice", &[]);
    let err = s.fail_with_kubeconfig(&alice, &["get", "pods", "-n", "a", "--as=carol"]);
    assert!(
        err.contains("users \"carol\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{err}"
    );
    let listed = s.ok_with_kubeconfig(
        &alice,
        &["get", "configmaps", "-n", "a", "--as=bob", "-o", "name"],
    );
    assert!(listed.contains("configmap/cm"), "{listed}");
    let err = s.fail_with_kubeconfig(&alice, &["get", "secrets", "-n", "a", "--as=bob"]);
    assert!(
        err.contains("User \"bob\" cannot list resource \"secrets\""),
        "{err}"
    );
    let err = s.fail_with_kubeconfig(
        &alice,
        &[
            "get",
            "configmaps",
            "-n",
            "a",
            "--as=bob",
            "--as-group=system:masters",
        ],
    );
    assert!(
        err.contains("groups \"system:masters\" is forbidden: User \"alice\" cannot impersonate resource \"groups\""),
        "{err}"
    );
    // Without the right to impersonate, alice reads nothing as herself either.
    let err = s.fail_with_kubeconfig(&alice, &["get", "configmaps", "-n", "a"]);
    assert!(err.contains("User \"alice\" cannot list"), "{err}");
}

#[test]
fn the_store_is_private_to_the_server_user() {
    let s = Server::start_without_controllers();
    s.ok(&["create", "secret", "generic", "x", "--from-literal=k=v"]);
    let data = s.dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let store_files = || {
        ["state.db", "state.db-wal", "state.db-shm"]
            .into_iter()
            .map(|f| data.join(f))
            .filter(|p| p.exists())
            .collect::<Vec<_>>()
    };
    assert_eq!(mode(&data), 0o700);
    assert!(!store_files().is_empty());
    for f in store_files() {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    // Files left readable by an earlier version are fixed at the next start.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in store_files() {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let s = s.restart_with_args(&["--disable-controllers"]);
    let data = s.dir.path().join("data");
    assert_eq!(mode(&data), 0o700);
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let p = data.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
}

#[test]
fn limits_and_parameters_are_checked_as_upstream() {
    let s = Server::start_without_controllers();
    let ep = Endpoint::from_kubeconfig(&s.kubeconfig);
    let json_ct = [("Content-Type", "application/json")];

    // ConfigMaps and Secrets hold at most 1 MiB.
    let big = "x".repeat(1024 * 1024 + 1);
    let cm = serde_json::json!({"metadata": {"name": "big"}, "data": {"a": big}});
    let r = ep.admin(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &json_ct,
        cm.to_string().as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("Too long: must have at most 1048576 bytes"),
        "{}",
        r.text()
    );
    let secret = serde_json::json!({"metadata": {"name": "big"}, "stringData": {"a": big}});
    let r = ep.admin(
        "POST",
        "/api/v1/namespaces/default/secrets",
        &json_ct,
        secret.to_string().as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let small = serde_json::json!({"metadata": {"name": "small"}, "data": {"a": "x".repeat(1000)}});
    let r = ep.admin(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &json_ct,
        small.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // A field selector on a field the kind does not index is an error, not an empty list.
    let err = s.fail(&["get", "configmaps", "--field-selector", "spec.bogus=x"]);
    assert!(
        err.contains("field label not supported: spec.bogus"),
        "{err}"
    );
    s.ok(&["get", "pods", "-A", "--field-selector", "spec.nodeName=n1"]);

    // Unknown option values are refused before anything happens.
    let cm = serde_json::json!({"metadata": {"name": "dry"}}).to_string();
    for (method, path, field) in [
        (
            "POST",
            "/api/v1/namespaces/default/configmaps?dryRun=Bogus",
            "dryRun",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps?fieldValidation=Bogus",
            "fieldValidation",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?resourceVersion=1&resourceVersionMatch=bogus",
            "resourceVersionMatch",
        ),
    ] {
        let r = ep.admin(
            method,
            path,
            &json_ct,
            if method == "POST" { cm.as_bytes() } else { b"" },
        );
        assert_eq!(r.status, 422, "{path}: {}", r.text());
        let status = r.json();
        assert_eq!(status["reason"], "Invalid", "{path}");
        assert_eq!(status["details"]["causes"][0]["field"], field, "{path}");
    }
    let missing = ep.admin("GET", "/api/v1/namespaces/default/configmaps/dry", &[], b"");
    assert_eq!(
        missing.status, 404,
        "dryRun=Bogus must not have created anything"
    );

    // A watch from a resourceVersion the store has not reached.
    let r = ep.admin(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=99999999",
        &[],
        b"",
    );
    assert_eq!(r.status, 504, "{}", r.text());
    let status = r.json();
    assert_eq!(status["reason"], "Timeout");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("Too large resource version: 99999999")
    );

    // Anonymous users may only read /version.
    assert_eq!(ep.anonymous("GET", "/version", &[], b"").status, 200);
    for method in ["POST", "PUT", "DELETE"] {
        let r = ep.anonymous(method, "/version", &json_ct, b"{}");
        assert_eq!(r.status, 403, "{method}: {}", r.text());
    }
    assert_eq!(ep.admin("POST", "/version", &json_ct, b"{}").status, 405);

    // The bearer scheme is case-insensitive.
    let token = s.ok(&["create", "token", "default", "-n", "default"]);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} {}", token.trim());
        let r = ep.anonymous(
            "GET",
            "/api/v1/namespaces/default/secrets",
            &[("Authorization", &auth)],
            b"",
        );
        assert_eq!(r.status, 403, "{scheme}: {}", r.text());
        assert!(
            r.text().contains("system:serviceaccount:default:default"),
            "{scheme}: {}",
            r.text()
        );
    }
}

#[test]
fn openapi_v3_documents_declare_every_operation_completely() {
    let s = Server::start_without_controllers();
    let ep = Endpoint::from_kubeconfig(&s.kubeconfig);
    let index = ep.admin("GET", "/openapi/v3", &[], b"");
    assert_eq!(index.status, 200, "{}", index.text());
    let mut counts = BTreeMap::new();
    let mut docs = BTreeMap::new();
    for (gv, entry) in index.json()["paths"].as_object().unwrap() {
        let url = entry["serverRelativeURL"].as_str().unwrap();
        let r = ep.admin("GET", url, &[], b"");
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        let doc = r.json();
        let problems = openapi_check::problems(&doc, &mut counts);
        assert!(problems.is_empty(), "{gv}:\n{}", problems.join("\n"));
        docs.insert(gv.clone(), doc);
    }
    assert!(docs.contains_key("api/v1") && docs.contains_key("apis/apps/v1"));
    eprintln!("operations by x-kubernetes-action: {counts:?}");
    for action in [
        "get",
        "list",
        "post",
        "put",
        "patch",
        "delete",
        "deletecollection",
    ] {
        assert!(
            counts.get(action).is_some_and(|n| *n >= 10),
            "{action}: {counts:?}"
        );
    }

    // The checks can fail: a path parameter, a request body and a schema taken away.
    let mut broken = docs["api/v1"].clone();
    let item = &mut broken["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"];
    item["parameters"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["name"] != "name");
    item["put"].as_object_mut().unwrap().remove("requestBody");
    broken["components"]["schemas"]
        .as_object_mut()
        .unwrap()
        .remove("io.k8s.api.core.v1.NodeList");
    let found = openapi_check::problems(&broken, &mut BTreeMap::new()).join("\n");
    for want in [
        "GET /api/v1/namespaces/{namespace}/configmaps/{name}: path parameters {\"namespace\"}, template needs {\"name\", \"namespace\"}",
        "PUT /api/v1/namespaces/{namespace}/configmaps/{name}: no required requestBody",
        "$ref #/components/schemas/io.k8s.api.core.v1.NodeList does not resolve",
    ] {
        assert!(found.contains(want), "{want} not in:\n{found}");
    }

    // What the documents declare, the server serves: every list operation answers the
    // List kind its response schema names.
    for doc in docs.values() {
        let schemas = &doc["components"]["schemas"];
        for (path, item) in doc["paths"].as_object().unwrap() {
            let get = &item["get"];
            if get["x-kubernetes-action"] != "list" {
                continue;
            }
            let reference =
                get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap();
            let name = reference.rsplit('/').next().unwrap();
            let kind = &schemas[name]["x-kubernetes-group-version-kind"][0]["kind"];
            let url = format!("{}?limit=1", path.replace("{namespace}", "default"));
            let r = ep.admin("GET", &url, &[], b"");
            assert_eq!(r.status, 200, "{url}: {}", r.text());
            assert_eq!(&r.json()["kind"], kind, "{url}");
        }
    }
    // The cluster-wide path of a namespaced resource only lists, as documented.
    let r = ep.admin("DELETE", "/api/v1/configmaps", &[], b"");
    assert_eq!(r.status, 405, "{}", r.text());
    assert!(
        docs["api/v1"]["paths"]["/api/v1/configmaps"]["delete"].is_null(),
        "documented but refused"
    );

    // Found by schemathesis reading these documents: a DeleteOptions body was read loosely,
    // so `"dryRun": "All"` (a string, not a list) was ignored and the delete was real.
    s.ok(&["create", "configmap", "keep", "-n", "default"]);
    let keep = "/api/v1/namespaces/default/configmaps/keep";
    let json_ct = [("Content-Type", "application/json")];
    let r = ep.admin("DELETE", keep, &json_ct, br#"{"dryRun": "All"}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("error decoding DeleteOptions"),
        "{}",
        r.text()
    );
    let r = ep.admin("DELETE", keep, &json_ct, br#"{"dryRun": ["All"]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        ep.admin("GET", keep, &[], b"").status,
        200,
        "a dry run keeps it"
    );

    // kubectl explain reads the same documents.
    let explain = s.ok(&["explain", "leases.spec.holderIdentity"]);
    assert!(
        explain.contains("GROUP:      coordination.k8s.io")
            && explain.contains("FIELD: holderIdentity <string>"),
        "{explain}"
    );
    let explain = s.ok(&["explain", "configmaps", "--recursive"]);
    assert!(explain.contains("binaryData"), "{explain}");
}
