//! Every active namespace has a ServiceAccount named `default`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::{Ctx, Error};

pub async fn run(client: Client) {
    let ctx = Ctx::new(client.clone());
    let stream = Controller::new(Api::<Namespace>::all(client), watcher::Config::default())
        .watches(
            Api::<ServiceAccount>::all(ctx.client.clone()),
            watcher::Config::default(),
            |sa: ServiceAccount| {
                sa.metadata
                    .namespace
                    .map(|ns| kube::runtime::reflector::ObjectRef::new(&ns))
            },
        )
        .run(reconcile, error_policy, ctx);
    super::drain("serviceaccount", stream).await;
}

fn error_policy(ns: Arc<Namespace>, e: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(
        "default service account in {}: {e}",
        super::key_of(&ns.metadata)
    );
    ctx.backoff.failed(&super::key_of(&ns.metadata))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    if api.get_opt("default").await?.is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            // Conflict: created meanwhile; Forbidden: the namespace started terminating.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.backoff.ok(&super::key_of(&ns.metadata));
    Ok(Action::requeue(Duration::from_secs(300)))
}
