//! RBAC and field ownership through the real kubectl, on one server: a service account token
//! may do only what a RoleBinding grants it, in that namespace only, and `kubectl auth can-i`
//! agrees; server-side apply records managedFields and reports another manager's field as a
//! conflict until forced.

mod kubectl_support;

use kubectl_support::Server;

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Namespace
metadata: {name: b}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot, namespace: a}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: a}
data: {k: v}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: b}
data: {k: v}
"#;

const GRANT: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cm-reader, namespace: a}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: robot-reads, namespace: a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-reader}
subjects:
- {kind: ServiceAccount, name: robot, namespace: a}
"#;

/// robot may create role bindings in `a` and holds `get configmaps` there.
const BINDER: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: binder, namespace: a}
rules:
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [create]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: robot-binds, namespace: a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: binder}
subjects:
- {kind: ServiceAccount, name: robot, namespace: a}
"#;

fn config_map(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: owned, namespace: a}}\ndata: {{size: \"{value}\"}}\n"
    )
}

#[test]
fn role_bindings_grant_in_one_namespace_and_apply_tracks_owners() {
    let s = Server::start_without_controllers();
    s.ok_stdin(&["apply", "-f", "-"], SETUP);
    let token = s.ok(&["-n", "a", "create", "token", "robot"]);
    let robot = s.kubeconfig_with_token("robot", token.trim());

    // Nothing granted yet: 403 in upstream's words.
    let err = s.fail_with_kubeconfig(&robot, &["-n", "a", "get", "configmap", "cfg"]);
    assert!(
        err.contains(
            "configmaps \"cfg\" is forbidden: User \"system:serviceaccount:a:robot\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"a\""
        ),
        "{err}"
    );
    s.fail_with_kubeconfig(&robot, &["auth", "can-i", "get", "configmaps", "-n", "a"]);

    s.ok_stdin(&["apply", "-f", "-"], GRANT);
    assert!(
        s.ok(&["get", "clusterroles", "-o", "name"])
            .contains("clusterrole.rbac.authorization.k8s.io/view"),
        "the default roles exist"
    );
    // get in a: yes; in b: no; list in a: no (the role grants get only).
    assert_eq!(
        s.ok_with_kubeconfig(
            &robot,
            &["-n", "a", "get", "configmap", "cfg", "-o", "name"]
        )
        .trim(),
        "configmap/cfg"
    );
    s.fail_with_kubeconfig(&robot, &["-n", "b", "get", "configmap", "cfg"]);
    let err = s.fail_with_kubeconfig(&robot, &["-n", "a", "get", "configmaps"]);
    assert!(err.contains("cannot list resource \"configmaps\""), "{err}");
    assert_eq!(
        s.ok_with_kubeconfig(&robot, &["auth", "can-i", "get", "configmaps", "-n", "a"])
            .trim(),
        "yes"
    );
    s.fail_with_kubeconfig(&robot, &["auth", "can-i", "get", "configmaps", "-n", "b"]);
    let list = s.ok_with_kubeconfig(&robot, &["auth", "can-i", "--list", "-n", "a"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("configmaps ") && l.contains("[get]")),
        "{list}"
    );
    // Removing the binding takes the grant away.
    s.ok(&["-n", "a", "delete", "rolebinding", "robot-reads"]);
    s.fail_with_kubeconfig(&robot, &["-n", "a", "get", "configmap", "cfg"]);

    // Granting: only permissions the granter holds (upstream's escalation check).
    s.ok_stdin(&["apply", "-f", "-"], BINDER);
    let err = s.fail_with_kubeconfig(
        &robot,
        &[
            "-n",
            "a",
            "create",
            "rolebinding",
            "steal",
            "--clusterrole=cluster-admin",
            "--serviceaccount=a:robot",
        ],
    );
    assert!(
        err.contains("attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    s.ok_with_kubeconfig(
        &robot,
        &[
            "-n",
            "a",
            "create",
            "rolebinding",
            "share",
            "--role=cm-reader",
            "--user=alice",
        ],
    );

    // Server-side apply: alice owns data.size; bob's different value conflicts until forced.
    s.ok_stdin(
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        &config_map("1"),
    );
    let err = s.fail_stdin(
        &["apply", "--server-side", "--field-manager=bob", "-f", "-"],
        &config_map("2"),
    );
    assert!(
        err.contains("conflict with \"alice\"") && err.contains(".data.size"),
        "{err}"
    );
    s.ok_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=bob",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &config_map("2"),
    );
    let managed = |s: &Server| -> Vec<serde_json::Value> {
        let out = s.ok(&[
            "-n",
            "a",
            "get",
            "configmap",
            "owned",
            "--show-managed-fields",
            "-o",
            "json",
        ]);
        let obj: serde_json::Value = serde_json::from_str(&out).unwrap();
        obj["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let entries = managed(&s);
    let bob = entries
        .iter()
        .find(|e| e["manager"] == "bob")
        .unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(bob["operation"], "Apply");
    assert_eq!(bob["fieldsV1"]["f:data"], serde_json::json!({"f:size": {}}));
    // An ordinary update is recorded as an Update by its manager (kubectl label).
    s.ok(&["-n", "a", "label", "configmap", "owned", "tier=web"]);
    let entries = managed(&s);
    assert!(
        entries
            .iter()
            .any(|e| e["manager"] == "kubectl-label" && e["operation"] == "Update"),
        "{entries:?}"
    );
}
