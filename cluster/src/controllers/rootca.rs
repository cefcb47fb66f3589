//! The root CA publisher (upstream's `root-ca-cert-publisher`): every active namespace has a
//! ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA, so pods can check the API
//! server's certificate. A deleted or edited one is put back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::Error;

pub const NAME: &str = "kube-root-ca.crt";
pub const KEY: &str = "ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Ctx {
    client: Client,
    ca: String,
    backoff: super::Backoff,
}

pub async fn run(client: Client, ca: String) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        ca,
        backoff: super::Backoff::default(),
    });
    let stream = Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ConfigMap>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={NAME}")),
        |cm: ConfigMap| cm.metadata.namespace.map(|ns| ObjectRef::new(&ns)),
    )
    .run(reconcile, error_policy, ctx);
    super::drain("rootca", stream).await;
}

fn error_policy(ns: Arc<Namespace>, e: &Error, ctx: Arc<Ctx>) -> Action {
    let key = super::key_of(&ns.metadata);
    tracing::warn!("{NAME} in {key}: {e}");
    ctx.backoff.failed(&key)
}

/// The ConfigMap as it must be (its other metadata kept).
fn wanted(current: Option<ConfigMap>, ns: &str, ca: &str) -> ConfigMap {
    let mut cm = current.unwrap_or_else(|| ConfigMap {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    });
    cm.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert("kubernetes.io/description".into(), DESCRIPTION.into());
    cm.data = Some([(KEY.to_string(), ca.to_string())].into());
    cm.binary_data = None;
    cm
}

/// Whether `cm` holds exactly the CA (annotations other than ours are left alone).
fn up_to_date(cm: &ConfigMap, ca: &str) -> bool {
    let data_ok = cm
        .data
        .as_ref()
        .is_some_and(|d| d.len() == 1 && d.get(KEY).map(String::as_str) == Some(ca));
    data_ok && cm.binary_data.as_ref().is_none_or(BTreeMap::is_empty)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let result = match api.get_opt(NAME).await? {
        Some(cm) if up_to_date(&cm, &ctx.ca) => Ok(()),
        Some(cm) => api
            .replace(
                NAME,
                &PostParams::default(),
                &wanted(Some(cm), &name, &ctx.ca),
            )
            .await
            .map(|_| ()),
        None => api
            .create(&PostParams::default(), &wanted(None, &name, &ctx.ca))
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => {}
        // Forbidden: the namespace started terminating; Conflict: changed meanwhile, and
        // the watch brings us back.
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.backoff.ok(&super::key_of(&ns.metadata));
    Ok(Action::requeue(Duration::from_secs(300)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edited_data_is_restored_and_other_metadata_kept() {
        let mut cm = wanted(None, "app", "PEM");
        assert!(up_to_date(&cm, "PEM"));
        assert!(!up_to_date(&cm, "OTHER"));
        cm.data.as_mut().unwrap().insert("extra".into(), "x".into());
        cm.metadata.labels = Some([("keep".to_string(), "me".to_string())].into());
        assert!(!up_to_date(&cm, "PEM"));
        let fixed = wanted(Some(cm), "app", "PEM");
        assert!(up_to_date(&fixed, "PEM"));
        assert_eq!(fixed.metadata.labels.unwrap()["keep"], "me");
        assert_eq!(fixed.metadata.namespace.as_deref(), Some("app"));
    }
}
