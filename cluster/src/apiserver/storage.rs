//! Where objects live in the store and how they are encoded there: JSON without
//! metadata.resourceVersion, which is the key's mod_revision when read back.

use serde_json::{Value, json};

use super::objects::meta_mut;
use super::registry::ResourceDef;
use super::status::{ApiError, ApiResult};
use ros_store::KeyValue;

pub fn key(def: &ResourceDef, namespace: Option<&str>, name: &str) -> String {
    match (def.namespaced, namespace) {
        (true, Some(ns)) => format!("/registry/{}/{}/{}", def.plural, ns, name),
        _ => format!("/registry/{}/{}", def.plural, name),
    }
}

/// The prefix of every object of `def` (in `namespace` if given).
pub fn prefix(def: &ResourceDef, namespace: Option<&str>) -> String {
    match (def.namespaced, namespace) {
        (true, Some(ns)) => format!("/registry/{}/{}/", def.plural, ns),
        _ => format!("/registry/{}/", def.plural),
    }
}

pub fn encode(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).expect("JSON values always serialize")
}

pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    meta_mut(&mut v).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    Ok(v)
}

/// The store revision a resourceVersion string names.
pub fn parse_rv(rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::lookup;

    #[test]
    fn keys_and_round_trip() {
        let pods = lookup("", "v1", "pods").unwrap();
        let ns = lookup("", "v1", "namespaces").unwrap();
        assert_eq!(
            key(pods, Some("default"), "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(key(ns, None, "default"), "/registry/namespaces/default");
        assert_eq!(prefix(pods, None), "/registry/pods/");
        let obj = json!({"metadata": {"name": "a", "resourceVersion": "5"}});
        let kv = KeyValue {
            key: "k".into(),
            value: encode(&obj),
            create_revision: 7,
            mod_revision: 9,
            lease: 0,
        };
        assert!(
            !String::from_utf8(kv.value.clone())
                .unwrap()
                .contains("resourceVersion")
        );
        assert_eq!(decode(&kv).unwrap()["metadata"]["resourceVersion"], "9");
    }
}
