//! Namespaces: the ones that exist from the start, refusing content in a namespace being
//! deleted, and finalizing a deleted namespace once its content is gone.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::ApiServer;
use super::handlers::{DeleteOptions, create_object, delete_one};
use super::registry::{self, RESOURCES};
use super::request::WriteOpts;
use super::status::{ApiError, ApiResult};
use super::storage;

pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Upstream's NamespaceLifecycle admission refuses to delete the system namespaces: the
/// control plane's own objects (leader Leases, the `kubernetes` Service) live there.
pub fn check_deletable(name: &str) -> ApiResult<()> {
    if SYSTEM_NAMESPACES.contains(&name) {
        let mut e = ApiError::forbidden(format!(
            "namespace \"{name}\" is forbidden: this namespace may not be deleted"
        ));
        e.details = Some(json!({"name": name, "kind": "namespaces"}));
        return Err(e);
    }
    Ok(())
}

fn namespaces() -> &'static registry::ResourceDef {
    registry::lookup("", "v1", "namespaces").expect("namespaces are served")
}

/// Creates the system namespaces and the `kubernetes` service if they are missing.
pub async fn bootstrap(api: &ApiServer, api_port: u16) -> ApiResult<()> {
    for ns in SYSTEM_NAMESPACES {
        match create_object(
            api,
            namespaces(),
            None,
            json!({"metadata": {"name": ns}}),
            WriteOpts::default(),
        )
        .await
        {
            Ok(_) => tracing::info!("created namespace {ns}"),
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let svc = json!({
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": api.service_ips.first().to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}]},
    });
    let services = registry::lookup("", "v1", "services").expect("services are served");
    match create_object(api, services, Some("default"), svc, WriteOpts::default()).await {
        Ok(_) | Err(ApiError { code: 409, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What every namespace holds from its start: the `default` service account and the
/// cluster CA as ConfigMap `kube-root-ca.crt` (for pods talking to the API).
pub async fn populate(api: &ApiServer, ns: &str) -> ApiResult<()> {
    let sa = registry::lookup("", "v1", "serviceaccounts").expect("served");
    let cm = registry::lookup("", "v1", "configmaps").expect("served");
    let objects = [
        (sa, json!({"metadata": {"name": "default"}})),
        (
            cm,
            json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": api.ca_cert}}),
        ),
    ];
    for (def, obj) in objects {
        match Box::pin(create_object(api, def, Some(ns), obj, WriteOpts::default())).await {
            Ok(_) | Err(ApiError { code: 409, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// NotFound if `ns` does not exist, Forbidden if it is being deleted.
pub async fn check_open(api: &ApiServer, ns: &str) -> ApiResult<()> {
    let kv = api
        .store
        .get(&storage::key(namespaces(), None, ns), None)
        .await?;
    let Some(kv) = kv else {
        return Err(ApiError::not_found("", "namespaces", ns));
    };
    let obj = storage::decode(&kv)?;
    if obj["metadata"]["deletionTimestamp"].is_string() {
        let mut e = ApiError::forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        ));
        e.details = Some(
            json!({"name": ns, "kind": "namespaces", "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
        );
        return Err(e);
    }
    Ok(())
}

/// Deletes the content of every namespace being deleted, and the namespace once empty.
/// Returns whether some namespace still waits for its content to go.
async fn finalize_all(api: &ApiServer) -> ApiResult<bool> {
    let mut waiting = false;
    let all = api
        .store
        .range(&storage::prefix(namespaces(), None), None, 0, None)
        .await?;
    for kv in &all.kvs {
        let ns = storage::decode(kv)?;
        if !ns["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let name = ns["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut remaining = 0;
        for def in RESOURCES.iter().filter(|d| d.namespaced) {
            let content = api
                .store
                .range(&storage::prefix(def, Some(&name)), None, 0, None)
                .await?;
            for item in &content.kvs {
                remaining += 1;
                if let Err(e) = delete_one(api, def, &item.key, &DeleteOptions::default()).await
                    && e.code != 404
                {
                    tracing::warn!(
                        "finalizing namespace {name}: deleting {}: {}",
                        item.key,
                        e.message
                    );
                }
            }
        }
        if remaining > 0 {
            waiting = true;
            continue;
        }
        // Empty: drop our finalizer, and the namespace with it when no other is left.
        let key = storage::key(namespaces(), None, &name);
        let Some(cur) = api.store.get(&key, None).await? else {
            continue;
        };
        let mut obj = storage::decode(&cur)?;
        let spec_fin: Vec<Value> = obj["spec"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != "kubernetes")
            .collect();
        let meta_fin = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if spec_fin.is_empty() && !meta_fin {
            match api.store.delete(&key, Some(cur.mod_revision)).await {
                Ok(_) => tracing::info!("namespace {name} finalized"),
                Err(e) => tracing::debug!("namespace {name}: {e}"),
            }
        } else {
            obj["spec"]["finalizers"] = Value::Array(spec_fin);
            let _ = api
                .store
                .update(&key, storage::encode(&obj), cur.mod_revision)
                .await;
        }
    }
    Ok(waiting)
}

/// Runs the namespace finalizer: on every kick, soon again while content is going away
/// (backing off up to a few seconds when finalizers hold it), and every few seconds.
pub fn spawn_finalizer(api: Arc<ApiServer>) {
    tokio::spawn(async move {
        let mut retry = Duration::from_millis(100);
        loop {
            let pause = match finalize_all(&api).await {
                Ok(true) => {
                    retry = (retry * 2).min(Duration::from_secs(5));
                    retry
                }
                Ok(false) => {
                    retry = Duration::from_millis(100);
                    Duration::from_secs(5)
                }
                Err(e) => {
                    tracing::warn!("namespace finalizer: {}", e.message);
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                _ = api.ns_kick.notified() => {
                    retry = Duration::from_millis(100);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ = tokio::time::sleep(pause) => {}
            }
        }
    });
}
