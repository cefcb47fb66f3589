//! NodeRestriction for a node's writes to its own Node: the labels it adds, changes or
//! removes must be ones a node may set (`crate::node_labels`). Upstream's wording.

use serde_json::{Map, Value};

use crate::apiserver::ApiServer;
use crate::apiserver::auth::{Attributes, UserInfo};
use crate::apiserver::patch::{self, PatchKind};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::{objects, registry, storage};
use crate::node_labels::{self, CONTROL_PLANE_NODES_GROUP};

/// Checks a node identity's create, update or patch of a Node (not its status).
pub async fn admit(
    api: &ApiServer,
    user: &UserInfo,
    node: &str,
    a: &Attributes<'_>,
    content_type: &str,
    body: &[u8],
) -> ApiResult<()> {
    if (a.group, a.resource, a.subresource) != ("", "nodes", None) {
        return Ok(());
    }
    let old = match a.verb {
        "create" => Value::Null,
        "update" | "patch" => {
            let nodes = registry::lookup("", "v1", "nodes").expect("nodes are served");
            match api
                .store
                .get(&storage::key(nodes, None, a.name.unwrap_or("")), None)
                .await?
            {
                Some(kv) => storage::decode(&kv)?,
                // Not found is the handler's answer (or an apply's create).
                None => Value::Null,
            }
        }
        _ => return Ok(()),
    };
    let new = match a.verb {
        "patch" => {
            let kind = PatchKind::from_content_type(content_type)?;
            if kind == PatchKind::Apply {
                let applied = objects::parse_body("application/yaml", body)?;
                if old.is_null() {
                    applied // an apply that creates the Node
                } else {
                    patch::strategic_merge("Node", &old, &applied)?
                }
            } else if old.is_null() {
                return Ok(()); // the handler answers NotFound
            } else {
                patch::apply(kind, "Node", &old, body)?
            }
        }
        _ => objects::parse_body(content_type, body)?,
    };
    let control_plane = user.in_group(CONTROL_PLANE_NODES_GROUP);
    let forbidden = node_labels::forbidden(
        modified(labels(&old), labels(&new))
            .iter()
            .map(String::as_str),
        control_plane,
    );
    if forbidden.is_empty() {
        return Ok(());
    }
    let what = if a.verb == "create" {
        "set the following labels"
    } else {
        "modify labels"
    };
    Err(ApiError::forbidden(format!(
        "nodes \"{}\" is forbidden: node \"{node}\" is not allowed to {what}: {}",
        a.name.unwrap_or(objects::name(&new)),
        forbidden.join(", ")
    )))
}

fn labels(obj: &Value) -> Map<String, Value> {
    obj["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// Keys added, removed or given another value.
fn modified(old: Map<String, Value>, new: Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modified_labels_are_added_changed_or_removed_ones() {
        let old = json!({"a": "1", "b": "2", "c": "3"});
        let new = json!({"a": "1", "b": "x", "d": ""});
        let mut m = modified(
            old.as_object().unwrap().clone(),
            new.as_object().unwrap().clone(),
        );
        m.sort();
        assert_eq!(m, ["b", "c", "d"]);
    }
}
