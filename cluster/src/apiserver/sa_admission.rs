//! The ServiceAccount admission step for new pods, as upstream's `ServiceAccount` plugin:
//! the pod runs as `spec.serviceAccountName` (default `default`), which must exist; unless
//! the pod or its account turns `automountServiceAccountToken` off, a projected
//! `kube-api-access-<random>` volume (a bound token, the cluster CA, the namespace) is added
//! and mounted read-only at [`TOKEN_MOUNT_PATH`] in every container that has nothing there.

use std::time::Duration;

use serde_json::{Value, json};

use super::ApiServer;
use super::registry;
use super::status::{ApiError, ApiResult};
use super::storage;

pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The token lifetime upstream asks for (a value that marks "legacy-compatible" tokens).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// The projected volume source upstream's admission adds.
pub fn token_volume_source() -> Value {
    json!({
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION_SECONDS}},
            {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    })
}

/// Reads service account `ns/name`; the `default` one is retried a little, since the
/// namespace's creation makes it just after the namespace itself.
async fn service_account(api: &ApiServer, ns: &str, name: &str) -> ApiResult<Option<Value>> {
    let def = registry::lookup("", "v1", "serviceaccounts").expect("service accounts are served");
    let key = storage::key(def, Some(ns), name);
    let attempts = if name == "default" { 10 } else { 1 };
    for i in 0..attempts {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100 + rand::random_range(0..100))).await;
        }
        if let Some(kv) = api.store.get(&key, None).await? {
            return Ok(Some(storage::decode(&kv)?));
        }
    }
    Ok(None)
}

/// Admits a new pod in `ns` (already defaulted): refuses it when its service account does
/// not exist, else adds the token volume and mounts where they belong.
pub async fn admit(api: &ApiServer, ns: &str, pod: &mut Value) -> ApiResult<()> {
    // Static (mirror) pods are the node's own and carry no API credentials.
    if pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string() {
        return Ok(());
    }
    let spec = &mut pod["spec"];
    if spec["serviceAccountName"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        spec["serviceAccountName"] = json!("default");
    }
    let sa_name = spec["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    spec["serviceAccount"] = json!(sa_name);
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let Some(sa) = service_account(api, ns, &sa_name).await? else {
        return Err(ApiError::forbidden(format!(
            "pods \"{pod_name}\" is forbidden: error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"
        )));
    };
    let spec = &mut pod["spec"];
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or(sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if automount {
        mount_token(spec, &crate::apiserver::objects::random_suffix(5));
    }
    let no_pull_secrets = spec["imagePullSecrets"]
        .as_array()
        .is_none_or(Vec::is_empty);
    if no_pull_secrets
        && let Some(list) = sa["imagePullSecrets"].as_array().filter(|l| !l.is_empty())
    {
        let names: Vec<Value> = list.iter().map(|s| json!({"name": s["name"]})).collect();
        spec["imagePullSecrets"] = json!(names);
    }
    Ok(())
}

/// Adds the token volume (named with `suffix` unless the pod has one already) and its mount
/// to every init container and container without a mount at [`TOKEN_MOUNT_PATH`].
fn mount_token(spec: &mut Value, suffix: &str) {
    let existing = spec["volumes"].as_array().and_then(|vs| {
        vs.iter()
            .filter_map(|v| v["name"].as_str())
            .find(|n| n.starts_with(VOLUME_PREFIX))
            .map(String::from)
    });
    let volume = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{suffix}"));
    let mount = json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs {
            let has = c["volumeMounts"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH));
            if has {
                continue;
            }
            match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                Some(ms) => ms.push(mount.clone()),
                None => c["volumeMounts"] = json!([mount.clone()]),
            }
            needed = true;
        }
    }
    if needed && existing.is_none() {
        let v = json!({"name": volume, "projected": token_volume_source()});
        match spec.get_mut("volumes").and_then(Value::as_array_mut) {
            Some(vs) => vs.push(v),
            None => spec["volumes"] = json!([v]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_volume_is_added_and_mounted_where_missing() {
        let mut spec = json!({
            "initContainers": [{"name": "i"}],
            "containers": [
                {"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "b", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "own", "emptyDir": {}}],
        });
        mount_token(&mut spec, "x2x4z");
        let want = json!({"name": "kube-api-access-x2x4z", "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([want]));
        assert_eq!(spec["containers"][0]["volumeMounts"][1], want);
        assert_eq!(
            spec["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "a container with its own mount there keeps it"
        );
        let vols = spec["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 3);
        assert_eq!(vols[2]["name"], "kube-api-access-x2x4z");
        let sources = &vols[2]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        assert_eq!(vols[2]["projected"]["defaultMode"], 420);
        // Admitting again (an existing kube-api-access volume) adds nothing new.
        let before = spec.clone();
        mount_token(&mut spec, "other");
        assert_eq!(spec, before);
    }

    #[test]
    fn all_containers_with_their_own_mount_need_no_volume() {
        let mut spec = json!({"containers": [
            {"name": "a", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]},
        ], "volumes": [{"name": "own", "emptyDir": {}}]});
        mount_token(&mut spec, "abcde");
        assert_eq!(spec["volumes"].as_array().unwrap().len(), 1);
    }
}
