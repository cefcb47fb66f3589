//! RBAC escalation prevention (as upstream): a user may create or change a Role or
//! ClusterRole only with permissions it already holds (or the `escalate` verb on it), and a
//! RoleBinding or ClusterRoleBinding only to a role whose permissions it holds (or with the
//! `bind` verb on that role). Checked on the object the write would store.

use serde_json::Value;

use super::rbac::GROUP;
use crate::apiserver::ApiServer;
use crate::apiserver::auth::{Attributes, UserInfo};
use crate::apiserver::patch::{self, PatchKind};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::{objects, registry, storage};

pub async fn check(
    api: &ApiServer,
    user: &UserInfo,
    a: &Attributes<'_>,
    content_type: &str,
    body: &[u8],
) -> ApiResult<()> {
    if user.is_admin() || a.group != GROUP || a.subresource.is_some() {
        return Ok(());
    }
    let Some(def) = registry::lookup(GROUP, "v1", a.resource) else {
        return Ok(());
    };
    let obj = match a.verb {
        "create" | "update" => objects::parse_body(content_type, body)?,
        "patch" => {
            let key = storage::key(def, a.namespace, a.name.unwrap_or(""));
            let current = match api.store.get(&key, None).await? {
                Some(kv) => storage::decode(&kv)?,
                None => serde_json::json!({}),
            };
            let kind = PatchKind::from_content_type(content_type)?;
            // Apply bodies arrive here as JSON (see objects::yaml_body_to_json).
            patch::apply(kind, def.kind, &current, body)?
        }
        _ => return Ok(()),
    };
    let name = a
        .name
        .or(obj["metadata"]["name"].as_str())
        .unwrap_or("")
        .to_string();
    let (rules, verb, target_resource, target_name) = match a.resource {
        "roles" | "clusterroles" => (obj["rules"].clone(), "escalate", a.resource, name.clone()),
        "rolebindings" | "clusterrolebindings" => {
            let r = &obj["roleRef"];
            let role_name = r["name"].as_str().unwrap_or("").to_string();
            let (resource, key) = match r["kind"].as_str() {
                Some("Role") => (
                    "roles",
                    format!("/registry/roles/{}/{role_name}", a.namespace.unwrap_or("")),
                ),
                _ => (
                    "clusterroles",
                    format!("/registry/clusterroles/{role_name}"),
                ),
            };
            let rules = match api.store.get(&key, None).await? {
                Some(kv) => storage::decode(&kv)?["rules"].clone(),
                None => Value::Null,
            };
            (rules, "bind", resource, role_name)
        }
        _ => return Ok(()),
    };
    let special = Attributes {
        verb,
        group: GROUP,
        resource: target_resource,
        subresource: None,
        namespace: a.namespace,
        name: Some(&target_name),
    };
    if super::authorize(api, user, &special).await?.is_some() {
        return Ok(());
    }
    let missing = not_held(api, user, &rules, a.namespace).await?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{}.{GROUP} \"{name}\" is forbidden: user \"{}\" (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
        a.resource,
        user.name,
        user.groups,
        missing.join("\n")
    )))
}

/// The rules (as upstream prints them) `user` does not hold itself in `namespace`.
async fn not_held(
    api: &ApiServer,
    user: &UserInfo,
    rules: &Value,
    namespace: Option<&str>,
) -> ApiResult<Vec<String>> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut missing = Vec::new();
    for rule in rules.as_array().into_iter().flatten() {
        let names = strings(&rule["resourceNames"]);
        let names: Vec<Option<&str>> = if names.is_empty() {
            vec![None]
        } else {
            names.iter().map(|n| Some(n.as_str())).collect()
        };
        let mut held = true;
        'rule: for verb in strings(&rule["verbs"]) {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    let (res, sub) = match resource.split_once('/') {
                        Some((r, s)) => (r, Some(s)),
                        None => (resource.as_str(), None),
                    };
                    for name in &names {
                        let a = Attributes {
                            verb: &verb,
                            group: &group,
                            resource: res,
                            subresource: sub,
                            namespace,
                            name: *name,
                        };
                        if super::authorize(api, user, &a).await?.is_none() {
                            held = false;
                            break 'rule;
                        }
                    }
                }
            }
        }
        if !held {
            missing.push(format!(
                "{{APIGroups:{:?}, Resources:{:?}, Verbs:{:?}}}",
                strings(&rule["apiGroups"]),
                strings(&rule["resources"]),
                strings(&rule["verbs"])
            ));
        }
    }
    Ok(missing)
}
