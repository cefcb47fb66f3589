//! The ClusterRoles every cluster starts with (as upstream's rbac-defaults), created when
//! missing and never overwritten: `cluster-admin`, `admin`, `edit`, `view`, and the
//! `cluster-admin` ClusterRoleBinding for `system:masters`.

use serde_json::{Value, json};

use crate::apiserver::ApiServer;
use crate::apiserver::handlers::create_object;
use crate::apiserver::registry;
use crate::apiserver::request::WriteOpts;
use crate::apiserver::status::ApiResult;

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Namespaced workload resources `view` reads and `edit` writes (secrets are `edit` only).
fn workload_rules(verbs: &[&str], with_secrets: bool) -> Vec<Value> {
    let mut core = vec![
        "pods",
        "pods/log",
        "pods/status",
        "services",
        "services/status",
        "endpoints",
        "configmaps",
        "serviceaccounts",
        "events",
    ];
    if with_secrets {
        core.extend(["secrets", "pods/exec"]);
    }
    vec![
        json!({"apiGroups": [""], "resources": core, "verbs": verbs}),
        json!({"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale", "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "daemonsets", "daemonsets/status"], "verbs": verbs}),
        // Revisions are history written by controllers: readable by all, written by none.
        json!({"apiGroups": ["apps"], "resources": ["controllerrevisions"], "verbs": READ}),
        json!({"apiGroups": ["batch"], "resources": ["jobs", "jobs/status"], "verbs": verbs}),
        json!({"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ}),
        json!({"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingresses/status"], "verbs": verbs}),
        json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": verbs}),
    ]
}

fn default_roles() -> Vec<(&'static str, Vec<Value>)> {
    let mut admin = workload_rules(WRITE, true);
    admin.push(json!({"apiGroups": [super::rbac::GROUP], "resources": ["roles", "rolebindings"], "verbs": WRITE}));
    let mut view = workload_rules(READ, false);
    view.push(json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": READ}));
    vec![
        (
            "cluster-admin",
            vec![json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})],
        ),
        ("admin", admin),
        ("edit", workload_rules(WRITE, true)),
        ("view", view),
    ]
}

/// Creates the default roles that are missing.
pub async fn ensure(api: &ApiServer) -> ApiResult<()> {
    let roles = registry::lookup(super::rbac::GROUP, "v1", "clusterroles").expect("served");
    let bindings =
        registry::lookup(super::rbac::GROUP, "v1", "clusterrolebindings").expect("served");
    let labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let mut objects: Vec<(&'static registry::ResourceDef, Value)> = default_roles()
        .into_iter()
        .map(|(name, rules)| {
            (
                roles,
                json!({"metadata": {"name": name, "labels": labels}, "rules": rules}),
            )
        })
        .collect();
    objects.push((
        bindings,
        json!({"metadata": {"name": "cluster-admin", "labels": labels},
            "roleRef": {"apiGroup": super::rbac::GROUP, "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": super::rbac::GROUP, "kind": "Group", "name": crate::apiserver::pki::ADMIN_GROUP}]}),
    ));
    for (def, obj) in objects {
        match create_object(api, def, None, obj, WriteOpts::default()).await {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
