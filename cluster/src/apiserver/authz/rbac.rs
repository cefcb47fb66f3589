//! RBAC: rules in Roles and ClusterRoles, granted to users, groups and service accounts by
//! RoleBindings (in one namespace) and ClusterRoleBindings (everywhere), as in
//! rbac.authorization.k8s.io/v1. Only grants exist; there is no deny.

use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::apiserver::auth::{Attributes, SERVICE_ACCOUNT_PREFIX, UserInfo};
use crate::apiserver::status::ApiResult;
use crate::apiserver::storage;

pub const GROUP: &str = "rbac.authorization.k8s.io";

/// Why `user` may do `a` (the binding and role that allow it), or None.
pub async fn allows(
    api: &ApiServer,
    user: &UserInfo,
    a: &Attributes<'_>,
) -> ApiResult<Option<String>> {
    let cluster = objects(api, "/registry/clusterrolebindings/").await?;
    for b in cluster.iter().filter(|b| binds(b, user)) {
        if let Some(role) = role_for(api, b, None).await?
            && rules_allow(&role, a)
        {
            return Ok(Some(reason("ClusterRoleBinding", b, &role)));
        }
    }
    if let Some(ns) = a.namespace {
        let local = objects(api, &format!("/registry/rolebindings/{ns}/")).await?;
        for b in local.iter().filter(|b| binds(b, user)) {
            if let Some(role) = role_for(api, b, Some(ns)).await?
                && rules_allow(&role, a)
            {
                return Ok(Some(reason("RoleBinding", b, &role)));
            }
        }
    }
    Ok(None)
}

/// Every rule granted to `user` by ClusterRoleBindings and, in `namespace`, RoleBindings.
pub async fn rules_for(
    api: &ApiServer,
    user: &UserInfo,
    namespace: Option<&str>,
) -> ApiResult<Vec<Value>> {
    let mut out = Vec::new();
    let cluster = objects(api, "/registry/clusterrolebindings/").await?;
    let mut bound: Vec<(Value, Option<&str>)> = cluster
        .into_iter()
        .filter(|b| binds(b, user))
        .map(|b| (b, None))
        .collect();
    if let Some(ns) = namespace {
        let local = objects(api, &format!("/registry/rolebindings/{ns}/")).await?;
        bound.extend(
            local
                .into_iter()
                .filter(|b| binds(b, user))
                .map(|b| (b, Some(ns))),
        );
    }
    for (b, ns) in bound {
        if let Some(role) = role_for(api, &b, ns).await? {
            out.extend(role["rules"].as_array().cloned().unwrap_or_default());
        }
    }
    Ok(out)
}

fn reason(kind: &str, binding: &Value, role: &Value) -> String {
    let ns = binding["metadata"]["namespace"]
        .as_str()
        .map(|n| format!(" of namespace \"{n}\""))
        .unwrap_or_default();
    format!(
        "RBAC: allowed by {kind} \"{}\"{ns} of {} \"{}\"",
        binding["metadata"]["name"].as_str().unwrap_or(""),
        binding["roleRef"]["kind"].as_str().unwrap_or(""),
        role["metadata"]["name"].as_str().unwrap_or("")
    )
}

async fn objects(api: &ApiServer, prefix: &str) -> ApiResult<Vec<Value>> {
    let r = api.store.range(prefix, None, 0, None).await?;
    r.kvs.iter().map(storage::decode).collect()
}

/// The role a binding refers to: a ClusterRole, or (for a RoleBinding in `ns`) a Role there.
async fn role_for(api: &ApiServer, binding: &Value, ns: Option<&str>) -> ApiResult<Option<Value>> {
    let r = &binding["roleRef"];
    if r["apiGroup"].as_str().is_some_and(|g| g != GROUP) {
        return Ok(None);
    }
    let Some(name) = r["name"].as_str() else {
        return Ok(None);
    };
    let key = match (r["kind"].as_str(), ns) {
        (Some("ClusterRole"), _) => format!("/registry/clusterroles/{name}"),
        (Some("Role"), Some(ns)) => format!("/registry/roles/{ns}/{name}"),
        _ => return Ok(None),
    };
    match api.store.get(&key, None).await? {
        Some(kv) => Ok(Some(storage::decode(&kv)?)),
        None => Ok(None),
    }
}

/// Whether one of the binding's subjects is `user`.
pub fn binds(binding: &Value, user: &UserInfo) -> bool {
    let Some(subjects) = binding["subjects"].as_array() else {
        return false;
    };
    subjects.iter().any(|s| {
        let name = s["name"].as_str().unwrap_or("");
        match s["kind"].as_str() {
            Some("User") => name == user.name,
            Some("Group") => user.in_group(name),
            Some("ServiceAccount") => {
                let ns = s["namespace"]
                    .as_str()
                    .or(binding["metadata"]["namespace"].as_str())
                    .unwrap_or("");
                user.name == format!("{SERVICE_ACCOUNT_PREFIX}{ns}:{name}")
            }
            _ => false,
        }
    })
}

/// Whether one of a role's rules covers `a`.
pub fn rules_allow(role: &Value, a: &Attributes<'_>) -> bool {
    role["rules"]
        .as_array()
        .is_some_and(|rules| rules.iter().any(|r| rule_allows(r, a)))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn rule_allows(rule: &Value, a: &Attributes<'_>) -> bool {
    let verbs = strings(&rule["verbs"]);
    if !verbs.iter().any(|v| *v == "*" || *v == a.verb) {
        return false;
    }
    let groups = strings(&rule["apiGroups"]);
    if !groups.iter().any(|g| *g == "*" || *g == a.group) {
        return false;
    }
    let resources = strings(&rule["resources"]);
    let resource_ok = resources.iter().any(|r| match a.subresource {
        None => *r == "*" || *r == a.resource,
        Some(sub) => {
            *r == "*"
                || *r == format!("{}/{sub}", a.resource)
                || *r == format!("*/{sub}")
                || *r == format!("{}/*", a.resource)
        }
    });
    if !resource_ok {
        return false;
    }
    let names = strings(&rule["resourceNames"]);
    names.is_empty() || a.name.is_some_and(|n| names.contains(&n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs<'a>(verb: &'a str, resource: &'a str, name: Option<&'a str>) -> Attributes<'a> {
        Attributes {
            verb,
            group: "",
            resource,
            subresource: None,
            namespace: Some("app"),
            name,
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let role = json!({"rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ]});
        assert!(rules_allow(&role, &attrs("get", "pods", Some("p"))));
        assert!(rules_allow(&role, &attrs("list", "pods", None)));
        assert!(!rules_allow(&role, &attrs("delete", "pods", Some("p"))));
        assert!(rules_allow(
            &role,
            &attrs("update", "configmaps", Some("cfg"))
        ));
        assert!(!rules_allow(
            &role,
            &attrs("update", "configmaps", Some("x"))
        ));
        assert!(!rules_allow(&role, &attrs("list", "configmaps", None)));
        let mut log = attrs("get", "pods", Some("p"));
        log.subresource = Some("log");
        assert!(rules_allow(&role, &log));
        log.subresource = Some("exec");
        assert!(!rules_allow(&role, &log));
        let mut apps = attrs("get", "deployments", Some("d"));
        apps.group = "apps";
        assert!(!rules_allow(&role, &apps));
        let admin = json!({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
        assert!(rules_allow(&admin, &apps));
    }

    #[test]
    fn subjects_match_users_groups_and_service_accounts() {
        let b = json!({"metadata": {"name": "b", "namespace": "app"}, "subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "name": "robot"},
        ]});
        let u = |name: &str, groups: &[&str]| UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert!(binds(&b, &u("alice", &[])));
        assert!(binds(&b, &u("bob", &["devs"])));
        assert!(!binds(&b, &u("bob", &["ops"])));
        assert!(binds(&b, &u("system:serviceaccount:app:robot", &[])));
        assert!(!binds(&b, &u("system:serviceaccount:other:robot", &[])));
    }
}
